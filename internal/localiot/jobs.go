package localiot

import (
	"encoding/json"
	"slices"
	"strings"
	"time"

	"github.com/otaflow/otaflow/internal/arn"
	"github.com/otaflow/otaflow/internal/localiot/store"
)

// Jobs: creation (targets resolved and one execution queued per thing), description,
// cancellation, deletion and listing.

// CreateJobInput is what CreateJob needs.
type CreateJobInput struct {
	JobID    string
	Document string
	// DocumentSource is where Document was read from (DescribeJob answers it).
	DocumentSource  string
	Description     string
	Targets         []string
	TargetSelection string
	// InProgressTimeoutMinutes times out executions that stay IN_PROGRESS longer.
	InProgressTimeoutMinutes int64
	Retry                    []store.RetryCriteria
	Presign                  *store.PresignConfig
	// MaxPerMinute limits executions released per minute (0: no limit).
	MaxPerMinute int
	// Exponential is jobExecutionsRolloutConfig.exponentialRate (rate.go).
	Exponential *store.ExponentialRate
	// Abort is abortConfig.criteriaList (abort.go).
	Abort []store.AbortCriteria
	// Scheduling is schedulingConfig (schedule.go).
	Scheduling *store.Scheduling
}

// CreateJob creates a job and queues one execution per target thing (the members of target
// groups included). Nothing is written if any part of the request is invalid.
func (s *Service) CreateJob(in CreateJobInput) (*store.Job, error) {
	if !jobIDRE.MatchString(in.JobID) {
		return nil, Errorf(CodeInvalidRequest, "job ID %q is invalid: use 1-64 characters from a-z A-Z 0-9 _ -", in.JobID)
	}
	if err := s.checkTargets(in.Targets); err != nil {
		return nil, err
	}
	if in.Document == "" {
		return nil, Errorf(CodeInvalidRequest, "job %s has no document", in.JobID)
	}
	if len(in.Document) > MaxDocumentBytes {
		return nil, Errorf(CodeInvalidRequest, "job document is %d bytes; the limit is %d", len(in.Document), MaxDocumentBytes)
	}
	if !json.Valid([]byte(in.Document)) {
		return nil, Errorf(CodeInvalidRequest, "job document is not valid JSON")
	}
	if len(in.Targets) == 0 {
		return nil, Errorf(CodeInvalidRequest, "job %s has no targets", in.JobID)
	}
	switch in.TargetSelection {
	case "":
		in.TargetSelection = "SNAPSHOT"
	case "SNAPSHOT", "CONTINUOUS":
	default:
		return nil, Errorf(CodeInvalidRequest, "targetSelection %q is invalid: use SNAPSHOT or CONTINUOUS", in.TargetSelection)
	}
	if in.InProgressTimeoutMinutes < 0 || in.InProgressTimeoutMinutes > 10080 {
		return nil, Errorf(CodeInvalidRequest, "timeoutConfig.inProgressTimeoutInMinutes must be from 1 to 10080")
	}
	for _, c := range in.Retry {
		if c.FailureType != "FAILED" && c.FailureType != "TIMED_OUT" && c.FailureType != "ALL" {
			return nil, Errorf(CodeInvalidRequest, "retry failureType %q is invalid: use FAILED, TIMED_OUT or ALL", c.FailureType)
		}
		if c.NumberOfRetries < 0 || c.NumberOfRetries > 10 {
			return nil, Errorf(CodeInvalidRequest, "retry numberOfRetries must be from 0 to 10")
		}
	}
	if err := checkAbort(in.Abort); err != nil {
		return nil, err
	}
	if err := checkExponentialRate(in.Exponential); err != nil {
		return nil, err
	}
	if in.MaxPerMinute < 0 || in.MaxPerMinute > 1000 {
		return nil, Errorf(CodeInvalidRequest, "jobExecutionsRolloutConfig.maximumPerMinute must be from 1 to 1000")
	}
	if in.Presign != nil {
		if in.Presign.ExpiresInSec == 0 {
			in.Presign.ExpiresInSec = 3600
		}
		if in.Presign.ExpiresInSec < 60 || in.Presign.ExpiresInSec > 3600 {
			return nil, Errorf(CodeInvalidRequest, "presignedUrlConfig.expiresInSec must be from 60 to 3600")
		}
	}
	now := s.Clock()
	if in.Scheduling != nil {
		if err := s.checkScheduling(in.Scheduling, now); err != nil {
			return nil, err
		}
	}
	things, groups, err := s.splitTargets(in.Targets)
	if err != nil {
		return nil, err
	}
	var job *store.Job
	var queued []string
	err = s.st.Update(func(t store.Tx) error {
		queued = nil // a run again (after a lost race) starts afresh
		existing, err := t.Job(in.JobID)
		if err != nil {
			return err
		}
		if existing != nil {
			return Errorf(CodeAlreadyExists, "job %s already exists", in.JobID)
		}
		var missing []string
		for _, name := range things {
			th, err := t.Thing(name)
			if err != nil {
				return err
			}
			if th == nil {
				missing = append(missing, name)
			}
		}
		if len(missing) > 0 {
			return Errorf(CodeInvalidRequest, "target thing(s) %s do not exist; register them first (CreateThing)", strings.Join(missing, ", "))
		}
		for _, g := range groups {
			grp, err := t.Group(g)
			if err != nil {
				return err
			}
			if grp == nil {
				return Errorf(CodeInvalidRequest, "target thing group %s does not exist", g)
			}
		}
		job = &store.Job{
			ID: in.JobID, Arn: s.JobArn(in.JobID), Document: in.Document, DocumentSource: in.DocumentSource,
			Description: in.Description, Targets: in.Targets, TargetSelection: in.TargetSelection, Status: store.JobInProgress,
			CreatedAt: now, LastUpdatedAt: now, TargetGroups: groups,
			InProgressTimeout: time.Duration(in.InProgressTimeoutMinutes) * time.Minute,
			Retry:             in.Retry, Presign: in.Presign, MaxPerMinute: in.MaxPerMinute, RateWindow: now,
			Abort: in.Abort, Scheduling: in.Scheduling, Exponential: in.Exponential,
		}
		if job.TargetSelection == "CONTINUOUS" {
			for _, g := range groups {
				if err := t.SetContinuousJob(g, job.ID, true); err != nil {
					return err
				}
			}
		}
		if sc := job.Scheduling; sc != nil && (sc.Start.After(now) || !sc.End.IsZero()) {
			if err := putRecord(t, recordJobSchedule, job.ID, job.ID); err != nil {
				return err
			}
		}
		if err := t.PutJobTargets(job.ID, job.Targets); err != nil {
			return err
		}
		if sc := job.Scheduling; sc != nil && sc.Start.After(now) {
			// Rolled out at the start (sweepSchedules), to the groups' members as of then.
			job.Status = JobScheduled
			return t.PutJob(job)
		}
		all, err := resolveGroups(t, things, groups)
		if err != nil {
			return err
		}
		if queued, err = s.rollOut(t, job, all, now); err != nil {
			return err
		}
		return t.PutJob(job)
	})
	if err != nil {
		return nil, err
	}
	s.log.Info().Str("job", job.ID).Int("things", len(queued)).Str("targetSelection", job.TargetSelection).Msg("job created")
	s.queueChanged(queued)
	return job, nil
}

