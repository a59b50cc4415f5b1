package rolloutclient

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/iot"
	commonpb "go.temporal.io/api/common/v1"
	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/temporal"

	"github.com/otaflow/otaflow/internal/rolloutops"
	"github.com/otaflow/otaflow/workflows/contract"
)

// ErrNoRollout is returned (wrapped) when no rollout has the ID asked for.
var ErrNoRollout = errors.New("no such rollout")

// WorkflowID finds the workflow of a rollout ID: the one every command accepts, as `rollout
// list` prints it. A rollout started by hand runs as "rollout-ID"; a scheduled run's workflow
// ID carries the run's time in a form the rollout ID cannot (the schedule's "rollout-nightly-
// 2026-12-01T01:00:00Z" runs rollout "nightly-2026-12-01T01-00-00Z"), so that one is found
// by its OtaflowRolloutId search attribute. A workflow ID is accepted as well.
func WorkflowID(ctx context.Context, c client.Client, rolloutID string) (string, error) {
	candidates := []string{contract.RolloutWorkflowID(rolloutID)}
	if strings.HasPrefix(rolloutID, "rollout-") {
		candidates = append(candidates, rolloutID)
	}
	for _, id := range candidates {
		_, err := c.DescribeWorkflowExecution(ctx, id, "")
		if err == nil {
			return id, nil
		}
		var nf *serviceerror.NotFound
		if !errors.As(err, &nf) {
			return "", fmt.Errorf("look up rollout %s: %w", rolloutID, err)
		}
	}
	resp, err := c.ListWorkflow(ctx, &workflowservice.ListWorkflowExecutionsRequest{
		Query:    fmt.Sprintf("WorkflowType = 'Rollout' AND %s = %q", contract.SearchRolloutID.GetName(), rolloutID),
		PageSize: 1,
	})
	if err != nil {
		return "", fmt.Errorf("look up rollout %s: %w", rolloutID, err)
	}
	if len(resp.Executions) == 0 {
		return "", fmt.Errorf("%w %q: `starter rollout list` shows the rollout IDs", ErrNoRollout, rolloutID)
	}
	return resp.Executions[0].GetExecution().GetWorkflowId(), nil
}

// JobDescriber is the one IoT call live status needs (an *iot.Client has it).
type JobDescriber interface {
	DescribeJob(ctx context.Context, in *iot.DescribeJobInput, opts ...func(*iot.Options)) (*iot.DescribeJobOutput, error)
}

// LiveStatus is the rollout's status with every started wave's counts read from the jobs
// service now, not from the rollout's last report (up to an hour old while a wave runs). A job that
// cannot be read keeps the rollout's counts for it; Stale says which.
func LiveStatus(ctx context.Context, c client.Client, iotc JobDescriber, rolloutID string) (contract.RolloutResult, []string, error) {
	res, err := Status(ctx, c, rolloutID)
	if err != nil || iotc == nil {
		return res, nil, err
	}
	var stale []string
	var total contract.Counts
	for i := range res.Waves {
		w := &res.Waves[i]
		if w.JobID == "" {
			// A wave without a job: its devices wait (or, the rollout over, never will); the
			// wave's row says so as the totals do.
			if w.State == contract.WavePending {
				w.Counts = contract.Counts{Queued: w.Devices}
			} else {
				w.Counts = contract.Counts{Canceled: w.Devices}
			}
			total = total.Add(w.Counts)
			continue
		}
		if w.State == contract.WaveRunning || w.State == contract.WaveCanceled || w.State == contract.WaveFailed {
			d, err := iotc.DescribeJob(ctx, &iot.DescribeJobInput{JobId: aws.String(w.JobID)})
			if err == nil && d.Job != nil {
				w.Counts = rolloutops.CountsOf(d.Job.JobProcessDetails)
			} else {
				stale = append(stale, w.JobID)
			}
		}
		total = total.Add(w.Counts)
	}
	res.Counts = total
	if res.Rollback == nil && res.State == contract.StateRollingBack {
		res.Rollback = rollbackProgress(ctx, iotc, res.RolloutID)
	}
	if res.Rollback == nil {
		res.Rollback = separateRollback(ctx, c, res.RolloutID)
	}
	return res, stale, nil
}

