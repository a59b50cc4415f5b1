package jobs

import (
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/otaflow/otaflow/internal/arn"

	"github.com/rs/zerolog"
	bolt "go.etcd.io/bbolt"
)

// Options configure a Service.
type Options struct {
	// Path of the bbolt database file.
	Path string
	// Region and Account appear in ARNs.
	Region  string
	Account string
	Logger  zerolog.Logger
	// Now is the clock; tests may replace it.
	Now func() time.Time
	// SweepInterval is how often overdue executions are timed out (default 1 s).
	SweepInterval time.Duration
	// BaseURL is this service's address as devices reach it, for presigned artifact URLs.
	BaseURL string
}

// Service holds the jobs state and the operations both planes share.
type Service struct {
	st      *store
	region  string
	account string
	log     zerolog.Logger
	now     func() time.Time

	mu        sync.RWMutex
	listeners []func(things []string)

	stopSweep chan struct{}
	swept     sync.WaitGroup

	path       string
	baseURL    string
	presignKey []byte
}

// MaxDocumentBytes is AWS IoT's limit on a job document.
const MaxDocumentBytes = 32 * 1024

// Open opens (or creates) the jobs database.
func Open(o Options) (*Service, error) {
	if o.Region == "" {
		o.Region = "us-east-1"
	}
	if o.Account == "" {
		o.Account = "000000000000"
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	st, err := openStore(o.Path)
	if err != nil {
		return nil, err
	}
	s := &Service{st: st, region: o.Region, account: o.Account, log: o.Logger, now: o.Now, stopSweep: make(chan struct{}),
		path: o.Path, baseURL: o.BaseURL}
	if s.presignKey, err = s.loadPresignSecret(); err != nil {
		st.close()
		return nil, fmt.Errorf("artifact signing key: %w", err)
	}
	s.swept.Add(1)
	go s.sweepLoop(o.SweepInterval)
	return s, nil
}

// sweepLoop times out overdue executions until Close.
func (s *Service) sweepLoop(every time.Duration) {
	defer s.swept.Done()
	if every <= 0 {
		every = time.Second
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-s.stopSweep:
			return
		case <-tick.C:
			if _, err := s.sweepTimeouts(s.clock()); err != nil {
				s.log.Error().Err(err).Msg("timing out executions failed; will retry")
			}
			released, err := s.releaseHeld(s.clock())
			if err != nil {
				s.log.Error().Err(err).Msg("releasing rate-limited executions failed; will retry")
			}
			s.queueChanged(released)
		}
	}
}

// SetBaseURL sets the address devices reach this service at, once it is listening.
func (s *Service) SetBaseURL(u string) { s.baseURL = u }

// Close stops the timeout sweeper and closes the database.
func (s *Service) Close() error {
	close(s.stopSweep)
	s.swept.Wait()
	return s.st.close()
}

// OnQueueChange registers fn to be told which things' pending jobs changed, after the change
// is durable. The MQTT plane uses it to send notify and notify-next.
func (s *Service) OnQueueChange(fn func(things []string)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.listeners = append(s.listeners, fn)
}

func (s *Service) queueChanged(things []string) {
	if len(things) == 0 {
		return
	}
	s.mu.RLock()
	ls := slices.Clone(s.listeners)
	s.mu.RUnlock()
	for _, fn := range ls {
		fn(things)
	}
}

func (s *Service) clock() time.Time { return s.now().UTC().Truncate(time.Millisecond) }

// ThingArn is the ARN of a thing in this service's region and account.
func (s *Service) ThingArn(name string) string {
	return arn.IoT(s.region, s.account, arn.TypeThing, name)
}

// JobArn is the ARN of a job in this service's region and account.
func (s *Service) JobArn(id string) string {
	return arn.IoT(s.region, s.account, arn.TypeJob, id)
}

var (
	thingNameRE = regexp.MustCompile(`^[a-zA-Z0-9:_-]{1,128}$`)
	jobIDRE     = regexp.MustCompile(`^[a-zA-Z0-9_-]{1,64}$`)
)

