package localiot_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/iot"
	"github.com/aws/aws-sdk-go-v2/service/iot/types"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/otaflow/otaflow/internal/localiot"
	"github.com/otaflow/otaflow/internal/localiot/store"
)

type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func openWithClock(t *testing.T) (*localiot.Service, *fakeClock) {
	t.Helper()
	clock := &fakeClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	svc, err := localiot.Open(storeOptions(t, t.TempDir(), localiot.Options{Logger: zerolog.Nop(), Now: clock.Now, TrustLocalClock: true, SweepInterval: 5 * time.Millisecond}))
	require.NoError(t, err)
	t.Cleanup(func() { svc.Close() })
	return svc, clock
}

func thingArn(name string) string { return "arn:aws:iot:us-east-1:000000000000:thing/" + name }
func groupArn(name string) string { return "arn:aws:iot:us-east-1:000000000000:thinggroup/" + name }

func TestThingGroupsAndContinuousJobs(t *testing.T) {
	ctx := context.Background()
	svc := openService(t, t.TempDir())
	defer svc.Close()
	c := iotClient(serve(t, svc), testCreds)
	for _, n := range []string{"a", "b", "c"} {
		_, err := c.CreateThing(ctx, &iot.CreateThingInput{ThingName: aws.String(n),
			AttributePayload: &types.AttributePayload{Attributes: map[string]string{"site": map[string]string{"a": "x", "b": "x", "c": "y"}[n]}}})
		require.NoError(t, err)
	}
	_, err := c.CreateThingGroup(ctx, &iot.CreateThingGroupInput{ThingGroupName: aws.String("fleet")})
	require.NoError(t, err)
	g, err := c.CreateThingGroup(ctx, &iot.CreateThingGroupInput{ThingGroupName: aws.String("canary"), ParentGroupName: aws.String("fleet")})
	require.NoError(t, err)
	require.Equal(t, groupArn("canary"), aws.ToString(g.ThingGroupArn))
	_, err = c.CreateThingGroup(ctx, &iot.CreateThingGroupInput{ThingGroupName: aws.String("orphan"), ParentGroupName: aws.String("nope")})
	var invalid *types.InvalidRequestException
	require.ErrorAs(t, err, &invalid)
	var notFound *types.ResourceNotFoundException

	_, err = c.AddThingToThingGroup(ctx, &iot.AddThingToThingGroupInput{ThingGroupName: aws.String("canary"), ThingName: aws.String("a")})
	require.NoError(t, err)
	_, err = c.AddThingToThingGroup(ctx, &iot.AddThingToThingGroupInput{ThingGroupArn: aws.String(groupArn("fleet")), ThingArn: aws.String(thingArn("b"))})
	require.NoError(t, err)

	direct, err := c.ListThingsInThingGroup(ctx, &iot.ListThingsInThingGroupInput{ThingGroupName: aws.String("fleet")})
	require.NoError(t, err)
	require.Equal(t, []string{"b"}, direct.Things)
	all, err := c.ListThingsInThingGroup(ctx, &iot.ListThingsInThingGroupInput{ThingGroupName: aws.String("fleet"), Recursive: true})
	require.NoError(t, err)
	require.Equal(t, []string{"a", "b"}, all.Things)
	// Pages of one, read with the token (recursive: a group without children pages from the
	// index): a group of its own (another hierarchy), then gone.
	_, err = c.CreateThingGroup(ctx, &iot.CreateThingGroupInput{ThingGroupName: aws.String("paging")})
	require.NoError(t, err)
	for _, n := range []string{"c", "a", "b"} {
		_, err = c.AddThingToThingGroup(ctx, &iot.AddThingToThingGroupInput{ThingGroupName: aws.String("paging"), ThingName: aws.String(n)})
		require.NoError(t, err)
	}
	var paged []string
	var token *string
	for pages := 0; ; pages++ {
		require.Less(t, pages, 4)
		p, err := c.ListThingsInThingGroup(ctx, &iot.ListThingsInThingGroupInput{ThingGroupName: aws.String("paging"), Recursive: true, MaxResults: aws.Int32(1), NextToken: token})
		require.NoError(t, err)
		paged = append(paged, p.Things...)
		if token = p.NextToken; token == nil {
			break
		}
	}
	require.Equal(t, []string{"a", "b", "c"}, paged)
	_, err = c.DeleteThingGroup(ctx, &iot.DeleteThingGroupInput{ThingGroupName: aws.String("paging")})
	require.NoError(t, err)

	snap, err := c.CreateJob(ctx, &iot.CreateJobInput{JobId: aws.String("snap"), Targets: []string{groupArn("fleet")}, Document: aws.String(`{}`)})
	require.NoError(t, err)
	require.NotNil(t, snap)
	cont, err := c.CreateJob(ctx, &iot.CreateJobInput{JobId: aws.String("cont"), Targets: []string{groupArn("fleet")},
		Document: aws.String(`{}`), TargetSelection: types.TargetSelectionContinuous})
	require.NoError(t, err)
	require.NotNil(t, cont)

	// c joins the group later: only the CONTINUOUS job reaches it.
	_, err = c.AddThingToThingGroup(ctx, &iot.AddThingToThingGroupInput{ThingGroupName: aws.String("canary"), ThingName: aws.String("c")})
	require.NoError(t, err)
	forC, err := c.ListJobExecutionsForThing(ctx, &iot.ListJobExecutionsForThingInput{ThingName: aws.String("c")})
	require.NoError(t, err)
	require.Len(t, forC.ExecutionSummaries, 1)
	require.Equal(t, "cont", aws.ToString(forC.ExecutionSummaries[0].JobId))
	require.Equal(t, types.JobExecutionStatusQueued, forC.ExecutionSummaries[0].JobExecutionSummary.Status)

	// ... and leaving before it started removes it.
	_, err = c.RemoveThingFromThingGroup(ctx, &iot.RemoveThingFromThingGroupInput{ThingGroupName: aws.String("canary"), ThingName: aws.String("c")})
	require.NoError(t, err)
	ex, err := c.DescribeJobExecution(ctx, &iot.DescribeJobExecutionInput{JobId: aws.String("cont"), ThingName: aws.String("c")})
	require.NoError(t, err)
	require.Equal(t, types.JobExecutionStatusRemoved, ex.Execution.Status)

	d, err := c.DescribeJob(ctx, &iot.DescribeJobInput{JobId: aws.String("snap")})
	require.NoError(t, err)
	require.EqualValues(t, 2, aws.ToInt32(d.Job.JobProcessDetails.NumberOfQueuedThings))
	d, err = c.DescribeJob(ctx, &iot.DescribeJobInput{JobId: aws.String("cont")})
	require.NoError(t, err)
	require.EqualValues(t, 2, aws.ToInt32(d.Job.JobProcessDetails.NumberOfQueuedThings))
	require.EqualValues(t, 1, aws.ToInt32(d.Job.JobProcessDetails.NumberOfRemovedThings))

	// ListJobs and ListThings, with filters and pages.
	lj, err := c.ListJobs(ctx, &iot.ListJobsInput{TargetSelection: types.TargetSelectionContinuous})
	require.NoError(t, err)
	require.Len(t, lj.Jobs, 1)
	require.Equal(t, "cont", aws.ToString(lj.Jobs[0].JobId))
	lt, err := c.ListThings(ctx, &iot.ListThingsInput{AttributeName: aws.String("site"), AttributeValue: aws.String("x")})
	require.NoError(t, err)
	require.Len(t, lt.Things, 2)
	p1, err := c.ListThings(ctx, &iot.ListThingsInput{MaxResults: aws.Int32(2)})
	require.NoError(t, err)
	require.Len(t, p1.Things, 2)
	p2, err := c.ListThings(ctx, &iot.ListThingsInput{MaxResults: aws.Int32(2), NextToken: p1.NextToken})
	require.NoError(t, err)
	require.Len(t, p2.Things, 1)
	require.Nil(t, p2.NextToken)

	// Cancel one execution; a job in progress is deleted only with force.
	_, err = c.CancelJobExecution(ctx, &iot.CancelJobExecutionInput{JobId: aws.String("snap"), ThingName: aws.String("a")})
	require.NoError(t, err)
	_, err = c.CancelJobExecution(ctx, &iot.CancelJobExecutionInput{JobId: aws.String("snap"), ThingName: aws.String("a")})
	var badState *types.InvalidStateTransitionException
	require.ErrorAs(t, err, &badState)
	_, _, err = svc.StartNext("b", nil, 0)
	require.NoError(t, err)
	_, err = c.CancelJobExecution(ctx, &iot.CancelJobExecutionInput{JobId: aws.String("snap"), ThingName: aws.String("b")})
	require.ErrorAs(t, err, &badState, "IN_PROGRESS needs force")
	_, err = c.DeleteJob(ctx, &iot.DeleteJobInput{JobId: aws.String("snap")})
	require.ErrorAs(t, err, &badState)
	_, err = c.CancelJobExecution(ctx, &iot.CancelJobExecutionInput{JobId: aws.String("snap"), ThingName: aws.String("b"), Force: true})
	require.NoError(t, err)
	d, err = c.DescribeJob(ctx, &iot.DescribeJobInput{JobId: aws.String("snap")})
	require.NoError(t, err)
	require.Equal(t, types.JobStatusCompleted, d.Job.Status, "every execution ended")
	_, err = c.DeleteJob(ctx, &iot.DeleteJobInput{JobId: aws.String("snap")})
	require.NoError(t, err)
	_, err = c.DescribeJob(ctx, &iot.DescribeJobInput{JobId: aws.String("snap")})
	require.ErrorAs(t, err, &notFound)

	_, err = c.DeleteThing(ctx, &iot.DeleteThingInput{ThingName: aws.String("a")})
	require.NoError(t, err)
	_, err = c.DescribeThing(ctx, &iot.DescribeThingInput{ThingName: aws.String("a")})
	require.ErrorAs(t, err, &notFound)
	ex, err = c.DescribeJobExecution(ctx, &iot.DescribeJobExecutionInput{JobId: aws.String("cont"), ThingName: aws.String("a")})
	require.NoError(t, err)
	require.Equal(t, types.JobExecutionStatusRemoved, ex.Execution.Status)
}

