package store

import (
	"encoding/json"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	bolt "go.etcd.io/bbolt"
)

// fullJob sets every member of a job the way the service does (times from its UTC clock).
func fullJob(id string) *Job {
	now := time.Date(2026, 12, 5, 20, 0, 0, 123_000_000, time.UTC)
	return &Job{
		ID: id, Arn: "arn:aws:iot:us-east-1:123456789012:job/" + id, Document: `{"operation":"update","version":"2.0.0","note":"<&> é"}`,
		DocumentSource: "https://s3/doc.json", Description: "d", Targets: []string{"arn:t"}, TargetSelection: "SNAPSHOT",
		Status: JobInProgress, ForceCanceled: true, Comment: "c", ReasonCode: "r", CreatedAt: now, LastUpdatedAt: now.Add(time.Second),
		CompletedAt: now.Add(time.Minute), Counts: ProcessDetails{Queued: 3, Succeeded: 1}, TargetGroups: []string{"g1", "g2"},
		InProgressTimeout: time.Hour, Retry: []RetryCriteria{{FailureType: "FAILED", NumberOfRetries: 2}},
		Presign: &PresignConfig{RoleArn: "arn:role", ExpiresInSec: 3600}, MaxPerMinute: 10, RateWindow: now, RateReleased: 4,
		HeldCount: 2, Abort: []AbortCriteria{{FailureType: "FAILED", Action: "CANCEL", ThresholdPercentage: 12.5, MinNumberOfExecutedThings: 10}},
		Scheduling: &Scheduling{StartTime: "2026-12-05T20:00", EndBehavior: "CANCEL", MaintenanceWindows: []MaintenanceWindow{{StartTime: "cron(0 0 * * ? *)", DurationInMinutes: 60}},
			Start: now, End: now.Add(time.Hour), Ended: true},
		Exponential: &ExponentialRate{BaseRatePerMinute: 5, IncrementFactor: 1.5},
		Ramp:        RampState{Rate: 5, Notified: 7},
	}
}

// TestJobCacheServesWhatTheBytesSay: every job read, cached or not, is what its stored bytes
// decode to; a caller's changes to a job it read never reach the next reader; a rolled-back
// write is never served.
func TestJobCacheServesWhatTheBytesSay(t *testing.T) {
	verify := verifyJobCache
	verifyJobCache = true // every hit is checked against a decode, and panics if it differs
	t.Cleanup(func() { verifyJobCache = verify })

	s, err := OpenBolt(filepath.Join(t.TempDir(), "jobs.db"))
	require.NoError(t, err)
	defer s.Close()
	// decoded is what the stored bytes say, read past the cache.
	decoded := func(id string) *Job {
		var j Job
		require.NoError(t, s.db.View(func(tx *bolt.Tx) error {
			return json.Unmarshal(tx.Bucket(bucketJobs).Get(nameKey(id)), &j)
		}))
		return &j
	}
	read := func(id string) *Job {
		var j *Job
		require.NoError(t, s.View(func(tx Tx) (err error) { j, err = tx.Job(id); return err }))
		return j
	}

	j := fullJob("full")
	require.True(t, j.roundTrips(), "the service's jobs are cached from the write")
	require.NoError(t, s.Update(func(tx Tx) error { return tx.PutJob(j) }))
	require.Contains(t, s.jobs.jobs, "full", "the write filled the cache")
	got := read("full")
	require.Equal(t, decoded("full"), got)
	require.Nil(t, got.Targets, "targets are stored apart, never in the job's record")

	// The reader's changes stay its own.
	got.TargetGroups[0], got.Retry[0].NumberOfRetries, got.Abort[0].Action = "x", 9, "x"
	got.Presign.RoleArn, got.Scheduling.MaintenanceWindows[0].DurationInMinutes, got.Exponential.BaseRatePerMinute = "x", 9, 9
	got.Scheduling.Ended, got.Counts.Queued = false, 99
	require.Equal(t, decoded("full"), read("full"))

	// A write that rolls back leaves the cache holding bytes the store does not: it decodes.
	boom := errors.New("boom")
	require.ErrorIs(t, s.Update(func(tx Tx) error {
		j2 := read("full")
		j2.Counts.Queued = 1000
		if err := tx.PutJob(j2); err != nil {
			return err
		}
		in, err := tx.Job("full")
		require.NoError(t, err)
		require.Equal(t, 1000, in.Counts.Queued, "the transaction reads its own write")
		return boom
	}), boom)
	require.Equal(t, 3, read("full").Counts.Queued)
	require.Equal(t, decoded("full"), read("full"))

	// Jobs that would not come back the same from JSON are stored but not cached from the
	// write: a local, monotonic time; an empty, non-nil slice omitempty drops; bad UTF-8.
	odd := []*Job{
		{ID: "local", CreatedAt: time.Now()},
		{ID: "empty", TargetGroups: []string{}},
		{ID: "utf8", Document: "\xff"},
		{ID: "window", Scheduling: &Scheduling{MaintenanceWindows: []MaintenanceWindow{}}},
	}
	for _, o := range odd {
		require.False(t, o.roundTrips(), o.ID)
		require.NoError(t, s.Update(func(tx Tx) error { return tx.PutJob(o) }))
		require.Equal(t, decoded(o.ID), read(o.ID), o.ID)
		require.Equal(t, decoded(o.ID), read(o.ID), o.ID+", from the cache")
	}

	// A deleted job is gone whatever the cache holds.
	require.NoError(t, s.Update(func(tx Tx) error { return tx.DeleteJob("full") }))
	require.Nil(t, read("full"))
}
