package stack_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/require"

	"github.com/otaflow/otaflow/internal/rolloutclient"
	"github.com/otaflow/otaflow/internal/stack"
	"github.com/otaflow/otaflow/workflows/contract"
)

var browser struct {
	once   sync.Once
	ctx    context.Context
	cancel context.CancelFunc
	err    error
}

// chromium is one headless Debian Chromium for every browser test of this package; each test
// gets its own tab.
func chromium(t *testing.T) context.Context {
	t.Helper()
	browser.once.Do(func() {
		path := "/usr/bin/chromium"
		if _, err := os.Stat(path); err != nil {
			browser.err = fmt.Errorf("Debian's chromium is not installed (%v): `make deps` installs it", err)
			return
		}
		opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(path), chromedp.NoSandbox, chromedp.DisableGPU,
			chromedp.Flag("disable-quic", true), chromedp.Flag("disable-background-networking", true),
			chromedp.Flag("disable-component-update", true), chromedp.Flag("disable-sync", true))
		actx, _ := chromedp.NewExecAllocator(context.Background(), opts...)
		browser.ctx, browser.cancel = chromedp.NewContext(actx)
		browser.err = chromedp.Do(browser.ctx) // starts the browser
	})
	require.NoError(t, browser.err)
	tab, cancel := chromedp.NewContext(browser.ctx)
	t.Cleanup(cancel)
	return tab
}

