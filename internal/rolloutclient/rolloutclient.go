// Package rolloutclient starts rollouts and reads their outcome: what the CLI and the tests
// share on the client side of Temporal.
package rolloutclient

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	failurepb "go.temporal.io/api/failure/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"

	"github.com/otaflow/otaflow/workflows/contract"
)

// Start validates req and starts its rollout workflow. The workflow ID comes from the
// rollout ID, so starting the same rollout twice returns the running one instead of a second.
func Start(ctx context.Context, c client.Client, taskQueue string, req contract.RolloutRequest) (client.WorkflowRun, error) {
	if err := req.Validate(); err != nil {
		return nil, err
	}
	if req.RequireSecondApprover && req.StartedBy == "" {
		return nil, errors.New("the two-person rule needs to know who started the rollout: start it through the jobs service (`starter create-software-update-job` with a --jobs-endpoint), which names its starter")
	}
	id := contract.RolloutWorkflowID(req.RolloutID)
	run, err := c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{
		ID:                       id,
		TaskQueue:                taskQueue,
		WorkflowIDReusePolicy:    enumspb.WORKFLOW_ID_REUSE_POLICY_REJECT_DUPLICATE,
		WorkflowIDConflictPolicy: enumspb.WORKFLOW_ID_CONFLICT_POLICY_USE_EXISTING,
		TypedSearchAttributes: temporal.NewSearchAttributes(
			contract.SearchRolloutID.ValueSet(req.RolloutID),
			contract.SearchTargetVersion.ValueSet(req.Version),
			contract.SearchState.ValueSet(contract.StateValidating),
		),
		StaticSummary: fmt.Sprintf("Update %s to %s on %d target(s)", req.SoftwareToUpdate, req.Version, len(req.Targets)),
	}, contract.WorkflowRollout, req)
	var started *serviceerror.WorkflowExecutionAlreadyStarted
	if errors.As(err, &started) {
		// The rollout ran before and has ended: hand back that one rather than a second.
		run, err = c.GetWorkflow(ctx, id, ""), nil
	}
	if err != nil {
		return nil, err
	}
	// One rollout ID (one client token) is one update: the same request again finds the
	// rollout it started; a different request under a used ID is refused, on every path.
	prev, err := Request(ctx, c, id)
	if err != nil {
		return nil, err
	}
	if !sameRequest(prev, req) {
		return nil, fmt.Errorf("%w: rollout ID (client token) %q was already used for a different request; use a new one", ErrTokenReused, req.RolloutID)
	}
	return run, nil
}

// ErrTokenReused is returned (wrapped) when a rollout ID or client token already started a
// different update.
var ErrTokenReused = errors.New("client token reused")

// sameRequest compares two validated requests, ignoring what a run adds on its own.
func sameRequest(a, b contract.RolloutRequest) bool {
	a.Resume, b.Resume = nil, nil
	a.StartedBy, b.StartedBy = "", "" // who asks again does not make it another update
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return string(ja) == string(jb)
}

// RolloutIDForToken is the rollout of a client token, the same on every path (the CLI's
// --amzn-client-token, the REST API's X-Amzn-Client-Token): the token itself when it is a
// valid rollout ID, else "t-" and a digest of it.
func RolloutIDForToken(token string) string {
	probe := contract.RolloutRequest{RolloutID: token}
	if probe.ValidID() {
		return token
	}
	sum := sha256.Sum256([]byte(token))
	return "t-" + hex.EncodeToString(sum[:12])
}

// Result waits for the rollout to end and returns its result. A rollout that failed, timed out
// or was canceled still has a result (its counts), returned with the error.
func Result(ctx context.Context, run client.WorkflowRun) (contract.RolloutResult, error) {
	var res contract.RolloutResult
	err := run.Get(ctx, &res)
	if err == nil {
		return res, nil
	}
	var appErr *temporal.ApplicationError
	if errors.As(err, &appErr) && appErr.HasDetails() {
		if derr := appErr.Details(&res); derr == nil {
			return res, errors.New(appErr.Message())
		}
	}
	var canceled *temporal.CanceledError
	if errors.As(err, &canceled) && canceled.HasDetails() {
		if derr := canceled.Details(&res); derr == nil {
			return res, errors.New(res.Message)
		}
	}
	return res, err
}

