package workflows_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"

	"github.com/otaflow/otaflow/workflows"
	"github.com/otaflow/otaflow/workflows/contract"
)

func TestDeploymentSyncsRevisesAndReportsConflicts(t *testing.T) {
	var s testsuite.WorkflowTestSuite
	env := s.NewTestWorkflowEnvironment()
	// The activity runs on the test environment's own goroutines, and one
	// may still be running when the workflow is canceled: guard what it records.
	var mu sync.Mutex
	var syncs []contract.SyncInput
	env.RegisterActivityWithOptions(func(ctx context.Context, in contract.SyncInput) (*contract.SyncResult, error) {
		mu.Lock()
		syncs = append(syncs, in)
		first := len(syncs) == 1 || syncs[len(syncs)-2].Revision != in.Revision
		mu.Unlock()
		if in.Components["bad"] != "" {
			return nil, temporal.NewNonRetryableApplicationError("conflicting versions: bad", contract.ErrInvalidRequest, nil)
		}
		deployed := 0
		if first {
			deployed = 2 // the first sync of a revision reaches every member
		}
		return &contract.SyncResult{Members: 2, Deployed: deployed, JobID: "j", Resolved: map[string]string{"n": "1"}}, nil
	}, activity.RegisterOptions{Name: contract.ActivitySyncDeployment})

	status := func() contract.DeploymentStatus {
		v, err := env.QueryWorkflow(contract.QueryStatus)
		require.NoError(t, err)
		var st contract.DeploymentStatus
		require.NoError(t, v.Get(&st))
		return st
	}
	revise := func(id string, c map[string]string) {
		env.UpdateWorkflow(contract.UpdateRevise, id, &testsuite.TestUpdateCallback{
			OnReject: func(err error) { t.Errorf("revise rejected: %v", err) }, OnAccept: func() {}, OnComplete: func(any, error) {},
		}, c)
	}
	var seen []contract.DeploymentStatus
	var rejected error
	env.RegisterDelayedCallback(func() {
		seen = append(seen, status())
		revise("r2", map[string]string{"n": "2"})
		env.UpdateWorkflow(contract.UpdateRevise, "empty", &testsuite.TestUpdateCallback{
			OnReject: func(err error) { rejected = err }, OnAccept: func() {}, OnComplete: func(any, error) {},
		}, map[string]string{})
	}, 90*time.Second)
	env.RegisterDelayedCallback(func() {
		seen = append(seen, status())
		revise("r3", map[string]string{"bad": "1"})
	}, 150*time.Second)
	env.RegisterDelayedCallback(func() {
		seen = append(seen, status())
		env.CancelWorkflow()
	}, 210*time.Second)
	env.ExecuteWorkflow(workflows.Deployment, contract.DeploymentRequest{
		DeploymentID: "d", ThingGroup: "fleet", Components: map[string]string{"n": ""}, SyncInterval: time.Minute,
	})
	var canceled *temporal.CanceledError
	require.True(t, errors.As(env.GetWorkflowError(), &canceled), "%v", env.GetWorkflowError())

	require.Equal(t, 1, seen[0].Revision)
	require.Equal(t, 1, seen[0].Jobs)
	require.Equal(t, 2, seen[0].Members)
	require.Error(t, rejected, "a revision without components is refused")
	require.Equal(t, 2, seen[1].Revision)
	require.Equal(t, 2, seen[1].Jobs, "a revision deploys to every member again")
	require.Equal(t, 3, seen[2].Revision)
	require.Contains(t, seen[2].LastError, "conflicting versions")
	mu.Lock()
	defer mu.Unlock()
	revised := false
	for _, in := range syncs {
		require.Equal(t, "fleet", in.ThingGroup)
		if in.Revision == 2 {
			require.Equal(t, map[string]string{"n": "2"}, in.Components, "revision 2 syncs the revised components")
			revised = true
		}
	}
	require.True(t, revised, "revision 2 was synced")
}
