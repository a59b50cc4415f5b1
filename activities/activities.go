// Package activities are the rollout's side effects: every call to AWS IoT (or the local jobs
// service, which speaks the same API) goes through aws-sdk-go-v2's iot client here.
package activities

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/iot"
	"github.com/aws/aws-sdk-go-v2/service/iot/types"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/worker"

	"github.com/otaflow/otaflow/internal/jobdoc"
	"github.com/otaflow/otaflow/workflows"
)

// IoT is the part of the AWS IoT API the activities use; *iot.Client satisfies it.
type IoT interface {
	DescribeThing(context.Context, *iot.DescribeThingInput, ...func(*iot.Options)) (*iot.DescribeThingOutput, error)
	CreateJob(context.Context, *iot.CreateJobInput, ...func(*iot.Options)) (*iot.CreateJobOutput, error)
	DescribeJob(context.Context, *iot.DescribeJobInput, ...func(*iot.Options)) (*iot.DescribeJobOutput, error)
	CancelJob(context.Context, *iot.CancelJobInput, ...func(*iot.Options)) (*iot.CancelJobOutput, error)
}

var _ IoT = (*iot.Client)(nil)

// Activities holds the activities' dependencies.
type Activities struct {
	IoT IoT
}

// Register registers every activity under its API name.
func (a *Activities) Register(w worker.ActivityRegistry) {
	w.RegisterActivityWithOptions(a.ResolveTargets, activity.RegisterOptions{Name: workflows.ActivityResolveTargets})
	w.RegisterActivityWithOptions(a.CreateJob, activity.RegisterOptions{Name: workflows.ActivityCreateJob})
	w.RegisterActivityWithOptions(a.AwaitJob, activity.RegisterOptions{Name: workflows.ActivityAwaitJob})
	w.RegisterActivityWithOptions(a.CancelJob, activity.RegisterOptions{Name: workflows.ActivityCancelJob})
}

// ResolveTargets checks that every target thing exists and returns their ARNs, so an invalid
// request creates no job.
func (a *Activities) ResolveTargets(ctx context.Context, req workflows.RolloutRequest) (*workflows.ResolveTargetsResult, error) {
	var arns, missing []string
	seen := map[string]bool{}
	for _, target := range req.Targets {
		name, err := thingName(target)
		if err != nil {
			return nil, temporal.NewNonRetryableApplicationError(err.Error(), workflows.ErrInvalidRequest, nil)
		}
		out, err := a.IoT.DescribeThing(ctx, &iot.DescribeThingInput{ThingName: aws.String(name)})
		var notFound *types.ResourceNotFoundException
		if errors.As(err, &notFound) {
			missing = append(missing, name)
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("describe thing %s: %w", name, err)
		}
		arn := aws.ToString(out.ThingArn)
		if !seen[arn] {
			seen[arn] = true
			arns = append(arns, arn)
		}
	}
	if len(missing) > 0 {
		msg := fmt.Sprintf("%d target thing(s) are not registered: %s; register them (CreateThing) or remove them from the targets", len(missing), strings.Join(missing, ", "))
		return nil, temporal.NewNonRetryableApplicationError(msg, workflows.ErrInvalidRequest, nil)
	}
	return &workflows.ResolveTargetsResult{ThingArns: arns}, nil
}

// thingName takes a thing ARN or name and returns the name.
func thingName(target string) (string, error) {
	if !strings.HasPrefix(target, "arn:") {
		return target, nil
	}
	parts := strings.SplitN(target, ":", 6)
	if len(parts) == 6 && parts[2] == "iot" {
		if name, ok := strings.CutPrefix(parts[5], "thing/"); ok && name != "" {
			return name, nil
		}
		if strings.HasPrefix(parts[5], "thinggroup/") {
			return "", fmt.Errorf("target %s is a thing group; thing-group targets are not supported yet, list its things", target)
		}
	}
	return "", fmt.Errorf("target %q is not a thing ARN (arn:aws:iot:REGION:ACCOUNT:thing/NAME)", target)
}

