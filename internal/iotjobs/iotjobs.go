// Package iotjobs is the AWS IoT Jobs device protocol over MQTT, as AWS's developer guide
// documents it ("Jobs device MQTT API operations"): the topics, the request and reply
// messages, the execution statuses and the error codes. The jobs service and the device agent
// both speak it through these types, so the two sides cannot drift apart.
package iotjobs

import (
	"encoding/json"
	"strings"
)

// TopicPrefix starts every thing's topics.
const TopicPrefix = "$aws/things/"

// Topic suffixes under $aws/things/{thing}/jobs/.
const (
	SuffixGetPending = "get"
	SuffixStartNext  = "start-next"
	SuffixNotify     = "notify"
	SuffixNotifyNext = "notify-next"
	// NextJobID names the next pending execution in {jobId}/get.
	NextJobID = "$next"
	accepted  = "/accepted"
	rejected  = "/rejected"
)

// Topic is $aws/things/{thing}/jobs/{suffix}.
func Topic(thing, suffix string) string { return TopicPrefix + thing + "/jobs/" + suffix }

// ShadowTopic is the topic of an operation ("update", "get", "delete", "update/accepted"…) on
// a thing's named shadow, or its classic (unnamed) shadow when name is "" (the Device Shadow
// service's MQTT API).
func ShadowTopic(thing, name, op string) string {
	if name == "" {
		return TopicPrefix + thing + "/shadow/" + op
	}
	return TopicPrefix + thing + "/shadow/name/" + name + "/" + op
}

// InventoryShadow is the named shadow in which otaflow's agent keeps its inventory: installed
// versions, its last job's outcome, and when it last checked in.
const InventoryShadow = "otaflow"

// HealthShadow is the named shadow in which the agent reports its health after an update
// (restarts, boots, health checks, application metrics), for the rollout's health gates.
const HealthShadow = "health"

// DescribeSuffix is {jobId}/get; UpdateSuffix is {jobId}/update.
func DescribeSuffix(jobID string) string { return jobID + "/get" }
func UpdateSuffix(jobID string) string   { return jobID + "/update" }

// InvalidTopicMessage is the message of the InvalidTopic reply to a publish on topic, a topic
// in the Jobs namespace that is no Jobs API.
func InvalidTopicMessage(topic string) string {
	return topic + " is not a Jobs API topic: use jobs/get, jobs/start-next, jobs/{jobId}/get or jobs/{jobId}/update"
}

// Accepted and Rejected are a request topic's reply topics.
func Accepted(topic string) string { return topic + accepted }
func Rejected(topic string) string { return topic + rejected }

// Op is a device request.
type Op int

const (
	OpUnknown    Op = iota
	OpGetPending    // get: the pending executions
	OpStartNext     // start-next: start (or get) the next pending execution
	OpDescribe      // {jobId}/get
	OpUpdate        // {jobId}/update
)

// String names the request as the Jobs MQTT API does.
func (o Op) String() string {
	switch o {
	case OpGetPending:
		return "get"
	case OpStartNext:
		return "start-next"
	case OpDescribe:
		return "describe"
	case OpUpdate:
		return "update"
	}
	return "unknown"
}

// Request is a parsed request topic.
type Request struct {
	Thing string
	Op    Op
	JobID string // OpDescribe and OpUpdate
}

