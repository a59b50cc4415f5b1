package stack_test

import (
	"context"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/iot"
	"github.com/stretchr/testify/require"
	enumspb "go.temporal.io/api/enums/v1"

	"github.com/otaflow/otaflow/internal/fleet"
	"github.com/otaflow/otaflow/internal/rolloutclient"
	"github.com/otaflow/otaflow/internal/stack"
	"github.com/otaflow/otaflow/workflows/contract"
)

// TestContinueAsNewWithMembershipChanging: Temporal suggests continue-as-new every few dozen
// events here, so a 3-wave rollout of a 120-device thing group runs through several runs.
// Between them the group changes: ten of its devices leave and ten new ones join. The
// rollout updates the devices it froze when it started, each exactly once, and none of the
// newcomers: no run resolves the group again.
func TestContinueAsNewWithMembershipChanging(t *testing.T) {
	ctx := context.Background()
	s, err := stack.Start(ctx, stack.Options{DataDir: t.TempDir(), InMemoryTemporal: true, UIPort: -1, Logger: testLogger(),
		TemporalDynamicConfig: map[string]any{"limit.historyCount.suggestContinueAsNew": 30}})
	require.NoError(t, err)
	defer s.Close()
	counter := newInstallCounter()
	opts := fleet.Options{InitialVersion: "1.0.0", InstallTime: 50 * time.Millisecond, OnStateChange: counter.observe}
	arns, err := s.StartFleet(ctx, 120, opts)
	require.NoError(t, err)
	g, err := s.IoT.CreateThingGroup(ctx, &iot.CreateThingGroupInput{ThingGroupName: aws.String("cohort")})
	require.NoError(t, err)
	for _, a := range arns {
		_, err := s.IoT.AddThingToThingGroup(ctx, &iot.AddThingToThingGroupInput{ThingGroupName: aws.String("cohort"), ThingArn: aws.String(a)})
		require.NoError(t, err)
	}

	req := faultRequest("continue-as-new", []string{aws.ToString(g.ThingGroupArn)}, 240)
	run, err := rolloutclient.Start(ctx, s.Client, contract.TaskQueue, req)
	require.NoError(t, err)
	first := run.GetRunID()
	require.Eventually(t, func() bool {
		d, err := s.Client.DescribeWorkflowExecution(ctx, run.GetID(), "")
		return err == nil && d.WorkflowExecutionInfo.Execution.RunId != first
	}, 2*time.Minute, 50*time.Millisecond, "the rollout continued as new")
	st, err := rolloutclient.Status(ctx, s.Client, "continue-as-new")
	require.NoError(t, err)
	require.NotEqual(t, contract.StateSucceeded, st.State, "the membership changes while the rollout runs")

	// Ten devices leave the group, ten new ones join it.
	for _, a := range arns[110:] {
		_, err := s.IoT.RemoveThingFromThingGroup(ctx, &iot.RemoveThingFromThingGroupInput{ThingGroupName: aws.String("cohort"), ThingArn: aws.String(a)})
		require.NoError(t, err)
	}
	newcomers, err := s.StartFleet(ctx, 10, opts)
	require.NoError(t, err)
	for _, a := range newcomers {
		_, err := s.IoT.AddThingToThingGroup(ctx, &iot.AddThingToThingGroupInput{ThingGroupName: aws.String("cohort"), ThingArn: aws.String(a)})
		require.NoError(t, err)
	}

	res, err := rolloutclient.Result(ctx, s.Client.GetWorkflow(ctx, run.GetID(), ""))
	require.NoError(t, err, res.Message)
	require.Equal(t, contract.StateSucceeded, res.State, res.Message)
	require.Len(t, res.Waves, 3)
	counter.requireExactlyOnce(t, 120, &res, func(th string) string { return agentVersion(s, th) })
	for i := 121; i <= 130; i++ {
		require.Equal(t, "1.0.0", agentVersion(s, stack.Device(i)), "newcomer %s is not in the frozen waves", stack.Device(i))
	}
	d, err := s.Client.DescribeWorkflowExecution(ctx, run.GetID(), first)
	require.NoError(t, err)
	require.Equal(t, enumspb.WORKFLOW_EXECUTION_STATUS_CONTINUED_AS_NEW, d.WorkflowExecutionInfo.Status)
}