// rollbackProgress reads the rollback jobs of a rollout rolling back (otaflow-<id>-rb1, …)
// live, so that the wait shows progress; nil before the first exists.
func rollbackProgress(ctx context.Context, iotc JobDescriber, rolloutID string) *contract.RollbackResult {
	var rb contract.RollbackResult
	var c contract.Counts
	for k := 1; ; k++ {
		id := contract.RollbackJobID(rolloutID, k)
		d, err := iotc.DescribeJob(ctx, &iot.DescribeJobInput{JobId: aws.String(id)})
		if err != nil || d.Job == nil {
			break
		}
		rb.JobIDs = append(rb.JobIDs, id)
		c = c.Add(rolloutops.CountsOf(d.Job.JobProcessDetails))
	}
	if len(rb.JobIDs) == 0 {
		return nil
	}
	rb.Devices, rb.RolledBack, rb.Failed = c.Total(), c.Succeeded, c.Failed+c.Rejected+c.TimedOut+c.Canceled+c.Removed
	rb.Message = fmt.Sprintf("rolling back: %d of %d devices done", c.Total()-c.Pending(), c.Total())
	return &rb
}

// separateRollback is the outcome of `rollout rollback` (a workflow of its own, started after
// the rollout ended), so that the rollout's status shows it: its result once it has ended, a
// note while it runs; nil when there is none.
func separateRollback(ctx context.Context, c client.Client, rolloutID string) *contract.RollbackResult {
	id := contract.RollbackWorkflowID(rolloutID)
	d, err := c.DescribeWorkflowExecution(ctx, id, "")
	if err != nil || d.GetWorkflowExecutionInfo() == nil {
		return nil
	}
	if d.GetWorkflowExecutionInfo().GetStatus() == enumspb.WORKFLOW_EXECUTION_STATUS_RUNNING {
		return &contract.RollbackResult{Message: "rolling back (workflow " + id + "; `starter rollout rollback --wait " + rolloutID + "` waits for it)"}
	}
	rb, err := RollbackResult(ctx, c.GetWorkflow(ctx, id, ""))
	if err != nil && rb.Message == "" {
		rb.Message = err.Error()
	}
	return &rb
}

// Control sends one of the rollout's updates (pause, resume, approve, cancel) and returns the
// rollout as the update left it. The error is the rollout's own refusal when it refuses.
func Control(ctx context.Context, c client.Client, rolloutID, update string, args ...any) (contract.RolloutResult, error) {
	var res contract.RolloutResult
	wid, err := WorkflowID(ctx, c, rolloutID)
	if err != nil {
		return res, err
	}
	h, err := c.UpdateWorkflow(ctx, client.UpdateWorkflowOptions{
		WorkflowID: wid, UpdateName: update, Args: args, WaitForStage: client.WorkflowUpdateStageCompleted,
	})
	if err != nil {
		var nf *serviceerror.NotFound
		if errors.As(err, &nf) && strings.Contains(nf.Error(), "already completed") {
			// Temporal's words ("workflow execution already completed") say less than the
			// rollout's own state.
			if st, serr := Status(ctx, c, rolloutID); serr == nil {
				return st, fmt.Errorf("rollout %s has ended (%s): there is nothing left to %s", rolloutID, st.State, update)
			}
			return res, fmt.Errorf("rollout %s has ended: there is nothing left to %s", rolloutID, update)
		}
		return res, fmt.Errorf("%s rollout %s: %s", update, rolloutID, serverMessage(err))
	}
	if err := h.Get(ctx, &res); err != nil {
		return res, fmt.Errorf("%s rollout %s: %s", update, rolloutID, serverMessage(err))
	}
	return res, nil
}

// RootMessage is an error's innermost message: what actually went wrong.
func RootMessage(err error) string { return serverMessage(err) }

// serverMessage is what the server said: the SDK wraps the server's error in its own, and the
// innermost one names the actual problem (a validator's refusal, a finished workflow).
func serverMessage(err error) string {
	for {
		next := errors.Unwrap(err)
		if next == nil {
			return err.Error()
		}
		err = next
	}
}

// IoTReader is what reading a rollout's jobs needs (an *iot.Client has it).
type IoTReader interface {
	JobDescriber
	ListJobExecutionsForJob(ctx context.Context, in *iot.ListJobExecutionsForJobInput, opts ...func(*iot.Options)) (*iot.ListJobExecutionsForJobOutput, error)
	DescribeJobExecution(ctx context.Context, in *iot.DescribeJobExecutionInput, opts ...func(*iot.Options)) (*iot.DescribeJobExecutionOutput, error)
}

