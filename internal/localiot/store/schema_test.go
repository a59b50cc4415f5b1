package store

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	bolt "go.etcd.io/bbolt"
)

// copyFixture copies a database from testdata so the test may change it.
func copyFixture(t *testing.T, name string) string {
	raw, err := os.ReadFile(filepath.Join("testdata", name))
	require.NoError(t, err)
	path := filepath.Join(t.TempDir(), "jobs.db")
	require.NoError(t, os.WriteFile(path, raw, 0o600))
	return path
}

// TestUpgradeFromSchema0 opens a database written by otaflow before schema versions (made
// with that code: testdata/jobs-v0.db, a job's targets inside its record) and finds everything
// there, in the current layout.
func TestUpgradeFromSchema0(t *testing.T) {
	path := copyFixture(t, "jobs-v0.db")
	check := func(st Store) {
		require.NoError(t, st.View(func(tx Tx) error {
			j, err := tx.JobWithTargets("old-job")
			require.NoError(t, err)
			require.Equal(t, []string{"dev-1", "dev-2"}, j.Targets)
			require.Equal(t, 2, j.Counts.Queued)
			e, err := tx.Execution("old-job", "dev-2")
			require.NoError(t, err)
			require.Equal(t, ExecQueued, e.Status)
			g, err := tx.JobWithTargets("old-group-job")
			require.NoError(t, err)
			require.Len(t, g.Targets, 1)
			// The CONTINUOUS job stays linked to its group, so a thing that joins later gets it.
			jobs, err := tx.ContinuousJobs(g.Targets[0][strings.LastIndex(g.Targets[0], "/")+1:])
			require.NoError(t, err)
			require.Contains(t, jobs, "old-group-job")
			return nil
		}))
		require.NoError(t, st.Close())
	}
	st, err := OpenBolt(path)
	require.NoError(t, err)
	check(st)

	db, err := bolt.Open(path, 0o600, nil)
	require.NoError(t, err)
	require.NoError(t, db.View(func(tx *bolt.Tx) error {
		require.Equal(t, seqBytes(schemaVersion), tx.Bucket(bucketMeta).Get(keySchemaVersion))
		require.NotContains(t, string(tx.Bucket(bucketJobs).Get([]byte("old-job"))), `"targets"`, "targets moved out of the job record")
		return nil
	}))
	require.NoError(t, db.Close())

	// Opening it again is a no-op.
	st, err = OpenBolt(path)
	require.NoError(t, err)
	check(st)
}

// TestNewerSchemaIsRefused: a database from a newer otaflow is not read (nor changed).
func TestNewerSchemaIsRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "jobs.db")
	st, err := OpenBolt(path)
	require.NoError(t, err)
	require.NoError(t, st.Close())
	db, err := bolt.Open(path, 0o600, nil)
	require.NoError(t, err)
	require.NoError(t, db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Put(keySchemaVersion, seqBytes(schemaVersion+1)) }))
	require.NoError(t, db.Close())
	_, err = OpenBolt(path)
	require.ErrorContains(t, err, "written by a newer otaflow")
}
