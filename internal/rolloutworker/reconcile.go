package rolloutworker

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/iot"
	"github.com/aws/aws-sdk-go-v2/service/iot/types"
	"github.com/rs/zerolog"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"

	"github.com/otaflow/otaflow/internal/rolloutops"
	"github.com/otaflow/otaflow/workflows/contract"
)

// Reconciler finds rollouts that ended outside otaflow (terminated from the Temporal UI or
// CLI, or stopped by a Temporal workflow timeout), whose own cleanup therefore never ran, and
// does that cleanup: it cancels their jobs still in progress, so no device starts an update
// nobody watches, and deletes their wave groups. `rollout list` and the console show such a
// rollout as TERMINATED (its last recorded state attribute cannot change once it has closed).
type Reconciler struct {
	Client client.Client
	Ops    *rolloutops.Ops
	// Every is how often it looks (default 30 s); Lookback how far back (default a day).
	Every, Lookback time.Duration
	Log             zerolog.Logger
	done            map[string]bool
}

// Run reconciles until ctx ends.
func (r *Reconciler) Run(ctx context.Context) {
	every := r.Every
	if every == 0 {
		every = 30 * time.Second
	}
	for {
		if n, err := r.Once(ctx); err != nil && ctx.Err() == nil {
			r.Log.Warn().Err(err).Msg("could not check for rollouts ended outside otaflow; retrying")
		} else if n > 0 {
			r.Log.Info().Int("rollouts", n).Msg("cleaned up after rollouts ended outside otaflow")
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(every):
		}
	}
}

// Once makes one pass and returns how many rollouts it cleaned up after.
func (r *Reconciler) Once(ctx context.Context) (int, error) {
	if r.done == nil {
		r.done = map[string]bool{}
	}
	lookback := r.Lookback
	if lookback == 0 {
		lookback = 24 * time.Hour
	}
	since := time.Now().Add(-lookback).UTC().Format(time.RFC3339)
	resp, err := r.Client.ListWorkflow(ctx, &workflowservice.ListWorkflowExecutionsRequest{
		Query:    fmt.Sprintf("WorkflowType = 'Rollout' AND ExecutionStatus IN ('Terminated', 'TimedOut') AND CloseTime > '%s'", since),
		PageSize: 100,
	})
	if err != nil {
		return 0, fmt.Errorf("list rollouts ended outside otaflow: %w", err)
	}
	n := 0
	for _, e := range resp.Executions {
		key := e.GetExecution().GetWorkflowId() + "/" + e.GetExecution().GetRunId()
		if r.done[key] {
			continue
		}
		if err := r.cleanUp(ctx, e.GetExecution().GetWorkflowId(), e.GetExecution().GetRunId()); err != nil {
			r.Log.Warn().Err(err).Str("workflow", key).Msg("cleanup after a rollout ended outside otaflow failed; will retry")
			continue
		}
		r.done[key] = true
		n++
	}
	return n, nil
}

func (r *Reconciler) cleanUp(ctx context.Context, workflowID, runID string) error {
	v, err := r.Client.QueryWorkflow(ctx, workflowID, runID, contract.QueryStatus)
	if err != nil {
		return fmt.Errorf("read the rollout's last status: %w", err)
	}
	var res contract.RolloutResult
	if err := v.Get(&res); err != nil {
		return err
	}
	jobs := []string{}
	var groups []string
	for _, w := range res.Waves {
		if w.JobID != "" {
			jobs = append(jobs, w.JobID)
		}
		if w.Group != "" {
			groups = append(groups, w.Group)
		}
	}
	if rb := res.Rollback; rb != nil {
		jobs = append(jobs, rb.JobIDs...)
		groups = append(groups, rb.Groups...)
	}
	for _, id := range jobs {
		d, err := r.Ops.IoT.DescribeJob(ctx, &iot.DescribeJobInput{JobId: aws.String(id)})
		if err != nil {
			var nf *types.ResourceNotFoundException
			if errors.As(err, &nf) {
				continue
			}
			return fmt.Errorf("describe job %s: %w", id, err)
		}
		if d.Job.Status != types.JobStatusInProgress && d.Job.Status != types.JobStatusScheduled {
			continue
		}
		reason := fmt.Sprintf("rollout %s was terminated outside otaflow; its job is canceled so no device starts an update nobody watches", res.RolloutID)
		if _, err := r.Ops.CancelJob(ctx, contract.CancelJobInput{JobID: id, Reason: reason}); err != nil {
			return err
		}
		r.Log.Warn().Str("rollout", res.RolloutID).Str("job", id).Msg("rollout ended outside otaflow: canceled its job")
	}
	return r.Ops.ReleaseTargets(ctx, contract.ReleaseTargetsInput{Groups: groups})
}
