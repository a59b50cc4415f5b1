package localiot_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/iot"
	"github.com/aws/aws-sdk-go-v2/service/iot/types"
	"github.com/stretchr/testify/require"
)

// TestControlPlaneMatchesTheServiceModel drives every REST operation the jobs service serves
// through aws-sdk-go-v2 (successes and AWS's errors), and checks every answer against the AWS
// IoT service model: a member AWS does not define, or of another type, fails it.
func TestControlPlaneMatchesTheServiceModel(t *testing.T) {
	ctx := context.Background()
	model := loadIoTModel(t)
	svc, clock := openWithClock(t)
	url, rec := serveRecorded(t, svc)
	svc.SetBaseURL(url)
	c := iotClient(url, testCreds)
	var notFound *types.ResourceNotFoundException
	var invalid *types.InvalidRequestException
	var conflict *types.VersionConflictException

	// Things, attributes and their filters.
	for _, n := range []string{"dev-1", "dev-2", "dev-3"} {
		_, err := c.CreateThing(ctx, &iot.CreateThingInput{ThingName: aws.String(n),
			AttributePayload: &types.AttributePayload{Attributes: map[string]string{"model": "m1", "site": "berlin-" + n}}})
		require.NoError(t, err)
	}
	_, err := c.CreateThing(ctx, &iot.CreateThingInput{ThingName: aws.String("typed"), ThingTypeName: aws.String("gateway")})
	require.ErrorAs(t, err, &notFound, "a thing type that does not exist")
	_, err = c.UpdateThing(ctx, &iot.UpdateThingInput{ThingName: aws.String("dev-1"), ExpectedVersion: aws.Int64(1),
		AttributePayload: &types.AttributePayload{Attributes: map[string]string{"model": "m2", "site": ""}, Merge: true}})
	require.NoError(t, err)
	_, err = c.UpdateThing(ctx, &iot.UpdateThingInput{ThingName: aws.String("dev-1"), ExpectedVersion: aws.Int64(1),
		AttributePayload: &types.AttributePayload{Attributes: map[string]string{"model": "m3"}}})
	require.ErrorAs(t, err, &conflict, "a stale expectedVersion")
	th, err := c.DescribeThing(ctx, &iot.DescribeThingInput{ThingName: aws.String("dev-1")})
	require.NoError(t, err)
	require.Equal(t, map[string]string{"model": "m2"}, th.Attributes, "merged; an empty value removes")
	require.EqualValues(t, 2, th.Version)
	names := func(in *iot.ListThingsInput) []string {
		out, err := c.ListThings(ctx, in)
		require.NoError(t, err)
		var n []string
		for _, th := range out.Things {
			n = append(n, aws.ToString(th.ThingName))
		}
		return n
	}
	require.Equal(t, []string{"dev-2", "dev-3"}, names(&iot.ListThingsInput{AttributeName: aws.String("model"), AttributeValue: aws.String("m1")}))
	require.Equal(t, []string{"dev-2", "dev-3"}, names(&iot.ListThingsInput{AttributeName: aws.String("site"), AttributeValue: aws.String("berlin"), UsePrefixAttributeValue: true}))
	require.Empty(t, names(&iot.ListThingsInput{ThingTypeName: aws.String("gateway")}), "a type filter never matches everything")

	// Thing types: a thing takes one, the filter finds it, a deprecated type takes no new thing,
	// and a type in use cannot be deleted.
	_, err = c.CreateThingType(ctx, &iot.CreateThingTypeInput{ThingTypeName: aws.String("gateway"),
		ThingTypeProperties: &types.ThingTypeProperties{ThingTypeDescription: aws.String("edge gateways"), SearchableAttributes: []string{"model"}}})
	require.NoError(t, err)
	_, err = c.CreateThing(ctx, &iot.CreateThingInput{ThingName: aws.String("gw-1"), ThingTypeName: aws.String("gateway")})
	require.NoError(t, err)
	require.Equal(t, []string{"gw-1"}, names(&iot.ListThingsInput{ThingTypeName: aws.String("gateway")}))
	gw, err := c.DescribeThing(ctx, &iot.DescribeThingInput{ThingName: aws.String("gw-1")})
	require.NoError(t, err)
	require.Equal(t, "gateway", aws.ToString(gw.ThingTypeName))
	tt, err := c.DescribeThingType(ctx, &iot.DescribeThingTypeInput{ThingTypeName: aws.String("gateway")})
	require.NoError(t, err)
	require.Equal(t, "edge gateways", aws.ToString(tt.ThingTypeProperties.ThingTypeDescription))
	ltt, err := c.ListThingTypes(ctx, &iot.ListThingTypesInput{})
	require.NoError(t, err)
	require.Len(t, ltt.ThingTypes, 1)
	_, err = c.DeprecateThingType(ctx, &iot.DeprecateThingTypeInput{ThingTypeName: aws.String("gateway")})
	require.NoError(t, err)
	_, err = c.CreateThing(ctx, &iot.CreateThingInput{ThingName: aws.String("gw-2"), ThingTypeName: aws.String("gateway")})
	require.ErrorAs(t, err, &invalid, "a deprecated type takes no new thing")
	_, err = c.DeleteThingType(ctx, &iot.DeleteThingTypeInput{ThingTypeName: aws.String("gateway")})
	require.ErrorAs(t, err, &invalid, "a type still in use")
	_, err = c.UpdateThing(ctx, &iot.UpdateThingInput{ThingName: aws.String("gw-1"), RemoveThingType: true})
	require.NoError(t, err)
	_, err = c.DeleteThingType(ctx, &iot.DeleteThingTypeInput{ThingTypeName: aws.String("gateway")})
	require.ErrorAs(t, err, &invalid, "AWS deletes a type only five minutes after its deprecation")
	require.ErrorContains(t, err, "try again after")
	clock.Advance(5 * time.Minute)
	_, err = c.DeleteThingType(ctx, &iot.DeleteThingTypeInput{ThingTypeName: aws.String("gateway")})
	require.NoError(t, err)
	_, err = c.DeleteThing(ctx, &iot.DeleteThingInput{ThingName: aws.String("gw-1")})
	require.NoError(t, err)

	// Groups.
	for _, g := range []struct{ name, parent string }{{"fleet", ""}, {"eu", "fleet"}, {"berlin", "eu"}, {"lab", ""}} {
		in := &iot.CreateThingGroupInput{ThingGroupName: aws.String(g.name)}
		if g.parent != "" {
			in.ParentGroupName = aws.String(g.parent)
		}
		_, err := c.CreateThingGroup(ctx, in)
		require.NoError(t, err)
	}
	_, err = c.AddThingToThingGroup(ctx, &iot.AddThingToThingGroupInput{ThingGroupName: aws.String("berlin"), ThingName: aws.String("dev-1")})
	require.NoError(t, err)
	_, err = c.UpdateThingGroupsForThing(ctx, &iot.UpdateThingGroupsForThingInput{ThingName: aws.String("dev-1"),
		ThingGroupsToAdd: []string{"lab"}, ThingGroupsToRemove: []string{"berlin"}})
	require.NoError(t, err)
	_, err = c.UpdateThingGroupsForThing(ctx, &iot.UpdateThingGroupsForThingInput{ThingName: aws.String("dev-1"), ThingGroupsToAdd: []string{"nope"}})
	require.ErrorAs(t, err, &notFound)
	fg, err := c.ListThingGroupsForThing(ctx, &iot.ListThingGroupsForThingInput{ThingName: aws.String("dev-1")})
	require.NoError(t, err)
	require.Len(t, fg.ThingGroups, 1)
	require.Equal(t, "lab", aws.ToString(fg.ThingGroups[0].GroupName))
	groups := func(in *iot.ListThingGroupsInput) []string {
		out, err := c.ListThingGroups(ctx, in)
		require.NoError(t, err)
		var n []string
		for _, g := range out.ThingGroups {
			n = append(n, aws.ToString(g.GroupName))
		}
		return n
	}
	require.Equal(t, []string{"berlin", "eu", "fleet", "lab"}, groups(&iot.ListThingGroupsInput{}))
	require.Equal(t, []string{"eu"}, groups(&iot.ListThingGroupsInput{ParentGroup: aws.String("fleet")}))
	require.Equal(t, []string{"berlin", "eu"}, groups(&iot.ListThingGroupsInput{ParentGroup: aws.String("fleet"), Recursive: aws.Bool(true)}))
	require.Equal(t, []string{"berlin"}, groups(&iot.ListThingGroupsInput{NamePrefixFilter: aws.String("be")}))
	// recursive false without a parent: "return child groups as well" only if true, so the roots.
	require.Equal(t, []string{"fleet", "lab"}, groups(&iot.ListThingGroupsInput{Recursive: aws.Bool(false)}))
	require.Equal(t, []string{"berlin", "eu", "fleet", "lab"}, groups(&iot.ListThingGroupsInput{Recursive: aws.Bool(true)}))
	ug, err := c.UpdateThingGroup(ctx, &iot.UpdateThingGroupInput{ThingGroupName: aws.String("berlin"), ExpectedVersion: aws.Int64(1),
		ThingGroupProperties: &types.ThingGroupProperties{ThingGroupDescription: aws.String("the Berlin lab"),
			AttributePayload: &types.AttributePayload{Attributes: map[string]string{"site": "ber"}}}})
	require.NoError(t, err)
	require.EqualValues(t, 2, ug.Version)
	_, err = c.UpdateThingGroup(ctx, &iot.UpdateThingGroupInput{ThingGroupName: aws.String("berlin"), ExpectedVersion: aws.Int64(1),
		ThingGroupProperties: &types.ThingGroupProperties{ThingGroupDescription: aws.String("stale")}})
	require.ErrorAs(t, err, &conflict)
	dg, err := c.DescribeThingGroup(ctx, &iot.DescribeThingGroupInput{ThingGroupName: aws.String("berlin")})
	require.NoError(t, err)
	require.Equal(t, "the Berlin lab", aws.ToString(dg.ThingGroupProperties.ThingGroupDescription))
	require.Equal(t, map[string]string{"site": "ber"}, dg.ThingGroupProperties.AttributePayload.Attributes)
	require.Len(t, dg.ThingGroupMetadata.RootToParentThingGroups, 2)
	require.Equal(t, "fleet", aws.ToString(dg.ThingGroupMetadata.RootToParentThingGroups[0].GroupName), "root first")
	require.Equal(t, "eu", aws.ToString(dg.ThingGroupMetadata.RootToParentThingGroups[1].GroupName))
	_, err = c.ListThingsInThingGroup(ctx, &iot.ListThingsInThingGroupInput{ThingGroupName: aws.String("fleet"), Recursive: true})
	require.NoError(t, err)

	// Jobs.
	_, err = c.CreateJob(ctx, &iot.CreateJobInput{JobId: aws.String("job-1"), Targets: []string{aws.ToString(th.ThingArn)},
		Document: aws.String(`{"operation":"update"}`), Description: aws.String("first")})
	require.NoError(t, err)
	_, err = c.CreateJob(ctx, &iot.CreateJobInput{JobId: aws.String("job-2"), Targets: []string{aws.ToString(dg.ThingGroupArn)},
		Document: aws.String(`{}`), TargetSelection: types.TargetSelectionContinuous})
	require.NoError(t, err)
	_, err = c.CreateJob(ctx, &iot.CreateJobInput{JobId: aws.String("job-2030"), Targets: []string{aws.ToString(th.ThingArn)}, Document: aws.String(`{}`),
		SchedulingConfig: &types.SchedulingConfig{StartTime: aws.String("2030-01-01T00:00")}})
	require.ErrorAs(t, err, &invalid, "a schedule is refused, not ignored (the job would start now)")
	// Targets join a continuous job; a snapshot job refuses them.
	at, err := c.AssociateTargetsWithJob(ctx, &iot.AssociateTargetsWithJobInput{JobId: aws.String("job-2"), Targets: []string{"arn:aws:iot:us-east-1:000000000000:thing/dev-2"}, Comment: aws.String("one more")})
	require.NoError(t, err)
	require.Equal(t, "job-2", aws.ToString(at.JobId))
	_, err = c.DescribeJobExecution(ctx, &iot.DescribeJobExecutionInput{JobId: aws.String("job-2"), ThingName: aws.String("dev-2")})
	require.NoError(t, err, "the associated thing has its execution")
	_, err = c.AssociateTargetsWithJob(ctx, &iot.AssociateTargetsWithJobInput{JobId: aws.String("job-1"), Targets: []string{"arn:aws:iot:us-east-1:000000000000:thing/dev-2"}})
	require.ErrorAs(t, err, &invalid, "a snapshot job takes no more targets")
	// Job templates: from a job, from a document; a job made from a template.
	_, err = c.CreateJobTemplate(ctx, &iot.CreateJobTemplateInput{JobTemplateId: aws.String("tpl-1"), JobArn: aws.String("job-1"), Description: aws.String("as job-1")})
	require.NoError(t, err)
	_, err = c.CreateJobTemplate(ctx, &iot.CreateJobTemplateInput{JobTemplateId: aws.String("tpl-2"), Document: aws.String(`{"operation":"tpl"}`),
		Description: aws.String("nightly"), TimeoutConfig: &types.TimeoutConfig{InProgressTimeoutInMinutes: aws.Int64(30)}})
	require.NoError(t, err)
	_, err = c.CreateJobTemplate(ctx, &iot.CreateJobTemplateInput{JobTemplateId: aws.String("tpl-1"), Document: aws.String(`{}`), Description: aws.String("again")})
	var exists *types.ConflictException
	require.ErrorAs(t, err, &exists, "a template ID is used once")
	tpl, err := c.DescribeJobTemplate(ctx, &iot.DescribeJobTemplateInput{JobTemplateId: aws.String("tpl-1")})
	require.NoError(t, err)
	require.Equal(t, `{"operation":"update"}`, aws.ToString(tpl.Document))
	lt, err := c.ListJobTemplates(ctx, &iot.ListJobTemplatesInput{})
	require.NoError(t, err)
	require.Len(t, lt.JobTemplates, 2)
	tplOut, err := c.CreateJob(ctx, &iot.CreateJobInput{JobId: aws.String("from-tpl"), Targets: []string{"dev-3"},
		JobTemplateArn: aws.String("arn:aws:iot:us-east-1:000000000000:jobtemplate/tpl-2")})
	require.NoError(t, err)
	ft, err := c.DescribeJob(ctx, &iot.DescribeJobInput{JobId: tplOut.JobId})
	require.NoError(t, err)
	require.Equal(t, "nightly", aws.ToString(ft.Job.Description))
	require.EqualValues(t, 30, aws.ToInt64(ft.Job.TimeoutConfig.InProgressTimeoutInMinutes))
	_, err = c.DeleteJobTemplate(ctx, &iot.DeleteJobTemplateInput{JobTemplateId: aws.String("tpl-2")})
	require.NoError(t, err)
	_, err = c.DescribeJobTemplate(ctx, &iot.DescribeJobTemplateInput{JobTemplateId: aws.String("tpl-2")})
	require.ErrorAs(t, err, &notFound)
	doc, err := c.GetJobDocument(ctx, &iot.GetJobDocumentInput{JobId: aws.String("job-1")})
	require.NoError(t, err)
	require.Equal(t, `{"operation":"update"}`, aws.ToString(doc.Document))
	_, err = c.UpdateJob(ctx, &iot.UpdateJobInput{JobId: aws.String("job-1"), Description: aws.String("second"),
		JobExecutionsRolloutConfig: &types.JobExecutionsRolloutConfig{MaximumPerMinute: aws.Int32(50)}})
	require.NoError(t, err)
	_, err = c.UpdateJob(ctx, &iot.UpdateJobInput{JobId: aws.String("job-1"), AbortConfig: &types.AbortConfig{CriteriaList: []types.AbortCriteria{{
		Action: types.AbortActionCancel, FailureType: types.JobExecutionFailureTypeFailed, MinNumberOfExecutedThings: aws.Int32(1), ThresholdPercentage: aws.Float64(10)}}}})
	require.NoError(t, err, "UpdateJob sets an abortConfig")
	d, err := c.DescribeJob(ctx, &iot.DescribeJobInput{JobId: aws.String("job-1")})
	require.NoError(t, err)
	require.Len(t, d.Job.AbortConfig.CriteriaList, 1)
	require.Equal(t, "second", aws.ToString(d.Job.Description))
	require.EqualValues(t, 50, aws.ToInt32(d.Job.JobExecutionsRolloutConfig.MaximumPerMinute))
	jobs := func(in *iot.ListJobsInput) []string {
		out, err := c.ListJobs(ctx, in)
		require.NoError(t, err)
		var n []string
		for _, j := range out.Jobs {
			n = append(n, aws.ToString(j.JobId))
		}
		return n
	}
	require.Equal(t, []string{"job-2"}, jobs(&iot.ListJobsInput{ThingGroupId: dg.ThingGroupId}), "the thingGroupId filter")
	require.Equal(t, []string{"job-2"}, jobs(&iot.ListJobsInput{TargetSelection: types.TargetSelectionContinuous}))
	_, err = c.ListJobs(ctx, &iot.ListJobsInput{Status: types.JobStatus("RUNNING")})
	require.ErrorAs(t, err, &invalid, "an enum value AWS does not have")
	_, err = c.ListJobExecutionsForThing(ctx, &iot.ListJobExecutionsForThingInput{ThingName: aws.String("dev-1"), Status: types.JobExecutionStatus("DONE")})
	require.ErrorAs(t, err, &invalid)
	fe, err := c.ListJobExecutionsForThing(ctx, &iot.ListJobExecutionsForThingInput{ThingName: aws.String("dev-1"), JobId: aws.String("job-1")})
	require.NoError(t, err)
	require.Len(t, fe.ExecutionSummaries, 1)
	_, err = c.ListJobExecutionsForJob(ctx, &iot.ListJobExecutionsForJobInput{JobId: aws.String("job-1")})
	require.NoError(t, err)
	_, err = c.DescribeJobExecution(ctx, &iot.DescribeJobExecutionInput{JobId: aws.String("job-1"), ThingName: aws.String("dev-1")})
	require.NoError(t, err)

	// An execution in flight is deleted only with force.
	_, err = c.DeleteJobExecution(ctx, &iot.DeleteJobExecutionInput{JobId: aws.String("job-1"), ThingName: aws.String("dev-1"), ExecutionNumber: aws.Int64(1)})
	var state *types.InvalidStateTransitionException
	require.ErrorAs(t, err, &state)
	_, err = c.DeleteJobExecution(ctx, &iot.DeleteJobExecutionInput{JobId: aws.String("job-1"), ThingName: aws.String("dev-1"), ExecutionNumber: aws.Int64(1), Force: true})
	require.NoError(t, err)
	_, err = c.DescribeJobExecution(ctx, &iot.DescribeJobExecutionInput{JobId: aws.String("job-1"), ThingName: aws.String("dev-1")})
	require.ErrorAs(t, err, &notFound)

	ep, err := c.DescribeEndpoint(ctx, &iot.DescribeEndpointInput{EndpointType: aws.String("iot:Data-ATS")})
	require.NoError(t, err)
	require.NotEmpty(t, aws.ToString(ep.EndpointAddress))
	_, err = c.DescribeEndpoint(ctx, &iot.DescribeEndpointInput{EndpointType: aws.String("iot:Nope")})
	require.ErrorAs(t, err, &invalid)

	// An operation this service does not serve answers as AWS answers an unknown one.
	_, err = c.ListPolicies(ctx, &iot.ListPoliciesInput{})
	require.Error(t, err)
	require.Contains(t, err.Error(), "UnknownOperationException")

	_, err = c.CancelJob(ctx, &iot.CancelJobInput{JobId: aws.String("job-2")})
	require.NoError(t, err)
	_, err = c.DeleteJob(ctx, &iot.DeleteJobInput{JobId: aws.String("job-2"), Force: true})
	require.NoError(t, err)
	_, err = c.RemoveThingFromThingGroup(ctx, &iot.RemoveThingFromThingGroupInput{ThingGroupName: aws.String("lab"), ThingName: aws.String("dev-1")})
	require.NoError(t, err)
	_, err = c.DeleteThingGroup(ctx, &iot.DeleteThingGroupInput{ThingGroupName: aws.String("lab")})
	require.NoError(t, err)
	_, err = c.DeleteThing(ctx, &iot.DeleteThingInput{ThingName: aws.String("dev-3")})
	require.NoError(t, err)

	served := rec.checkAgainstModel(t, model)
	t.Logf("operations checked against the service model: %v", served)
	require.Subset(t, served, []string{"CreateThing", "DescribeThing", "UpdateThing", "ListThings", "DeleteThing", "CreateThingGroup",
		"DescribeThingGroup", "UpdateThingGroup", "ListThingGroups", "ListThingGroupsForThing", "UpdateThingGroupsForThing", "AddThingToThingGroup",
		"RemoveThingFromThingGroup", "ListThingsInThingGroup", "DeleteThingGroup", "CreateJob", "DescribeJob", "UpdateJob",
		"GetJobDocument", "AssociateTargetsWithJob", "ListJobs", "CancelJob", "DeleteJob", "ListJobExecutionsForJob", "ListJobExecutionsForThing",
		"DescribeJobExecution", "DeleteJobExecution", "DescribeEndpoint", "CreateThingType", "DescribeThingType", "ListThingTypes",
		"DeprecateThingType", "DeleteThingType", "CreateJobTemplate", "DescribeJobTemplate", "ListJobTemplates", "DeleteJobTemplate"})
}

