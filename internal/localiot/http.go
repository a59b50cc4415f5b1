package localiot

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/otaflow/otaflow/internal/arn"
	"github.com/otaflow/otaflow/internal/localiot/store"
)

// countingMux counts the calls of each operation (APICalls).
type countingMux struct {
	*http.ServeMux
	s *Service
}

func (m countingMux) HandleFunc(pattern string, h func(http.ResponseWriter, *http.Request)) {
	n := m.s.counter(pattern)
	m.ServeMux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		h(w, r)
	})
}

func (s *Service) counter(op string) *atomic.Int64 {
	v, ok := s.calls.Load(op)
	if !ok {
		v, _ = s.calls.LoadOrStore(op, new(atomic.Int64))
	}
	return v.(*atomic.Int64)
}

// APICalls counts the control-plane requests served so far, by operation ("PUT /jobs/{jobId}"),
// and the device requests over MQTT ("mqtt get", "mqtt update", ...): what a benchmark divides
// by the fleet size.
func (s *Service) APICalls() map[string]int64 {
	out := map[string]int64{}
	s.calls.Range(func(k, v any) bool {
		if n := v.(*atomic.Int64).Load(); n > 0 {
			out[k.(string)] = n
		}
		return true
	})
	return out
}

// Route is an extra handler served beside the IoT paths, behind the same authentication.
type Route struct {
	Pattern string
	Handler http.Handler
}