// DeviceResult is one device's execution of one of a rollout's jobs.
type DeviceResult struct {
	Thing   string `json:"thing"`
	JobID   string `json:"jobId"`
	Wave    int    `json:"wave,omitempty"`
	Status  string `json:"status"`
	Reason  string `json:"reason,omitempty"`
	Version string `json:"installedVersion,omitempty"`
	// Previous is the version the device had before (what a rollback returns it to).
	Previous  string    `json:"previousVersion,omitempty"`
	UpdatedAt time.Time `json:"updatedAt,omitempty"`
	// Late: the service timed the execution out, but the device installed the update and
	// runs Version (its inventory says so).
	Late bool `json:"updatedLate,omitempty"`
	// How the device downloaded the release, as its agent reported (package delta): "delta"
	// or "full", why full when a delta was offered, the bytes it fetched and the full size.
	Download      string `json:"download,omitempty"`
	DownloadNote  string `json:"downloadNote,omitempty"`
	BytesFetched  int64  `json:"bytesFetched,omitempty"`
	ArtifactBytes int64  `json:"artifactBytes,omitempty"`
}

// DownloadTotals sums what devices downloaded.
type DownloadTotals struct {
	Delta         int   `json:"delta"` // devices by how they downloaded
	Full          int   `json:"full"`
	BytesFetched  int64 `json:"bytesFetched"`
	ArtifactBytes int64 `json:"artifactBytes"` // what full downloads would have fetched
}

// Downloads sums the downloads devices reported.
func Downloads(devices []DeviceResult) DownloadTotals {
	var t DownloadTotals
	for _, d := range devices {
		switch d.Download {
		case "delta":
			t.Delta++
		case "full":
			t.Full++
		default:
			continue
		}
		t.BytesFetched += d.BytesFetched
		t.ArtifactBytes += d.ArtifactBytes
	}
	return t
}

// DeviceResults lists the devices of the rollout's started waves (and rollback jobs) with
// their status; with failedOnly, only those that did not succeed, each with the reason its
// agent reported. At most limit devices (0: no limit) are read in full.
func DeviceResults(ctx context.Context, iotc IoTReader, res contract.RolloutResult, failedOnly bool, limit int) ([]DeviceResult, error) {
	type job struct {
		id   string
		wave int
	}
	var jobs []job
	for _, w := range res.Waves {
		if w.JobID != "" {
			jobs = append(jobs, job{w.JobID, w.Wave})
		}
	}
	if rb := res.Rollback; rb != nil {
		for _, id := range rb.JobIDs {
			jobs = append(jobs, job{id, 0})
		}
	}
	var out []DeviceResult
	for _, j := range jobs {
		p := iot.NewListJobExecutionsForJobPaginator(iotc, &iot.ListJobExecutionsForJobInput{JobId: aws.String(j.id)})
		for p.HasMorePages() {
			if limit > 0 && len(out) >= limit {
				return out, nil
			}
			page, err := p.NextPage(ctx)
			if err != nil {
				return out, fmt.Errorf("list the devices of job %s: %w", j.id, err)
			}
			for _, s := range page.ExecutionSummaries {
				st := string(s.JobExecutionSummary.Status)
				if failedOnly && (st == "SUCCEEDED" || st == "QUEUED" || st == "IN_PROGRESS") {
					continue
				}
				if limit > 0 && len(out) >= limit {
					return out, nil
				}
				thing := aws.ToString(s.ThingArn)
				thing = thing[strings.LastIndex(thing, "/")+1:]
				d := DeviceResult{Thing: thing, JobID: j.id, Wave: j.wave, Status: st, UpdatedAt: aws.ToTime(s.JobExecutionSummary.LastUpdatedAt)}
				e, err := iotc.DescribeJobExecution(ctx, &iot.DescribeJobExecutionInput{JobId: aws.String(j.id), ThingName: aws.String(thing)})
				if err == nil && e.Execution != nil {
					if sd := e.Execution.StatusDetails; sd != nil {
						m := sd.DetailsMap
						d.Reason, d.Version, d.Previous = m["reason"], m["installedVersion"], m["previousVersion"]
						d.Download, d.DownloadNote = m["download"], m["downloadNote"]
						d.BytesFetched, _ = strconv.ParseInt(m["bytesFetched"], 10, 64)
						d.ArtifactBytes, _ = strconv.ParseInt(m["artifactBytes"], 10, 64)
					}
				}
				out = append(out, d)
			}
		}
	}
	return out, nil
}

