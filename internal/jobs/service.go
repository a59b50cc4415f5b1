package jobs

import (
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

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
	return &Service{st: st, region: o.Region, account: o.Account, log: o.Logger, now: o.Now}, nil
}

// Close closes the database.
func (s *Service) Close() error { return s.st.close() }

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
	return fmt.Sprintf("arn:aws:iot:%s:%s:thing/%s", s.region, s.account, name)
}

// JobArn is the ARN of a job in this service's region and account.
func (s *Service) JobArn(id string) string {
	return fmt.Sprintf("arn:aws:iot:%s:%s:job/%s", s.region, s.account, id)
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

// DescribeThing returns a registered thing.
func (s *Service) DescribeThing(name string) (*Thing, error) {
	var out *Thing
	err := s.st.db.View(func(tx *bolt.Tx) error {
		th, err := txn{tx}.thing(name)
		if err != nil {
			return err
		}
		if th == nil {
			return errorf(CodeResourceNotFound, "thing %s does not exist; register it first (CreateThing)", name)
		}
		out = th
		return nil
	})
	return out, err
}

// CreateJobInput is what CreateJob needs.
type CreateJobInput struct {
	JobID           string
	Document        string
	Description     string
	Targets         []string
	TargetSelection string
}

// CreateJob creates a job and queues one execution per target thing. Nothing is written if any
// part of the request is invalid.
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
	case "SNAPSHOT":
	default:
		return nil, errorf(CodeInvalidRequest, "targetSelection %q is not supported here yet; use SNAPSHOT", in.TargetSelection)
	}
	var things []string
	for _, target := range in.Targets {
		name, err := s.thingNameFromTarget(target)
		if err != nil {
			return nil, err
		}
		if !slices.Contains(things, name) {
			things = append(things, name)
		}
	}
	var job *Job
	err := s.st.db.Update(func(tx *bolt.Tx) error {
		t := txn{tx}
		existing, err := t.job(in.JobID)
		if err != nil {
			return err
		}
		if existing != nil {
			return errorf(CodeAlreadyExists, "job %s already exists", in.JobID)
		}
		for _, name := range things {
			th, err := t.thing(name)
			if err != nil {
				return err
			}
			if th == nil {
				return errorf(CodeInvalidRequest, "target thing %s does not exist; register it first (CreateThing)", name)
			}
		}
		now := s.clock()
		job = &Job{
			ID: in.JobID, Arn: s.JobArn(in.JobID), Document: in.Document, Description: in.Description,
			Targets: in.Targets, TargetSelection: in.TargetSelection, Status: JobInProgress,
			CreatedAt: now, LastUpdatedAt: now,
		}
		for _, name := range things {
			seq, err := tx.Bucket(bucketQueue).NextSequence()
			if err != nil {
				return err
			}
			e := &Execution{JobID: in.JobID, ThingName: name, Status: ExecQueued, QueuedAt: now, LastUpdatedAt: now,
				VersionNumber: 1, ExecutionNumber: 1, Seq: seq}
			if err := t.putExecution(e); err != nil {
				return err
			}
			job.Counts.add(ExecQueued, 1)
		}
		return t.putJob(job)
	})
	if err != nil {
		return nil, err
	}
	s.log.Info().Str("job", job.ID).Int("things", len(things)).Msg("job created")
	s.queueChanged(things)
	return job, nil
}

// thingNameFromTarget accepts a thing ARN of this region and account, or a bare thing name.
func (s *Service) thingNameFromTarget(target string) (string, error) {
	if !strings.HasPrefix(target, "arn:") {
		if thingNameRE.MatchString(target) {
			return target, nil
		}
		return "", errorf(CodeInvalidRequest, "target %q is neither a thing ARN nor a thing name", target)
	}
	parts := strings.SplitN(target, ":", 6)
	if len(parts) != 6 || parts[2] != "iot" {
		return "", errorf(CodeInvalidRequest, "target %q is not an AWS IoT ARN (arn:aws:iot:REGION:ACCOUNT:thing/NAME)", target)
	}
	if parts[3] != s.region {
		return "", errorf(CodeInvalidRequest, "target %q is in region %s; this service serves %s", target, parts[3], s.region)
	}
	kind, name, _ := strings.Cut(parts[5], "/")
	switch kind {
	case "thing":
		if !thingNameRE.MatchString(name) {
			return "", errorf(CodeInvalidRequest, "target %q has an invalid thing name", target)
		}
		return name, nil
	case "thinggroup":
		return "", errorf(CodeInvalidRequest, "target %q is a thing group; thing groups are not supported by this jobs service yet, list the things", target)
	}
	return "", errorf(CodeInvalidRequest, "target %q is neither a thing nor a thing group ARN", target)
}

