package store

import (
	"context"
	"crypto/rand"
	"embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	mrand "math/rand/v2"
	"net"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// pgStore keeps the jobs service's state in PostgreSQL, so that several replicas serve one
// fleet at once. Writing transactions run at REPEATABLE READ: each sees one snapshot, and
// PostgreSQL refuses (serialization failure) a write to a row that another transaction
// changed since that snapshot. Such a transaction is run again from the start on a new
// snapshot, so no update is ever lost and a device's request is applied exactly once however
// many replicas serve at the same time (the first to change an execution wins; the other,
// run again, finds it changed). What every device request would otherwise write in common,
// a job's counters, is kept in per-connection rows (job_counts) that a job's reader adds up.
// Batch commits many device requests in one transaction, each in its own savepoint, and
// several batches run at once (pgBatchers); reads run on REPEATABLE READ snapshots too.
type pgStore struct {
	pool    *pgxpool.Pool
	batches chan *pgBatchCall
	stop    chan struct{}
	workers sync.WaitGroup // the batchers and the compactor
	// fence is the leader's lease this store's batches (device requests) run under, once it
	// has led: each batch checks in its own transaction that the lease is still this
	// replica's, so a replica that lost it (partitioned, frozen) can never act on a stale
	// term. nil until the store first leads; a zero term after it lost the lease.
	fence atomic.Pointer[leaseTerm]
}

// leaseTerm is one holding of the leader's lease.
type leaseTerm struct {
	holder string
	term   int64
}

var (
	_ Store = (*pgStore)(nil)
	_ Tx    = (*pgTx)(nil)
)

const (
	// pgMigrateLock guards schema upgrades.
	pgMigrateLock = 0x6f74616d
	// A transaction that takes longer than pgTxTimeout is rolled back (a stuck connection
	// must not hold its rows' locks).
	pgTxTimeout = 30 * time.Second
	// pgMaxBatch device writes commit together at most; a batcher waits pgBatchWait for
	// more after the first. pgBatchers batches run at once in each replica.
	pgMaxBatch  = 256
	pgBatchWait = time.Millisecond
	pgBatchers  = 4
	// A transaction (or a batch's call) that lost a race to a concurrent one runs again, up
	// to pgMaxAttempts times in all.
	pgMaxAttempts = 50
)

//go:embed pgschema/*.sql
var pgSchema embed.FS

// OpenPostgres connects to url and brings the schema to the newest version this code knows.
func OpenPostgres(url string) (*pgStore, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("PostgreSQL URL: %w (expected postgres://user:password@host:5432/db)", err)
	}
	if cfg.MaxConns < 16 {
		cfg.MaxConns = 16
	}
	// A replica that dies, freezes or is cut off mid-transaction must not hold its rows (the
	// leader's lease among them) for long: PostgreSQL ends a session idle in a transaction
	// after 10 s, and probes a silent connection every 2 s after 5 s idle, dropping it after
	// 3 lost probes (or 10 s of unacknowledged data). This side probes the same way.
	for k, v := range map[string]string{"idle_in_transaction_session_timeout": "10s", "tcp_keepalives_idle": "5",
		"tcp_keepalives_interval": "2", "tcp_keepalives_count": "3", "tcp_user_timeout": "10000"} {
		if _, set := cfg.ConnConfig.RuntimeParams[k]; !set {
			cfg.ConnConfig.RuntimeParams[k] = v
		}
	}
	cfg.ConnConfig.DialFunc = (&net.Dialer{Timeout: 10 * time.Second,
		KeepAliveConfig: net.KeepAliveConfig{Enable: true, Idle: 5 * time.Second, Interval: 2 * time.Second, Count: 3}}).DialContext
	ctx, cancel := context.WithTimeout(context.Background(), pgTxTimeout)
	defer cancel()
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect to PostgreSQL %s: %w", cfg.ConnConfig.Host, err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("connect to PostgreSQL at %s:%d: %w", cfg.ConnConfig.Host, cfg.ConnConfig.Port, err)
	}
	if err := pgMigrate(ctx, pool); err != nil {
		pool.Close()
		return nil, fmt.Errorf("jobs database schema: %w", err)
	}
	s := &pgStore{pool: pool, batches: make(chan *pgBatchCall, pgMaxBatch), stop: make(chan struct{})}
	s.workers.Add(pgBatchers + 1)
	for range pgBatchers {
		go s.batcher()
	}
	go s.compactor()
	return s, nil
}

