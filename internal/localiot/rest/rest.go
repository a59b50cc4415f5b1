// Package rest is the local AWS IoT's REST control plane: the paths and bodies that
// aws-sdk-go-v2's iot client and the AWS CLI send, authenticated with SigV4, each answered by
// one of the service's operations (Handler). It also serves iot-jobs-data over HTTPS, artifact
// downloads by presigned URL, and the release metadata devices fetch.
package rest

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/otaflow/otaflow/internal/localiot"
)

// operation is one REST operation: it answers a request with the response to send as JSON
// (nil: an empty 200, as AWS answers a delete) or an error, which writeError sends the way AWS
// does (the exception name in X-Amzn-Errortype, its HTTP status, and the message).
type operation func(r *http.Request) (any, error)

func (op operation) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	out, err := op(r)
	headers, bare := out.(headersOnly)
	switch {
	case err != nil:
		writeError(w, err)
	case out == nil:
		w.WriteHeader(http.StatusOK)
	case bare:
		for k, v := range headers {
			w.Header().Set(k, v)
		}
		w.WriteHeader(http.StatusOK)
	default:
		writeJSON(w, out)
	}
}

// headersOnly is an answer of headers and no body, as S3 answers PutObject.
type headersOnly map[string]string

// op routes pattern to an operation.
func (m countingMux) op(pattern string, op operation) { m.HandleFunc(pattern, op.ServeHTTP) }

// api is the REST control plane of one service: every handler turns a request into a call of
// the service's operations and its answer into AWS's response.
type api struct{ *localiot.Service }

// countingMux counts the calls of each operation (APICalls).
type countingMux struct {
	*http.ServeMux
	s *localiot.Service
}

func (m countingMux) HandleFunc(pattern string, h func(http.ResponseWriter, *http.Request)) {
	n := m.s.Counter(pattern)
	m.ServeMux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		h(w, r)
	})
}

// Route is an extra handler served beside the IoT paths, behind the same authentication.
type Route struct {
	Pattern string
	Handler http.Handler
}

