package localiot

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/otaflow/otaflow/internal/iotjobs"
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

// Two replicas serve the same devices at the same time (no lock between them: each device
// request is one REPEATABLE READ transaction, run again when it loses a race). Every device
// asks both replicas at once to start its job and then reports SUCCEEDED to both at once:
// each execution starts once and succeeds once, no count is lost, and the job completes.
func TestReplicasServeOneFleetAtOnceExactlyOnce(t *testing.T) {
	url := pgtest.DB(t)
	open := func() *Service {
		s, err := Open(Options{PostgresURL: url, ArtifactDir: t.TempDir(), Logger: zerolog.Nop(), SweepInterval: 50 * time.Millisecond})
		require.NoError(t, err)
		t.Cleanup(func() { s.Close() })
		return s
	}
	replicas := []*Service{open(), open()}
	const devices = 300
	_, err := replicas[0].CreateThingGroup("fleet", "", GroupProperties{})
	require.NoError(t, err)
	for i := range devices {
		name := fmt.Sprintf("dev-%03d", i)
		_, err := replicas[i%2].CreateThing(name, nil)
		require.NoError(t, err)
		require.NoError(t, replicas[i%2].AddThingToThingGroup("fleet", name))
	}
	_, err = replicas[1].CreateJob(CreateJobInput{JobID: "update", Document: `{"v":2}`,
		Targets: []string{"arn:aws:iot:us-east-1:000000000000:thinggroup/fleet"}})
	require.NoError(t, err)

	var started, succeeded, refused [2]int64
	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	for i := range devices {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			thing := fmt.Sprintf("dev-%03d", i)
			var both sync.WaitGroup
			versions := [2]int64{}
			for r := range replicas {
				both.Add(1)
				go func() {
					defer both.Done()
					e, _, err := replicas[r].StartNext(thing, map[string]string{"replica": fmt.Sprint(r)}, 0)
					require.NoError(t, err)
					require.NotNil(t, e)
					require.Equal(t, store.ExecInProgress, e.Status)
					versions[r] = e.VersionNumber
					mu.Lock()
					started[r]++
					mu.Unlock()
				}()
			}
			both.Wait()
			require.Equal(t, versions[0], versions[1], "%s: both replicas answer the one execution started once", thing)
			require.EqualValues(t, 2, versions[0], "%s: started once (QUEUED at version 1, IN_PROGRESS at 2)", thing)
			for r := range replicas {
				both.Add(1)
				go func() {
					defer both.Done()
					_, _, err := replicas[r].UpdateExecution(UpdateInput{Thing: thing, JobID: "update", Status: store.ExecSucceeded, ExpectedVersion: versions[0]})
					mu.Lock()
					defer mu.Unlock()
					if err == nil {
						succeeded[r]++
						return
					}
					var e *Error
					require.ErrorAs(t, err, &e)
					require.Contains(t, []iotjobs.ErrorCode{CodeVersionMismatch, CodeInvalidStateTransition}, e.Code, "%s: %v", thing, err)
					refused[r]++
				}()
			}
			both.Wait()
		}()
	}
	wg.Wait()
	require.EqualValues(t, devices, succeeded[0]+succeeded[1], "each execution succeeded once")
	require.EqualValues(t, devices, refused[0]+refused[1], "the second report of each was refused")
	require.NotZero(t, succeeded[0], "both replicas served")
	require.NotZero(t, succeeded[1], "both replicas served")
	require.Eventually(t, func() bool {
		j, err := replicas[0].DescribeJob("update")
		require.NoError(t, err)
		return j.Status == store.JobCompleted
	}, 10*time.Second, 20*time.Millisecond, "the job completes")
	for _, r := range replicas {
		j, err := r.DescribeJob("update")
		require.NoError(t, err)
		require.Equal(t, store.ProcessDetails{Succeeded: devices}, j.Counts, "no count lost or doubled")
	}
	t.Logf("starts served %v, successes %v", started, succeeded)
}