// HTTPHandler serves the AWS IoT REST control plane (and any extra routes). Every request
// must carry a SigV4 signature made with the configured credentials.
func (s *Service) HTTPHandler(auth *SigV4Verifier, extra ...Route) http.Handler {
	mux := countingMux{ServeMux: http.NewServeMux(), s: s}
	for _, r := range extra {
		mux.Handle(r.Pattern, r.Handler)
	}
	mux.HandleFunc("POST /things/{thingName}", s.handleCreateThing)
	mux.HandleFunc("GET /things/{thingName}", s.handleDescribeThing)
	mux.HandleFunc("PUT /jobs/{jobId}", s.handleCreateJob)
	mux.HandleFunc("GET /jobs/{jobId}", s.handleDescribeJob)
	mux.HandleFunc("GET /jobs/{jobId}/things", s.handleListJobExecutionsForJob)
	mux.HandleFunc("PUT /jobs/{jobId}/cancel", s.handleCancelJob)
	mux.HandleFunc("GET /things/{thingName}/jobs/{jobId}", s.handleDescribeJobExecution)
	mux.HandleFunc("GET /jobs", s.handleListJobs)
	mux.HandleFunc("DELETE /jobs/{jobId}", s.handleDeleteJob)
	mux.HandleFunc("GET /things/{thingName}/jobs", s.handleListJobExecutionsForThing)
	mux.HandleFunc("PUT /things/{thingName}/jobs/{jobId}/cancel", s.handleCancelJobExecution)
	mux.HandleFunc("GET /things", s.handleListThings)
	mux.HandleFunc("PATCH /things/{thingName}", s.handleUpdateThing)
	mux.HandleFunc("POST /thing-types/{thingTypeName}", s.handleCreateThingType)
	mux.HandleFunc("GET /thing-types/{thingTypeName}", s.handleDescribeThingType)
	mux.HandleFunc("GET /thing-types", s.handleListThingTypes)
	mux.HandleFunc("POST /thing-types/{thingTypeName}/deprecate", s.handleDeprecateThingType)
	mux.HandleFunc("DELETE /thing-types/{thingTypeName}", s.handleDeleteThingType)
	mux.HandleFunc("GET /endpoint", s.handleDescribeEndpoint)
	mux.HandleFunc("GET /things/{thingName}/thing-groups", s.handleListThingGroupsForThing)
	mux.HandleFunc("GET /thing-groups", s.handleListThingGroups)
	mux.HandleFunc("PATCH /thing-groups/{thingGroupName}", s.handleUpdateThingGroup)
	mux.HandleFunc("PUT /thing-groups/updateThingGroupsForThing", s.handleUpdateThingGroupsForThing)
	mux.HandleFunc("GET /jobs/{jobId}/job-document", s.handleGetJobDocument)
	mux.HandleFunc("DELETE /things/{thingName}/jobs/{jobId}/executionNumber/{executionNumber}", s.handleDeleteJobExecution)
	mux.HandleFunc("PATCH /jobs/{jobId}", s.handleUpdateJob)
	mux.HandleFunc("POST /jobs/{jobId}/targets", s.handleAssociateTargetsWithJob)
	mux.HandleFunc("PUT /job-templates/{jobTemplateId}", s.handleCreateJobTemplate)
	mux.HandleFunc("GET /job-templates/{jobTemplateId}", s.handleDescribeJobTemplate)
	mux.HandleFunc("GET /job-templates", s.handleListJobTemplates)
	mux.HandleFunc("DELETE /job-templates/{jobTemplateId}", s.handleDeleteJobTemplate)
	mux.HandleFunc("GET /things/{thingName}/shadow", s.handleGetThingShadow)
	mux.HandleFunc("POST /things/{thingName}/shadow", s.handleUpdateThingShadow)
	mux.HandleFunc("DELETE /things/{thingName}", s.handleDeleteThing)
	mux.HandleFunc("POST /thing-groups/{thingGroupName}", s.handleCreateThingGroup)
	mux.HandleFunc("GET /thing-groups/{thingGroupName}", s.handleDescribeThingGroup)
	mux.HandleFunc("DELETE /thing-groups/{thingGroupName}", func(w http.ResponseWriter, r *http.Request) {
		if err := s.DeleteThingGroup(r.PathValue("thingGroupName")); err != nil {
			writeError(w, err)
			return
		}
		writeJSON(w, map[string]any{})
	})
	mux.HandleFunc("PUT /thing-groups/addThingToThingGroup", s.handleThingGroupMembership(true))
	mux.HandleFunc("PUT /thing-groups/removeThingFromThingGroup", s.handleThingGroupMembership(false))
	mux.HandleFunc("GET /thing-groups/{thingGroupName}/things", s.handleListThingsInThingGroup)
	mux.HandleFunc("PUT /artifacts/{bucket}/{key...}", s.handleArtifactUpload)
	mux.HandleFunc("PUT /tuf/{bucket}/{file}", s.handleTUFUpload)
	mux.HandleFunc("POST /indexing/config", s.handleUpdateIndexingConfiguration)
	mux.HandleFunc("GET /indexing/config", s.handleGetIndexingConfiguration)
	mux.HandleFunc("GET /indices", s.handleListIndices)
	mux.HandleFunc("GET /indices/{indexName}", s.handleDescribeIndex)
	mux.HandleFunc("POST /indices/search", s.handleSearchIndex)
	mux.HandleFunc("POST /indices/statistics", s.handleGetStatistics)
	mux.HandleFunc("POST /indices/percentiles", s.handleGetPercentiles)
	mux.HandleFunc("POST /indices/cardinality", s.handleGetCardinality)
	mux.HandleFunc("POST /indices/buckets", s.handleGetBucketsAggregation)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeUnknownOperation(w, fmt.Sprintf("%s %s is not an operation this jobs service serves (README lists them)", r.Method, r.URL.Path))
	})
	// Artifact downloads carry their own signature (a presigned URL), not SigV4.
	outer := http.NewServeMux()
	outer.HandleFunc("GET /artifacts/{bucket}/{key...}", s.handleArtifactDownload)
	// TUF metadata is signed, not secret: devices fetch it from here without credentials.
	outer.HandleFunc("GET /tuf/{bucket}/{file}", s.handleTUFMetadata)
	// Health, for container health checks and load balancers: it reveals nothing but "the
	// store answers".
	outer.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		if err := s.Healthy(); err != nil {
			http.Error(w, "jobs store unavailable", http.StatusServiceUnavailable)
			s.log.Warn().Err(err).Msg("health check: the jobs store does not answer")
			return
		}
		w.Write([]byte("ok\n"))
	})
	data := s.jobsDataHandler()
	outer.Handle("/", auth.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if signedFor(r) == "iot-jobs-data" {
			data.ServeHTTP(w, r)
			return
		}
		mux.ServeHTTP(w, r)
	})))
	return logRequests(s.log, outer)
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
	case CodeResourceConflict:
		return "ConflictException", http.StatusConflict
	case CodeUnauthorized:
		return "UnauthorizedException", http.StatusForbidden
	case CodeInvalidQuery:
		return "InvalidQueryException", http.StatusBadRequest
	case CodeInvalidAggregation:
		return "InvalidAggregationException", http.StatusBadRequest
	case CodeLimitExceeded:
		return "LimitExceededException", http.StatusGone
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

