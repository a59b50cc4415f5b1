package stack_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/aws/aws-sdk-go-v2/service/iot"
	"github.com/stretchr/testify/require"

	"github.com/otaflow/otaflow/internal/agent"
	"github.com/otaflow/otaflow/internal/agent/slots"
	"github.com/otaflow/otaflow/internal/release"
	"github.com/otaflow/otaflow/internal/rolloutclient"
	"github.com/otaflow/otaflow/internal/stack"
	"github.com/otaflow/otaflow/workflows/contract"
)

// TestDeltaUpdatesThroughRealAgents publishes releases of a 1 MiB tree that differ by a few
// files and 32 KiB of a library. The first update installs from full downloads (the starting
// version was not published with a chunk index); the second is built on each device from the
// version it runs plus the chunks it lacks, a fraction of the artifact, and installs the same
// tree a full download installs: the device whose library was modified in place downloads the
// full artifact and says why.
func TestDeltaUpdatesThroughRealAgents(t *testing.T) {
	ctx := context.Background()
	dataDir := t.TempDir()
	s, err := stack.Start(ctx, stack.Options{DataDir: dataDir, InMemoryTemporal: true, UIPort: 0, Logger: testLogger()})
	require.NoError(t, err)
	defer s.Close()
	fleet, err := s.UseRealInstalls(ctx, "1.10.2", nil)
	require.NoError(t, err)
	require.NoError(t, fleet.WithPayload(1<<20))
	arns, err := s.StartDevices(ctx, 4, "1.10.2", 0)
	require.NoError(t, err)
	core := func(i int) slots.Slots {
		return slots.Slots{Root: filepath.Join(dataDir, "devices", stack.Device(i), "root", "core")}
	}
	roll := func(id, version string, between ...func()) {
		t.Helper()
		rel, err := fleet.Publish(ctx, version, stack.HealthCheck(version, nil))
		require.NoError(t, err)
		for _, fn := range between {
			fn()
		}
		req := request(id, arns)
		req.Version, req.Artifact = version, rel.Artifact
		run, err := rolloutclient.Start(ctx, s.Client, contract.TaskQueue, req)
		require.NoError(t, err)
		res, err := rolloutclient.Result(ctx, run)
		require.NoError(t, err, res.Message)
		require.Equal(t, contract.StateSucceeded, res.State)
	}
	details := func(id string, i int) map[string]string {
		t.Helper()
		e, err := s.Jobs.DescribeJobExecution(contract.WaveJobID(id, 1), stack.Device(i))
		require.NoError(t, err)
		return e.StatusDetails
	}

	roll("delta-1", "1.11.0")
	for i := 1; i <= 4; i++ {
		d := details("delta-1", i)
		require.Equal(t, "full", d[agent.DetailDownload], d)
		require.Contains(t, d[agent.DetailDownloadNote], "no base: the installed 1.10.2 has no chunk index")
		require.Equal(t, d[agent.DetailArtifactBytes], d[agent.DetailBytesFetched])
	}

	// Device 4's library is changed in place (a hot fix, a corrupted disk).
	lib := filepath.Join(core(4).Dir("1.11.0"), "lib", "libcore.so")
	b, err := os.ReadFile(lib)
	require.NoError(t, err)
	b[10] ^= 0xff
	require.NoError(t, os.WriteFile(lib, b, 0o644))

	roll("delta-2", "1.12.0")
	for i := 1; i <= 3; i++ {
		d := details("delta-2", i)
		require.Equal(t, "delta", d[agent.DetailDownload], d)
		fetched, err := strconv.ParseInt(d[agent.DetailBytesFetched], 10, 64)
		require.NoError(t, err)
		full, err := strconv.ParseInt(d[agent.DetailArtifactBytes], 10, 64)
		require.NoError(t, err)
		t.Logf("%s fetched %d of %d bytes", stack.Device(i), fetched, full)
		require.Less(t, fetched, full/3, "a fraction of the artifact")
		require.Positive(t, fetched)
	}
	d := details("delta-2", 4)
	require.Equal(t, "full", d[agent.DetailDownload], d)
	require.Contains(t, d[agent.DetailDownloadNote], "base modified: the installed lib/libcore.so differs")

	// The same tree, whichever way it came.
	want := tree(t, core(4).Dir("1.12.0"))
	for i := 1; i <= 3; i++ {
		require.Equal(t, "1.12.0", core(i).Current())
		require.Equal(t, want, tree(t, core(i).Dir("1.12.0")), "%s installed what a full download installs", stack.Device(i))
	}
	downloads, _ := os.ReadDir(filepath.Join(dataDir, "devices", stack.Device(1), "root", "downloads"))
	require.Empty(t, downloads, "the rebuilt release and its chunks are removed once installed")

	// 1.13.0's new chunks are tampered with in the store: each device fetches them twice,
	// refuses them, and downloads the full artifact, which is intact.
	chunkDir := filepath.Join(dataDir, "artifacts", stack.ReleaseBucket, "delta", "chunks")
	before := chunkFiles(t, chunkDir)
	roll("delta-3", "1.13.0", func() {
		var n int
		for f := range chunkFiles(t, chunkDir) {
			if !before[f] {
				b, err := os.ReadFile(f)
				require.NoError(t, err)
				b[len(b)/2] ^= 0xff
				require.NoError(t, os.WriteFile(f, b, 0o644))
				n++
			}
		}
		require.Positive(t, n, "1.13.0 added chunks")
	})
	for i := 1; i <= 3; i++ {
		d := details("delta-3", i)
		require.Equal(t, "full", d[agent.DetailDownload], d)
		require.Contains(t, d[agent.DetailDownloadNote], "the delta failed")
		require.Contains(t, d[agent.DetailDownloadNote], "not what the signed index says")
		require.Equal(t, "1.13.0", core(i).Current())
	}

	// What operators see: each device's path and bytes, the rollout's totals.
	bin := starterCLI(t)
	out, stderr, err := runStarter(t, bin, s, "rollout", "status", "delta-2", "--downloads")
	require.NoError(t, err, stderr)
	require.Contains(t, out, "downloads: 3 delta, 1 full;", out)
	require.Contains(t, out, "base modified", out)

	// The console shows the same, in a real browser.
	tab := chromium(t)
	tab, cancel := context.WithTimeout(tab, 2*time.Minute)
	defer cancel()
	require.NoError(t, chromedp.Do(tab, chromedp.Navigate(s.ConsoleURL)))
	js := func(expr string) string {
		out, err := chromedp.Run(tab, chromedp.Evaluate[string](expr))
		if err != nil {
			return ""
		}
		return out
	}
	cell := func(i int) string {
		return fmt.Sprintf(`(document.querySelector('#results tr[data-thing="%s"] td.download') || {})`, stack.Device(i))
	}
	deadline := time.Now().Add(time.Minute)
	for js(`document.querySelector('#rollouts tr[data-rollout="delta-2"] td') ? "yes" : ""`) == "" {
		require.True(t, time.Now().Before(deadline), "the console lists delta-2")
		time.Sleep(200 * time.Millisecond)
	}
	require.NoError(t, chromedp.Do(tab, chromedp.Click(`#rollouts tr[data-rollout="delta-2"] td`)))
	for js(cell(4)+`.textContent || ""`) == "" {
		require.True(t, time.Now().Before(deadline), "the console shows delta-2's devices: %s", js(`document.body.textContent`))
		time.Sleep(200 * time.Millisecond)
	}
	totals, row1, row4, note := js(`document.querySelector("#downloads").textContent`), js(cell(1)+`.textContent`), js(cell(4)+`.textContent`), js(cell(4)+`.title`)
	require.Contains(t, totals, "Downloads: 3 delta, 1 full;")
	require.Contains(t, row1, "delta: ")
	require.Contains(t, row4, "full: 1.0 MiB of 1.0 MiB")
	require.Contains(t, note, "base modified")

	// Withdrawing 1.11.0 and 1.12.0 through the CLI deletes their packages and what only
	// they used; 1.13.0 keeps every chunk it needs.
	repo := filepath.Join(dataDir, "release-repo")
	out, stderr, err = runStarter(t, bin, s, "release", "list", "--repo", repo)
	require.NoError(t, err, stderr)
	for _, v := range []string{"1.11.0", "1.12.0", "1.13.0"} {
		require.Contains(t, out, v)
	}
	require.Contains(t, out, "yes (index")
	for _, v := range []string{"1.11.0", "1.12.0"} {
		_, stderr, err = runStarter(t, bin, s, "release", "remove", "--repo", repo, "--version", v, "--grace", "0s")
		require.NoError(t, err, stderr)
		require.Contains(t, stderr, "withdrew core "+v)
	}
	require.Contains(t, stderr, "1 live releases need")
	out, _, err = runStarter(t, bin, s, "release", "list", "--repo", repo, "-o", "json")
	require.NoError(t, err)
	require.NotContains(t, out, "1.12.0")
	require.Contains(t, out, "1.13.0")
	require.Less(t, len(chunkFiles(t, chunkDir)), len(before), "the withdrawn releases' own chunks are gone")

	// Versions come from what is published: a version never published (or withdrawn) is
	// refused, saying what is; one published gets its artifact without --release; no version
	// is the newest published.
	targets, err := json.Marshal(arns)
	require.NoError(t, err)
	update := []string{"create-software-update-job", "--update-targets", string(targets), "--update-targets-architecture", "x86_64",
		"--update-targets-operating-system", "ubuntu", "--software-to-update", "core", "--s3-url-signer-role", "arn:aws:iam::000000000000:role/signer"}
	_, stderr, err = runStarter(t, bin, s, append(update, "--amzn-client-token", "v-old", "--software-version", "1.12.0")...)
	require.Error(t, err)
	require.Contains(t, stderr, "core 1.12.0 was never published to bucket otaflow-releases (published: 1.13.0;")
	out, stderr, err = runStarter(t, bin, s, append(update, "--amzn-client-token", "v-new", "--wait")...)
	require.NoError(t, err, stderr)
	require.Contains(t, stderr, "installing core 1.13.0, the newest release for ubuntu/x86_64 published to bucket otaflow-releases")
	require.Contains(t, out, `"PlatformSoftwareVersion": "1.13.0"`)
	// A release built for other devices than the targets' is refused before anything starts.
	arm := append(slices.Clone(update), "--update-targets-architecture", "aarch64")
	_, stderr, err = runStarter(t, bin, s, append(arm, "--amzn-client-token", "v-arm", "--software-version", "1.13.0")...)
	require.Error(t, err)
	require.Contains(t, stderr, "core 1.13.0 cannot go to these devices: it is built for ubuntu/x86_64, and the targets are ubuntu/aarch64 devices")
	_, stderr, err = runStarter(t, bin, s, append(arm, "--amzn-client-token", "v-arm2")...)
	require.Error(t, err)
	require.Contains(t, stderr, "has no published release of core for ubuntu/aarch64 devices")
	var created struct{ IotJobId string }
	require.NoError(t, json.Unmarshal([]byte(out), &created), out)
	doc, err := s.IoT.GetJobDocument(ctx, &iot.GetJobDocumentInput{JobId: &created.IotJobId})
	require.NoError(t, err)
	require.Contains(t, *doc.Document, "s3://otaflow-releases/core/1.13.0.tar.gz", "the job names the published artifact")

	// A release installed through an update module: named, with its settings, at publish.
	pkg := filepath.Join(t.TempDir(), "conf.tar.gz")
	data, err := release.Pack(release.File{Name: "app.conf", Mode: 0o644, Body: []byte("v5")})
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(pkg, data, 0o644))
	publish := []string{"release", "publish", "--repo", repo, "--bucket", stack.ReleaseBucket, "--file", pkg, "--version", "5.0.0", "--os", "ubuntu", "--architecture", "x86_64", "-f", filepath.Join(t.TempDir(), "rel.json")}
	_, stderr, err = runStarter(t, bin, s, append(publish, "--module", "file", "--module-setting", "dest")...)
	require.Error(t, err)
	require.Contains(t, stderr, `--module-setting "dest": use NAME=VALUE`)
	_, stderr, err = runStarter(t, bin, s, append(publish, "--module", "file", "--module-setting", "dest=/etc/app")...)
	require.NoError(t, err, stderr)
	out, _, err = runStarter(t, bin, s, "release", "list", "--repo", repo)
	require.NoError(t, err)
	require.Regexp(t, `core\s+5\.0\.0\s+ubuntu/x86_64\s+\S+ \S+\s+file\s`, out)
}

// chunkFiles lists the chunk store's files.
func chunkFiles(t *testing.T, dir string) map[string]bool {
	out := map[string]bool{}
	require.NoError(t, filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() {
			out[p] = true
		}
		return err
	}))
	return out
}

// tree reads every file under dir.
func tree(t *testing.T, dir string) map[string]string {
	out := map[string]string{}
	require.NoError(t, filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		rel, _ := filepath.Rel(dir, p)
		out[rel] = string(b) + "|" + info.Mode().String()
		return err
	}))
	return out
}
