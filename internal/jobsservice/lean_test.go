package jobsservice

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// The production jobs-service binary must not link the Temporal server or its web UI (the
// starter does, for `starter dev`): it is what the jobs container runs. Nor does it link the
// workflow or activity code: the console and the Greengrass API talk to rollouts through
// their contract (workflows/contract) only.
func TestJobsServiceBinaryIsLean(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "../../jobs-service").CombinedOutput()
	require.NoError(t, err, "%s", out)
	deps := string(out)
	require.Contains(t, deps, "github.com/otaflow/otaflow/internal/localiot\n", "the list is the binary's dependencies")
	for _, heavy := range []string{"go.temporal.io/server/", "github.com/temporalio/ui-server", "modernc.org/sqlite"} {
		require.NotContains(t, deps, heavy, "jobs-service links %s", strings.TrimSuffix(heavy, "/"))
	}
	for _, pkg := range []string{"github.com/otaflow/otaflow/workflows", "github.com/otaflow/otaflow/activities", "go.temporal.io/sdk/workflow"} {
		require.NotContains(t, deps, pkg+"\n", "jobs-service links %s", pkg)
	}
}
