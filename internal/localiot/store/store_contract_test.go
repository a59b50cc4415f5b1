package store

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/otaflow/otaflow/internal/pgtest"
)

// errRefused is what a transaction that gives up returns.
var errRefused = errors.New("refused")

// storeBackend opens (and, called again, reopens) one store of a kind.
type storeBackend struct {
	name string
	open func(t *testing.T) func() Store
}

// storeBackends are every Store implementation; the contract tests run against each.
func storeBackends() []storeBackend {
	return []storeBackend{
		{name: "bbolt",
			open: func(t *testing.T) func() Store {
				path := filepath.Join(t.TempDir(), "jobs.db")
				return func() Store {
					s, err := OpenBolt(path)
					require.NoError(t, err)
					return s
				}
			}},
		{name: "postgres",
			open: func(t *testing.T) func() Store {
				url := pgtest.DB(t)
				return func() Store {
					s, err := OpenPostgres(url)
					require.NoError(t, err)
					return s
				}
			}},
	}
}

// forEachStore runs test against a fresh store of every kind; reopen closes the store and
// opens it again from what it persisted.
func forEachStore(t *testing.T, test func(t *testing.T, st Store, reopen func() Store)) {
	for _, b := range storeBackends() {
		t.Run(b.name, func(t *testing.T) {
			open := b.open(t)
			st := open()
			closed := false
			t.Cleanup(func() {
				if !closed {
					st.Close()
				}
			})
			test(t, st, func() Store {
				require.NoError(t, st.Close())
				st = open()
				return st
			})
		})
	}
}

func update(t *testing.T, st Store, fn func(Tx) error) {
	t.Helper()
	require.NoError(t, st.Update(fn))
}

func TestStoreThingsAndIDs(t *testing.T) {
	forEachStore(t, func(t *testing.T, st Store, reopen func() Store) {
		update(t, st, func(tx Tx) error {
			for _, n := range []string{"b", "a", "c"} {
				if err := tx.PutThing(&Thing{Name: n, Attributes: map[string]string{"model": n}}); err != nil {
					return err
				}
			}
			return nil
		})
		var ids []uint64
		update(t, st, func(tx Tx) error {
			for _, kind := range []string{"thing", "thing", "group"} {
				id, err := tx.NextID(kind)
				if err != nil {
					return err
				}
				ids = append(ids, id)
			}
			_, err := tx.NextID("bogus")
			require.Error(t, err)
			return nil
		})
		require.Less(t, ids[0], ids[1])
		st = reopen()
		require.NoError(t, st.View(func(tx Tx) error {
			th, err := tx.Thing("a")
			require.NoError(t, err)
			require.Equal(t, "a", th.Attributes["model"])
			missing, err := tx.Thing("zz")
			require.NoError(t, err)
			require.Nil(t, missing)
			var names []string
			require.NoError(t, tx.ForEachThing(func(th *Thing) error { names = append(names, th.Name); return nil }))
			require.Equal(t, []string{"a", "b", "c"}, names)
			return nil
		}))
		update(t, st, func(tx Tx) error {
			id, err := tx.NextID("thing")
			require.Greater(t, id, ids[1], "IDs are never handed out twice, across restarts too")
			return err
		})
	})
}

func TestStoreJobsKeepTargetsApart(t *testing.T) {
	forEachStore(t, func(t *testing.T, st Store, reopen func() Store) {
		update(t, st, func(tx Tx) error {
			for _, id := range []string{"j2", "j1"} {
				if err := tx.PutJob(&Job{ID: id, Status: JobInProgress, Counts: ProcessDetails{Queued: 2}}); err != nil {
					return err
				}
				if err := tx.PutJobTargets(id, []string{"arn:a", "arn:b"}); err != nil {
					return err
				}
			}
			return nil
		})
		st = reopen()
		require.NoError(t, st.View(func(tx Tx) error {
			j, err := tx.Job("j1")
			require.NoError(t, err)
			require.Empty(t, j.Targets, "job() does not decode targets")
			require.Equal(t, 2, j.Counts.Queued)
			j, err = tx.JobWithTargets("j1")
			require.NoError(t, err)
			require.Equal(t, []string{"arn:a", "arn:b"}, j.Targets)
			var ids []string
			require.NoError(t, tx.ForEachJob(func(j *Job) error { ids = append(ids, j.ID); return nil }))
			require.Equal(t, []string{"j1", "j2"}, ids)
			return nil
		}))
		update(t, st, func(tx Tx) error { return tx.DeleteJob("j1") })
		require.NoError(t, st.View(func(tx Tx) error {
			j, err := tx.JobWithTargets("j1")
			require.Nil(t, j)
			return err
		}))
	})
}

