package rolloutops

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/iot"
	"github.com/aws/aws-sdk-go-v2/service/iot/types"

	"github.com/otaflow/otaflow/internal/components"
	"github.com/otaflow/otaflow/internal/jobdoc"
	"github.com/otaflow/otaflow/workflows/contract"
)

// SyncDeployment brings every member of the group that has no job of this revision yet onto
// it: it resolves the component versions now (so a device joining later gets the versions that
// fit at that moment) and creates one IoT job for those devices. Devices already deployed are
// left alone. Running it twice creates nothing twice: devices with a job are skipped.
func (a *Ops) SyncDeployment(ctx context.Context, in contract.SyncInput) (*contract.SyncResult, error) {
	if a.Catalog == nil {
		return nil, invalidErr("this worker has no component catalog (--catalog)", nil)
	}
	members, err := a.groupMembers(ctx, in.ThingGroup)
	var notFound *types.ResourceNotFoundException
	if errors.As(err, &notFound) {
		return nil, invalidErr(fmt.Sprintf("thing group %s does not exist", in.ThingGroup), nil)
	}
	if err != nil {
		return nil, fmt.Errorf("list things in %s: %w", in.ThingGroup, err)
	}
	prefix := contract.DeploymentJobPrefix(in.DeploymentID, in.Revision)
	var todo []string
	jobs := 0
	for i, thing := range members {
		has, n, err := a.hasJob(ctx, thing, prefix)
		if err != nil {
			return nil, err
		}
		jobs = max(jobs, n)
		if !has {
			todo = append(todo, thing)
		}
		if i%100 == 0 {
			progress(ctx, i)
		}
	}
	out := &contract.SyncResult{Members: len(members)}
	if len(todo) == 0 {
		return out, nil
	}
	resolved, err := a.Catalog.Resolve(in.Components)
	if err != nil {
		return nil, invalidErr(err.Error(), nil)
	}
	doc := jobdoc.Document{Type: jobdoc.Type, SchemaVersion: jobdoc.SchemaVersion, Operation: jobdoc.OpUpdate,
		RolloutID: in.DeploymentID, SoftwareToUpdate: jobdoc.SoftwareComponents, Components: resolved, Version: resolved[components.Nucleus]}
	body, err := doc.Marshal()
	if err != nil {
		return nil, invalidErr(err.Error(), nil)
	}
	// A job takes at most 100 targets (AWS IoT): more devices get more jobs of the revision.
	var jobID string
	for chunk := range slices.Chunk(todo, maxJobTargets) {
		jobs++
		jobID = fmt.Sprintf("%s%d", prefix, jobs)
		_, err = a.IoT.CreateJob(ctx, &iot.CreateJobInput{
			JobId: aws.String(jobID), Targets: chunk, Document: aws.String(body), TargetSelection: types.TargetSelectionSnapshot,
			Description: aws.String(fmt.Sprintf("otaflow deployment %s revision %d to %s: %s", in.DeploymentID, in.Revision, in.ThingGroup, describe(resolved))),
		})
		if err != nil {
			return nil, fmt.Errorf("create deployment job %s: %w", jobID, err)
		}
	}
	out.Deployed, out.JobID, out.Resolved = len(todo), jobID, resolved
	return out, nil
}

// hasJob reports whether thing has an execution of a job starting with prefix, and the
// highest job number of that prefix it has seen.
func (a *Ops) hasJob(ctx context.Context, thing, prefix string) (bool, int, error) {
	p := iot.NewListJobExecutionsForThingPaginator(a.IoT, &iot.ListJobExecutionsForThingInput{ThingName: aws.String(thing)})
	has, highest := false, 0
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return false, 0, fmt.Errorf("list jobs of %s: %w", thing, err)
		}
		for _, s := range page.ExecutionSummaries {
			id := aws.ToString(s.JobId)
			if rest, ok := strings.CutPrefix(id, prefix); ok {
				has = true
				var n int
				fmt.Sscan(rest, &n)
				highest = max(highest, n)
			}
		}
	}
	return has, highest, nil
}

func describe(m map[string]string) string {
	var parts []string
	for k, v := range m {
		parts = append(parts, k+" "+v)
	}
	return strings.Join(parts, ", ")
}