func TestTimeoutsAndRetries(t *testing.T) {
	ctx := context.Background()
	svc, clock := openWithClock(t)
	c := iotClient(serve(t, svc), testCreds)
	for _, n := range []string{"a", "b"} {
		_, err := svc.CreateThing(n, nil)
		require.NoError(t, err)
	}
	_, err := c.CreateJob(ctx, &iot.CreateJobInput{
		JobId: aws.String("j"), Targets: []string{"a", "b"}, Document: aws.String(`{}`),
		TimeoutConfig: &types.TimeoutConfig{InProgressTimeoutInMinutes: aws.Int64(10)},
		JobExecutionsRetryConfig: &types.JobExecutionsRetryConfig{CriteriaList: []types.RetryCriteria{
			{FailureType: types.RetryableFailureTypeFailed, NumberOfRetries: aws.Int32(1)},
		}},
	})
	require.NoError(t, err)
	d, err := c.DescribeJob(ctx, &iot.DescribeJobInput{JobId: aws.String("j")})
	require.NoError(t, err)
	require.EqualValues(t, 10, aws.ToInt64(d.Job.TimeoutConfig.InProgressTimeoutInMinutes))

	// a: in-progress timeout. b: a step timeout shorter than that.
	_, _, err = svc.StartNext("a", nil, 0)
	require.NoError(t, err)
	_, _, err = svc.StartNext("b", nil, 2*time.Minute)
	require.NoError(t, err)
	clock.Advance(3 * time.Minute)
	require.Eventually(t, func() bool {
		e, _ := svc.DescribeJobExecution("j", "b")
		return e.Status == store.ExecTimedOut
	}, 5*time.Second, 5*time.Millisecond)
	e, _ := svc.DescribeJobExecution("j", "a")
	require.Equal(t, store.ExecInProgress, e.Status, "a's 10-minute timer has not run out")
	clock.Advance(8 * time.Minute)
	require.Eventually(t, func() bool {
		e, _ := svc.DescribeJobExecution("j", "a")
		return e.Status == store.ExecTimedOut
	}, 5*time.Second, 5*time.Millisecond)

	// Retries: FAILED gets one more execution, with a new execution number.
	_, err = svc.CreateJob(localiot.CreateJobInput{JobID: "r", Targets: []string{"a"}, Document: `{}`,
		Retry: []store.RetryCriteria{{FailureType: "FAILED", NumberOfRetries: 1}}})
	require.NoError(t, err)
	for attempt := 1; attempt <= 2; attempt++ {
		ex, _, err := svc.StartNext("a", nil, 0)
		require.NoError(t, err)
		require.Equal(t, "r", ex.JobID)
		require.EqualValues(t, attempt, ex.ExecutionNumber)
		_, _, err = svc.UpdateExecution(localiot.UpdateInput{Thing: "a", JobID: "r", Status: store.ExecFailed, StatusDetails: map[string]string{"try": "x"}})
		require.NoError(t, err)
	}
	last, err := c.DescribeJobExecution(ctx, &iot.DescribeJobExecutionInput{JobId: aws.String("r"), ThingName: aws.String("a")})
	require.NoError(t, err)
	require.Equal(t, types.JobExecutionStatusFailed, last.Execution.Status, "no retries left")
	require.EqualValues(t, 2, aws.ToInt64(last.Execution.ExecutionNumber))
	first, err := c.DescribeJobExecution(ctx, &iot.DescribeJobExecutionInput{JobId: aws.String("r"), ThingName: aws.String("a"), ExecutionNumber: aws.Int64(1)})
	require.NoError(t, err)
	require.Equal(t, types.JobExecutionStatusFailed, first.Execution.Status)
	j, err := svc.DescribeJob("r")
	require.NoError(t, err)
	require.Equal(t, store.JobCompleted, j.Status)
	require.Equal(t, 1, j.Counts.Failed)
}

