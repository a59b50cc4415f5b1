// Package jobs is otaflow's local stand-in for AWS IoT Jobs: the same REST control plane
// (so aws-sdk-go-v2's iot client and the AWS CLI work against it unchanged) and the same MQTT
// Jobs topics for devices. State is persisted in a bbolt file (or, for replicas, PostgreSQL),
// so a restart loses nothing.
package localiot

import (
	"fmt"
	"time"

	"github.com/otaflow/otaflow/internal/iotjobs"
)

// ExecutionStatus is the status of one thing's execution of a job, with AWS's names.
type ExecutionStatus = iotjobs.Status

const (
	ExecQueued     = iotjobs.StatusQueued
	ExecInProgress = iotjobs.StatusInProgress
	ExecSucceeded  = iotjobs.StatusSucceeded
	ExecFailed     = iotjobs.StatusFailed
	ExecTimedOut   = iotjobs.StatusTimedOut
	ExecRejected   = iotjobs.StatusRejected
	ExecRemoved    = iotjobs.StatusRemoved
	ExecCanceled   = iotjobs.StatusCanceled
)

// JobStatus is the status of a whole job, with AWS's names.
type JobStatus string

const (
	JobInProgress JobStatus = "IN_PROGRESS"
	JobCanceled   JobStatus = "CANCELED"
	JobCompleted  JobStatus = "COMPLETED"
)

// Thing is a registered device.
type Thing struct {
	Name       string            `json:"thingName"`
	Arn        string            `json:"thingArn"`
	ID         string            `json:"thingId"`
	Attributes map[string]string `json:"attributes,omitempty"`
	// TypeName is the thing's thing type, if any.
	TypeName  string    `json:"thingTypeName,omitempty"`
	Version   int64     `json:"version"`
	CreatedAt time.Time `json:"createdAt"`
	// Shadows are the thing's named device shadows (shadow.go).
	Shadows map[string]*Shadow `json:"shadows,omitempty"`
}

// ProcessDetails are a job's per-state execution counters (AWS's jobProcessDetails).
type ProcessDetails struct {
	Canceled   int `json:"numberOfCanceledThings"`
	Succeeded  int `json:"numberOfSucceededThings"`
	Failed     int `json:"numberOfFailedThings"`
	Rejected   int `json:"numberOfRejectedThings"`
	Queued     int `json:"numberOfQueuedThings"`
	InProgress int `json:"numberOfInProgressThings"`
	Removed    int `json:"numberOfRemovedThings"`
	TimedOut   int `json:"numberOfTimedOutThings"`
}

func (p *ProcessDetails) add(s ExecutionStatus, n int) {
	switch s {
	case ExecQueued:
		p.Queued += n
	case ExecInProgress:
		p.InProgress += n
	case ExecSucceeded:
		p.Succeeded += n
	case ExecFailed:
		p.Failed += n
	case ExecTimedOut:
		p.TimedOut += n
	case ExecRejected:
		p.Rejected += n
	case ExecRemoved:
		p.Removed += n
	case ExecCanceled:
		p.Canceled += n
	}
}

// Pending is how many executions have not reached a terminal state.
func (p ProcessDetails) Pending() int { return p.Queued + p.InProgress }

// Job is one IoT job and its targets.
type Job struct {
	ID          string `json:"jobId"`
	Arn         string `json:"jobArn"`
	Document    string `json:"document"`
	Description string `json:"description,omitempty"`
	// Targets are stored apart from the job (see Tx.putJobTargets): every device operation
	// reads the job, and decoding thousands of targets each time made a wave quadratic.
	Targets         []string       `json:"-"`
	TargetSelection string         `json:"targetSelection"`
	Status          JobStatus      `json:"status"`
	ForceCanceled   bool           `json:"forceCanceled,omitempty"`
	Comment         string         `json:"comment,omitempty"`
	ReasonCode      string         `json:"reasonCode,omitempty"`
	CreatedAt       time.Time      `json:"createdAt"`
	LastUpdatedAt   time.Time      `json:"lastUpdatedAt"`
	CompletedAt     time.Time      `json:"completedAt,omitzero"`
	Counts          ProcessDetails `json:"jobProcessDetails"`
	// TargetGroups are the thing groups among the targets; a CONTINUOUS job queues an
	// execution for a thing that joins one of them later.
	TargetGroups []string `json:"targetGroups,omitempty"`
	// InProgressTimeout moves an execution that stays IN_PROGRESS longer to TIMED_OUT.
	InProgressTimeout time.Duration `json:"inProgressTimeout,omitempty"`
	// Retry says how many times a FAILED or TIMED_OUT execution is queued again.
	Retry []RetryCriteria `json:"retry,omitempty"`
	// Presign configures ${aws:iot:s3-presigned-url:...} substitution in the document.
	Presign *PresignConfig `json:"presign,omitempty"`
	// MaxPerMinute (jobExecutionsRolloutConfig.maximumPerMinute) limits how many executions
	// are released to devices per minute; the rest wait, QUEUED but not offered.
	MaxPerMinute int       `json:"maxPerMinute,omitempty"`
	RateWindow   time.Time `json:"rateWindow,omitzero"`
	RateReleased int       `json:"rateReleased,omitempty"`
	HeldCount    int       `json:"held,omitempty"`
	// Abort is abortConfig.criteriaList (abort.go).
	Abort []AbortCriteria `json:"abort,omitempty"`
	// Scheduling is schedulingConfig (schedule.go).
	Scheduling *Scheduling `json:"scheduling,omitempty"`
	// Exponential is jobExecutionsRolloutConfig.exponentialRate; Ramp its progress (rate.go).
	Exponential *ExponentialRate `json:"exponentialRate,omitempty"`
	Ramp        rampState        `json:"ramp,omitzero"`
}