// writeUnknownOperation answers as AWS answers a request for an operation it does not have.
func writeUnknownOperation(w http.ResponseWriter, msg string) {
	w.Header().Set("X-Amzn-Errortype", "UnknownOperationException")
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusNotFound)
	json.NewEncoder(w).Encode(map[string]string{"message": "Unknown operation: " + msg})
}

// executionStatuses are the JobExecutionStatus values a filter may name.
var executionStatuses = []string{"QUEUED", "IN_PROGRESS", "SUCCEEDED", "FAILED", "TIMED_OUT", "REJECTED", "REMOVED", "CANCELED"}

// oneOf refuses a filter value outside AWS's enum (AWS answers InvalidRequestException, not an
// empty list a script would take for "none").
func oneOf(name, v string, allowed ...string) error {
	if v == "" || slices.Contains(allowed, v) {
		return nil
	}
	return errorf(CodeInvalidRequest, "%s %q: use one of %s", name, v, strings.Join(allowed, ", "))
}

// onlyQuery refuses query parameters a handler does not act on: a filter silently ignored
// returns everything, and a script that picks targets by it would update the whole fleet.
func onlyQuery(r *http.Request, known ...string) error {
	for k := range r.URL.Query() {
		if !slices.Contains(known, k) {
			return errorf(CodeInvalidRequest, "query parameter %q is not supported by this jobs service", k)
		}
	}
	return nil
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}

// maxRequestBytes bounds the body of an authenticated request (a job for a whole wave lists
// every device's ARN); before authentication, SigV4Verifier's much smaller bounds apply.
const maxRequestBytes = 16 << 20

func readJSON(r *http.Request, v any) error {
	body, err := io.ReadAll(io.LimitReader(r.Body, maxRequestBytes+1))
	if err != nil {
		return errorf(CodeInvalidRequest, "read request body: %v", err)
	}
	if len(body) > maxRequestBytes {
		return errorf(CodeInvalidRequest, "request body exceeds %d bytes", maxRequestBytes)
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
		ThingTypeName    string `json:"thingTypeName"`
		BillingGroupName string `json:"billingGroupName"`
	}
	if err := readJSON(r, &in); err != nil {
		writeError(w, err)
		return
	}
	if in.BillingGroupName != "" {
		writeError(w, errorf(CodeResourceNotFound, "billing group %s does not exist (this jobs service keeps no billing groups)", in.BillingGroupName))
		return
	}
	if err := checkAttributes(in.AttributePayload.Attributes); err != nil {
		writeError(w, err)
		return
	}
	th, err := s.CreateTypedThing(r.PathValue("thingName"), in.ThingTypeName, in.AttributePayload.Attributes)
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
	out := map[string]any{
		"thingName": th.Name, "thingArn": th.Arn, "thingId": th.ID,
		"attributes": th.Attributes, "version": th.Version, "defaultClientId": th.Name,
	}
	if th.TypeName != "" {
		out["thingTypeName"] = th.TypeName
	}
	writeJSON(w, out)
}