// CreateThing registers a thing. Creating an existing thing with the same attributes is a
// no-op, as in AWS; different attributes are a conflict.
func (s *Service) CreateThing(name string, attrs map[string]string) (*Thing, error) {
	if !thingNameRE.MatchString(name) {
		return nil, errorf(CodeInvalidRequest, "thing name %q is invalid: use 1-128 characters from a-z A-Z 0-9 : _ -", name)
	}
	var out *Thing
	err := s.st.db.Update(func(tx *bolt.Tx) error {
		t := txn{tx}
		existing, err := t.thing(name)
		if err != nil {
			return err
		}
		if existing != nil {
			if !mapsEqual(existing.Attributes, attrs) {
				return errorf(CodeAlreadyExists, "thing %s already exists with different attributes", name)
			}
			out = existing
			return nil
		}
		seq, _ := tx.Bucket(bucketThings).NextSequence()
		out = &Thing{Name: name, Arn: s.ThingArn(name), ID: fmt.Sprintf("%016x", seq), Attributes: attrs, Version: 1, CreatedAt: s.clock()}
		return t.putThing(out)
	})
	return out, err
}

// viewOne loads one record in a read transaction; a missing record is notFound.
func viewOne[T any](s *Service, load func(txn) (*T, error), notFound *Error) (*T, error) {
	var out *T
	err := s.st.db.View(func(tx *bolt.Tx) error {
		v, err := load(txn{tx})
		if err != nil {
			return err
		}
		if v == nil {
			return notFound
		}
		out = v
		return nil
	})
	return out, err
}

// DescribeThing returns a registered thing.
func (s *Service) DescribeThing(name string) (*Thing, error) {
	return viewOne(s, func(t txn) (*Thing, error) { return t.thing(name) },
		errorf(CodeResourceNotFound, "thing %s does not exist; register it first (CreateThing)", name))
}

// CreateJobInput is what CreateJob needs.
type CreateJobInput struct {
	JobID           string
	Document        string
	Description     string
	Targets         []string
	TargetSelection string
	// InProgressTimeoutMinutes times out executions that stay IN_PROGRESS longer.
	InProgressTimeoutMinutes int64
	Retry                    []RetryCriteria
	Presign                  *PresignConfig
	// MaxPerMinute limits executions released per minute (0: no limit).
	MaxPerMinute int
}

