package localiot_test

import (
	"context"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/iot"
	"github.com/aws/aws-sdk-go-v2/service/iot/types"
	"github.com/stretchr/testify/require"
)

// Differences from AWS that #27 measured through real clients, now answered as AWS answers.
func TestAnswersAsAWSDoes(t *testing.T) {
	ctx := context.Background()
	svc := openService(t, t.TempDir())
	defer svc.Close()
	c := iotClient(serve(t, svc), testCreds)

	// A group created with properties is at version 1; created again with the same ones it is
	// answered, with other ones it is ResourceAlreadyExists.
	props := &types.ThingGroupProperties{ThingGroupDescription: aws.String("berlin site"),
		AttributePayload: &types.AttributePayload{Attributes: map[string]string{"site": "berlin"}}}
	_, err := c.CreateThingGroup(ctx, &iot.CreateThingGroupInput{ThingGroupName: aws.String("site"), ThingGroupProperties: props})
	require.NoError(t, err)
	g, err := c.DescribeThingGroup(ctx, &iot.DescribeThingGroupInput{ThingGroupName: aws.String("site")})
	require.NoError(t, err)
	require.EqualValues(t, 1, g.Version)
	require.Equal(t, "berlin site", aws.ToString(g.ThingGroupProperties.ThingGroupDescription))
	require.Equal(t, map[string]string{"site": "berlin"}, g.ThingGroupProperties.AttributePayload.Attributes)
	_, err = c.CreateThingGroup(ctx, &iot.CreateThingGroupInput{ThingGroupName: aws.String("site"), ThingGroupProperties: props})
	require.NoError(t, err, "the same group again")
	var exists *types.ResourceAlreadyExistsException
	_, err = c.CreateThingGroup(ctx, &iot.CreateThingGroupInput{ThingGroupName: aws.String("site"),
		ThingGroupProperties: &types.ThingGroupProperties{ThingGroupDescription: aws.String("munich site")}})
	require.ErrorAs(t, err, &exists, "the group with other properties")

	// An empty group lists [] (the SDK reads null as nil), a thing without attributes has {}.
	things, err := c.ListThingsInThingGroup(ctx, &iot.ListThingsInThingGroupInput{ThingGroupName: aws.String("site")})
	require.NoError(t, err)
	require.NotNil(t, things.Things)
	require.Empty(t, things.Things)
	_, err = c.CreateThing(ctx, &iot.CreateThingInput{ThingName: aws.String("dev-1")})
	require.NoError(t, err)
	th, err := c.DescribeThing(ctx, &iot.DescribeThingInput{ThingName: aws.String("dev-1")})
	require.NoError(t, err)
	require.NotNil(t, th.Attributes)
	list, err := c.ListThings(ctx, &iot.ListThingsInput{})
	require.NoError(t, err)
	require.NotNil(t, list.Things[0].Attributes)

	// DescribeJob says where a job's document came from.
	_, err = svc.PutArtifact("docs", "jobs/update.json", strings.NewReader(`{"operation":"from-s3"}`))
	require.NoError(t, err)
	src := "https://s3.amazonaws.com/docs/jobs/update.json"
	_, err = c.CreateJob(ctx, &iot.CreateJobInput{JobId: aws.String("j1"), Targets: []string{"dev-1"}, DocumentSource: aws.String(src),
		TimeoutConfig: &types.TimeoutConfig{InProgressTimeoutInMinutes: aws.Int64(10)}})
	require.NoError(t, err)
	j, err := c.DescribeJob(ctx, &iot.DescribeJobInput{JobId: aws.String("j1")})
	require.NoError(t, err)
	require.Equal(t, src, aws.ToString(j.DocumentSource))

	// A CONTINUOUS job may target things only (AWS documents no rule against it); it stays in
	// progress, as continuous jobs do.
	_, err = c.CreateJob(ctx, &iot.CreateJobInput{JobId: aws.String("c1"), Targets: []string{"dev-1"}, Document: aws.String(`{"v":1}`),
		TargetSelection: types.TargetSelectionContinuous})
	require.NoError(t, err)
	cj, err := c.DescribeJob(ctx, &iot.DescribeJobInput{JobId: aws.String("c1")})
	require.NoError(t, err)
	require.Equal(t, types.JobStatusInProgress, cj.Job.Status)

	// The control plane's DescribeJobExecution shows the time left while a timeout runs.
	_, _, err = svc.StartNext("dev-1", nil, 0)
	require.NoError(t, err)
	e, err := c.DescribeJobExecution(ctx, &iot.DescribeJobExecutionInput{JobId: aws.String("j1"), ThingName: aws.String("dev-1")})
	require.NoError(t, err)
	require.Equal(t, types.JobExecutionStatusInProgress, e.Execution.Status)
	require.InDelta(t, 600, aws.ToInt64(e.Execution.ApproximateSecondsBeforeTimedOut), 5)
}