func TestRateLimitReleasesPerMinute(t *testing.T) {
	ctx := context.Background()
	svc, clock := openWithClock(t)
	c := iotClient(serve(t, svc), testCreds)
	var targets []string
	for i := 1; i <= 5; i++ {
		n := fmt.Sprintf("r%d", i)
		_, err := svc.CreateThing(n, nil)
		require.NoError(t, err)
		targets = append(targets, n)
	}
	_, err := c.CreateJob(ctx, &iot.CreateJobInput{JobId: aws.String("slow"), Targets: targets, Document: aws.String(`{}`),
		JobExecutionsRolloutConfig: &types.JobExecutionsRolloutConfig{MaximumPerMinute: aws.Int32(2)}})
	require.NoError(t, err)
	d, err := c.DescribeJob(ctx, &iot.DescribeJobInput{JobId: aws.String("slow")})
	require.NoError(t, err)
	require.EqualValues(t, 2, aws.ToInt32(d.Job.JobExecutionsRolloutConfig.MaximumPerMinute))
	require.EqualValues(t, 5, aws.ToInt32(d.Job.JobProcessDetails.NumberOfQueuedThings), "held executions are QUEUED, as in AWS")

	offered := func() []string {
		var out []string
		for _, n := range targets {
			if e, _, err := svc.NextExecution(n); err == nil && e != nil {
				out = append(out, n)
			}
		}
		return out
	}
	time.Sleep(50 * time.Millisecond)
	require.Equal(t, []string{"r1", "r2"}, offered())
	clock.Advance(61 * time.Second)
	require.Eventually(t, func() bool { return len(offered()) == 4 }, 5*time.Second, 5*time.Millisecond)
	clock.Advance(61 * time.Second)
	require.Eventually(t, func() bool { return len(offered()) == 5 }, 5*time.Second, 5*time.Millisecond)
}
