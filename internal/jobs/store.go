package jobs

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
)

var (
	bucketThings = []byte("things")
	bucketJobs   = []byte("jobs")
	// bucketJobTargets holds each job's target list, read only by DescribeJob.
	bucketJobTargets = []byte("jobTargets")
	bucketExecs      = []byte("executions")   // jobID \x00 thing → Execution
	bucketQueue      = []byte("thing-queues") // thing \x00 jobID → seq, a thing's jobs
	bucketGroups     = []byte("thing-groups")
	// group \x00 thing → ∅ (members) and thing \x00 group → ∅ (memberships)
	bucketMembers     = []byte("group-members")
	bucketMemberships = []byte("thing-memberships")
	// group \x00 jobID → ∅: CONTINUOUS jobs that target a group
	bucketGroupJobs = []byte("group-jobs")
	// deadline (8 bytes, unix ns) ‖ jobID \x00 thing → ∅: executions that may time out
	bucketTimeouts = []byte("timeouts")
	// client token → tokenRecord, for idempotent creation requests
	bucketTokens = []byte("client-tokens")
	// jobID \x00 seq(8) \x00 thing → ∅: executions held back by a rate limit, in queue order
	bucketHeld = []byte("held")
)

// store is the persistent state. Every write is one bbolt transaction, fsynced before it
// returns, so an acknowledged write survives SIGKILL.
type store struct {
	db *bolt.DB
}

func openStore(path string) (*store, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("create jobs data dir: %w", err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 3 * time.Second})
	if errors.Is(err, bolt.ErrTimeout) {
		return nil, fmt.Errorf("open jobs database %s: another jobs service holds it; stop it or pass a different data dir", path)
	}
	if err != nil {
		return nil, fmt.Errorf("open jobs database %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketThings, bucketJobs, bucketExecs, bucketQueue, bucketGroups,
			bucketMembers, bucketMemberships, bucketGroupJobs, bucketTimeouts, bucketTokens, bucketHeld, bucketJobTargets} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("initialise jobs database: %w", err)
	}
	return &store{db: db}, nil
}

func (s *store) close() error { return s.db.Close() }

func execKey(jobID, thing string) []byte  { return []byte(jobID + "\x00" + thing) }
func queueKey(thing, jobID string) []byte { return []byte(thing + "\x00" + jobID) }

func getJSON(b *bolt.Bucket, key []byte, v any) (bool, error) {
	raw := b.Get(key)
	if raw == nil {
		return false, nil
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return false, fmt.Errorf("corrupt record %q: %w", key, err)
	}
	return true, nil
}

func getJSONRaw(raw []byte, v any) bool { return json.Unmarshal(raw, v) == nil }

func putJSON(b *bolt.Bucket, key []byte, v any) error {
	raw, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return b.Put(key, raw)
}

func seqBytes(n uint64) []byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], n)
	return b[:]
}

// txn is the state one transaction works on.
type txn struct {
	tx *bolt.Tx
}

func (t txn) thing(name string) (*Thing, error) {
	var th Thing
	ok, err := getJSON(t.tx.Bucket(bucketThings), []byte(name), &th)
	if err != nil || !ok {
		return nil, err
	}
	return &th, nil
}

func (t txn) putThing(th *Thing) error {
	return putJSON(t.tx.Bucket(bucketThings), []byte(th.Name), th)
}

func (t txn) job(id string) (*Job, error) {
	var j Job
	ok, err := getJSON(t.tx.Bucket(bucketJobs), []byte(id), &j)
	if err != nil || !ok {
		return nil, err
	}
	return &j, nil
}

// mustJob is job, with a missing job an error.
func (t txn) mustJob(id string) (*Job, error) {
	j, err := t.job(id)
	if err == nil && j == nil {
		err = errorf(CodeResourceNotFound, "job %s does not exist", id)
	}
	return j, err
}

// mustExecution is execution, with a missing execution an error.
func (t txn) mustExecution(jobID, thing string) (*Execution, error) {
	e, err := t.execution(jobID, thing)
	if err == nil && e == nil {
		err = errorf(CodeResourceNotFound, "no execution of job %s on thing %s", jobID, thing)
	}
	return e, err
}

func (t txn) putJob(j *Job) error { return putJSON(t.tx.Bucket(bucketJobs), []byte(j.ID), j) }

func (t txn) putJobTargets(id string, targets []string) error {
	return putJSON(t.tx.Bucket(bucketJobTargets), []byte(id), targets)
}

