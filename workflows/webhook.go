package workflows

import (
	"fmt"
	"strings"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/otaflow/otaflow/workflows/contract"
)

// DeliverWebhook delivers one rollout event to each of its URLs, retrying a receiver that does
// not take it for contract.WebhookRetryFor. It runs apart from the rollout, which neither
// waits for it nor ends it: an event outlives the rollout that sent it.
func DeliverWebhook(ctx workflow.Context, req contract.WebhookRequest) error {
	actx := workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		StartToCloseTimeout:    30 * time.Second,
		ScheduleToCloseTimeout: contract.WebhookRetryFor,
		RetryPolicy: &temporal.RetryPolicy{InitialInterval: time.Second, BackoffCoefficient: 2, MaximumInterval: 5 * time.Minute,
			NonRetryableErrorTypes: []string{contract.ErrInvalidRequest}},
	})
	futures := make([]typedFuture[struct{}], len(req.URLs))
	for i, u := range req.URLs {
		futures[i] = execute(actx, contract.Activities.DeliverWebhook, contract.WebhookDelivery{URL: u, Event: req.Event})
	}
	var failed []string
	for i, f := range futures {
		if err := f.Get(ctx, nil); err != nil {
			failed = append(failed, req.URLs[i]+": "+rootMessage(err))
		}
	}
	if len(failed) > 0 {
		workflow.GetLogger(ctx).Warn("webhook not delivered", "event", req.Event.Event, "rollout", req.Event.RolloutID, "failures", failed)
		return temporal.NewNonRetryableApplicationError("webhook not delivered: "+strings.Join(failed, "; "), "WebhookNotDelivered", nil)
	}
	return nil
}

// eventOfState is the webhook event of a state a rollout enters ("" for none).
func eventOfState(state string) string {
	switch state {
	case contract.StateAwaiting:
		return contract.EventAwaitingApproval
	case contract.StateRollingBack:
		return contract.EventRollingBack
	case contract.StateSucceeded:
		return contract.EventSucceeded
	case contract.StateFailed:
		return contract.EventFailed
	case contract.StateAborted:
		return contract.EventAborted
	case contract.StateCanceled:
		return contract.EventCanceled
	case contract.StateTimedOut:
		return contract.EventTimedOut
	}
	return ""
}

// event records what happened to the rollout: in the worker's metrics
// (otaflow_rollout_events_total by event), in its log when the rollout ends, and to the
// rollout's webhooks, each event through a DeliverWebhook workflow of its own that the
// rollout does not wait for.
func (r *rollout) event(ctx workflow.Context, kind string, wave int) {
	workflow.GetMetricsHandler(ctx).WithTags(map[string]string{"event": kind}).Counter("otaflow_rollout_events").Inc(1)
	if r.finished() {
		workflow.GetLogger(ctx).Info("rollout ended", "rollout", r.req.RolloutID, "state", r.res.State, "version", r.req.Version,
			"updated", r.res.Counts.Succeeded, "devices", r.res.Devices, "message", r.res.Message)
	}
	if len(r.req.Webhooks) == 0 {
		return
	}
	r.events++
	info := workflow.GetInfo(ctx)
	id := fmt.Sprintf("%s/event-%d-%s", info.WorkflowExecution.ID, r.events, info.WorkflowExecution.RunID)
	ev := contract.WebhookEvent{ID: id, Event: kind, Time: workflow.Now(ctx), RolloutID: r.req.RolloutID, Software: r.req.SoftwareToUpdate,
		Version: r.req.Version, State: r.res.State, Message: r.res.Message, Wave: wave, Waves: len(r.res.Waves), Devices: r.res.Devices,
		Counts: r.res.Counts, Rollback: r.res.Rollback}
	cctx := workflow.WithChildOptions(ctx, workflow.ChildWorkflowOptions{WorkflowID: id, ParentClosePolicy: enumspb.PARENT_CLOSE_POLICY_ABANDON,
		WorkflowExecutionTimeout: contract.WebhookRetryFor + time.Hour})
	f := workflow.ExecuteChildWorkflow(cctx, contract.WorkflowWebhook, contract.WebhookRequest{URLs: r.req.Webhooks, Event: ev})
	// Started before the rollout goes on (or ends): then it is delivered whatever the rollout does.
	if err := f.GetChildWorkflowExecution().Get(ctx, nil); err != nil {
		workflow.GetLogger(ctx).Warn("webhook delivery could not start", "event", kind, "error", err)
	}
}