// splitTargets parses a job's target ARNs into thing names and thing group names.
func (s *Service) splitTargets(targets []string) (things, groups []string, err error) {
	for _, target := range targets {
		kind, name, err := s.parseTarget(target)
		if err != nil {
			return nil, nil, err
		}
		list := &things
		if kind == "thinggroup" {
			list = &groups
		}
		if !slices.Contains(*list, name) {
			*list = append(*list, name)
		}
	}
	return things, groups, nil
}

// resolveGroups is things and the members of groups (and of their descendants), each once.
// (A set, not a search of the list: a job on a group of a million things searched a growing
// list of up to a million names for each member, and CreateJob never returned.)
func resolveGroups(t store.Tx, things, groups []string) ([]string, error) {
	if len(things) == 0 && len(groups) == 1 {
		return members(t, groups[0], true) // each member once already
	}
	all := slices.Clone(things)
	have := make(map[string]bool, len(things))
	for _, th := range things {
		have[th] = true
	}
	for _, g := range groups {
		ms, err := members(t, g, true)
		if err != nil {
			return nil, err
		}
		for _, th := range ms {
			if !have[th] {
				have[th] = true
				all = append(all, th)
			}
		}
	}
	return all, nil
}

// rollOut queues one execution of j per thing (the caller writes j) and returns the things
// offered the job now, not held for the rate limit or a maintenance window. A SNAPSHOT job with
// nothing to roll out (its groups are empty) is complete at once.
func (s *Service) rollOut(t store.Tx, j *store.Job, things []string, now time.Time) ([]string, error) {
	var offered []string
	for _, name := range things {
		held, err := s.queueExecution(t, j, name, now)
		if err != nil {
			return nil, err
		}
		if !held {
			offered = append(offered, name)
		}
	}
	if len(things) == 0 && j.TargetSelection == "SNAPSHOT" {
		j.Status, j.CompletedAt = store.JobCompleted, now
	}
	return offered, nil
}

