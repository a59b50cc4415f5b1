package localiot

import "time"

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

// Tx is the state one transaction sees and changes. Getters return nil (no error) for what
// does not exist.
type Tx interface {
	thing(name string) (*Thing, error)
	putThing(th *Thing) error
	deleteThing(name string) error
	forEachThing(fn func(*Thing) error) error
	// nextID is a new number for an ID of kind ("thing", "group", "record"), never handed out
	// before.
	nextID(kind string) (uint64, error)

	job(id string) (*Job, error)
	putJob(j *Job) error
	// jobWithTargets is job with its (separately stored) target list.
	jobWithTargets(id string) (*Job, error)
	putJobTargets(id string, targets []string) error
	// deleteJob deletes the job record and its targets (not its executions).
	deleteJob(id string) error
	forEachJob(fn func(*Job) error) error

	execution(jobID, thing string) (*Execution, error)
	// putExecution writes an execution with its queue entry and timeout index.
	putExecution(e *Execution) error
	deleteExecution(e *Execution) error
	// thingExecutions is every execution of a thing, in queue order.
	thingExecutions(thing string) ([]*Execution, error)
	// jobExecutions calls fn for every execution of a job, in thing-name order.
	jobExecutions(jobID string, fn func(*Execution) error) error
	// nextQueueSeq orders executions in the things' queues.
	nextQueueSeq() (uint64, error)
	// dueTimeouts lists the executions whose deadline is at or before now (some may be stale:
	// the caller checks), and deleteTimeout drops one entry.
	dueTimeouts(now time.Time) ([]timeoutEntry, error)
	deleteTimeout(t timeoutEntry) error

	// Rate-limited executions wait in a job's hold queue, in seq order.
	hold(jobID string, seq uint64, thing string) error
	heldJobs() ([]string, error)
	held(jobID string) ([]heldEntry, error)
	release(jobID string, h heldEntry) error

	group(name string) (*ThingGroup, error)
	putGroup(g *ThingGroup) error
	// deleteGroup removes a group with its memberships and CONTINUOUS job links.
	deleteGroup(name string) error
	forEachGroup(fn func(*ThingGroup) error) error
	// groupThings are a group's direct members, thingGroups a thing's groups, both by name.
	groupThings(group string) ([]string, error)
	// groupThingsAfter is at most limit of a group's direct members, by name, after the
	// member after (all from the start when empty): one page without reading the others.
	groupThingsAfter(group, after string, limit int) ([]string, error)
	thingGroups(thing string) ([]string, error)
	setMember(group, thing string, member bool) error
	// continuousJobs are the CONTINUOUS jobs that target a group.
	continuousJobs(group string) ([]string, error)
	setContinuousJob(group, jobID string, on bool) error

	// Records are the service's smaller kinds (thing types, job templates): a JSON body by
	// kind and name; records lists a kind's bodies in name order.
	record(kind, name string) ([]byte, error)
	putRecord(kind, name string, body []byte) error
	deleteRecord(kind, name string) error
	records(kind string) ([][]byte, error)

	token(token string) (*TokenRecord, error)
	putToken(token string, r TokenRecord) error
	// secret is a named random secret, created on first use.
	secret(name string, size int) ([]byte, error)
}

// timeoutEntry is an execution that may time out at deadline.
type timeoutEntry struct {
	deadline     time.Time
	jobID, thing string
	key          []byte // the backend's own key, for deleteTimeout
}

// heldEntry is an execution waiting for its job's rate limit.
type heldEntry struct {
	seq   uint64
	thing string
}

// mustJob is job, with a missing job an error.
func mustJob(t Tx, id string) (*Job, error) {
	j, err := t.job(id)
	if err == nil && j == nil {
		err = errorf(CodeResourceNotFound, "job %s does not exist", id)
	}
	return j, err
}

// mustThing is thing, with a missing thing an error.
func mustThing(t Tx, name string) (*Thing, error) {
	th, err := t.thing(name)
	if err == nil && th == nil {
		err = errorf(CodeResourceNotFound, "thing %s does not exist", name)
	}
	return th, err
}

// mustExecution is execution, with a missing execution an error.
func mustExecution(t Tx, jobID, thing string) (*Execution, error) {
	e, err := t.execution(jobID, thing)
	if err == nil && e == nil {
		err = errorf(CodeResourceNotFound, "no execution of job %s on thing %s", jobID, thing)
	}
	return e, err
}
