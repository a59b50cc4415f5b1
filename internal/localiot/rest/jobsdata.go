package rest

import (
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/otaflow/otaflow/internal/iotjobs"
	"github.com/otaflow/otaflow/internal/localiot"
)

// The Jobs device API over HTTPS (the iot-jobs-data plane: GetPendingJobExecutions,
// StartNextPendingJobExecution, DescribeJobExecution, UpdateJobExecution), for devices that
// poll rather than hold an MQTT connection. On AWS it is its own endpoint; here it shares the
// jobs service's address, and a request belongs to it when it is signed for "iot-jobs-data"
// (its paths overlap the control plane's: GET /things/T/jobs is also ListJobExecutionsForThing).
// Here it is signed with the service's own key, so it serves trusted tools and gateways, not
// devices holding only their certificate (AWS authenticates those by mutual TLS).

// signedFor is the service a request's SigV4 credential scope names ("iot", "iot-jobs-data").
func signedFor(r *http.Request) string {
	authz := r.Header.Get("Authorization")
	i := strings.Index(authz, "Credential=")
	if i < 0 {
		return ""
	}
	cred, _, _ := strings.Cut(authz[i+len("Credential="):], ",")
	parts := strings.Split(cred, "/")
	if len(parts) != 5 {
		return ""
	}
	return parts[3]
}

func (s api) jobsDataHandler() http.Handler {
	mux := http.NewServeMux()
	for _, op := range []struct {
		pattern, action string
		op              operation
	}{
		{"GET /things/{thingName}/jobs", "GetPendingJobExecutions", s.handleGetPendingJobExecutions},
		{"PUT /things/{thingName}/jobs/$next", "StartNextPendingJobExecution", s.handleStartNextPendingJobExecution},
		{"GET /things/{thingName}/jobs/{jobId}", "DescribeJobExecution", s.handleDataDescribeJobExecution},
		{"POST /things/{thingName}/jobs/{jobId}", "UpdateJobExecution", s.handleDataUpdateJobExecution},
	} {
		mux.Handle(op.pattern, guard(s, op.action, permissionFor(op.pattern), nil, op.op))
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeUnknownOperation(w, r.Method+" "+r.URL.Path+" is not an iot-jobs-data operation")
	})
	return mux
}

// httpJobExecution is the HTTPS plane's form of an execution: the MQTT plane's members, with
// the job document as a string.
type httpJobExecution struct {
	iotjobs.JobExecution
	JobDocument string `json:"jobDocument,omitempty"`
}

// executionResponse is StartNextPendingJobExecution's and DescribeJobExecution's answer.
type executionResponse struct {
	Execution *httpJobExecution `json:"execution,omitempty"`
}

func httpExecution(e *iotjobs.JobExecution) *httpJobExecution {
	return &httpJobExecution{JobExecution: *e, JobDocument: string(e.JobDocument)}
}

func (s api) handleGetPendingJobExecutions(r *http.Request) (any, error) {
	inProgress, queued, err := s.PendingExecutions(r.PathValue("thingName"), localiot.MaxPendingListed)
	if err != nil {
		return nil, err
	}
	return &getPendingResponse{InProgressJobs: localiot.ToSummaries(inProgress), QueuedJobs: localiot.ToSummaries(queued)}, nil
}

type getPendingResponse struct {
	InProgressJobs []iotjobs.JobExecutionSummary `json:"inProgressJobs"`
	QueuedJobs     []iotjobs.JobExecutionSummary `json:"queuedJobs"`
}

func (s api) handleStartNextPendingJobExecution(r *http.Request) (any, error) {
	var in iotjobs.StartNextRequest
	if err := readJSON(r, &in); err != nil {
		return nil, err
	}
	e, j, err := s.StartNext(r.PathValue("thingName"), in.StatusDetails, time.Duration(in.StepTimeoutInMinutes)*time.Minute)
	if err != nil {
		return nil, err
	}
	out := &executionResponse{}
	if e != nil {
		out.Execution = httpExecution(s.DeviceExecution(e, j, true))
	}
	return out, nil
}

func (s api) handleDataDescribeJobExecution(r *http.Request) (any, error) {
	thing, jobID := r.PathValue("thingName"), r.PathValue("jobId")
	var number []int64
	if v := r.URL.Query().Get("executionNumber"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return nil, localiot.Errorf(localiot.CodeInvalidRequest, "executionNumber %q is not a number", v)
		}
		number = append(number, n)
	}
	e, j, err := s.DeviceDescribe(thing, jobID, number...)
	if err != nil {
		return nil, err
	}
	out := &executionResponse{}
	if e != nil {
		out.Execution = httpExecution(s.DeviceExecution(e, j, r.URL.Query().Get("includeJobDocument") != "false"))
	}
	return out, nil
}

func (s api) handleDataUpdateJobExecution(r *http.Request) (any, error) {
	var in iotjobs.UpdateRequest
	if err := readJSON(r, &in); err != nil {
		return nil, err
	}
	e, j, err := s.UpdateExecution(localiot.UpdateInput{
		Thing: r.PathValue("thingName"), JobID: r.PathValue("jobId"), Status: in.Status, StatusDetails: in.StatusDetails,
		ExpectedVersion: in.ExpectedVersion, ExecutionNumber: in.ExecutionNumber,
		StepTimeout: time.Duration(in.StepTimeoutInMinutes) * time.Minute,
	})
	if err != nil {
		return nil, err
	}
	out := &updateExecutionResponse{}
	if in.IncludeJobExecutionState {
		out.ExecutionState = localiot.ExecutionState(e)
	}
	if in.IncludeJobDocument {
		doc := s.DocumentFor(j)
		out.JobDocument = &doc
	}
	return out, nil
}

type updateExecutionResponse struct {
	ExecutionState *iotjobs.ExecutionState `json:"executionState,omitempty"`
	JobDocument    *string                 `json:"jobDocument,omitempty"`
}
