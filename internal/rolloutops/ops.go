// Package rolloutops is what a rollout does to AWS IoT (or the local service, which speaks the
// same API), as plain Go over aws-sdk-go-v2's iot client: resolve and freeze targets, create,
// await and cancel jobs, roll back, sync deployments, find the newest release, judge health,
// compute maintenance windows. The activities (package activities) are thin Temporal wrappers
// around it; the CLI and the console call it directly (dry runs, validation, counts). It does
// not import the Temporal SDK: a request that can never succeed is an *InvalidError, and long
// loops report progress through the context (WithProgress).
package rolloutops

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/otaflow/otaflow/internal/arn"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/iot"
	"github.com/aws/aws-sdk-go-v2/service/iot/types"
	"golang.org/x/sync/errgroup"

	"github.com/otaflow/otaflow/internal/components"
	"github.com/otaflow/otaflow/internal/jobdoc"
	"github.com/otaflow/otaflow/workflows/contract"
)

// IoT is the part of the AWS IoT API the activities use; *iot.Client satisfies it.
type IoT interface {
	DescribeThing(context.Context, *iot.DescribeThingInput, ...func(*iot.Options)) (*iot.DescribeThingOutput, error)
	CreateJob(context.Context, *iot.CreateJobInput, ...func(*iot.Options)) (*iot.CreateJobOutput, error)
	DescribeJob(context.Context, *iot.DescribeJobInput, ...func(*iot.Options)) (*iot.DescribeJobOutput, error)
	CancelJob(context.Context, *iot.CancelJobInput, ...func(*iot.Options)) (*iot.CancelJobOutput, error)
	ListThingsInThingGroup(context.Context, *iot.ListThingsInThingGroupInput, ...func(*iot.Options)) (*iot.ListThingsInThingGroupOutput, error)
	ListJobExecutionsForJob(context.Context, *iot.ListJobExecutionsForJobInput, ...func(*iot.Options)) (*iot.ListJobExecutionsForJobOutput, error)
	DescribeJobExecution(context.Context, *iot.DescribeJobExecutionInput, ...func(*iot.Options)) (*iot.DescribeJobExecutionOutput, error)
	ListJobExecutionsForThing(context.Context, *iot.ListJobExecutionsForThingInput, ...func(*iot.Options)) (*iot.ListJobExecutionsForThingOutput, error)
	CreateThingGroup(context.Context, *iot.CreateThingGroupInput, ...func(*iot.Options)) (*iot.CreateThingGroupOutput, error)
	DescribeThingGroup(context.Context, *iot.DescribeThingGroupInput, ...func(*iot.Options)) (*iot.DescribeThingGroupOutput, error)
	DeleteThingGroup(context.Context, *iot.DeleteThingGroupInput, ...func(*iot.Options)) (*iot.DeleteThingGroupOutput, error)
	AddThingToThingGroup(context.Context, *iot.AddThingToThingGroupInput, ...func(*iot.Options)) (*iot.AddThingToThingGroupOutput, error)
	RemoveThingFromThingGroup(context.Context, *iot.RemoveThingFromThingGroupInput, ...func(*iot.Options)) (*iot.RemoveThingFromThingGroupOutput, error)
	GetStatistics(context.Context, *iot.GetStatisticsInput, ...func(*iot.Options)) (*iot.GetStatisticsOutput, error)
	GetPercentiles(context.Context, *iot.GetPercentilesInput, ...func(*iot.Options)) (*iot.GetPercentilesOutput, error)
	SearchIndex(context.Context, *iot.SearchIndexInput, ...func(*iot.Options)) (*iot.SearchIndexOutput, error)
}

var _ IoT = (*iot.Client)(nil)

// Ops holds the operations' dependencies.
type Ops struct {
	IoT IoT
	// Catalog holds component recipes for deployments.
	Catalog *components.Catalog
	// ReleaseMetadataURL is where a bucket's TUF metadata is read from (for rollouts of "the
	// newest published release"); nil: such rollouts are refused.
	ReleaseMetadataURL func(bucket string) string
	// WebhookSecret signs rollout webhooks (webhook.go); WebhookClient posts them (default:
	// a client with a 10 s timeout).
	WebhookSecret []byte
	WebhookClient *http.Client
}