// pgMigrations are the embedded schema files, by version (the number their name starts with).
func pgMigrations() (map[int]string, int, error) {
	files, err := fs.Glob(pgSchema, "pgschema/*.sql")
	if err != nil {
		return nil, 0, err
	}
	out, newest := map[int]string{}, 0
	for _, f := range files {
		base := strings.TrimPrefix(f, "pgschema/")
		n, err := strconv.Atoi(strings.SplitN(base, "_", 2)[0])
		if err != nil {
			return nil, 0, fmt.Errorf("schema file %s: name must start with its version", base)
		}
		raw, err := pgSchema.ReadFile(f)
		if err != nil {
			return nil, 0, err
		}
		out[n], newest = string(raw), max(newest, n)
	}
	return out, newest, nil
}

// pgMigrate applies each schema version the database lacks, in order, each in its own
// transaction, under a lock so that replicas starting together upgrade once.
func pgMigrate(ctx context.Context, pool *pgxpool.Pool) error {
	migrations, newest, err := pgMigrations()
	if err != nil {
		return err
	}
	return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", pgMigrateLock); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
			version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
			return err
		}
		var have int
		if err := tx.QueryRow(ctx, "SELECT coalesce(max(version), 0) FROM schema_migrations").Scan(&have); err != nil {
			return err
		}
		if have > newest {
			return fmt.Errorf("the database has schema version %d, written by a newer otaflow; this one knows up to %d: upgrade otaflow", have, newest)
		}
		for v := have + 1; v <= newest; v++ {
			sql, ok := migrations[v]
			if !ok {
				return fmt.Errorf("schema version %d is missing from this build", v)
			}
			if _, err := tx.Exec(ctx, sql); err != nil {
				return fmt.Errorf("apply schema version %d: %w", v, err)
			}
			if _, err := tx.Exec(ctx, "INSERT INTO schema_migrations (version) VALUES ($1)", v); err != nil {
				return err
			}
		}
		return nil
	})
}

func (s *pgStore) View(fn func(Tx) error) error {
	for attempt := 1; ; attempt++ {
		err := s.viewOnce(fn)
		if !deadConn(err) || attempt >= pgDeadConnAttempts {
			return err
		}
	}
}

func (s *pgStore) viewOnce(fn func(Tx) error) error {
	ctx, cancel := context.WithTimeout(context.Background(), pgTxTimeout)
	defer cancel()
	return pgx.BeginTxFunc(ctx, s.pool, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		return fn(&pgTx{ctx: ctx, tx: tx})
	})
}

// pgDeadConnAttempts bounds the runs of a transaction that found its pooled connection closed.
const pgDeadConnAttempts = 3

// deadConn reports whether err is a pooled connection that failed before the transaction sent
// anything on it (its socket went away, or a cancelled query closed it after it was released;
// pgx says "safe to retry"): the transaction runs again on another connection.
func deadConn(err error) bool {
	return err != nil && pgconn.SafeToRetry(err)
}

// Update runs fn in a writing transaction, again from the start (on a new snapshot) when it
// lost a race to a concurrent transaction, so fn must not keep what an earlier run changed.
func (s *pgStore) Update(fn func(Tx) error) error {
	return s.write(func(t *pgTx) error { return fn(t) })
}

// write runs fn in a REPEATABLE READ transaction, again while it fails for a concurrent
// write (up to pgMaxAttempts runs).
func (s *pgStore) write(fn func(*pgTx) error) error {
	dead := 0
	for attempt := 1; ; attempt++ {
		err := s.writeOnce(fn)
		if deadConn(err) && dead < pgDeadConnAttempts {
			dead++
			continue
		}
		if !isConflict(err) {
			return err
		}
		if attempt >= pgMaxAttempts {
			return gaveUp(err)
		}
		conflictPause(attempt)
	}
}

