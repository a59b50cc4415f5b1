package workflows

import (
	"errors"
	"fmt"
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"
)

// Activity names are API: a live workflow calls them by these names.
const (
	ActivityResolveTargets = "ResolveTargets"
	ActivityCreateJob      = "CreateJob"
	ActivityAwaitJob       = "AwaitJob"
	ActivityCancelJob      = "CancelJob"
)

// QueryStatus returns the rollout's RolloutResult so far.
const QueryStatus = "status"

// Error types a rollout fails with; a caller can read the RolloutResult from the details.
const (
	ErrInvalidRequest  = "InvalidRequest"
	ErrRolloutFailed   = "RolloutFailed"
	ErrRolloutTimedOut = "RolloutTimedOut"
)

// Search attributes the rollout keeps current, so the web UI can list and filter rollouts.
var (
	SearchRolloutID     = temporal.NewSearchAttributeKeyKeyword("OtaflowRolloutId")
	SearchTargetVersion = temporal.NewSearchAttributeKeyKeyword("OtaflowTargetVersion")
	SearchState         = temporal.NewSearchAttributeKeyKeyword("OtaflowState")
)

// reportEvery bounds one AwaitJob call, so the status query sees progress at least this often.
const reportEvery = 30 * time.Second

// AwaitJobResult is AwaitJob's answer: the counts, and whether every execution is terminal.
type AwaitJobResult struct {
	Counts Counts `json:"counts"`
	Done   bool   `json:"done"`
}

// AwaitJobInputMax is AwaitJobInput with the longest the activity may wait this call.
type AwaitJobInputMax struct {
	AwaitJobInput
	MaxWait time.Duration `json:"maxWait"`
}

// Rollout runs one over-the-air update: validate, create the IoT job, wait for the devices,
// and end with their counts. On timeout or cancellation it cancels the job.
func Rollout(ctx workflow.Context, req RolloutRequest) (*RolloutResult, error) {
	r := &rollout{req: req, res: RolloutResult{RolloutID: req.RolloutID, Version: req.Version, State: StateValidating}}
	if err := workflow.SetQueryHandler(ctx, QueryStatus, func() (RolloutResult, error) { return r.res, nil }); err != nil {
		return nil, err
	}
	return r.run(ctx)
}

type rollout struct {
	req RolloutRequest
	res RolloutResult
}