// jobWithTargets is job with its targets, for DescribeJob. Jobs written before targets were
// stored apart still hold them in their own record.
func (t txn) jobWithTargets(id string) (*Job, error) {
	j, err := t.job(id)
	if err != nil || j == nil {
		return j, err
	}
	ok, err := getJSON(t.tx.Bucket(bucketJobTargets), []byte(id), &j.Targets)
	if err == nil && !ok {
		var old struct {
			Targets []string `json:"targets"`
		}
		_, err = getJSON(t.tx.Bucket(bucketJobs), []byte(id), &old)
		j.Targets = old.Targets
	}
	return j, err
}

func (t txn) execution(jobID, thing string) (*Execution, error) {
	var e Execution
	ok, err := getJSON(t.tx.Bucket(bucketExecs), execKey(jobID, thing), &e)
	if err != nil || !ok {
		return nil, err
	}
	return &e, nil
}

func timeoutKey(deadline time.Time, jobID, thing string) []byte {
	return append(seqBytes(uint64(deadline.UnixNano())), execKey(jobID, thing)...)
}

// putExecution writes an execution and keeps the timeout index in step with it.
func (t txn) putExecution(e *Execution) error {
	old, err := t.execution(e.JobID, e.ThingName)
	if err != nil {
		return err
	}
	tb := t.tx.Bucket(bucketTimeouts)
	if old != nil && !old.deadline().IsZero() {
		if err := tb.Delete(timeoutKey(old.deadline(), e.JobID, e.ThingName)); err != nil {
			return err
		}
	}
	if e.Status == ExecInProgress && !e.deadline().IsZero() {
		if err := tb.Put(timeoutKey(e.deadline(), e.JobID, e.ThingName), nil); err != nil {
			return err
		}
	}
	if err := putJSON(t.tx.Bucket(bucketExecs), execKey(e.JobID, e.ThingName), e); err != nil {
		return err
	}
	return t.tx.Bucket(bucketQueue).Put(queueKey(e.ThingName, e.JobID), seqBytes(e.Seq))
}

func (t txn) deleteExecution(e *Execution) error {
	if !e.deadline().IsZero() {
		if err := t.tx.Bucket(bucketTimeouts).Delete(timeoutKey(e.deadline(), e.JobID, e.ThingName)); err != nil {
			return err
		}
	}
	if err := t.tx.Bucket(bucketExecs).Delete(execKey(e.JobID, e.ThingName)); err != nil {
		return err
	}
	return t.tx.Bucket(bucketQueue).Delete(queueKey(e.ThingName, e.JobID))
}

func (t txn) group(name string) (*ThingGroup, error) {
	var g ThingGroup
	ok, err := getJSON(t.tx.Bucket(bucketGroups), []byte(name), &g)
	if err != nil || !ok {
		return nil, err
	}
	return &g, nil
}

// keysWithPrefix returns what follows prefix in every key of bucket that starts with it.
func (t txn) keysWithPrefix(bucket []byte, prefix string) []string {
	var out []string
	p := []byte(prefix)
	c := t.tx.Bucket(bucket).Cursor()
	for k, _ := c.Seek(p); k != nil && hasPrefix(k, p); k, _ = c.Next() {
		out = append(out, string(k[len(p):]))
	}
	return out
}

// thingExecutions returns every execution of a thing, in queue order.
func (t txn) thingExecutions(thing string) ([]*Execution, error) {
	prefix := []byte(thing + "\x00")
	c := t.tx.Bucket(bucketQueue).Cursor()
	var out []*Execution
	for k, _ := c.Seek(prefix); k != nil && hasPrefix(k, prefix); k, _ = c.Next() {
		e, err := t.execution(string(k[len(prefix):]), thing)
		if err != nil {
			return nil, err
		}
		if e != nil {
			out = append(out, e)
		}
	}
	sortBySeq(out)
	return out, nil
}

// jobExecutions calls fn for every execution of a job, in thing-name order.
func (t txn) jobExecutions(jobID string, fn func(*Execution) error) error {
	prefix := []byte(jobID + "\x00")
	c := t.tx.Bucket(bucketExecs).Cursor()
	for k, v := c.Seek(prefix); k != nil && hasPrefix(k, prefix); k, v = c.Next() {
		var e Execution
		if err := json.Unmarshal(v, &e); err != nil {
			return fmt.Errorf("corrupt execution %q: %w", k, err)
		}
		if err := fn(&e); err != nil {
			return err
		}
	}
	return nil
}

func hasPrefix(b, prefix []byte) bool {
	return len(b) >= len(prefix) && string(b[:len(prefix)]) == string(prefix)
}
