package store

import (
	"slices"
	"time"

	"github.com/otaflow/otaflow/internal/iotjobs"
)

// The records the service keeps: what the store persists, as JSON (bbolt) or rows (PostgreSQL).

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
	// Principals are the ARNs of the certificates attached to the thing (certificates.go).
	Principals []string `json:"principals,omitempty"`
}

// Certificate is a device certificate the service knows (AWS IoT's certificates API): kept as
// a record of kind "certificate" under its ID.
type Certificate struct {
	ID     string `json:"certificateId"` // the SHA-256 of its DER, in hex
	Arn    string `json:"certificateArn"`
	PEM    string `json:"certificatePem"`
	Status string `json:"status"`
	// CAID is the ID of the CA certificate that signed it.
	CAID         string    `json:"caCertificateId,omitempty"`
	CreatedAt    time.Time `json:"creationDate"`
	LastModified time.Time `json:"lastModifiedDate"`
	// Version counts its changes (customerVersion); GenerationID changes with each.
	Version      int       `json:"customerVersion"`
	GenerationID string    `json:"generationId"`
	NotBefore    time.Time `json:"notBefore"`
	NotAfter     time.Time `json:"notAfter"`
	// Things are the things it is attached to.
	Things []string `json:"things,omitempty"`
	// Mode is SNI_ONLY for a certificate registered without a CA ("" is DEFAULT).
	Mode string `json:"certificateMode,omitempty"`
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

func (p *ProcessDetails) Add(s ExecutionStatus, n int) {
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

// ExecStatuses are every execution status.
var ExecStatuses = []ExecutionStatus{ExecQueued, ExecInProgress, ExecSucceeded, ExecFailed, ExecRejected, ExecTimedOut, ExecCanceled, ExecRemoved}

// Of is the count of executions in status s.
func (p ProcessDetails) Of(s ExecutionStatus) int {
	switch s {
	case ExecQueued:
		return p.Queued
	case ExecInProgress:
		return p.InProgress
	case ExecSucceeded:
		return p.Succeeded
	case ExecFailed:
		return p.Failed
	case ExecTimedOut:
		return p.TimedOut
	case ExecRejected:
		return p.Rejected
	case ExecRemoved:
		return p.Removed
	case ExecCanceled:
		return p.Canceled
	}
	return 0
}

// plus is p with k times q added to each counter (k = -1: the difference).
func (p ProcessDetails) plus(q ProcessDetails, k int) ProcessDetails {
	for _, s := range ExecStatuses {
		p.Add(s, k*q.Of(s))
	}
	return p
}

// Pending is how many executions have not reached a terminal state.
func (p ProcessDetails) Pending() int { return p.Queued + p.InProgress }

// Job is one IoT job and its targets.
type Job struct {
	ID       string `json:"jobId"`
	Arn      string `json:"jobArn"`
	Document string `json:"document"`
	// DocumentSource is the S3 URL the document was read from, if it was.
	DocumentSource string `json:"documentSource,omitempty"`
	Description    string `json:"description,omitempty"`
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
	Ramp        RampState        `json:"ramp,omitzero"`
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
	// Dynamic, for a dynamic thing group, is its query: its members are the things the fleet
	// index matches.
	Dynamic *DynamicQuery `json:"dynamic,omitempty"`
}

// DynamicQuery is a dynamic thing group's fleet index query.
type DynamicQuery struct {
	IndexName    string `json:"indexName"`
	QueryString  string `json:"queryString"`
	QueryVersion string `json:"queryVersion"`
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

// Deadline is when the execution times out, or zero.
func (e *Execution) Deadline() time.Time {
	d := e.InProgressDeadline
	if !e.StepDeadline.IsZero() && (d.IsZero() || e.StepDeadline.Before(d)) {
		d = e.StepDeadline
	}
	return d
}

// Shadow is one named shadow: reported and desired state with AWS's per-leaf metadata.
type Shadow struct {
	Name         string         `json:"name,omitempty"`
	Reported     map[string]any `json:"reported,omitempty"`
	Desired      map[string]any `json:"desired,omitempty"`
	ReportedMeta map[string]any `json:"reportedMeta,omitempty"`
	DesiredMeta  map[string]any `json:"desiredMeta,omitempty"`
	Version      int64          `json:"version"`
	Timestamp    int64          `json:"timestamp"`
	// Deleted is when the shadow was deleted (Unix seconds; 0: it exists): a shadow created
	// again within 48 hours carries on from its version, as AWS's does.
	Deleted int64 `json:"deleted,omitempty"`
}

// TokenRecord is what an idempotency token was first used for.
type TokenRecord struct {
	// Fingerprint identifies the request the token came with.
	Fingerprint string `json:"fingerprint"`
	// Value is what the request created (e.g. a rollout ID).
	Value string `json:"value"`
}

// AbortCriteria is one entry of abortConfig.criteriaList.
type AbortCriteria struct {
	FailureType               string  `json:"failureType"` // FAILED, REJECTED, TIMED_OUT or ALL
	Action                    string  `json:"action"`      // CANCEL
	ThresholdPercentage       float64 `json:"thresholdPercentage"`
	MinNumberOfExecutedThings int     `json:"minNumberOfExecutedThings"`
}

// ExponentialRate is jobExecutionsRolloutConfig.exponentialRate.
type ExponentialRate struct {
	BaseRatePerMinute    int     `json:"baseRatePerMinute"`
	IncrementFactor      float64 `json:"incrementFactor"`
	RateIncreaseCriteria struct {
		NumberOfNotifiedThings  int `json:"numberOfNotifiedThings,omitempty"`
		NumberOfSucceededThings int `json:"numberOfSucceededThings,omitempty"`
	} `json:"rateIncreaseCriteria"`
}

// RampState is how far a job's exponential rate has come.
type RampState struct {
	Rate int `json:"rate"`
	// Notified counts the executions offered since the job started; NotifiedAt and
	// SucceededAt are it and the job's succeeded count at the last increase.
	Notified    int `json:"notified,omitempty"`
	NotifiedAt  int `json:"notifiedAt,omitempty"`
	SucceededAt int `json:"succeededAt,omitempty"`
}

// Scheduling is a job's schedulingConfig: the members as given, and what they mean.
type Scheduling struct {
	StartTime          string              `json:"startTime,omitempty"`
	EndTime            string              `json:"endTime,omitempty"`
	EndBehavior        string              `json:"endBehavior,omitempty"`
	MaintenanceWindows []MaintenanceWindow `json:"maintenanceWindows,omitempty"`
	Start              time.Time           `json:"start,omitzero"`
	End                time.Time           `json:"end,omitzero"`
	// Ended is set once the end behavior has been applied.
	Ended bool `json:"ended,omitempty"`
}

// MaintenanceWindow is one recurring window: a cron expression (AWS's six fields, UTC) and a
// duration.
type MaintenanceWindow struct {
	StartTime         string `json:"startTime"`
	DurationInMinutes int    `json:"durationInMinutes"`
}

// SortBySeq orders executions as they were queued.
func SortBySeq(es []*Execution) {
	slices.SortFunc(es, func(a, b *Execution) int {
		switch {
		case a.Seq < b.Seq:
			return -1
		case a.Seq > b.Seq:
			return 1
		}
		return 0
	})
}
