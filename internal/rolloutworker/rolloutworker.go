// Package rolloutworker runs the Temporal worker that executes rollouts: it registers the
// workflows and activities and makes sure the search attributes they use exist.
package rolloutworker

import (
	"context"
	"errors"
	"fmt"

	"github.com/rs/zerolog"
	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/operatorservice/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"

	"github.com/otaflow/otaflow/activities"
	"github.com/otaflow/otaflow/internal/rolloutops"
	"github.com/otaflow/otaflow/workflows"
	"github.com/otaflow/otaflow/workflows/contract"
)

// SearchAttributes are the custom search attributes rollouts set.
func SearchAttributes() map[string]enumspb.IndexedValueType {
	return map[string]enumspb.IndexedValueType{
		contract.SearchRolloutID.GetName():     enumspb.INDEXED_VALUE_TYPE_KEYWORD,
		contract.SearchTargetVersion.GetName(): enumspb.INDEXED_VALUE_TYPE_KEYWORD,
		contract.SearchState.GetName():         enumspb.INDEXED_VALUE_TYPE_KEYWORD,
		contract.SearchWave.GetName():          enumspb.INDEXED_VALUE_TYPE_INT,
	}
}

// EnsureSearchAttributes registers the rollout search attributes in the namespace; ones that
// exist already are fine.
func EnsureSearchAttributes(ctx context.Context, c client.Client, namespace string) error {
	_, err := c.OperatorService().AddSearchAttributes(ctx, &operatorservice.AddSearchAttributesRequest{
		Namespace: namespace, SearchAttributes: SearchAttributes(),
	})
	var exists *serviceerror.AlreadyExists
	if err != nil && !errors.As(err, &exists) {
		return fmt.Errorf("register search attributes in namespace %s: %w (an operator can add them with 'temporal operator search-attribute create')", namespace, err)
	}
	return nil
}

// New returns a worker for the rollout task queue, with everything registered.
func New(c client.Client, taskQueue string, ops *rolloutops.Ops) worker.Worker {
	w := worker.New(c, taskQueue, worker.Options{})
	w.RegisterWorkflowWithOptions(workflows.Rollout, workflow.RegisterOptions{Name: contract.WorkflowRollout})
	w.RegisterWorkflowWithOptions(workflows.Deployment, workflow.RegisterOptions{Name: contract.WorkflowDeployment})
	w.RegisterWorkflowWithOptions(workflows.RollbackRollout, workflow.RegisterOptions{Name: contract.WorkflowRollback})
	w.RegisterWorkflowWithOptions(workflows.DeliverWebhook, workflow.RegisterOptions{Name: contract.WorkflowWebhook})
	activities.New(ops).Register(w)
	return w
}

// Run runs a worker until ctx ends.
func Run(ctx context.Context, c client.Client, namespace, taskQueue string, ops *rolloutops.Ops, log zerolog.Logger) error {
	if err := EnsureSearchAttributes(ctx, c, namespace); err != nil {
		return err
	}
	w := New(c, taskQueue, ops)
	if err := w.Start(); err != nil {
		return fmt.Errorf("start worker on task queue %s: %w", taskQueue, err)
	}
	log.Info().Str("namespace", namespace).Str("taskQueue", taskQueue).Msg("worker running")
	go (&Reconciler{Client: c, Ops: ops, Log: log}).Run(ctx)
	<-ctx.Done()
	w.Stop()
	return nil
}