func TestStoreExecutionsQueuesAndTimeouts(t *testing.T) {
	forEachStore(t, func(t *testing.T, st Store, reopen func() Store) {
		now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
		update(t, st, func(tx Tx) error {
			for i, job := range []string{"jz", "ja", "jm"} {
				seq, err := tx.NextQueueSeq()
				if err != nil {
					return err
				}
				e := &Execution{JobID: job, ThingName: "dev", Status: ExecQueued, Seq: seq}
				if i == 1 {
					e.Status, e.InProgressDeadline = ExecInProgress, now.Add(time.Minute)
				}
				if err := tx.PutExecution(e); err != nil {
					return err
				}
			}
			return tx.PutExecution(&Execution{JobID: "ja", ThingName: "other", Status: ExecInProgress, Seq: 99, StepDeadline: now.Add(time.Hour)})
		})
		st = reopen()
		require.NoError(t, st.View(func(tx Tx) error {
			es, err := tx.ThingExecutions("dev")
			require.NoError(t, err)
			require.Len(t, es, 3)
			require.Equal(t, []string{"jz", "ja", "jm"}, []string{es[0].JobID, es[1].JobID, es[2].JobID}, "queue order")
			var things []string
			require.NoError(t, tx.JobExecutions("ja", func(e *Execution) error { things = append(things, e.ThingName); return nil }))
			require.Equal(t, []string{"dev", "other"}, things)
			due, err := tx.DueTimeouts(now.Add(30 * time.Second))
			require.NoError(t, err)
			require.Empty(t, due)
			due, err = tx.DueTimeouts(now.Add(2 * time.Hour))
			require.NoError(t, err)
			require.Len(t, due, 2)
			require.Equal(t, "dev", due[0].Thing, "earliest deadline first")
			require.True(t, due[0].Deadline.Equal(now.Add(time.Minute)))
			return nil
		}))
		// A finished execution leaves the timeout index; a deleted entry stays deleted.
		update(t, st, func(tx Tx) error {
			e, err := tx.Execution("ja", "dev")
			require.NoError(t, err)
			e.Status = ExecSucceeded
			if err := tx.PutExecution(e); err != nil {
				return err
			}
			due, err := tx.DueTimeouts(now.Add(2 * time.Hour))
			require.NoError(t, err)
			require.Len(t, due, 1)
			if err := tx.DeleteTimeout(due[0]); err != nil {
				return err
			}
			due, err = tx.DueTimeouts(now.Add(2 * time.Hour))
			require.Empty(t, due)
			return err
		})
		update(t, st, func(tx Tx) error {
			e, err := tx.Execution("jz", "dev")
			require.NoError(t, err)
			return tx.DeleteExecution(e)
		})
		require.NoError(t, st.View(func(tx Tx) error {
			es, err := tx.ThingExecutions("dev")
			require.Len(t, es, 2)
			e, _ := tx.Execution("jz", "dev")
			require.Nil(t, e)
			return err
		}))
	})
}

