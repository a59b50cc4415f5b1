package store

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
)

// boltStore is the embedded Store: one bbolt file, every write fsynced before it returns.
type boltStore struct {
	db   *bolt.DB
	jobs jobCache
	// calls feed the batcher (boltbatch.go); stop ends it, stopped says it ended.
	calls         chan *boltCall
	stop, stopped chan struct{}
	closing       sync.Once
	// commits counts the batcher's transactions.
	commits atomic.Int64
}

var (
	_ Store = (*boltStore)(nil)
	_ Tx    = boltTx{}
)

// OpenBolt opens (or creates) the database and brings its layout to schemaVersion.
func OpenBolt(path string) (*boltStore, error) {
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
	if err := db.Update(migrate); err != nil {
		db.Close()
		return nil, fmt.Errorf("jobs database %s: %w", path, err)
	}
	s := &boltStore{db: db, calls: make(chan *boltCall), stop: make(chan struct{}), stopped: make(chan struct{})}
	go s.batcher()
	return s, nil
}

func (s *boltStore) View(fn func(Tx) error) error {
	return s.db.View(func(tx *bolt.Tx) error { return fn(boltTx{tx, &s.jobs}) })
}
func (s *boltStore) Update(fn func(Tx) error) error {
	return s.db.Update(func(tx *bolt.Tx) error { return fn(boltTx{tx, &s.jobs}) })
}
func (s *boltStore) Batch(fn func(Tx) error) error {
	return s.batch(func(tx *bolt.Tx) error { return fn(boltTx{tx, &s.jobs}) })
}

// Close ends the batcher (a batch being committed finishes first) and closes the file.
func (s *boltStore) Close() error {
	s.closing.Do(func() {
		close(s.stop)
		<-s.stopped
	})
	return s.db.Close()
}

func getJSON(b *bolt.Bucket, key []byte, v any) (bool, error) {
	raw := b.Get(key)
	if raw == nil {
		return false, nil
	}
	if err := decodeJSON(key, raw, v); err != nil {
		return false, err
	}
	return true, nil
}

// decodeJSON decodes the record stored under key.
func decodeJSON(key, raw []byte, v any) error {
	if err := json.Unmarshal(raw, v); err != nil {
		return fmt.Errorf("corrupt record %q: %w", key, err)
	}
	return nil
}

func putJSON(b *bolt.Bucket, key []byte, v any) error {
	raw, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return b.Put(key, raw)
}

// get reads one JSON record into a new T; nil when absent.
func get[T any](b *bolt.Bucket, key []byte) (*T, error) {
	var v T
	ok, err := getJSON(b, key, &v)
	if err != nil || !ok {
		return nil, err
	}
	return &v, nil
}

// forEach decodes every record of a bucket, in key order.
func forEach[T any](b *bolt.Bucket, fn func(*T) error) error {
	return b.ForEach(func(k, v []byte) error {
		var rec T
		if err := decodeJSON(k, v, &rec); err != nil {
			return err
		}
		return fn(&rec)
	})
}

// boltTx is one bbolt transaction.
type boltTx struct {
	tx   *bolt.Tx
	jobs *jobCache
}

func (t boltTx) b(name []byte) *bolt.Bucket { return t.tx.Bucket(name) }

// suffixes returns what follows prefix in every key of bucket that starts with it.
func (t boltTx) suffixes(bucket, prefix []byte) []string {
	var out []string
	c := t.b(bucket).Cursor()
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
		out = append(out, string(k[len(prefix):]))
	}
	return out
}

func (t boltTx) Thing(name string) (*Thing, error) {
	return get[Thing](t.b(bucketThings), nameKey(name))
}
func (t boltTx) PutThing(th *Thing) error { return putJSON(t.b(bucketThings), nameKey(th.Name), th) }
func (t boltTx) DeleteThing(name string) error {
	for _, g := range t.suffixes(bucketMemberships, pairPrefix(name)) {
		if err := t.SetMember(g, name, false); err != nil {
			return err
		}
	}
	return t.b(bucketThings).Delete(nameKey(name))
}
func (t boltTx) ForEachThing(fn func(*Thing) error) error { return forEach(t.b(bucketThings), fn) }