// RetryCriteria is one entry of jobExecutionsRetryConfig.criteriaList.
type RetryCriteria struct {
	FailureType     string `json:"failureType"` // FAILED, TIMED_OUT or ALL
	NumberOfRetries int    `json:"numberOfRetries"`
}

// PresignConfig is a job's presignedUrlConfig.
type PresignConfig struct {
	RoleArn      string `json:"roleArn"`
	ExpiresInSec int64  `json:"expiresInSec"`
}

// ThingGroup is a static thing group; groups nest through Parent.
type ThingGroup struct {
	Name      string    `json:"thingGroupName"`
	Arn       string    `json:"thingGroupArn"`
	ID        string    `json:"thingGroupId"`
	Parent    string    `json:"parentGroupName,omitempty"`
	CreatedAt time.Time `json:"creationDate"`
	Version   int64     `json:"version"`
	// Description and Attributes are the group's thingGroupProperties.
	Description string            `json:"thingGroupDescription,omitempty"`
	Attributes  map[string]string `json:"attributes,omitempty"`
}

// Execution is one thing's execution of one job.
type Execution struct {
	JobID           string            `json:"jobId"`
	ThingName       string            `json:"thingName"`
	Status          ExecutionStatus   `json:"status"`
	StatusDetails   map[string]string `json:"statusDetails,omitempty"`
	QueuedAt        time.Time         `json:"queuedAt"`
	StartedAt       time.Time         `json:"startedAt,omitzero"`
	LastUpdatedAt   time.Time         `json:"lastUpdatedAt"`
	VersionNumber   int64             `json:"versionNumber"`
	ExecutionNumber int64             `json:"executionNumber"`
	ForceCanceled   bool              `json:"forceCanceled,omitempty"`
	// seq orders a thing's queue: jobs are offered in the order they were queued.
	Seq uint64 `json:"seq"`
	// InProgressDeadline and StepDeadline, when set, time the execution out.
	InProgressDeadline time.Time `json:"inProgressDeadline,omitzero"`
	StepDeadline       time.Time `json:"stepDeadline,omitzero"`
	// Held executions wait for the job's rate limit to release them.
	Held bool `json:"held,omitempty"`
	// RetryAttempt counts the retries so far; Previous keeps the earlier executions.
	RetryAttempt int                 `json:"retryAttempt,omitempty"`
	Previous     []PreviousExecution `json:"previous,omitempty"`
}

// PreviousExecution is an execution that a retry replaced.
type PreviousExecution struct {
	ExecutionNumber int64             `json:"executionNumber"`
	Status          ExecutionStatus   `json:"status"`
	StatusDetails   map[string]string `json:"statusDetails,omitempty"`
	QueuedAt        time.Time         `json:"queuedAt"`
	StartedAt       time.Time         `json:"startedAt,omitzero"`
	LastUpdatedAt   time.Time         `json:"lastUpdatedAt"`
	VersionNumber   int64             `json:"versionNumber"`
}

// deadline is when the execution times out, or zero.
func (e *Execution) deadline() time.Time {
	d := e.InProgressDeadline
	if !e.StepDeadline.IsZero() && (d.IsZero() || e.StepDeadline.Before(d)) {
		d = e.StepDeadline
	}
	return d
}

// ErrorCode names an error the way AWS does. The REST plane sends the exception name, the MQTT
// plane the Jobs error code.
type ErrorCode = iotjobs.ErrorCode

const (
	CodeInvalidRequest         = iotjobs.CodeInvalidRequest
	CodeResourceNotFound       = iotjobs.CodeResourceNotFound
	CodeInvalidStateTransition = iotjobs.CodeInvalidStateTransition
	CodeVersionMismatch        = iotjobs.CodeVersionMismatch
	CodeTerminalStateReached   = iotjobs.CodeTerminalStateReached
	CodeInternal               = iotjobs.CodeInternal
	// REST-only codes: the MQTT plane answers them as InvalidRequest.
	CodeAlreadyExists ErrorCode = "ResourceAlreadyExists"
	CodeUnauthorized  ErrorCode = "Unauthorized"
	CodeConflict      ErrorCode = "Conflict"
	// CodeResourceConflict is AWS's ConflictException (a job template that exists).
	CodeResourceConflict ErrorCode = "ResourceConflict"
	CodeLimitExceeded    ErrorCode = "LimitExceeded"
	// Fleet indexing's: a query the syntax refuses, an aggregation on a field it cannot use.
	CodeInvalidQuery       ErrorCode = "InvalidQuery"
	CodeInvalidAggregation ErrorCode = "InvalidAggregation"
)

// Error is a service error that both planes know how to send.
type Error struct {
	Code    ErrorCode
	Message string
	// State is the execution's current state, sent with VersionMismatch and friends so a device
	// can resynchronise.
	State *Execution
}

func (e *Error) Error() string { return fmt.Sprintf("%s: %s", e.Code, e.Message) }

func errorf(code ErrorCode, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}
