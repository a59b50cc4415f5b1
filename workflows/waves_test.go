package workflows_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"
	"go.temporal.io/sdk/workflow"

	"github.com/otaflow/otaflow/workflows"
	"github.com/otaflow/otaflow/workflows/contract"
)

func TestPlanWaves(t *testing.T) {
	for _, tc := range []struct {
		spec string
		n    int
		want []int
	}{
		{"", 10, []int{10}},
		{"1,10%,50%,100%", 100, []int{1, 10, 50, 100}},
		{"1,10%,50%,100%", 5, []int{1, 3, 5}},
		{"2,5", 20, []int{2, 5, 20}},
		{"50%", 3, []int{2, 3}},
		{"100", 3, []int{3}},
	} {
		sizes, err := contract.ParseWaves(tc.spec)
		require.NoError(t, err, tc.spec)
		require.Equal(t, tc.want, contract.PlanWaves(tc.n, sizes), "%s of %d", tc.spec, tc.n)
	}
	for _, bad := range []string{"0", "150%", "x", "-1", "10%,"} {
		_, err := contract.ParseWaves(bad)
		require.Error(t, err, bad)
	}
}

// fleet plays the jobs service for wave tests: each job's final counts come from outcome.
type fleet struct {
	devices int
	outcome func(jobID string, size int) contract.AwaitJobResult
	slow    bool // polls take 30 s of test time and report devices still running
	// cancelCounts are the job's counts after CancelJob.
	cancelCounts contract.Counts
	// windowOpens is when the maintenance window opens (test time).
	windowOpens time.Time
	jobTimes    []time.Time
	created     []contract.CreateJobInput
	canceled    []string
	cancelTimes []time.Time
	rollbacks   []contract.RollbackInput
	frozen      int      // FreezeTargets calls
	released    []string // groups ReleaseTargets deleted
}

// registerFreeze plays the jobs service's side of FreezeTargets and ReleaseTargets: resolve
// gives the devices, each wave gets a group named as the real activity names it.
func registerFreeze(env *testsuite.TestWorkflowEnvironment, resolve func(contract.RolloutRequest) ([]string, error), frozen *int, released *[]string) {
	env.RegisterActivityWithOptions(func(ctx context.Context, req contract.RolloutRequest) (*contract.ResolveTargetsResult, error) {
		arns, err := resolve(req)
		return &contract.ResolveTargetsResult{ThingArns: arns}, err
	}, activity.RegisterOptions{Name: contract.ActivityResolveTargets})
	env.RegisterActivityWithOptions(func(ctx context.Context, in contract.FreezeTargetsInput) (*contract.FreezeTargetsResult, error) {
		*frozen++
		arns, err := resolve(in.Request)
		if err != nil {
			return nil, err
		}
		sizes, err := contract.ParseWaves(in.Request.Waves)
		if err != nil {
			return nil, err
		}
		out := &contract.FreezeTargetsResult{Devices: len(arns)}
		prev := 0
		for i, cum := range contract.PlanWaves(len(arns), sizes) {
			g := contract.WaveGroup(in.Request.RolloutID, i+1)
			out.Waves = append(out.Waves, contract.FrozenWave{Devices: cum - prev, Group: g, GroupArn: "arn:aws:iot:us-east-1:0:thinggroup/" + g})
			prev = cum
		}
		return out, nil
	}, activity.RegisterOptions{Name: contract.ActivityFreezeTargets})
	env.RegisterActivityWithOptions(func(ctx context.Context, in contract.ReleaseTargetsInput) error {
		*released = append(*released, in.Groups...)
		return nil
	}, activity.RegisterOptions{Name: contract.ActivityReleaseTargets})
}