func TestStoreHeldGroupsTokensSecrets(t *testing.T) {
	forEachStore(t, func(t *testing.T, st Store, reopen func() Store) {
		var secret []byte
		update(t, st, func(tx Tx) error {
			for _, h := range []HeldEntry{{3, "c"}, {1, "a"}, {2, "b"}} {
				if err := tx.Hold("job-b", h.Seq, h.Thing); err != nil {
					return err
				}
			}
			if err := tx.Hold("job-a", 7, "x"); err != nil {
				return err
			}
			if err := tx.PutGroup(&ThingGroup{Name: "fleet"}); err != nil {
				return err
			}
			for _, th := range []string{"t2", "t1"} {
				if err := tx.PutThing(&Thing{Name: th}); err != nil {
					return err
				}
				if err := tx.SetMember("fleet", th, true); err != nil {
					return err
				}
			}
			if err := tx.SetContinuousJob("fleet", "cj", true); err != nil {
				return err
			}
			if err := tx.PutToken("tok", TokenRecord{Fingerprint: "f", Value: "v"}); err != nil {
				return err
			}
			var err error
			secret, err = tx.Secret("presign", 32)
			return err
		})
		st = reopen()
		update(t, st, func(tx Tx) error {
			jobs, err := tx.HeldJobs()
			require.NoError(t, err)
			require.Equal(t, []string{"job-a", "job-b"}, jobs)
			held, err := tx.Held("job-b")
			require.NoError(t, err)
			require.Equal(t, []HeldEntry{{1, "a"}, {2, "b"}, {3, "c"}}, held)
			require.NoError(t, tx.Release("job-b", held[0]))
			held, _ = tx.Held("job-b")
			require.Len(t, held, 2)

			members, err := tx.GroupThings("fleet")
			require.NoError(t, err)
			require.Equal(t, []string{"t1", "t2"}, members)
			page, err := tx.GroupThingsAfter("fleet", "", 1)
			require.NoError(t, err)
			require.Equal(t, []string{"t1"}, page)
			page, err = tx.GroupThingsAfter("fleet", "t1", 5)
			require.NoError(t, err)
			require.Equal(t, []string{"t2"}, page, "the page after t1")
			page, err = tx.GroupThingsAfter("fleet", "t2", 5)
			require.NoError(t, err)
			require.Empty(t, page)
			groups, err := tx.ThingGroups("t1")
			require.NoError(t, err)
			require.Equal(t, []string{"fleet"}, groups)
			cj, err := tx.ContinuousJobs("fleet")
			require.NoError(t, err)
			require.Equal(t, []string{"cj"}, cj)

			tok, err := tx.Token("tok")
			require.NoError(t, err)
			require.Equal(t, "v", tok.Value)
			again, err := tx.Secret("presign", 32)
			require.NoError(t, err)
			require.Equal(t, secret, again, "a secret is made once")
			require.Len(t, again, 32)

			require.NoError(t, tx.DeleteThing("t2"))
			members, _ = tx.GroupThings("fleet")
			require.Equal(t, []string{"t1"}, members, "a deleted thing leaves its groups")
			return tx.DeleteGroup("fleet")
		})
		require.NoError(t, st.View(func(tx Tx) error {
			groups, err := tx.ThingGroups("t1")
			require.Empty(t, groups)
			cj, _ := tx.ContinuousJobs("fleet")
			require.Empty(t, cj)
			g, _ := tx.Group("fleet")
			require.Nil(t, g)
			return err
		}))
	})
}

// Batch: each call commits or fails on its own, its error is returned as it was made, and
// concurrent writers never lose an update.
func TestStoreBatchIsolatesCallsAndSerializesWriters(t *testing.T) {
	forEachStore(t, func(t *testing.T, st Store, reopen func() Store) {
		update(t, st, func(tx Tx) error { return tx.PutJob(&Job{ID: "counter"}) })
		const writers = 200
		var wg sync.WaitGroup
		errs := make([]error, writers)
		for i := range writers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs[i] = st.Batch(func(tx Tx) error {
					j, err := tx.Job("counter")
					if err != nil {
						return err
					}
					j.Counts.Succeeded++
					if err := tx.PutJob(j); err != nil {
						return err
					}
					if i%10 == 0 {
						return fmt.Errorf("call %d: %w", i, errRefused)
					}
					return tx.PutThing(&Thing{Name: fmt.Sprintf("t%03d", i)})
				})
			}()
		}
		wg.Wait()
		for i, err := range errs {
			if i%10 == 0 {
				require.ErrorIs(t, err, errRefused, "call %d", i)
			} else {
				require.NoError(t, err, "call %d", i)
			}
		}
		st = reopen()
		require.NoError(t, st.View(func(tx Tx) error {
			j, err := tx.Job("counter")
			require.NoError(t, err)
			require.Equal(t, writers-writers/10, j.Counts.Succeeded, "refused calls are undone, the rest all counted")
			n := 0
			require.NoError(t, tx.ForEachThing(func(*Thing) error { n++; return nil }))
			require.Equal(t, writers-writers/10, n)
			return nil
		}))
	})
}

