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
	s1, err := Open(Options{PostgresURL: url, ArtifactDir: t.TempDir(), Logger: zerolog.Nop(), Now: now, TrustLocalClock: true, SweepInterval: time.Hour})
	require.NoError(t, err)
	defer s1.Close()
	s2, err := Open(Options{PostgresURL: url, ArtifactDir: t.TempDir(), Logger: zerolog.Nop(), Now: now, TrustLocalClock: true, SweepInterval: time.Hour})
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

// A replica whose clock runs six minutes ahead (real machines drift; NTP steps happen) decides
// time on the database's clock, so its sweep times out nothing early; it says its clock is off.
func TestReplicaWithASkewedClockUsesTheDatabasesClock(t *testing.T) {
	url := pgtest.DB(t)
	good, err := Open(Options{PostgresURL: url, ArtifactDir: t.TempDir(), Logger: zerolog.Nop(), SweepInterval: time.Hour})
	require.NoError(t, err)
	defer good.Close()
	ahead := func() time.Time { return time.Now().Add(6 * time.Minute) }
	skewed, err := Open(Options{PostgresURL: url, ArtifactDir: t.TempDir(), Logger: zerolog.Nop(), Now: ahead, SweepInterval: 20 * time.Millisecond})
	require.NoError(t, err)
	defer skewed.Close()

	require.InDelta(t, -6*time.Minute, skewed.ClockOffset(), float64(5*time.Second), "the offset to the database's clock")
	require.Contains(t, skewed.ClockProblem(), "6m0s ahead of the database's")
	require.Empty(t, good.ClockProblem())
	require.WithinDuration(t, time.Now(), skewed.Clock(), 5*time.Second, "the skewed replica's time is the database's")

	_, err = good.CreateThing("dev-1", nil)
	require.NoError(t, err)
	_, err = good.CreateJob(CreateJobInput{JobID: "j1", Document: `{"v":1}`, Targets: []string{good.ThingArn("dev-1")}, InProgressTimeoutMinutes: 1})
	require.NoError(t, err)
	e, _, err := good.StartNext("dev-1", nil, 0)
	require.NoError(t, err)
	require.Equal(t, store.ExecInProgress, e.Status)

	// The skewed replica sweeps every 20 ms: on its own clock the one-minute deadline passed
	// five minutes ago.
	time.Sleep(500 * time.Millisecond)
	e, err = good.DescribeJobExecution("j1", "dev-1")
	require.NoError(t, err)
	require.Equal(t, store.ExecInProgress, e.Status, "no replica times out an execution before its deadline")
}