func (f *fleet) register(env *testsuite.TestWorkflowEnvironment) {
	registerFreeze(env, func(contract.RolloutRequest) ([]string, error) {
		var arns []string
		for i := 1; i <= f.devices; i++ {
			arns = append(arns, fmt.Sprintf("arn:aws:iot:us-east-1:0:thing/d%02d", i))
		}
		return arns, nil
	}, &f.frozen, &f.released)
	env.RegisterActivityWithOptions(func(ctx context.Context, in contract.WindowInput) (*contract.WindowState, error) {
		if in.At.Before(f.windowOpens) {
			return &contract.WindowState{OpensAt: f.windowOpens, ClosesAt: f.windowOpens.Add(time.Hour)}, nil
		}
		return &contract.WindowState{Open: true, OpensAt: f.windowOpens, ClosesAt: f.windowOpens.Add(time.Hour)}, nil
	}, activity.RegisterOptions{Name: contract.ActivityWindow})
	env.RegisterActivityWithOptions(func(ctx context.Context, in contract.CreateJobInput) (*contract.CreateJobResult, error) {
		f.created = append(f.created, in)
		f.jobTimes = append(f.jobTimes, env.Now())
		return &contract.CreateJobResult{JobID: in.JobID, JobArn: "arn:job/" + in.JobID}, nil
	}, activity.RegisterOptions{Name: contract.ActivityCreateJob})
	env.RegisterActivityWithOptions(func(ctx context.Context, in contract.AwaitJobInputMax) (*contract.AwaitJobResult, error) {
		size := 0
		for _, c := range f.created {
			if c.JobID == in.JobID {
				size = c.Devices
			}
		}
		if f.slow {
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-time.After(50 * time.Millisecond):
			}
			return &contract.AwaitJobResult{Counts: contract.Counts{InProgress: size}}, nil
		}
		r := f.outcome(in.JobID, size)
		return &r, nil
	}, activity.RegisterOptions{Name: contract.ActivityAwaitJob})
	env.RegisterActivityWithOptions(func(ctx context.Context, in contract.CancelJobInput) (*contract.Counts, error) {
		f.canceled = append(f.canceled, in.JobID)
		f.cancelTimes = append(f.cancelTimes, env.Now())
		c := f.cancelCounts
		return &c, nil
	}, activity.RegisterOptions{Name: contract.ActivityCancelJob})
	env.RegisterActivityWithOptions(func(ctx context.Context, in contract.FailedDevicesInput) ([]string, error) {
		return []string{"d02"}, nil
	}, activity.RegisterOptions{Name: contract.ActivityFailedDevices})
	env.RegisterActivityWithOptions(func(ctx context.Context, in contract.RollbackInput) (*contract.RollbackResult, error) {
		f.rollbacks = append(f.rollbacks, in)
		return &contract.RollbackResult{JobIDs: []string{contract.RollbackJobID(in.RolloutID, 1)}, Devices: 3}, nil
	}, activity.RegisterOptions{Name: contract.ActivityRollback})
}

func allSucceed(jobID string, size int) contract.AwaitJobResult {
	return contract.AwaitJobResult{Counts: contract.Counts{Succeeded: size}, Done: true}
}

func waveRequest() contract.RolloutRequest {
	r := validRequest()
	r.Waves = "1,50%,100%"
	return r
}

func sizes(f *fleet) []int {
	var out []int
	for _, c := range f.created {
		out = append(out, c.Devices)
	}
	return out
}

func TestWavesRunInOrder(t *testing.T) {
	var s testsuite.WorkflowTestSuite
	env := s.NewTestWorkflowEnvironment()
	f := &fleet{devices: 10, outcome: allSucceed}
	f.register(env)
	env.ExecuteWorkflow(workflows.Rollout, waveRequest())
	require.NoError(t, env.GetWorkflowError())
	var res contract.RolloutResult
	require.NoError(t, env.GetWorkflowResult(&res))
	require.Equal(t, []int{1, 4, 5}, sizes(f))
	require.Equal(t, []string{"otaflow-r1", "otaflow-r1-w2", "otaflow-r1-w3"}, []string{f.created[0].JobID, f.created[1].JobID, f.created[2].JobID})
	require.Equal(t, contract.Counts{Succeeded: 10}, res.Counts)
	require.Len(t, res.Waves, 3)
	for _, w := range res.Waves {
		require.Equal(t, contract.WavePassed, w.State)
	}
}

