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
		RetryConfig *struct {
			CriteriaList []store.RetryCriteria `json:"criteriaList"`
		} `json:"jobExecutionsRetryConfig"`
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
	return map[string]string{"jobTemplateArn": out.Arn, "jobTemplateId": out.ID}, nil
}

func (s api) handleDescribeJobTemplate(r *http.Request) (any, error) {
	tpl, err := s.DescribeJobTemplate(r.PathValue("jobTemplateId"))
	if err != nil {
		return nil, err
	}
	out := map[string]any{"jobTemplateArn": tpl.Arn, "jobTemplateId": tpl.ID, "document": tpl.Document, "createdAt": ptime(tpl.CreatedAt)}
	if tpl.Description != "" {
		out["description"] = tpl.Description
	}
	if tpl.DocumentSource != "" {
		out["documentSource"] = tpl.DocumentSource
	}
	if tpl.Presign != nil {
		out["presignedUrlConfig"] = tpl.Presign
	}
	if rc := rolloutConfigJSON(tpl.MaxPerMinute, tpl.Exponential); len(rc) > 0 {
		out["jobExecutionsRolloutConfig"] = rc
	}
	if tpl.InProgressMinutes > 0 {
		out["timeoutConfig"] = map[string]int64{"inProgressTimeoutInMinutes": tpl.InProgressMinutes}
	}
	if len(tpl.Retry) > 0 {
		out["jobExecutionsRetryConfig"] = map[string]any{"criteriaList": tpl.Retry}
	}
	if len(tpl.Abort) > 0 {
		out["abortConfig"] = map[string]any{"criteriaList": tpl.Abort}
	}
	return out, nil
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
	list := make([]map[string]any, 0, len(ids))
	for _, id := range ids {
		tpl := byID[id]
		item := map[string]any{"jobTemplateArn": tpl.Arn, "jobTemplateId": tpl.ID, "createdAt": ptime(tpl.CreatedAt)}
		if tpl.Description != "" {
			item["description"] = tpl.Description
		}
		list = append(list, item)
	}
	return page(map[string]any{"jobTemplates": list}, next), nil
}

func (s api) handleDeleteJobTemplate(r *http.Request) (any, error) {
	if err := s.DeleteJobTemplate(r.PathValue("jobTemplateId")); err != nil {
		return nil, err
	}
	return nil, nil
}
