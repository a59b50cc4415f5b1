package workflows

import (
	"fmt"
	"github.com/otaflow/otaflow/workflows/contract"
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"
)

// RollbackRollout rolls a finished rollout back: one job per previous version for the devices
// that succeeded in its jobs, awaited like a rollout's compensation, then its groups deleted.
func RollbackRollout(ctx workflow.Context, in contract.RollbackRolloutRequest) (*contract.RollbackResult, error) {
	req := in.Request
	if err := req.Validate(); err != nil {
		return nil, temporal.NewNonRetryableApplicationError(err.Error(), contract.ErrInvalidRequest, nil)
	}
	req.RolloutID = contract.RollbackRolloutID(in.RolloutID)
	r := &rollout{req: req}
	actx := workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		StartToCloseTimeout: 5 * time.Minute,
		HeartbeatTimeout:    time.Minute,
		RetryPolicy:         &temporal.RetryPolicy{InitialInterval: time.Second, MaximumInterval: 30 * time.Second, MaximumAttempts: 20},
	})
	rb := r.rollback(actx, in.JobIDs)
	r.res.Rollback = &rb
	r.release(ctx)
	if len(rb.JobIDs) == 0 {
		msg := "no device to roll back: rollout " + in.RolloutID + " updated none that reported its previous version"
		if rb.Message != "" {
			msg += " (" + rb.Message + ")"
		}
		return &rb, temporal.NewNonRetryableApplicationError(msg, contract.ErrNothingToRollBack, nil, rb)
	}
	if rb.Failed > 0 {
		return &rb, temporal.NewNonRetryableApplicationError(fmt.Sprintf("%d of %d devices rolled back, %d failed: %v", rb.RolledBack, rb.Devices, rb.Failed, rb.FailedDevices), contract.ErrRolloutFailed, nil, rb)
	}
	return &rb, nil
}
