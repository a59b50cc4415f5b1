package localiot

import (
	"fmt"
	"time"

	"github.com/otaflow/otaflow/internal/arn"
	"github.com/otaflow/otaflow/internal/localiot/store"
)

// Job templates (CreateJobTemplate, DescribeJobTemplate, ListJobTemplates, DeleteJobTemplate,
// and CreateJob with jobTemplateArn): a job's document and configuration kept to start the
// same job again.

const recordJobTemplate = "job-template"

// JobTemplate is one job template.
type JobTemplate struct {
	ID                string                 `json:"jobTemplateId"`
	Arn               string                 `json:"jobTemplateArn"`
	Description       string                 `json:"description,omitempty"`
	Document          string                 `json:"document"`
	DocumentSource    string                 `json:"documentSource,omitempty"`
	Presign           *store.PresignConfig   `json:"presign,omitempty"`
	MaxPerMinute      int                    `json:"maxPerMinute,omitempty"`
	InProgressMinutes int64                  `json:"inProgressMinutes,omitempty"`
	Retry             []store.RetryCriteria  `json:"retry,omitempty"`
	Abort             []store.AbortCriteria  `json:"abort,omitempty"`
	Exponential       *store.ExponentialRate `json:"exponentialRate,omitempty"`
	CreatedAt         time.Time              `json:"createdAt"`
}

// JobTemplateArn is the ARN of a job template.
func (s *Service) JobTemplateArn(id string) string {
	return fmt.Sprintf("arn:aws:iot:%s:%s:jobtemplate/%s", s.region, s.account, id)
}

// CreateJobTemplate stores a template; fromJob, when set, copies that job's document and
// configuration (AWS's jobArn member).
func (s *Service) CreateJobTemplate(tpl JobTemplate, fromJob string) (*JobTemplate, error) {
	if !jobIDRE.MatchString(tpl.ID) {
		return nil, Errorf(CodeInvalidRequest, "job template ID %q: use 1-64 of a-z A-Z 0-9 _ -", tpl.ID)
	}
	if tpl.Description == "" || len(tpl.Description) > 2028 {
		return nil, Errorf(CodeInvalidRequest, "description is required (at most 2028 characters)")
	}
	if fromJob != "" {
		j, err := s.JobWithoutTargets(arn.Name(fromJob))
		if err != nil {
			return nil, err
		}
		tpl.Document, tpl.Presign, tpl.MaxPerMinute, tpl.Retry, tpl.Abort = j.Document, j.Presign, j.MaxPerMinute, j.Retry, j.Abort
		tpl.Exponential = j.Exponential
		tpl.InProgressMinutes = int64(j.InProgressTimeout / time.Minute)
	}
	if err := checkAbort(tpl.Abort); err != nil {
		return nil, err
	}
	if err := checkExponentialRate(tpl.Exponential); err != nil {
		return nil, err
	}
	if tpl.Document == "" {
		return nil, Errorf(CodeInvalidRequest, "a job template needs a document, a documentSource or a jobArn")
	}
	if len(tpl.Document) > MaxDocumentBytes {
		return nil, Errorf(CodeInvalidRequest, "job document is %d bytes; the limit is %d", len(tpl.Document), MaxDocumentBytes)
	}
	tpl.Arn, tpl.CreatedAt = s.JobTemplateArn(tpl.ID), s.Clock()
	err := s.st.Update(func(t store.Tx) error {
		existing, err := t.Record(recordJobTemplate, tpl.ID)
		if err != nil {
			return err
		}
		if existing != nil {
			return Errorf(CodeResourceConflict, "job template %s already exists", tpl.ID)
		}
		return putRecord(t, recordJobTemplate, tpl.ID, &tpl)
	})
	if err != nil {
		return nil, err
	}
	return &tpl, nil
}

// DescribeJobTemplate returns a template by ID or ARN.
func (s *Service) DescribeJobTemplate(id string) (*JobTemplate, error) {
	var out *JobTemplate
	err := s.st.View(func(t store.Tx) (err error) {
		out, err = getRecord[JobTemplate](t, recordJobTemplate, arn.Name(id))
		return err
	})
	if err == nil && out == nil {
		err = Errorf(CodeResourceNotFound, "job template %s does not exist", arn.Name(id))
	}
	return out, err
}

// ListJobTemplates lists templates by ID.
func (s *Service) ListJobTemplates() ([]*JobTemplate, error) {
	var out []*JobTemplate
	err := s.st.View(func(t store.Tx) (err error) {
		out, err = allRecords[JobTemplate](t, recordJobTemplate)
		return err
	})
	return out, err
}

// DeleteJobTemplate deletes a template (jobs made from it stay).
func (s *Service) DeleteJobTemplate(id string) error {
	return s.st.Update(func(t store.Tx) error {
		existing, err := t.Record(recordJobTemplate, id)
		if err != nil {
			return err
		}
		if existing == nil {
			return Errorf(CodeResourceNotFound, "job template %s does not exist", id)
		}
		return t.DeleteRecord(recordJobTemplate, id)
	})
}

// FromTemplate fills what a CreateJob request left out from its template.
func (s *Service) FromTemplate(in *CreateJobInput, templateArn string) error {
	tpl, err := s.DescribeJobTemplate(templateArn)
	if err != nil {
		return err
	}
	if in.Document == "" {
		in.Document, in.DocumentSource = tpl.Document, tpl.DocumentSource
	}
	if in.Description == "" {
		in.Description = tpl.Description
	}
	if in.Presign == nil {
		in.Presign = tpl.Presign
	}
	if in.MaxPerMinute == 0 {
		in.MaxPerMinute = tpl.MaxPerMinute
	}
	if in.InProgressTimeoutMinutes == 0 {
		in.InProgressTimeoutMinutes = tpl.InProgressMinutes
	}
	if in.Retry == nil {
		in.Retry = tpl.Retry
	}
	if in.Abort == nil {
		in.Abort = tpl.Abort
	}
	if in.Exponential == nil {
		in.Exponential = tpl.Exponential
	}
	return nil
}
