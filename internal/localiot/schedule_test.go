package localiot_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/iot"
	"github.com/aws/aws-sdk-go-v2/service/iot/types"
	"github.com/stretchr/testify/require"

	"github.com/otaflow/otaflow/internal/localiot"
	"github.com/otaflow/otaflow/internal/localiot/store"
)

// fleetWithClock registers n things d0..d(n-1) in group "fleet" on a service with a fake
// clock, and returns an SDK client for it.
func fleetWithClock(t *testing.T, n int) (*localiot.Service, *fakeClock, *iot.Client) {
	t.Helper()
	svc, clock := openWithClock(t)
	_, err := svc.CreateThingGroup("fleet", "", localiot.GroupProperties{})
	require.NoError(t, err)
	for i := range n {
		name := fmt.Sprintf("d%d", i)
		_, err := svc.CreateThing(name, nil)
		require.NoError(t, err)
		require.NoError(t, svc.AddThingToThingGroup("fleet", name))
	}
	return svc, clock, iotClient(serve(t, svc), testCreds)
}

func describe(t *testing.T, c *iot.Client, id string) *types.Job {
	t.Helper()
	out, err := c.DescribeJob(context.Background(), &iot.DescribeJobInput{JobId: aws.String(id)})
	require.NoError(t, err)
	return out.Job
}

func waitStatus(t *testing.T, c *iot.Client, id string, want types.JobStatus) *types.Job {
	t.Helper()
	var j *types.Job
	require.Eventually(t, func() bool { j = describe(t, c, id); return j.Status == want }, 10*time.Second, 5*time.Millisecond,
		"job %s never reached %s", id, want)
	return j
}

// finish has thing take its next job and end it in status.
func finish(t *testing.T, svc *localiot.Service, thing, job string, status store.ExecutionStatus) {
	t.Helper()
	e, _, err := svc.StartNext(thing, nil, 0)
	require.NoError(t, err)
	require.NotNil(t, e, "%s has no job to start", thing)
	require.Equal(t, job, e.JobID)
	if status != store.ExecInProgress {
		_, _, err = svc.UpdateExecution(localiot.UpdateInput{Thing: thing, JobID: job, Status: status})
		require.NoError(t, err)
	}
}