// gaveUp is the error of a transaction that lost pgMaxAttempts races in a row.
func gaveUp(err error) error {
	return fmt.Errorf("the jobs store gave up after %d attempts, each refused for a concurrent write to the same rows (the caller may try again; many such errors mean too many writers contend for the same jobs or devices): %w", pgMaxAttempts, err)
}

func (s *pgStore) writeOnce(fn func(*pgTx) error) error {
	ctx, cancel := context.WithTimeout(context.Background(), pgTxTimeout)
	defer cancel()
	return pgx.BeginTxFunc(ctx, s.pool, pgx.TxOptions{IsoLevel: pgx.RepeatableRead}, func(tx pgx.Tx) error {
		t := &pgTx{ctx: ctx, tx: tx, loaded: map[*Job]jobBase{}, pending: map[string]countChange{}}
		if err := fn(t); err != nil {
			return err
		}
		return t.flushCounts()
	})
}

// isConflict reports whether err is PostgreSQL's refusal of a transaction that raced a
// concurrent one (a serialization failure or a deadlock): running it again succeeds.
func isConflict(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && (pgErr.Code == "40001" || pgErr.Code == "40P01")
}

// conflictPause waits a little, more after each lost race, and at random, so that the racers
// do not meet again.
func conflictPause(attempt int) {
	time.Sleep(time.Duration(mrand.Int64N(int64(min(attempt, 10)) * int64(time.Millisecond))))
}

type pgBatchCall struct {
	fn       func(Tx) error
	done     chan error
	attempts int
}

// Batch joins fn to the next batch: one transaction, one commit for up to pgMaxBatch calls.
// Each call runs in its own savepoint, so one call's error undoes only its own changes; a call
// that lost a race to a concurrent transaction runs again in the next batch.
func (s *pgStore) Batch(fn func(Tx) error) error {
	c := &pgBatchCall{fn: fn, done: make(chan error, 1)}
	select {
	case s.batches <- c:
	case <-s.stop:
		return errors.New("jobs store is closed")
	}
	return <-c.done
}

func (s *pgStore) batcher() {
	defer s.workers.Done()
	g := newGatherer(s.batches, s.stop, pgMaxBatch, 0, pgBatchWait)
	for {
		calls, ok := g.next()
		if !ok {
			return
		}
		for len(calls) > 0 {
			calls = s.runBatch(calls)
		}
	}
}

// runBatch commits calls in one transaction and tells each its outcome, except those that
// lost a race to a concurrent transaction: it returns them, to run again.
func (s *pgStore) runBatch(calls []*pgBatchCall) (again []*pgBatchCall) {
	errs := make([]error, len(calls))
	err := s.write(func(t *pgTx) error {
		again = again[:0]
		if err := t.checkFence(s.fence.Load()); err != nil {
			return err
		}
		for i, c := range calls {
			if _, err := t.tx.Exec(t.ctx, "SAVEPOINT call"); err != nil {
				return err
			}
			pending := maps.Clone(t.pending)
			if errs[i] = c.fn(t); errs[i] != nil {
				if _, err := t.tx.Exec(t.ctx, "ROLLBACK TO SAVEPOINT call"); err != nil {
					return err
				}
				t.pending = pending
				if isConflict(errs[i]) {
					if c.attempts+1 < pgMaxAttempts {
						again = append(again, c)
					} else {
						errs[i] = gaveUp(errs[i])
					}
				}
			}
			if _, err := t.tx.Exec(t.ctx, "RELEASE SAVEPOINT call"); err != nil {
				return err
			}
		}
		return nil
	})
	retry := map[*pgBatchCall]bool{}
	if err == nil {
		for _, c := range again {
			c.attempts++
			retry[c] = true
		}
	} else {
		again = nil
	}
	for i, c := range calls {
		switch {
		case retry[c]:
		case err != nil:
			c.done <- err // nothing committed: every call failed
		default:
			c.done <- errs[i]
		}
	}
	if len(again) > 0 {
		conflictPause(again[0].attempts)
	}
	return again
}