// queueExecution queues a new execution of j on thing (the caller writes j) and says whether
// it is held.
func (s *Service) queueExecution(t store.Tx, j *store.Job, thing string, now time.Time) (bool, error) {
	seq, err := t.NextQueueSeq()
	if err != nil {
		return false, err
	}
	e := &store.Execution{JobID: j.ID, ThingName: thing, Status: store.ExecQueued, QueuedAt: now, LastUpdatedAt: now,
		VersionNumber: 1, ExecutionNumber: 1, Seq: seq}
	if old, err := t.Execution(j.ID, thing); err != nil {
		return false, err
	} else if old != nil {
		// A thing that left and rejoined a CONTINUOUS job's group gets a fresh execution.
		j.Counts.Add(old.Status, -1)
		e.ExecutionNumber = old.ExecutionNumber + 1
		e.Previous = append(old.Previous, archive(old))
	}
	j.Counts.Add(store.ExecQueued, 1)
	j.LastUpdatedAt = now
	if heldBySchedule(j, now) {
		e.Held = true
		if err := t.Hold(j.ID, seq, thing); err != nil {
			return false, err
		}
	} else {
		markOffered(j)
	}
	return e.Held, t.PutExecution(e)
}

// retriesFor is how many retries the job allows after an execution ends in status.
func retriesFor(j *store.Job, status store.ExecutionStatus) int {
	n := 0
	for _, c := range j.Retry {
		if c.FailureType == "ALL" || c.FailureType == string(status) {
			n = max(n, c.NumberOfRetries)
		}
	}
	return n
}

// parseTarget accepts a thing or thing-group ARN of this region, or a bare thing name.
func (s *Service) parseTarget(target string) (kind, name string, err error) {
	t, err := arn.ParseTarget(target)
	if err != nil {
		return "", "", Errorf(CodeInvalidRequest, "%v", err)
	}
	if t.ARN.Region != "" && t.ARN.Region != s.region {
		return "", "", Errorf(CodeInvalidRequest, "target %q is in region %s; this service serves %s", target, t.ARN.Region, s.region)
	}
	if t.ARN.Account != "" && t.ARN.Account != s.account {
		return "", "", Errorf(CodeInvalidRequest, "target %q belongs to account %s; this service is account %s (a job reaches only its own account's things)", target, t.ARN.Account, s.account)
	}
	if !thingNameRE.MatchString(t.Name) {
		return "", "", Errorf(CodeInvalidRequest, "target %q names no valid thing or thing group (letters, digits, _ - :, at most 128)", target)
	}
	return t.Type, t.Name, nil
}