func (s *Service) handleCreateJob(w http.ResponseWriter, r *http.Request) {
	var in struct {
		Document        string   `json:"document"`
		DocumentSource  string   `json:"documentSource"`
		Description     string   `json:"description"`
		Targets         []string `json:"targets"`
		TargetSelection string   `json:"targetSelection"`
		TimeoutConfig   struct {
			InProgressTimeoutInMinutes int64 `json:"inProgressTimeoutInMinutes"`
		} `json:"timeoutConfig"`
		RetryConfig *struct {
			CriteriaList []store.RetryCriteria `json:"criteriaList"`
		} `json:"jobExecutionsRetryConfig"`
		PresignedURLConfig *store.PresignConfig `json:"presignedUrlConfig"`
		RolloutConfig      struct {
			MaximumPerMinute int                    `json:"maximumPerMinute"`
			ExponentialRate  *store.ExponentialRate `json:"exponentialRate"`
		} `json:"jobExecutionsRolloutConfig"`
		AbortConfig      *abortConfigJSON  `json:"abortConfig"`
		SchedulingConfig *store.Scheduling `json:"schedulingConfig"`
		JobTemplateArn   string            `json:"jobTemplateArn"`
	}
	if err := readJSON(r, &in); err != nil {
		writeError(w, err)
		return
	}
	abort, err := in.AbortConfig.criteria()
	if err != nil {
		writeError(w, err)
		return
	}
	if sc := in.SchedulingConfig; sc != nil {
		sc.Start, sc.End, sc.Ended = time.Time{}, time.Time{}, false // set by checkScheduling only
	}
	if in.DocumentSource != "" {
		if in.Document != "" {
			writeError(w, errorf(CodeInvalidRequest, "give document or documentSource, not both"))
			return
		}
		doc, err := s.documentFromSource(in.DocumentSource)
		if err != nil {
			writeError(w, err)
			return
		}
		in.Document = doc
	}
	cj := CreateJobInput{
		JobID: r.PathValue("jobId"), Document: in.Document, Description: in.Description,
		Targets: in.Targets, TargetSelection: in.TargetSelection,
		InProgressTimeoutMinutes: in.TimeoutConfig.InProgressTimeoutInMinutes,
		Retry:                    retryList(in.RetryConfig),
		Presign:                  in.PresignedURLConfig,
		MaxPerMinute:             in.RolloutConfig.MaximumPerMinute,
		Abort:                    abort,
		Scheduling:               in.SchedulingConfig,
		Exponential:              in.RolloutConfig.ExponentialRate,
	}
	if in.JobTemplateArn != "" {
		if err := s.fromTemplate(&cj, in.JobTemplateArn); err != nil {
			writeError(w, err)
			return
		}
	}
	job, err := s.CreateJob(cj)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, map[string]string{"jobArn": job.Arn, "jobId": job.ID, "description": job.Description})
}

type jobJSON struct {
	JobArn            string               `json:"jobArn"`
	JobID             string               `json:"jobId"`
	TargetSelection   string               `json:"targetSelection"`
	Status            store.JobStatus      `json:"status"`
	ForceCanceled     bool                 `json:"forceCanceled"`
	Comment           string               `json:"comment,omitempty"`
	ReasonCode        string               `json:"reasonCode,omitempty"`
	Description       string               `json:"description,omitempty"`
	Targets           []string             `json:"targets"`
	CreatedAt         *awsTime             `json:"createdAt,omitempty"`
	LastUpdatedAt     *awsTime             `json:"lastUpdatedAt,omitempty"`
	CompletedAt       *awsTime             `json:"completedAt,omitempty"`
	JobProcessDetails store.ProcessDetails `json:"jobProcessDetails"`
	TimeoutConfig     map[string]any       `json:"timeoutConfig"`
	PresignedURL      *store.PresignConfig `json:"presignedUrlConfig,omitempty"`
	RetryConfig       map[string]any       `json:"jobExecutionsRetryConfig,omitempty"`
	RolloutConfig     map[string]any       `json:"jobExecutionsRolloutConfig"`
	AbortConfig       map[string]any       `json:"abortConfig,omitempty"`
	SchedulingConfig  map[string]any       `json:"schedulingConfig,omitempty"`
	// ScheduledRollouts are the next starts of the maintenance windows.
	ScheduledRollouts []map[string]string `json:"scheduledJobRollouts,omitempty"`
}

