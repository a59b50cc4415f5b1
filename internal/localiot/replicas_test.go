package localiot

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/otaflow/otaflow/internal/localiot/store"
	"github.com/otaflow/otaflow/internal/pgtest"
)

// Two replicas' services on one PostgreSQL database sweep the same overdue executions: each is
// timed out once.
func TestReplicasSweepEachTimeoutOnce(t *testing.T) {
	url := pgtest.DB(t)
	a, err := store.OpenPostgres(url)
	require.NoError(t, err)
	defer a.Close()
	var wg sync.WaitGroup
	clock := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	now := func() time.Time { return clock }
	s1, err := Open(Options{PostgresURL: url, ArtifactDir: t.TempDir(), Logger: zerolog.Nop(), Now: now, SweepInterval: time.Hour})
	require.NoError(t, err)
	defer s1.Close()
	s2, err := Open(Options{PostgresURL: url, ArtifactDir: t.TempDir(), Logger: zerolog.Nop(), Now: now, SweepInterval: time.Hour})
	require.NoError(t, err)
	defer s2.Close()
	require.Equal(t, s1.presignKey, s2.presignKey, "replicas presign with one key")
	require.NoError(t, a.Update(func(tx store.Tx) error {
		if err := tx.PutJob(&store.Job{ID: "slow", Status: store.JobInProgress, Counts: store.ProcessDetails{InProgress: 50}}); err != nil {
			return err
		}
		for i := range 50 {
			if err := tx.PutExecution(&store.Execution{JobID: "slow", ThingName: fmt.Sprintf("d%02d", i), Status: store.ExecInProgress,
				Seq: uint64(i), InProgressDeadline: clock.Add(-time.Second)}); err != nil {
				return err
			}
		}
		return nil
	}))
	var n1, n2 int
	var e1, e2 error
	wg.Add(2)
	go func() { defer wg.Done(); n1, e1 = s1.sweepTimeouts(clock) }()
	go func() { defer wg.Done(); n2, e2 = s2.sweepTimeouts(clock) }()
	wg.Wait()
	require.NoError(t, e1)
	require.NoError(t, e2)
	require.Equal(t, 50, n1+n2, "every overdue execution timed out once, by one replica or the other")
	require.NoError(t, a.View(func(tx store.Tx) error {
		j, err := tx.Job("slow")
		require.Equal(t, 50, j.Counts.TimedOut)
		require.Equal(t, 0, j.Counts.InProgress)
		return err
	}))
}
