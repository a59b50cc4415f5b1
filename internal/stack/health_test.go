package stack_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/require"

	"github.com/otaflow/otaflow/internal/rolloutclient"
	"github.com/otaflow/otaflow/internal/stack"
	"github.com/otaflow/otaflow/workflows/contract"
)

// TestReleaseHealthGates: on the real stack with real installs and agents, a release that
// installs cleanly and then fails its health check on two devices stops at the wave that
// holds them and puts the updated devices back; a good release passes every gate, and its
// window survives the worker (a process of its own) being SIGKILLed mid-window.
func TestReleaseHealthGates(t *testing.T) {
	ctx := context.Background()
	s, err := stack.Start(ctx, stack.Options{DataDir: t.TempDir(), InMemoryTemporal: true, UIPort: -1, Logger: testLogger(),
		DeviceHealthInterval: 300 * time.Millisecond, NoWorker: true})
	require.NoError(t, err)
	defer s.Close()
	worker := startChildWorker(t, s)
	defer func() { worker.Process.Kill(); worker.Wait() }()
	fleet, err := s.UseRealInstalls(ctx, "1.10.2", nil)
	require.NoError(t, err)
	arns, err := s.StartDevices(ctx, 8, "1.10.2", 0)
	require.NoError(t, err)
	gate := &contract.HealthGate{Window: 6 * time.Second, Interval: 500 * time.Millisecond, Action: contract.HealthAbort}

	// The bad release: devices 2 and 3 (the second wave) degrade 2 s after installing.
	req := request("degrade", arns)
	req.Version, req.Waves, req.OnFailure, req.Health = "1.11.6", "1,3,100%", contract.OnFailureRollback, gate
	rel, err := fleet.Publish(ctx, "1.11.6", stack.DegradingHealthCheck("1.11.6", nil, []string{stack.Device(2), stack.Device(3)}, 2*time.Second))
	require.NoError(t, err)
	req.Artifact = rel.Artifact
	run, err := rolloutclient.Start(ctx, s.Client, contract.TaskQueue, req)
	require.NoError(t, err)
	res, err := rolloutclient.Result(ctx, run)
	require.Error(t, err)
	require.Equal(t, contract.StateAborted, res.State, res.Message)
	require.Contains(t, res.Message, "health gate breached: devices failing their health check")
	require.Contains(t, res.Message, "in waves 1-2")
	require.Equal(t, contract.HealthPassed, res.Waves[0].Health.State)
	require.Equal(t, contract.HealthBreached, res.Waves[1].Health.State)
	require.Equal(t, contract.WaveCanceled, res.Waves[2].State, "the fleet never got it")
	require.NotNil(t, res.Rollback)
	require.Equal(t, 3, res.Rollback.RolledBack, res.Rollback.Message)
	for i, a := range s.Agents() {
		require.Equal(t, "1.10.2", a.InstalledVersion("core"), "device %d", i+1)
	}

	// The console shows each wave's gate, with its chart, in a real Chromium.
	tab := chromium(t)
	tab, cancel := context.WithTimeout(tab, time.Minute)
	defer cancel()
	require.NoError(t, chromedp.Do(tab, chromedp.Navigate(s.ConsoleURL)))
	require.NoError(t, chromedp.Do(tab, chromedp.WaitVisible(`#rollouts tr[data-rollout="degrade"] td`)))
	require.NoError(t, chromedp.Do(tab, chromedp.Click(`#rollouts tr[data-rollout="degrade"] td`)))
	require.NoError(t, chromedp.Do(tab, chromedp.WaitVisible(`#waves tr[data-wave="2"] td.health`)))
	cell := func(wave, sel string) string {
		out, err := chromedp.Run(tab, chromedp.Evaluate[string](fmt.Sprintf(`(document.querySelector('#waves tr[data-wave="%s"] %s') || {textContent: ""}).textContent`, wave, sel)))
		require.NoError(t, err)
		return out
	}
	require.Contains(t, cell("2", "td.health"), "BREACHED")
	require.Contains(t, cell("2", "td.health"), "devices failing their health check")
	require.Contains(t, cell("1", "td.health"), "PASSED")
	charts, err := chromedp.Run(tab, chromedp.Evaluate[int](`document.querySelectorAll('#waves td.health svg.chart polyline').length`))
	require.NoError(t, err)
	require.GreaterOrEqual(t, charts, 2, "updated and control lines")

	// The good release passes every gate; the worker stops and starts during wave 1's window.
	req = request("healthy", arns)
	req.Version, req.Waves, req.OnFailure, req.Health = "1.12.0", "1,3,100%", contract.OnFailureRollback, gate
	rel, err = fleet.Publish(ctx, "1.12.0", stack.HealthCheck("1.12.0", nil))
	require.NoError(t, err)
	req.Artifact = rel.Artifact
	run, err = rolloutclient.Start(ctx, s.Client, contract.TaskQueue, req)
	require.NoError(t, err)
	var before contract.RolloutResult
	require.Eventually(t, func() bool {
		before, err = rolloutclient.Status(ctx, s.Client, "healthy")
		return err == nil && before.State == contract.StateObserving
	}, 30*time.Second, 50*time.Millisecond)
	require.NoError(t, worker.Process.Kill()) // SIGKILL: no goodbye
	worker.Wait()
	time.Sleep(time.Second)
	worker = startChildWorker(t, s)
	res, err = rolloutclient.Result(ctx, run)
	require.NoError(t, err, res.Message)
	require.Equal(t, contract.StateSucceeded, res.State)
	for _, w := range res.Waves {
		require.Equal(t, contract.HealthPassed, w.Health.State, "wave %d", w.Wave)
		require.GreaterOrEqual(t, w.Health.Evaluations, 1)
	}
	w := before.CurrentWave - 1
	require.Equal(t, before.Waves[w].Health.Until, res.Waves[w].Health.Until, "one window, kept across the restart")
	for i, a := range s.Agents() {
		require.Equal(t, "1.12.0", a.InstalledVersion("core"), "device %d", i+1)
	}

	// The console's releases view: what was published, newest first, with how many devices run it.
	release := func(v string) string {
		out, err := chromedp.Run(tab, chromedp.Evaluate[string](fmt.Sprintf(`(document.querySelector('#releases tr[data-release="core/%s"] td.count') || {textContent: ""}).textContent`, v)))
		require.NoError(t, err)
		return out
	}
	require.Eventually(t, func() bool { return release("1.12.0") == "8" && release("1.11.6") == "0" }, 30*time.Second, 200*time.Millisecond,
		"releases 1.12.0 (8 devices) and 1.11.6 (none)")
}
