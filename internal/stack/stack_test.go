package stack_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/client"

	"github.com/otaflow/otaflow/internal/release"
	"github.com/otaflow/otaflow/internal/rolloutclient"
	"github.com/otaflow/otaflow/internal/stack"
	"github.com/otaflow/otaflow/workflows/contract"
)

func testLogger() zerolog.Logger {
	if os.Getenv("OTAFLOW_TEST_LOG") != "" {
		return zerolog.New(zerolog.ConsoleWriter{Out: os.Stderr}).With().Timestamp().Logger()
	}
	return zerolog.Nop()
}

func startStack(t *testing.T) *stack.Stack {
	t.Helper()
	s, err := stack.Start(context.Background(), stack.Options{DataDir: t.TempDir(), Logger: testLogger()})
	require.NoError(t, err)
	t.Cleanup(s.Close)
	return s
}

// request is a rollout of core 1.11.6 with its artifact (simulated devices take it as
// downloaded; without one they refuse the job, as agents do).
func request(id string, targets []string) contract.RolloutRequest {
	req := contract.RolloutRequest{
		RolloutID: id, Targets: targets, Architecture: "x86_64", OperatingSystem: "ubuntu",
		SoftwareToUpdate: "core", S3URLSignerRole: "arn:aws:iam::000000000000:role/otaflow-local-signer",
		PollInterval: 200 * time.Millisecond, Timeout: 2 * time.Minute,
	}
	setVersion(&req, "1.11.6")
	return req
}

// setVersion makes req install version, with that release's artifact.
func setVersion(req *contract.RolloutRequest, version string) {
	req.Version = version
	req.Artifact = &contract.Artifact{URL: release.S3URL(stack.ReleaseBucket, req.SoftwareToUpdate, version)}
}

// TestEndToEnd runs real rollouts through every real part: Temporal server, broker, jobs
// service, worker and 20 agents.
func TestEndToEnd(t *testing.T) {
	ctx := context.Background()
	s := startStack(t)
	arns, err := s.StartDevices(ctx, 20, "1.10.2", 10*time.Millisecond)
	require.NoError(t, err)
	require.Len(t, arns, 20)

	resp, err := http.Get(s.Temporal.UIURL())
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode, "the web UI answers")

	t.Run("all devices succeed", func(t *testing.T) {
		run, err := rolloutclient.Start(ctx, s.Client, contract.TaskQueue, request("e2e-ok", arns))
		require.NoError(t, err)
		res, err := rolloutclient.Result(ctx, run)
		require.NoError(t, err)
		require.Equal(t, contract.StateSucceeded, res.State)
		require.Equal(t, contract.Counts{Succeeded: 20}, res.Counts)
		for _, a := range s.Agents() {
			require.Equal(t, "1.11.6", a.InstalledVersion("core"), "a device reports the new version")
		}
	})

	t.Run("web UI lists the rollout", func(t *testing.T) {
		resp, err := http.Get(s.Temporal.UIURL() + "/api/v1/namespaces/default/workflows")
		require.NoError(t, err)
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		require.Equal(t, http.StatusOK, resp.StatusCode, string(body))
		require.Contains(t, string(body), contract.RolloutWorkflowID("e2e-ok"))
	})

	t.Run("two devices fail", func(t *testing.T) {
		req := request("e2e-fail", arns)
		setVersion(&req, "1.11.7")
		s.SetDeviceFaults([]string{stack.Device(3), stack.Device(17)}, nil)
		t.Cleanup(func() { s.SetDeviceFaults(nil, nil) })
		run, err := rolloutclient.Start(ctx, s.Client, contract.TaskQueue, req)
		require.NoError(t, err)
		res, err := rolloutclient.Result(ctx, run)
		require.Error(t, err)
		require.Equal(t, contract.StateFailed, res.State)
		require.Equal(t, contract.Counts{Succeeded: 18, Failed: 2}, res.Counts)
		for i, a := range s.Agents() {
			want := "1.11.7"
			if i+1 == 3 || i+1 == 17 {
				want = "1.11.6" // a failed install leaves the device on its old version
			}
			require.Equal(t, want, a.InstalledVersion("core"), stack.Device(i+1))
		}
	})

	t.Run("unknown target creates no job", func(t *testing.T) {
		run, err := rolloutclient.Start(ctx, s.Client, contract.TaskQueue, request("e2e-bad", append(arns[:1:1], "arn:aws:iot:us-east-1:000000000000:thing/ghost")))
		require.NoError(t, err)
		res, err := rolloutclient.Result(ctx, run)
		require.ErrorContains(t, err, "ghost")
		require.Equal(t, contract.StateInvalid, res.State)
		_, err = s.Jobs.DescribeJob(contract.RolloutJobID("e2e-bad"))
		require.ErrorContains(t, err, "does not exist")
	})

	t.Run("same rollout ID starts no second rollout", func(t *testing.T) {
		first, err := s.Client.DescribeWorkflowExecution(ctx, contract.RolloutWorkflowID("e2e-ok"), "")
		require.NoError(t, err)
		run, err := rolloutclient.Start(ctx, s.Client, contract.TaskQueue, request("e2e-ok", arns))
		require.NoError(t, err)
		require.Equal(t, first.WorkflowExecutionInfo.Execution.RunId, run.GetRunID())
		res, err := rolloutclient.Result(ctx, run)
		require.NoError(t, err)
		require.Equal(t, contract.Counts{Succeeded: 20}, res.Counts)
	})
}

