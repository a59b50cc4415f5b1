package localiot_test

import (
	"context"
	"errors"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/iot"
	"github.com/aws/aws-sdk-go-v2/service/iot/types"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/otaflow/otaflow/internal/localiot"
	"github.com/otaflow/otaflow/internal/localiot/rest"
	"github.com/otaflow/otaflow/internal/localiot/store"
	"github.com/otaflow/otaflow/internal/pgtest"
)

var testCreds = rest.Credentials{AccessKeyID: "otaflow", SecretAccessKey: "otaflow-secret"}

func openService(t testing.TB, dir string) *localiot.Service {
	t.Helper()
	svc, err := localiot.Open(storeOptions(t, dir, localiot.Options{Logger: zerolog.Nop()}))
	require.NoError(t, err)
	return svc
}

// onPostgres switches the service tests to the PostgreSQL store (TestServiceOnPostgres);
// they run on bbolt otherwise.
var (
	onPostgres  bool
	postgresDBs = map[string]string{} // data dir → database, so a reopened service finds its state
)

// storeOptions fills in o's store: a bbolt file in dir, or a PostgreSQL database for dir.
func storeOptions(t testing.TB, dir string, o localiot.Options) localiot.Options {
	if !onPostgres {
		o.Path = filepath.Join(dir, "jobs.db")
		return o
	}
	if postgresDBs[dir] == "" {
		postgresDBs[dir] = pgtest.DB(t)
	}
	o.PostgresURL, o.ArtifactDir = postgresDBs[dir], filepath.Join(dir, "artifacts")
	return o
}

// TestServiceOnPostgres runs the service's contract tests (REST through the AWS SDK, device
// protocol over both brokers, timeouts, retries, rate limits, groups, quotas) on the
// PostgreSQL store; the same tests run on bbolt on their own.
func TestServiceOnPostgres(t *testing.T) {
	onPostgres = true
	defer func() { onPostgres = false }()
	for name, test := range map[string]func(*testing.T){
		"ControlPlaneThroughAWSSDK": TestControlPlaneThroughAWSSDK, "StateSurvivesReopen": TestStateSurvivesReopen,
		"SnapshotJobOnEmptyGroupCompletes": TestSnapshotJobOnEmptyGroupCompletes, "ThingGroupsAndContinuousJobs": TestThingGroupsAndContinuousJobs,
		"TimeoutsAndRetries": TestTimeoutsAndRetries, "RateLimitReleasesPerMinute": TestRateLimitReleasesPerMinute,
		"MQTTJobsAPI": TestMQTTJobsAPI, "MQTTTimeoutsAndRetries": TestMQTTTimeoutsAndRetries, "DeviceProtocolDetails": TestDeviceProtocolDetails,
		"ThingGroupQuotas": TestThingGroupQuotas, "PresignedArtifactURLs": TestPresignedArtifactURLs,
		"ControlPlaneMatchesTheServiceModel": TestControlPlaneMatchesTheServiceModel, "NamedShadowOverMQTT": TestNamedShadowOverMQTT,
		"AbortConfig": TestAbortConfigCancelsTheJobAtItsThreshold, "SchedulingConfig": TestSchedulingConfigStartsAndEndsJobs,
		"MaintenanceWindows": TestMaintenanceWindowsHoldExecutionsOutsideThem, "ExponentialRolloutRate": TestExponentialRolloutRate,
		"FleetIndex": TestFleetIndexThroughAWSSDK, "FleetIndexSurvivesReopen": TestFleetIndexSurvivesReopen,
		"RolesAllowAndRefuse": TestRolesAllowAndRefuse, "AccessKeyLifecycle": TestAccessKeyLifecycle,
		"KeysLimitedToThingGroups": TestKeysLimitedToThingGroups, "AuditLogPagesAndFilters": TestAuditLogPagesAndFilters,
	} {
		t.Run(name, test)
	}
}

// serve serves svc's REST API on loopback; when the test ends, every answer it gave is checked
// against the AWS IoT service model (servicemodel_test.go).
func serve(t *testing.T, svc *localiot.Service) string {
	t.Helper()
	url, rec := serveRecorded(t, svc)
	model := loadIoTModel(t)
	t.Cleanup(func() { rec.checkAgainstModel(t, model) })
	return url
}

func iotClient(url string, creds rest.Credentials) *iot.Client {
	return iot.New(iot.Options{
		Region:           "us-east-1",
		BaseEndpoint:     aws.String(url),
		Credentials:      credentials.NewStaticCredentialsProvider(creds.AccessKeyID, creds.SecretAccessKey, ""),
		RetryMaxAttempts: 1,
	})
}