// abortConfigJSON is abortConfig as requests carry it.
type abortConfigJSON struct {
	CriteriaList []store.AbortCriteria `json:"criteriaList"`
}

// criteria is the list, refusing an abortConfig without one (the member is required).
func (a *abortConfigJSON) criteria() ([]store.AbortCriteria, error) {
	if a == nil {
		return nil, nil
	}
	if len(a.CriteriaList) == 0 {
		return nil, errorf(CodeInvalidRequest, "abortConfig.criteriaList needs at least one criterion")
	}
	return a.CriteriaList, nil
}

func retryList(c *struct {
	CriteriaList []store.RetryCriteria `json:"criteriaList"`
}) []store.RetryCriteria {
	if c == nil {
		return nil
	}
	return c.CriteriaList
}

// rolloutConfigJSON is jobExecutionsRolloutConfig as a job or a job template describes it.
func rolloutConfigJSON(maxPerMinute int, exp *store.ExponentialRate) map[string]any {
	rc := map[string]any{}
	if maxPerMinute > 0 {
		rc["maximumPerMinute"] = maxPerMinute
	}
	if exp != nil {
		rc["exponentialRate"] = exp
	}
	return rc
}

func toJobJSON(j *store.Job, now time.Time) jobJSON {
	out := jobJSON{
		JobArn: j.Arn, JobID: j.ID, TargetSelection: j.TargetSelection, Status: j.Status,
		ForceCanceled: j.ForceCanceled, Comment: j.Comment, ReasonCode: j.ReasonCode,
		Description: j.Description, Targets: j.Targets,
		CreatedAt: ptime(j.CreatedAt), LastUpdatedAt: ptime(j.LastUpdatedAt), CompletedAt: ptime(j.CompletedAt),
		JobProcessDetails: j.Counts,
		TimeoutConfig:     map[string]any{},
		PresignedURL:      j.Presign,
	}
	if j.InProgressTimeout > 0 {
		out.TimeoutConfig["inProgressTimeoutInMinutes"] = int64(j.InProgressTimeout / time.Minute)
	}
	if len(j.Retry) > 0 {
		out.RetryConfig = map[string]any{"criteriaList": j.Retry}
	}
	out.RolloutConfig = rolloutConfigJSON(j.MaxPerMinute, j.Exponential)
	if len(j.Abort) > 0 {
		out.AbortConfig = map[string]any{"criteriaList": j.Abort}
	}
	if sc := j.Scheduling; sc != nil {
		out.SchedulingConfig = map[string]any{}
		for k, v := range map[string]string{"startTime": sc.StartTime, "endTime": sc.EndTime, "endBehavior": sc.EndBehavior} {
			if v != "" {
				out.SchedulingConfig[k] = v
			}
		}
		if len(sc.MaintenanceWindows) > 0 {
			out.SchedulingConfig["maintenanceWindows"] = sc.MaintenanceWindows
			if j.Status == store.JobInProgress || j.Status == JobScheduled {
				for _, at := range nextRollouts(sc, now, 7) {
					out.ScheduledRollouts = append(out.ScheduledRollouts, map[string]string{"startTime": at})
				}
			}
		}
	}
	return out
}

func (s *Service) handleDescribeJob(w http.ResponseWriter, r *http.Request) {
	j, err := s.DescribeJob(r.PathValue("jobId"))
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, map[string]any{"job": toJobJSON(j, s.clock())})
}

type statusDetailsJSON struct {
	DetailsMap map[string]string `json:"detailsMap,omitempty"`
}

