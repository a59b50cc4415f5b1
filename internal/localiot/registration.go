package localiot

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/otaflow/otaflow/internal/arn"
	"github.com/otaflow/otaflow/internal/localiot/store"
)

// Bulk registration (StartThingRegistrationTask and its companions): a provisioning template
// and an input file in the artifact store, one JSON object of the template's parameters per
// line; a task in the background makes the things (with their attributes, types and groups)
// registrationBatch to a transaction, so a fleet of a million is one thousand commits rather
// than a million, and writes a success and an error report beside the input.

const recordRegistrationTask = "thing-registration-task"

// Registration task statuses, as AWS names them.
const (
	TaskInProgress = "InProgress"
	TaskCompleted  = "Completed"
	TaskFailed     = "Failed"
	TaskCancelled  = "Cancelled"
	TaskCancelling = "Cancelling"
)

// staleTask is how long a task in progress may go without recording progress before a
// starting replica takes it for dead.
const staleTask = 2 * time.Minute

// registrationBatch is how many lines one transaction registers.
const registrationBatch = 1000

// RegistrationTask is one bulk registration.
type RegistrationTask struct {
	ID               string    `json:"taskId"`
	CreatedAt        time.Time `json:"creationDate"`
	LastModified     time.Time `json:"lastModifiedDate"`
	TemplateBody     string    `json:"templateBody"`
	InputFileBucket  string    `json:"inputFileBucket"`
	InputFileKey     string    `json:"inputFileKey"`
	RoleArn          string    `json:"roleArn"`
	Status           string    `json:"status"`
	Message          string    `json:"message,omitempty"`
	SuccessCount     int       `json:"successCount"`
	FailureCount     int       `json:"failureCount"`
	PercentProgress  int       `json:"percentageProgress"`
	SuccessReportKey string    `json:"successReportKey,omitempty"`
	ErrorReportKey   string    `json:"errorReportKey,omitempty"`
}

// StartThingRegistrationTask checks the template and the input file and starts registering
// in the background; DescribeThingRegistrationTask follows it.
func (s *Service) StartThingRegistrationTask(templateBody, bucket, key, roleArn string) (string, error) {
	if len(templateBody) > maxTemplateBody {
		return "", Errorf(CodeInvalidRequest, "templateBody is %d characters; the limit is %d", len(templateBody), maxTemplateBody)
	}
	if !arn.IsRole(roleArn) {
		return "", Errorf(CodeInvalidRequest, "roleArn %q is not an IAM role ARN (arn:aws:iam::ACCOUNT:role/NAME)", roleArn)
	}
	body, err := parseTemplate(templateBody)
	if err != nil {
		return "", err
	}
	if err := bulkTemplate(body); err != nil {
		return "", err
	}
	path, err := s.ArtifactPath(bucket, key)
	if err != nil {
		return "", Errorf(CodeInvalidRequest, "input file s3://%s/%s: %v", bucket, key, err)
	}
	if _, err := os.Stat(path); err != nil {
		return "", Errorf(CodeInvalidRequest, "input file s3://%s/%s does not exist: upload it first (aws s3 cp devices.jsonl s3://%s/%s)", bucket, key, bucket, key)
	}
	now := s.Clock()
	task := &RegistrationTask{ID: newTaskID(), CreatedAt: now, LastModified: now, TemplateBody: templateBody, InputFileBucket: bucket,
		InputFileKey: key, RoleArn: roleArn, Status: TaskInProgress}
	if err := s.st.Update(func(t store.Tx) error { return putRecord(t, recordRegistrationTask, task.ID, task) }); err != nil {
		return "", err
	}
	s.swept.Add(1) // Close waits for the batch in hand
	go func() {
		defer s.swept.Done()
		s.runRegistration(task, body, path)
	}()
	return task.ID, nil
}