func (r *rollout) run(ctx workflow.Context) (*RolloutResult, error) {
	log := workflow.GetLogger(ctx)
	if err := r.req.Validate(); err != nil {
		r.setState(ctx, StateInvalid, err.Error())
		return nil, temporal.NewNonRetryableApplicationError(err.Error(), ErrInvalidRequest, nil, r.res)
	}
	short := workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		StartToCloseTimeout: 30 * time.Second,
		RetryPolicy: &temporal.RetryPolicy{
			InitialInterval: time.Second, BackoffCoefficient: 2, MaximumInterval: 30 * time.Second,
			MaximumAttempts: 20, NonRetryableErrorTypes: []string{ErrInvalidRequest},
		},
	})

	var targets ResolveTargetsResult
	if err := workflow.ExecuteActivity(short, ActivityResolveTargets, r.req).Get(ctx, &targets); err != nil {
		r.setState(ctx, StateInvalid, "targets could not be resolved: "+rootMessage(err))
		return nil, temporal.NewNonRetryableApplicationError(r.res.Message, ErrInvalidRequest, err, r.res)
	}
	r.res.Devices = len(targets.ThingArns)

	jobID := RolloutJobID(r.req.RolloutID)
	var created CreateJobResult
	err := workflow.ExecuteActivity(short, ActivityCreateJob, CreateJobInput{JobID: jobID, ThingArns: targets.ThingArns, Request: r.req}).Get(ctx, &created)
	if err != nil {
		r.setState(ctx, StateFailed, "the IoT job could not be created: "+rootMessage(err))
		return nil, temporal.NewNonRetryableApplicationError(r.res.Message, ErrRolloutFailed, err, r.res)
	}
	r.res.JobID, r.res.JobArn = created.JobID, created.JobArn
	r.res.Counts = Counts{Queued: r.res.Devices}
	r.setState(ctx, StateRunning, "")
	log.Info("rollout job created", "job", jobID, "devices", r.res.Devices)

	deadline := workflow.Now(ctx).Add(r.req.Timeout)
	for {
		remaining := deadline.Sub(workflow.Now(ctx))
		if remaining <= 0 {
			return r.abort(ctx, StateTimedOut, fmt.Sprintf("devices did not finish within %s", r.req.Timeout))
		}
		wait := min(remaining, reportEvery)
		actx := workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
			StartToCloseTimeout: wait + 30*time.Second,
			HeartbeatTimeout:    max(30*time.Second, 3*r.req.PollInterval),
			RetryPolicy: &temporal.RetryPolicy{
				InitialInterval: time.Second, BackoffCoefficient: 2, MaximumInterval: 30 * time.Second,
			},
		})
		var progress AwaitJobResult
		err := workflow.ExecuteActivity(actx, ActivityAwaitJob, AwaitJobInputMax{
			AwaitJobInput: AwaitJobInput{JobID: jobID, PollInterval: r.req.PollInterval}, MaxWait: wait,
		}).Get(ctx, &progress)
		if err != nil {
			var canceled *temporal.CanceledError
			if errors.As(err, &canceled) || ctx.Err() != nil {
				return r.abort(ctx, StateCanceled, "rollout canceled")
			}
			return nil, err
		}
		r.res.Counts = progress.Counts
		if progress.Done {
			break
		}
	}

	c := r.res.Counts
	if c.Succeeded == r.res.Devices {
		r.setState(ctx, StateSucceeded, fmt.Sprintf("all %d devices updated to %s", c.Succeeded, r.req.Version))
		return &r.res, nil
	}
	r.setState(ctx, StateFailed, fmt.Sprintf("%d of %d devices did not update (failed %d, rejected %d, timed out %d, canceled %d, removed %d)",
		r.res.Devices-c.Succeeded, r.res.Devices, c.Failed, c.Rejected, c.TimedOut, c.Canceled, c.Removed))
	return nil, temporal.NewNonRetryableApplicationError(r.res.Message, ErrRolloutFailed, nil, r.res)
}

// abort cancels the job (on a disconnected context, so workflow cancellation cannot skip it)
// and ends the rollout in state.
func (r *rollout) abort(ctx workflow.Context, state, why string) (*RolloutResult, error) {
	dctx, _ := workflow.NewDisconnectedContext(ctx)
	dctx = workflow.WithActivityOptions(dctx, workflow.ActivityOptions{
		StartToCloseTimeout: 30 * time.Second,
		RetryPolicy:         &temporal.RetryPolicy{InitialInterval: time.Second, MaximumInterval: 30 * time.Second, MaximumAttempts: 20},
	})
	var counts Counts
	if err := workflow.ExecuteActivity(dctx, ActivityCancelJob, CancelJobInput{JobID: r.res.JobID, Reason: why}).Get(dctx, &counts); err != nil {
		why += "; canceling the IoT job failed: " + rootMessage(err)
	} else {
		r.res.Counts = counts
	}
	r.setState(dctx, state, fmt.Sprintf("%s: %d of %d devices updated, the rest canceled", why, r.res.Counts.Succeeded, r.res.Devices))
	if state == StateCanceled {
		return nil, temporal.NewCanceledError(r.res)
	}
	return nil, temporal.NewNonRetryableApplicationError(r.res.Message, ErrRolloutTimedOut, nil, r.res)
}

func (r *rollout) setState(ctx workflow.Context, state, msg string) {
	r.res.State, r.res.Message = state, msg
	err := workflow.UpsertTypedSearchAttributes(ctx,
		SearchRolloutID.ValueSet(r.req.RolloutID), SearchTargetVersion.ValueSet(r.req.Version), SearchState.ValueSet(state))
	if err != nil {
		workflow.GetLogger(ctx).Warn("could not update search attributes", "error", err)
	}
	workflow.GetLogger(ctx).Info("rollout state", "state", state, "message", msg)
}

// rootMessage is the innermost error's message: what actually went wrong.
func rootMessage(err error) string {
	for {
		next := errors.Unwrap(err)
		if next == nil {
			return err.Error()
		}
		err = next
	}
}