func TestAbortConfigCancelsTheJobAtItsThreshold(t *testing.T) {
	ctx := context.Background()
	svc, _, c := fleetWithClock(t, 10)
	abort := &types.AbortConfig{CriteriaList: []types.AbortCriteria{{
		FailureType: types.JobExecutionFailureTypeFailed, Action: types.AbortActionCancel,
		ThresholdPercentage: aws.Float64(30), MinNumberOfExecutedThings: aws.Int32(3)}}}

	var invalid *types.InvalidRequestException
	for _, bad := range []types.AbortCriteria{
		{FailureType: "SOMETIMES", Action: types.AbortActionCancel, ThresholdPercentage: aws.Float64(30), MinNumberOfExecutedThings: aws.Int32(3)},
		{FailureType: types.JobExecutionFailureTypeAll, Action: "STOP", ThresholdPercentage: aws.Float64(30), MinNumberOfExecutedThings: aws.Int32(3)},
		{FailureType: types.JobExecutionFailureTypeAll, Action: types.AbortActionCancel, ThresholdPercentage: aws.Float64(10.999), MinNumberOfExecutedThings: aws.Int32(3)},
		{FailureType: types.JobExecutionFailureTypeAll, Action: types.AbortActionCancel, ThresholdPercentage: aws.Float64(30), MinNumberOfExecutedThings: aws.Int32(0)},
	} {
		_, err := c.CreateJob(ctx, &iot.CreateJobInput{JobId: aws.String("bad"), Document: aws.String(`{}`),
			Targets: []string{groupArn("fleet")}, AbortConfig: &types.AbortConfig{CriteriaList: []types.AbortCriteria{bad}}})
		require.ErrorAs(t, err, &invalid, "%+v", bad)
	}
	_, err := c.CreateJob(ctx, &iot.CreateJobInput{JobId: aws.String("bad"), Document: aws.String(`{}`),
		Targets: []string{groupArn("fleet")}, AbortConfig: &types.AbortConfig{CriteriaList: []types.AbortCriteria{}}})
	require.ErrorAs(t, err, &invalid, "an abortConfig without criteria")

	_, err = c.CreateJob(ctx, &iot.CreateJobInput{JobId: aws.String("update"), Document: aws.String(`{}`),
		Targets: []string{groupArn("fleet")}, AbortConfig: abort})
	require.NoError(t, err)
	j := describe(t, c, "update")
	require.Len(t, j.AbortConfig.CriteriaList, 1)
	require.InDelta(t, 30, aws.ToFloat64(j.AbortConfig.CriteriaList[0].ThresholdPercentage), 0)

	finish(t, svc, "d0", "update", store.ExecSucceeded)
	finish(t, svc, "d1", "update", store.ExecFailed) // 1 of 2 failed, but fewer than 3 executed
	finish(t, svc, "d2", "update", store.ExecInProgress)
	// The check runs when an execution ends: d3's success makes 4 executed (d2 running counts),
	// 1 failed: 25%.
	finish(t, svc, "d3", "update", store.ExecSucceeded)
	require.Equal(t, types.JobStatusInProgress, describe(t, c, "update").Status)
	finish(t, svc, "d4", "update", store.ExecFailed) // 5 executed, 2 failed: 40%

	j = describe(t, c, "update")
	require.Equal(t, types.JobStatusCanceled, j.Status)
	require.Contains(t, aws.ToString(j.Comment), "aborted by abortConfig: 2 of 5 executed things (40.00%) ended FAILED")
	require.Equal(t, int32(5), aws.ToInt32(j.JobProcessDetails.NumberOfCanceledThings), "the five QUEUED executions are canceled")
	// The execution already running runs to its end.
	_, _, err = svc.UpdateExecution(localiot.UpdateInput{Thing: "d2", JobID: "update", Status: store.ExecSucceeded})
	require.NoError(t, err)
	ex, err := svc.DescribeJobExecution("update", "d9")
	require.NoError(t, err)
	require.Equal(t, store.ExecCanceled, ex.Status)

	// UpdateJob can add an abortConfig; one already met aborts at once. So does a job made
	// from a template that carries it.
	_, err = c.CreateJobTemplate(ctx, &iot.CreateJobTemplateInput{JobTemplateId: aws.String("careful"),
		Description: aws.String("abort at 30% failures"), Document: aws.String(`{}`), AbortConfig: abort})
	require.NoError(t, err)
	tpl, err := c.DescribeJobTemplate(ctx, &iot.DescribeJobTemplateInput{JobTemplateId: aws.String("careful")})
	require.NoError(t, err)
	require.Len(t, tpl.AbortConfig.CriteriaList, 1)
	_, err = c.CreateJob(ctx, &iot.CreateJobInput{JobId: aws.String("from-template"), Targets: []string{groupArn("fleet")},
		JobTemplateArn: tpl.JobTemplateArn})
	require.NoError(t, err)
	require.Len(t, describe(t, c, "from-template").AbortConfig.CriteriaList, 1)

	_, err = c.CreateJob(ctx, &iot.CreateJobInput{JobId: aws.String("later"), Document: aws.String(`{}`), Targets: []string{groupArn("fleet")}})
	require.NoError(t, err)
	for i := range 3 {
		thing := fmt.Sprintf("d%d", i)
		for {
			e, _, err := svc.StartNext(thing, nil, 0)
			require.NoError(t, err)
			_, _, err = svc.UpdateExecution(localiot.UpdateInput{Thing: thing, JobID: e.JobID, Status: store.ExecFailed})
			require.NoError(t, err)
			if e.JobID == "later" {
				break
			}
		}
	}
	require.Equal(t, types.JobStatusInProgress, describe(t, c, "later").Status)
	_, err = c.UpdateJob(ctx, &iot.UpdateJobInput{JobId: aws.String("later"), AbortConfig: abort})
	require.NoError(t, err)
	j = describe(t, c, "later")
	require.Equal(t, types.JobStatusCanceled, j.Status, "3 of 3 failed is over the threshold UpdateJob set")
	require.Equal(t, int32(7), aws.ToInt32(j.JobProcessDetails.NumberOfCanceledThings))
}

