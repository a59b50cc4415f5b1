package workflows_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/mock"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"

	"github.com/otaflow/otaflow/workflows"
	"github.com/otaflow/otaflow/workflows/contract"
)

func validRequest() contract.RolloutRequest {
	return contract.RolloutRequest{
		RolloutID: "r1", Targets: []string{"dev-1", "dev-2", "dev-3"},
		Architecture: "x86_64", OperatingSystem: "ubuntu", SoftwareToUpdate: "core", Version: "1.11.0",
		S3URLSignerRole: "arn:aws:iam::000000000000:role/signer", Timeout: 10 * time.Minute, PollInterval: time.Second,
	}
}

// fakeJobs plays the jobs service for the activities: a fixed sequence of counts.
type fakeJobs struct {
	created  []contract.CreateJobInput
	canceled []string
	progress []contract.AwaitJobResult
	calls    int
	frozen   int
	released []string
}

func (f *fakeJobs) register(env *testsuite.TestWorkflowEnvironment) {
	registerFreeze(env, func(req contract.RolloutRequest) ([]string, error) {
		var arns []string
		for _, t := range req.Targets {
			if t == "ghost" {
				return nil, temporal.NewNonRetryableApplicationError("thing ghost is not registered", contract.ErrInvalidRequest, nil)
			}
			arns = append(arns, "arn:aws:iot:us-east-1:000000000000:thing/"+t)
		}
		return arns, nil
	}, &f.frozen, &f.released)
	env.RegisterActivityWithOptions(func(ctx context.Context, in contract.CreateJobInput) (*contract.CreateJobResult, error) {
		f.created = append(f.created, in)
		return &contract.CreateJobResult{JobID: in.JobID, JobArn: "arn:aws:iot:us-east-1:000000000000:job/" + in.JobID}, nil
	}, activity.RegisterOptions{Name: contract.ActivityCreateJob})
	env.RegisterActivityWithOptions(func(ctx context.Context, in contract.AwaitJobInputMax) (*contract.AwaitJobResult, error) {
		p := f.progress[min(f.calls, len(f.progress)-1)]
		f.calls++
		return &p, nil
	}, activity.RegisterOptions{Name: contract.ActivityAwaitJob})
	env.RegisterActivityWithOptions(func(ctx context.Context, in contract.CancelJobInput) (*contract.Counts, error) {
		f.canceled = append(f.canceled, in.JobID)
		return &contract.Counts{Succeeded: 1, Canceled: 2}, nil
	}, activity.RegisterOptions{Name: contract.ActivityCancelJob})
}

func resultOf(t *testing.T, err error) (string, contract.RolloutResult) {
	t.Helper()
	var appErr *temporal.ApplicationError
	require.True(t, errors.As(err, &appErr), "want an application error, got %v", err)
	var res contract.RolloutResult
	require.NoError(t, appErr.Details(&res))
	return appErr.Type(), res
}

func TestRolloutSucceeds(t *testing.T) {
	var s testsuite.WorkflowTestSuite
	env := s.NewTestWorkflowEnvironment()
	f := &fakeJobs{progress: []contract.AwaitJobResult{
		{Counts: contract.Counts{Queued: 2, InProgress: 1}},
		{Counts: contract.Counts{Succeeded: 3}, Done: true},
	}}
	f.register(env)
	env.ExecuteWorkflow(workflows.Rollout, validRequest())
	require.True(t, env.IsWorkflowCompleted())
	require.NoError(t, env.GetWorkflowError())
	var res contract.RolloutResult
	require.NoError(t, env.GetWorkflowResult(&res))
	require.Equal(t, contract.StateSucceeded, res.State)
	require.Equal(t, 3, res.Devices)
	require.Equal(t, contract.Counts{Succeeded: 3}, res.Counts)
	require.Equal(t, "otaflow-r1", res.JobID)
	require.Len(t, f.created, 1)
	require.Equal(t, 3, f.created[0].Devices)
	require.Equal(t, []string{"otaflow-r1-w1"}, f.released)
	require.Empty(t, f.canceled)
}

func TestRolloutFailsWhenDevicesFail(t *testing.T) {
	var s testsuite.WorkflowTestSuite
	env := s.NewTestWorkflowEnvironment()
	f := &fakeJobs{progress: []contract.AwaitJobResult{{Counts: contract.Counts{Succeeded: 1, Failed: 2}, Done: true}}}
	f.register(env)
	env.ExecuteWorkflow(workflows.Rollout, validRequest())
	require.True(t, env.IsWorkflowCompleted())
	typ, res := resultOf(t, env.GetWorkflowError())
	require.Equal(t, contract.ErrRolloutFailed, typ)
	require.Equal(t, contract.StateFailed, res.State)
	require.Equal(t, contract.Counts{Succeeded: 1, Failed: 2}, res.Counts)
	require.Contains(t, res.Message, "1 of 3 devices updated (33%), below the 100% success threshold")
}

