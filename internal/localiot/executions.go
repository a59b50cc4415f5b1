package localiot

import (
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/otaflow/otaflow/internal/iotjobs"
	"github.com/otaflow/otaflow/internal/localiot/store"
)

// Job executions: the device-facing operations (start-next, update, pending lists) and per-
// execution reads, with AWS's state transitions.

func archive(e *store.Execution) store.PreviousExecution {
	return store.PreviousExecution{ExecutionNumber: e.ExecutionNumber, Status: e.Status, StatusDetails: e.StatusDetails,
		QueuedAt: e.QueuedAt, StartedAt: e.StartedAt, LastUpdatedAt: e.LastUpdatedAt, VersionNumber: e.VersionNumber}
}

// setStatus moves an execution to a new status, keeping the job's counters, applying the
// job's retry policy to FAILED and TIMED_OUT, and completing a SNAPSHOT job whose executions
// have all ended. It writes both records.
func (s *Service) setStatus(t store.Tx, j *store.Job, e *store.Execution, status store.ExecutionStatus, details map[string]string, now time.Time) error {
	old := e.Status
	if old == store.ExecQueued && status == store.ExecInProgress {
		e.StartedAt = now
		if j.InProgressTimeout > 0 {
			e.InProgressDeadline = now.Add(j.InProgressTimeout)
		}
	}
	e.Status = status
	if details != nil {
		e.StatusDetails = details
	}
	e.LastUpdatedAt = now
	e.VersionNumber++
	if status.Terminal() {
		e.StepDeadline, e.InProgressDeadline = time.Time{}, time.Time{}
	}
	if old != status {
		j.Counts.Add(old, -1)
		j.Counts.Add(status, 1)
	}
	if (status == store.ExecFailed || status == store.ExecTimedOut) && j.Status == store.JobInProgress && e.RetryAttempt < retriesFor(j, status) {
		j.Counts.Add(status, -1)
		j.Counts.Add(store.ExecQueued, 1)
		e.Previous = append(e.Previous, archive(e))
		e.RetryAttempt++
		e.ExecutionNumber++
		e.Status, e.VersionNumber, e.QueuedAt, e.StartedAt = store.ExecQueued, 1, now, time.Time{}
		e.StepDeadline, e.InProgressDeadline = time.Time{}, time.Time{}
		seq, err := t.NextQueueSeq()
		if err != nil {
			return err
		}
		e.Seq = seq
	}
	j.LastUpdatedAt = now
	completeIfDone(j, now)
	if old != status && e.Status.Terminal() {
		// Completion and abort are decided when an execution ends; on a shared store the next
		// sweep completes a job again on its committed counters (settleJobs).
		s.unsettled(j.ID)
		if err := s.abortIfDue(t, j, now); err != nil {
			return err
		}
	}
	if err := t.PutExecution(e); err != nil {
		return err
	}
	return t.PutJob(j)
}

// DeviceDescribe is a device's DescribeJobExecution (over MQTT or HTTPS): the thing's next
// pending execution for jobID $next (nil when none), else the execution of jobID, which a
// device may describe only while it has not ended (TerminalStateReached, as AWS answers).
func (s *Service) DeviceDescribe(thing, jobID string, executionNumber ...int64) (*store.Execution, *store.Job, error) {
	if jobID == iotjobs.NextJobID {
		return s.NextExecution(thing)
	}
	e, err := s.DescribeJobExecution(jobID, thing, executionNumber...)
	if err != nil {
		return nil, nil, err
	}
	if e.Status.Terminal() {
		return nil, nil, Errorf(CodeTerminalStateReached, "the execution of job %s on %s is %s: it has ended", jobID, thing, e.Status)
	}
	j, err := s.JobWithoutTargets(jobID)
	return e, j, err
}

// completeIfDone completes a SNAPSHOT job in progress whose executions have all ended.
func completeIfDone(j *store.Job, now time.Time) {
	if j.Status == store.JobInProgress && j.TargetSelection == "SNAPSHOT" && j.Counts.Pending() == 0 {
		j.Status = store.JobCompleted
		j.CompletedAt = now
	}
}