// CreateJob creates a job and queues one execution per target thing (the members of target
// groups included). Nothing is written if any part of the request is invalid.
func (s *Service) CreateJob(in CreateJobInput) (*Job, error) {
	if !jobIDRE.MatchString(in.JobID) {
		return nil, errorf(CodeInvalidRequest, "job ID %q is invalid: use 1-64 characters from a-z A-Z 0-9 _ -", in.JobID)
	}
	if in.Document == "" {
		return nil, errorf(CodeInvalidRequest, "job %s has no document", in.JobID)
	}
	if len(in.Document) > MaxDocumentBytes {
		return nil, errorf(CodeInvalidRequest, "job document is %d bytes; the limit is %d", len(in.Document), MaxDocumentBytes)
	}
	if !json.Valid([]byte(in.Document)) {
		return nil, errorf(CodeInvalidRequest, "job document is not valid JSON")
	}
	if len(in.Targets) == 0 {
		return nil, errorf(CodeInvalidRequest, "job %s has no targets", in.JobID)
	}
	switch in.TargetSelection {
	case "":
		in.TargetSelection = "SNAPSHOT"
	case "SNAPSHOT", "CONTINUOUS":
	default:
		return nil, errorf(CodeInvalidRequest, "targetSelection %q is invalid: use SNAPSHOT or CONTINUOUS", in.TargetSelection)
	}
	if in.InProgressTimeoutMinutes < 0 || in.InProgressTimeoutMinutes > 10080 {
		return nil, errorf(CodeInvalidRequest, "timeoutConfig.inProgressTimeoutInMinutes must be from 1 to 10080")
	}
	for _, c := range in.Retry {
		if c.FailureType != "FAILED" && c.FailureType != "TIMED_OUT" && c.FailureType != "ALL" {
			return nil, errorf(CodeInvalidRequest, "retry failureType %q is invalid: use FAILED, TIMED_OUT or ALL", c.FailureType)
		}
		if c.NumberOfRetries < 0 || c.NumberOfRetries > 10 {
			return nil, errorf(CodeInvalidRequest, "retry numberOfRetries must be from 0 to 10")
		}
	}
	if in.MaxPerMinute < 0 || in.MaxPerMinute > 1000 {
		return nil, errorf(CodeInvalidRequest, "jobExecutionsRolloutConfig.maximumPerMinute must be from 1 to 1000")
	}
	if in.Presign != nil {
		if in.Presign.ExpiresInSec == 0 {
			in.Presign.ExpiresInSec = 3600
		}
		if in.Presign.ExpiresInSec < 60 || in.Presign.ExpiresInSec > 3600 {
			return nil, errorf(CodeInvalidRequest, "presignedUrlConfig.expiresInSec must be from 60 to 3600")
		}
	}
	var things, groups []string
	for _, target := range in.Targets {
		kind, name, err := s.parseTarget(target)
		if err != nil {
			return nil, err
		}
		list := &things
		if kind == "thinggroup" {
			list = &groups
		}
		if !slices.Contains(*list, name) {
			*list = append(*list, name)
		}
	}
	if in.TargetSelection == "CONTINUOUS" && len(groups) == 0 {
		return nil, errorf(CodeInvalidRequest, "a CONTINUOUS job must target at least one thing group")
	}
	var job *Job
	var queued []string
	err := s.st.db.Update(func(tx *bolt.Tx) error {
		t := txn{tx}
		existing, err := t.job(in.JobID)
		if err != nil {
			return err
		}
		if existing != nil {
			return errorf(CodeAlreadyExists, "job %s already exists", in.JobID)
		}
		var missing []string
		for _, name := range things {
			th, err := t.thing(name)
			if err != nil {
				return err
			}
			if th == nil {
				missing = append(missing, name)
			}
		}
		if len(missing) > 0 {
			return errorf(CodeInvalidRequest, "target thing(s) %s do not exist; register them first (CreateThing)", strings.Join(missing, ", "))
		}
		all := slices.Clone(things)
		for _, g := range groups {
			grp, err := t.group(g)
			if err != nil {
				return err
			}
			if grp == nil {
				return errorf(CodeInvalidRequest, "target thing group %s does not exist", g)
			}
			for _, th := range t.members(g, true) {
				if !slices.Contains(all, th) {
					all = append(all, th)
				}
			}
		}
		now := s.clock()
		job = &Job{
			ID: in.JobID, Arn: s.JobArn(in.JobID), Document: in.Document, Description: in.Description,
			Targets: in.Targets, TargetSelection: in.TargetSelection, Status: JobInProgress,
			CreatedAt: now, LastUpdatedAt: now, TargetGroups: groups,
			InProgressTimeout: time.Duration(in.InProgressTimeoutMinutes) * time.Minute,
			Retry:             in.Retry, Presign: in.Presign, MaxPerMinute: in.MaxPerMinute, RateWindow: now,
		}
		for _, name := range all {
			if err := s.queueExecution(t, job, name, now); err != nil {
				return err
			}
		}
		if job.TargetSelection == "CONTINUOUS" {
			for _, g := range groups {
				if err := tx.Bucket(bucketGroupJobs).Put([]byte(g+"\x00"+job.ID), nil); err != nil {
					return err
				}
			}
		}
		queued = all
		if job.MaxPerMinute > 0 && len(all) > job.MaxPerMinute {
			queued = all[:job.MaxPerMinute]
		}
		if err := t.putJobTargets(job.ID, job.Targets); err != nil {
			return err
		}
		return t.putJob(job)
	})
	if err != nil {
		return nil, err
	}
	s.log.Info().Str("job", job.ID).Int("things", len(queued)).Str("targetSelection", job.TargetSelection).Msg("job created")
	s.queueChanged(queued)
	return job, nil
}