func (s *pgStore) Close() error {
	close(s.stop)
	s.workers.Wait()
	s.pool.Close()
	return nil
}

// checkFence makes sure the transaction runs under the leader's lease f (nil: no fence). It
// holds the lease's row FOR SHARE until the transaction ends, so no other replica can take
// the lease over before this transaction's writes have committed.
func (t *pgTx) checkFence(f *leaseTerm) error {
	if f == nil {
		return nil
	}
	var one int
	err := t.tx.QueryRow(t.ctx, `SELECT 1 FROM leader_lease
		WHERE id = 1 AND holder = $1 AND term = $2 AND expires_at > clock_timestamp() FOR SHARE`, f.holder, f.term).Scan(&one)
	if errors.Is(err, pgx.ErrNoRows) {
		return ErrNotLeader
	}
	return err
}

// pgTx is one PostgreSQL transaction.
type pgTx struct {
	ctx context.Context
	tx  pgx.Tx
	// loaded are the jobs this (writing) transaction read, as read: PutJob writes what
	// changed since (pgjobs.go), their counters' changes kept in pending until the commit.
	loaded  map[*Job]jobBase
	pending map[string]countChange
}

func (t *pgTx) exec(sql string, args ...any) error {
	_, err := t.tx.Exec(t.ctx, sql, args...)
	return err
}

// pgGet decodes the one JSON body sql selects into a new T; nil when there is no row.
func pgGet[T any](t *pgTx, sql string, args ...any) (*T, error) {
	var raw []byte
	err := t.tx.QueryRow(t.ctx, sql, args...).Scan(&raw)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var v T
	if err := json.Unmarshal(raw, &v); err != nil {
		return nil, fmt.Errorf("corrupt record: %w", err)
	}
	return &v, nil
}

// pgAll decodes every JSON body sql selects. The rows are read before fn runs, because fn may
// query the same transaction.
func pgAll[T any](t *pgTx, fn func(*T) error, sql string, args ...any) error {
	rows, err := t.tx.Query(t.ctx, sql, args...)
	if err != nil {
		return err
	}
	raws, err := pgx.CollectRows(rows, pgx.RowTo[[]byte])
	if err != nil {
		return err
	}
	for _, raw := range raws {
		var v T
		if err := json.Unmarshal(raw, &v); err != nil {
			return fmt.Errorf("corrupt record: %w", err)
		}
		if err := fn(&v); err != nil {
			return err
		}
	}
	return nil
}

