package workflows

import (
	"go.temporal.io/sdk/workflow"

	"github.com/otaflow/otaflow/workflows/contract"
)

// typedFuture is an activity's future, its result of the type the contract gives it.
type typedFuture[O any] struct{ workflow.Future }

// Get waits for the activity and stores its result in out (nil: only whether it succeeded).
func (f typedFuture[O]) Get(ctx workflow.Context, out *O) error {
	if out == nil {
		return f.Future.Get(ctx, nil)
	}
	return f.Future.Get(ctx, out)
}

// execute calls an activity of the contract by its name (a live workflow's history names it),
// with the input and the result the compiler checks against the contract's types, which the
// worker's registration is checked against too.
func execute[I, O any](ctx workflow.Context, act contract.Activity[I, O], in I) typedFuture[O] {
	return typedFuture[O]{workflow.ExecuteActivity(ctx, act.Name, in)}
}