func TestControlPlaneThroughAWSSDK(t *testing.T) {
	ctx := context.Background()
	svc := openService(t, t.TempDir())
	defer svc.Close()
	c := iotClient(serve(t, svc), testCreds)

	for _, name := range []string{"dev-1", "dev-2"} {
		out, err := c.CreateThing(ctx, &iot.CreateThingInput{ThingName: aws.String(name)})
		require.NoError(t, err)
		require.Equal(t, "arn:aws:iot:us-east-1:000000000000:thing/"+name, aws.ToString(out.ThingArn))
	}
	th, err := c.DescribeThing(ctx, &iot.DescribeThingInput{ThingName: aws.String("dev-1")})
	require.NoError(t, err)
	require.Equal(t, "dev-1", aws.ToString(th.ThingName))

	_, err = c.DescribeThing(ctx, &iot.DescribeThingInput{ThingName: aws.String("nope")})
	var notFound *types.ResourceNotFoundException
	require.ErrorAs(t, err, &notFound)

	created, err := c.CreateJob(ctx, &iot.CreateJobInput{
		JobId:    aws.String("job-1"),
		Targets:  []string{"arn:aws:iot:us-east-1:000000000000:thing/dev-1", "arn:aws:iot:us-east-1:000000000000:thing/dev-2"},
		Document: aws.String(`{"type":"x"}`),
	})
	require.NoError(t, err)
	require.Equal(t, "arn:aws:iot:us-east-1:000000000000:job/job-1", aws.ToString(created.JobArn))

	_, err = c.CreateJob(ctx, &iot.CreateJobInput{JobId: aws.String("job-1"), Targets: []string{"dev-1"}, Document: aws.String(`{}`)})
	var exists *types.ResourceAlreadyExistsException
	require.ErrorAs(t, err, &exists)

	_, err = c.CreateJob(ctx, &iot.CreateJobInput{JobId: aws.String("job-2"), Targets: []string{"dev-1", "ghost"}, Document: aws.String(`{}`)})
	var invalid *types.InvalidRequestException
	require.ErrorAs(t, err, &invalid)
	require.Contains(t, aws.ToString(invalid.Message), "ghost")
	_, err = c.DescribeJob(ctx, &iot.DescribeJobInput{JobId: aws.String("job-2")})
	require.ErrorAs(t, err, &notFound, "an invalid request must create no job")

	d, err := c.DescribeJob(ctx, &iot.DescribeJobInput{JobId: aws.String("job-1")})
	require.NoError(t, err)
	require.Equal(t, types.JobStatusInProgress, d.Job.Status)
	require.EqualValues(t, 2, aws.ToInt32(d.Job.JobProcessDetails.NumberOfQueuedThings))
	require.NotNil(t, d.Job.CreatedAt)

	// A device starts dev-1's execution; cancel without force leaves it, with force cancels it.
	_, _, err = svc.StartNext("dev-1", nil, 0)
	require.NoError(t, err)
	ex, err := c.DescribeJobExecution(ctx, &iot.DescribeJobExecutionInput{JobId: aws.String("job-1"), ThingName: aws.String("dev-1")})
	require.NoError(t, err)
	require.Equal(t, types.JobExecutionStatusInProgress, ex.Execution.Status)
	require.EqualValues(t, 1, aws.ToInt64(ex.Execution.ExecutionNumber))

	_, err = c.CancelJob(ctx, &iot.CancelJobInput{JobId: aws.String("job-1")})
	require.NoError(t, err)
	list, err := c.ListJobExecutionsForJob(ctx, &iot.ListJobExecutionsForJobInput{JobId: aws.String("job-1")})
	require.NoError(t, err)
	require.Len(t, list.ExecutionSummaries, 2)
	byThing := map[string]types.JobExecutionStatus{}
	for _, s := range list.ExecutionSummaries {
		byThing[aws.ToString(s.ThingArn)[strings.LastIndex(aws.ToString(s.ThingArn), "/")+1:]] = s.JobExecutionSummary.Status
	}
	require.Equal(t, map[string]types.JobExecutionStatus{"dev-1": types.JobExecutionStatusInProgress, "dev-2": types.JobExecutionStatusCanceled}, byThing)

	_, err = c.CancelJob(ctx, &iot.CancelJobInput{JobId: aws.String("job-1"), Force: true})
	require.NoError(t, err)
	d, err = c.DescribeJob(ctx, &iot.DescribeJobInput{JobId: aws.String("job-1")})
	require.NoError(t, err)
	require.Equal(t, types.JobStatusCanceled, d.Job.Status)
	require.EqualValues(t, 2, aws.ToInt32(d.Job.JobProcessDetails.NumberOfCanceledThings))
	require.True(t, aws.ToBool(d.Job.ForceCanceled))

	// Paging.
	page, err := c.ListJobExecutionsForJob(ctx, &iot.ListJobExecutionsForJobInput{JobId: aws.String("job-1"), MaxResults: aws.Int32(1)})
	require.NoError(t, err)
	require.Len(t, page.ExecutionSummaries, 1)
	require.NotNil(t, page.NextToken)
	page, err = c.ListJobExecutionsForJob(ctx, &iot.ListJobExecutionsForJobInput{JobId: aws.String("job-1"), MaxResults: aws.Int32(1), NextToken: page.NextToken})
	require.NoError(t, err)
	require.Len(t, page.ExecutionSummaries, 1)
	require.Nil(t, page.NextToken)
}