// DescribeJobExecution returns one thing's execution of a job: the latest, or the one with
// executionNumber when it is not 0 (an earlier one a retry replaced).
func (s *Service) DescribeJobExecution(jobID, thing string, executionNumber ...int64) (*store.Execution, error) {
	var out *store.Execution
	err := s.st.View(func(t store.Tx) error {
		e, err := t.Execution(jobID, thing)
		if err != nil {
			return err
		}
		if e == nil {
			return Errorf(CodeResourceNotFound, "no execution of job %s on thing %s", jobID, thing)
		}
		if len(executionNumber) > 0 && executionNumber[0] != 0 && executionNumber[0] != e.ExecutionNumber {
			for _, p := range e.Previous {
				if p.ExecutionNumber == executionNumber[0] {
					out = &store.Execution{JobID: jobID, ThingName: thing, Status: p.Status, StatusDetails: p.StatusDetails,
						QueuedAt: p.QueuedAt, StartedAt: p.StartedAt, LastUpdatedAt: p.LastUpdatedAt,
						VersionNumber: p.VersionNumber, ExecutionNumber: p.ExecutionNumber}
					return nil
				}
			}
			return Errorf(CodeResourceNotFound, "no execution number %d of job %s on thing %s", executionNumber[0], jobID, thing)
		}
		out = e
		return nil
	})
	return out, err
}

// ListJobExecutionsForJob pages through a job's executions in thing-name order. The token is
// the last thing name of the previous page.
func (s *Service) ListJobExecutionsForJob(jobID string, status store.ExecutionStatus, max int, token string) ([]*store.Execution, string, error) {
	if max <= 0 || max > 250 {
		max = 250
	}
	var out []*store.Execution
	var next string
	err := s.st.View(func(t store.Tx) error {
		if _, err := mustJob(t, jobID); err != nil {
			return err
		}
		errStop := fmt.Errorf("page full")
		err := t.JobExecutions(jobID, func(e *store.Execution) error {
			if token != "" && e.ThingName <= token {
				return nil
			}
			if status != "" && e.Status != status {
				return nil
			}
			if len(out) == max {
				next = out[len(out)-1].ThingName
				return errStop
			}
			out = append(out, e)
			return nil
		})
		if err == errStop {
			return nil
		}
		return err
	})
	return out, next, err
}

// PendingExecutions returns a thing's IN_PROGRESS and QUEUED executions, each in queue order:
// the oldest limit of them together (AWS lists at most ten), or all when limit is 0.
func (s *Service) PendingExecutions(thing string, limit int) (inProgress, queued []*store.Execution, err error) {
	p, err := s.Pending(thing, limit, nil)
	return p.InProgress, p.Queued, err
}

// NextExecution is the execution AWS calls `$next`: the oldest IN_PROGRESS one, else the
// oldest QUEUED one; nil when nothing is pending.
func (s *Service) NextExecution(thing string) (*store.Execution, *store.Job, error) {
	p, err := s.Pending(thing, 0, func(*store.Execution) bool { return true })
	return p.Next, p.Job, err
}

// Pending is what a thing has pending, as notify-next and notify tell it.
type Pending struct {
	// Next is `$next` (nil: nothing pending); Job is its job, when it was asked for.
	Next *store.Execution
	Job  *store.Job
	// InProgress and Queued are the pending lists, as PendingExecutions returns them.
	InProgress, Queued []*store.Execution
	// Members names every pending execution, listed or past the limit (ExecutionKey), in queue
	// order: what a notifier compares to know that one joined or left the list.
	Members []string
}

// ExecutionKey names one execution as job#executionNumber ("" for none): a retry's new
// execution of the same job is another.
func ExecutionKey(e *store.Execution) string {
	if e == nil {
		return ""
	}
	return e.JobID + "#" + strconv.FormatInt(e.ExecutionNumber, 10)
}

