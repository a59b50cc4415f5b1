package jobs

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/rs/zerolog"
)

// HTTPHandler serves the AWS IoT REST control plane. Every request must carry a SigV4
// signature made with the configured credentials.
func (s *Service) HTTPHandler(auth *SigV4Verifier) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /things/{thingName}", s.handleCreateThing)
	mux.HandleFunc("GET /things/{thingName}", s.handleDescribeThing)
	mux.HandleFunc("PUT /jobs/{jobId}", s.handleCreateJob)
	mux.HandleFunc("GET /jobs/{jobId}", s.handleDescribeJob)
	mux.HandleFunc("GET /jobs/{jobId}/things", s.handleListJobExecutionsForJob)
	mux.HandleFunc("PUT /jobs/{jobId}/cancel", s.handleCancelJob)
	mux.HandleFunc("GET /things/{thingName}/jobs/{jobId}", s.handleDescribeJobExecution)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, errorf(CodeInvalidRequest, "%s %s is not an operation this jobs service serves", r.Method, r.URL.Path))
	})
	return auth.Middleware(logRequests(s.log, mux))
}

func logRequests(log zerolog.Logger, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := &statusRecorder{ResponseWriter: w, status: 200}
		start := time.Now()
		next.ServeHTTP(rec, r)
		log.Debug().Str("method", r.Method).Str("path", r.URL.Path).Int("status", rec.status).Dur("took", time.Since(start)).Msg("api")
	})
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(code int) {
	r.status = code
	r.ResponseWriter.WriteHeader(code)
}

// awsTime renders a time as AWS REST JSON does: epoch seconds with a fraction.
type awsTime time.Time

func (t awsTime) MarshalJSON() ([]byte, error) {
	return []byte(strconv.FormatFloat(float64(time.Time(t).UnixMilli())/1000, 'f', 3, 64)), nil
}

func ptime(t time.Time) *awsTime {
	if t.IsZero() {
		return nil
	}
	a := awsTime(t)
	return &a
}

// exceptionFor maps an error code to the AWS IoT exception name and HTTP status.
func exceptionFor(code ErrorCode) (string, int) {
	switch code {
	case CodeInvalidRequest:
		return "InvalidRequestException", http.StatusBadRequest
	case CodeResourceNotFound:
		return "ResourceNotFoundException", http.StatusNotFound
	case CodeAlreadyExists:
		return "ResourceAlreadyExistsException", http.StatusConflict
	case CodeInvalidStateTransition, CodeTerminalStateReached:
		return "InvalidStateTransitionException", http.StatusConflict
	case CodeVersionMismatch, CodeConflict:
		return "VersionConflictException", http.StatusConflict
	case CodeUnauthorized:
		return "UnauthorizedException", http.StatusForbidden
	}
	return "InternalFailureException", http.StatusInternalServerError
}

func writeError(w http.ResponseWriter, err error) {
	var e *Error
	if !errors.As(err, &e) {
		e = &Error{Code: CodeInternal, Message: err.Error()}
	}
	name, status := exceptionFor(e.Code)
	w.Header().Set("X-Amzn-Errortype", name)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]string{"message": e.Message})
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}

func readJSON(r *http.Request, v any) error {
	body, err := io.ReadAll(io.LimitReader(r.Body, 4*MaxDocumentBytes))
	if err != nil {
		return errorf(CodeInvalidRequest, "read request body: %v", err)
	}
	if len(body) == 0 {
		return nil
	}
	if err := json.Unmarshal(body, v); err != nil {
		return errorf(CodeInvalidRequest, "request body is not valid JSON: %v", err)
	}
	return nil
}

func (s *Service) handleCreateThing(w http.ResponseWriter, r *http.Request) {
	var in struct {
		AttributePayload struct {
			Attributes map[string]string `json:"attributes"`
		} `json:"attributePayload"`
	}
	if err := readJSON(r, &in); err != nil {
		writeError(w, err)
		return
	}
	th, err := s.CreateThing(r.PathValue("thingName"), in.AttributePayload.Attributes)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, map[string]string{"thingName": th.Name, "thingArn": th.Arn, "thingId": th.ID})
}

func (s *Service) handleDescribeThing(w http.ResponseWriter, r *http.Request) {
	th, err := s.DescribeThing(r.PathValue("thingName"))
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, map[string]any{
		"thingName": th.Name, "thingArn": th.Arn, "thingId": th.ID,
		"attributes": th.Attributes, "version": th.Version, "defaultClientId": th.Name,
	})
}

func (s *Service) handleCreateJob(w http.ResponseWriter, r *http.Request) {
	var in struct {
		Document        string   `json:"document"`
		DocumentSource  string   `json:"documentSource"`
		Description     string   `json:"description"`
		Targets         []string `json:"targets"`
		TargetSelection string   `json:"targetSelection"`
	}
	if err := readJSON(r, &in); err != nil {
		writeError(w, err)
		return
	}
	if in.DocumentSource != "" {
		writeError(w, errorf(CodeInvalidRequest, "documentSource is not supported by this jobs service; send the document inline"))
		return
	}
	job, err := s.CreateJob(CreateJobInput{
		JobID: r.PathValue("jobId"), Document: in.Document, Description: in.Description,
		Targets: in.Targets, TargetSelection: in.TargetSelection,
	})
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, map[string]string{"jobArn": job.Arn, "jobId": job.ID, "description": job.Description})
}

