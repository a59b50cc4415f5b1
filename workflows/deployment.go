package workflows

import (
	"errors"
	"github.com/otaflow/otaflow/workflows/contract"
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"
)

// Continuous deployments (seed v2): one long-lived workflow per deployment keeps a thing group
// on a set of components. Devices that join the group later get the deployment with versions
// resolved at that moment (pinned versions stay pinned; unpinned ones take the newest that
// fits every dependency range); devices already deployed are left alone. Revising the
// deployment replaces it: every device gets the new revision.

// Deployment keeps a thing group on a deployment until canceled.
func Deployment(ctx workflow.Context, req contract.DeploymentRequest) (*contract.DeploymentStatus, error) {
	if err := req.Validate(); err != nil {
		return nil, temporal.NewNonRetryableApplicationError(err.Error(), contract.ErrInvalidRequest, nil)
	}
	st := contract.DeploymentStatus{DeploymentID: req.DeploymentID, ThingGroup: req.ThingGroup, Revision: req.Revision, Components: req.Components}
	if err := workflow.SetQueryHandler(ctx, contract.QueryStatus, func() (contract.DeploymentStatus, error) { return st, nil }); err != nil {
		return nil, err
	}
	revised := workflow.NewBufferedChannel(ctx, 1)
	err := workflow.SetUpdateHandlerWithOptions(ctx, contract.UpdateRevise, func(ctx workflow.Context, components map[string]string) (contract.DeploymentStatus, error) {
		req.Components = components
		req.Revision++
		st.Revision, st.Components, st.LastError = req.Revision, components, ""
		revised.SendAsync(true)
		return st, nil
	}, workflow.UpdateHandlerOptions{Validator: func(components map[string]string) error {
		if len(components) == 0 {
			return errors.New("a revision must name at least one component")
		}
		return nil
	}})
	if err != nil {
		return nil, err
	}
	actx := workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		StartToCloseTimeout: 10 * time.Minute,
		HeartbeatTimeout:    time.Minute,
		RetryPolicy: &temporal.RetryPolicy{InitialInterval: time.Second, MaximumInterval: time.Minute,
			MaximumAttempts: 5, NonRetryableErrorTypes: []string{contract.ErrInvalidRequest}},
	})
	for {
		var res contract.SyncResult
		err := execute(actx, contract.Activities.SyncDeployment, contract.SyncInput{
			DeploymentID: req.DeploymentID, ThingGroup: req.ThingGroup, Components: req.Components, Revision: req.Revision,
		}).Get(ctx, &res)
		if ctx.Err() != nil {
			return &st, temporal.NewCanceledError(st)
		}
		if err != nil {
			// A revision that cannot be resolved waits for the next revision; others retry.
			st.LastError = rootMessage(err)
		} else {
			st.Members, st.LastError = res.Members, ""
			if res.Deployed > 0 {
				st.Jobs++
				st.LastResolved = res.Resolved
				workflow.GetLogger(ctx).Info("deployment applied", "devices", res.Deployed, "job", res.JobID)
			}
		}
		timerCtx, stop := workflow.WithCancel(ctx)
		sel := workflow.NewSelector(ctx)
		sel.AddFuture(workflow.NewTimer(timerCtx, req.SyncInterval), func(workflow.Future) {})
		sel.AddReceive(revised, func(c workflow.ReceiveChannel, _ bool) { c.ReceiveAsync(nil) })
		sel.Select(ctx)
		stop()
		if ctx.Err() != nil {
			return &st, temporal.NewCanceledError(st)
		}
		if workflow.GetInfo(ctx).GetContinueAsNewSuggested() {
			if err := workflow.Await(ctx, func() bool { return workflow.AllHandlersFinished(ctx) }); err != nil {
				return &st, err
			}
			return nil, workflow.NewContinueAsNewError(ctx, Deployment, req)
		}
	}
}
