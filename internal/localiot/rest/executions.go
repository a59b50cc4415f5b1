package rest

import (
	"net/http"
	"strconv"

	"github.com/otaflow/otaflow/internal/localiot"
	"github.com/otaflow/otaflow/internal/localiot/store"
)

func (s api) handleDescribeJobExecution(r *http.Request) (any, error) {
	var number int64
	if n := r.URL.Query().Get("executionNumber"); n != "" {
		v, err := strconv.ParseInt(n, 10, 64)
		if err != nil {
			return nil, localiot.Errorf(localiot.CodeInvalidRequest, "executionNumber must be a number")
		}
		number = v
	}
	e, err := s.DescribeJobExecution(r.PathValue("jobId"), r.PathValue("thingName"), number)
	if err != nil {
		return nil, err
	}
	out := &describeJobExecutionResponse{Execution: jobExecution{JobID: e.JobID, ThingArn: s.ThingArn(e.ThingName),
		Status: e.Status, ForceCanceled: e.ForceCanceled, StatusDetails: statusDetailsJSON{e.StatusDetails},
		QueuedAt: ptime(e.QueuedAt), StartedAt: ptime(e.StartedAt), LastUpdatedAt: ptime(e.LastUpdatedAt),
		ExecutionNumber: e.ExecutionNumber, VersionNumber: e.VersionNumber}}
	// While a timer runs (in-progress or step timeout), as the device APIs show it.
	out.Execution.ApproximateSecondsBeforeTimedOut = s.DeviceExecution(e, nil, false).ApproximateSecondsBeforeTimedOut
	return out, nil
}

type describeJobExecutionResponse struct {
	Execution jobExecution `json:"execution"`
}

// jobExecution is AWS's JobExecution (the control plane's view).
type jobExecution struct {
	JobID           string                `json:"jobId"`
	ThingArn        string                `json:"thingArn"`
	Status          store.ExecutionStatus `json:"status"`
	ForceCanceled   bool                  `json:"forceCanceled"`
	StatusDetails   statusDetailsJSON     `json:"statusDetails"`
	QueuedAt        *awsTime              `json:"queuedAt"`
	StartedAt       *awsTime              `json:"startedAt"`
	LastUpdatedAt   *awsTime              `json:"lastUpdatedAt"`
	ExecutionNumber int64                 `json:"executionNumber"`
	VersionNumber   int64                 `json:"versionNumber"`
	// ApproximateSecondsBeforeTimedOut is there while a timeout runs.
	ApproximateSecondsBeforeTimedOut int64 `json:"approximateSecondsBeforeTimedOut,omitempty"`
}

type statusDetailsJSON struct {
	DetailsMap map[string]string `json:"detailsMap,omitempty"`
}

func (s api) handleListJobExecutionsForJob(r *http.Request) (any, error) {
	q := r.URL.Query()
	max, err := maxResults(r)
	if err != nil {
		return nil, err
	}
	if err := onlyQuery(r, "status", "maxResults", "nextToken"); err != nil {
		return nil, err
	}
	if err := oneOf("status", q.Get("status"), executionStatuses...); err != nil {
		return nil, err
	}
	status := store.ExecutionStatus(q.Get("status"))
	execs, next, err := s.ListJobExecutionsForJob(r.PathValue("jobId"), status, max, q.Get("nextToken"))
	if err != nil {
		return nil, err
	}
	out := &executionSummaries{Summaries: make([]executionSummaryFor, 0, len(execs)), paged: paged{next}}
	for _, e := range execs {
		out.Summaries = append(out.Summaries, executionSummaryFor{ThingArn: s.ThingArn(e.ThingName), Summary: execSummary(e)})
	}
	return out, nil
}

// executionSummaries is ListJobExecutionsForJob's and ListJobExecutionsForThing's answer.
type executionSummaries struct {
	Summaries []executionSummaryFor `json:"executionSummaries"`
	paged
}

// executionSummaryFor is AWS's JobExecutionSummaryForJob (with ThingArn) or ForThing (with
// JobID).
type executionSummaryFor struct {
	ThingArn string              `json:"thingArn,omitempty"`
	JobID    string              `json:"jobId,omitempty"`
	Summary  jobExecutionSummary `json:"jobExecutionSummary"`
}

type jobExecutionSummary struct {
	Status          store.ExecutionStatus `json:"status"`
	QueuedAt        *awsTime              `json:"queuedAt"`
	StartedAt       *awsTime              `json:"startedAt"`
	LastUpdatedAt   *awsTime              `json:"lastUpdatedAt"`
	ExecutionNumber int64                 `json:"executionNumber"`
	RetryAttempt    int                   `json:"retryAttempt"`
}

func execSummary(e *store.Execution) jobExecutionSummary {
	return jobExecutionSummary{Status: e.Status, QueuedAt: ptime(e.QueuedAt), StartedAt: ptime(e.StartedAt),
		LastUpdatedAt: ptime(e.LastUpdatedAt), ExecutionNumber: e.ExecutionNumber, RetryAttempt: e.RetryAttempt}
}

func (s api) handleListJobExecutionsForThing(r *http.Request) (any, error) {
	max, err := maxResults(r)
	if err != nil {
		return nil, err
	}
	q := r.URL.Query()
	if err := onlyQuery(r, "status", "maxResults", "nextToken", "jobId"); err != nil {
		return nil, err
	}
	if err := oneOf("status", q.Get("status"), executionStatuses...); err != nil {
		return nil, err
	}
	execs, next, err := s.ListJobExecutionsForThing(r.PathValue("thingName"), store.ExecutionStatus(q.Get("status")), max, q.Get("nextToken"))
	if err != nil {
		return nil, err
	}
	out := &executionSummaries{Summaries: make([]executionSummaryFor, 0, len(execs)), paged: paged{next}}
	for _, e := range execs {
		if id := q.Get("jobId"); id != "" && e.JobID != id {
			continue
		}
		out.Summaries = append(out.Summaries, executionSummaryFor{JobID: e.JobID, Summary: execSummary(e)})
	}
	return out, nil
}

func (s api) handleCancelJobExecution(r *http.Request) (any, error) {
	var in struct {
		ExpectedVersion int64             `json:"expectedVersion"`
		StatusDetails   map[string]string `json:"statusDetails"`
	}
	if err := readJSON(r, &in); err != nil {
		return nil, err
	}
	err := s.CancelJobExecution(r.PathValue("jobId"), r.PathValue("thingName"), r.URL.Query().Get("force") == "true", in.ExpectedVersion, in.StatusDetails)
	if err != nil {
		return nil, err
	}
	return nil, nil
}

func (s api) handleDeleteJobExecution(r *http.Request) (any, error) {
	n, err := strconv.ParseInt(r.PathValue("executionNumber"), 10, 64)
	if err != nil || n < 1 {
		return nil, localiot.Errorf(localiot.CodeInvalidRequest, "executionNumber %q: a positive number", r.PathValue("executionNumber"))
	}
	if err := s.DeleteJobExecution(r.PathValue("jobId"), r.PathValue("thingName"), n, r.URL.Query().Get("force") == "true"); err != nil {
		return nil, err
	}
	return nil, nil
}
