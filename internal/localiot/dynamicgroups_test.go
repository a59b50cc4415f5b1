package localiot_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/iot"
	"github.com/aws/aws-sdk-go-v2/service/iot/types"
	"github.com/stretchr/testify/require"

	"github.com/otaflow/otaflow/internal/localiot/store"
)

// TestDynamicThingGroupsThroughAWSSDK: a dynamic thing group holds the things its fleet index
// query matches, and follows them as they change; a CONTINUOUS job that targets it reaches a
// thing that comes to match, and a queued execution of a thing that stops matching is
// removed; its members are not changed by hand; it needs fleet indexing.
func TestDynamicThingGroupsThroughAWSSDK(t *testing.T) {
	ctx := context.Background()
	svc := openService(t, t.TempDir())
	defer svc.Close()
	c := iotClient(serve(t, svc), testCreds)

	_, err := c.CreateDynamicThingGroup(ctx, &iot.CreateDynamicThingGroupInput{ThingGroupName: aws.String("berlin"), QueryString: aws.String("attributes.site:berlin")})
	var invalid *types.InvalidRequestException
	require.ErrorAs(t, err, &invalid, "no fleet index yet")
	require.Contains(t, err.Error(), "fleet indexing")
	_, err = c.UpdateIndexingConfiguration(ctx, &iot.UpdateIndexingConfigurationInput{ThingIndexingConfiguration: &types.ThingIndexingConfiguration{
		ThingIndexingMode: types.ThingIndexingModeRegistry}})
	require.NoError(t, err)

	site := func(thing, s string) {
		t.Helper()
		_, err := c.UpdateThing(ctx, &iot.UpdateThingInput{ThingName: aws.String(thing), AttributePayload: &types.AttributePayload{Attributes: map[string]string{"site": s}}})
		require.NoError(t, err)
	}
	for _, th := range []string{"dev-1", "dev-2", "dev-3"} {
		_, err := c.CreateThing(ctx, &iot.CreateThingInput{ThingName: aws.String(th)})
		require.NoError(t, err)
	}
	site("dev-1", "berlin")
	site("dev-2", "paris")
	site("dev-3", "berlin")

	var badQuery *types.InvalidQueryException
	_, err = c.CreateDynamicThingGroup(ctx, &iot.CreateDynamicThingGroupInput{ThingGroupName: aws.String("bad"), QueryString: aws.String("attributes.site:(")})
	require.ErrorAs(t, err, &badQuery)
	created, err := c.CreateDynamicThingGroup(ctx, &iot.CreateDynamicThingGroupInput{ThingGroupName: aws.String("berlin"), QueryString: aws.String("attributes.site:berlin")})
	require.NoError(t, err)
	require.Equal(t, "AWS_Things", aws.ToString(created.IndexName))
	require.Equal(t, "2017-09-30", aws.ToString(created.QueryVersion))
	members := func() []string {
		out, err := c.ListThingsInThingGroup(ctx, &iot.ListThingsInThingGroupInput{ThingGroupName: aws.String("berlin")})
		require.NoError(t, err)
		slices.Sort(out.Things)
		return out.Things
	}
	require.Eventually(t, func() bool { return slices.Equal(members(), []string{"dev-1", "dev-3"}) }, 10*time.Second, 20*time.Millisecond, "members: %v", members())
	d, err := c.DescribeThingGroup(ctx, &iot.DescribeThingGroupInput{ThingGroupName: aws.String("berlin")})
	require.NoError(t, err)
	require.Equal(t, "attributes.site:berlin", aws.ToString(d.QueryString))
	require.Equal(t, types.DynamicGroupStatusActive, d.Status)

	_, err = c.AddThingToThingGroup(ctx, &iot.AddThingToThingGroupInput{ThingGroupName: aws.String("berlin"), ThingName: aws.String("dev-2")})
	require.ErrorAs(t, err, &invalid, "its query decides its members")
	_, err = c.DeleteThingGroup(ctx, &iot.DeleteThingGroupInput{ThingGroupName: aws.String("berlin")})
	require.ErrorAs(t, err, &invalid, "DeleteDynamicThingGroup deletes it")
	_, err = c.CreateThingGroup(ctx, &iot.CreateThingGroupInput{ThingGroupName: aws.String("child"), ParentGroupName: aws.String("berlin")})
	require.ErrorAs(t, err, &invalid, "a dynamic group has no children")

	// A CONTINUOUS job on the group follows its membership.
	_, err = c.CreateJob(ctx, &iot.CreateJobInput{JobId: aws.String("berlin-job"), Targets: []string{aws.ToString(created.ThingGroupArn)},
		Document: aws.String(`{"op":"x"}`), TargetSelection: types.TargetSelectionContinuous})
	require.NoError(t, err)
	status := func(thing string) store.ExecutionStatus {
		e, err := svc.DescribeJobExecution("berlin-job", thing)
		if err != nil {
			return ""
		}
		return e.Status
	}
	require.Equal(t, store.ExecQueued, status("dev-1"))
	require.Empty(t, status("dev-2"))
	site("dev-2", "berlin")
	require.Eventually(t, func() bool { return status("dev-2") == store.ExecQueued }, 10*time.Second, 20*time.Millisecond, "dev-2 came to match: the job reaches it")
	site("dev-1", "paris")
	require.Eventually(t, func() bool { return status("dev-1") == store.ExecRemoved }, 10*time.Second, 20*time.Millisecond, "dev-1 left: its queued execution is removed")
	require.Equal(t, []string{"dev-2", "dev-3"}, members())

	// A new query takes over the membership.
	v, err := c.UpdateDynamicThingGroup(ctx, &iot.UpdateDynamicThingGroupInput{ThingGroupName: aws.String("berlin"), QueryString: aws.String("attributes.site:paris"),
		ThingGroupProperties: &types.ThingGroupProperties{ThingGroupDescription: aws.String("now Paris")}})
	require.NoError(t, err)
	require.EqualValues(t, 2, v.Version)
	require.Eventually(t, func() bool { return slices.Equal(members(), []string{"dev-1"}) }, 10*time.Second, 20*time.Millisecond, "members: %v", members())

	_, err = c.DeleteDynamicThingGroup(ctx, &iot.DeleteDynamicThingGroupInput{ThingGroupName: aws.String("berlin")})
	require.NoError(t, err)
	_, err = c.DescribeThingGroup(ctx, &iot.DescribeThingGroupInput{ThingGroupName: aws.String("berlin")})
	var nf *types.ResourceNotFoundException
	require.ErrorAs(t, err, &nf)
	groups, err := c.ListThingGroupsForThing(ctx, &iot.ListThingGroupsForThingInput{ThingName: aws.String("dev-1")})
	require.NoError(t, err)
	require.Empty(t, groups.ThingGroups, "its things left it")
}