func TestWaveBelowThresholdAbortsAndRollsBack(t *testing.T) {
	var s testsuite.WorkflowTestSuite
	env := s.NewTestWorkflowEnvironment()
	f := &fleet{devices: 10, outcome: func(jobID string, size int) contract.AwaitJobResult {
		if jobID == "otaflow-r1-rb1" {
			return contract.AwaitJobResult{Counts: contract.Counts{Succeeded: 3}, Done: true}
		}
		if jobID == "otaflow-r1-w2" {
			return contract.AwaitJobResult{Counts: contract.Counts{Succeeded: 2, Failed: 2}, Done: true}
		}
		return allSucceed(jobID, size)
	}}
	f.register(env)
	req := waveRequest()
	req.SuccessThresholdPercent = 75
	req.OnFailure = contract.OnFailureRollback
	env.ExecuteWorkflow(workflows.Rollout, req)
	var appErr *temporal.ApplicationError
	require.True(t, errors.As(env.GetWorkflowError(), &appErr))
	require.Equal(t, contract.ErrRolloutAborted, appErr.Type())
	var res contract.RolloutResult
	require.NoError(t, appErr.Details(&res))
	require.Equal(t, contract.StateAborted, res.State)
	require.Equal(t, []int{1, 4}, sizes(f), "wave 3 never starts")
	require.Len(t, f.rollbacks, 1)
	require.Equal(t, []string{"otaflow-r1", "otaflow-r1-w2"}, f.rollbacks[0].JobIDs)
	require.Equal(t, &contract.RollbackResult{JobIDs: []string{"otaflow-r1-rb1"}, Devices: 3, RolledBack: 3}, res.Rollback)
	require.Contains(t, res.Message, "below the 75% success threshold")
	require.Contains(t, res.Message, "rolled back 3 of 3")
	require.Empty(t, f.canceled, "the failed wave had already finished")
}

func TestAbortCriteriaStopTheWave(t *testing.T) {
	var s testsuite.WorkflowTestSuite
	env := s.NewTestWorkflowEnvironment()
	f := &fleet{devices: 10, outcome: func(jobID string, size int) contract.AwaitJobResult {
		if jobID == "otaflow-r1-w2" {
			return contract.AwaitJobResult{Counts: contract.Counts{Failed: 2, InProgress: 2}, Aborted: "2 of 2 finished devices ended FAILED"}
		}
		return allSucceed(jobID, size)
	}}
	f.register(env)
	req := waveRequest()
	req.Abort = &contract.AbortCriteria{FailureType: "FAILED", ThresholdPercent: 50, MinExecuted: 2}
	env.ExecuteWorkflow(workflows.Rollout, req)
	_, res := resultOf(t, env.GetWorkflowError())
	require.Equal(t, contract.StateAborted, res.State)
	require.Equal(t, []string{"otaflow-r1-w2"}, f.canceled, "the running wave's job is canceled")
	require.Empty(t, f.rollbacks, "DO_NOTHING leaves updated devices alone")
	require.Contains(t, res.Message, "crossed the abort criteria")
}