func (t boltTx) NextID(kind string) (uint64, error) {
	switch kind {
	case "thing":
		return t.b(bucketThings).NextSequence()
	case "group":
		return t.b(bucketGroups).NextSequence()
	case "record":
		return t.b(bucketRecords).NextSequence()
	}
	return 0, fmt.Errorf("no ID sequence for %q", kind)
}

func (t boltTx) Job(id string) (*Job, error) {
	key := nameKey(id)
	raw := t.b(bucketJobs).Get(key)
	if raw == nil {
		return nil, nil
	}
	if j := t.jobs.get(id, raw); j != nil {
		return j, nil
	}
	var j Job
	if err := decodeJSON(key, raw, &j); err != nil {
		return nil, err
	}
	// raw lives in the database's memory map, valid only in this transaction: the cache
	// keeps a copy.
	t.jobs.put(id, bytes.Clone(raw), &j)
	return &j, nil
}

func (t boltTx) PutJob(j *Job) error {
	raw, err := json.Marshal(j)
	if err != nil {
		return err
	}
	if err := t.b(bucketJobs).Put(nameKey(j.ID), raw); err != nil {
		return err
	}
	if j.roundTrips() {
		t.jobs.put(j.ID, raw, j)
	}
	return nil
}
func (t boltTx) PutJobTargets(id string, targets []string) error {
	return putJSON(t.b(bucketJobTargets), nameKey(id), targets)
}
func (t boltTx) JobWithTargets(id string) (*Job, error) {
	j, err := t.Job(id)
	if err != nil || j == nil {
		return j, err
	}
	_, err = getJSON(t.b(bucketJobTargets), nameKey(id), &j.Targets)
	return j, err
}
func (t boltTx) DeleteJob(id string) error {
	if err := t.b(bucketJobTargets).Delete(nameKey(id)); err != nil {
		return err
	}
	return t.b(bucketJobs).Delete(nameKey(id))
}
func (t boltTx) ForEachJob(fn func(*Job) error) error { return forEach(t.b(bucketJobs), fn) }

func (t boltTx) Execution(jobID, thing string) (*Execution, error) {
	return get[Execution](t.b(bucketExecs), execKey(jobID, thing))
}

func (t boltTx) PutExecution(e *Execution) error {
	old, err := t.Execution(e.JobID, e.ThingName)
	if err != nil {
		return err
	}
	tb := t.b(bucketTimeouts)
	if old != nil && !old.Deadline().IsZero() {
		if err := tb.Delete(timeoutKey(old.Deadline(), e.JobID, e.ThingName)); err != nil {
			return err
		}
	}
	if e.Status == ExecInProgress && !e.Deadline().IsZero() {
		if err := tb.Put(timeoutKey(e.Deadline(), e.JobID, e.ThingName), nil); err != nil {
			return err
		}
	}
	if err := putJSON(t.b(bucketExecs), execKey(e.JobID, e.ThingName), e); err != nil {
		return err
	}
	return t.b(bucketQueue).Put(queueKey(e.ThingName, e.JobID), seqBytes(e.Seq))
}

func (t boltTx) DeleteExecution(e *Execution) error {
	if !e.Deadline().IsZero() {
		if err := t.b(bucketTimeouts).Delete(timeoutKey(e.Deadline(), e.JobID, e.ThingName)); err != nil {
			return err
		}
	}
	if err := t.b(bucketExecs).Delete(execKey(e.JobID, e.ThingName)); err != nil {
		return err
	}
	return t.b(bucketQueue).Delete(queueKey(e.ThingName, e.JobID))
}

