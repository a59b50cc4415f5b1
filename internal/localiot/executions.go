package localiot

import (
	"fmt"
	"slices"
	"time"
)

// Job executions: the device-facing operations (start-next, update, pending lists) and per-
// execution reads, with AWS's state transitions.

func archive(e *Execution) PreviousExecution {
	return PreviousExecution{ExecutionNumber: e.ExecutionNumber, Status: e.Status, StatusDetails: e.StatusDetails,
		QueuedAt: e.QueuedAt, StartedAt: e.StartedAt, LastUpdatedAt: e.LastUpdatedAt, VersionNumber: e.VersionNumber}
}

// setStatus moves an execution to a new status, keeping the job's counters, applying the
// job's retry policy to FAILED and TIMED_OUT, and completing a SNAPSHOT job whose executions
// have all ended. It writes both records.
func (s *Service) setStatus(t Tx, j *Job, e *Execution, status ExecutionStatus, details map[string]string, now time.Time) error {
	old := e.Status
	if old == ExecQueued && status == ExecInProgress {
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
		j.Counts.add(old, -1)
		j.Counts.add(status, 1)
	}
	if (status == ExecFailed || status == ExecTimedOut) && j.Status == JobInProgress && e.RetryAttempt < j.retriesFor(status) {
		j.Counts.add(status, -1)
		j.Counts.add(ExecQueued, 1)
		e.Previous = append(e.Previous, archive(e))
		e.RetryAttempt++
		e.ExecutionNumber++
		e.Status, e.VersionNumber, e.QueuedAt, e.StartedAt = ExecQueued, 1, now, time.Time{}
		e.StepDeadline, e.InProgressDeadline = time.Time{}, time.Time{}
		seq, err := t.nextQueueSeq()
		if err != nil {
			return err
		}
		e.Seq = seq
	}
	j.LastUpdatedAt = now
	if j.Status == JobInProgress && j.TargetSelection == "SNAPSHOT" && j.Counts.Pending() == 0 {
		j.Status = JobCompleted
		j.CompletedAt = now
	}
	if old != status && e.Status.Terminal() {
		if err := s.abortIfDue(t, j, now); err != nil {
			return err
		}
	}
	if err := t.putExecution(e); err != nil {
		return err
	}
	return t.putJob(j)
}

// DescribeJobExecution returns one thing's execution of a job: the latest, or the one with
// executionNumber when it is not 0 (an earlier one a retry replaced).
func (s *Service) DescribeJobExecution(jobID, thing string, executionNumber ...int64) (*Execution, error) {
	var out *Execution
	err := s.st.View(func(t Tx) error {
		e, err := t.execution(jobID, thing)
		if err != nil {
			return err
		}
		if e == nil {
			return errorf(CodeResourceNotFound, "no execution of job %s on thing %s", jobID, thing)
		}
		if len(executionNumber) > 0 && executionNumber[0] != 0 && executionNumber[0] != e.ExecutionNumber {
			for _, p := range e.Previous {
				if p.ExecutionNumber == executionNumber[0] {
					out = &Execution{JobID: jobID, ThingName: thing, Status: p.Status, StatusDetails: p.StatusDetails,
						QueuedAt: p.QueuedAt, StartedAt: p.StartedAt, LastUpdatedAt: p.LastUpdatedAt,
						VersionNumber: p.VersionNumber, ExecutionNumber: p.ExecutionNumber}
					return nil
				}
			}
			return errorf(CodeResourceNotFound, "no execution number %d of job %s on thing %s", executionNumber[0], jobID, thing)
		}
		out = e
		return nil
	})
	return out, err
}