func (t *pgTx) strings(sql string, args ...any) ([]string, error) {
	rows, err := t.tx.Query(t.ctx, sql, args...)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

func (t *pgTx) upsertBody(table, key string, keyValue string, v any) error {
	raw, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return t.exec("INSERT INTO "+table+" ("+key+", body) VALUES ($1, $2) ON CONFLICT ("+key+") DO UPDATE SET body = EXCLUDED.body", keyValue, raw)
}

func (t *pgTx) Thing(name string) (*Thing, error) {
	return pgGet[Thing](t, "SELECT body FROM things WHERE name = $1", name)
}
func (t *pgTx) PutThing(th *Thing) error { return t.upsertBody("things", "name", th.Name, th) }
func (t *pgTx) DeleteThing(name string) error {
	if err := t.exec("DELETE FROM group_members WHERE thing = $1", name); err != nil {
		return err
	}
	return t.exec("DELETE FROM things WHERE name = $1", name)
}
func (t *pgTx) ForEachThing(fn func(*Thing) error) error {
	return pgAll(t, fn, "SELECT body FROM things ORDER BY name")
}

func (t *pgTx) nextval(seq string) (uint64, error) {
	var n int64
	err := t.tx.QueryRow(t.ctx, "SELECT nextval($1)", seq).Scan(&n)
	return uint64(n), err
}

func (t *pgTx) NextID(kind string) (uint64, error) {
	switch kind {
	case "thing":
		return t.nextval("thing_ids")
	case "group":
		return t.nextval("group_ids")
	case "record":
		return t.nextval("record_ids")
	}
	return 0, fmt.Errorf("no ID sequence for %q", kind)
}

func (t *pgTx) JobWithTargets(id string) (*Job, error) {
	j, err := t.Job(id)
	if err != nil || j == nil {
		return j, err
	}
	var raw []byte
	err = t.tx.QueryRow(t.ctx, "SELECT targets FROM job_targets WHERE job_id = $1", id).Scan(&raw)
	if errors.Is(err, pgx.ErrNoRows) {
		return j, nil
	}
	if err != nil {
		return nil, err
	}
	return j, json.Unmarshal(raw, &j.Targets)
}
func (t *pgTx) PutJobTargets(id string, targets []string) error {
	raw, err := json.Marshal(targets)
	if err != nil {
		return err
	}
	return t.exec("INSERT INTO job_targets (job_id, targets) VALUES ($1, $2) ON CONFLICT (job_id) DO UPDATE SET targets = EXCLUDED.targets", id, raw)
}
func (t *pgTx) Execution(jobID, thing string) (*Execution, error) {
	return pgGet[Execution](t, "SELECT body FROM executions WHERE job_id = $1 AND thing = $2", jobID, thing)
}

func (t *pgTx) PutExecution(e *Execution) error {
	raw, err := json.Marshal(e)
	if err != nil {
		return err
	}
	var deadline *int64
	if d := e.Deadline(); e.Status == ExecInProgress && !d.IsZero() {
		ns := d.UnixNano()
		deadline = &ns
	}
	return t.exec(`INSERT INTO executions (job_id, thing, seq, deadline_ns, body) VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (job_id, thing) DO UPDATE SET seq = EXCLUDED.seq, deadline_ns = EXCLUDED.deadline_ns, body = EXCLUDED.body`,
		e.JobID, e.ThingName, int64(e.Seq), deadline, raw)
}

func (t *pgTx) DeleteExecution(e *Execution) error {
	return t.exec("DELETE FROM executions WHERE job_id = $1 AND thing = $2", e.JobID, e.ThingName)
}

func (t *pgTx) ThingExecutions(thing string) ([]*Execution, error) {
	var out []*Execution
	err := pgAll(t, func(e *Execution) error { out = append(out, e); return nil },
		"SELECT body FROM executions WHERE thing = $1 ORDER BY seq", thing)
	SortBySeq(out)
	return out, err
}

func (t *pgTx) JobExecutions(jobID string, fn func(*Execution) error) error {
	return pgAll(t, fn, "SELECT body FROM executions WHERE job_id = $1 ORDER BY thing", jobID)
}

func (t *pgTx) NextQueueSeq() (uint64, error) { return t.nextval("queue_seq") }

func (t *pgTx) DueTimeouts(now time.Time) ([]TimeoutEntry, error) {
	rows, err := t.tx.Query(t.ctx, `SELECT deadline_ns, job_id, thing FROM executions
		WHERE deadline_ns IS NOT NULL AND deadline_ns <= $1 ORDER BY deadline_ns`, now.UnixNano())
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (TimeoutEntry, error) {
		var ns int64
		var e TimeoutEntry
		err := r.Scan(&ns, &e.JobID, &e.Thing)
		e.Deadline = time.Unix(0, ns)
		return e, err
	})
}

func (t *pgTx) DeleteTimeout(e TimeoutEntry) error {
	return t.exec("UPDATE executions SET deadline_ns = NULL WHERE job_id = $1 AND thing = $2 AND deadline_ns = $3",
		e.JobID, e.Thing, e.Deadline.UnixNano())
}

func (t *pgTx) Hold(jobID string, seq uint64, thing string) error {
	return t.exec("INSERT INTO held (job_id, seq, thing) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING", jobID, int64(seq), thing)
}

func (t *pgTx) HeldJobs() ([]string, error) {
	return t.strings("SELECT DISTINCT job_id FROM held ORDER BY job_id")
}

