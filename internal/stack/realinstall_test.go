package stack_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/otaflow/otaflow/internal/agent/slots"
	"github.com/otaflow/otaflow/internal/rolloutclient"
	"github.com/otaflow/otaflow/internal/stack"
	"github.com/otaflow/otaflow/workflows/contract"
)

// TestRealInstallRollouts runs rollouts whose devices install for real, as `starter demo`
// does: a signed artifact published to the artifact store, downloaded through presigned
// URLs, verified, unpacked into slots, switched and health-checked. A device whose pre-update
// script fails, and one unhealthy on the new version, fail; with ROLLBACK every updated device
// is switched back to the version still in its slot.
func TestRealInstallRollouts(t *testing.T) {
	ctx := context.Background()
	dataDir := t.TempDir()
	s, err := stack.Start(ctx, stack.Options{DataDir: dataDir, InMemoryTemporal: true, UIPort: -1, Logger: testLogger()})
	require.NoError(t, err)
	defer s.Close()
	fleet, err := s.UseRealInstalls(ctx, "1.10.2", []string{stack.Device(8)})
	require.NoError(t, err)
	arns, err := s.StartDevices(ctx, 8, "1.10.2", 0)
	require.NoError(t, err)
	running := func(i int) string {
		root := filepath.Join(dataDir, "devices", stack.Device(i), "root", "core")
		out, err := exec.Command(filepath.Join(root, "current", "bin", "core")).Output()
		require.NoError(t, err)
		cur := slots.Slots{Root: root}.Current()
		require.Contains(t, string(out), cur, "the current slot holds what it says")
		return cur
	}

	// 1.11.6 to devices 1-7: all succeed.
	req := request("real-ok", arns[:7])
	req.Version = "1.11.6"
	req.Waves = "2,100%"
	rel, err := fleet.Publish(ctx, "1.11.6", stack.HealthCheck("1.11.6", nil))
	require.NoError(t, err)
	req.Artifact = rel.Artifact
	run, err := rolloutclient.Start(ctx, s.Client, contract.TaskQueue, req)
	require.NoError(t, err)
	res, err := rolloutclient.Result(ctx, run)
	require.NoError(t, err, res.Message)
	require.Equal(t, contract.StateSucceeded, res.State)
	for i := 1; i <= 7; i++ {
		require.Equal(t, "1.11.6", running(i))
	}
	require.Equal(t, "1.10.2", running(8), "not a target")
	downloads, _ := os.ReadDir(filepath.Join(dataDir, "devices", stack.Device(1), "root", "downloads"))
	require.Empty(t, downloads, "the download is removed once installed")

	// 1.12.0 to all 8: device 8's pre-update script fails, device 5 is unhealthy on 1.12.0;
	// the rollout aborts and rolls everyone back.
	req = request("real-rollback", arns)
	req.Version = "1.12.0"
	req.Waves = "3,100%"
	req.OnFailure = contract.OnFailureRollback
	rel, err = fleet.Publish(ctx, "1.12.0", stack.HealthCheck("1.12.0", []string{stack.Device(5)}))
	require.NoError(t, err)
	req.Artifact = rel.Artifact
	run, err = rolloutclient.Start(ctx, s.Client, contract.TaskQueue, req)
	require.NoError(t, err)
	res, err = rolloutclient.Result(ctx, run)
	require.Error(t, err)
	require.Equal(t, contract.StateAborted, res.State, res.Message)
	if res.Rollback == nil {
		e, _ := s.Jobs.DescribeJobExecution(contract.WaveJobID("real-rollback", 1), stack.Device(1))
		t.Fatalf("%s: %v", res.Message, e.StatusDetails)
	}
	require.Zero(t, res.Rollback.Failed, res.Rollback.Message)
	for i := 1; i <= 7; i++ {
		require.Equal(t, "1.11.6", running(i), "%s is back on 1.11.6", stack.Device(i))
	}
	require.Equal(t, "1.10.2", running(8))
	e, err := s.Jobs.DescribeJobExecution(contract.WaveJobID("real-rollback", 2), stack.Device(8))
	require.NoError(t, err)
	require.True(t, strings.Contains(e.StatusDetails["reason"], "would not stop"), e.StatusDetails["reason"])
	e, err = s.Jobs.DescribeJobExecution(contract.WaveJobID("real-rollback", 2), stack.Device(5))
	require.NoError(t, err)
	require.Contains(t, e.StatusDetails["reason"], "unhealthy on 1.12.0")
}