type jobJSON struct {
	JobArn            string         `json:"jobArn"`
	JobID             string         `json:"jobId"`
	TargetSelection   string         `json:"targetSelection"`
	Status            JobStatus      `json:"status"`
	ForceCanceled     bool           `json:"forceCanceled"`
	Comment           string         `json:"comment,omitempty"`
	ReasonCode        string         `json:"reasonCode,omitempty"`
	Description       string         `json:"description,omitempty"`
	Targets           []string       `json:"targets"`
	CreatedAt         *awsTime       `json:"createdAt,omitempty"`
	LastUpdatedAt     *awsTime       `json:"lastUpdatedAt,omitempty"`
	CompletedAt       *awsTime       `json:"completedAt,omitempty"`
	JobProcessDetails ProcessDetails `json:"jobProcessDetails"`
}

func toJobJSON(j *Job) jobJSON {
	return jobJSON{
		JobArn: j.Arn, JobID: j.ID, TargetSelection: j.TargetSelection, Status: j.Status,
		ForceCanceled: j.ForceCanceled, Comment: j.Comment, ReasonCode: j.ReasonCode,
		Description: j.Description, Targets: j.Targets,
		CreatedAt: ptime(j.CreatedAt), LastUpdatedAt: ptime(j.LastUpdatedAt), CompletedAt: ptime(j.CompletedAt),
		JobProcessDetails: j.Counts,
	}
}

func (s *Service) handleDescribeJob(w http.ResponseWriter, r *http.Request) {
	j, err := s.DescribeJob(r.PathValue("jobId"))
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, map[string]any{"job": toJobJSON(j)})
}

type statusDetailsJSON struct {
	DetailsMap map[string]string `json:"detailsMap,omitempty"`
}

func (s *Service) handleDescribeJobExecution(w http.ResponseWriter, r *http.Request) {
	e, err := s.DescribeJobExecution(r.PathValue("jobId"), r.PathValue("thingName"))
	if err != nil {
		writeError(w, err)
		return
	}
	if n := r.URL.Query().Get("executionNumber"); n != "" && n != strconv.FormatInt(e.ExecutionNumber, 10) {
		writeError(w, errorf(CodeResourceNotFound, "no execution number %s of job %s on thing %s", n, e.JobID, e.ThingName))
		return
	}
	writeJSON(w, map[string]any{"execution": map[string]any{
		"jobId": e.JobID, "thingArn": s.ThingArn(e.ThingName), "status": e.Status,
		"forceCanceled": e.ForceCanceled, "statusDetails": statusDetailsJSON{e.StatusDetails},
		"queuedAt": ptime(e.QueuedAt), "startedAt": ptime(e.StartedAt), "lastUpdatedAt": ptime(e.LastUpdatedAt),
		"executionNumber": e.ExecutionNumber, "versionNumber": e.VersionNumber,
	}})
}

func (s *Service) handleListJobExecutionsForJob(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	max := 0
	if v := q.Get("maxResults"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 250 {
			writeError(w, errorf(CodeInvalidRequest, "maxResults must be a number from 1 to 250"))
			return
		}
		max = n
	}
	status := ExecutionStatus(strings.ToUpper(q.Get("status")))
	execs, next, err := s.ListJobExecutionsForJob(r.PathValue("jobId"), status, max, q.Get("nextToken"))
	if err != nil {
		writeError(w, err)
		return
	}
	summaries := make([]map[string]any, 0, len(execs))
	for _, e := range execs {
		summaries = append(summaries, map[string]any{
			"thingArn": s.ThingArn(e.ThingName),
			"jobExecutionSummary": map[string]any{
				"status": e.Status, "queuedAt": ptime(e.QueuedAt), "startedAt": ptime(e.StartedAt),
				"lastUpdatedAt": ptime(e.LastUpdatedAt), "executionNumber": e.ExecutionNumber,
			},
		})
	}
	out := map[string]any{"executionSummaries": summaries}
	if next != "" {
		out["nextToken"] = next
	}
	writeJSON(w, out)
}

func (s *Service) handleCancelJob(w http.ResponseWriter, r *http.Request) {
	var in struct {
		Comment    string `json:"comment"`
		ReasonCode string `json:"reasonCode"`
	}
	if err := readJSON(r, &in); err != nil {
		writeError(w, err)
		return
	}
	force := r.URL.Query().Get("force") == "true"
	j, err := s.CancelJob(r.PathValue("jobId"), force, in.Comment, in.ReasonCode)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, map[string]string{"jobArn": j.Arn, "jobId": j.ID, "description": j.Description})
}