// Pending reads a thing's pending executions once for both notices: the lists (at most limit,
// 0 for all) and the next execution, with its job when withJob says so (a notifier reads the
// job only for a next execution it has not announced). withJob must not change anything: a
// store may run the read again.
func (s *Service) Pending(thing string, limit int, withJob func(next *store.Execution) bool) (Pending, error) {
	var p Pending
	err := s.st.View(func(t store.Tx) error {
		p = Pending{}
		all, err := t.ThingExecutions(thing)
		if err != nil {
			return err
		}
		p.Next = nextIn(all)
		for _, e := range all {
			if e.Status != store.ExecInProgress && (e.Status != store.ExecQueued || e.Held) {
				continue
			}
			p.Members = append(p.Members, ExecutionKey(e))
			switch {
			case limit > 0 && len(p.InProgress)+len(p.Queued) == limit:
			case e.Status == store.ExecInProgress:
				p.InProgress = append(p.InProgress, e)
			default:
				p.Queued = append(p.Queued, e)
			}
		}
		if p.Next != nil && withJob != nil && withJob(p.Next) {
			p.Job, err = t.Job(p.Next.JobID)
		}
		return err
	})
	return p, err
}

func nextOf(t store.Tx, thing string) (*store.Execution, error) {
	all, err := t.ThingExecutions(thing)
	if err != nil {
		return nil, err
	}
	return nextIn(all), nil
}

// nextIn is `$next` among a thing's executions in queue order.
func nextIn(all []*store.Execution) *store.Execution {
	for _, want := range []store.ExecutionStatus{store.ExecInProgress, store.ExecQueued} {
		for _, e := range all {
			if e.Status == want && !e.Held {
				return e
			}
		}
	}
	return nil
}

// Device requests (StartNext, UpdateExecution) arrive from many devices at once; bbolt's
// Batch commits them together, one fsync for many acknowledged writes.

// StartNext moves the thing's next execution to IN_PROGRESS (or returns the one already in
// progress) and returns it with its job; nil when nothing is pending. stepTimeout, when
// positive, times the execution out unless the device updates it sooner.
func (s *Service) StartNext(thing string, details map[string]string, stepTimeout time.Duration) (*store.Execution, *store.Job, error) {
	if err := s.checkStatusDetails(details); err != nil {
		return nil, nil, err
	}
	// Most asks find nothing pending; answer those from a read transaction, with no commit.
	if e, j, err := s.NextExecution(thing); err != nil || e == nil || e.Status == store.ExecInProgress {
		return e, j, err
	}
	// Starting the next execution leaves the thing's pending list and its next execution as
	// they were, so there is nothing to tell the thing: AWS sends notify and notify-next when
	// those change.
	var exec *store.Execution
	var job *store.Job
	err := s.st.Batch(func(t store.Tx) error {
		e, err := nextOf(t, thing)
		if err != nil || e == nil {
			return err
		}
		j, err := t.Job(e.JobID)
		if err != nil {
			return err
		}
		exec, job = e, j
		if e.Status == store.ExecInProgress {
			return nil
		}
		now := s.Clock()
		if stepTimeout > 0 {
			e.StepDeadline = now.Add(stepTimeout)
		}
		return s.setStatus(t, j, e, store.ExecInProgress, details, now)
	})
	return exec, job, err
}

// UpdateInput is a device's update of its execution.
type UpdateInput struct {
	Thing           string
	JobID           string
	Status          store.ExecutionStatus
	StatusDetails   map[string]string
	ExpectedVersion int64 // 0: not checked
	ExecutionNumber int64 // 0: the latest
	// StepTimeout, when positive, restarts the step timer; negative cancels it.
	StepTimeout time.Duration
}

var deviceStatuses = []store.ExecutionStatus{store.ExecInProgress, store.ExecSucceeded, store.ExecFailed, store.ExecRejected}