// Request reads the request a rollout was started with, from its workflow's first event.
func Request(ctx context.Context, c client.Client, workflowID string) (contract.RolloutRequest, error) {
	var req contract.RolloutRequest
	it := c.GetWorkflowHistory(ctx, workflowID, "", false, enumspb.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
	if !it.HasNext() {
		return req, fmt.Errorf("rollout workflow %s has no history", workflowID)
	}
	ev, err := it.Next()
	if err != nil {
		return req, fmt.Errorf("read rollout workflow %s: %w", workflowID, err)
	}
	attrs := ev.GetWorkflowExecutionStartedEventAttributes()
	if attrs == nil {
		return req, fmt.Errorf("rollout workflow %s does not start with its request", workflowID)
	}
	if err := converter.GetDefaultDataConverter().FromPayloads(attrs.GetInput(), &req); err != nil {
		return req, fmt.Errorf("read rollout %s's request: %w", workflowID, err)
	}
	req.Resume = nil
	return req, nil
}

// ErrMovedOn refuses a rollback of a rollout whose devices later rollouts moved on.
var ErrMovedOn = errors.New("its devices were moved on")

// StartRollback starts rolling a finished rollout back to each device's previous version (or
// finds the rollback already started). A rollout still running is refused: cancel it with
// rollback instead. So is one that later rollouts of the same targets moved on (ErrMovedOn),
// unless anyway: its devices would refuse a rollback, since a device returns only to the
// version it ran just before.
func StartRollback(ctx context.Context, c client.Client, taskQueue, rolloutID, reason string, anyway bool) (RollbackStart, error) {
	var st RollbackStart
	wid, err := WorkflowID(ctx, c, rolloutID)
	if err != nil {
		return st, err
	}
	res, err := Status(ctx, c, rolloutID)
	if err != nil {
		return st, err
	}
	rbID := contract.RollbackWorkflowID(res.RolloutID)
	if d, err := c.DescribeWorkflowExecution(ctx, rbID, ""); err == nil && d.GetWorkflowExecutionInfo() != nil {
		st.Run, st.Already = c.GetWorkflow(ctx, rbID, ""), true
		return st, nil
	}
	moved := MovedOn(ctx, c, res.RolloutID)
	if len(moved) > 0 && !anyway {
		return st, fmt.Errorf("%w: rollout %s is not rolled back, because %s, started after it ended, target the same devices: those run what the later rollout left, and a device returns only to the version it ran just before, so it would refuse. Roll the latest of them back first, or roll the version you want out as a new rollout; `rollout rollback --anyway` rolls back the devices no later rollout moved on", ErrMovedOn, res.RolloutID, strings.Join(moved, ", "))
	}
	if st.Run, err = startRollback(ctx, c, taskQueue, wid, res, reason); err != nil {
		return st, err
	}
	st.Later = moved
	return st, nil
}

// RollbackStart is a rollback asked for: its workflow; Already, when it had been started
// before (one rollback per rollout: asking again returns it); Later, the rollouts started
// since this one ended that target its devices, for a rollback asked for anyway (those moved on refuse it: a
// device returns only to the version it ran just before).
type RollbackStart struct {
	Run     client.WorkflowRun
	Already bool
	Later   []string
}

// laterRollouts are the rollouts started after the rollout of workflow wid ended.
func laterRollouts(ctx context.Context, c client.Client, wid string) []string {
	d, err := c.DescribeWorkflowExecution(ctx, wid, "")
	if err != nil || d.GetWorkflowExecutionInfo().GetCloseTime() == nil {
		return nil
	}
	ended := d.GetWorkflowExecutionInfo().GetCloseTime().AsTime()
	rows, err := List(ctx, c, 100)
	if err != nil {
		return nil
	}
	var later []string
	for _, r := range rows {
		if r.Started.After(ended) {
			later = append(later, r.RolloutID)
		}
	}
	return later
}

func startRollback(ctx context.Context, c client.Client, taskQueue, wid string, res contract.RolloutResult, reason string) (client.WorkflowRun, error) {
	rolloutID := res.RolloutID
	switch res.State {
	case contract.StateSucceeded, contract.StateFailed, contract.StateAborted, contract.StateCanceled, contract.StateTimedOut:
	case contract.StateInvalid:
		return nil, fmt.Errorf("rollout %s was invalid and updated no device: nothing to roll back", rolloutID)
	default:
		return nil, fmt.Errorf("rollout %s is %s: cancel it with rollback (`starter rollout cancel --rollback %s`) rather than rolling back a running rollout", rolloutID, res.State, rolloutID)
	}
	req, err := Request(ctx, c, wid)
	if err != nil {
		return nil, err
	}
	req.RolloutID = res.RolloutID
	var jobIDs []string
	for _, w := range res.Waves {
		if w.JobID != "" {
			jobIDs = append(jobIDs, w.JobID)
		}
	}
	if len(jobIDs) == 0 {
		return nil, fmt.Errorf("rollout %s started no job: nothing to roll back", rolloutID)
	}
	return c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{
		ID:                       contract.RollbackWorkflowID(res.RolloutID),
		TaskQueue:                taskQueue,
		WorkflowIDReusePolicy:    enumspb.WORKFLOW_ID_REUSE_POLICY_REJECT_DUPLICATE,
		WorkflowIDConflictPolicy: enumspb.WORKFLOW_ID_CONFLICT_POLICY_USE_EXISTING,
		StaticSummary:            fmt.Sprintf("Roll rollout %s back from %s", res.RolloutID, res.Version),
	}, contract.WorkflowRollback, contract.RollbackRolloutRequest{RolloutID: res.RolloutID, Request: req, JobIDs: jobIDs, Reason: reason})
}