func TestApprovalPauseAndResume(t *testing.T) {
	var s testsuite.WorkflowTestSuite
	env := s.NewTestWorkflowEnvironment()
	f := &fleet{devices: 10, outcome: allSucceed}
	f.register(env)
	req := waveRequest()
	req.ApproveWaves = true
	var seen []contract.RolloutResult
	var rejections []string
	n := 0
	update := func(name string, args ...any) {
		n++
		env.UpdateWorkflow(name, fmt.Sprintf("%s-%d", name, n), &testsuite.TestUpdateCallback{
			OnReject:   func(err error) { rejections = append(rejections, name+": "+err.Error()) },
			OnAccept:   func() {},
			OnComplete: func(any, error) {},
		}, args...)
	}
	query := func() {
		v, err := env.QueryWorkflow(contract.QueryStatus)
		require.NoError(t, err)
		var r contract.RolloutResult
		require.NoError(t, v.Get(&r))
		seen = append(seen, r)
	}
	env.RegisterDelayedCallback(func() {
		query() // waiting for approval of wave 2
		update(contract.UpdateResume)
		update(contract.UpdatePause)
		update(contract.UpdatePause) // rejected: already paused
		update(contract.UpdateApprove)
	}, time.Minute)
	env.RegisterDelayedCallback(func() {
		query() // approved but paused: still waiting
		update(contract.UpdateResume)
	}, 2*time.Minute)
	env.RegisterDelayedCallback(func() {
		query() // wave 2 done, wave 3 waits for approval
		update(contract.UpdateApprove)
	}, 3*time.Minute)
	env.ExecuteWorkflow(workflows.Rollout, req)
	require.NoError(t, env.GetWorkflowError())
	require.Equal(t, []int{1, 4, 5}, sizes(f))
	require.Equal(t, contract.StateAwaiting, seen[0].State)
	require.Equal(t, 1, seen[0].CurrentWave)
	require.True(t, seen[1].Paused)
	require.Equal(t, 1, seen[1].CurrentWave, "a paused rollout starts no wave")
	require.Equal(t, 2, seen[2].CurrentWave)
	require.Equal(t, contract.StateAwaiting, seen[2].State)
	require.Len(t, rejections, 2)
	require.Contains(t, rejections[0], "resume: rollout is not paused")
	require.Contains(t, rejections[1], "pause: rollout is already paused")
}

// The two-person rule: an approval that names no one, or the one who started the rollout, is
// refused; another operator's approval lets the next wave start and is recorded with its wave.
// An approval without a name still works for rollouts without the rule (older callers).
func TestTwoPersonRule(t *testing.T) {
	var s testsuite.WorkflowTestSuite
	env := s.NewTestWorkflowEnvironment()
	f := &fleet{devices: 10, outcome: allSucceed}
	f.register(env)
	req := waveRequest()
	req.ApproveWaves, req.RequireSecondApprover, req.StartedBy = true, true, "alice"
	var rejections []string
	n := 0
	update := func(name string, args ...any) {
		n++
		env.UpdateWorkflow(name, fmt.Sprintf("%s-%d", name, n), &testsuite.TestUpdateCallback{
			OnReject:   func(err error) { rejections = append(rejections, err.Error()) },
			OnAccept:   func() {},
			OnComplete: func(any, error) {},
		}, args...)
	}
	env.RegisterDelayedCallback(func() {
		update(contract.UpdateApprove)
		update(contract.UpdateApprove, contract.SteerRequest{By: "alice"})
		update(contract.UpdateApprove, contract.SteerRequest{By: "bob", Reason: "canary looks fine"})
	}, time.Minute)
	env.RegisterDelayedCallback(func() { update(contract.UpdateApprove, contract.SteerRequest{By: "carol"}) }, 3*time.Minute)
	env.ExecuteWorkflow(workflows.Rollout, req)
	require.NoError(t, env.GetWorkflowError())
	var res contract.RolloutResult
	require.NoError(t, env.GetWorkflowResult(&res))
	require.Equal(t, contract.StateSucceeded, res.State)
	require.Len(t, rejections, 2)
	require.Contains(t, rejections[0], "an approval must name its approver")
	require.Contains(t, rejections[1], "two-person rule: alice started rollout r1 and may not approve its waves")
	require.Len(t, res.Approvals, 2)
	require.Equal(t, "bob", res.Approvals[0].By)
	require.Equal(t, 2, res.Approvals[0].Wave)
	require.Equal(t, "carol", res.Approvals[1].By)
	require.Equal(t, 3, res.Approvals[1].Wave)

	bad := waveRequest()
	bad.RequireSecondApprover = true
	require.ErrorContains(t, bad.Validate(), "add --approve-waves")
}