// bulkTemplate refuses what a bulk registration here cannot make: it needs a thing, and makes
// no certificates (register them with CreateCertificateFromCsr or RegisterCertificate and name
// them by CertificateId, or let devices provision themselves from a claim).
func bulkTemplate(b *provisioningBody) error {
	hasThing := false
	for name, r := range b.Resources {
		switch r.Type {
		case resourceThing:
			hasThing = true
		case resourceCertificate:
			if _, ok := r.Properties["CertificateId"]; !ok {
				return Errorf(CodeInvalidRequest, "template resource %s: a bulk registration here attaches certificates registered before (CertificateId), and makes none from a CSR or PEM; register them first (CreateCertificateFromCsr, RegisterCertificate)", name)
			}
		}
	}
	if !hasThing {
		return Errorf(CodeInvalidRequest, "the template registers no thing (%s)", resourceThing)
	}
	return nil
}

func newTaskID() string {
	id, _ := newAccessKey()
	return strings.ToLower(id[4:])
}

// registrationLine is one line's outcome, as the reports hold it.
type registrationLine struct {
	Line      int    `json:"lineNumber"`
	ThingName string `json:"thingName,omitempty"`
	ThingArn  string `json:"thingArn,omitempty"`
	Error     string `json:"errorMessage,omitempty"`
	Code      string `json:"errorCode,omitempty"`
}

// runRegistration registers the input file's lines, a batch to a transaction.
func (s *Service) runRegistration(task *RegistrationTask, body *provisioningBody, path string) {
	var ok, failed bytes.Buffer
	okEnc, failEnc := json.NewEncoder(&ok), json.NewEncoder(&failed)
	finish := func(status, msg string) {
		task.Status, task.Message = status, msg
		if task.Status == TaskCompleted {
			task.PercentProgress = 100
		}
		for _, r := range []struct {
			buf  *bytes.Buffer
			key  *string
			kind string
		}{{&ok, &task.SuccessReportKey, "success"}, {&failed, &task.ErrorReportKey, "errors"}} {
			k := fmt.Sprintf("thing-registration-reports/%s/%s.jsonl", task.ID, r.kind)
			if _, err := s.PutArtifact(task.InputFileBucket, k, bytes.NewReader(r.buf.Bytes())); err == nil {
				*r.key = k
			}
		}
		s.saveTask(task)
		s.log.Info().Str("task", task.ID).Str("status", status).Int("registered", task.SuccessCount).Int("failed", task.FailureCount).Msg("bulk registration ended")
	}
	f, err := os.Open(path)
	if err != nil {
		finish(TaskFailed, "open the input file: "+err.Error())
		return
	}
	defer f.Close()
	info, _ := f.Stat()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	type pending struct {
		line int
		plan *provisionPlan
	}
	var batch []pending
	var read int64
	lineNo := 0
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		var changed []string
		outcomes := make([]registrationLine, len(batch))
		err := s.st.Update(func(t store.Tx) error {
			changed = changed[:0]
			for i, p := range batch {
				outcomes[i] = registrationLine{Line: p.line, ThingName: p.plan.ThingName}
				th, err := s.registerTx(t, p.plan, &changed)
				if err != nil {
					var e *Error
					if !errors.As(err, &e) {
						return err // the store itself failed: the whole batch does
					}
					outcomes[i].Error, outcomes[i].Code = e.Message, string(e.Code)
					continue
				}
				outcomes[i].ThingArn = th.Arn
			}
			return nil
		})
		if err != nil {
			return err
		}
		if len(changed) > 0 {
			s.queueChanged(changed)
		}
		for _, o := range outcomes {
			if o.Error != "" {
				task.FailureCount++
				failEnc.Encode(o)
			} else {
				task.SuccessCount++
				okEnc.Encode(o)
			}
		}
		batch = batch[:0]
		if info != nil && info.Size() > 0 {
			task.PercentProgress = int(min(99, read*100/info.Size()))
		}
		return s.saveTask(task)
	}
	for sc.Scan() {
		lineNo++
		raw := sc.Bytes()
		read += int64(len(raw)) + 1
		if len(bytes.TrimSpace(raw)) == 0 {
			continue
		}
		plan, err := planLine(body, raw)
		if err != nil {
			task.FailureCount++
			var e *Error
			msg, code := err.Error(), string(CodeInvalidRequest)
			if errors.As(err, &e) {
				msg = e.Message
			}
			failEnc.Encode(registrationLine{Line: lineNo, Error: msg, Code: code})
			continue
		}
		batch = append(batch, pending{lineNo, plan})
		if len(batch) == registrationBatch {
			if err := flush(); err != nil {
				finish(TaskFailed, fmt.Sprintf("line %d: %v", lineNo, err))
				return
			}
			select {
			case <-s.stopSweep:
				finish(TaskFailed, fmt.Sprintf("the jobs service stopped after line %d: start the task again; the things registered are kept, and registering them again changes nothing", lineNo))
				return
			default:
			}
			if s.taskCancelled(task.ID) {
				finish(TaskCancelled, fmt.Sprintf("stopped after line %d (StopThingRegistrationTask); the things registered so far are kept", lineNo))
				return
			}
		}
	}
	if err := sc.Err(); err != nil {
		finish(TaskFailed, fmt.Sprintf("read the input file after line %d: %v", lineNo, err))
		return
	}
	if err := flush(); err != nil {
		finish(TaskFailed, err.Error())
		return
	}
	finish(TaskCompleted, "")
}

