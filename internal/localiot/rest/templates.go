package rest

import (
	"net/http"

	"github.com/otaflow/otaflow/internal/localiot"
	"github.com/otaflow/otaflow/internal/localiot/store"
)

func (s api) handleCreateJobTemplate(r *http.Request) (any, error) {
	var in struct {
		JobArn             string               `json:"jobArn"`
		Document           string               `json:"document"`
		DocumentSource     string               `json:"documentSource"`
		Description        string               `json:"description"`
		PresignedURLConfig *store.PresignConfig `json:"presignedUrlConfig"`
		AbortConfig        *abortConfigJSON     `json:"abortConfig"`
		RolloutConfig      *struct {
			MaximumPerMinute int                    `json:"maximumPerMinute"`
			ExponentialRate  *store.ExponentialRate `json:"exponentialRate"`
		} `json:"jobExecutionsRolloutConfig"`
		TimeoutConfig *struct {
			InProgressTimeoutInMinutes int64 `json:"inProgressTimeoutInMinutes"`
		} `json:"timeoutConfig"`
		RetryConfig *retryConfig `json:"jobExecutionsRetryConfig"`
	}
	if err := readJSON(r, &in); err != nil {
		return nil, err
	}
	abort, err := in.AbortConfig.criteria()
	if err != nil {
		return nil, err
	}
	tpl := localiot.JobTemplate{ID: r.PathValue("jobTemplateId"), Description: in.Description, Document: in.Document,
		DocumentSource: in.DocumentSource, Presign: in.PresignedURLConfig, Retry: retryList(in.RetryConfig), Abort: abort}
	if in.DocumentSource != "" {
		doc, err := s.DocumentFromSource(in.DocumentSource)
		if err != nil {
			return nil, err
		}
		tpl.Document = doc
	}
	if in.RolloutConfig != nil {
		tpl.MaxPerMinute, tpl.Exponential = in.RolloutConfig.MaximumPerMinute, in.RolloutConfig.ExponentialRate
	}
	if in.TimeoutConfig != nil {
		tpl.InProgressMinutes = in.TimeoutConfig.InProgressTimeoutInMinutes
	}
	out, err := s.CreateJobTemplate(tpl, in.JobArn)
	if err != nil {
		return nil, err
	}
	return &createJobTemplateResponse{JobTemplateArn: out.Arn, JobTemplateID: out.ID}, nil
}

type createJobTemplateResponse struct {
	JobTemplateArn string `json:"jobTemplateArn"`
	JobTemplateID  string `json:"jobTemplateId"`
}

func (s api) handleDescribeJobTemplate(r *http.Request) (any, error) {
	tpl, err := s.DescribeJobTemplate(r.PathValue("jobTemplateId"))
	if err != nil {
		return nil, err
	}
	out := &describeJobTemplateResponse{JobTemplateArn: tpl.Arn, JobTemplateID: tpl.ID, Document: tpl.Document,
		CreatedAt: ptime(tpl.CreatedAt), Description: tpl.Description, DocumentSource: tpl.DocumentSource, Presign: tpl.Presign}
	if rc := (rolloutConfig{MaximumPerMinute: tpl.MaxPerMinute, ExponentialRate: tpl.Exponential}); !rc.empty() {
		out.RolloutConfig = &rc
	}
	if tpl.InProgressMinutes > 0 {
		out.TimeoutConfig = &timeoutConfig{InProgressTimeoutInMinutes: tpl.InProgressMinutes}
	}
	if len(tpl.Retry) > 0 {
		out.RetryConfig = &retryConfig{CriteriaList: tpl.Retry}
	}
	if len(tpl.Abort) > 0 {
		out.AbortConfig = &abortConfigJSON{CriteriaList: tpl.Abort}
	}
	return out, nil
}

type describeJobTemplateResponse struct {
	JobTemplateArn string               `json:"jobTemplateArn"`
	JobTemplateID  string               `json:"jobTemplateId"`
	Document       string               `json:"document"`
	CreatedAt      *awsTime             `json:"createdAt"`
	Description    string               `json:"description,omitempty"`
	DocumentSource string               `json:"documentSource,omitempty"`
	Presign        *store.PresignConfig `json:"presignedUrlConfig,omitempty"`
	RolloutConfig  *rolloutConfig       `json:"jobExecutionsRolloutConfig,omitempty"`
	TimeoutConfig  *timeoutConfig       `json:"timeoutConfig,omitempty"`
	RetryConfig    *retryConfig         `json:"jobExecutionsRetryConfig,omitempty"`
	AbortConfig    *abortConfigJSON     `json:"abortConfig,omitempty"`
}

type timeoutConfig struct {
	InProgressTimeoutInMinutes int64 `json:"inProgressTimeoutInMinutes"`
}

func (s api) handleListJobTemplates(r *http.Request) (any, error) {
	max, err := maxResults(r)
	if err != nil {
		return nil, err
	}
	all, err := s.ListJobTemplates()
	if err != nil {
		return nil, err
	}
	ids := make([]string, len(all))
	byID := map[string]*localiot.JobTemplate{}
	for i, tpl := range all {
		ids[i], byID[tpl.ID] = tpl.ID, tpl
	}
	ids, next := localiot.PageStrings(ids, max, r.URL.Query().Get("nextToken"))
	out := &listJobTemplatesResponse{JobTemplates: make([]jobTemplateSummary, 0, len(ids)), paged: paged{next}}
	for _, id := range ids {
		tpl := byID[id]
		out.JobTemplates = append(out.JobTemplates, jobTemplateSummary{JobTemplateArn: tpl.Arn, JobTemplateID: tpl.ID,
			CreatedAt: ptime(tpl.CreatedAt), Description: tpl.Description})
	}
	return out, nil
}

type listJobTemplatesResponse struct {
	JobTemplates []jobTemplateSummary `json:"jobTemplates"`
	paged
}

type jobTemplateSummary struct {
	JobTemplateArn string   `json:"jobTemplateArn"`
	JobTemplateID  string   `json:"jobTemplateId"`
	CreatedAt      *awsTime `json:"createdAt"`
	Description    string   `json:"description,omitempty"`
}

func (s api) handleDeleteJobTemplate(r *http.Request) (any, error) {
	if err := s.DeleteJobTemplate(r.PathValue("jobTemplateId")); err != nil {
		return nil, err
	}
	return nil, nil
}
