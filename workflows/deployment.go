package workflows

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"
)

// Continuous deployments (seed v2): one long-lived workflow per deployment keeps a thing group
// on a set of components. Devices that join the group later get the deployment with versions
// resolved at that moment (pinned versions stay pinned; unpinned ones take the newest that
// fits every dependency range); devices already deployed are left alone. Revising the
// deployment replaces it: every device gets the new revision.

// DeploymentRequest describes a deployment to a thing group.
type DeploymentRequest struct {
	DeploymentID string `json:"deploymentId"`
	ThingGroup   string `json:"thingGroup"`
	// Components maps each component to a pinned version, or "" for the newest that fits.
	Components map[string]string `json:"components"`
	// SyncInterval is how often the group is checked for devices that joined (default 30 s).
	SyncInterval time.Duration `json:"syncInterval,omitempty"`
	// Revision counts revisions; carried across continue-as-new.
	Revision int `json:"revision,omitempty"`
}

// Validate checks the request without I/O (versions are resolved against the catalog later).
func (d *DeploymentRequest) Validate() error {
	var problems []string
	if d.DeploymentID == "" || !validID(d.DeploymentID) {
		problems = append(problems, fmt.Sprintf("deployment ID %q may only contain a-z A-Z 0-9 _ - (at most 56)", d.DeploymentID))
	}
	if d.ThingGroup == "" {
		problems = append(problems, "no thing group to deploy to")
	}
	if len(d.Components) == 0 {
		problems = append(problems, "the deployment names no components")
	}
	if d.SyncInterval == 0 {
		d.SyncInterval = 30 * time.Second
	}
	if d.Revision == 0 {
		d.Revision = 1
	}
	if len(problems) > 0 {
		return errors.New("invalid deployment: " + strings.Join(problems, "; "))
	}
	return nil
}

// SyncInput asks the SyncDeployment activity to bring a group's devices onto a revision.
type SyncInput struct {
	DeploymentID string            `json:"deploymentId"`
	ThingGroup   string            `json:"thingGroup"`
	Components   map[string]string `json:"components"`
	Revision     int               `json:"revision"`
}

// SyncResult is what one sync did (aggregates only: per-device state stays in the jobs service).
type SyncResult struct {
	Members  int               `json:"members"`
	Deployed int               `json:"deployed"` // devices that got a job in this sync
	JobID    string            `json:"jobId,omitempty"`
	Resolved map[string]string `json:"resolved,omitempty"`
}

// DeploymentStatus is the status query's answer.
type DeploymentStatus struct {
	DeploymentID string            `json:"deploymentId"`
	ThingGroup   string            `json:"thingGroup"`
	Revision     int               `json:"revision"`
	Components   map[string]string `json:"components"`
	Members      int               `json:"members"`
	LastResolved map[string]string `json:"lastResolved,omitempty"`
	Jobs         int               `json:"jobs"`
	LastError    string            `json:"lastError,omitempty"`
}

// Deployment keeps a thing group on a deployment until canceled.
func Deployment(ctx workflow.Context, req DeploymentRequest) (*DeploymentStatus, error) {
	if err := req.Validate(); err != nil {
		return nil, temporal.NewNonRetryableApplicationError(err.Error(), ErrInvalidRequest, nil)
	}
	st := DeploymentStatus{DeploymentID: req.DeploymentID, ThingGroup: req.ThingGroup, Revision: req.Revision, Components: req.Components}
	if err := workflow.SetQueryHandler(ctx, QueryStatus, func() (DeploymentStatus, error) { return st, nil }); err != nil {
		return nil, err
	}
	revised := workflow.NewBufferedChannel(ctx, 1)
	err := workflow.SetUpdateHandlerWithOptions(ctx, UpdateRevise, func(ctx workflow.Context, components map[string]string) (DeploymentStatus, error) {
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
			MaximumAttempts: 5, NonRetryableErrorTypes: []string{ErrInvalidRequest}},
	})
	for {
		var res SyncResult
		err := workflow.ExecuteActivity(actx, ActivitySyncDeployment, SyncInput{
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