// TestRestartKeepsEverything stops the whole stack and starts it again on the same data dir:
// the rollout, its job and the devices' versions are all still there.
func TestRestartKeepsEverything(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := stack.Start(ctx, stack.Options{DataDir: dir, UIPort: -1, Logger: testLogger()})
	require.NoError(t, err)
	arns, err := s.StartDevices(ctx, 3, "1.10.2", 0)
	require.NoError(t, err)
	run, err := rolloutclient.Start(ctx, s.Client, contract.TaskQueue, request("persist", arns))
	require.NoError(t, err)
	_, err = rolloutclient.Result(ctx, run)
	require.NoError(t, err)
	s.Close()

	s, err = stack.Start(ctx, stack.Options{DataDir: dir, UIPort: -1, Logger: testLogger()})
	require.NoError(t, err)
	defer s.Close()
	desc, err := s.Client.DescribeWorkflowExecution(ctx, contract.RolloutWorkflowID("persist"), "")
	require.NoError(t, err)
	require.Equal(t, run.GetRunID(), desc.WorkflowExecutionInfo.Execution.RunId)
	res, err := rolloutclient.Status(ctx, s.Client, "persist")
	require.NoError(t, err)
	require.Equal(t, contract.StateSucceeded, res.State)
	job, err := s.Jobs.DescribeJob(contract.RolloutJobID("persist"))
	require.NoError(t, err)
	require.Equal(t, 3, job.Counts.Succeeded)
	_, err = s.StartDevices(ctx, 3, "1.10.2", 0)
	require.NoError(t, err)
	for _, a := range s.Agents() {
		require.Equal(t, "1.11.6", a.InstalledVersion("core"))
	}
}

// TestWorkerStoppedMidRollout stops the only worker while devices are installing and starts a
// new one later: the rollout carries on from where it was and the outcome is unchanged.
func TestWorkerStoppedMidRollout(t *testing.T) {
	ctx := context.Background()
	s, err := stack.Start(ctx, stack.Options{DataDir: t.TempDir(), InMemoryTemporal: true, UIPort: -1, Logger: testLogger()})
	require.NoError(t, err)
	defer s.Close()
	arns, err := s.StartDevices(ctx, 10, "1.10.2", 3*time.Second)
	require.NoError(t, err)
	req := request("worker-restart", arns)
	run, err := rolloutclient.Start(ctx, s.Client, contract.TaskQueue, req)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		j, err := s.Jobs.DescribeJob(contract.RolloutJobID("worker-restart"))
		return err == nil && j.Counts.InProgress > 0
	}, 30*time.Second, 50*time.Millisecond)
	s.StopWorker()
	// Devices finish while no worker runs; the rollout must notice once one is back.
	require.Eventually(t, func() bool {
		j, _ := s.Jobs.DescribeJob(contract.RolloutJobID("worker-restart"))
		return j.Counts.Succeeded == 10
	}, 30*time.Second, 50*time.Millisecond)
	require.NoError(t, s.StartWorker())
	res, err := rolloutclient.Result(ctx, run)
	require.NoError(t, err)
	require.Equal(t, contract.Counts{Succeeded: 10}, res.Counts)
	j, err := s.Jobs.DescribeJob(contract.RolloutJobID("worker-restart"))
	require.NoError(t, err)
	require.Equal(t, 10, j.Counts.Succeeded, "no device was updated twice or left out")
}

// TestBusyPortsNameTheFlag: a port in use is reported with the flag that changes it, and
// nothing is left running.
func TestBusyPortsNameTheFlag(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	port := l.Addr().(*net.TCPAddr).Port
	for flag, o := range map[string]stack.Options{
		"--temporal-port": {TemporalPort: port, UIPort: -1},
		"--ui-port":       {UIPort: port},
		"--mqtt-addr":     {UIPort: -1, MQTTAddr: l.Addr().String()},
		"--jobs-addr":     {UIPort: -1, JobsAddr: l.Addr().String()},
	} {
		t.Run(flag, func(t *testing.T) {
			o.DataDir, o.InMemoryTemporal, o.Logger = t.TempDir(), true, testLogger()
			s, err := stack.Start(context.Background(), o)
			if s != nil {
				s.Close()
			}
			require.ErrorContains(t, err, flag)
		})
	}
}