func TestCancelUpdateCancelsTheJobAndRollsBack(t *testing.T) {
	var s testsuite.WorkflowTestSuite
	env := s.NewTestWorkflowEnvironment()
	f := &fleet{devices: 4, outcome: allSucceed, cancelCounts: contract.Counts{Succeeded: 2, Canceled: 2}}
	f.register(env)
	// Every poll of the (only) wave runs 30 s with devices still busy, until canceled.
	env.OnActivity(contract.ActivityAwaitJob, mockAny, mockAny).Return(
		func(ctx context.Context, in contract.AwaitJobInputMax) (*contract.AwaitJobResult, error) {
			if in.JobID == "otaflow-r1-rb1" {
				return &contract.AwaitJobResult{Counts: contract.Counts{Succeeded: 1, Failed: 1}, Done: true}, nil
			}
			return &contract.AwaitJobResult{Counts: contract.Counts{Succeeded: 2, InProgress: 2}}, nil
		}).After(30 * time.Second)
	rollback := true
	start := env.Now()
	var answer contract.RolloutResult
	env.RegisterDelayedCallback(func() {
		env.UpdateWorkflow(contract.UpdateCancel, "c1", &testsuite.TestUpdateCallback{
			OnReject: func(err error) { t.Errorf("cancel rejected: %v", err) }, OnAccept: func() {},
			OnComplete: func(v any, err error) {
				require.NoError(t, err)
				answer = v.(contract.RolloutResult)
			},
		}, contract.CancelRequest{Reason: "bad build", Rollback: &rollback})
	}, 45*time.Second)
	env.ExecuteWorkflow(workflows.Rollout, validRequest())
	// The job is canceled when the cancel arrives, not when the 30 s poll would have ended;
	// the cancel's answer comes after that, and says what the rollout now does.
	require.Len(t, f.cancelTimes, 1)
	require.Equal(t, 45*time.Second, f.cancelTimes[0].Sub(start))
	require.Equal(t, contract.StateRollingBack, answer.State, "the cancel answers once the job is canceled")
	var canceled *temporal.CanceledError
	require.True(t, errors.As(env.GetWorkflowError(), &canceled), "got %v", env.GetWorkflowError())
	var res contract.RolloutResult
	require.NoError(t, canceled.Details(&res))
	require.Equal(t, contract.StateCanceled, res.State)
	require.Equal(t, []string{"otaflow-r1"}, f.canceled)
	require.Len(t, f.rollbacks, 1)
	require.Equal(t, 1, res.Rollback.RolledBack)
	require.Equal(t, 1, res.Rollback.Failed)
	require.Equal(t, []string{"d02"}, res.Rollback.FailedDevices, "the result names who failed to roll back")
	require.Contains(t, res.Message, "canceled by operator: bad build")
}

func TestWavesWaitForTheMaintenanceWindow(t *testing.T) {
	var s testsuite.WorkflowTestSuite
	env := s.NewTestWorkflowEnvironment()
	start := env.Now()
	f := &fleet{devices: 4, outcome: allSucceed, windowOpens: start.Add(2 * time.Hour)}
	f.register(env)
	req := validRequest()
	req.Timeout = 5 * time.Hour
	req.Window = &contract.MaintenanceWindow{Cron: "0 2 * * *", Duration: time.Hour}
	var waiting contract.RolloutResult
	env.RegisterDelayedCallback(func() {
		v, err := env.QueryWorkflow(contract.QueryStatus)
		require.NoError(t, err)
		require.NoError(t, v.Get(&waiting))
	}, time.Hour)
	env.ExecuteWorkflow(workflows.Rollout, req)
	require.NoError(t, env.GetWorkflowError())
	require.Equal(t, contract.StateWaitingWindow, waiting.State)
	require.Empty(t, waiting.JobID, "no job before the window opens")
	require.Len(t, f.jobTimes, 1)
	require.False(t, f.jobTimes[0].Before(f.windowOpens), "the wave started inside the window")
}