// queueExecution queues a new execution of j on thing (the caller writes j).
func (s *Service) queueExecution(t txn, j *Job, thing string, now time.Time) error {
	seq, err := t.tx.Bucket(bucketQueue).NextSequence()
	if err != nil {
		return err
	}
	e := &Execution{JobID: j.ID, ThingName: thing, Status: ExecQueued, QueuedAt: now, LastUpdatedAt: now,
		VersionNumber: 1, ExecutionNumber: 1, Seq: seq}
	if old, err := t.execution(j.ID, thing); err != nil {
		return err
	} else if old != nil {
		// A thing that left and rejoined a CONTINUOUS job's group gets a fresh execution.
		j.Counts.add(old.Status, -1)
		e.ExecutionNumber = old.ExecutionNumber + 1
		e.Previous = append(old.Previous, archive(old))
	}
	j.Counts.add(ExecQueued, 1)
	j.LastUpdatedAt = now
	if j.MaxPerMinute > 0 {
		if j.RateReleased >= j.MaxPerMinute {
			e.Held = true
			key := append(append([]byte(j.ID+"\x00"), seqBytes(seq)...), []byte("\x00"+thing)...)
			if err := t.tx.Bucket(bucketHeld).Put(key, nil); err != nil {
				return err
			}
		} else {
			j.RateReleased++
		}
	}
	return t.putExecution(e)
}

func archive(e *Execution) PreviousExecution {
	return PreviousExecution{ExecutionNumber: e.ExecutionNumber, Status: e.Status, StatusDetails: e.StatusDetails,
		QueuedAt: e.QueuedAt, StartedAt: e.StartedAt, LastUpdatedAt: e.LastUpdatedAt, VersionNumber: e.VersionNumber}
}

// setStatus moves an execution to a new status, keeping the job's counters, applying the
// job's retry policy to FAILED and TIMED_OUT, and completing a SNAPSHOT job whose executions
// have all ended. It writes both records.
func (s *Service) setStatus(t txn, j *Job, e *Execution, status ExecutionStatus, details map[string]string, now time.Time) error {
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
		seq, err := t.tx.Bucket(bucketQueue).NextSequence()
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
	if err := t.putExecution(e); err != nil {
		return err
	}
	return t.putJob(j)
}

// retriesFor is how many retries the job allows after an execution ends in status.
func (j *Job) retriesFor(status ExecutionStatus) int {
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
		return "", "", errorf(CodeInvalidRequest, "%v", err)
	}
	if t.ARN.Region != "" && t.ARN.Region != s.region {
		return "", "", errorf(CodeInvalidRequest, "target %q is in region %s; this service serves %s", target, t.ARN.Region, s.region)
	}
	if !thingNameRE.MatchString(t.Name) {
		return "", "", errorf(CodeInvalidRequest, "target %q names no valid thing or thing group (letters, digits, _ - :, at most 128)", target)
	}
	return t.Type, t.Name, nil
}

// DescribeJob returns a job with its counters.
func (s *Service) DescribeJob(id string) (*Job, error) {
	return viewOne(s, func(t txn) (*Job, error) { return t.jobWithTargets(id) }, errorf(CodeResourceNotFound, "job %s does not exist", id))
}

// jobWithoutTargets is DescribeJob without the target list, for a device's view of a job: the
// list can be 10,000 ARNs long, and decoding it for every device made a wave quadratic.
func (s *Service) jobWithoutTargets(id string) (*Job, error) {
	return viewOne(s, func(t txn) (*Job, error) { return t.job(id) }, errorf(CodeResourceNotFound, "job %s does not exist", id))
}