func TestSchedulingConfigStartsAndEndsJobs(t *testing.T) {
	ctx := context.Background()
	svc, clock, c := fleetWithClock(t, 3)
	at := func(d time.Duration) *string { return aws.String(clock.Now().Add(d).UTC().Format("2006-01-02T15:04")) }

	var invalid *types.InvalidRequestException
	for what, sc := range map[string]*types.SchedulingConfig{
		"a start sooner than 30 minutes (AWS's minimum)": {StartTime: at(10 * time.Minute)},
		"a start more than a year ahead":                 {StartTime: at(400 * 24 * time.Hour)},
		"a start that is no time":                        {StartTime: aws.String("next tuesday")},
		"an end before the start":                        {StartTime: at(2 * time.Hour), EndTime: at(time.Hour)},
		"an end 10 minutes after the start":              {StartTime: at(2 * time.Hour), EndTime: at(2*time.Hour + 10*time.Minute)},
		"an unknown end behavior":                        {StartTime: at(2 * time.Hour), EndTime: at(4 * time.Hour), EndBehavior: "EXPLODE"},
		"a window of 0 minutes":                          {MaintenanceWindows: []types.MaintenanceWindow{{StartTime: aws.String("cron(0 2 ? * SUN *)"), DurationInMinutes: aws.Int32(0)}}},
		"a window that is no cron expression":            {MaintenanceWindows: []types.MaintenanceWindow{{StartTime: aws.String("at two"), DurationInMinutes: aws.Int32(60)}}},
		"a window with L":                                {MaintenanceWindows: []types.MaintenanceWindow{{StartTime: aws.String("cron(0 2 L * ? *)"), DurationInMinutes: aws.Int32(60)}}},
	} {
		_, err := c.CreateJob(ctx, &iot.CreateJobInput{JobId: aws.String("bad"), Document: aws.String(`{}`),
			Targets: []string{groupArn("fleet")}, SchedulingConfig: sc})
		require.ErrorAs(t, err, &invalid, what)
	}

	// A job for later is SCHEDULED: no device sees it until its start.
	_, err := c.CreateJob(ctx, &iot.CreateJobInput{JobId: aws.String("tonight"), Document: aws.String(`{}`),
		Targets: []string{groupArn("fleet")}, SchedulingConfig: &types.SchedulingConfig{
			StartTime: at(2 * time.Hour), EndTime: at(3 * time.Hour), EndBehavior: types.JobEndBehaviorCancel}})
	require.NoError(t, err)
	j := describe(t, c, "tonight")
	require.Equal(t, types.JobStatusScheduled, j.Status)
	require.Equal(t, aws.ToString(at(2*time.Hour)), aws.ToString(j.SchedulingConfig.StartTime))
	require.Equal(t, types.JobEndBehaviorCancel, j.SchedulingConfig.EndBehavior)
	listed, err := c.ListJobs(ctx, &iot.ListJobsInput{Status: types.JobStatusScheduled})
	require.NoError(t, err)
	require.Len(t, listed.Jobs, 1)
	// A thing that joins the group before the start is rolled out to at the start.
	_, err = svc.CreateThing("late", nil)
	require.NoError(t, err)
	require.NoError(t, svc.AddThingToThingGroup("fleet", "late"))
	clock.Advance(time.Hour)
	time.Sleep(50 * time.Millisecond) // sweeps run; the start has not come
	require.Equal(t, types.JobStatusScheduled, describe(t, c, "tonight").Status)
	e, _, err := svc.StartNext("d0", nil, 0)
	require.NoError(t, err)
	require.Nil(t, e, "a SCHEDULED job offers nothing")

	clock.Advance(time.Hour)
	j = waitStatus(t, c, "tonight", types.JobStatusInProgress)
	require.Equal(t, int32(4), aws.ToInt32(j.JobProcessDetails.NumberOfQueuedThings), "three things and the one that joined")
	finish(t, svc, "d0", "tonight", store.ExecSucceeded)
	finish(t, svc, "d1", "tonight", store.ExecInProgress)

	// At the end, CANCEL cancels what is QUEUED; what runs runs on.
	clock.Advance(time.Hour)
	j = waitStatus(t, c, "tonight", types.JobStatusCanceled)
	require.Contains(t, aws.ToString(j.Comment), "endTime")
	require.Equal(t, int32(2), aws.ToInt32(j.JobProcessDetails.NumberOfCanceledThings))
	require.Equal(t, int32(1), aws.ToInt32(j.JobProcessDetails.NumberOfInProgressThings))
	_, _, err = svc.UpdateExecution(localiot.UpdateInput{Thing: "d1", JobID: "tonight", Status: store.ExecSucceeded})
	require.NoError(t, err)

	// FORCE_CANCEL cancels the running ones too.
	_, err = c.CreateJob(ctx, &iot.CreateJobInput{JobId: aws.String("hard-stop"), Document: aws.String(`{}`),
		Targets: []string{groupArn("fleet")}, SchedulingConfig: &types.SchedulingConfig{
			EndTime: at(time.Hour), EndBehavior: types.JobEndBehaviorForceCancel}})
	require.NoError(t, err)
	require.Equal(t, types.JobStatusInProgress, describe(t, c, "hard-stop").Status, "no startTime: it starts now")
	finish(t, svc, "d0", "hard-stop", store.ExecInProgress)
	clock.Advance(time.Hour)
	j = waitStatus(t, c, "hard-stop", types.JobStatusCanceled)
	require.True(t, aws.ToBool(j.ForceCanceled))
	require.Equal(t, int32(4), aws.ToInt32(j.JobProcessDetails.NumberOfCanceledThings))

	// STOP_ROLLOUT (the default): what was never offered is canceled, what was offered runs on
	// and the job completes.
	_, err = c.CreateJob(ctx, &iot.CreateJobInput{JobId: aws.String("slow"), Document: aws.String(`{}`),
		Targets: []string{groupArn("fleet")}, JobExecutionsRolloutConfig: &types.JobExecutionsRolloutConfig{MaximumPerMinute: aws.Int32(1)},
		SchedulingConfig: &types.SchedulingConfig{EndTime: at(40 * time.Second * 60)}})
	require.NoError(t, err)
	clock.Advance(40 * time.Minute)
	j = waitStatus(t, c, "slow", types.JobStatusInProgress)
	require.Eventually(t, func() bool {
		j = describe(t, c, "slow")
		return aws.ToInt32(j.JobProcessDetails.NumberOfCanceledThings) == 3
	}, 10*time.Second, 5*time.Millisecond, "the three held executions are canceled at the end")
	require.Contains(t, aws.ToString(j.Comment), "rollout stopped")
	var offered string
	for _, d := range []string{"d0", "d1", "d2", "late"} {
		ex, err := svc.DescribeJobExecution("slow", d)
		require.NoError(t, err)
		if ex.Status == store.ExecQueued {
			offered = d
		}
	}
	require.NotEmpty(t, offered, "the one execution released before the end is still QUEUED")
	finish(t, svc, offered, "slow", store.ExecSucceeded)
	require.Equal(t, types.JobStatusCompleted, describe(t, c, "slow").Status)
}

