package stack_test

import (
	"context"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/iot"
	"github.com/aws/aws-sdk-go-v2/service/iot/types"
	"github.com/stretchr/testify/require"

	"github.com/otaflow/otaflow/internal/rolloutclient"
	"github.com/otaflow/otaflow/internal/stack"
	"github.com/otaflow/otaflow/workflows/contract"
)

// TestTerminatedRolloutIsCleanedUp: a rollout terminated from outside otaflow (the Temporal
// UI's Terminate) cannot cancel its own job; the worker notices, cancels the job so no more
// devices start the update, deletes the wave groups, and the listing says TERMINATED.
func TestTerminatedRolloutIsCleanedUp(t *testing.T) {
	ctx := context.Background()
	s, err := stack.Start(ctx, stack.Options{DataDir: t.TempDir(), InMemoryTemporal: true, UIPort: -1, ReconcileEvery: 300 * time.Millisecond, Logger: testLogger()})
	require.NoError(t, err)
	defer s.Close()
	arns, err := s.StartDevices(ctx, 4, "1.10.2", time.Minute) // installs outlast the test
	require.NoError(t, err)
	req := request("terminated-1", arns)
	req.Waves = "2,100%"
	_, err = rolloutclient.Start(ctx, s.Client, contract.TaskQueue, req)
	require.NoError(t, err)
	res, err := rolloutclient.WaitForJob(ctx, s.Client, "terminated-1", contract.TaskQueue, time.Minute)
	require.NoError(t, err)
	require.NoError(t, s.Client.TerminateWorkflow(ctx, contract.RolloutWorkflowID("terminated-1"), "", "operator pressed Terminate"))

	require.Eventually(t, func() bool {
		d, err := s.IoT.DescribeJob(ctx, &iot.DescribeJobInput{JobId: aws.String(res.JobID)})
		return err == nil && d.Job.Status == types.JobStatusCanceled
	}, 30*time.Second, 100*time.Millisecond, "the terminated rollout's job is canceled")
	require.Eventually(t, func() bool {
		_, err := s.IoT.DescribeThingGroup(ctx, &iot.DescribeThingGroupInput{ThingGroupName: aws.String(contract.WaveGroup("terminated-1", 1))})
		return err != nil
	}, 30*time.Second, 100*time.Millisecond, "its wave groups are deleted")
	require.Eventually(t, func() bool { // the visibility store catches up
		rows, err := rolloutclient.List(ctx, s.Client, 10)
		return err == nil && len(rows) > 0 && rows[0].RolloutID == "terminated-1" && rows[0].State == "TERMINATED"
	}, 30*time.Second, 200*time.Millisecond, "the listing says TERMINATED")
}

// TestCancelAnswersOnceTheJobIsCanceled: when `rollout cancel` returns, the job is already
// canceled (no device can start the update any more) and the rollout says so; it does not
// stay RUNNING while the wave's poll notices.
func TestCancelAnswersOnceTheJobIsCanceled(t *testing.T) {
	ctx := context.Background()
	s, err := stack.Start(ctx, stack.Options{DataDir: t.TempDir(), InMemoryTemporal: true, UIPort: -1, Logger: testLogger()})
	require.NoError(t, err)
	defer s.Close()
	arns, err := s.StartDevices(ctx, 3, "1.10.2", time.Minute)
	require.NoError(t, err)
	_, err = rolloutclient.Start(ctx, s.Client, contract.TaskQueue, request("cancel-1", arns))
	require.NoError(t, err)
	res, err := rolloutclient.WaitForJob(ctx, s.Client, "cancel-1", contract.TaskQueue, time.Minute)
	require.NoError(t, err)
	require.Eventually(t, func() bool { // the wave's poll is under way
		st, err := rolloutclient.Status(ctx, s.Client, "cancel-1")
		return err == nil && st.State == contract.StateRunning && st.CurrentWave == 1
	}, 30*time.Second, 50*time.Millisecond)

	after, err := rolloutclient.Control(ctx, s.Client, "cancel-1", contract.UpdateCancel, contract.CancelRequest{Reason: "bad build"})
	require.NoError(t, err)
	require.Contains(t, []string{contract.StateCanceling, contract.StateCanceled}, after.State, "the cancel's answer says the rollout is ending")
	d, err := s.IoT.DescribeJob(ctx, &iot.DescribeJobInput{JobId: aws.String(res.JobID)})
	require.NoError(t, err)
	require.Equal(t, types.JobStatusCanceled, d.Job.Status, "the job is canceled when cancel returns")
	_, err = rolloutclient.Control(ctx, s.Client, "cancel-1", contract.UpdatePause)
	require.Error(t, err, "a canceling rollout cannot be paused")
}
