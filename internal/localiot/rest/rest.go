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

// Op serves an operation written outside this package (an extra Route): its answer as JSON,
// its error (a *localiot.Error) as AWS sends one.
func Op(fn func(r *http.Request) (any, error)) http.Handler { return operation(fn) }

// headersOnly is an answer of headers and no body, as S3 answers PutObject.
type headersOnly map[string]string

// op routes pattern to an operation named action (AWS's name for it).
func (m countingMux) op(pattern, action string, op operation) { m.route(pattern, action, op, nil) }

// api is the REST control plane of one service: every handler turns a request into a call of
// the service's operations and its answer into AWS's response.
type api struct{ *localiot.Service }

// countingMux counts the calls of each operation (APICalls).
type countingMux struct {
	*http.ServeMux
	s *localiot.Service
}

// route serves an operation: counted, allowed only to the roles its permission takes, and
// recorded in the audit log when it changes something (guard).
func (m countingMux) route(pattern, action string, h http.Handler, targets func(*http.Request) ([]string, error)) {
	n := m.s.Counter(pattern)
	g := guard(api{m.s}, action, permissionFor(pattern), targets, h)
	m.ServeMux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		g.ServeHTTP(w, r)
	})
}

// Route is an extra handler served beside the IoT paths, behind the same authentication.
type Route struct {
	Pattern string
	// Action names the operation in refusals and the audit log (CreateSoftwareUpdateJob).
	Action  string
	Handler http.Handler
	// Targets, when set, are the things and groups (ARNs or thing names) a change through this
	// route touches beyond those its path and body name: what a key limited to thing groups
	// must cover.
	Targets func(r *http.Request) ([]string, error)
}