func TestMaintenanceWindowsHoldExecutionsOutsideThem(t *testing.T) {
	ctx := context.Background()
	svc, clock, c := fleetWithClock(t, 2) // the clock starts on Thursday 2026-01-01, 00:00 UTC
	_, err := c.CreateJob(ctx, &iot.CreateJobInput{JobId: aws.String("sunday"), Document: aws.String(`{}`),
		Targets: []string{groupArn("fleet")}, SchedulingConfig: &types.SchedulingConfig{
			// AWS numbers days of the week from 1 (SUN): 1,7 is the weekend.
			MaintenanceWindows: []types.MaintenanceWindow{{StartTime: aws.String("cron(0 2 ? * 1,7 *)"), DurationInMinutes: aws.Int32(60)}}}})
	require.NoError(t, err)
	j := describe(t, c, "sunday")
	require.Equal(t, types.JobStatusInProgress, j.Status)
	require.Len(t, j.SchedulingConfig.MaintenanceWindows, 1)
	var next []string
	for _, r := range j.ScheduledJobRollouts {
		next = append(next, aws.ToString(r.StartTime))
	}
	require.Equal(t, []string{"2026-01-03T02:00", "2026-01-04T02:00", "2026-01-10T02:00", "2026-01-11T02:00",
		"2026-01-17T02:00", "2026-01-18T02:00", "2026-01-24T02:00"}, next)
	e, _, err := svc.StartNext("d0", nil, 0)
	require.NoError(t, err)
	require.Nil(t, e, "outside the window nothing is offered")

	clock.Advance(50*time.Hour + 30*time.Minute) // Saturday 02:30, inside the window
	require.Eventually(t, func() bool {
		e, _, err = svc.StartNext("d0", nil, 0)
		require.NoError(t, err)
		return e != nil
	}, 10*time.Second, 5*time.Millisecond, "inside the window the executions are released")
	require.Equal(t, "sunday", e.JobID)
}