func (s *Service) handleDescribeJobExecution(w http.ResponseWriter, r *http.Request) {
	var number int64
	if n := r.URL.Query().Get("executionNumber"); n != "" {
		v, err := strconv.ParseInt(n, 10, 64)
		if err != nil {
			writeError(w, errorf(CodeInvalidRequest, "executionNumber must be a number"))
			return
		}
		number = v
	}
	e, err := s.DescribeJobExecution(r.PathValue("jobId"), r.PathValue("thingName"), number)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, map[string]any{"execution": map[string]any{
		"jobId": e.JobID, "thingArn": s.ThingArn(e.ThingName), "status": e.Status,
		"forceCanceled": e.ForceCanceled, "statusDetails": statusDetailsJSON{e.StatusDetails},
		"queuedAt": ptime(e.QueuedAt), "startedAt": ptime(e.StartedAt), "lastUpdatedAt": ptime(e.LastUpdatedAt),
		"executionNumber": e.ExecutionNumber, "versionNumber": e.VersionNumber,
	}})
}

// maxResults reads the maxResults query parameter (0: the default page size).
func maxResults(r *http.Request) (int, error) {
	v := r.URL.Query().Get("maxResults")
	if v == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > 250 {
		return 0, errorf(CodeInvalidRequest, "maxResults must be a number from 1 to 250")
	}
	return n, nil
}

// page adds nextToken to a list response when there is a next page.
func page(out map[string]any, next string) map[string]any {
	if next != "" {
		out["nextToken"] = next
	}
	return out
}

func (s *Service) handleListJobExecutionsForJob(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	max, err := maxResults(r)
	if err != nil {
		writeError(w, err)
		return
	}
	if err := onlyQuery(r, "status", "maxResults", "nextToken"); err != nil {
		writeError(w, err)
		return
	}
	if err := oneOf("status", q.Get("status"), executionStatuses...); err != nil {
		writeError(w, err)
		return
	}
	status := store.ExecutionStatus(q.Get("status"))
	execs, next, err := s.ListJobExecutionsForJob(r.PathValue("jobId"), status, max, q.Get("nextToken"))
	if err != nil {
		writeError(w, err)
		return
	}
	summaries := make([]map[string]any, 0, len(execs))
	for _, e := range execs {
		summaries = append(summaries, map[string]any{
			"thingArn":            s.ThingArn(e.ThingName),
			"jobExecutionSummary": execSummary(e),
		})
	}
	writeJSON(w, page(map[string]any{"executionSummaries": summaries}, next))
}

func execSummary(e *store.Execution) map[string]any {
	return map[string]any{
		"status": e.Status, "queuedAt": ptime(e.QueuedAt), "startedAt": ptime(e.StartedAt),
		"lastUpdatedAt": ptime(e.LastUpdatedAt), "executionNumber": e.ExecutionNumber, "retryAttempt": e.RetryAttempt,
	}
}

func (s *Service) handleListJobExecutionsForThing(w http.ResponseWriter, r *http.Request) {
	max, err := maxResults(r)
	if err != nil {
		writeError(w, err)
		return
	}
	q := r.URL.Query()
	if err := onlyQuery(r, "status", "maxResults", "nextToken", "jobId"); err != nil {
		writeError(w, err)
		return
	}
	if err := oneOf("status", q.Get("status"), executionStatuses...); err != nil {
		writeError(w, err)
		return
	}
	execs, next, err := s.ListJobExecutionsForThing(r.PathValue("thingName"), store.ExecutionStatus(q.Get("status")), max, q.Get("nextToken"))
	if err != nil {
		writeError(w, err)
		return
	}
	summaries := make([]map[string]any, 0, len(execs))
	for _, e := range execs {
		if id := q.Get("jobId"); id != "" && e.JobID != id {
			continue
		}
		summaries = append(summaries, map[string]any{"jobId": e.JobID, "jobExecutionSummary": execSummary(e)})
	}
	writeJSON(w, page(map[string]any{"executionSummaries": summaries}, next))
}