// UpdateExecution applies a device's status update, with AWS's checks: the version must
// match when given, terminal states are final, and a device may only report IN_PROGRESS,
// SUCCEEDED, FAILED or REJECTED.
func (s *Service) UpdateExecution(in UpdateInput) (*store.Execution, *store.Job, error) {
	if !slices.Contains(deviceStatuses, in.Status) {
		return nil, nil, Errorf(CodeInvalidRequest, "status %q is not one a device may set; use IN_PROGRESS, SUCCEEDED, FAILED or REJECTED", in.Status)
	}
	if err := s.checkStatusDetails(in.StatusDetails); err != nil {
		return nil, nil, err
	}
	var exec *store.Execution
	var job *store.Job
	queueMoved, started := false, false
	err := s.st.Batch(func(t store.Tx) error {
		e, err := t.Execution(in.JobID, in.Thing)
		if err != nil {
			return err
		}
		if e == nil || (in.ExecutionNumber != 0 && in.ExecutionNumber != e.ExecutionNumber) {
			return Errorf(CodeResourceNotFound, "no execution of job %s on thing %s", in.JobID, in.Thing)
		}
		if e.Status.Terminal() {
			// AWS answers an update of an ended execution InvalidStateTransition, with its state.
			return &Error{Code: CodeInvalidStateTransition, Message: fmt.Sprintf("execution of job %s on %s is already %s", in.JobID, in.Thing, e.Status), State: e}
		}
		if in.ExpectedVersion != 0 && in.ExpectedVersion != e.VersionNumber {
			return &Error{Code: CodeVersionMismatch, Message: fmt.Sprintf("expected version %d, current version is %d", in.ExpectedVersion, e.VersionNumber), State: e}
		}
		if e.Status == store.ExecQueued && in.Status != store.ExecInProgress && in.Status != store.ExecRejected {
			return &Error{Code: CodeInvalidStateTransition, Message: fmt.Sprintf("execution of job %s on %s is QUEUED; start it (IN_PROGRESS) before reporting %s", in.JobID, in.Thing, in.Status), State: e}
		}
		j, err := t.Job(in.JobID)
		if err != nil {
			return err
		}
		now := s.Clock()
		switch {
		case in.StepTimeout > 0:
			e.StepDeadline = now.Add(in.StepTimeout)
		case in.StepTimeout < 0:
			e.StepDeadline = time.Time{}
		}
		queueMoved = e.Status != in.Status
		started = e.Status == store.ExecQueued && in.Status == store.ExecInProgress
		if err := s.setStatus(t, j, e, in.Status, in.StatusDetails, now); err != nil {
			return err
		}
		exec, job = e, j
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	switch {
	case started:
		s.queueStarted(exec)
	case queueMoved:
		s.queueChanged([]string{in.Thing})
	}
	return exec, job, nil
}

// CancelJobExecution cancels one thing's execution: QUEUED always, IN_PROGRESS only with force.
func (s *Service) CancelJobExecution(jobID, thing string, force bool, expectedVersion int64, details map[string]string) error {
	err := s.st.Update(func(t store.Tx) error {
		e, err := mustExecution(t, jobID, thing)
		if err != nil {
			return err
		}
		if e.Status.Terminal() {
			return Errorf(CodeInvalidStateTransition, "execution of job %s on %s is already %s", jobID, thing, e.Status)
		}
		if e.Status == store.ExecInProgress && !force {
			return Errorf(CodeInvalidStateTransition, "execution of job %s on %s is IN_PROGRESS; cancel it with force", jobID, thing)
		}
		if expectedVersion != 0 && expectedVersion != e.VersionNumber {
			return Errorf(CodeVersionMismatch, "expected version %d, current version is %d", expectedVersion, e.VersionNumber)
		}
		j, err := t.Job(jobID)
		if err != nil {
			return err
		}
		e.ForceCanceled = e.Status == store.ExecInProgress
		return s.setStatus(t, j, e, store.ExecCanceled, details, s.Clock())
	})
	if err == nil {
		s.queueChanged([]string{thing})
	}
	return err
}

// ListJobExecutionsForThing pages through a thing's executions in job-ID order.
func (s *Service) ListJobExecutionsForThing(thing string, status store.ExecutionStatus, max int, token string) ([]*store.Execution, string, error) {
	var all []*store.Execution
	err := s.st.View(func(t store.Tx) error {
		if _, err := mustThing(t, thing); err != nil {
			return err
		}
		var err error
		all, err = t.ThingExecutions(thing)
		return err
	})
	if err != nil {
		return nil, "", err
	}
	var ids []string
	byID := map[string]*store.Execution{}
	for _, e := range all {
		if status == "" || e.Status == status {
			ids = append(ids, e.JobID)
			byID[e.JobID] = e
		}
	}
	slices.Sort(ids)
	page, next := PageStrings(ids, max, token)
	out := make([]*store.Execution, 0, len(page))
	for _, id := range page {
		out = append(out, byID[id])
	}
	return out, next, nil
}

// DeleteJobExecution deletes one execution of a job on a thing. As on AWS, an execution that
// is QUEUED or IN_PROGRESS needs force (and a device may then be left mid-update: the agent
// treats the vanished execution as canceled).
func (s *Service) DeleteJobExecution(jobID, thing string, executionNumber int64, force bool) error {
	var touched bool
	err := s.st.Update(func(t store.Tx) error {
		e, err := mustExecution(t, jobID, thing)
		if err != nil {
			return err
		}
		if e.ExecutionNumber != executionNumber {
			return Errorf(CodeResourceNotFound, "thing %s has no execution number %d of job %s (it is at %d)", thing, executionNumber, jobID, e.ExecutionNumber)
		}
		if !e.Status.Terminal() && !force {
			return Errorf(CodeInvalidStateTransition, "the execution of job %s on %s is %s: delete it with force, or cancel it first", jobID, thing, e.Status)
		}
		j, err := mustJob(t, jobID)
		if err != nil {
			return err
		}
		j.Counts.Add(e.Status, -1)
		if err := t.PutJob(j); err != nil {
			return err
		}
		touched = true
		return t.DeleteExecution(e)
	})
	if err == nil && touched {
		s.queueChanged([]string{thing})
	}
	return err
}

// DeviceExecution is an execution as the Jobs device APIs show it (MQTT and HTTPS).
func (s *Service) DeviceExecution(e *store.Execution, j *store.Job, withDoc bool) *iotjobs.JobExecution {
	out := &iotjobs.JobExecution{
		JobID: e.JobID, ThingName: e.ThingName, Status: e.Status, StatusDetails: e.StatusDetails,
		QueuedAt: epoch(e.QueuedAt), StartedAt: epoch(e.StartedAt), LastUpdatedAt: epoch(e.LastUpdatedAt),
		VersionNumber: e.VersionNumber, ExecutionNumber: e.ExecutionNumber,
	}
	if d := e.Deadline(); e.Status == store.ExecInProgress && !d.IsZero() {
		out.ApproximateSecondsBeforeTimedOut = max(int64(d.Sub(s.Clock()).Seconds()), 0)
	}
	if withDoc && j != nil {
		out.JobDocument = json.RawMessage(s.DocumentFor(j))
	}
	return out
}

func epoch(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.Unix()
}

func ExecutionState(e *store.Execution) *iotjobs.ExecutionState {
	return &iotjobs.ExecutionState{Status: e.Status, StatusDetails: e.StatusDetails, VersionNumber: e.VersionNumber}
}

func ToSummaries(es []*store.Execution) []iotjobs.JobExecutionSummary {
	out := make([]iotjobs.JobExecutionSummary, 0, len(es))
	for _, e := range es {
		out = append(out, iotjobs.JobExecutionSummary{JobID: e.JobID, QueuedAt: epoch(e.QueuedAt), StartedAt: epoch(e.StartedAt),
			LastUpdatedAt: epoch(e.LastUpdatedAt), VersionNumber: e.VersionNumber, ExecutionNumber: e.ExecutionNumber})
	}
	return out
}

// MaxPendingListed: AWS lists at most ten pending executions in a notify message and a
// get-pending reply (the Jobs developer guide, "Job executions limits").
const MaxPendingListed = 10