// TestExponentialRolloutRate: the rate starts at baseRatePerMinute and is multiplied by
// incrementFactor at each minute after rateIncreaseCriteria was met, up to maximumPerMinute.
func TestExponentialRolloutRate(t *testing.T) {
	ctx := context.Background()
	svc, clock, c := fleetWithClock(t, 20)
	rate := func(base int32, factor float64, notified, succeeded int32) *types.JobExecutionsRolloutConfig {
		crit := &types.RateIncreaseCriteria{}
		if notified > 0 {
			crit.NumberOfNotifiedThings = aws.Int32(notified)
		}
		if succeeded > 0 {
			crit.NumberOfSucceededThings = aws.Int32(succeeded)
		}
		return &types.JobExecutionsRolloutConfig{MaximumPerMinute: aws.Int32(8), ExponentialRate: &types.ExponentialRolloutRate{
			BaseRatePerMinute: aws.Int32(base), IncrementFactor: aws.Float64(factor), RateIncreaseCriteria: crit}}
	}
	var invalid *types.InvalidRequestException
	for what, rc := range map[string]*types.JobExecutionsRolloutConfig{
		"a factor below 1.1":             rate(2, 1.05, 2, 0),
		"a factor with two decimals":     rate(2, 1.25, 2, 0),
		"a base rate of 0":               rate(0, 2, 2, 0),
		"both increase criteria":         rate(2, 2, 2, 2),
		"neither increase criterion set": rate(2, 2, 0, 0),
	} {
		_, err := c.CreateJob(ctx, &iot.CreateJobInput{JobId: aws.String("bad"), Document: aws.String(`{}`),
			Targets: []string{groupArn("fleet")}, JobExecutionsRolloutConfig: rc})
		require.ErrorAs(t, err, &invalid, what)
	}
	_, err := c.CreateJob(ctx, &iot.CreateJobInput{JobId: aws.String("ramp"), Document: aws.String(`{}`),
		Targets: []string{groupArn("fleet")}, JobExecutionsRolloutConfig: rate(2, 2, 2, 0)})
	require.NoError(t, err)
	j := describe(t, c, "ramp")
	require.EqualValues(t, 2, aws.ToInt32(j.JobExecutionsRolloutConfig.ExponentialRate.BaseRatePerMinute))

	started := map[string]bool{}
	offered := func() int {
		for i := range 20 {
			d := fmt.Sprintf("d%d", i)
			if started[d] {
				continue
			}
			e, _, err := svc.StartNext(d, nil, 0)
			require.NoError(t, err)
			if e != nil {
				started[d] = true
			}
		}
		return len(started)
	}
	// 2 in the first minute; then 4 (2 notified: ×2), 8 (×2), and 8 again (the maximum).
	for minute, want := range []int{2, 6, 14, 20} {
		if minute > 0 {
			clock.Advance(time.Minute)
		}
		require.Eventually(t, func() bool { return offered() >= want }, 10*time.Second, 5*time.Millisecond, "minute %d", minute)
		time.Sleep(30 * time.Millisecond) // several sweeps: no more is released this minute
		require.Equal(t, want, offered(), "offered by minute %d", minute)
	}
}