// RollbackResult waits for a rollback and returns its result (also when it failed).
func RollbackResult(ctx context.Context, run client.WorkflowRun) (contract.RollbackResult, error) {
	var rb contract.RollbackResult
	err := run.Get(ctx, &rb)
	var appErr *temporal.ApplicationError
	if errors.As(err, &appErr) && appErr.HasDetails() {
		_ = appErr.Details(&rb)
		return rb, errors.New(appErr.Message())
	}
	return rb, err
}

// Row is one rollout in a listing.
type Row struct {
	RolloutID  string    `json:"rolloutId"`
	WorkflowID string    `json:"workflowId"`
	Version    string    `json:"version"`
	State      string    `json:"state"`
	Status     string    `json:"workflowStatus"`
	Started    time.Time `json:"started"`
	Closed     time.Time `json:"closed,omitempty"`
}

// List lists rollouts, newest first, with the IDs every command accepts.
func List(ctx context.Context, c client.Client, limit int) ([]Row, error) {
	resp, err := c.ListWorkflow(ctx, &workflowservice.ListWorkflowExecutionsRequest{Query: "WorkflowType = 'Rollout'", PageSize: int32(limit)})
	if err != nil {
		return nil, fmt.Errorf("list rollouts: %w", err)
	}
	var rows []Row
	for _, e := range resp.Executions {
		r := Row{WorkflowID: e.GetExecution().GetWorkflowId(), Status: workflowStatus(e.Status), Started: e.StartTime.AsTime()}
		if e.CloseTime != nil {
			r.Closed = e.CloseTime.AsTime()
		}
		if f := e.SearchAttributes.GetIndexedFields(); f != nil {
			r.RolloutID = keyword(f[contract.SearchRolloutID.GetName()])
			r.Version = keyword(f[contract.SearchTargetVersion.GetName()])
			r.State = keyword(f[contract.SearchState.GetName()])
		}
		if r.RolloutID == "" {
			r.RolloutID = contract.RolloutIDFor(r.WorkflowID)
		}
		// A rollout ended outside otaflow (terminated, timed out in Temporal) never recorded
		// its end: say so rather than show its last state.
		if r.Status == "TERMINATED" || r.Status == "TIMED_OUT" {
			r.State = r.Status
		}
		rows = append(rows, r)
	}
	return rows, nil
}

// workflowStatus names a workflow's status as the Temporal CLI prints it, upper case.
func workflowStatus(s enumspb.WorkflowExecutionStatus) string {
	name := enumspb.WorkflowExecutionStatus_name[int32(s)]
	return strings.ToUpper(strings.TrimPrefix(name, "WORKFLOW_EXECUTION_STATUS_"))
}

func keyword(p *commonpb.Payload) string {
	var s string
	if p == nil || json.Unmarshal(p.GetData(), &s) != nil {
		return ""
	}
	return s
}

// MovedOn are the rollouts started after rolloutID ended that target some of its targets (a
// thing or group named by both): their devices may no longer run what a rollback of rolloutID
// would undo, and those refuse it. Nil for a rollout still running, or when it cannot be told.
func MovedOn(ctx context.Context, c client.Client, rolloutID string) []string {
	wid, err := WorkflowID(ctx, c, rolloutID)
	if err != nil {
		return nil
	}
	later := laterRollouts(ctx, c, wid)
	if len(later) == 0 {
		return nil
	}
	req, err := Request(ctx, c, wid)
	if err != nil {
		return nil
	}
	var out []string
	for _, id := range later {
		lw, err := WorkflowID(ctx, c, id)
		if err != nil {
			continue
		}
		lreq, err := Request(ctx, c, lw)
		if err == nil && slices.ContainsFunc(lreq.Targets, func(t string) bool { return slices.Contains(req.Targets, t) }) {
			out = append(out, id)
		}
	}
	return out
}