// TestWaveAbortRollsBack: the second wave crosses the abort threshold; the rollout aborts and
// every device that took the update is back on its previous version.
func TestWaveAbortRollsBack(t *testing.T) {
	ctx := context.Background()
	s, err := stack.Start(ctx, stack.Options{DataDir: t.TempDir(), InMemoryTemporal: true, UIPort: -1, Logger: testLogger()})
	require.NoError(t, err)
	defer s.Close()
	arns, err := s.StartDevices(ctx, 10, "1.10.2", 20*time.Millisecond)
	require.NoError(t, err)
	req := request("abort-rollback", arns)
	req.Waves = "3,100%"
	req.Abort = &contract.AbortCriteria{FailureType: "FAILED", ThresholdPercent: 30, MinExecuted: 3}
	req.OnFailure = contract.OnFailureRollback
	var failing []string
	for i := 4; i <= 7; i++ {
		failing = append(failing, stack.Device(i))
	}
	s.SetDeviceFaults(failing, nil)
	run, err := rolloutclient.Start(ctx, s.Client, contract.TaskQueue, req)
	require.NoError(t, err)
	res, err := rolloutclient.Result(ctx, run)
	require.Error(t, err)
	require.Equal(t, contract.StateAborted, res.State, res.Message)
	require.Len(t, res.Waves, 2)
	require.Equal(t, contract.WavePassed, res.Waves[0].State)
	require.Equal(t, contract.WaveFailed, res.Waves[1].State)
	require.NotNil(t, res.Rollback)
	require.Zero(t, res.Rollback.Failed, res.Rollback.Message)
	require.GreaterOrEqual(t, res.Rollback.RolledBack, 3, "at least wave one's devices were rolled back")
	for i, a := range s.Agents() {
		require.Equal(t, "1.10.2", a.InstalledVersion("core"), "%s is back on its previous version", stack.Device(i+1))
	}
}

// TestScheduledRollout: a Temporal Schedule starts rollouts, each with its own rollout ID and
// jobs, which run to completion.
func TestScheduledRollout(t *testing.T) {
	ctx := context.Background()
	s, err := stack.Start(ctx, stack.Options{DataDir: t.TempDir(), InMemoryTemporal: true, UIPort: -1, Logger: testLogger()})
	require.NoError(t, err)
	defer s.Close()
	arns, err := s.StartDevices(ctx, 3, "1.10.2", 0)
	require.NoError(t, err)
	req := request("", arns)
	req.Waves = "1,100%"
	h, err := rolloutclient.CreateSchedule(ctx, s.Client, contract.TaskQueue, "nightly", "0 3 * * *", "Europe/Berlin", true, req)
	require.NoError(t, err)
	desc, err := h.Describe(ctx)
	require.NoError(t, err)
	require.NotEmpty(t, desc.Info.NextActionTimes)
	require.NoError(t, h.Trigger(ctx, client.ScheduleTriggerOptions{}))
	var runID, wfID string
	require.Eventually(t, func() bool {
		d, err := h.Describe(ctx)
		if err != nil || len(d.Info.RecentActions) == 0 {
			return false
		}
		wfID, runID = d.Info.RecentActions[0].StartWorkflowResult.WorkflowID, d.Info.RecentActions[0].StartWorkflowResult.FirstExecutionRunID
		return true
	}, 30*time.Second, 100*time.Millisecond)
	res, err := rolloutclient.Result(ctx, s.Client.GetWorkflow(ctx, wfID, runID))
	require.NoError(t, err)
	require.Equal(t, contract.RolloutIDFor(wfID), res.RolloutID)
	require.NotEqual(t, "nightly", res.RolloutID, "each run is its own rollout")
	require.Equal(t, contract.Counts{Succeeded: 3}, res.Counts)
	require.Len(t, res.Waves, 2)
	require.NoError(t, h.Delete(ctx))
}

// TestBakeTime: a device counts only after staying healthy for the bake time; one whose health
// check fails rolls itself back and is counted FAILED.
func TestBakeTime(t *testing.T) {
	ctx := context.Background()
	s, err := stack.Start(ctx, stack.Options{DataDir: t.TempDir(), InMemoryTemporal: true, UIPort: -1, Logger: testLogger()})
	require.NoError(t, err)
	defer s.Close()
	arns, err := s.StartDevices(ctx, 6, "1.10.2", 0)
	require.NoError(t, err)
	req := request("bake", arns)
	req.BakeTime = time.Second
	req.SuccessThresholdPercent = 80
	s.SetDeviceFaults(nil, []string{stack.Device(2)})
	run, err := rolloutclient.Start(ctx, s.Client, contract.TaskQueue, req)
	require.NoError(t, err)
	res, err := rolloutclient.Result(ctx, run)
	require.NoError(t, err, res.Message)
	require.Equal(t, contract.StateSucceeded, res.State)
	require.Equal(t, contract.Counts{Succeeded: 5, Failed: 1}, res.Counts)
	e, err := s.Jobs.DescribeJobExecution(contract.RolloutJobID("bake"), stack.Device(2))
	require.NoError(t, err)
	require.Contains(t, e.StatusDetails["reason"], "health check failed")
	for i, a := range s.Agents() {
		want := "1.11.6"
		if i == 1 {
			want = "1.10.2"
		}
		require.Equal(t, want, a.InstalledVersion("core"), stack.Device(i+1))
	}
}