// The rollout's timeout counts device work: a maintenance window two hours away and an
// approval given 40 minutes after wave 1 do not time out a 30-minute rollout whose two waves take 12
// minutes each, while a wave that itself runs past 30 minutes of device work does.
func TestTimeoutExcludesWaitsAtGates(t *testing.T) {
	run := func(t *testing.T, waveMinutes int) (*fleet, error) {
		var s testsuite.WorkflowTestSuite
		env := s.NewTestWorkflowEnvironment()
		start := env.Now()
		f := &fleet{devices: 4, outcome: allSucceed, windowOpens: start.Add(2 * time.Hour)}
		f.register(env)
		// A wave's devices finish waveMinutes after its job was created; every poll takes 30 s.
		env.OnActivity(contract.ActivityAwaitJob, mockAny, mockAny).Return(
			func(ctx context.Context, in contract.AwaitJobInputMax) (*contract.AwaitJobResult, error) {
				created := f.jobTimes[len(f.jobTimes)-1]
				if env.Now().Sub(created) >= time.Duration(waveMinutes)*time.Minute {
					return &contract.AwaitJobResult{Counts: contract.Counts{Succeeded: 2}, Done: true}, nil
				}
				return &contract.AwaitJobResult{Counts: contract.Counts{InProgress: 2}}, nil
			}).After(30 * time.Second)
		req := validRequest()
		req.Waves = "50%,100%"
		req.ApproveWaves = true
		req.Timeout = 30 * time.Minute
		req.Window = &contract.MaintenanceWindow{Cron: "0 2 * * *", Duration: 8 * time.Hour}
		env.RegisterDelayedCallback(func() {
			env.UpdateWorkflow(contract.UpdateApprove, "a1", &testsuite.TestUpdateCallback{
				OnReject: func(err error) { t.Errorf("approve rejected: %v", err) }, OnAccept: func() {}, OnComplete: func(any, error) {},
			})
		}, 2*time.Hour+(time.Duration(waveMinutes)+40)*time.Minute)
		env.ExecuteWorkflow(workflows.Rollout, req)
		return f, env.GetWorkflowError()
	}
	t.Run("gates do not count", func(t *testing.T) {
		f, err := run(t, 12)
		require.NoError(t, err)
		require.Len(t, f.created, 2, "both waves ran")
	})
	t.Run("device work does", func(t *testing.T) {
		f, err := run(t, 35)
		var appErr *temporal.ApplicationError
		require.True(t, errors.As(err, &appErr), "got %v", err)
		require.Equal(t, contract.ErrRolloutTimedOut, appErr.Type())
		require.Contains(t, appErr.Message(), "of device work")
		require.Len(t, f.created, 1)
	})
}

func TestRolloutIDFor(t *testing.T) {
	require.Equal(t, "nightly-2026-11-23T02-00-00Z", contract.RolloutIDFor("rollout-nightly-2026-11-23T02:00:00Z"))
}