// DescribeJobExecution returns one thing's execution of a job: the latest, or the one with
// executionNumber when it is not 0 (an earlier one a retry replaced).
func (s *Service) DescribeJobExecution(jobID, thing string, executionNumber ...int64) (*Execution, error) {
	var out *Execution
	err := s.st.db.View(func(tx *bolt.Tx) error {
		e, err := txn{tx}.execution(jobID, thing)
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
	err := s.st.db.View(func(tx *bolt.Tx) error {
		t := txn{tx}
		if _, err := t.mustJob(jobID); err != nil {
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

// CancelJob cancels a job: QUEUED executions become CANCELED, and IN_PROGRESS ones too when
// force is set. Cancelling a cancelled job again is allowed (it may add force).
func (s *Service) CancelJob(jobID string, force bool, comment, reasonCode string) (*Job, error) {
	var job *Job
	var changed []string
	err := s.st.db.Update(func(tx *bolt.Tx) error {
		t := txn{tx}
		j, err := t.mustJob(jobID)
		if err != nil {
			return err
		}
		if j.Status == JobCompleted {
			return errorf(CodeInvalidRequest, "job %s is already COMPLETED and cannot be canceled", jobID)
		}
		if j.Status == JobCanceled && (!force || j.ForceCanceled) {
			job = j
			return nil
		}
		now := s.clock()
		var toCancel []*Execution
		err = t.jobExecutions(jobID, func(e *Execution) error {
			if e.Status == ExecQueued || (force && e.Status == ExecInProgress) {
				toCancel = append(toCancel, e)
			}
			return nil
		})
		if err != nil {
			return err
		}
		for _, e := range toCancel {
			e.ForceCanceled = e.Status == ExecInProgress
			if err := s.setStatus(t, j, e, ExecCanceled, nil, now); err != nil {
				return err
			}
			changed = append(changed, e.ThingName)
		}
		j.Status = JobCanceled
		j.ForceCanceled = j.ForceCanceled || force
		j.Comment, j.ReasonCode = comment, reasonCode
		j.LastUpdatedAt = now
		job = j
		return t.putJob(j)
	})
	if err != nil {
		return nil, err
	}
	s.log.Info().Str("job", jobID).Bool("force", force).Int("canceled", len(changed)).Msg("job canceled")
	s.queueChanged(changed)
	return job, nil
}

// PendingExecutions returns a thing's IN_PROGRESS and QUEUED executions, each in queue order.
func (s *Service) PendingExecutions(thing string) (inProgress, queued []*Execution, err error) {
	err = s.st.db.View(func(tx *bolt.Tx) error {
		all, err := txn{tx}.thingExecutions(thing)
		if err != nil {
			return err
		}
		for _, e := range all {
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
	err := s.st.db.View(func(tx *bolt.Tx) error {
		var err error
		exec, err = nextOf(txn{tx}, thing)
		if err != nil || exec == nil {
			return err
		}
		job, err = txn{tx}.job(exec.JobID)
		return err
	})
	return exec, job, err
}

func nextOf(t txn, thing string) (*Execution, error) {
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
	// Most asks find nothing pending; answer those from a read transaction, with no commit.
	if e, j, err := s.NextExecution(thing); err != nil || e == nil || e.Status == ExecInProgress {
		return e, j, err
	}
	var exec *Execution
	var job *Job
	changed := false
	err := s.st.db.Batch(func(tx *bolt.Tx) error {
		t := txn{tx}
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
	var exec *Execution
	var job *Job
	queueMoved := false
	err := s.st.db.Batch(func(tx *bolt.Tx) error {
		t := txn{tx}
		e, err := t.execution(in.JobID, in.Thing)
		if err != nil {
			return err
		}
		if e == nil || (in.ExecutionNumber != 0 && in.ExecutionNumber != e.ExecutionNumber) {
			return errorf(CodeResourceNotFound, "no execution of job %s on thing %s", in.JobID, in.Thing)
		}
		if e.Status.Terminal() {
			return &Error{Code: CodeTerminalStateReached, Message: fmt.Sprintf("execution of job %s on %s is already %s", in.JobID, in.Thing, e.Status), State: e}
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
	err := s.st.db.Update(func(tx *bolt.Tx) error {
		t := txn{tx}
		e, err := t.mustExecution(jobID, thing)
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

// DeleteJob deletes a job and its executions. A job still IN_PROGRESS needs force.
func (s *Service) DeleteJob(jobID string, force bool) error {
	var things []string
	err := s.st.db.Update(func(tx *bolt.Tx) error {
		t := txn{tx}
		j, err := t.mustJob(jobID)
		if err != nil {
			return err
		}
		if j.Status == JobInProgress && !force {
			return errorf(CodeInvalidStateTransition, "job %s is IN_PROGRESS; cancel it first or delete with force", jobID)
		}
		var execs []*Execution
		if err := t.jobExecutions(jobID, func(e *Execution) error { execs = append(execs, e); return nil }); err != nil {
			return err
		}
		for _, e := range execs {
			if err := t.deleteExecution(e); err != nil {
				return err
			}
			if !e.Status.Terminal() {
				things = append(things, e.ThingName)
			}
		}
		for _, g := range j.TargetGroups {
			if err := tx.Bucket(bucketGroupJobs).Delete([]byte(g + "\x00" + jobID)); err != nil {
				return err
			}
		}
		if err := tx.Bucket(bucketJobTargets).Delete([]byte(jobID)); err != nil {
			return err
		}
		return tx.Bucket(bucketJobs).Delete([]byte(jobID))
	})
	if err == nil {
		s.queueChanged(things)
	}
	return err
}

// DeleteThing deletes a thing; its pending executions become REMOVED.
func (s *Service) DeleteThing(name string, expectedVersion int64) error {
	err := s.st.db.Update(func(tx *bolt.Tx) error {
		t := txn{tx}
		th, err := t.thing(name)
		if err != nil {
			return err
		}
		if th == nil {
			return nil // deleting a thing that does not exist succeeds, as in AWS
		}
		if expectedVersion != 0 && expectedVersion != th.Version {
			return errorf(CodeVersionMismatch, "thing %s is at version %d, not %d", name, th.Version, expectedVersion)
		}
		execs, err := t.thingExecutions(name)
		if err != nil {
			return err
		}
		now := s.clock()
		for _, e := range execs {
			if e.Status.Terminal() {
				continue
			}
			j, err := t.job(e.JobID)
			if err != nil {
				return err
			}
			if err := s.setStatus(t, j, e, ExecRemoved, nil, now); err != nil {
				return err
			}
		}
		for _, g := range t.keysWithPrefix(bucketMemberships, name+"\x00") {
			tx.Bucket(bucketMembers).Delete([]byte(g + "\x00" + name))
			tx.Bucket(bucketMemberships).Delete([]byte(name + "\x00" + g))
		}
		return tx.Bucket(bucketThings).Delete([]byte(name))
	})
	return err
}

// ListJobs pages through jobs in ID order, filtered by status, target selection and group.
func (s *Service) ListJobs(status JobStatus, selection, group string, max int, token string) ([]*Job, string, error) {
	var out []*Job
	var ids []string
	err := s.st.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketJobs).ForEach(func(k, v []byte) error {
			var j Job
			if err := json.Unmarshal(v, &j); err != nil {
				return err
			}
			if (status != "" && j.Status != status) || (selection != "" && j.TargetSelection != selection) {
				return nil
			}
			if group != "" && !slices.Contains(j.TargetGroups, group) {
				return nil
			}
			ids = append(ids, j.ID)
			out = append(out, &j)
			return nil
		})
	})
	if err != nil {
		return nil, "", err
	}
	page, next := pageStrings(ids, max, token)
	byID := map[string]*Job{}
	for _, j := range out {
		byID[j.ID] = j
	}
	jobs := make([]*Job, 0, len(page))
	for _, id := range page {
		jobs = append(jobs, byID[id])
	}
	return jobs, next, nil
}

// ListJobExecutionsForThing pages through a thing's executions in job-ID order.
func (s *Service) ListJobExecutionsForThing(thing string, status ExecutionStatus, max int, token string) ([]*Execution, string, error) {
	var all []*Execution
	err := s.st.db.View(func(tx *bolt.Tx) error {
		t := txn{tx}
		th, err := t.thing(thing)
		if err != nil {
			return err
		}
		if th == nil {
			return errorf(CodeResourceNotFound, "thing %s does not exist", thing)
		}
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

// ListThings pages through things in name order, optionally those with an attribute value.
func (s *Service) ListThings(attrName, attrValue string, max int, token string) ([]*Thing, string, error) {
	var names []string
	byName := map[string]*Thing{}
	err := s.st.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketThings).ForEach(func(k, v []byte) error {
			var th Thing
			if err := json.Unmarshal(v, &th); err != nil {
				return err
			}
			if attrName != "" && th.Attributes[attrName] != attrValue {
				return nil
			}
			names = append(names, th.Name)
			byName[th.Name] = &th
			return nil
		})
	})
	if err != nil {
		return nil, "", err
	}
	page, next := pageStrings(names, max, token)
	out := make([]*Thing, 0, len(page))
	for _, n := range page {
		out = append(out, byName[n])
	}
	return out, next, nil
}

// releaseHeld releases held executions of rate-limited jobs: up to each job's maximum per
// minute. It returns the things whose queue changed.
func (s *Service) releaseHeld(now time.Time) ([]string, error) {
	var things []string
	err := s.st.db.Update(func(tx *bolt.Tx) error {
		t := txn{tx}
		c := tx.Bucket(bucketHeld).Cursor()
		var jobIDs []string
		for k, _ := c.First(); k != nil; {
			id, _, _ := strings.Cut(string(k), "\x00")
			jobIDs = append(jobIDs, id)
			k, _ = c.Seek([]byte(id + "\x01")) // next job
		}
		for _, id := range jobIDs {
			j, err := t.job(id)
			if err != nil {
				return err
			}
			if j == nil {
				continue
			}
			if now.Sub(j.RateWindow) >= time.Minute {
				j.RateWindow, j.RateReleased = now, 0
			}
			for _, key := range t.keysWithPrefix(bucketHeld, id+"\x00") {
				if j.RateReleased >= j.MaxPerMinute && j.Status == JobInProgress {
					break
				}
				thing := key[9:]
				if err := tx.Bucket(bucketHeld).Delete([]byte(id + "\x00" + key)); err != nil {
					return err
				}
				e, err := t.execution(id, thing)
				if err != nil {
					return err
				}
				if e == nil || !e.Held {
					continue
				}
				if e.Status != ExecQueued { // canceled or removed while held
					e.Held = false
					if err := t.putExecution(e); err != nil {
						return err
					}
					continue
				}
				e.Held = false
				j.RateReleased++
				if err := t.putExecution(e); err != nil {
					return err
				}
				things = append(things, thing)
			}
			if err := t.putJob(j); err != nil {
				return err
			}
		}
		return nil
	})
	return things, err
}

// sweepTimeouts moves every IN_PROGRESS execution whose deadline has passed to TIMED_OUT
// (or, under a retry policy, back to QUEUED). It returns how many it timed out.
func (s *Service) sweepTimeouts(now time.Time) (int, error) {
	var things []string
	err := s.st.db.Update(func(tx *bolt.Tx) error {
		t := txn{tx}
		c := tx.Bucket(bucketTimeouts).Cursor()
		var due [][]byte
		limit := seqBytes(uint64(now.UnixNano()))
		for k, _ := c.First(); k != nil && string(k[:8]) <= string(limit); k, _ = c.Next() {
			due = append(due, append([]byte(nil), k...))
		}
		for _, k := range due {
			jobID, thing, _ := strings.Cut(string(k[8:]), "\x00")
			e, err := t.execution(jobID, thing)
			if err != nil {
				return err
			}
			if e == nil || e.Status != ExecInProgress || e.deadline().After(now) {
				tx.Bucket(bucketTimeouts).Delete(k)
				continue
			}
			j, err := t.job(jobID)
			if err != nil {
				return err
			}
			if err := s.setStatus(t, j, e, ExecTimedOut, nil, s.clock()); err != nil {
				return err
			}
			things = append(things, thing)
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	if len(things) > 0 {
		s.log.Info().Int("executions", len(things)).Msg("executions timed out")
	}
	s.queueChanged(things)
	return len(things), nil
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
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
