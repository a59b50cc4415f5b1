package rolloutops

import "context"

// InvalidError is a request that can never succeed as asked (a bad window, a thing that does
// not exist, a refused job): retrying it is pointless, and the message says what to change.
type InvalidError struct {
	Msg   string
	Cause error
}

func (e *InvalidError) Error() string { return e.Msg }
func (e *InvalidError) Unwrap() error { return e.Cause }

func invalidErr(msg string, cause error) error { return &InvalidError{Msg: msg, Cause: cause} }

type progressKey struct{}

// WithProgress makes the operations run under ctx report progress to fn (a count of devices
// done, or the job's counts) during long loops; the activities pass Temporal's heartbeat.
func WithProgress(ctx context.Context, fn func(details any)) context.Context {
	return context.WithValue(ctx, progressKey{}, fn)
}

func progress(ctx context.Context, details any) {
	if fn, ok := ctx.Value(progressKey{}).(func(any)); ok {
		fn(details)
	}
}