func TestRequestsMustBeSigned(t *testing.T) {
	ctx := context.Background()
	svc := openService(t, t.TempDir())
	defer svc.Close()
	url := serve(t, svc)

	_, err := iotClient(url, rest.Credentials{AccessKeyID: "otaflow", SecretAccessKey: "wrong"}).
		CreateThing(ctx, &iot.CreateThingInput{ThingName: aws.String("dev-1")})
	require.Error(t, err)
	require.Contains(t, err.Error(), "signature does not match")

	_, err = iotClient(url, rest.Credentials{AccessKeyID: "someone", SecretAccessKey: "otaflow-secret"}).
		CreateThing(ctx, &iot.CreateThingInput{ThingName: aws.String("dev-1")})
	require.Error(t, err)

	resp, err := http.Post(url+"/things/dev-1", "application/json", strings.NewReader(`{}`))
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusForbidden, resp.StatusCode)

	_, err = svc.DescribeThing("dev-1")
	var jerr *localiot.Error
	require.True(t, errors.As(err, &jerr))
	require.Equal(t, localiot.CodeResourceNotFound, jerr.Code, "no unsigned or badly signed write may land")
}

func TestStateSurvivesReopen(t *testing.T) {
	dir := t.TempDir()
	svc := openService(t, dir)
	_, err := svc.CreateThing("dev-1", nil)
	require.NoError(t, err)
	_, err = svc.CreateJob(localiot.CreateJobInput{JobID: "j", Targets: []string{"dev-1"}, Document: `{}`})
	require.NoError(t, err)
	_, _, err = svc.StartNext("dev-1", nil, 0)
	require.NoError(t, err)
	require.NoError(t, svc.Close())

	svc = openService(t, dir)
	defer svc.Close()
	e, err := svc.DescribeJobExecution("j", "dev-1")
	require.NoError(t, err)
	require.Equal(t, store.ExecInProgress, e.Status)
	j, err := svc.DescribeJob("j")
	require.NoError(t, err)
	require.Equal(t, 1, j.Counts.InProgress)
}

// TestSnapshotJobOnEmptyGroupCompletes: a SNAPSHOT job whose target group has no members has
// nothing to roll out and is COMPLETED at once, as on AWS, instead of IN_PROGRESS forever.
func TestSnapshotJobOnEmptyGroupCompletes(t *testing.T) {
	ctx := context.Background()
	svc := openService(t, t.TempDir())
	defer svc.Close()
	c := iotClient(serve(t, svc), testCreds)
	g, err := c.CreateThingGroup(ctx, &iot.CreateThingGroupInput{ThingGroupName: aws.String("empty")})
	require.NoError(t, err)
	_, err = c.CreateJob(ctx, &iot.CreateJobInput{JobId: aws.String("nothing"), Targets: []string{aws.ToString(g.ThingGroupArn)}, Document: aws.String(`{}`)})
	require.NoError(t, err)
	d, err := c.DescribeJob(ctx, &iot.DescribeJobInput{JobId: aws.String("nothing")})
	require.NoError(t, err)
	require.Equal(t, types.JobStatusCompleted, d.Job.Status)
	require.NotNil(t, d.Job.CompletedAt)
}

// TestAPICallsAreCounted: the service counts its requests by operation, which the benchmark
// reports per device.
func TestAPICallsAreCounted(t *testing.T) {
	ctx := context.Background()
	svc := openService(t, t.TempDir())
	defer svc.Close()
	c := iotClient(serve(t, svc), testCreds)
	for _, name := range []string{"a", "b"} {
		_, err := c.CreateThing(ctx, &iot.CreateThingInput{ThingName: aws.String(name)})
		require.NoError(t, err)
	}
	_, err := c.DescribeThing(ctx, &iot.DescribeThingInput{ThingName: aws.String("a")})
	require.NoError(t, err)
	calls := svc.APICalls()
	require.EqualValues(t, 2, calls["POST /things/{thingName}"])
	require.EqualValues(t, 1, calls["GET /things/{thingName}"])
}
