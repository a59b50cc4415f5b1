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
	return map[string]any{"execution": map[string]any{
		"jobId": e.JobID, "thingArn": s.ThingArn(e.ThingName), "status": e.Status,
		"forceCanceled": e.ForceCanceled, "statusDetails": statusDetailsJSON{e.StatusDetails},
		"queuedAt": ptime(e.QueuedAt), "startedAt": ptime(e.StartedAt), "lastUpdatedAt": ptime(e.LastUpdatedAt),
		"executionNumber": e.ExecutionNumber, "versionNumber": e.VersionNumber,
	}}, nil
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
	summaries := make([]map[string]any, 0, len(execs))
	for _, e := range execs {
		summaries = append(summaries, map[string]any{
			"thingArn":            s.ThingArn(e.ThingName),
			"jobExecutionSummary": execSummary(e),
		})
	}
	return page(map[string]any{"executionSummaries": summaries}, next), nil
}

func execSummary(e *store.Execution) map[string]any {
	return map[string]any{
		"status": e.Status, "queuedAt": ptime(e.QueuedAt), "startedAt": ptime(e.StartedAt),
		"lastUpdatedAt": ptime(e.LastUpdatedAt), "executionNumber": e.ExecutionNumber, "retryAttempt": e.RetryAttempt,
	}
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
	summaries := make([]map[string]any, 0, len(execs))
	for _, e := range execs {
		if id := q.Get("jobId"); id != "" && e.JobID != id {
			continue
		}
		summaries = append(summaries, map[string]any{"jobId": e.JobID, "jobExecutionSummary": execSummary(e)})
	}
	return page(map[string]any{"executionSummaries": summaries}, next), nil
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