func (s *Service) handleListJobs(w http.ResponseWriter, r *http.Request) {
	max, err := maxResults(r)
	if err != nil {
		writeError(w, err)
		return
	}
	q := r.URL.Query()
	if err := onlyQuery(r, "status", "targetSelection", "maxResults", "nextToken", "thingGroupName", "thingGroupId"); err != nil {
		writeError(w, err)
		return
	}
	if err := oneOf("status", q.Get("status"), "IN_PROGRESS", "CANCELED", "COMPLETED", "DELETION_IN_PROGRESS", "SCHEDULED"); err != nil {
		writeError(w, err)
		return
	}
	if err := oneOf("targetSelection", q.Get("targetSelection"), "CONTINUOUS", "SNAPSHOT"); err != nil {
		writeError(w, err)
		return
	}
	group := q.Get("thingGroupName")
	if id := q.Get("thingGroupId"); id != "" {
		name, err := s.groupNameByID(id)
		if err != nil {
			writeError(w, err)
			return
		}
		if group != "" && group != name {
			writeJSON(w, map[string]any{"jobs": []any{}})
			return
		}
		group = name
	}
	jobs, next, err := s.ListJobs(store.JobStatus(q.Get("status")), q.Get("targetSelection"), group, max, q.Get("nextToken"))
	if err != nil {
		writeError(w, err)
		return
	}
	list := make([]map[string]any, 0, len(jobs))
	for _, j := range jobs {
		list = append(list, map[string]any{
			"jobArn": j.Arn, "jobId": j.ID, "status": j.Status, "targetSelection": j.TargetSelection,
			"createdAt": ptime(j.CreatedAt), "lastUpdatedAt": ptime(j.LastUpdatedAt), "completedAt": ptime(j.CompletedAt),
		})
	}
	writeJSON(w, page(map[string]any{"jobs": list}, next))
}

func (s *Service) handleDeleteJob(w http.ResponseWriter, r *http.Request) {
	if err := s.DeleteJob(r.PathValue("jobId"), r.URL.Query().Get("force") == "true"); err != nil {
		writeError(w, err)
		return
	}
	w.WriteHeader(http.StatusOK)
}

func (s *Service) handleCancelJobExecution(w http.ResponseWriter, r *http.Request) {
	var in struct {
		ExpectedVersion int64             `json:"expectedVersion"`
		StatusDetails   map[string]string `json:"statusDetails"`
	}
	if err := readJSON(r, &in); err != nil {
		writeError(w, err)
		return
	}
	err := s.CancelJobExecution(r.PathValue("jobId"), r.PathValue("thingName"), r.URL.Query().Get("force") == "true", in.ExpectedVersion, in.StatusDetails)
	if err != nil {
		writeError(w, err)
		return
	}
	w.WriteHeader(http.StatusOK)
}

func (s *Service) handleListThings(w http.ResponseWriter, r *http.Request) {
	max, err := maxResults(r)
	if err != nil {
		writeError(w, err)
		return
	}
	q := r.URL.Query()
	if err := onlyQuery(r, "nextToken", "maxResults", "attributeName", "attributeValue", "thingTypeName", "usePrefixAttributeValue"); err != nil {
		writeError(w, err)
		return
	}
	things, next, err := s.ListThings(q.Get("attributeName"), q.Get("attributeValue"), q.Get("usePrefixAttributeValue") == "true", q.Get("thingTypeName"), max, q.Get("nextToken"))
	if err != nil {
		writeError(w, err)
		return
	}
	list := make([]map[string]any, 0, len(things))
	for _, th := range things {
		item := map[string]any{"thingName": th.Name, "thingArn": th.Arn, "attributes": th.Attributes, "version": th.Version}
		if th.TypeName != "" {
			item["thingTypeName"] = th.TypeName
		}
		list = append(list, item)
	}
	writeJSON(w, page(map[string]any{"things": list}, next))
}