func (t *pgTx) Held(jobID string) ([]HeldEntry, error) {
	rows, err := t.tx.Query(t.ctx, "SELECT seq, thing FROM held WHERE job_id = $1 ORDER BY seq, thing", jobID)
	if err != nil {
		return nil, err
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (HeldEntry, error) {
		var seq int64
		var h HeldEntry
		err := r.Scan(&seq, &h.Thing)
		h.Seq = uint64(seq)
		return h, err
	})
	sort.SliceStable(out, func(i, j int) bool { return out[i].Seq < out[j].Seq })
	return out, err
}

func (t *pgTx) Release(jobID string, h HeldEntry) error {
	return t.exec("DELETE FROM held WHERE job_id = $1 AND seq = $2 AND thing = $3", jobID, int64(h.Seq), h.Thing)
}

func (t *pgTx) Group(name string) (*ThingGroup, error) {
	return pgGet[ThingGroup](t, "SELECT body FROM thing_groups WHERE name = $1", name)
}
func (t *pgTx) PutGroup(g *ThingGroup) error { return t.upsertBody("thing_groups", "name", g.Name, g) }
func (t *pgTx) DeleteGroup(name string) error {
	for _, sql := range []string{"DELETE FROM group_members WHERE group_name = $1", "DELETE FROM group_jobs WHERE group_name = $1",
		"DELETE FROM thing_groups WHERE name = $1"} {
		if err := t.exec(sql, name); err != nil {
			return err
		}
	}
	return nil
}
func (t *pgTx) ForEachGroup(fn func(*ThingGroup) error) error {
	return pgAll(t, fn, "SELECT body FROM thing_groups ORDER BY name")
}
func (t *pgTx) GroupThings(group string) ([]string, error) {
	return t.strings("SELECT thing FROM group_members WHERE group_name = $1 ORDER BY thing", group)
}
func (t *pgTx) GroupThingsAfter(group, after string, limit int) ([]string, error) {
	return t.strings("SELECT thing FROM group_members WHERE group_name = $1 AND thing > $2 ORDER BY thing LIMIT $3", group, after, limit)
}
func (t *pgTx) ThingGroups(thing string) ([]string, error) {
	return t.strings("SELECT group_name FROM group_members WHERE thing = $1 ORDER BY group_name", thing)
}
func (t *pgTx) SetMember(group, thing string, member bool) error {
	if member {
		return t.exec("INSERT INTO group_members (group_name, thing) VALUES ($1, $2) ON CONFLICT DO NOTHING", group, thing)
	}
	return t.exec("DELETE FROM group_members WHERE group_name = $1 AND thing = $2", group, thing)
}
func (t *pgTx) ContinuousJobs(group string) ([]string, error) {
	return t.strings("SELECT job_id FROM group_jobs WHERE group_name = $1 ORDER BY job_id", group)
}
func (t *pgTx) SetContinuousJob(group, jobID string, on bool) error {
	if on {
		return t.exec("INSERT INTO group_jobs (group_name, job_id) VALUES ($1, $2) ON CONFLICT DO NOTHING", group, jobID)
	}
	return t.exec("DELETE FROM group_jobs WHERE group_name = $1 AND job_id = $2", group, jobID)
}

