package store

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"time"
)

// A job on PostgreSQL is two parts: its record (table jobs), written only when something
// other than its counters changes, and its counters with the time it last changed (table
// job_counts, one row per database connection that changed them), added up when the job is
// read. So two transactions that each move one execution of a job never write the
// same row, and neither waits for nor conflicts with the other.

// jobBase is a job as a writing transaction read it: PutJob writes the difference.
type jobBase struct {
	counts  ProcessDetails
	updated time.Time
	record  []byte // the record as PutJob would write it; nil when there was none
}

// pgJobSelect reads jobs with their counters added up: the body, then the nine sums.
const pgJobSelect = `SELECT j.body, c.canceled, c.succeeded, c.failed, c.rejected, c.queued, c.in_progress, c.removed, c.timed_out, c.last_ns
	FROM jobs j CROSS JOIN LATERAL (SELECT coalesce(sum(canceled), 0), coalesce(sum(succeeded), 0), coalesce(sum(failed), 0),
		coalesce(sum(rejected), 0), coalesce(sum(queued), 0), coalesce(sum(in_progress), 0), coalesce(sum(removed), 0),
		coalesce(sum(timed_out), 0), coalesce(max(last_updated_ns), 0)
		FROM job_counts WHERE job_id = j.id) AS c(canceled, succeeded, failed, rejected, queued, in_progress, removed, timed_out, last_ns)`