func (s *Service) handleDeleteThing(w http.ResponseWriter, r *http.Request) {
	var expected int64
	if v := r.URL.Query().Get("expectedVersion"); v != "" {
		expected, _ = strconv.ParseInt(v, 10, 64)
	}
	if err := s.DeleteThing(r.PathValue("thingName"), expected); err != nil {
		writeError(w, err)
		return
	}
	w.WriteHeader(http.StatusOK)
}

func (s *Service) handleCreateThingGroup(w http.ResponseWriter, r *http.Request) {
	var in struct {
		ParentGroupName      string               `json:"parentGroupName"`
		ThingGroupProperties *thingGroupPropsJSON `json:"thingGroupProperties"`
	}
	if err := readJSON(r, &in); err != nil {
		writeError(w, err)
		return
	}
	g, err := s.CreateThingGroup(r.PathValue("thingGroupName"), in.ParentGroupName)
	if err != nil {
		writeError(w, err)
		return
	}
	if p := in.ThingGroupProperties; p != nil {
		if _, err := s.UpdateThingGroup(g.Name, p.Description, p.attributes(), p.merge(), 0); err != nil {
			writeError(w, err)
			return
		}
	}
	writeJSON(w, map[string]string{"thingGroupName": g.Name, "thingGroupArn": g.Arn, "thingGroupId": g.ID})
}

func (s *Service) handleDescribeThingGroup(w http.ResponseWriter, r *http.Request) {
	g, err := s.DescribeThingGroup(r.PathValue("thingGroupName"))
	if err != nil {
		writeError(w, err)
		return
	}
	meta := map[string]any{"creationDate": ptime(g.CreatedAt)}
	if g.Parent != "" {
		meta["parentGroupName"] = g.Parent
		anc, err := s.GroupAncestors(g.Name)
		if err != nil {
			writeError(w, err)
			return
		}
		// From the root down to the parent, as AWS lists them.
		var chain []map[string]string
		for i := len(anc) - 1; i >= 1; i-- {
			chain = append(chain, map[string]string{"groupName": anc[i], "groupArn": s.ThingGroupArn(anc[i])})
		}
		meta["rootToParentThingGroups"] = chain
	}
	props := map[string]any{}
	if g.Description != "" {
		props["thingGroupDescription"] = g.Description
	}
	if len(g.Attributes) > 0 {
		props["attributePayload"] = map[string]any{"attributes": g.Attributes}
	}
	writeJSON(w, map[string]any{"thingGroupName": g.Name, "thingGroupArn": g.Arn, "thingGroupId": g.ID,
		"version": g.Version, "thingGroupMetadata": meta, "thingGroupProperties": props})
}

func (s *Service) handleThingGroupMembership(add bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var in struct {
			ThingGroupName string `json:"thingGroupName"`
			ThingGroupArn  string `json:"thingGroupArn"`
			ThingName      string `json:"thingName"`
			ThingArn       string `json:"thingArn"`
		}
		if err := readJSON(r, &in); err != nil {
			writeError(w, err)
			return
		}
		group, thing := in.ThingGroupName, in.ThingName
		if group == "" {
			group = arn.Name(in.ThingGroupArn)
		}
		if thing == "" {
			thing = arn.Name(in.ThingArn)
		}
		if group == "" || thing == "" {
			writeError(w, errorf(CodeInvalidRequest, "name the thing group (thingGroupName or thingGroupArn) and the thing (thingName or thingArn)"))
			return
		}
		var err error
		if add {
			err = s.AddThingToThingGroup(group, thing)
		} else {
			err = s.RemoveThingFromThingGroup(group, thing)
		}
		if err != nil {
			writeError(w, err)
			return
		}
		writeJSON(w, map[string]any{})
	}
}

func (s *Service) handleListThingsInThingGroup(w http.ResponseWriter, r *http.Request) {
	max, err := maxResults(r)
	if err != nil {
		writeError(w, err)
		return
	}
	q := r.URL.Query()
	things, next, err := s.ListThingsInThingGroup(r.PathValue("thingGroupName"), q.Get("recursive") == "true", max, q.Get("nextToken"))
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, page(map[string]any{"things": things}, next))
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