// A job document can come from the artifact store, as AWS reads documentSource from S3.
func TestJobDocumentFromSource(t *testing.T) {
	ctx := context.Background()
	svc := openService(t, t.TempDir())
	defer svc.Close()
	c := iotClient(serve(t, svc), testCreds)
	_, err := svc.CreateThing("dev-1", nil)
	require.NoError(t, err)
	_, err = svc.PutArtifact("docs", "jobs/update.json", strings.NewReader(`{"operation":"from-s3"}`))
	require.NoError(t, err)
	_, err = c.CreateJob(ctx, &iot.CreateJobInput{JobId: aws.String("src-1"), Targets: []string{"dev-1"},
		DocumentSource: aws.String("https://s3.amazonaws.com/docs/jobs/update.json")})
	require.NoError(t, err)
	doc, err := c.GetJobDocument(ctx, &iot.GetJobDocumentInput{JobId: aws.String("src-1")})
	require.NoError(t, err)
	require.Equal(t, `{"operation":"from-s3"}`, aws.ToString(doc.Document))
	var invalid *types.InvalidRequestException
	_, err = c.CreateJob(ctx, &iot.CreateJobInput{JobId: aws.String("src-2"), Targets: []string{"dev-1"},
		DocumentSource: aws.String("s3://docs/jobs/missing.json")})
	require.ErrorAs(t, err, &invalid)
	require.Contains(t, aws.ToString(invalid.Message), "no such object")
}

// TestTargetsOfAnotherAccountAreRefused: an ARN of another account or region is never mapped
// onto a local thing of the same name.
func TestTargetsOfAnotherAccountAreRefused(t *testing.T) {
	ctx := context.Background()
	svc := openService(t, t.TempDir())
	defer svc.Close()
	_, err := svc.CreateThing("dev-1", nil)
	require.NoError(t, err)
	c := iotClient(serve(t, svc), testCreds)
	var invalid *types.InvalidRequestException
	for _, target := range []string{"arn:aws:iot:us-east-1:111122223333:thing/dev-1", "arn:aws:iot:eu-west-1:000000000000:thing/dev-1"} {
		_, err = c.CreateJob(ctx, &iot.CreateJobInput{JobId: aws.String("j"), Document: aws.String(`{}`), Targets: []string{target}})
		require.ErrorAs(t, err, &invalid, target)
	}
	require.ErrorContains(t, err, "region eu-west-1")
	_, err = c.CreateJob(ctx, &iot.CreateJobInput{JobId: aws.String("j"), Document: aws.String(`{}`), Targets: []string{thingArn("dev-1")}})
	require.NoError(t, err)
}
