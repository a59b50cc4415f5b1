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
	"github.com/otaflow/otaflow/workflows/contract"
)

// TestWavesLargerThanAJobsTargets: under AWS IoT's quotas (enforced by default) a job takes
// at most 100 targets, yet a rollout's waves of 120 and 130 devices go through: each wave's
// devices are frozen in a static thing group that its job targets, and the groups are gone
// when the rollout ends. The quota itself answers through aws-sdk-go-v2.
func TestWavesLargerThanAJobsTargets(t *testing.T) {
	ctx := context.Background()
	s := startStack(t)
	arns, err := s.StartDevices(ctx, 250, "1.10.2", 0)
	require.NoError(t, err)

	_, err = s.IoT.CreateJob(ctx, &iot.CreateJobInput{JobId: aws.String("too-many"), Targets: arns[:101], Document: aws.String(`{}`)})
	var limit *types.LimitExceededException
	require.ErrorAs(t, err, &limit, "CreateJob takes at most 100 targets")

	req := request("big-waves", arns)
	req.Waves = "120,100%"
	req.Timeout = 5 * time.Minute
	run, err := rolloutclient.Start(ctx, s.Client, contract.TaskQueue, req)
	require.NoError(t, err)
	res, err := rolloutclient.Result(ctx, run)
	require.NoError(t, err, res.Message)
	require.Equal(t, contract.StateSucceeded, res.State)
	require.Equal(t, 250, res.Counts.Succeeded)
	require.Len(t, res.Waves, 2)
	require.Equal(t, 120, res.Waves[0].Devices)
	for _, w := range res.Waves {
		j, err := s.IoT.DescribeJob(ctx, &iot.DescribeJobInput{JobId: aws.String(w.JobID)})
		require.NoError(t, err)
		require.Equal(t, []string{w.GroupArn}, j.Job.Targets, "the wave's job targets its group")
		_, err = s.IoT.DescribeThingGroup(ctx, &iot.DescribeThingGroupInput{ThingGroupName: aws.String(w.Group)})
		var gone *types.ResourceNotFoundException
		require.ErrorAs(t, err, &gone, "group %s is deleted when the rollout ends", w.Group)
	}

	// One wave over a thing group of 150: its job targets the group as it is, with no group
	// of the rollout's own (no call per device).
	g, err := s.IoT.CreateThingGroup(ctx, &iot.CreateThingGroupInput{ThingGroupName: aws.String("fleet")})
	require.NoError(t, err)
	for _, a := range arns[:150] {
		_, err := s.IoT.AddThingToThingGroup(ctx, &iot.AddThingToThingGroupInput{ThingGroupName: aws.String("fleet"), ThingArn: aws.String(a)})
		require.NoError(t, err)
	}
	one := request("one-wave-group", []string{aws.ToString(g.ThingGroupArn)})
	setVersion(&one, "1.12.0")
	run, err = rolloutclient.Start(ctx, s.Client, contract.TaskQueue, one)
	require.NoError(t, err)
	res, err = rolloutclient.Result(ctx, run)
	require.NoError(t, err, res.Message)
	require.Equal(t, 150, res.Counts.Succeeded)
	j, err := s.IoT.DescribeJob(ctx, &iot.DescribeJobInput{JobId: aws.String(res.Waves[0].JobID)})
	require.NoError(t, err)
	require.Equal(t, []string{aws.ToString(g.ThingGroupArn)}, j.Job.Targets)
	require.Empty(t, res.Waves[0].Group)
}
