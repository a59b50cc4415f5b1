package localiot

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/otaflow/otaflow/internal/localiot/store"
)

// A database written before schema versions (store/testdata/jobs-v0.db) serves as before
// through the service: its jobs, executions and a CONTINUOUS job that still reaches a thing
// joining its group after the upgrade.
func TestServiceOnAnUpgradedDatabase(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("store", "testdata", "jobs-v0.db"))
	require.NoError(t, err)
	path := filepath.Join(t.TempDir(), "jobs.db")
	require.NoError(t, os.WriteFile(path, raw, 0o600))
	svc, err := Open(Options{Path: path, Logger: zerolog.Nop()})
	require.NoError(t, err)
	defer svc.Close()
	j, err := svc.DescribeJob("old-job")
	require.NoError(t, err)
	require.Equal(t, []string{"dev-1", "dev-2"}, j.Targets)
	e, err := svc.DescribeJobExecution("old-job", "dev-2")
	require.NoError(t, err)
	require.Equal(t, store.ExecQueued, e.Status)
	require.NoError(t, svc.AddThingToThingGroup("fleet", "dev-1"))
	_, err = svc.DescribeJobExecution("old-group-job", "dev-1")
	require.NoError(t, err)
}