// DescribeJob returns a job with its counters.
func (s *Service) DescribeJob(id string) (*Job, error) {
	var out *Job
	err := s.st.db.View(func(tx *bolt.Tx) error {
		j, err := txn{tx}.job(id)
		if err != nil {
			return err
		}
		if j == nil {
			return errorf(CodeResourceNotFound, "job %s does not exist", id)
		}
		out = j
		return nil
	})
	return out, err
}

// DescribeJobExecution returns one thing's execution of a job.
func (s *Service) DescribeJobExecution(jobID, thing string) (*Execution, error) {
	var out *Execution
	err := s.st.db.View(func(tx *bolt.Tx) error {
		e, err := txn{tx}.execution(jobID, thing)
		if err != nil {
			return err
		}
		if e == nil {
			return errorf(CodeResourceNotFound, "no execution of job %s on thing %s", jobID, thing)
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
		j, err := t.job(jobID)
		if err != nil {
			return err
		}
		if j == nil {
			return errorf(CodeResourceNotFound, "job %s does not exist", jobID)
		}
		errStop := fmt.Errorf("page full")
		err = t.jobExecutions(jobID, func(e *Execution) error {
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
		j, err := t.job(jobID)
		if err != nil {
			return err
		}
		if j == nil {
			return errorf(CodeResourceNotFound, "job %s does not exist", jobID)
		}
		if j.Status == JobCompleted {
			return errorf(CodeInvalidStateTransition, "job %s is already COMPLETED and cannot be canceled", jobID)
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
			j.Counts.add(e.Status, -1)
			j.Counts.add(ExecCanceled, 1)
			e.ForceCanceled = e.Status == ExecInProgress
			e.Status = ExecCanceled
			e.LastUpdatedAt = now
			e.VersionNumber++
			if err := t.putExecution(e); err != nil {
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
				queued = append(queued, e)
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
			if e.Status == want {
				return e, nil
			}
		}
	}
	return nil, nil
}

// StartNext moves the thing's next execution to IN_PROGRESS (or returns the one already in
// progress) and returns it with its job; nil when nothing is pending.
func (s *Service) StartNext(thing string, details map[string]string) (*Execution, *Job, error) {
	var exec *Execution
	var job *Job
	changed := false
	err := s.st.db.Update(func(tx *bolt.Tx) error {
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
		e.Status = ExecInProgress
		e.StartedAt = now
		e.LastUpdatedAt = now
		e.VersionNumber++
		if details != nil {
			e.StatusDetails = details
		}
		j.Counts.add(ExecQueued, -1)
		j.Counts.add(ExecInProgress, 1)
		j.LastUpdatedAt = now
		changed = true
		if err := t.putExecution(e); err != nil {
			return err
		}
		return t.putJob(j)
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
	err := s.st.db.Update(func(tx *bolt.Tx) error {
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
		j, err := t.job(in.JobID)
		if err != nil {
			return err
		}
		now := s.clock()
		old := e.Status
		if old == ExecQueued && in.Status != ExecInProgress && in.Status != ExecRejected {
			return &Error{Code: CodeInvalidStateTransition, Message: fmt.Sprintf("execution of job %s on %s is QUEUED; start it (IN_PROGRESS) before reporting %s", in.JobID, in.Thing, in.Status), State: e}
		}
		if old == ExecQueued && in.Status == ExecInProgress {
			e.StartedAt = now
		}
		e.Status = in.Status
		if in.StatusDetails != nil {
			e.StatusDetails = in.StatusDetails
		}
		e.LastUpdatedAt = now
		e.VersionNumber++
		if err := t.putExecution(e); err != nil {
			return err
		}
		if old != e.Status {
			j.Counts.add(old, -1)
			j.Counts.add(e.Status, 1)
			queueMoved = true
		}
		j.LastUpdatedAt = now
		if j.Status == JobInProgress && j.TargetSelection == "SNAPSHOT" && j.Counts.Pending() == 0 {
			j.Status = JobCompleted
			j.CompletedAt = now
		}
		exec, job = e, j
		return t.putJob(j)
	})
	if err != nil {
		return nil, nil, err
	}
	if queueMoved {
		s.queueChanged([]string{in.Thing})
	}
	return exec, job, nil
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