// planLine is a line's parameters run through the template.
func planLine(body *provisioningBody, raw []byte) (*provisionPlan, error) {
	var params map[string]any
	if err := json.Unmarshal(raw, &params); err != nil {
		return nil, Errorf(CodeInvalidRequest, "the line is not a JSON object of the template's parameters: %v", err)
	}
	given := make(map[string]string, len(params))
	for k, v := range params {
		switch x := v.(type) {
		case string:
			given[k] = x
		case float64:
			given[k] = strconv.FormatFloat(x, 'f', -1, 64)
		case bool:
			given[k] = strconv.FormatBool(x)
		default:
			return nil, Errorf(CodeInvalidRequest, "parameter %s is not a string, number or boolean", k)
		}
	}
	ev, err := newTemplateEval(body, given)
	if err != nil {
		return nil, err
	}
	return ev.plan()
}

// registerTx makes one line's thing within t: the thing (or the same one again), its groups,
// and the certificate it names, attached. Things whose job queues changed are added to changed.
func (s *Service) registerTx(t store.Tx, p *provisionPlan, changed *[]string) (*store.Thing, error) {
	for _, g := range p.Groups {
		grp, err := t.Group(g)
		if err != nil {
			return nil, err
		}
		if grp == nil {
			return nil, Errorf(CodeResourceNotFound, "thing group %s does not exist: create it before registering its things", g)
		}
	}
	th, err := s.createThingTx(t, p.ThingName, p.ThingType, p.Attributes)
	if err != nil {
		return nil, err
	}
	for _, g := range p.Groups {
		member, err := t.ThingGroups(th.Name)
		if err != nil {
			return nil, err
		}
		if slices.Contains(member, g) {
			continue
		}
		c, err := s.membershipTx(t, g, th.Name, true, s.joinJobs(th.Name))
		if err != nil {
			return nil, err
		}
		if c {
			*changed = append(*changed, th.Name)
		}
	}
	if p.HasCert && p.CertificateID != "" {
		c, err := mustCertificate(t, p.CertificateID)
		if err != nil {
			return nil, err
		}
		if !slices.Contains(th.Principals, c.Arn) {
			th.Principals = append(th.Principals, c.Arn)
			c.Things = append(c.Things, th.Name)
			if err := putCertificate(t, c); err != nil {
				return nil, err
			}
			if err := t.PutThing(th); err != nil {
				return nil, err
			}
		}
	}
	return th, nil
}