// Handler serves svc's AWS IoT REST control plane (and any extra routes). Every request
// must carry a SigV4 signature made with the configured credentials.
func Handler(svc *localiot.Service, auth *SigV4Verifier, extra ...Route) http.Handler {
	s := api{svc}
	if auth.Keys == nil {
		auth.Keys = svc
	}
	if auth.Refused == nil {
		auth.Refused = func(r *http.Request, why string) {
			svc.AuditRefused(localiot.AuditEntry{Via: "rest", From: clientOf(r), Action: r.Method, Resource: r.URL.Path, Detail: why})
		}
	}
	mux := countingMux{ServeMux: http.NewServeMux(), s: svc}
	for _, r := range extra {
		mux.route(r.Pattern, r.Action, r.Handler, r.Targets)
	}
	mux.op("POST /things/{thingName}", "CreateThing", s.handleCreateThing)
	mux.op("GET /things/{thingName}", "DescribeThing", s.handleDescribeThing)
	mux.op("PUT /jobs/{jobId}", "CreateJob", s.handleCreateJob)
	mux.op("GET /jobs/{jobId}", "DescribeJob", s.handleDescribeJob)
	mux.op("GET /jobs/{jobId}/things", "ListJobExecutionsForJob", s.handleListJobExecutionsForJob)
	mux.op("PUT /jobs/{jobId}/cancel", "CancelJob", s.handleCancelJob)
	mux.op("GET /things/{thingName}/jobs/{jobId}", "DescribeJobExecution", s.handleDescribeJobExecution)
	mux.op("GET /jobs", "ListJobs", s.handleListJobs)
	mux.op("DELETE /jobs/{jobId}", "DeleteJob", s.handleDeleteJob)
	mux.op("GET /things/{thingName}/jobs", "ListJobExecutionsForThing", s.handleListJobExecutionsForThing)
	mux.op("PUT /things/{thingName}/jobs/{jobId}/cancel", "CancelJobExecution", s.handleCancelJobExecution)
	mux.op("GET /things", "ListThings", s.handleListThings)
	mux.op("PATCH /things/{thingName}", "UpdateThing", s.handleUpdateThing)
	mux.op("POST /thing-types/{thingTypeName}", "CreateThingType", s.handleCreateThingType)
	mux.op("GET /thing-types/{thingTypeName}", "DescribeThingType", s.handleDescribeThingType)
	mux.op("GET /thing-types", "ListThingTypes", s.handleListThingTypes)
	mux.op("POST /thing-types/{thingTypeName}/deprecate", "DeprecateThingType", s.handleDeprecateThingType)
	mux.op("DELETE /thing-types/{thingTypeName}", "DeleteThingType", s.handleDeleteThingType)
	mux.op("GET /endpoint", "DescribeEndpoint", s.handleDescribeEndpoint)
	mux.op("GET /things/{thingName}/thing-groups", "ListThingGroupsForThing", s.handleListThingGroupsForThing)
	mux.op("GET /thing-groups", "ListThingGroups", s.handleListThingGroups)
	mux.op("PATCH /thing-groups/{thingGroupName}", "UpdateThingGroup", s.handleUpdateThingGroup)
	mux.op("PUT /thing-groups/updateThingGroupsForThing", "UpdateThingGroupsForThing", s.handleUpdateThingGroupsForThing)
	mux.op("GET /jobs/{jobId}/job-document", "GetJobDocument", s.handleGetJobDocument)
	mux.op("DELETE /things/{thingName}/jobs/{jobId}/executionNumber/{executionNumber}", "DeleteJobExecution", s.handleDeleteJobExecution)
	mux.op("PATCH /jobs/{jobId}", "UpdateJob", s.handleUpdateJob)
	mux.op("POST /jobs/{jobId}/targets", "AssociateTargetsWithJob", s.handleAssociateTargetsWithJob)
	mux.op("PUT /job-templates/{jobTemplateId}", "CreateJobTemplate", s.handleCreateJobTemplate)
	mux.op("GET /job-templates/{jobTemplateId}", "DescribeJobTemplate", s.handleDescribeJobTemplate)
	mux.op("GET /job-templates", "ListJobTemplates", s.handleListJobTemplates)
	mux.op("DELETE /job-templates/{jobTemplateId}", "DeleteJobTemplate", s.handleDeleteJobTemplate)
	mux.op("GET /things/{thingName}/shadow", "GetThingShadow", s.handleGetThingShadow)
	mux.op("POST /things/{thingName}/shadow", "UpdateThingShadow", s.handleUpdateThingShadow)
	mux.op("DELETE /things/{thingName}/shadow", "DeleteThingShadow", s.handleDeleteThingShadow)
	mux.op("GET /api/things/shadow/ListNamedShadowsForThing/{thingName}", "ListNamedShadowsForThing", s.handleListNamedShadowsForThing)
	mux.op("DELETE /things/{thingName}", "DeleteThing", s.handleDeleteThing)
	mux.op("POST /thing-groups/{thingGroupName}", "CreateThingGroup", s.handleCreateThingGroup)
	mux.op("GET /thing-groups/{thingGroupName}", "DescribeThingGroup", s.handleDescribeThingGroup)
	mux.op("DELETE /thing-groups/{thingGroupName}", "DeleteThingGroup", s.handleDeleteThingGroup)
	mux.op("PUT /thing-groups/addThingToThingGroup", "AddThingToThingGroup", s.handleThingGroupMembership(true))
	mux.op("PUT /thing-groups/removeThingFromThingGroup", "RemoveThingFromThingGroup", s.handleThingGroupMembership(false))
	mux.op("GET /thing-groups/{thingGroupName}/things", "ListThingsInThingGroup", s.handleListThingsInThingGroup)
	mux.op("PUT /artifacts/{bucket}/{key...}", "PutObject", s.handleArtifactUpload)
	mux.route("DELETE /artifacts/{bucket}/{key...}", "DeleteObject", http.HandlerFunc(s.handleDeleteObject), nil)
	mux.route("GET /artifacts/{bucket}/{key...}", "GetObject", http.HandlerFunc(s.serveArtifact), nil)
	mux.route("GET /artifacts/{bucket}", "ListObjects", http.HandlerFunc(s.handleListObjects), nil)
	mux.op("PUT /tuf/{bucket}/{file}", "PutReleaseMetadata", s.handleTUFUpload)
	mux.op("POST /indexing/config", "UpdateIndexingConfiguration", s.handleUpdateIndexingConfiguration)
	mux.op("GET /indexing/config", "GetIndexingConfiguration", s.handleGetIndexingConfiguration)
	mux.op("GET /indices", "ListIndices", s.handleListIndices)
	mux.op("GET /indices/{indexName}", "DescribeIndex", s.handleDescribeIndex)
	mux.op("POST /indices/search", "SearchIndex", s.handleSearchIndex)
	mux.op("POST /indices/statistics", "GetStatistics", s.handleGetStatistics)
	mux.op("POST /indices/percentiles", "GetPercentiles", s.handleGetPercentiles)
	mux.op("POST /indices/cardinality", "GetCardinality", s.handleGetCardinality)
	mux.op("POST /indices/buckets", "GetBucketsAggregation", s.handleGetBucketsAggregation)
	mux.op("POST /keys-and-certificate", "CreateKeysAndCertificate", s.handleCreateKeysAndCertificate)
	mux.op("POST /certificates", "CreateCertificateFromCsr", s.handleCreateCertificateFromCsr)
	mux.op("POST /certificate/register", "RegisterCertificate", s.handleRegisterCertificate)
	mux.op("GET /certificates/{certificateId}", "DescribeCertificate", s.handleDescribeCertificate)
	mux.op("GET /certificates", "ListCertificates", s.handleListCertificates)
	mux.op("PUT /certificates/{certificateId}", "UpdateCertificate", s.handleUpdateCertificate)
	mux.op("DELETE /certificates/{certificateId}", "DeleteCertificate", s.handleDeleteCertificate)
	mux.op("PUT /things/{thingName}/principals", "AttachThingPrincipal", s.handleAttachThingPrincipal)
	mux.op("DELETE /things/{thingName}/principals", "DetachThingPrincipal", s.handleDetachThingPrincipal)
	mux.op("GET /things/{thingName}/principals", "ListThingPrincipals", s.handleListThingPrincipals)
	mux.op("GET /principals/things", "ListPrincipalThings", s.handleListPrincipalThings)
	mux.op("POST /dynamic-thing-groups/{thingGroupName}", "CreateDynamicThingGroup", s.handleCreateDynamicThingGroup)
	mux.op("PATCH /dynamic-thing-groups/{thingGroupName}", "UpdateDynamicThingGroup", s.handleUpdateDynamicThingGroup)
	mux.op("DELETE /dynamic-thing-groups/{thingGroupName}", "DeleteDynamicThingGroup", s.handleDeleteDynamicThingGroup)
	mux.op("POST /certificate/register-no-ca", "RegisterCertificateWithoutCA", s.handleRegisterCertificateWithoutCA)
	mux.op("POST /things", "RegisterThing", s.handleRegisterThing)
	mux.op("POST /provisioning-templates", "CreateProvisioningTemplate", s.handleCreateProvisioningTemplate)
	mux.op("GET /provisioning-templates", "ListProvisioningTemplates", s.handleListProvisioningTemplates)
	mux.op("GET /provisioning-templates/{templateName}", "DescribeProvisioningTemplate", s.handleDescribeProvisioningTemplate)
	mux.op("PATCH /provisioning-templates/{templateName}", "UpdateProvisioningTemplate", s.handleUpdateProvisioningTemplate)
	mux.op("DELETE /provisioning-templates/{templateName}", "DeleteProvisioningTemplate", s.handleDeleteProvisioningTemplate)
	mux.op("POST /provisioning-templates/{templateName}/versions", "CreateProvisioningTemplateVersion", s.handleCreateProvisioningTemplateVersion)
	mux.op("GET /provisioning-templates/{templateName}/versions", "ListProvisioningTemplateVersions", s.handleListProvisioningTemplateVersions)
	mux.op("GET /provisioning-templates/{templateName}/versions/{versionId}", "DescribeProvisioningTemplateVersion", s.handleDescribeProvisioningTemplateVersion)
	mux.op("DELETE /provisioning-templates/{templateName}/versions/{versionId}", "DeleteProvisioningTemplateVersion", s.handleDeleteProvisioningTemplateVersion)
	mux.op("POST /thing-registration-tasks", "StartThingRegistrationTask", s.handleStartThingRegistrationTask)
	mux.op("GET /thing-registration-tasks", "ListThingRegistrationTasks", s.handleListThingRegistrationTasks)
	mux.op("GET /thing-registration-tasks/{taskId}", "DescribeThingRegistrationTask", s.handleDescribeThingRegistrationTask)
	mux.op("GET /thing-registration-tasks/{taskId}/reports", "ListThingRegistrationTaskReports", s.handleListThingRegistrationTaskReports)
	mux.op("PUT /thing-registration-tasks/{taskId}/cancel", "StopThingRegistrationTask", s.handleStopThingRegistrationTask)
	// otaflow's own: who may do what, and the record of who did.
	mux.op("POST /access-keys", "CreateAccessKey", s.handleCreateAccessKey)
	mux.op("GET /access-keys", "ListAccessKeys", s.handleListAccessKeys)
	mux.op("PATCH /access-keys/{accessKeyId}", "UpdateAccessKey", s.handleUpdateAccessKey)
	mux.op("POST /access-keys/{accessKeyId}/rotate", "RotateAccessKey", s.handleRotateAccessKey)
	mux.op("DELETE /access-keys/{accessKeyId}", "DeleteAccessKey", s.handleDeleteAccessKey)
	mux.op("POST /users/{userName}", "CreateUser", s.handleCreateUser)
	mux.op("PATCH /users/{userName}", "UpdateUser", s.handleUpdateUser)
	mux.op("GET /users", "ListUsers", s.handleListUsers)
	mux.op("DELETE /users/{userName}", "DeleteUser", s.handleDeleteUser)
	mux.op("GET /whoami", "WhoAmI", s.handleWhoAmI)
	mux.op("GET /audit", "ListAuditEntries", s.handleListAuditEntries)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeUnknownOperation(w, fmt.Sprintf("%s %s is not an operation this jobs service serves (README lists them)", r.Method, r.URL.Path))
	})
	// Artifact downloads carry their own signature (a presigned URL), not SigV4.
	outer := http.NewServeMux()
	authed := auth.Middleware(mux)
	outer.HandleFunc("GET /artifacts/{bucket}/{key...}", s.handleArtifactDownload(authed))
	// Named here too, or the pattern above would redirect a bucket listing to ".../".
	outer.Handle("GET /artifacts/{bucket}", authed)
	// A browser on the console asks for an icon at the root: not an attempt to get in.
	outer.HandleFunc("GET /favicon.ico", http.NotFound)
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

func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// ReadFrom keeps the server's zero-copy path: http.ServeContent hands an artifact to its
// writer's ReadFrom, which net/http serves with sendfile. Without it, every artifact served
// through the recorder went through 32 KiB copies in user space (twice the syscalls, and CPU
// that a 2-core stack took from everything else while a device downloaded).
func (r *statusRecorder) ReadFrom(src io.Reader) (int64, error) {
	if rf, ok := r.ResponseWriter.(io.ReaderFrom); ok {
		return rf.ReadFrom(src)
	}
	return io.Copy(struct{ io.Writer }{r.ResponseWriter}, src)
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
	case localiot.CodeAccessDenied:
		return "AccessDeniedException", http.StatusForbidden
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

// ReadJSON reads a request's JSON body (at most maxRequestBytes) into v.
func ReadJSON(r *http.Request, v any) error { return readJSON(r, v) }

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