// DescribeJob returns a job with its counters.
func (s *Service) DescribeJob(id string) (*store.Job, error) {
	return viewOne(s, func(t store.Tx) (*store.Job, error) { return t.JobWithTargets(id) }, Errorf(CodeResourceNotFound, "job %s does not exist", id))
}

// JobWithoutTargets is DescribeJob without the target list, for a device's view of a job: the
// list can be 10,000 ARNs long, and decoding it for every device made a wave quadratic.
func (s *Service) JobWithoutTargets(id string) (*store.Job, error) {
	return viewOne(s, func(t store.Tx) (*store.Job, error) { return t.Job(id) }, Errorf(CodeResourceNotFound, "job %s does not exist", id))
}

// CancelJob cancels a job: QUEUED executions become CANCELED, and IN_PROGRESS ones too when
// force is set. Cancelling a cancelled job again is allowed (it may add force).
func (s *Service) CancelJob(jobID string, force bool, comment, reasonCode string) (*store.Job, error) {
	var job *store.Job
	var changed []string
	err := s.st.Update(func(t store.Tx) error {
		j, err := mustJob(t, jobID)
		if err != nil {
			return err
		}
		if j.Status == store.JobCompleted {
			return Errorf(CodeInvalidRequest, "job %s is already COMPLETED and cannot be canceled", jobID)
		}
		if j.Status == store.JobCanceled && (!force || j.ForceCanceled) {
			job = j
			return nil
		}
		changed, err = s.cancelInTx(t, j, force, comment, reasonCode, s.Clock())
		job = j
		return err
	})
	if err != nil {
		return nil, err
	}
	s.log.Info().Str("job", jobID).Bool("force", force).Int("canceled", len(changed)).Msg("job canceled")
	s.queueChanged(changed)
	return job, nil
}