// ParseRequestTopic parses a request topic. ok is false for a topic outside
// $aws/things/{thing}/jobs/; Op is OpUnknown for any other jobs topic (answered with
// InvalidTopic).
func ParseRequestTopic(topic string) (r Request, ok bool) {
	rest, ok := strings.CutPrefix(topic, TopicPrefix)
	if !ok {
		return r, false
	}
	thing, op, ok := strings.Cut(rest, "/jobs/")
	if !ok || thing == "" || strings.Contains(thing, "/") {
		return r, false
	}
	r.Thing = thing
	switch {
	case op == SuffixGetPending:
		r.Op = OpGetPending
	case op == SuffixStartNext:
		r.Op = OpStartNext
	case strings.HasSuffix(op, "/get") && !strings.Contains(strings.TrimSuffix(op, "/get"), "/"):
		r.Op, r.JobID = OpDescribe, strings.TrimSuffix(op, "/get")
	case strings.HasSuffix(op, "/update") && !strings.Contains(strings.TrimSuffix(op, "/update"), "/"):
		r.Op, r.JobID = OpUpdate, strings.TrimSuffix(op, "/update")
	}
	if r.JobID == "" && (r.Op == OpDescribe || r.Op == OpUpdate) {
		r.Op = OpUnknown
	}
	return r, true
}

// ReplyTopic tells a reply topic's request topic and whether the reply is an acceptance.
func ReplyTopic(topic string) (request string, isAccepted, ok bool) {
	if r, ok := strings.CutSuffix(topic, accepted); ok {
		return r, true, true
	}
	if r, ok := strings.CutSuffix(topic, rejected); ok {
		return r, false, true
	}
	return "", false, false
}

// Status is a job execution's status.
type Status string

const (
	StatusQueued     Status = "QUEUED"
	StatusInProgress Status = "IN_PROGRESS"
	StatusSucceeded  Status = "SUCCEEDED"
	StatusFailed     Status = "FAILED"
	StatusTimedOut   Status = "TIMED_OUT"
	StatusRejected   Status = "REJECTED"
	StatusRemoved    Status = "REMOVED"
	StatusCanceled   Status = "CANCELED"
)

// Terminal reports whether no further transition is allowed from s.
func (s Status) Terminal() bool { return s != StatusQueued && s != StatusInProgress }

// Limits of the Jobs device API (iot-jobs-data service model and AWS's MQTT Jobs API): a
// statusDetails key is 1-128 of [a-zA-Z0-9:_-], a value 1-1,024 characters without control
// characters; a clientToken is at most 64 bytes. The service enforces them, the agent fits its
// reports to them.
const (
	MaxDetailsKey   = 128
	MaxDetailsValue = 1024
	MaxClientToken  = 64
)

// ErrorCode is the code of a rejected reply.
type ErrorCode string

const (
	CodeInvalidTopic           ErrorCode = "InvalidTopic"
	CodeInvalidJSON            ErrorCode = "InvalidJson"
	CodeInvalidRequest         ErrorCode = "InvalidRequest"
	CodeInvalidStateTransition ErrorCode = "InvalidStateTransition"
	CodeResourceNotFound       ErrorCode = "ResourceNotFound"
	CodeVersionMismatch        ErrorCode = "VersionMismatch"
	CodeInternal               ErrorCode = "InternalError"
	CodeRequestThrottled       ErrorCode = "RequestThrottled"
	CodeTerminalStateReached   ErrorCode = "TerminalStateReached"
)

// Token is the client token every request and reply may carry; a reply echoes the request's.
type Token struct {
	ClientToken string `json:"clientToken,omitempty"`
}

// SetClientToken sets the token (see Message).
func (t *Token) SetClientToken(s string) { t.ClientToken = s }

// Message is a request a device sends: it carries a client token to match its reply.
type Message interface{ SetClientToken(string) }

// GetPendingRequest is the payload of get.
type GetPendingRequest struct {
	Token
}

// StartNextRequest is the payload of start-next.
type StartNextRequest struct {
	StatusDetails        map[string]string `json:"statusDetails,omitempty"`
	StepTimeoutInMinutes int64             `json:"stepTimeoutInMinutes,omitempty"`
	Token
}

// DescribeRequest is the payload of {jobId}/get.
type DescribeRequest struct {
	ExecutionNumber int64 `json:"executionNumber,omitempty"`
	// IncludeJobDocument defaults to true.
	IncludeJobDocument *bool `json:"includeJobDocument,omitempty"`
	Token
}