// ResolveTargets checks that every target exists and returns the things' ARNs, thing groups
// expanded (recursively) and sorted by name, so waves are the same on every replay and retry.
// An invalid request creates no job. A thing listed in a target group exists (the listing
// proves it): only things named directly are described.
func (a *Ops) ResolveTargets(ctx context.Context, req contract.RolloutRequest) (*contract.ResolveTargetsResult, error) {
	var missing []string
	names := map[string]bool{}
	// listed are the things of target groups, with their ARNs (in the group's account and
	// region).
	listed := map[string]string{}
	for _, target := range req.Targets {
		t, err := arn.ParseTarget(target)
		if err != nil {
			return nil, invalidErr(err.Error(), nil)
		}
		kind, name := t.Type, t.Name
		if kind == arn.TypeThingGroup {
			members, err := a.groupMembers(ctx, name)
			var notFound *types.ResourceNotFoundException
			if errors.As(err, &notFound) {
				missing = append(missing, "thing group "+name)
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("list things in group %s: %w", name, err)
			}
			for _, m := range members {
				if t.ARN.Account != "" {
					listed[m] = arn.IoT(t.ARN.Region, t.ARN.Account, arn.TypeThing, m)
				} else {
					names[m] = true
				}
			}
			continue
		}
		names[name] = true
	}
	sorted := make([]string, 0, len(names))
	for n := range names {
		if _, ok := listed[n]; !ok {
			sorted = append(sorted, n)
		}
	}
	slices.Sort(sorted)
	// Describe the things a few at a time (well inside AWS IoT's DescribeThing rate): one at a
	// time, 10,000 targets took longer than updating them.
	found := make([]string, len(sorted))
	absent := make([]bool, len(sorted))
	var done atomic.Int64
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(describeConcurrency)
	for i, name := range sorted {
		g.Go(func() error {
			out, err := a.IoT.DescribeThing(gctx, &iot.DescribeThingInput{ThingName: aws.String(name)})
			var notFound *types.ResourceNotFoundException
			if errors.As(err, &notFound) {
				absent[i] = true
				return nil
			}
			if err != nil {
				return fmt.Errorf("describe thing %s: %w", name, err)
			}
			found[i] = aws.ToString(out.ThingArn)
			if n := done.Add(1); n%100 == 0 {
				progress(ctx, n)
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	var arns []string
	for i, name := range sorted {
		if absent[i] {
			missing = append(missing, name)
		} else {
			arns = append(arns, found[i])
		}
	}
	for _, a := range listed {
		arns = append(arns, a)
	}
	// One order, by thing name, whichever way a thing was found.
	slices.SortFunc(arns, func(x, y string) int { return strings.Compare(arn.Name(x), arn.Name(y)) })
	if len(missing) > 0 {
		msg := fmt.Sprintf("%d target(s) are not registered: %s; register them (CreateThing) or remove them from the targets", len(missing), strings.Join(missing, ", "))
		return nil, invalidErr(msg, nil)
	}
	if len(arns) == 0 {
		return nil, invalidErr("the targets hold no things (empty thing groups?)", nil)
	}
	return &contract.ResolveTargetsResult{ThingArns: arns}, nil
}

// FreezeTargets resolves the rollout's targets once and puts each wave's devices in its own
// static thing group: the frozen plan, in the jobs service rather than in the workflow's
// history. Each wave's job then targets one group (CreateJob takes at most 100 targets). A
// retry makes each group hold exactly its wave's devices again.
func (a *Ops) FreezeTargets(ctx context.Context, in contract.FreezeTargetsInput) (*contract.FreezeTargetsResult, error) {
	targets, err := a.ResolveTargets(ctx, in.Request)
	if err != nil {
		return nil, err
	}
	sizes, err := contract.ParseWaves(in.Request.Waves)
	if err != nil {
		return nil, invalidErr(err.Error(), nil)
	}
	things := targets.ThingArns
	out := &contract.FreezeTargetsResult{Devices: len(things)}
	plan := contract.PlanWaves(len(things), sizes)
	if len(plan) == 1 && onlyGroups(in.Request.Targets) {
		// One wave over thing groups: its job targets them as they are (a SNAPSHOT job takes
		// their members once, when it is created), with no group and no call per device.
		out.Waves = []contract.FrozenWave{{Devices: len(things), Targets: in.Request.Targets}}
		return out, nil
	}
	prev := 0
	for i, cum := range plan {
		name := contract.WaveGroup(in.Request.RolloutID, i+1)
		groupArn, err := a.fillGroup(ctx, name, things[prev:cum])
		if err != nil {
			return nil, err
		}
		out.Waves = append(out.Waves, contract.FrozenWave{Devices: cum - prev, Group: name, GroupArn: groupArn})
		prev = cum
	}
	return out, nil
}

// onlyGroups reports whether targets are thing-group ARNs only, few enough for one job.
func onlyGroups(targets []string) bool {
	for _, t := range targets {
		if p, err := arn.ParseTarget(t); err != nil || p.Type != arn.TypeThingGroup {
			return false
		}
	}
	return len(targets) > 0 && len(targets) <= maxJobTargets
}

// ReleaseTargets deletes the rollout's thing groups; its devices leave them. A group that is
// gone already is fine.
func (a *Ops) ReleaseTargets(ctx context.Context, in contract.ReleaseTargetsInput) error {
	for _, g := range in.Groups {
		_, err := a.IoT.DeleteThingGroup(ctx, &iot.DeleteThingGroupInput{ThingGroupName: aws.String(g)})
		var notFound *types.ResourceNotFoundException
		if err != nil && !errors.As(err, &notFound) {
			return fmt.Errorf("delete thing group %s: %w", g, err)
		}
	}
	return nil
}

// fillGroup makes the static thing group name hold exactly things (ARNs) and returns its ARN.
func (a *Ops) fillGroup(ctx context.Context, name string, things []string) (string, error) {
	var groupArn string
	created, err := a.IoT.CreateThingGroup(ctx, &iot.CreateThingGroupInput{ThingGroupName: aws.String(name)})
	var exists *types.ResourceAlreadyExistsException
	switch {
	case errors.As(err, &exists):
		d, err := a.IoT.DescribeThingGroup(ctx, &iot.DescribeThingGroupInput{ThingGroupName: aws.String(name)})
		if err != nil {
			return "", fmt.Errorf("describe thing group %s: %w", name, err)
		}
		groupArn = aws.ToString(d.ThingGroupArn)
	case err != nil:
		return "", fmt.Errorf("create thing group %s: %w", name, err)
	default:
		groupArn = aws.ToString(created.ThingGroupArn)
	}
	want := make(map[string]bool, len(things))
	for _, t := range things {
		want[arn.Name(t)] = true
	}
	current, err := a.listGroup(ctx, name, false)
	if err != nil {
		return "", fmt.Errorf("list things in group %s: %w", name, err)
	}
	for _, t := range current {
		if want[t] {
			delete(want, t) // already in
			continue
		}
		if _, err := a.IoT.RemoveThingFromThingGroup(ctx, &iot.RemoveThingFromThingGroupInput{ThingGroupName: aws.String(name), ThingName: aws.String(t)}); err != nil {
			return "", fmt.Errorf("remove %s from group %s: %w", t, name, err)
		}
	}
	var done atomic.Int64
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(membershipConcurrency)
	for _, t := range things {
		thing := arn.Name(t)
		if !want[thing] {
			continue
		}
		g.Go(func() error {
			_, err := a.IoT.AddThingToThingGroup(gctx, &iot.AddThingToThingGroupInput{ThingGroupName: aws.String(name), ThingName: aws.String(thing)})
			var invalid *types.InvalidRequestException
			if errors.As(err, &invalid) {
				// A thing already in 10 groups, or in another group of this one's hierarchy.
				return invalidErr(fmt.Sprintf("device %s cannot join the rollout's group %s: %s", thing, name, aws.ToString(invalid.Message)), nil)
			}
			if err != nil {
				return fmt.Errorf("add %s to group %s: %w", thing, name, err)
			}
			if n := done.Add(1); n%100 == 0 {
				progress(ctx, n)
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return "", err
	}
	return groupArn, nil
}

func (a *Ops) groupMembers(ctx context.Context, group string) ([]string, error) {
	return a.listGroup(ctx, group, true)
}

// listGroup lists a group's things (with recursive, those of its descendants too).
func (a *Ops) listGroup(ctx context.Context, group string, recursive bool) ([]string, error) {
	var out []string
	p := iot.NewListThingsInThingGroupPaginator(a.IoT, &iot.ListThingsInThingGroupInput{ThingGroupName: aws.String(group), Recursive: recursive})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, err
		}
		out = append(out, page.Things...)
	}
	return out, nil
}

// describeConcurrency is how many DescribeThing calls ResolveTargets (and group membership
// calls FreezeTargets) makes at once.
const describeConcurrency = 8

// membershipConcurrency is how many AddThingToThingGroup calls FreezeTargets makes at once
// (the jobs service commits concurrent ones together).
const membershipConcurrency = 32

// maxJobTargets is AWS IoT's limit on a job's targets; more devices go in a thing group.
const maxJobTargets = 100

// UpdateDocument is the job document of a rollout's update: the release it names, where to
// fetch it (its package and, unless NoDelta, its bucket's chunk store, as presigned-URL
// placeholders), the bake time and the download rate cap.
func UpdateDocument(req contract.RolloutRequest) jobdoc.Document {
	doc := jobdoc.Document{
		Type: jobdoc.Type, SchemaVersion: jobdoc.SchemaVersion, Operation: jobdoc.OpUpdate,
		RolloutID: req.RolloutID, SoftwareToUpdate: req.SoftwareToUpdate, Version: req.Version,
		UpdateAgentLogLevel: req.UpdateAgentLogLevel, BakeSeconds: int(req.BakeTime / time.Second),
		DownloadBytesPerSecond: req.DownloadBytesPerSecond,
	}
	if a := req.Artifact; a != nil {
		doc.Artifact = jobdoc.PresignedArtifact(a.URL)
		if req.NoDelta {
			doc.Artifact.Chunks = ""
		}
	}
	return doc
}

// CreateJob creates the rollout's IoT job. The job ID is deterministic, so a retry (or a
// replayed workflow) that finds the job already there takes it as created.
func (a *Ops) CreateJob(ctx context.Context, in contract.CreateJobInput) (*contract.CreateJobResult, error) {
	req := in.Request
	doc := UpdateDocument(req)
	body, err := doc.Marshal()
	if err != nil {
		return nil, invalidErr(err.Error(), nil)
	}
	desc := fmt.Sprintf("otaflow rollout %s: update %s to %s on %s/%s", req.RolloutID, req.SoftwareToUpdate, req.Version, req.OperatingSystem, req.Architecture)
	if in.Wave > 0 {
		desc += fmt.Sprintf(" (wave %d)", in.Wave)
	}
	targets := in.ThingArns
	if in.GroupArn != "" {
		targets = []string{in.GroupArn}
	}
	return a.createJob(ctx, in.JobID, targets, body, desc, req)
}

func (a *Ops) createJob(ctx context.Context, jobID string, things []string, body, desc string, req contract.RolloutRequest) (*contract.CreateJobResult, error) {
	in := &iot.CreateJobInput{
		JobId:           aws.String(jobID),
		Targets:         things,
		Document:        aws.String(body),
		Description:     aws.String(desc),
		TargetSelection: types.TargetSelectionSnapshot,
		PresignedUrlConfig: &types.PresignedUrlConfig{
			RoleArn: aws.String(req.S3URLSignerRole), ExpiresInSec: aws.Int64(3600),
		},
	}
	if req.DeviceTimeout > 0 {
		in.TimeoutConfig = &types.TimeoutConfig{InProgressTimeoutInMinutes: aws.Int64(int64(req.DeviceTimeout / time.Minute))}
	}
	if req.RateLimitPerMinute > 0 {
		in.JobExecutionsRolloutConfig = &types.JobExecutionsRolloutConfig{MaximumPerMinute: aws.Int32(int32(req.RateLimitPerMinute))}
	}
	if req.Retries > 0 {
		in.JobExecutionsRetryConfig = &types.JobExecutionsRetryConfig{CriteriaList: []types.RetryCriteria{
			{FailureType: types.RetryableFailureTypeFailed, NumberOfRetries: aws.Int32(int32(req.Retries))},
			{FailureType: types.RetryableFailureTypeTimedOut, NumberOfRetries: aws.Int32(int32(req.Retries))},
		}}
	}
	out, err := a.IoT.CreateJob(ctx, in)
	var exists *types.ResourceAlreadyExistsException
	if errors.As(err, &exists) {
		d, derr := a.IoT.DescribeJob(ctx, &iot.DescribeJobInput{JobId: aws.String(jobID)})
		if derr != nil {
			return nil, fmt.Errorf("job %s exists but cannot be described: %w", jobID, derr)
		}
		return &contract.CreateJobResult{JobID: jobID, JobArn: aws.ToString(d.Job.JobArn)}, nil
	}
	var invalid *types.InvalidRequestException
	if errors.As(err, &invalid) {
		return nil, invalidErr("the jobs service refused the job: "+aws.ToString(invalid.Message), nil)
	}
	if err != nil {
		return nil, fmt.Errorf("create job %s: %w", jobID, err)
	}
	return &contract.CreateJobResult{JobID: aws.ToString(out.JobId), JobArn: aws.ToString(out.JobArn)}, nil
}

// AwaitJob polls the job until every execution is terminal or MaxWait passes, heartbeating the
// counts. It returns aggregates only: per-device state stays in the jobs service.
func (a *Ops) AwaitJob(ctx context.Context, in contract.AwaitJobInputMax) (*contract.AwaitJobResult, error) {
	poll := in.PollInterval
	if poll <= 0 {
		poll = 2 * time.Second
	}
	deadline := time.Now().Add(in.MaxWait)
	for {
		counts, err := a.counts(ctx, in.JobID)
		if err != nil {
			return nil, err
		}
		progress(ctx, counts)
		if crossed, why := in.Abort.Crossed(counts); crossed {
			return &contract.AwaitJobResult{Counts: counts, Aborted: why}, nil
		}
		if counts.Total() > 0 && counts.Pending() == 0 {
			return &contract.AwaitJobResult{Counts: counts, Done: true}, nil
		}
		if !time.Now().Add(poll).Before(deadline) {
			return &contract.AwaitJobResult{Counts: counts}, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(poll):
		}
	}
}

// CreateRollbackJobs finds every device that succeeded in the rollout's jobs and creates one
// rollback job per previous version (the agent reports it in statusDetails.previousVersion).
// Job IDs are deterministic, so a retry finds the jobs it made before.
func (a *Ops) CreateRollbackJobs(ctx context.Context, in contract.RollbackInput) (*contract.RollbackResult, error) {
	byVersion := map[string][]string{}
	var unknown []string
	devices := 0
	for _, jobID := range in.JobIDs {
		p := iot.NewListJobExecutionsForJobPaginator(a.IoT, &iot.ListJobExecutionsForJobInput{JobId: aws.String(jobID), Status: types.JobExecutionStatusSucceeded})
		for p.HasMorePages() {
			page, err := p.NextPage(ctx)
			if err != nil {
				return nil, fmt.Errorf("list succeeded devices of %s: %w", jobID, err)
			}
			for _, s := range page.ExecutionSummaries {
				arn := aws.ToString(s.ThingArn)
				name := arn[strings.LastIndex(arn, "/")+1:]
				ex, err := a.IoT.DescribeJobExecution(ctx, &iot.DescribeJobExecutionInput{JobId: aws.String(jobID), ThingName: aws.String(name)})
				if err != nil {
					return nil, fmt.Errorf("describe %s's execution of %s: %w", name, jobID, err)
				}
				devices++
				prev := ""
				if ex.Execution.StatusDetails != nil {
					prev = ex.Execution.StatusDetails.DetailsMap["previousVersion"]
				}
				if prev == "" {
					unknown = append(unknown, name)
					continue
				}
				byVersion[prev] = append(byVersion[prev], arn)
				progress(ctx, devices)
			}
		}
	}
	// Devices the service timed out that installed the update all the same run it: they are
	// rolled back too (device truth, late.go).
	late, note, err := a.LateDevices(ctx, in.JobIDs)
	if err != nil {
		return nil, err
	}
	for _, d := range late {
		devices++
		if d.Previous == "" {
			unknown = append(unknown, d.Thing)
			continue
		}
		thing, err := a.IoT.DescribeThing(ctx, &iot.DescribeThingInput{ThingName: aws.String(d.Thing)})
		if err != nil {
			return nil, fmt.Errorf("describe %s: %w", d.Thing, err)
		}
		byVersion[d.Previous] = append(byVersion[d.Previous], aws.ToString(thing.ThingArn))
	}
	versions := make([]string, 0, len(byVersion))
	for v := range byVersion {
		versions = append(versions, v)
	}
	slices.Sort(versions)
	out := &contract.RollbackResult{Devices: devices, UpdatedLate: len(late)}
	for k, v := range versions {
		req := in.Request
		doc := jobdoc.Document{Type: jobdoc.Type, SchemaVersion: jobdoc.SchemaVersion, Operation: jobdoc.OpRollback,
			RolloutID: req.RolloutID, SoftwareToUpdate: req.SoftwareToUpdate, Version: v, UpdateAgentLogLevel: req.UpdateAgentLogLevel}
		// The version rolled back to is still in its slot on the device: no artifact; its
		// health check is the one signed with that release.
		body, err := doc.Marshal()
		if err != nil {
			return nil, invalidErr(err.Error(), nil)
		}
		id := contract.RollbackJobID(req.RolloutID, k+1)
		desc := fmt.Sprintf("otaflow rollout %s: roll %s back to %s on %d devices", req.RolloutID, req.SoftwareToUpdate, v, len(byVersion[v]))
		req.Retries, req.DeviceTimeout = 0, 0
		targets := byVersion[v]
		if len(targets) > maxJobTargets {
			group := contract.RollbackGroup(req.RolloutID, k+1)
			groupArn, err := a.fillGroup(ctx, group, targets)
			if err != nil {
				return nil, err
			}
			targets = []string{groupArn}
			out.Groups = append(out.Groups, group)
		}
		if _, err := a.createJob(ctx, id, targets, body, desc, req); err != nil {
			return nil, err
		}
		out.JobIDs = append(out.JobIDs, id)
	}
	if len(unknown) > 0 {
		out.Failed = len(unknown)
		out.Message = fmt.Sprintf("%d device(s) did not report their previous version and were not rolled back: %s", len(unknown), strings.Join(unknown, ", "))
	}
	if note != "" {
		out.Message = strings.TrimSpace(out.Message + " " + note)
	}
	return out, nil
}

// FailedDevices lists (up to Limit) the devices whose execution of the jobs did not succeed.
func (a *Ops) FailedDevices(ctx context.Context, in contract.FailedDevicesInput) ([]string, error) {
	var out []string
	for _, jobID := range in.JobIDs {
		p := iot.NewListJobExecutionsForJobPaginator(a.IoT, &iot.ListJobExecutionsForJobInput{JobId: aws.String(jobID)})
		for p.HasMorePages() && len(out) < in.Limit {
			page, err := p.NextPage(ctx)
			if err != nil {
				return nil, fmt.Errorf("list executions of %s: %w", jobID, err)
			}
			for _, s := range page.ExecutionSummaries {
				if s.JobExecutionSummary.Status != types.JobExecutionStatusSucceeded && len(out) < in.Limit {
					arn := aws.ToString(s.ThingArn)
					out = append(out, arn[strings.LastIndex(arn, "/")+1:])
				}
			}
		}
	}
	return out, nil
}

// CancelJob cancels the job, force-canceling executions in progress, and returns the counts
// after cancellation.
func (a *Ops) CancelJob(ctx context.Context, in contract.CancelJobInput) (*contract.Counts, error) {
	_, err := a.IoT.CancelJob(ctx, &iot.CancelJobInput{
		JobId: aws.String(in.JobID), Force: true, Comment: aws.String(truncate(in.Reason, 2028)), ReasonCode: aws.String("OTAFLOW_ABORT"),
	})
	if err != nil {
		// A job whose devices all finished meanwhile cannot be canceled, and needs not be.
		d, derr := a.IoT.DescribeJob(ctx, &iot.DescribeJobInput{JobId: aws.String(in.JobID)})
		if derr != nil || d.Job.Status != types.JobStatusCompleted {
			return nil, fmt.Errorf("cancel job %s: %w", in.JobID, err)
		}
	}
	counts, err := a.counts(ctx, in.JobID)
	if err != nil {
		return nil, err
	}
	return &counts, nil
}

func (a *Ops) counts(ctx context.Context, jobID string) (contract.Counts, error) {
	out, err := a.IoT.DescribeJob(ctx, &iot.DescribeJobInput{JobId: aws.String(jobID)})
	if err != nil {
		return contract.Counts{}, fmt.Errorf("describe job %s: %w", jobID, err)
	}
	return CountsOf(out.Job.JobProcessDetails), nil
}

// CountsOf converts AWS's jobProcessDetails.
func CountsOf(p *types.JobProcessDetails) contract.Counts {
	if p == nil {
		return contract.Counts{}
	}
	n := func(v *int32) int { return int(aws.ToInt32(v)) }
	return contract.Counts{
		Queued: n(p.NumberOfQueuedThings), InProgress: n(p.NumberOfInProgressThings),
		Succeeded: n(p.NumberOfSucceededThings), Failed: n(p.NumberOfFailedThings),
		Rejected: n(p.NumberOfRejectedThings), TimedOut: n(p.NumberOfTimedOutThings),
		Canceled: n(p.NumberOfCanceledThings), Removed: n(p.NumberOfRemovedThings),
	}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}