func (t *pgTx) jobs(where string, args ...any) ([]*Job, error) {
	rows, err := t.tx.Query(t.ctx, pgJobSelect+" "+where, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []*Job
	for rows.Next() {
		var raw []byte
		var c [8]int64
		var lastNs int64
		if err := rows.Scan(&raw, &c[0], &c[1], &c[2], &c[3], &c[4], &c[5], &c[6], &c[7], &lastNs); err != nil {
			return nil, err
		}
		j := &Job{}
		if err := json.Unmarshal(raw, j); err != nil {
			return nil, fmt.Errorf("corrupt job record: %w", err)
		}
		j.Counts = ProcessDetails{Canceled: int(c[0]), Succeeded: int(c[1]), Failed: int(c[2]), Rejected: int(c[3]),
			Queued: int(c[4]), InProgress: int(c[5]), Removed: int(c[6]), TimedOut: int(c[7])}
		if lastNs > 0 {
			if last := time.Unix(0, lastNs).UTC(); last.After(j.LastUpdatedAt) {
				j.LastUpdatedAt = last
			}
		}
		if p, ok := t.pending[j.ID]; ok { // this transaction's changes, not written yet
			j.Counts = j.Counts.plus(p.counts, 1)
			if p.updated.After(j.LastUpdatedAt) {
				j.LastUpdatedAt = p.updated
			}
		}
		out = append(out, j)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if t.loaded != nil {
		for _, j := range out {
			rec, err := jobRecord(j)
			if err != nil {
				return nil, err
			}
			t.loaded[j] = jobBase{counts: j.Counts, updated: j.LastUpdatedAt, record: rec}
		}
	}
	return out, nil
}

// jobRecord is what table jobs keeps of j: everything but the counters and the time of the
// last change, which job_counts keep.
func jobRecord(j *Job) ([]byte, error) {
	rec := *j
	rec.Counts, rec.LastUpdatedAt = ProcessDetails{}, time.Time{}
	return json.Marshal(&rec)
}

func (t *pgTx) Job(id string) (*Job, error) {
	js, err := t.jobs("WHERE j.id = $1", id)
	if err != nil || len(js) == 0 {
		return nil, err
	}
	return js[0], nil
}

func (t *pgTx) ForEachJob(fn func(*Job) error) error {
	js, err := t.jobs("ORDER BY j.id")
	if err != nil {
		return err
	}
	for _, j := range js {
		if err := fn(j); err != nil {
			return err
		}
	}
	return nil
}

// PutJob writes what changed in j since this transaction read it (all of it, for a job it did
// not read): its counters as an addition to this connection's row, its record only when
// something else changed.
func (t *pgTx) PutJob(j *Job) error {
	base, read := t.loaded[j]
	if !read {
		current, err := t.Job(j.ID)
		if err != nil {
			return err
		}
		if current != nil {
			base = t.loaded[current]
		}
	}
	d := j.Counts.plus(base.counts, -1)
	if d != (ProcessDetails{}) || j.LastUpdatedAt.After(base.updated) {
		p := t.pending[j.ID]
		p.counts = p.counts.plus(d, 1)
		if j.LastUpdatedAt.After(p.updated) {
			p.updated = j.LastUpdatedAt
		}
		t.pending[j.ID] = p
	}
	rec, err := jobRecord(j)
	if err != nil {
		return err
	}
	if !bytes.Equal(rec, base.record) {
		if err := t.exec("INSERT INTO jobs (id, body) VALUES ($1, $2) ON CONFLICT (id) DO UPDATE SET body = EXCLUDED.body", j.ID, rec); err != nil {
			return err
		}
	}
	if t.loaded != nil {
		t.loaded[j] = jobBase{counts: j.Counts, updated: j.LastUpdatedAt, record: rec}
	}
	return nil
}

func (t *pgTx) DeleteJob(id string) error {
	delete(t.pending, id)
	for j := range t.loaded {
		if j.ID == id {
			delete(t.loaded, j) // a job created again under this ID starts from nothing
		}
	}
	for _, sql := range []string{"DELETE FROM job_targets WHERE job_id = $1", "DELETE FROM job_counts WHERE job_id = $1", "DELETE FROM jobs WHERE id = $1"} {
		if err := t.exec(sql, id); err != nil {
			return err
		}
	}
	return nil
}

// pgCountsInsert and pgCountsAdd write counter rows: an insert, or an addition to the row
// already there.
const (
	pgCountsInsert = `INSERT INTO job_counts AS c (job_id, shard, canceled, succeeded, failed, rejected, queued, in_progress, removed, timed_out, last_updated_ns)`
	pgCountsAdd    = `ON CONFLICT (job_id, shard) DO UPDATE SET canceled = c.canceled + EXCLUDED.canceled, succeeded = c.succeeded + EXCLUDED.succeeded,
		failed = c.failed + EXCLUDED.failed, rejected = c.rejected + EXCLUDED.rejected, queued = c.queued + EXCLUDED.queued,
		in_progress = c.in_progress + EXCLUDED.in_progress, removed = c.removed + EXCLUDED.removed, timed_out = c.timed_out + EXCLUDED.timed_out,
		last_updated_ns = greatest(c.last_updated_ns, EXCLUDED.last_updated_ns)`
)

// countChange is what a transaction changed of one job's counters, written when it commits.
type countChange struct {
	counts  ProcessDetails
	updated time.Time
}

// flushCounts adds what the transaction changed of each job's counters to this connection's
// rows: once per job and transaction, however many of a batch's calls moved its executions
// (a row updated once per call would grow a chain of row versions that every later read in
// the transaction walks).
func (t *pgTx) flushCounts() error {
	ids := make([]string, 0, len(t.pending))
	for id := range t.pending {
		ids = append(ids, id)
	}
	slices.Sort(ids) // one order in every transaction
	for _, id := range ids {
		p := t.pending[id]
		var lastNs int64
		if !p.updated.IsZero() {
			lastNs = p.updated.UnixNano()
		}
		d := p.counts
		if err := t.exec(pgCountsInsert+` VALUES ($1, pg_backend_pid(), $2, $3, $4, $5, $6, $7, $8, $9, $10) `+pgCountsAdd,
			id, d.Canceled, d.Succeeded, d.Failed, d.Rejected, d.Queued, d.InProgress, d.Removed, d.TimedOut, lastNs); err != nil {
			return err
		}
	}
	clear(t.pending)
	return nil
}

// pgCompactEvery is how often a replica folds the counter rows of closed connections into
// shard 0: connections come and go (the pool recycles them), and each leaves a row per job it
// counted for.
const pgCompactEvery = 10 * time.Minute

// compactCounts folds the counter rows of connections that no longer exist into shard 0.
func (s *pgStore) compactCounts() error {
	return s.write(func(t *pgTx) error {
		return t.exec(`WITH gone AS (
				DELETE FROM job_counts WHERE shard <> 0 AND shard NOT IN (SELECT pid FROM pg_stat_activity WHERE pid IS NOT NULL)
				RETURNING *)
			` + pgCountsInsert + ` SELECT job_id, 0, sum(canceled), sum(succeeded), sum(failed), sum(rejected), sum(queued), sum(in_progress),
				sum(removed), sum(timed_out), max(last_updated_ns) FROM gone GROUP BY job_id ` + pgCountsAdd)
	})
}

// compactor runs compactCounts every pgCompactEvery until the store closes.
func (s *pgStore) compactor() {
	defer s.workers.Done()
	tick := time.NewTicker(pgCompactEvery)
	defer tick.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-tick.C:
			s.compactCounts() // on failure the rows wait for the next round; nothing is lost
		}
	}
}
