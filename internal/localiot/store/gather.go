package store

import "time"

// gatherer collects the calls of one batch from a channel, for both stores' batchers: the
// first call, then more until none has come for linger, the batch is maxAge old, or it holds
// max calls. With linger at or above maxAge (or 0) it waits a fixed maxAge after the first.
// Each batcher goroutine has its own (the timers are reused from batch to batch).
type gatherer[T any] struct {
	in            <-chan T
	stop          <-chan struct{}
	max           int
	linger        time.Duration
	maxAge        time.Duration
	ageT, lingerT *time.Timer
}

func newGatherer[T any](in <-chan T, stop <-chan struct{}, max int, linger, maxAge time.Duration) *gatherer[T] {
	if linger <= 0 || linger >= maxAge {
		linger = 0
	}
	g := &gatherer[T]{in: in, stop: stop, max: max, linger: linger, maxAge: maxAge, ageT: time.NewTimer(0)}
	g.ageT.Stop()
	if linger > 0 {
		g.lingerT = time.NewTimer(0)
		g.lingerT.Stop()
	}
	return g
}

// next waits for a batch; ok is false once stop is closed (a batch being gathered is still
// returned whole: its callers wait for their answers).
func (g *gatherer[T]) next() (batch []T, ok bool) {
	select {
	case c := <-g.in:
		batch = append(batch, c)
	case <-g.stop:
		return nil, false
	}
	g.ageT.Reset(g.maxAge)
	defer g.ageT.Stop()
	var lingering <-chan time.Time // nil (never ready) without a linger
	if g.lingerT != nil {
		g.lingerT.Reset(g.linger)
		defer g.lingerT.Stop()
		lingering = g.lingerT.C
	}
	for len(batch) < g.max {
		select {
		case c := <-g.in:
			batch = append(batch, c)
			if g.lingerT != nil {
				g.lingerT.Reset(g.linger)
			}
		case <-lingering:
			return batch, true
		case <-g.ageT.C:
			return batch, true
		}
	}
	return batch, true
}