func (t boltTx) ThingExecutions(thing string) ([]*Execution, error) {
	var out []*Execution
	for _, jobID := range t.suffixes(bucketQueue, pairPrefix(thing)) {
		e, err := t.Execution(jobID, thing)
		if err != nil {
			return nil, err
		}
		if e != nil {
			out = append(out, e)
		}
	}
	SortBySeq(out)
	return out, nil
}

func (t boltTx) JobExecutions(jobID string, fn func(*Execution) error) error {
	prefix := pairPrefix(jobID)
	c := t.b(bucketExecs).Cursor()
	for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
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

func (t boltTx) NextQueueSeq() (uint64, error) { return t.b(bucketQueue).NextSequence() }

func (t boltTx) DueTimeouts(now time.Time) ([]TimeoutEntry, error) {
	var due []TimeoutEntry
	limit := string(seqBytes(uint64(now.UnixNano())))
	c := t.b(bucketTimeouts).Cursor()
	for k, _ := c.First(); k != nil && len(k) >= 8 && string(k[:8]) <= limit; k, _ = c.Next() {
		if e, ok := parseTimeoutKey(k); ok {
			due = append(due, e)
		}
	}
	return due, nil
}

func (t boltTx) DeleteTimeout(e TimeoutEntry) error { return t.b(bucketTimeouts).Delete(e.key) }

func (t boltTx) Hold(jobID string, seq uint64, thing string) error {
	return t.b(bucketHeld).Put(heldKey(jobID, seq, thing), nil)
}

func (t boltTx) HeldJobs() ([]string, error) {
	var ids []string
	c := t.b(bucketHeld).Cursor()
	for k, _ := c.First(); k != nil; {
		id, _, _ := bytes.Cut(k, []byte{0})
		ids = append(ids, string(id))
		k, _ = c.Seek(append(append([]byte(nil), id...), 1)) // the next job's first key
	}
	return ids, nil
}

func (t boltTx) Held(jobID string) ([]HeldEntry, error) {
	var out []HeldEntry
	for _, rest := range t.suffixes(bucketHeld, pairPrefix(jobID)) {
		if h, ok := parseHeldSuffix([]byte(rest)); ok {
			out = append(out, h)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Seq < out[j].Seq })
	return out, nil
}

func (t boltTx) Release(jobID string, h HeldEntry) error {
	return t.b(bucketHeld).Delete(heldKey(jobID, h.Seq, h.Thing))
}

func (t boltTx) Group(name string) (*ThingGroup, error) {
	return get[ThingGroup](t.b(bucketGroups), nameKey(name))
}
func (t boltTx) PutGroup(g *ThingGroup) error { return putJSON(t.b(bucketGroups), nameKey(g.Name), g) }
func (t boltTx) DeleteGroup(name string) error {
	for _, thing := range t.suffixes(bucketMembers, pairPrefix(name)) {
		if err := t.SetMember(name, thing, false); err != nil {
			return err
		}
	}
	for _, jobID := range t.suffixes(bucketGroupJobs, pairPrefix(name)) {
		if err := t.SetContinuousJob(name, jobID, false); err != nil {
			return err
		}
	}
	return t.b(bucketGroups).Delete(nameKey(name))
}
func (t boltTx) ForEachGroup(fn func(*ThingGroup) error) error {
	return forEach(t.b(bucketGroups), fn)
}
func (t boltTx) GroupThings(group string) ([]string, error) {
	return t.suffixes(bucketMembers, pairPrefix(group)), nil
}
func (t boltTx) GroupThingsAfter(group, after string, limit int) ([]string, error) {
	prefix := pairPrefix(group)
	var out []string
	c := t.b(bucketMembers).Cursor()
	k, _ := c.Seek(memberKey(group, after))
	for ; k != nil && bytes.HasPrefix(k, prefix) && len(out) < limit; k, _ = c.Next() {
		if name := string(k[len(prefix):]); name != after {
			out = append(out, name)
		}
	}
	return out, nil
}
func (t boltTx) ThingGroups(thing string) ([]string, error) {
	return t.suffixes(bucketMemberships, pairPrefix(thing)), nil
}
func (t boltTx) SetMember(group, thing string, member bool) error {
	if !member {
		if err := t.b(bucketMembers).Delete(memberKey(group, thing)); err != nil {
			return err
		}
		return t.b(bucketMemberships).Delete(membershipKey(thing, group))
	}
	if err := t.b(bucketMembers).Put(memberKey(group, thing), nil); err != nil {
		return err
	}
	return t.b(bucketMemberships).Put(membershipKey(thing, group), nil)
}
func (t boltTx) ContinuousJobs(group string) ([]string, error) {
	return t.suffixes(bucketGroupJobs, pairPrefix(group)), nil
}
func (t boltTx) SetContinuousJob(group, jobID string, on bool) error {
	if on {
		return t.b(bucketGroupJobs).Put(groupJobKey(group, jobID), nil)
	}
	return t.b(bucketGroupJobs).Delete(groupJobKey(group, jobID))
}

func (t boltTx) Record(kind, name string) ([]byte, error) {
	v := t.b(bucketRecords).Get(pairKey(kind, name))
	if v == nil {
		return nil, nil
	}
	return bytes.Clone(v), nil
}
func (t boltTx) PutRecord(kind, name string, body []byte) error {
	return t.b(bucketRecords).Put(pairKey(kind, name), body)
}
func (t boltTx) DeleteRecord(kind, name string) error {
	return t.b(bucketRecords).Delete(pairKey(kind, name))
}
func (t boltTx) Records(kind string) ([][]byte, error) {
	var out [][]byte
	c := t.b(bucketRecords).Cursor()
	prefix := pairPrefix(kind)
	for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
		out = append(out, bytes.Clone(v))
	}
	return out, nil
}