func (t *pgTx) Record(kind, name string) ([]byte, error) {
	var raw []byte
	err := t.tx.QueryRow(t.ctx, "SELECT body FROM records WHERE kind = $1 AND name = $2", kind, name).Scan(&raw)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	return raw, err
}
func (t *pgTx) PutRecord(kind, name string, body []byte) error {
	return t.exec("INSERT INTO records (kind, name, body) VALUES ($1, $2, $3) ON CONFLICT (kind, name) DO UPDATE SET body = EXCLUDED.body", kind, name, body)
}
func (t *pgTx) DeleteRecord(kind, name string) error {
	return t.exec("DELETE FROM records WHERE kind = $1 AND name = $2", kind, name)
}
func (t *pgTx) RecordsPage(kind, after string, limit int, descending bool) ([]string, [][]byte, error) {
	q := "SELECT name, body FROM records WHERE kind = $1 AND ($2 = '' OR name > $2) ORDER BY name LIMIT $3"
	if descending {
		q = "SELECT name, body FROM records WHERE kind = $1 AND ($2 = '' OR name < $2) ORDER BY name DESC LIMIT $3"
	}
	rows, err := t.tx.Query(t.ctx, q, kind, after, limit)
	if err != nil {
		return nil, nil, err
	}
	defer rows.Close()
	var names []string
	var bodies [][]byte
	for rows.Next() {
		var name string
		var raw []byte
		if err := rows.Scan(&name, &raw); err != nil {
			return nil, nil, err
		}
		names, bodies = append(names, name), append(bodies, raw)
	}
	return names, bodies, rows.Err()
}
func (t *pgTx) Records(kind string) ([][]byte, error) {
	rows, err := t.tx.Query(t.ctx, "SELECT body FROM records WHERE kind = $1 ORDER BY name", kind)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out [][]byte
	for rows.Next() {
		var raw []byte
		if err := rows.Scan(&raw); err != nil {
			return nil, err
		}
		out = append(out, raw)
	}
	return out, rows.Err()
}

func (t *pgTx) Token(token string) (*TokenRecord, error) {
	return pgGet[TokenRecord](t, "SELECT body FROM client_tokens WHERE token = $1", token)
}
func (t *pgTx) PutToken(token string, r TokenRecord) error {
	return t.upsertBody("client_tokens", "token", token, r)
}

func (t *pgTx) Secret(name string, size int) ([]byte, error) {
	var v []byte
	err := t.tx.QueryRow(t.ctx, "SELECT value FROM secrets WHERE name = $1", name).Scan(&v)
	if err == nil {
		return v, nil
	}
	if !errors.Is(err, pgx.ErrNoRows) {
		return nil, err
	}
	key := make([]byte, size)
	if _, err := rand.Read(key); err != nil {
		return nil, err
	}
	return key, t.exec("INSERT INTO secrets (name, value) VALUES ($1, $2)", name, key)
}

// The leader's lease (table leader_lease). A replica leads while its lease is unexpired on
// the database's clock, and renews it every leaseRenewEvery. It stops serving leaseMargin
// before the lease could run out, measured on its own monotonic clock from the start of its
// last successful renewal, so a replica that cannot reach the database (dead, partitioned,
// frozen) steps down on its own, and another takes the lease once it has expired: within
// leaseTTL plus leaseTryEvery of the last renewal, with no human step.
const (
	leaseTTL        = 10 * time.Second
	leaseRenewEvery = 2 * time.Second
	leaseMargin     = 2 * time.Second
	leaseTryEvery   = time.Second
)

// Lead waits until this replica holds the leader's lease. lost is closed when it may no
// longer count on holding it (a renewal failed for too long); release gives it up at once.
func (s *pgStore) Lead(ctx context.Context) (lost <-chan struct{}, release func(), err error) {
	b := make([]byte, 8)
	rand.Read(b)
	holder := hex.EncodeToString(b)
	for {
		start := time.Now()
		term, err := s.takeLease(ctx, holder)
		if ctx.Err() != nil {
			return nil, nil, ctx.Err()
		}
		if err == nil && term > 0 {
			s.fence.Store(&leaseTerm{holder: holder, term: term})
			return s.holdLease(holder, term, start.Add(leaseTTL-leaseMargin))
		}
		select {
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		case <-time.After(leaseTryEvery):
		}
	}
}

// takeLease takes the lease if it is free (or expired), returning the new term; 0 when
// another replica holds it.
func (s *pgStore) takeLease(ctx context.Context, holder string) (int64, error) {
	qctx, cancel := context.WithTimeout(ctx, leaseRenewEvery)
	defer cancel()
	var term int64
	err := s.pool.QueryRow(qctx, `INSERT INTO leader_lease AS l (id, holder, term, expires_at)
		VALUES (1, $1, 1, clock_timestamp() + $2 * interval '1 millisecond')
		ON CONFLICT (id) DO UPDATE SET holder = $1, term = l.term + 1, expires_at = EXCLUDED.expires_at
		WHERE l.expires_at < clock_timestamp()
		RETURNING term`, holder, leaseTTL.Milliseconds()).Scan(&term)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, nil
	}
	return term, err
}