// cancelInTx cancels j within t: its QUEUED executions, and its IN_PROGRESS ones when force
// is set, become CANCELED. It returns the things whose queue changed. CancelJob, an abort
// (abort.go) and a scheduled end (schedule.go) share it.
func (s *Service) cancelInTx(t store.Tx, j *store.Job, force bool, comment, reasonCode string, now time.Time) ([]string, error) {
	var toCancel []*store.Execution
	err := t.JobExecutions(j.ID, func(e *store.Execution) error {
		if e.Status == store.ExecQueued || (force && e.Status == store.ExecInProgress) {
			toCancel = append(toCancel, e)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	// The job is CANCELED before its executions are, so that no retry queues them again.
	j.Status = store.JobCanceled
	j.ForceCanceled = j.ForceCanceled || force
	j.Comment, j.ReasonCode = comment, reasonCode
	j.LastUpdatedAt = now
	var changed []string
	for _, e := range toCancel {
		e.ForceCanceled = e.Status == store.ExecInProgress
		if err := s.setStatus(t, j, e, store.ExecCanceled, nil, now); err != nil {
			return nil, err
		}
		changed = append(changed, e.ThingName)
	}
	return changed, t.PutJob(j)
}

// DeleteJob deletes a job and its executions. A job still IN_PROGRESS needs force.
func (s *Service) DeleteJob(jobID string, force bool) error {
	var things []string
	err := s.st.Update(func(t store.Tx) error {
		things = nil // a run again (after a lost race) starts afresh
		j, err := mustJob(t, jobID)
		if err != nil {
			return err
		}
		if j.Status == store.JobInProgress && !force {
			return Errorf(CodeInvalidStateTransition, "job %s is IN_PROGRESS; cancel it first or delete with force", jobID)
		}
		var execs []*store.Execution
		if err := t.JobExecutions(jobID, func(e *store.Execution) error { execs = append(execs, e); return nil }); err != nil {
			return err
		}
		for _, e := range execs {
			if err := t.DeleteExecution(e); err != nil {
				return err
			}
			if !e.Status.Terminal() {
				things = append(things, e.ThingName)
			}
		}
		for _, g := range j.TargetGroups {
			if err := t.SetContinuousJob(g, jobID, false); err != nil {
				return err
			}
		}
		return t.DeleteJob(jobID)
	})
	if err == nil {
		s.queueChanged(things)
	}
	return err
}

// ListJobs pages through jobs in ID order, filtered by status, target selection and group.
func (s *Service) ListJobs(status store.JobStatus, selection, group string, max int, token string) ([]*store.Job, string, error) {
	var out []*store.Job
	var ids []string
	err := s.st.View(func(t store.Tx) error {
		return t.ForEachJob(func(j *store.Job) error {
			if (status != "" && j.Status != status) || (selection != "" && j.TargetSelection != selection) {
				return nil
			}
			if group != "" && !slices.Contains(j.TargetGroups, group) {
				return nil
			}
			ids = append(ids, j.ID)
			out = append(out, j)
			return nil
		})
	})
	if err != nil {
		return nil, "", err
	}
	page, next := PageStrings(ids, max, token)
	byID := map[string]*store.Job{}
	for _, j := range out {
		byID[j.ID] = j
	}
	jobs := make([]*store.Job, 0, len(page))
	for _, id := range page {
		jobs = append(jobs, byID[id])
	}
	return jobs, next, nil
}

// GetJobDocument returns a job's document, as the devices get it before substitution.
func (s *Service) GetJobDocument(id string) (string, error) {
	j, err := s.JobWithoutTargets(id)
	if err != nil {
		return "", err
	}
	return j.Document, nil
}

// UpdateJob changes what AWS lets an update change: the description, the presigned URL
// configuration, the rollout rate, the in-progress timeout and the retry configuration.
func (s *Service) UpdateJob(id string, in UpdateJobInput) error {
	if in.Description != nil && len(*in.Description) > 2028 {
		return Errorf(CodeInvalidRequest, "description: at most 2028 characters")
	}
	return s.st.Update(func(t store.Tx) error {
		j, err := mustJob(t, id)
		if err != nil {
			return err
		}
		if j.Status == store.JobCompleted || j.Status == store.JobCanceled {
			return Errorf(CodeInvalidStateTransition, "job %s is %s: only a job in progress can be updated", id, j.Status)
		}
		if in.Description != nil {
			j.Description = *in.Description
		}
		if in.MaxPerMinute != nil {
			if *in.MaxPerMinute < 1 || *in.MaxPerMinute > 1000 {
				return Errorf(CodeInvalidRequest, "jobExecutionsRolloutConfig.maximumPerMinute must be from 1 to 1000")
			}
			j.MaxPerMinute = *in.MaxPerMinute
		}
		if in.InProgressMinutes != nil {
			if *in.InProgressMinutes < 1 || *in.InProgressMinutes > 10080 {
				return Errorf(CodeInvalidRequest, "timeoutConfig.inProgressTimeoutInMinutes must be from 1 to 10080")
			}
			j.InProgressTimeout = time.Duration(*in.InProgressMinutes) * time.Minute
		}
		if in.Presign != nil {
			j.Presign = in.Presign
		}
		if in.Retry != nil {
			j.Retry = in.Retry
		}
		if in.Exponential != nil {
			if err := checkExponentialRate(in.Exponential); err != nil {
				return err
			}
			j.Exponential = in.Exponential
		}
		if in.Abort != nil {
			if err := checkAbort(in.Abort); err != nil {
				return err
			}
			j.Abort = in.Abort
		}
		now := s.Clock()
		j.LastUpdatedAt = now
		// A tighter abortConfig may already be met.
		if err := s.abortIfDue(t, j, now); err != nil {
			return err
		}
		return t.PutJob(j)
	})
}

// UpdateJobInput is UpdateJob's request; nil members stay as they are.
type UpdateJobInput struct {
	Description       *string
	MaxPerMinute      *int
	InProgressMinutes *int64
	Presign           *store.PresignConfig
	Retry             []store.RetryCriteria
	Abort             []store.AbortCriteria
	Exponential       *store.ExponentialRate
}

// AssociateTargetsWithJob adds targets to a CONTINUOUS job in progress (AWS's rule): a thing
// gets an execution now, a group's members now and whoever joins it later.
func (s *Service) AssociateTargetsWithJob(jobID string, targets []string, comment string) (*store.Job, error) {
	if len(targets) == 0 {
		return nil, Errorf(CodeInvalidRequest, "targets: give at least one thing or thing-group ARN")
	}
	if len(comment) > 2028 {
		return nil, Errorf(CodeInvalidRequest, "comment: at most 2028 characters")
	}
	type target struct{ kind, name string }
	var parsed []target
	for _, tg := range targets {
		kind, name, err := s.parseTarget(tg)
		if err != nil {
			return nil, err
		}
		parsed = append(parsed, target{kind, name})
	}
	var job *store.Job
	var queued []string
	err := s.st.Update(func(t store.Tx) error {
		queued = nil // a run again (after a lost race) starts afresh
		j, err := t.JobWithTargets(jobID)
		if err != nil {
			return err
		}
		if j == nil {
			return Errorf(CodeResourceNotFound, "job %s does not exist", jobID)
		}
		if j.TargetSelection != "CONTINUOUS" {
			return Errorf(CodeInvalidRequest, "job %s is a SNAPSHOT job: targets can be associated only with a CONTINUOUS job", jobID)
		}
		if j.Status != store.JobInProgress {
			return Errorf(CodeInvalidStateTransition, "job %s is %s: targets can be associated only with a job in progress", jobID, j.Status)
		}
		all := slices.Clone(j.Targets)
		for _, tg := range targets {
			if !slices.Contains(all, tg) {
				all = append(all, tg)
			}
		}
		if err := s.checkTargets(all); err != nil {
			return err
		}
		now := s.Clock()
		queue := func(thing string) error {
			if e, err := t.Execution(jobID, thing); err != nil || e != nil {
				return err
			}
			held, err := s.queueExecution(t, j, thing, now)
			if !held {
				queued = append(queued, thing)
			}
			return err
		}
		for _, tg := range parsed {
			if tg.kind != "thinggroup" {
				th, err := t.Thing(tg.name)
				if err != nil {
					return err
				}
				if th == nil {
					return Errorf(CodeInvalidRequest, "target thing %s does not exist; register it first (CreateThing)", tg.name)
				}
				if err := queue(tg.name); err != nil {
					return err
				}
				continue
			}
			g, err := t.Group(tg.name)
			if err != nil {
				return err
			}
			if g == nil {
				return Errorf(CodeInvalidRequest, "target thing group %s does not exist", tg.name)
			}
			ms, err := members(t, tg.name, true)
			if err != nil {
				return err
			}
			for _, m := range ms {
				if err := queue(m); err != nil {
					return err
				}
			}
			if !slices.Contains(j.TargetGroups, tg.name) {
				j.TargetGroups = append(j.TargetGroups, tg.name)
				if err := t.SetContinuousJob(tg.name, jobID, true); err != nil {
					return err
				}
			}
		}
		j.Targets = all
		if comment != "" {
			j.Comment = comment
		}
		j.LastUpdatedAt = now
		job = j
		if err := t.PutJobTargets(jobID, all); err != nil {
			return err
		}
		return t.PutJob(j)
	})
	if err != nil {
		return nil, err
	}
	s.queueChanged(queued)
	return job, nil
}