// Handler serves svc's AWS IoT REST control plane (and any extra routes). Every request
// must carry a SigV4 signature made with the configured credentials.
func Handler(svc *localiot.Service, auth *SigV4Verifier, extra ...Route) http.Handler {
	s := api{svc}
	mux := countingMux{ServeMux: http.NewServeMux(), s: svc}
	for _, r := range extra {
		mux.Handle(r.Pattern, r.Handler)
	}
	mux.op("POST /things/{thingName}", s.handleCreateThing)
	mux.op("GET /things/{thingName}", s.handleDescribeThing)
	mux.op("PUT /jobs/{jobId}", s.handleCreateJob)
	mux.op("GET /jobs/{jobId}", s.handleDescribeJob)
	mux.op("GET /jobs/{jobId}/things", s.handleListJobExecutionsForJob)
	mux.op("PUT /jobs/{jobId}/cancel", s.handleCancelJob)
	mux.op("GET /things/{thingName}/jobs/{jobId}", s.handleDescribeJobExecution)
	mux.op("GET /jobs", s.handleListJobs)
	mux.op("DELETE /jobs/{jobId}", s.handleDeleteJob)
	mux.op("GET /things/{thingName}/jobs", s.handleListJobExecutionsForThing)
	mux.op("PUT /things/{thingName}/jobs/{jobId}/cancel", s.handleCancelJobExecution)
	mux.op("GET /things", s.handleListThings)
	mux.op("PATCH /things/{thingName}", s.handleUpdateThing)
	mux.op("POST /thing-types/{thingTypeName}", s.handleCreateThingType)
	mux.op("GET /thing-types/{thingTypeName}", s.handleDescribeThingType)
	mux.op("GET /thing-types", s.handleListThingTypes)
	mux.op("POST /thing-types/{thingTypeName}/deprecate", s.handleDeprecateThingType)
	mux.op("DELETE /thing-types/{thingTypeName}", s.handleDeleteThingType)
	mux.op("GET /endpoint", s.handleDescribeEndpoint)
	mux.op("GET /things/{thingName}/thing-groups", s.handleListThingGroupsForThing)
	mux.op("GET /thing-groups", s.handleListThingGroups)
	mux.op("PATCH /thing-groups/{thingGroupName}", s.handleUpdateThingGroup)
	mux.op("PUT /thing-groups/updateThingGroupsForThing", s.handleUpdateThingGroupsForThing)
	mux.op("GET /jobs/{jobId}/job-document", s.handleGetJobDocument)
	mux.op("DELETE /things/{thingName}/jobs/{jobId}/executionNumber/{executionNumber}", s.handleDeleteJobExecution)
	mux.op("PATCH /jobs/{jobId}", s.handleUpdateJob)
	mux.op("POST /jobs/{jobId}/targets", s.handleAssociateTargetsWithJob)
	mux.op("PUT /job-templates/{jobTemplateId}", s.handleCreateJobTemplate)
	mux.op("GET /job-templates/{jobTemplateId}", s.handleDescribeJobTemplate)
	mux.op("GET /job-templates", s.handleListJobTemplates)
	mux.op("DELETE /job-templates/{jobTemplateId}", s.handleDeleteJobTemplate)
	mux.op("GET /things/{thingName}/shadow", s.handleGetThingShadow)
	mux.op("POST /things/{thingName}/shadow", s.handleUpdateThingShadow)
	mux.op("DELETE /things/{thingName}/shadow", s.handleDeleteThingShadow)
	mux.op("GET /api/things/shadow/ListNamedShadowsForThing/{thingName}", s.handleListNamedShadowsForThing)
	mux.op("DELETE /things/{thingName}", s.handleDeleteThing)
	mux.op("POST /thing-groups/{thingGroupName}", s.handleCreateThingGroup)
	mux.op("GET /thing-groups/{thingGroupName}", s.handleDescribeThingGroup)
	mux.op("DELETE /thing-groups/{thingGroupName}", s.handleDeleteThingGroup)
	mux.op("PUT /thing-groups/addThingToThingGroup", s.handleThingGroupMembership(true))
	mux.op("PUT /thing-groups/removeThingFromThingGroup", s.handleThingGroupMembership(false))
	mux.op("GET /thing-groups/{thingGroupName}/things", s.handleListThingsInThingGroup)
	mux.op("PUT /artifacts/{bucket}/{key...}", s.handleArtifactUpload)
	mux.HandleFunc("DELETE /artifacts/{bucket}/{key...}", s.handleDeleteObject)
	mux.HandleFunc("GET /artifacts/{bucket}/{key...}", s.serveArtifact)
	mux.HandleFunc("GET /artifacts/{bucket}", s.handleListObjects)
	mux.op("PUT /tuf/{bucket}/{file}", s.handleTUFUpload)
	mux.op("POST /indexing/config", s.handleUpdateIndexingConfiguration)
	mux.op("GET /indexing/config", s.handleGetIndexingConfiguration)
	mux.op("GET /indices", s.handleListIndices)
	mux.op("GET /indices/{indexName}", s.handleDescribeIndex)
	mux.op("POST /indices/search", s.handleSearchIndex)
	mux.op("POST /indices/statistics", s.handleGetStatistics)
	mux.op("POST /indices/percentiles", s.handleGetPercentiles)
	mux.op("POST /indices/cardinality", s.handleGetCardinality)
	mux.op("POST /indices/buckets", s.handleGetBucketsAggregation)
	mux.op("POST /keys-and-certificate", s.handleCreateKeysAndCertificate)
	mux.op("POST /certificates", s.handleCreateCertificateFromCsr)
	mux.op("POST /certificate/register", s.handleRegisterCertificate)
	mux.op("GET /certificates/{certificateId}", s.handleDescribeCertificate)
	mux.op("GET /certificates", s.handleListCertificates)
	mux.op("PUT /certificates/{certificateId}", s.handleUpdateCertificate)
	mux.op("DELETE /certificates/{certificateId}", s.handleDeleteCertificate)
	mux.op("PUT /things/{thingName}/principals", s.handleAttachThingPrincipal)
	mux.op("DELETE /things/{thingName}/principals", s.handleDetachThingPrincipal)
	mux.op("GET /things/{thingName}/principals", s.handleListThingPrincipals)
	mux.op("GET /principals/things", s.handleListPrincipalThings)
	mux.op("POST /dynamic-thing-groups/{thingGroupName}", s.handleCreateDynamicThingGroup)
	mux.op("PATCH /dynamic-thing-groups/{thingGroupName}", s.handleUpdateDynamicThingGroup)
	mux.op("DELETE /dynamic-thing-groups/{thingGroupName}", s.handleDeleteDynamicThingGroup)
	mux.op("POST /certificate/register-no-ca", s.handleRegisterCertificateWithoutCA)
	mux.op("POST /things", s.handleRegisterThing)
	mux.op("POST /provisioning-templates", s.handleCreateProvisioningTemplate)
	mux.op("GET /provisioning-templates", s.handleListProvisioningTemplates)
	mux.op("GET /provisioning-templates/{templateName}", s.handleDescribeProvisioningTemplate)
	mux.op("PATCH /provisioning-templates/{templateName}", s.handleUpdateProvisioningTemplate)
	mux.op("DELETE /provisioning-templates/{templateName}", s.handleDeleteProvisioningTemplate)
	mux.op("POST /provisioning-templates/{templateName}/versions", s.handleCreateProvisioningTemplateVersion)
	mux.op("GET /provisioning-templates/{templateName}/versions", s.handleListProvisioningTemplateVersions)
	mux.op("GET /provisioning-templates/{templateName}/versions/{versionId}", s.handleDescribeProvisioningTemplateVersion)
	mux.op("DELETE /provisioning-templates/{templateName}/versions/{versionId}", s.handleDeleteProvisioningTemplateVersion)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeUnknownOperation(w, fmt.Sprintf("%s %s is not an operation this jobs service serves (README lists them)", r.Method, r.URL.Path))
	})
	// Artifact downloads carry their own signature (a presigned URL), not SigV4.
	outer := http.NewServeMux()
	authed := auth.Middleware(mux)
	outer.HandleFunc("GET /artifacts/{bucket}/{key...}", s.handleArtifactDownload(authed))
	// Named here too, or the pattern above would redirect a bucket listing to ".../".
	outer.Handle("GET /artifacts/{bucket}", authed)
	// TUF metadata is signed, not secret: devices fetch it from here without credentials.
	outer.HandleFunc("GET /tuf/{bucket}/{file}", s.handleTUFMetadata)
	// Health, for container health checks and load balancers: it reveals nothing but "the
	// store answers".
	outer.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		if err := s.Healthy(); err != nil {
			http.Error(w, "jobs store unavailable", http.StatusServiceUnavailable)
			s.Logger().Warn().Err(err).Msg("health check: the jobs store does not answer")
			return
		}
		if p := s.ClockProblem(); p != "" {
			// Still healthy (time is decided on the database's clock), but worth fixing.
			w.Write([]byte("ok; " + p + "\n"))
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
	return logRequests(*s.Logger(), outer)
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
func exceptionFor(code localiot.ErrorCode) (string, int) {
	switch code {
	case localiot.CodeInvalidRequest:
		return "InvalidRequestException", http.StatusBadRequest
	case localiot.CodeResourceNotFound:
		return "ResourceNotFoundException", http.StatusNotFound
	case localiot.CodeAlreadyExists:
		return "ResourceAlreadyExistsException", http.StatusConflict
	case localiot.CodeInvalidStateTransition:
		return "InvalidStateTransitionException", http.StatusConflict
	case localiot.CodeTerminalStateReached:
		return "TerminalStateException", http.StatusGone
	case localiot.CodeVersionMismatch, localiot.CodeConflict:
		return "VersionConflictException", http.StatusConflict
	case localiot.CodeResourceConflict:
		return "ConflictException", http.StatusConflict
	case localiot.CodeUnauthorized:
		return "UnauthorizedException", http.StatusForbidden
	case localiot.CodeInvalidQuery:
		return "InvalidQueryException", http.StatusBadRequest
	case localiot.CodeInvalidAggregation:
		return "InvalidAggregationException", http.StatusBadRequest
	case localiot.CodePreconditionFailed:
		return "PreconditionFailed", http.StatusPreconditionFailed
	case localiot.CodeLimitExceeded:
		return "LimitExceededException", http.StatusGone
	case localiot.CodeCertificateState:
		return "CertificateStateException", http.StatusNotAcceptable
	case localiot.CodeDeleteConflict:
		return "DeleteConflictException", http.StatusConflict
	case localiot.CodeCertificateValidation:
		return "CertificateValidationException", http.StatusBadRequest
	case localiot.CodeVersionsLimitExceeded:
		return "VersionsLimitExceededException", http.StatusConflict
	}
	return "InternalFailureException", http.StatusInternalServerError
}

func writeError(w http.ResponseWriter, err error) {
	var e *localiot.Error
	if !errors.As(err, &e) {
		e = &localiot.Error{Code: localiot.CodeInternal, Message: err.Error()}
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
	return localiot.Errorf(localiot.CodeInvalidRequest, "%s %q: use one of %s", name, v, strings.Join(allowed, ", "))
}

// onlyQuery refuses query parameters a handler does not act on: a filter silently ignored
// returns everything, and a script that picks targets by it would update the whole fleet.
func onlyQuery(r *http.Request, known ...string) error {
	for k := range r.URL.Query() {
		if !slices.Contains(known, k) {
			return localiot.Errorf(localiot.CodeInvalidRequest, "query parameter %q is not supported by this jobs service", k)
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
		return localiot.Errorf(localiot.CodeInvalidRequest, "read request body: %v", err)
	}
	if len(body) > maxRequestBytes {
		return localiot.Errorf(localiot.CodeInvalidRequest, "request body exceeds %d bytes", maxRequestBytes)
	}
	if len(body) == 0 {
		return nil
	}
	if err := json.Unmarshal(body, v); err != nil {
		return localiot.Errorf(localiot.CodeInvalidRequest, "request body is not valid JSON: %v", err)
	}
	return nil
}

// maxResults reads the maxResults query parameter (0: the default page size).
func maxResults(r *http.Request) (int, error) {
	v := r.URL.Query().Get("maxResults")
	if v == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > 250 {
		return 0, localiot.Errorf(localiot.CodeInvalidRequest, "maxResults must be a number from 1 to 250")
	}
	return n, nil
}

// paged is the nextToken of a list response, when there is a next page.
type paged struct {
	NextToken string `json:"nextToken,omitempty"`
}

// empty is the answer of an operation that returns no members: {}.
type empty struct{}

type describeEndpointResponse struct {
	EndpointAddress string `json:"endpointAddress"`
}

// endpointTypes are DescribeEndpoint's endpoint types.
var endpointTypes = []string{"iot:Data", "iot:Data-ATS", "iot:CredentialProvider", "iot:Jobs"}

func (s api) handleDescribeEndpoint(r *http.Request) (any, error) {
	typ := r.URL.Query().Get("endpointType")
	if typ != "" && !slices.Contains(endpointTypes, typ) {
		return nil, localiot.Errorf(localiot.CodeInvalidRequest, "endpointType %q: use one of %s", typ, strings.Join(endpointTypes, ", "))
	}
	// One address serves every plane here (REST, shadows, jobs); AWS answers a host name.
	host := r.Host
	if u, err := url.Parse(s.BaseURL()); err == nil && u.Host != "" {
		host = u.Host
	}
	return &describeEndpointResponse{EndpointAddress: host}, nil
}