// ListJobExecutionsForJob pages through a job's executions in thing-name order. The token is
// the last thing name of the previous page.
func (s *Service) ListJobExecutionsForJob(jobID string, status ExecutionStatus, max int, token string) ([]*Execution, string, error) {
	if max <= 0 || max > 250 {
		max = 250
	}
	var out []*Execution
	var next string
	err := s.st.View(func(t Tx) error {
		if _, err := mustJob(t, jobID); err != nil {
			return err
		}
		errStop := fmt.Errorf("page full")
		err := t.jobExecutions(jobID, func(e *Execution) error {
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
func (s *Service) PendingExecutions(thing string, limit int) (inProgress, queued []*Execution, err error) {
	err = s.st.View(func(t Tx) error {
		all, err := t.thingExecutions(thing)
		if err != nil {
			return err
		}
		for _, e := range all {
			if limit > 0 && len(inProgress)+len(queued) == limit {
				break
			}
			switch e.Status {
			case ExecInProgress:
				inProgress = append(inProgress, e)
			case ExecQueued:
				if !e.Held {
					queued = append(queued, e)
				}
			}
		}
		return nil
	})
	return inProgress, queued, err
}

// NextExecution is the execution AWS calls `$next`: the oldest IN_PROGRESS one, else the
// oldest QUEUED one; nil when nothing is pending.
func (s *Service) NextExecution(thing string) (*Execution, *Job, error) {
	var exec *Execution
	var job *Job
	err := s.st.View(func(t Tx) error {
		var err error
		exec, err = nextOf(t, thing)
		if err != nil || exec == nil {
			return err
		}
		job, err = t.job(exec.JobID)
		return err
	})
	return exec, job, err
}

func nextOf(t Tx, thing string) (*Execution, error) {
	all, err := t.thingExecutions(thing)
	if err != nil {
		return nil, err
	}
	for _, want := range []ExecutionStatus{ExecInProgress, ExecQueued} {
		for _, e := range all {
			if e.Status == want && !e.Held {
				return e, nil
			}
		}
	}
	return nil, nil
}

// Device requests (StartNext, UpdateExecution) arrive from many devices at once; bbolt's
// Batch commits them together, one fsync for many acknowledged writes.

// StartNext moves the thing's next execution to IN_PROGRESS (or returns the one already in
// progress) and returns it with its job; nil when nothing is pending. stepTimeout, when
// positive, times the execution out unless the device updates it sooner.
func (s *Service) StartNext(thing string, details map[string]string, stepTimeout time.Duration) (*Execution, *Job, error) {
	if err := s.checkStatusDetails(details); err != nil {
		return nil, nil, err
	}
	// Most asks find nothing pending; answer those from a read transaction, with no commit.
	if e, j, err := s.NextExecution(thing); err != nil || e == nil || e.Status == ExecInProgress {
		return e, j, err
	}
	var exec *Execution
	var job *Job
	changed := false
	err := s.st.Batch(func(t Tx) error {
		e, err := nextOf(t, thing)
		if err != nil || e == nil {
			return err
		}
		j, err := t.job(e.JobID)
		if err != nil {
			return err
		}
		exec, job = e, j
		if e.Status == ExecInProgress {
			return nil
		}
		now := s.clock()
		if stepTimeout > 0 {
			e.StepDeadline = now.Add(stepTimeout)
		}
		changed = true
		return s.setStatus(t, j, e, ExecInProgress, details, now)
	})
	if changed {
		s.queueChanged([]string{thing})
	}
	return exec, job, err
}

// UpdateInput is a device's update of its execution.
type UpdateInput struct {
	Thing           string
	JobID           string
	Status          ExecutionStatus
	StatusDetails   map[string]string
	ExpectedVersion int64 // 0: not checked
	ExecutionNumber int64 // 0: the latest
	// StepTimeout, when positive, restarts the step timer; negative cancels it.
	StepTimeout time.Duration
}

var deviceStatuses = []ExecutionStatus{ExecInProgress, ExecSucceeded, ExecFailed, ExecRejected}

// UpdateExecution applies a device's status update, with AWS's checks: the version must
// match when given, terminal states are final, and a device may only report IN_PROGRESS,
// SUCCEEDED, FAILED or REJECTED.
func (s *Service) UpdateExecution(in UpdateInput) (*Execution, *Job, error) {
	if !slices.Contains(deviceStatuses, in.Status) {
		return nil, nil, errorf(CodeInvalidRequest, "status %q is not one a device may set; use IN_PROGRESS, SUCCEEDED, FAILED or REJECTED", in.Status)
	}
	if err := s.checkStatusDetails(in.StatusDetails); err != nil {
		return nil, nil, err
	}
	var exec *Execution
	var job *Job
	queueMoved := false
	err := s.st.Batch(func(t Tx) error {
		e, err := t.execution(in.JobID, in.Thing)
		if err != nil {
			return err
		}
		if e == nil || (in.ExecutionNumber != 0 && in.ExecutionNumber != e.ExecutionNumber) {
			return errorf(CodeResourceNotFound, "no execution of job %s on thing %s", in.JobID, in.Thing)
		}
		if e.Status.Terminal() {
			// AWS answers an update of an ended execution InvalidStateTransition, with its state.
			return &Error{Code: CodeInvalidStateTransition, Message: fmt.Sprintf("execution of job %s on %s is already %s", in.JobID, in.Thing, e.Status), State: e}
		}
		if in.ExpectedVersion != 0 && in.ExpectedVersion != e.VersionNumber {
			return &Error{Code: CodeVersionMismatch, Message: fmt.Sprintf("expected version %d, current version is %d", in.ExpectedVersion, e.VersionNumber), State: e}
		}
		if e.Status == ExecQueued && in.Status != ExecInProgress && in.Status != ExecRejected {
			return &Error{Code: CodeInvalidStateTransition, Message: fmt.Sprintf("execution of job %s on %s is QUEUED; start it (IN_PROGRESS) before reporting %s", in.JobID, in.Thing, in.Status), State: e}
		}
		j, err := t.job(in.JobID)
		if err != nil {
			return err
		}
		now := s.clock()
		switch {
		case in.StepTimeout > 0:
			e.StepDeadline = now.Add(in.StepTimeout)
		case in.StepTimeout < 0:
			e.StepDeadline = time.Time{}
		}
		queueMoved = e.Status != in.Status
		if err := s.setStatus(t, j, e, in.Status, in.StatusDetails, now); err != nil {
			return err
		}
		exec, job = e, j
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	if queueMoved {
		s.queueChanged([]string{in.Thing})
	}
	return exec, job, nil
}

// CancelJobExecution cancels one thing's execution: QUEUED always, IN_PROGRESS only with force.
func (s *Service) CancelJobExecution(jobID, thing string, force bool, expectedVersion int64, details map[string]string) error {
	err := s.st.Update(func(t Tx) error {
		e, err := mustExecution(t, jobID, thing)
		if err != nil {
			return err
		}
		if e.Status.Terminal() {
			return errorf(CodeInvalidStateTransition, "execution of job %s on %s is already %s", jobID, thing, e.Status)
		}
		if e.Status == ExecInProgress && !force {
			return errorf(CodeInvalidStateTransition, "execution of job %s on %s is IN_PROGRESS; cancel it with force", jobID, thing)
		}
		if expectedVersion != 0 && expectedVersion != e.VersionNumber {
			return errorf(CodeVersionMismatch, "expected version %d, current version is %d", expectedVersion, e.VersionNumber)
		}
		j, err := t.job(jobID)
		if err != nil {
			return err
		}
		e.ForceCanceled = e.Status == ExecInProgress
		return s.setStatus(t, j, e, ExecCanceled, details, s.clock())
	})
	if err == nil {
		s.queueChanged([]string{thing})
	}
	return err
}

// ListJobExecutionsForThing pages through a thing's executions in job-ID order.
func (s *Service) ListJobExecutionsForThing(thing string, status ExecutionStatus, max int, token string) ([]*Execution, string, error) {
	var all []*Execution
	err := s.st.View(func(t Tx) error {
		if _, err := mustThing(t, thing); err != nil {
			return err
		}
		var err error
		all, err = t.thingExecutions(thing)
		return err
	})
	if err != nil {
		return nil, "", err
	}
	var ids []string
	byID := map[string]*Execution{}
	for _, e := range all {
		if status == "" || e.Status == status {
			ids = append(ids, e.JobID)
			byID[e.JobID] = e
		}
	}
	slices.Sort(ids)
	page, next := pageStrings(ids, max, token)
	out := make([]*Execution, 0, len(page))
	for _, id := range page {
		out = append(out, byID[id])
	}
	return out, next, nil
}

func sortBySeq(es []*Execution) {
	slices.SortFunc(es, func(a, b *Execution) int {
		switch {
		case a.Seq < b.Seq:
			return -1
		case a.Seq > b.Seq:
			return 1
		}
		return 0
	})
}