// Two PostgreSQL stores (two replicas) on one database: concurrent writers of one job lose no
// count.
func TestPostgresReplicasShareOneDatabase(t *testing.T) {
	url := pgtest.DB(t)
	a, err := OpenPostgres(url)
	require.NoError(t, err)
	defer a.Close()
	b, err := OpenPostgres(url) // the second replica finds the schema in place
	require.NoError(t, err)
	defer b.Close()
	require.NoError(t, a.Update(func(tx Tx) error { return tx.PutJob(&Job{ID: "counter"}) }))
	var wg sync.WaitGroup
	for i := range 100 {
		st := Store(a)
		if i%2 == 1 {
			st = b
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			require.NoError(t, st.Batch(func(tx Tx) error {
				j, err := tx.Job("counter")
				if err != nil {
					return err
				}
				j.Counts.Succeeded++
				return tx.PutJob(j)
			}))
		}()
	}
	wg.Wait()
	require.NoError(t, b.View(func(tx Tx) error {
		j, err := tx.Job("counter")
		require.Equal(t, 100, j.Counts.Succeeded)
		return err
	}))
}

func TestPostgresSchemaFromANewerOtaflowIsRefused(t *testing.T) {
	url := pgtest.DB(t)
	st, err := OpenPostgres(url)
	require.NoError(t, err)
	st.Close()
	ctx := context.Background()
	c, err := pgx.Connect(ctx, url)
	require.NoError(t, err)
	_, err = c.Exec(ctx, "INSERT INTO schema_migrations (version) VALUES (999)")
	c.Close(ctx)
	require.NoError(t, err)
	_, err = OpenPostgres(url)
	require.ErrorContains(t, err, "schema version 999, written by a newer otaflow")
}

// Records: by kind and name, listed in name order per kind, durable, deletable.
func TestStoreRecords(t *testing.T) {
	forEachStore(t, func(t *testing.T, st Store, reopen func() Store) {
		update(t, st, func(tx Tx) error {
			for _, r := range []struct{ kind, name string }{{"type", "b"}, {"type", "a"}, {"template", "a"}, {"type", "c"}} {
				if err := tx.PutRecord(r.kind, r.name, []byte(`{"n":"`+r.kind+"/"+r.name+`"}`)); err != nil {
					return err
				}
			}
			return tx.DeleteRecord("type", "c")
		})
		st = reopen()
		require.NoError(t, st.View(func(tx Tx) error {
			all, err := tx.Records("type")
			require.NoError(t, err)
			require.Len(t, all, 2)
			require.JSONEq(t, `{"n":"type/a"}`, string(all[0]), "name order")
			require.JSONEq(t, `{"n":"type/b"}`, string(all[1]))
			one, err := tx.Record("template", "a")
			require.NoError(t, err)
			require.JSONEq(t, `{"n":"template/a"}`, string(one))
			none, err := tx.Record("type", "c")
			require.NoError(t, err)
			require.Nil(t, none, "deleted")
			return nil
		}))
	})
}

// RecordsPage: a kind's records a page at a time, either way, starting anywhere, never
// another kind's.
func TestStoreRecordsPage(t *testing.T) {
	forEachStore(t, func(t *testing.T, st Store, _ func() Store) {
		update(t, st, func(tx Tx) error {
			for _, r := range []struct{ kind, name string }{{"a", "x"}, {"log", "01"}, {"log", "02"}, {"log", "03"}, {"log", "04"}, {"logz", "00"}, {"m", "y"}} {
				if err := tx.PutRecord(r.kind, r.name, []byte(`{"n":"`+r.name+`"}`)); err != nil {
					return err
				}
			}
			return nil
		})
		page := func(after string, limit int, desc bool) []string {
			var names []string
			require.NoError(t, st.View(func(tx Tx) error {
				n, b, err := tx.RecordsPage("log", after, limit, desc)
				require.Len(t, b, len(n))
				names = n
				return err
			}))
			return names
		}
		require.Equal(t, []string{"01", "02", "03"}, page("", 3, false))
		require.Equal(t, []string{"04"}, page("03", 3, false))
		require.Empty(t, page("04", 3, false))
		require.Equal(t, []string{"04", "03"}, page("", 2, true), "newest first")
		require.Equal(t, []string{"02", "01"}, page("03", 5, true))
		require.Equal(t, []string{"02"}, page("025", 1, true), "from between two names")
		require.Empty(t, page("01", 5, true))
	})
}

