package rest

import (
	"net/http"

	"github.com/otaflow/otaflow/internal/localiot"
)

// Bulk registration: StartThingRegistrationTask and its companions.

func (s api) handleStartThingRegistrationTask(r *http.Request) (any, error) {
	var in struct {
		TemplateBody    string `json:"templateBody"`
		InputFileBucket string `json:"inputFileBucket"`
		InputFileKey    string `json:"inputFileKey"`
		RoleArn         string `json:"roleArn"`
	}
	if err := readJSON(r, &in); err != nil {
		return nil, err
	}
	id, err := s.StartThingRegistrationTask(in.TemplateBody, in.InputFileBucket, in.InputFileKey, in.RoleArn)
	if err != nil {
		return nil, err
	}
	return map[string]string{"taskId": id}, nil
}

func (s api) handleDescribeThingRegistrationTask(r *http.Request) (any, error) {
	t, err := s.DescribeThingRegistrationTask(r.PathValue("taskId"))
	if err != nil {
		return nil, err
	}
	return map[string]any{"taskId": t.ID, "creationDate": ptime(t.CreatedAt), "lastModifiedDate": ptime(t.LastModified),
		"templateBody": t.TemplateBody, "inputFileBucket": t.InputFileBucket, "inputFileKey": t.InputFileKey, "roleArn": t.RoleArn,
		"status": t.Status, "message": t.Message, "successCount": t.SuccessCount, "failureCount": t.FailureCount,
		"percentageProgress": t.PercentProgress}, nil
}

func (s api) handleListThingRegistrationTasks(r *http.Request) (any, error) {
	status := r.URL.Query().Get("status")
	if err := oneOf("status", status, localiot.TaskInProgress, localiot.TaskCompleted, localiot.TaskFailed, localiot.TaskCancelled, localiot.TaskCancelling); err != nil {
		return nil, err
	}
	ids, err := s.ListThingRegistrationTasks(status)
	if err != nil {
		return nil, err
	}
	page, next, err := namesPage(ids, r)
	if err != nil {
		return nil, err
	}
	return struct {
		TaskIDs   []string `json:"taskIds"`
		NextToken string   `json:"nextToken,omitempty"`
	}{page, next}, nil
}

func (s api) handleListThingRegistrationTaskReports(r *http.Request) (any, error) {
	kind := r.URL.Query().Get("reportType")
	link, err := s.ThingRegistrationReport(r.PathValue("taskId"), kind)
	if err != nil {
		return nil, err
	}
	links := []string{}
	if link != "" {
		links = append(links, link)
	}
	return map[string]any{"resourceLinks": links, "reportType": kind}, nil
}

func (s api) handleStopThingRegistrationTask(r *http.Request) (any, error) {
	return map[string]any{}, s.StopThingRegistrationTask(r.PathValue("taskId"))
}
