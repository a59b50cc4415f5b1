// Package activities are the rollout's side effects as Temporal activities: thin wrappers
// around internal/rolloutops, which does the work through aws-sdk-go-v2's iot client. A
// wrapper adds what only Temporal needs: heartbeats during long loops, and a request that can
// never succeed (rolloutops.InvalidError) failing as non-retryable with the contract's
// ErrInvalidRequest type, so the workflow stops instead of retrying.
package activities

import (
	"context"
	"errors"

	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/worker"

	"github.com/otaflow/otaflow/internal/rolloutops"
	"github.com/otaflow/otaflow/workflows/contract"
)

// Activities are the rollout's and the deployment's activities.
type Activities struct {
	ops *rolloutops.Ops
}

// New wraps ops as activities.
func New(ops *rolloutops.Ops) *Activities { return &Activities{ops: ops} }

// Register registers every activity under its contract name.
func (a *Activities) Register(w worker.ActivityRegistry) {
	for name, fn := range map[string]any{
		contract.ActivityResolveTargets: a.ResolveTargets,
		contract.ActivityFreezeTargets:  a.FreezeTargets,
		contract.ActivityReleaseTargets: a.ReleaseTargets,
		contract.ActivityCreateJob:      a.CreateJob,
		contract.ActivityAwaitJob:       a.AwaitJob,
		contract.ActivityCancelJob:      a.CancelJob,
		contract.ActivityRollback:       a.CreateRollbackJobs,
		contract.ActivityWindow:         a.MaintenanceWindow,
		contract.ActivitySyncDeployment: a.SyncDeployment,
		contract.ActivityFailedDevices:  a.FailedDevices,
		contract.ActivityLatestRelease:  a.LatestRelease,
		contract.ActivityEvaluateHealth: a.EvaluateHealth,
		contract.ActivityDeliverWebhook: a.DeliverWebhook,
	} {
		w.RegisterActivityWithOptions(fn, activity.RegisterOptions{Name: name})
	}
}

// run calls one operation as an activity: with heartbeats, and its InvalidError non-retryable.
func run[I, O any](ctx context.Context, op func(context.Context, I) (O, error), in I) (O, error) {
	out, err := op(heartbeating(ctx), in)
	return out, temporalError(err)
}

// heartbeating makes the operations' progress Temporal heartbeats.
func heartbeating(ctx context.Context) context.Context {
	return rolloutops.WithProgress(ctx, func(details any) { activity.RecordHeartbeat(ctx, details) })
}

// temporalError makes a request that can never succeed a non-retryable ErrInvalidRequest.
func temporalError(err error) error {
	var invalid *rolloutops.InvalidError
	if errors.As(err, &invalid) {
		return temporal.NewNonRetryableApplicationError(invalid.Msg, contract.ErrInvalidRequest, invalid.Cause)
	}
	return err
}

func (a *Activities) ResolveTargets(ctx context.Context, req contract.RolloutRequest) (*contract.ResolveTargetsResult, error) {
	return run(ctx, a.ops.ResolveTargets, req)
}

func (a *Activities) FreezeTargets(ctx context.Context, in contract.FreezeTargetsInput) (*contract.FreezeTargetsResult, error) {
	return run(ctx, a.ops.FreezeTargets, in)
}

func (a *Activities) DeliverWebhook(ctx context.Context, in contract.WebhookDelivery) error {
	return temporalError(a.ops.DeliverWebhook(ctx, in))
}

func (a *Activities) ReleaseTargets(ctx context.Context, in contract.ReleaseTargetsInput) error {
	return temporalError(a.ops.ReleaseTargets(heartbeating(ctx), in))
}

func (a *Activities) CreateJob(ctx context.Context, in contract.CreateJobInput) (*contract.CreateJobResult, error) {
	return run(ctx, a.ops.CreateJob, in)
}

func (a *Activities) AwaitJob(ctx context.Context, in contract.AwaitJobInputMax) (*contract.AwaitJobResult, error) {
	return run(ctx, a.ops.AwaitJob, in)
}

func (a *Activities) CancelJob(ctx context.Context, in contract.CancelJobInput) (*contract.Counts, error) {
	return run(ctx, a.ops.CancelJob, in)
}

func (a *Activities) CreateRollbackJobs(ctx context.Context, in contract.RollbackInput) (*contract.RollbackResult, error) {
	return run(ctx, a.ops.CreateRollbackJobs, in)
}

func (a *Activities) MaintenanceWindow(ctx context.Context, in contract.WindowInput) (*contract.WindowState, error) {
	return run(ctx, a.ops.MaintenanceWindow, in)
}

func (a *Activities) SyncDeployment(ctx context.Context, in contract.SyncInput) (*contract.SyncResult, error) {
	return run(ctx, a.ops.SyncDeployment, in)
}

func (a *Activities) FailedDevices(ctx context.Context, in contract.FailedDevicesInput) ([]string, error) {
	return run(ctx, a.ops.FailedDevices, in)
}

func (a *Activities) LatestRelease(ctx context.Context, in contract.LatestReleaseInput) (*contract.LatestReleaseResult, error) {
	return run(ctx, a.ops.LatestRelease, in)
}

func (a *Activities) EvaluateHealth(ctx context.Context, in contract.EvaluateHealthInput) (*contract.EvaluateHealthResult, error) {
	return run(ctx, a.ops.EvaluateHealth, in)
}