// Fencing: once a replica has led, its batches commit only while the lease is still its own.
// When another replica has taken the lease over (here by hand, as after a partition the old
// leader has not noticed yet), the old leader's batch fails with ErrNotLeader and writes
// nothing; a takeover also waits for a batch in flight to commit.
func TestPostgresBatchesAreFencedByTheLease(t *testing.T) {
	url := pgtest.DB(t)
	a, err := OpenPostgres(url)
	require.NoError(t, err)
	defer a.Close()
	require.NoError(t, a.Batch(func(tx Tx) error { return tx.PutThing(&Thing{Name: "before-leading"}) }), "a store that never led is not fenced")

	ctx := context.Background()
	lost, release, err := a.Lead(ctx)
	require.NoError(t, err)
	defer release()
	require.NoError(t, a.Batch(func(tx Tx) error { return tx.PutThing(&Thing{Name: "while-leading"}) }))

	// A batch in flight holds the lease's row: a takeover waits for it to commit.
	c, err := pgx.Connect(ctx, url)
	require.NoError(t, err)
	defer c.Close(ctx)
	inBatch, finish := make(chan struct{}), make(chan struct{})
	batchDone := make(chan error, 1)
	go func() {
		batchDone <- a.Batch(func(tx Tx) error {
			close(inBatch)
			<-finish
			return tx.PutThing(&Thing{Name: "in-flight"})
		})
	}()
	<-inBatch
	takeover := make(chan error, 1)
	go func() {
		_, err := c.Exec(ctx, "UPDATE leader_lease SET holder = 'other-replica', term = term + 1, expires_at = clock_timestamp() + interval '1 minute'")
		takeover <- err
	}()
	select {
	case err := <-takeover:
		t.Fatalf("the takeover did not wait for the batch in flight: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	close(finish)
	require.NoError(t, <-batchDone, "the batch in flight commits under its term")
	require.NoError(t, <-takeover)

	// The old leader has not noticed yet (its renewal has not run); its next batch is refused.
	err = a.Batch(func(tx Tx) error { return tx.PutThing(&Thing{Name: "stale-term"}) })
	require.ErrorIs(t, err, ErrNotLeader)
	require.NoError(t, a.View(func(tx Tx) error {
		th, err := tx.Thing("stale-term")
		require.Nil(t, th, "nothing written under a stale term")
		th, _ = tx.Thing("in-flight")
		require.NotNil(t, th)
		return err
	}))
	select {
	case <-lost:
	case <-time.After(leaseRenewEvery + 3*time.Second):
		t.Fatal("the old leader did not notice it lost the lease at its next renewal")
	}
	require.ErrorIs(t, a.Batch(func(tx Tx) error { return nil }), ErrNotLeader, "a stepped-down leader stays fenced")
}

// A database from before job_counts (schema 3, a job's counters inside its record) keeps its
// counters when upgraded, and counts on from there.
func TestPostgresUpgradeKeepsJobCounters(t *testing.T) {
	url := pgtest.DB(t)
	ctx := context.Background()
	c, err := pgx.Connect(ctx, url)
	require.NoError(t, err)
	defer c.Close(ctx)
	migrations, _, err := pgMigrations()
	require.NoError(t, err)
	_, err = c.Exec(ctx, "CREATE TABLE schema_migrations (version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())")
	require.NoError(t, err)
	for v := 1; v <= 3; v++ {
		_, err = c.Exec(ctx, migrations[v])
		require.NoError(t, err)
		_, err = c.Exec(ctx, "INSERT INTO schema_migrations (version) VALUES ($1)", v)
		require.NoError(t, err)
	}
	_, err = c.Exec(ctx, `INSERT INTO jobs (id, body) VALUES ('old', '{"jobId":"old","status":"IN_PROGRESS","lastUpdatedAt":"2026-01-02T03:04:05Z",
		"jobProcessDetails":{"numberOfSucceededThings":7,"numberOfQueuedThings":3}}')`)
	require.NoError(t, err)

	st, err := OpenPostgres(url)
	require.NoError(t, err)
	defer st.Close()
	require.NoError(t, st.Update(func(tx Tx) error {
		j, err := tx.Job("old")
		require.NoError(t, err)
		require.Equal(t, ProcessDetails{Succeeded: 7, Queued: 3}, j.Counts)
		require.Equal(t, time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), j.LastUpdatedAt)
		j.Counts.Queued--
		j.Counts.Succeeded++
		j.LastUpdatedAt = j.LastUpdatedAt.Add(time.Hour)
		return tx.PutJob(j)
	}))
	require.NoError(t, st.View(func(tx Tx) error {
		j, err := tx.Job("old")
		require.Equal(t, ProcessDetails{Succeeded: 8, Queued: 2}, j.Counts)
		require.Equal(t, time.Date(2026, 1, 2, 4, 4, 5, 0, time.UTC), j.LastUpdatedAt)
		return err
	}))
}

// The counter rows of connections that closed are folded into one, with nothing lost.
func TestPostgresCompactsCountersOfClosedConnections(t *testing.T) {
	url := pgtest.DB(t)
	st, err := OpenPostgres(url)
	require.NoError(t, err)
	defer st.Close()
	require.NoError(t, st.Update(func(tx Tx) error {
		return tx.PutJob(&Job{ID: "j", Status: JobInProgress, Counts: ProcessDetails{Queued: 10}})
	}))
	ctx := context.Background()
	c, err := pgx.Connect(ctx, url)
	require.NoError(t, err)
	defer c.Close(ctx)
	// Two rows of connections long gone (no server process has these pids).
	_, err = c.Exec(ctx, `INSERT INTO job_counts (job_id, shard, queued, succeeded, last_updated_ns) VALUES
		('j', 2000000001, -3, 3, 5), ('j', 2000000002, -2, 2, 7)`)
	require.NoError(t, err)
	require.NoError(t, st.compactCounts())
	var rows, gone int
	require.NoError(t, c.QueryRow(ctx, "SELECT count(*), count(*) FILTER (WHERE shard > 2000000000) FROM job_counts WHERE job_id = 'j'").Scan(&rows, &gone))
	require.Zero(t, gone, "the closed connections' rows are folded")
	require.NoError(t, st.View(func(tx Tx) error {
		j, err := tx.Job("j")
		require.Equal(t, ProcessDetails{Queued: 5, Succeeded: 5}, j.Counts, "nothing lost")
		return err
	}))
}

// Every session of the store ends an idle transaction and a silent connection within seconds,
// so a dead or frozen replica's locks (the lease's row among them) are not held for long.
func TestPostgresSessionsTimeOutIdleTransactions(t *testing.T) {
	st, err := OpenPostgres(pgtest.DB(t))
	require.NoError(t, err)
	defer st.Close()
	for setting, want := range map[string]string{"idle_in_transaction_session_timeout": "10s", "tcp_keepalives_idle": "5",
		"tcp_keepalives_count": "3", "tcp_user_timeout": "10000"} {
		var got string
		require.NoError(t, st.pool.QueryRow(context.Background(), "SHOW "+setting).Scan(&got))
		require.Equal(t, want, got, setting)
	}
}

// A pooled connection whose socket was closed while it sat idle (a query cancelled after it
// was released, a proxy that dropped it) costs a transaction nothing: it runs again on another
// connection, reading and writing.
func TestPostgresSurvivesADeadPooledConnection(t *testing.T) {
	s, err := OpenPostgres(pgtest.DB(t))
	require.NoError(t, err)
	defer s.Close()
	require.NoError(t, s.Update(func(tx Tx) error { return tx.PutJob(&Job{ID: "before"}) }))
	kill := func() {
		// Every idle connection in the pool loses its socket behind pgx's back.
		conns := s.pool.AcquireAllIdle(context.Background())
		require.NotEmpty(t, conns)
		for _, c := range conns {
			c.Conn().PgConn().Conn().Close()
			c.Release()
		}
	}
	kill()
	require.NoError(t, s.Update(func(tx Tx) error { return tx.PutJob(&Job{ID: "after"}) }))
	kill()
	require.NoError(t, s.View(func(tx Tx) error {
		j, err := tx.Job("after")
		require.NotNil(t, j)
		return err
	}))
}