func (t boltTx) RecordsPage(kind, after string, limit int, descending bool) ([]string, [][]byte, error) {
	var names []string
	var bodies [][]byte
	c := t.b(bucketRecords).Cursor()
	prefix := pairPrefix(kind)
	var k, v []byte
	switch {
	case !descending && after == "":
		k, v = c.Seek(prefix)
	case !descending:
		k, v = c.Seek(pairKey(kind, after))
		if k != nil && bytes.Equal(k, pairKey(kind, after)) {
			k, v = c.Next()
		}
	default:
		// The first key past the kind (or the name), then one back.
		end := append(bytes.Clone(prefix[:len(prefix)-1]), prefix[len(prefix)-1]+1)
		if after != "" {
			end = pairKey(kind, after)
		}
		if k, _ = c.Seek(end); k == nil {
			k, v = c.Last()
		} else {
			k, v = c.Prev()
		}
	}
	for ; k != nil && bytes.HasPrefix(k, prefix) && len(names) < limit; k, v = step(c, descending) {
		names = append(names, string(k[len(prefix):]))
		bodies = append(bodies, bytes.Clone(v))
	}
	return names, bodies, nil
}

func step(c *bolt.Cursor, descending bool) ([]byte, []byte) {
	if descending {
		return c.Prev()
	}
	return c.Next()
}

func (t boltTx) Token(token string) (*TokenRecord, error) {
	return get[TokenRecord](t.b(bucketTokens), nameKey(token))
}
func (t boltTx) PutToken(token string, r TokenRecord) error {
	return putJSON(t.b(bucketTokens), nameKey(token), r)
}

func (t boltTx) Secret(name string, size int) ([]byte, error) {
	b := t.b(bucketMeta)
	if v := b.Get([]byte(name)); v != nil {
		return append([]byte(nil), v...), nil
	}
	key := make([]byte, size)
	if _, err := rand.Read(key); err != nil {
		return nil, err
	}
	return key, b.Put([]byte(name), key)
}