func TestContinueAsNewCarriesTheRolloutOn(t *testing.T) {
	var s testsuite.WorkflowTestSuite
	env := s.NewTestWorkflowEnvironment()
	f := &fleet{devices: 4, outcome: allSucceed}
	f.register(env)
	env.OnActivity(contract.ActivityAwaitJob, mockAny, mockAny).
		Return(&contract.AwaitJobResult{Counts: contract.Counts{InProgress: 1}}, nil).After(30 * time.Second)
	env.SetContinueAsNewSuggested(true)
	req := validRequest()
	req.Waves = "1,100%"
	env.ExecuteWorkflow(workflows.Rollout, req)
	var can *workflow.ContinueAsNewError
	require.True(t, errors.As(env.GetWorkflowError(), &can), "got %v", env.GetWorkflowError())
	var next contract.RolloutRequest
	require.NoError(t, converter.GetDefaultDataConverter().FromPayloads(can.Input, &next))
	require.NotNil(t, next.Resume)
	require.Equal(t, contract.WaveRunning, next.Resume.Result.Waves[0].State)
	require.Equal(t, "otaflow-r1", next.Resume.Result.Waves[0].JobID)
	require.Len(t, f.created, 1)

	require.Equal(t, 1, f.frozen)
	require.Empty(t, f.released, "a continued rollout keeps its groups")

	// The next run picks up wave 1 where it was, without creating its job again, and without
	// resolving the targets again: two devices joined the target group meanwhile, and the
	// frozen waves do not take them.
	env2 := s.NewTestWorkflowEnvironment()
	f2 := &fleet{devices: 6, outcome: func(jobID string, size int) contract.AwaitJobResult {
		if jobID == "otaflow-r1" { // created by the first run
			size = 1
		}
		return allSucceed(jobID, size)
	}}
	f2.register(env2)
	env2.ExecuteWorkflow(workflows.Rollout, next)
	require.NoError(t, env2.GetWorkflowError())
	var res contract.RolloutResult
	require.NoError(t, env2.GetWorkflowResult(&res))
	require.Equal(t, []string{"otaflow-r1-w2"}, []string{f2.created[0].JobID})
	require.Len(t, f2.created, 1)
	require.Equal(t, 3, f2.created[0].Devices, "wave 2 gets the devices after wave 1's")
	require.Equal(t, "arn:aws:iot:us-east-1:0:thinggroup/otaflow-r1-w2", f2.created[0].GroupArn)
	require.Empty(t, f2.created[0].ThingArns, "no device list travels through the workflow")
	require.Zero(t, f2.frozen, "the continued run uses the frozen groups")
	require.Equal(t, contract.Counts{Succeeded: 4}, res.Counts)
	require.Equal(t, []string{"otaflow-r1-w1", "otaflow-r1-w2"}, f2.released, "the groups go when the rollout ends")
}

// A rollout of "the newest published release" decides the version once, when it starts, and
// every wave installs that one with its artifact.
func TestLatestReleaseIsDecidedAtStart(t *testing.T) {
	var s testsuite.WorkflowTestSuite
	env := s.NewTestWorkflowEnvironment()
	f := &fleet{devices: 4, outcome: allSucceed}
	f.register(env)
	asked := 0
	env.RegisterActivityWithOptions(func(ctx context.Context, in contract.LatestReleaseInput) (*contract.LatestReleaseResult, error) {
		asked++
		require.Equal(t, contract.LatestReleaseInput{Software: "core", Bucket: "fleet-releases", OS: "ubuntu", Architecture: "x86_64"}, in, "the newest for the targets' platform")
		return &contract.LatestReleaseResult{Version: "2.3.0", ArtifactURL: "s3://fleet-releases/core/2.3.0.tar.gz"}, nil
	}, activity.RegisterOptions{Name: contract.ActivityLatestRelease})
	req := waveRequest()
	req.Version, req.LatestReleaseBucket = "", "fleet-releases"
	env.ExecuteWorkflow(workflows.Rollout, req)
	require.NoError(t, env.GetWorkflowError())
	var res contract.RolloutResult
	require.NoError(t, env.GetWorkflowResult(&res))
	require.Equal(t, "2.3.0", res.Version)
	require.Equal(t, 1, asked)
	require.Len(t, f.created, 3)
	for _, c := range f.created {
		require.Equal(t, "2.3.0", c.Request.Version)
		require.Equal(t, "s3://fleet-releases/core/2.3.0.tar.gz", c.Request.Artifact.URL)
	}
}