func (s *Service) saveTask(task *RegistrationTask) error {
	return s.st.Update(func(t store.Tx) error {
		cur, err := getRecord[RegistrationTask](t, recordRegistrationTask, task.ID)
		if err != nil {
			return err
		}
		if cur != nil && cur.Status == TaskCancelling && task.Status == TaskInProgress {
			task.Status = TaskCancelling
		}
		task.LastModified = s.Clock()
		return putRecord(t, recordRegistrationTask, task.ID, task)
	})
}

func (s *Service) taskCancelled(id string) bool {
	task, err := s.DescribeThingRegistrationTask(id)
	return err == nil && task.Status == TaskCancelling
}

// DescribeThingRegistrationTask is a task's progress.
func (s *Service) DescribeThingRegistrationTask(id string) (*RegistrationTask, error) {
	return viewOne(s, func(t store.Tx) (*RegistrationTask, error) {
		return getRecord[RegistrationTask](t, recordRegistrationTask, id)
	},
		Errorf(CodeResourceNotFound, "thing registration task %s does not exist", id))
}

// ListThingRegistrationTasks lists task IDs, optionally of one status.
func (s *Service) ListThingRegistrationTasks(status string) ([]string, error) {
	var all []*RegistrationTask
	err := s.st.View(func(t store.Tx) (err error) {
		all, err = allRecords[RegistrationTask](t, recordRegistrationTask)
		return err
	})
	var ids []string
	for _, t := range all {
		if status == "" || t.Status == status {
			ids = append(ids, t.ID)
		}
	}
	return ids, err
}

// StopThingRegistrationTask stops a task after the batch it is registering.
func (s *Service) StopThingRegistrationTask(id string) error {
	return s.st.Update(func(t store.Tx) error {
		task, err := getRecord[RegistrationTask](t, recordRegistrationTask, id)
		if err != nil {
			return err
		}
		if task == nil {
			return Errorf(CodeResourceNotFound, "thing registration task %s does not exist", id)
		}
		if task.Status != TaskInProgress {
			return Errorf(CodeInvalidRequest, "thing registration task %s is %s: only a task in progress can be stopped", id, task.Status)
		}
		task.Status, task.LastModified = TaskCancelling, s.Clock()
		return putRecord(t, recordRegistrationTask, id, task)
	})
}

// ThingRegistrationReport is a link to a task's report of one kind (RESULTS or ERRORS).
func (s *Service) ThingRegistrationReport(id, kind string) (string, error) {
	task, err := s.DescribeThingRegistrationTask(id)
	if err != nil {
		return "", err
	}
	key := task.SuccessReportKey
	switch kind {
	case "RESULTS":
	case "ERRORS":
		key = task.ErrorReportKey
	default:
		return "", Errorf(CodeInvalidRequest, "reportType %q: use RESULTS or ERRORS", kind)
	}
	if key == "" {
		return "", nil // the task has not ended yet
	}
	return s.PresignURL(task.InputFileBucket, key, time.Hour), nil
}

// failUnfinishedTasks marks tasks a stopped service left in progress as failed: their
// goroutine died with it. A running task records its progress after every batch (well within
// a second), so one silent for staleTask ran on a replica that stopped. Registering the same
// file again is safe (existing things are kept).
func (s *Service) failUnfinishedTasks() {
	var stale []*RegistrationTask
	s.st.View(func(t store.Tx) (err error) {
		stale, err = allRecords[RegistrationTask](t, recordRegistrationTask)
		return err
	})
	for _, task := range stale {
		if (task.Status == TaskInProgress || task.Status == TaskCancelling) && s.Clock().Sub(task.LastModified) > staleTask {
			task.Status = TaskFailed
			task.Message = fmt.Sprintf("the jobs service stopped during the task (after %d things): start it again; the things registered are kept, and registering them again changes nothing", task.SuccessCount)
			s.st.Update(func(t store.Tx) error { return putRecord(t, recordRegistrationTask, task.ID, task) })
		}
	}
}