// consolePage reads a console tab: text is what an element shows ("" while it is not there),
// eventually waits up to 90 s for ok and fails the test with the page's text if it never is.
func consolePage(t *testing.T, tab context.Context) (text func(sel string) string, eventually func(what string, ok func() bool)) {
	text = func(sel string) string {
		out, err := chromedp.Run(tab, chromedp.Evaluate[string](fmt.Sprintf(`(document.querySelector(%q) || {textContent: ""}).textContent.trim()`, sel)))
		if err != nil {
			return ""
		}
		return out
	}
	eventually = func(what string, ok func() bool) {
		t.Helper()
		deadline := time.Now().Add(90 * time.Second)
		for !ok() {
			if time.Now().After(deadline) {
				t.Fatalf("the console never showed %s; the page reads:\n%s", what, text("body"))
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	return text, eventually
}

// TestConsoleDrivesARollout loads the fleet console in a real Chromium while a staged rollout
// runs: the inventory shows every device's version (from the agents' shadows), the first
// wave's device changes version, the rollout waits for approval, the Approve button releases
// the next wave, and the page ends with every device on the new version.
func TestConsoleDrivesARollout(t *testing.T) {
	ctx := context.Background()
	s, err := stack.Start(ctx, stack.Options{DataDir: t.TempDir(), InMemoryTemporal: true, UIPort: 0, Logger: testLogger()})
	require.NoError(t, err)
	defer s.Close()
	arns, err := s.StartDevices(ctx, 3, "1.10.2", 0)
	require.NoError(t, err)

	// Unauthenticated steering is refused: a POST without the console's header.
	resp, err := http.Post(s.ConsoleURL+"api/rollouts/x/approve", "application/json", nil)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusForbidden, resp.StatusCode)

	tab := chromium(t)
	tab, cancel := context.WithTimeout(tab, 3*time.Minute)
	defer cancel()
	require.NoError(t, chromedp.Do(tab, chromedp.Navigate(s.ConsoleURL)))
	text, eventually := consolePage(t, tab)
	count := func(software, version string) string {
		return text(fmt.Sprintf(`table[data-software=%q] tr[data-version=%q] td.count`, software, version))
	}
	eventually("3 devices on 1.10.2", func() bool { return count("core", "1.10.2") == "3" })
	// The device list is a page of its own request: it may render after the counts.
	eventually("the device is shown connected", func() bool {
		return strings.Contains(text(`#devices tr[data-thing="`+stack.Device(1)+`"]`), "yes")
	})

	req := request("console-1", arns)
	req.Waves, req.ApproveWaves = "1,100%", true
	_, err = rolloutclient.Start(ctx, s.Client, contract.TaskQueue, req)
	require.NoError(t, err)

	eventually("the rollout in the list", func() bool { return strings.Contains(text("#rollouts"), "console-1") })
	require.NoError(t, chromedp.Do(tab, chromedp.Click(`#rollouts tr[data-rollout="console-1"] td`)))
	eventually("the rollout waiting for approval", func() bool { return text("#detail-state") == contract.StateAwaiting })
	eventually("the first wave's device on 1.11.6", func() bool { return count("core", "1.11.6") == "1" && count("core", "1.10.2") == "2" })
	require.Contains(t, text(`#results`), "SUCCEEDED", "the wave's device result is listed")
	// The second wave has no job yet: its row counts its devices as queued, as the totals do.
	live, _, err := rolloutclient.LiveStatus(ctx, s.Client, s.IoT, "console-1")
	require.NoError(t, err)
	require.Equal(t, 2, live.Waves[1].Counts.Queued)
	require.Equal(t, live.Waves[0].Counts.Queued+live.Waves[1].Counts.Queued, live.Counts.Queued)
	require.Equal(t, "2", text(`#waves tr[data-wave="2"] td:nth-child(7)`), "the console's wave row says so too")

	eventually("approve offered", func() bool {
		disabled, err := chromedp.Run(tab, chromedp.Evaluate[bool](`document.querySelector('button[data-action="approve"]').disabled`))
		return err == nil && !disabled
	})
	require.NoError(t, chromedp.Do(tab, chromedp.Click(`button[data-action="approve"]`)))
	eventually("the approval's answer", func() bool { return strings.Contains(text("#flash"), "approve: done") })
	eventually("the rollout succeeded", func() bool { return text("#detail-state") == contract.StateSucceeded })
	eventually("every device on 1.11.6", func() bool { return count("core", "1.11.6") == "3" })
	eventually("the device's last job result", func() bool {
		return strings.Contains(text(`#devices tr[data-thing="`+stack.Device(2)+`"]`), "SUCCEEDED")
	})
	eventually("the fleet's counts from the index", func() bool { return text("#fleet-count") == "3 devices, 3 connected" })
	require.Contains(t, text("#last-jobs"), "3 SUCCEEDED")
	// Device search, from the fleet index a page at a time: by a name's beginning, and by a
	// query on the inventory the agents report.
	search := func(q string) string {
		_, err := chromedp.Run(tab, chromedp.Evaluate[bool](fmt.Sprintf(`(() => { document.querySelector("#device-search-note").textContent = "";
			document.querySelector("#device-query").value = %q; document.querySelector("#device-search-go").click(); return true })()`, q)))
		require.NoError(t, err)
		var note string
		eventually("the search's answer for "+q, func() bool { note = text("#device-search-note"); return note != "" })
		return note
	}
	require.Contains(t, search(stack.Device(1)), "1 devices for thingName:"+stack.Device(1)+"*")
	require.Contains(t, text(`#devices tr[data-thing="`+stack.Device(1)+`"]`), "1.11.6")
	eventually("every device found on 1.11.6 by the index", func() bool {
		return strings.Contains(search("shadow.name.otaflow.reported.software.core:1.11.6"), "3 devices for shadow.name.otaflow.reported.software.core:1.11.6")
	})
	require.Contains(t, search("no such field ("), "refused the query")
	// Filters, combined on the server: a version nobody runs any more, then the one they do
	// and a last job status, then a group.
	filter := func(version, status, group string) string {
		_, err := chromedp.Run(tab, chromedp.Evaluate[bool](fmt.Sprintf(`(() => { document.querySelector("#device-search-note").textContent = "";
			document.querySelector("#device-query").value = ""; document.querySelector("#f-version").value = %q;
			document.querySelector("#f-status").value = %q; document.querySelector("#f-group").value = %q;
			document.querySelector("#device-search-go").click(); return true })()`, version, status, group)))
		require.NoError(t, err)
		var note string
		eventually("the filtered list", func() bool { note = text("#device-search-note"); return note != "" })
		return note
	}
	require.Contains(t, filter("1.10.2", "", ""), "0 devices for shadow.name.otaflow.reported.software.core:1.10.2")
	require.Contains(t, filter("1.11.6", "SUCCEEDED", ""), "3 devices for shadow.name.otaflow.reported.software.core:1.11.6 AND shadow.name.otaflow.reported.lastJob.status:SUCCEEDED")
	require.Contains(t, filter("", "", "no-such-group"), "0 devices for thingGroupNames:no-such-group")
	filter("", "", "")

	// A device's own page, at its own URL: its versions and its job history with the job.
	require.NoError(t, chromedp.Do(tab, chromedp.Click(`#devices tr[data-thing="`+stack.Device(2)+`"] td`)))
	eventually("the device's page", func() bool { return text("#device-name") == stack.Device(2) })
	eventually("its job history", func() bool {
		return strings.Contains(text(`#device-jobs tr[data-job="`+contract.WaveJobID("console-1", 2)+`"]`), "SUCCEEDED")
	})
	require.Contains(t, text("#device-summary"), "core 1.11.6")
	require.Contains(t, text("#device-inventory"), `"software"`)
	url, err := chromedp.Run(tab, chromedp.Evaluate[string](`location.hash`))
	require.NoError(t, err)
	require.Equal(t, "#device="+stack.Device(2), url)

	// Another rollout moves the same devices on: Roll back is no longer offered for the first.
	req2 := request("console-2", arns)
	setVersion(&req2, "1.12.0")
	run2, err := rolloutclient.Start(ctx, s.Client, contract.TaskQueue, req2)
	require.NoError(t, err)
	_, err = rolloutclient.Result(ctx, run2)
	require.NoError(t, err)
	require.NoError(t, chromedp.Do(tab, chromedp.Navigate(s.ConsoleURL+"#rollout=console-1")))
	eventually("the first rollout's page, its Roll back off", func() bool {
		return text("#detail-id") == "console-1" && strings.Contains(text("#moved-on"), "console-2")
	})
	disabled, err := chromedp.Run(tab, chromedp.Evaluate[bool](`document.querySelector('button[data-action="rollback"]').disabled`))
	require.NoError(t, err)
	require.True(t, disabled)
	href, err := chromedp.Run(tab, chromedp.Evaluate[string](`document.querySelector("#detail-history").href`))
	require.NoError(t, err)
	require.Contains(t, href, s.Temporal.UIURL()+"/namespaces/default/workflows/"+contract.RolloutWorkflowID("console-1"), "a link to the rollout's history")
}