// UpdateRequest is the payload of {jobId}/update.
type UpdateRequest struct {
	Status                   Status            `json:"status"`
	StatusDetails            map[string]string `json:"statusDetails,omitempty"`
	ExpectedVersion          int64             `json:"expectedVersion,omitempty"`
	ExecutionNumber          int64             `json:"executionNumber,omitempty"`
	IncludeJobExecutionState bool              `json:"includeJobExecutionState,omitempty"`
	IncludeJobDocument       bool              `json:"includeJobDocument,omitempty"`
	StepTimeoutInMinutes     int64             `json:"stepTimeoutInMinutes,omitempty"`
	Token
}

// JobExecution is one thing's execution of a job.
type JobExecution struct {
	JobID         string            `json:"jobId"`
	ThingName     string            `json:"thingName"`
	JobDocument   json.RawMessage   `json:"jobDocument,omitempty"`
	Status        Status            `json:"status"`
	StatusDetails map[string]string `json:"statusDetails,omitempty"`
	QueuedAt      int64             `json:"queuedAt"`
	StartedAt     int64             `json:"startedAt,omitempty"`
	LastUpdatedAt int64             `json:"lastUpdatedAt"`
	// ApproximateSecondsBeforeTimedOut is how long an IN_PROGRESS execution has before it
	// times out, when it has a timeout.
	ApproximateSecondsBeforeTimedOut int64 `json:"approximateSecondsBeforeTimedOut,omitempty"`
	VersionNumber                    int64 `json:"versionNumber"`
	ExecutionNumber                  int64 `json:"executionNumber"`
}

// JobExecutionSummary is an entry of the pending lists.
type JobExecutionSummary struct {
	JobID           string `json:"jobId"`
	QueuedAt        int64  `json:"queuedAt"`
	StartedAt       int64  `json:"startedAt,omitempty"`
	LastUpdatedAt   int64  `json:"lastUpdatedAt"`
	VersionNumber   int64  `json:"versionNumber"`
	ExecutionNumber int64  `json:"executionNumber"`
}

// ExecutionState is what an update reply (and some errors) say of the execution.
type ExecutionState struct {
	Status        Status            `json:"status"`
	StatusDetails map[string]string `json:"statusDetails,omitempty"`
	VersionNumber int64             `json:"versionNumber"`
}

// GetPendingReply answers get.
type GetPendingReply struct {
	InProgressJobs []JobExecutionSummary `json:"inProgressJobs"`
	QueuedJobs     []JobExecutionSummary `json:"queuedJobs"`
	Timestamp      int64                 `json:"timestamp"`
	Token
}

// ExecutionReply answers start-next and {jobId}/get; Execution is absent when there is none.
type ExecutionReply struct {
	Execution *JobExecution `json:"execution,omitempty"`
	Timestamp int64         `json:"timestamp"`
	Token
}

// UpdateReply answers {jobId}/update.
type UpdateReply struct {
	ExecutionState *ExecutionState `json:"executionState,omitempty"`
	JobDocument    json.RawMessage `json:"jobDocument,omitempty"`
	Timestamp      int64           `json:"timestamp"`
	Token
}

// ErrorReply is every rejected reply.
type ErrorReply struct {
	Code           ErrorCode       `json:"code"`
	Message        string          `json:"message"`
	Timestamp      int64           `json:"timestamp"`
	ExecutionState *ExecutionState `json:"executionState,omitempty"`
	Token
}

func (e *ErrorReply) Error() string { return string(e.Code) + ": " + e.Message }

// NotifyNext is published on notify-next when a thing's next pending execution changes;
// Execution is absent when nothing is pending.
type NotifyNext struct {
	Timestamp int64         `json:"timestamp"`
	Execution *JobExecution `json:"execution,omitempty"`
}

// Notify is published on notify when a thing's pending lists change.
type Notify struct {
	Timestamp int64                            `json:"timestamp"`
	Jobs      map[Status][]JobExecutionSummary `json:"jobs"`
}
