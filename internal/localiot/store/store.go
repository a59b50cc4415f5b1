// Package store is where the local AWS IoT keeps its state: the records (model.go), the Store,
// Tx and Shared interfaces (store.go), and their two implementations, bbolt for one process
// (OpenBolt) and PostgreSQL for replicas (OpenPostgres), which pass one contract suite.
package store

import (
	"context"
	"errors"
	"time"
)

// ErrNotLeader is a Batch's error on a shared store that led once and no longer holds the
// leader's lease: nothing was written, and the replica that leads now answers the device.
var ErrNotLeader = errors.New("this replica no longer holds the leader's lease; the replica that does serves device requests")

// Store is where the jobs service keeps its state. Each call runs fn as one transaction:
// atomic, and durable (fsynced) when it returns without error, so an acknowledged write
// survives SIGKILL. Batch may commit several concurrent calls together (one fsync for many
// device requests) and may run fn more than once. bbolt (boltStore) is the embedded backend,
// PostgreSQL (pgStore) the one replicas share; both pass store_contract_test.go.
type Store interface {
	View(fn func(Tx) error) error
	Update(fn func(Tx) error) error
	Batch(fn func(Tx) error) error
	Close() error
}

// Shared is a store that replicas share (PostgreSQL): they elect the one replica that serves
// device requests, and tell each other which things a committed transaction changed (for
// their fleet indexes).
type Shared interface {
	Store
	// Lead blocks until this replica holds the leader's lease; lost closes when it no longer
	// does, and release gives it up. Once a store has led, each Batch (the device requests)
	// commits only while it holds the lease, and fails with ErrNotLeader otherwise (fencing).
	Lead(ctx context.Context) (lost <-chan struct{}, release func(), err error)
	// NotifyThings tells the other replicas that from changed these things.
	NotifyThings(from string, names []string) error
	// ListenThings calls changed with the things other replicas changed (nil: reload
	// everything, after a lost connection) until ctx ends. It calls ready once it listens
	// (or its first attempt failed), so that a caller can read the state knowing no later
	// change will be missed.
	ListenThings(ctx context.Context, self string, ready func(), changed func(names []string))
	// Now is the database's clock, the one all replicas decide time on.
	Now(ctx context.Context) (time.Time, error)
}

var _ Shared = (*pgStore)(nil)

// Tx is the state one transaction sees and changes. Getters return nil (no error) for what
// does not exist.
type Tx interface {
	Thing(name string) (*Thing, error)
	PutThing(th *Thing) error
	DeleteThing(name string) error
	ForEachThing(fn func(*Thing) error) error
	// nextID is a new number for an ID of kind ("thing", "group", "record"), never handed out
	// before.
	NextID(kind string) (uint64, error)

	Job(id string) (*Job, error)
	PutJob(j *Job) error
	// jobWithTargets is job with its (separately stored) target list.
	JobWithTargets(id string) (*Job, error)
	PutJobTargets(id string, targets []string) error
	// deleteJob deletes the job record and its targets (not its executions).
	DeleteJob(id string) error
	ForEachJob(fn func(*Job) error) error

	Execution(jobID, thing string) (*Execution, error)
	// putExecution writes an execution with its queue entry and timeout index.
	PutExecution(e *Execution) error
	DeleteExecution(e *Execution) error
	// thingExecutions is every execution of a thing, in queue order.
	ThingExecutions(thing string) ([]*Execution, error)
	// jobExecutions calls fn for every execution of a job, in thing-name order.
	JobExecutions(jobID string, fn func(*Execution) error) error
	// nextQueueSeq orders executions in the things' queues.
	NextQueueSeq() (uint64, error)
	// dueTimeouts lists the executions whose deadline is at or before now (some may be stale:
	// the caller checks), and deleteTimeout drops one entry.
	DueTimeouts(now time.Time) ([]TimeoutEntry, error)
	DeleteTimeout(t TimeoutEntry) error

	// Rate-limited executions wait in a job's hold queue, in seq order.
	Hold(jobID string, seq uint64, thing string) error
	HeldJobs() ([]string, error)
	Held(jobID string) ([]HeldEntry, error)
	Release(jobID string, h HeldEntry) error

	Group(name string) (*ThingGroup, error)
	PutGroup(g *ThingGroup) error
	// deleteGroup removes a group with its memberships and CONTINUOUS job links.
	DeleteGroup(name string) error
	ForEachGroup(fn func(*ThingGroup) error) error
	// groupThings are a group's direct members, thingGroups a thing's groups, both by name.
	GroupThings(group string) ([]string, error)
	// groupThingsAfter is at most limit of a group's direct members, by name, after the
	// member after (all from the start when empty): one page without reading the others.
	GroupThingsAfter(group, after string, limit int) ([]string, error)
	ThingGroups(thing string) ([]string, error)
	SetMember(group, thing string, member bool) error
	// continuousJobs are the CONTINUOUS jobs that target a group.
	ContinuousJobs(group string) ([]string, error)
	SetContinuousJob(group, jobID string, on bool) error

	// Records are the service's smaller kinds (thing types, job templates): a JSON body by
	// kind and name; records lists a kind's bodies in name order.
	Record(kind, name string) ([]byte, error)
	PutRecord(kind, name string, body []byte) error
	DeleteRecord(kind, name string) error
	Records(kind string) ([][]byte, error)
	// RecordsPage is at most limit of a kind's records after the name after (from the start
	// when empty), in name order, or before it in reverse order when descending (from the
	// end when empty): one page of a long kind (the audit log) without reading the rest.
	RecordsPage(kind, after string, limit int, descending bool) (names []string, bodies [][]byte, err error)

	Token(token string) (*TokenRecord, error)
	PutToken(token string, r TokenRecord) error
	// secret is a named random secret, created on first use.
	Secret(name string, size int) ([]byte, error)
}

// TimeoutEntry is an execution that may time out at deadline.
type TimeoutEntry struct {
	Deadline     time.Time
	JobID, Thing string
	key          []byte // the backend's own key, for DeleteTimeout
}

// HeldEntry is an execution waiting for its job's rate limit.
type HeldEntry struct {
	Seq   uint64
	Thing string
}