// Status queries a running (or finished) rollout's progress.
func Status(ctx context.Context, c client.Client, rolloutID string) (contract.RolloutResult, error) {
	var res contract.RolloutResult
	wid, err := WorkflowID(ctx, c, rolloutID)
	if err != nil {
		return res, err
	}
	v, err := c.QueryWorkflow(ctx, wid, "", contract.QueryStatus)
	if err != nil {
		return res, fmt.Errorf("query rollout %s: %w", rolloutID, err)
	}
	return res, v.Get(&res)
}

// WaitForJob polls the status query until the rollout has created its IoT job or ended. A
// rollout still waiting after timeout is diagnosed (see Stalled).
func WaitForJob(ctx context.Context, c client.Client, rolloutID, taskQueue string, timeout time.Duration) (contract.RolloutResult, error) {
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		res, err := Status(wctx, c, rolloutID)
		if err == nil && (res.JobID != "" || res.State == contract.StateInvalid || res.State == contract.StateFailed) {
			return res, nil
		}
		select {
		case <-wctx.Done():
			if err == nil || wctx.Err() != nil {
				dctx, dcancel := context.WithTimeout(ctx, 10*time.Second)
				defer dcancel()
				state := cmp.Or(res.State, "not started")
				err = fmt.Errorf("rollout %s is still %s after %s: %s", rolloutID, state, timeout, Stalled(dctx, c, rolloutID, taskQueue))
			}
			return res, err
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// Stalled says why a rollout's workflow is not getting on: an activity that keeps failing
// (with its last failure), or no worker polling the task queue (only when that is so), or
// what it waits for.
func Stalled(ctx context.Context, c client.Client, rolloutID, taskQueue string) string {
	d, err := c.DescribeWorkflowExecution(ctx, contract.RolloutWorkflowID(rolloutID), "")
	if err != nil {
		return fmt.Sprintf("its workflow cannot be described (%v)", err)
	}
	for _, a := range d.GetPendingActivities() {
		if f := a.GetLastFailure(); f != nil && a.GetAttempt() > 1 {
			return fmt.Sprintf("activity %s keeps failing (attempt %d, next at %s): %s", a.GetActivityType().GetName(), a.GetAttempt(),
				a.GetScheduledTime().AsTime().Local().Format(time.TimeOnly), rootFailure(f))
		}
	}
	if pollers, err := polling(ctx, c, taskQueue); err == nil && pollers == 0 {
		return fmt.Sprintf("no worker polls task queue %s: start one (`go run ./worker`, or `starter dev` runs one)", taskQueue)
	}
	for _, a := range d.GetPendingActivities() {
		return fmt.Sprintf("activity %s is running (attempt %d, state %s)", a.GetActivityType().GetName(), a.GetAttempt(),
			strings.ToLower(strings.TrimPrefix(a.GetState().String(), "PENDING_ACTIVITY_STATE_")))
	}
	return "a worker polls the task queue but the workflow has no activity pending: see its history in the Temporal web UI"
}

// rootFailure is a failure's innermost message.
func rootFailure(f *failurepb.Failure) string {
	for f.GetCause() != nil {
		f = f.GetCause()
	}
	return f.GetMessage()
}

// polling counts the workers that polled taskQueue (workflow and activity pollers) lately.
func polling(ctx context.Context, c client.Client, taskQueue string) (int, error) {
	n := 0
	for _, kind := range []enumspb.TaskQueueType{enumspb.TASK_QUEUE_TYPE_WORKFLOW, enumspb.TASK_QUEUE_TYPE_ACTIVITY} {
		r, err := c.DescribeTaskQueue(ctx, taskQueue, kind)
		if err != nil {
			return 0, err
		}
		n += len(r.GetPollers())
	}
	return n, nil
}

// Starter starts rollouts through Temporal and waits until each has created its IoT job, for
// APIs that answer with the job (Greengrass CreateSoftwareUpdateJob).
type Starter struct {
	Client    client.Client
	TaskQueue string
}

// ErrInvalid is returned (wrapped) when the rollout refused its request.
var ErrInvalid = errors.New("invalid request")

// StartUpdate starts req's rollout (or finds the one already started) and returns its job.
func (s Starter) StartUpdate(ctx context.Context, req contract.RolloutRequest) (string, string, error) {
	if _, err := Start(ctx, s.Client, s.TaskQueue, req); err != nil {
		return "", "", err
	}
	res, err := WaitForJob(ctx, s.Client, req.RolloutID, s.TaskQueue, time.Minute)
	if err != nil {
		return "", "", err
	}
	if res.JobID == "" {
		return "", "", fmt.Errorf("%w: %s", ErrInvalid, res.Message)
	}
	return res.JobID, res.JobArn, nil
}

// CreateSchedule creates a Temporal Schedule that starts req's rollout at every activation of
// cronExpr in timeZone. Each run gets its own rollout ID (the schedule ID plus the run time).
func CreateSchedule(ctx context.Context, c client.Client, taskQueue, scheduleID, cronExpr, timeZone string, paused bool, req contract.RolloutRequest) (client.ScheduleHandle, error) {
	req.RolloutIDFromWorkflowID = true
	if req.RolloutID == "" {
		req.RolloutID = contract.RolloutIDFor(scheduleID)
	}
	if err := req.Validate(); err != nil {
		return nil, err
	}
	h, err := c.ScheduleClient().Create(ctx, client.ScheduleOptions{
		ID:     scheduleID,
		Spec:   client.ScheduleSpec{CronExpressions: []string{cronExpr}, TimeZoneName: timeZone},
		Paused: paused,
		Action: &client.ScheduleWorkflowAction{
			ID: contract.RolloutWorkflowID(scheduleID), Workflow: contract.WorkflowRollout, Args: []any{req}, TaskQueue: taskQueue,
		},
	})
	if err != nil {
		return nil, fmt.Errorf("create schedule %s: %w", scheduleID, err)
	}
	return h, nil
}

// StartDeployment starts (or finds running) the continuous deployment to a thing group.
func StartDeployment(ctx context.Context, c client.Client, taskQueue string, req contract.DeploymentRequest) (client.WorkflowRun, error) {
	if err := req.Validate(); err != nil {
		return nil, err
	}
	return c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{
		ID:                       contract.DeploymentWorkflowID(req.DeploymentID),
		TaskQueue:                taskQueue,
		WorkflowIDConflictPolicy: enumspb.WORKFLOW_ID_CONFLICT_POLICY_USE_EXISTING,
		StaticSummary:            fmt.Sprintf("Deployment %s to thing group %s", req.DeploymentID, req.ThingGroup),
	}, contract.WorkflowDeployment, req)
}

// ReviseDeployment replaces a deployment's components: every device of the group gets the
// new revision.
func ReviseDeployment(ctx context.Context, c client.Client, deploymentID string, components map[string]string) (contract.DeploymentStatus, error) {
	var st contract.DeploymentStatus
	h, err := c.UpdateWorkflow(ctx, client.UpdateWorkflowOptions{
		WorkflowID: contract.DeploymentWorkflowID(deploymentID), UpdateName: contract.UpdateRevise,
		Args: []any{components}, WaitForStage: client.WorkflowUpdateStageCompleted,
	})
	if err != nil {
		return st, fmt.Errorf("revise deployment %s: %w", deploymentID, err)
	}
	return st, h.Get(ctx, &st)
}

// DeploymentStatus queries a deployment.
func DeploymentStatus(ctx context.Context, c client.Client, deploymentID string) (contract.DeploymentStatus, error) {
	var st contract.DeploymentStatus
	v, err := c.QueryWorkflow(ctx, contract.DeploymentWorkflowID(deploymentID), "", contract.QueryStatus)
	if err != nil {
		return st, fmt.Errorf("query deployment %s: %w", deploymentID, err)
	}
	return st, v.Get(&st)
}
