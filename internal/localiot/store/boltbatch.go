package store

import (
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Device requests reach the bbolt store through Batch: many calls, one transaction, one
// fsync. How long a batch gathers sets the cost of a write under load: each commit writes
// every B+tree page it touched (the same branch pages for every call in it) and fsyncs once.
// bbolt's own Batch waits a fixed MaxBatchDelay from a batch's first call, which a lone
// device pays on every write. This batcher lingers instead: it commits when no call has come
// for boltLinger, when the batch is boltMaxBatchAge old, or when it holds boltMaxBatch calls.
// A lone device waits boltLinger; a busy fleet's calls gather for up to boltMaxBatchAge.
//
// 100,000 simulated devices (docs/benchmarks.md, #31): with bbolt's Batch at 10 ms, 0.51 to
// 0.57 ms of stack CPU per device; at 40 ms, 0.45 ms, and the rollout a fifth faster.
const (
	boltLinger      = 2 * time.Millisecond
	boltMaxBatchAge = 40 * time.Millisecond
	boltMaxBatch    = 1000
)

// errRunAlone tells a Batch caller that its call failed inside a batch (which undid the
// batch's transaction): it runs again alone, so its error, or its panic, is its own.
var errRunAlone = errors.New("run the call alone")

type boltCall struct {
	fn   func(*bolt.Tx) error
	done chan error
}

// batch joins fn to the next batch; see the constants above.
func (s *boltStore) batch(fn func(*bolt.Tx) error) error {
	c := &boltCall{fn: fn, done: make(chan error, 1)}
	select {
	case s.calls <- c:
	case <-s.stop:
		return errors.New("jobs store is closed")
	}
	err := <-c.done
	if err == errRunAlone {
		return s.db.Update(fn)
	}
	return err
}

// batcher gathers calls into batches and commits them, one at a time, until Close.
func (s *boltStore) batcher() {
	defer close(s.stopped)
	g := newGatherer(s.calls, s.stop, boltMaxBatch, boltLinger, boltMaxBatchAge)
	for {
		calls, ok := g.next()
		if !ok {
			return
		}
		s.commit(calls)
	}
}

// commit runs calls in one transaction. A call that fails (or panics) undoes the transaction
// for all: it is told to run alone, and the others run together again.
func (s *boltStore) commit(calls []*boltCall) {
	for len(calls) > 0 {
		failed := -1
		s.commits.Add(1)
		err := s.db.Update(func(tx *bolt.Tx) error {
			for i, c := range calls {
				if err := safely(c.fn, tx); err != nil {
					failed = i
					return err
				}
			}
			return nil
		})
		if failed >= 0 {
			calls[failed].done <- errRunAlone
			calls = append(calls[:failed], calls[failed+1:]...)
			continue
		}
		for _, c := range calls {
			c.done <- err // nil, or the commit's error for every call in it
		}
		return
	}
}

// safely runs fn, turning a panic into an error: the batcher must survive one call's bug,
// which then shows in that call's own goroutine when it runs alone.
func safely(fn func(*bolt.Tx) error, tx *bolt.Tx) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("panic in a batched call: %v", p)
		}
	}()
	return fn(tx)
}