// CreateJob creates the rollout's IoT job. The job ID is deterministic, so a retry (or a
// replayed workflow) that finds the job already there takes it as created.
func (a *Activities) CreateJob(ctx context.Context, in workflows.CreateJobInput) (*workflows.CreateJobResult, error) {
	req := in.Request
	doc := jobdoc.Document{
		Type: jobdoc.Type, SchemaVersion: jobdoc.SchemaVersion, Operation: jobdoc.OpUpdate,
		RolloutID: req.RolloutID, SoftwareToUpdate: req.SoftwareToUpdate, Version: req.Version,
		UpdateAgentLogLevel: req.UpdateAgentLogLevel,
	}
	if len(req.SimulateFailures) > 0 || req.SimulateInstallTime > 0 {
		doc.Simulate = &jobdoc.Simulation{FailThings: req.SimulateFailures, InstallMillis: int(req.SimulateInstallTime / time.Millisecond)}
	}
	body, err := doc.Marshal()
	if err != nil {
		return nil, temporal.NewNonRetryableApplicationError(err.Error(), workflows.ErrInvalidRequest, nil)
	}
	desc := fmt.Sprintf("otaflow rollout %s: update %s to %s on %s/%s", req.RolloutID, req.SoftwareToUpdate, req.Version, req.OperatingSystem, req.Architecture)
	out, err := a.IoT.CreateJob(ctx, &iot.CreateJobInput{
		JobId:           aws.String(in.JobID),
		Targets:         in.ThingArns,
		Document:        aws.String(body),
		Description:     aws.String(desc),
		TargetSelection: types.TargetSelectionSnapshot,
		PresignedUrlConfig: &types.PresignedUrlConfig{
			RoleArn: aws.String(req.S3URLSignerRole), ExpiresInSec: aws.Int64(3600),
		},
	})
	var exists *types.ResourceAlreadyExistsException
	if errors.As(err, &exists) {
		d, derr := a.IoT.DescribeJob(ctx, &iot.DescribeJobInput{JobId: aws.String(in.JobID)})
		if derr != nil {
			return nil, fmt.Errorf("job %s exists but cannot be described: %w", in.JobID, derr)
		}
		return &workflows.CreateJobResult{JobID: in.JobID, JobArn: aws.ToString(d.Job.JobArn)}, nil
	}
	var invalid *types.InvalidRequestException
	if errors.As(err, &invalid) {
		return nil, temporal.NewNonRetryableApplicationError("the jobs service refused the job: "+aws.ToString(invalid.Message), workflows.ErrInvalidRequest, nil)
	}
	if err != nil {
		return nil, fmt.Errorf("create job %s: %w", in.JobID, err)
	}
	return &workflows.CreateJobResult{JobID: aws.ToString(out.JobId), JobArn: aws.ToString(out.JobArn)}, nil
}

// AwaitJob polls the job until every execution is terminal or MaxWait passes, heartbeating the
// counts. It returns aggregates only: per-device state stays in the jobs service.
func (a *Activities) AwaitJob(ctx context.Context, in workflows.AwaitJobInputMax) (*workflows.AwaitJobResult, error) {
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
		activity.RecordHeartbeat(ctx, counts)
		if counts.Total() > 0 && counts.Pending() == 0 {
			return &workflows.AwaitJobResult{Counts: counts, Done: true}, nil
		}
		if !time.Now().Add(poll).Before(deadline) {
			return &workflows.AwaitJobResult{Counts: counts}, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(poll):
		}
	}
}

// CancelJob cancels the job, force-canceling executions in progress, and returns the counts
// after cancellation.
func (a *Activities) CancelJob(ctx context.Context, in workflows.CancelJobInput) (*workflows.Counts, error) {
	_, err := a.IoT.CancelJob(ctx, &iot.CancelJobInput{
		JobId: aws.String(in.JobID), Force: true, Comment: aws.String(truncate(in.Reason, 2028)), ReasonCode: aws.String("OTAFLOW_ABORT"),
	})
	var conflict *types.InvalidStateTransitionException
	if err != nil && !errors.As(err, &conflict) { // a job that completed meanwhile is fine
		return nil, fmt.Errorf("cancel job %s: %w", in.JobID, err)
	}
	counts, err := a.counts(ctx, in.JobID)
	if err != nil {
		return nil, err
	}
	return &counts, nil
}

func (a *Activities) counts(ctx context.Context, jobID string) (workflows.Counts, error) {
	out, err := a.IoT.DescribeJob(ctx, &iot.DescribeJobInput{JobId: aws.String(jobID)})
	if err != nil {
		return workflows.Counts{}, fmt.Errorf("describe job %s: %w", jobID, err)
	}
	return CountsOf(out.Job.JobProcessDetails), nil
}

// CountsOf converts AWS's jobProcessDetails.
func CountsOf(p *types.JobProcessDetails) workflows.Counts {
	if p == nil {
		return workflows.Counts{}
	}
	n := func(v *int32) int { return int(aws.ToInt32(v)) }
	return workflows.Counts{
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