func TestRolloutTimesOutAndCancelsTheJob(t *testing.T) {
	var s testsuite.WorkflowTestSuite
	env := s.NewTestWorkflowEnvironment()
	f := &fakeJobs{}
	f.register(env)
	// Every poll runs out its wait (on the test clock) with the devices still busy.
	env.OnActivity(contract.ActivityAwaitJob, mock.Anything, mock.Anything).
		Return(&contract.AwaitJobResult{Counts: contract.Counts{InProgress: 3}}, nil).After(30 * time.Second)
	req := validRequest()
	req.Timeout = 2 * time.Minute
	env.ExecuteWorkflow(workflows.Rollout, req)
	require.True(t, env.IsWorkflowCompleted())
	typ, res := resultOf(t, env.GetWorkflowError())
	require.Equal(t, contract.ErrRolloutTimedOut, typ)
	require.Equal(t, contract.StateTimedOut, res.State)
	require.Equal(t, []string{"otaflow-r1"}, f.canceled)
	require.Equal(t, contract.Counts{Succeeded: 1, Canceled: 2}, res.Counts)
}

func TestInvalidRequestCreatesNoJob(t *testing.T) {
	cases := map[string]func(*contract.RolloutRequest){
		"unsupported combination": func(r *contract.RolloutRequest) { r.OperatingSystem, r.Architecture = "raspbian", "x86_64" },
		"no signer role":          func(r *contract.RolloutRequest) { r.S3URLSignerRole = "" },
		"bad software":            func(r *contract.RolloutRequest) { r.SoftwareToUpdate = "kernel" },
		"bad log level":           func(r *contract.RolloutRequest) { r.UpdateAgentLogLevel = "LOUD" },
		"unknown thing":           func(r *contract.RolloutRequest) { r.Targets = append(r.Targets, "ghost") },
	}
	for name, mutate := range cases {
		t.Run(name, func(t *testing.T) {
			var s testsuite.WorkflowTestSuite
			env := s.NewTestWorkflowEnvironment()
			f := &fakeJobs{progress: []contract.AwaitJobResult{{Done: true}}}
			f.register(env)
			req := validRequest()
			mutate(&req)
			env.ExecuteWorkflow(workflows.Rollout, req)
			typ, res := resultOf(t, env.GetWorkflowError())
			require.Equal(t, contract.ErrInvalidRequest, typ)
			require.Equal(t, contract.StateInvalid, res.State)
			require.Empty(t, f.created, "an invalid request must create no job")
		})
	}
}

func TestValidateNamesEveryProblem(t *testing.T) {
	req := contract.RolloutRequest{RolloutID: "r1", Architecture: "x86_64", OperatingSystem: "raspbian"}
	err := req.Validate()
	require.Error(t, err)
	for _, want := range []string{"no update targets", "raspbian/x86_64 is not a supported combination", "software to update", "no version", "no S3 URL signer role"} {
		require.Contains(t, err.Error(), want)
	}
}

func TestStatusQueryWhileRunning(t *testing.T) {
	var s testsuite.WorkflowTestSuite
	env := s.NewTestWorkflowEnvironment()
	f := &fakeJobs{}
	f.register(env)
	env.OnActivity(contract.ActivityAwaitJob, mock.Anything, mock.Anything).
		Return(&contract.AwaitJobResult{Counts: contract.Counts{Queued: 1, InProgress: 2}}, nil).After(30 * time.Second).Once()
	env.OnActivity(contract.ActivityAwaitJob, mock.Anything, mock.Anything).
		Return(&contract.AwaitJobResult{Counts: contract.Counts{Succeeded: 3}, Done: true}, nil).After(30 * time.Second).Once()
	var seen contract.RolloutResult
	env.RegisterDelayedCallback(func() {
		v, err := env.QueryWorkflow(contract.QueryStatus)
		require.NoError(t, err)
		require.NoError(t, v.Get(&seen))
	}, 45*time.Second)
	env.ExecuteWorkflow(workflows.Rollout, validRequest())
	require.NoError(t, env.GetWorkflowError())
	require.Equal(t, contract.StateRunning, seen.State)
	require.Equal(t, 3, seen.Devices)
	require.Equal(t, contract.Counts{Queued: 1, InProgress: 2}, seen.Counts)
}

var mockAny = mock.Anything