// holdLease renews the lease until released, and closes lost once it can no longer count on
// it (validUntil passed without a renewal).
func (s *pgStore) holdLease(holder string, term int64, validUntil time.Time) (<-chan struct{}, func(), error) {
	gone, stop := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(gone)
		defer s.fence.Store(&leaseTerm{}) // from now on no batch of this replica commits
		renew := time.NewTicker(leaseRenewEvery)
		defer renew.Stop()
		expiry := time.NewTimer(time.Until(validUntil))
		defer expiry.Stop()
		for {
			select {
			case <-stop:
				return
			case <-expiry.C:
				return // no renewal in time: another replica may hold it by now
			case <-renew.C:
				start := time.Now()
				ctx, cancel := context.WithDeadline(context.Background(), validUntil)
				tag, err := s.pool.Exec(ctx, `UPDATE leader_lease
					SET expires_at = clock_timestamp() + $3 * interval '1 millisecond'
					WHERE id = 1 AND holder = $1 AND term = $2 AND expires_at > clock_timestamp()`,
					holder, term, leaseTTL.Milliseconds())
				cancel()
				if err == nil && tag.RowsAffected() == 0 {
					return // taken over (the lease had expired)
				}
				if err == nil {
					validUntil = start.Add(leaseTTL - leaseMargin)
					expiry.Reset(time.Until(validUntil))
				}
			}
		}
	}()
	var once sync.Once
	return gone, func() {
		once.Do(func() {
			close(stop)
			<-gone
			// Give the lease up at once, so a standby need not wait for it to expire.
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			defer cancel()
			s.pool.Exec(ctx, `UPDATE leader_lease SET expires_at = clock_timestamp()
				WHERE id = 1 AND holder = $1 AND term = $2`, holder, term)
		})
	}, nil
}

// pgThingsChannel carries the names of things a replica changed, so that every replica's
// fleet index rereads them (fleetindex.go).
const pgThingsChannel = "otaflow_things"

// notifyThings tells the other replicas which things changed; from names the payload they
// skip their own notices by.
func (s *pgStore) NotifyThings(from string, names []string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	payload := from
	flush := func() error {
		if payload == from {
			return nil
		}
		_, err := s.pool.Exec(ctx, "SELECT pg_notify($1, $2)", pgThingsChannel, payload)
		payload = from
		return err
	}
	for _, n := range names {
		if len(payload)+len(n)+1 > 7000 { // PostgreSQL's limit is 8000 bytes
			if err := flush(); err != nil {
				return err
			}
		}
		payload += "\n" + n
	}
	return flush()
}

// listenThings calls changed with the things other replicas changed, until ctx ends. After a
// lost connection it calls changed with nil (everything may have changed meanwhile).
func (s *pgStore) ListenThings(ctx context.Context, self string, ready func(), changed func(names []string)) {
	var once sync.Once
	listening := func() { once.Do(ready) }
	defer listening() // even when it never could
	for first := true; ctx.Err() == nil; first = false {
		if !first {
			changed(nil)
		}
		s.listenOnce(ctx, self, listening, changed)
		listening() // the first attempt failed: do not hold up the caller
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

func (s *pgStore) listenOnce(ctx context.Context, self string, listening func(), changed func([]string)) {
	pc, err := s.pool.Acquire(ctx)
	if err != nil {
		return
	}
	conn := pc.Hijack() // a LISTENing session is nobody else's
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "LISTEN "+pgThingsChannel); err != nil {
		return
	}
	listening()
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return
		}
		parts := strings.Split(n.Payload, "\n")
		if len(parts) < 2 || parts[0] == self {
			continue
		}
		changed(parts[1:])
	}
}

// Now is the database's clock.
func (s *pgStore) Now(ctx context.Context) (time.Time, error) {
	var t time.Time
	err := s.pool.QueryRow(ctx, "SELECT clock_timestamp()").Scan(&t)
	return t, err
}
