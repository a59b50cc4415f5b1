// Package workflows holds otaflow's Temporal workflows. Everything here is deterministic: it
// imports only the Temporal SDK and its own types.
package workflows

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// TaskQueue is where rollout workflows and their activities run.
const TaskQueue = "otaflow-rollouts"

// RolloutWorkflowID is the workflow ID of a rollout: one rollout ID, one workflow.
func RolloutWorkflowID(rolloutID string) string { return "rollout-" + rolloutID }

// RolloutJobID is the IoT job a rollout creates. Deterministic, so creating it is idempotent.
func RolloutJobID(rolloutID string) string { return "otaflow-" + rolloutID }

// RolloutRequest asks for one over-the-air update of a set of devices (the seed's
// CreateSoftwareUpdateJob, plus otaflow's own controls).
type RolloutRequest struct {
	RolloutID string `json:"rolloutId"`
	// Targets are thing ARNs or thing names.
	Targets []string `json:"targets"`
	// Architecture and OperatingSystem of the targets; see SupportedPlatforms.
	Architecture    string `json:"architecture"`
	OperatingSystem string `json:"operatingSystem"`
	// SoftwareToUpdate is "core" or "ota_agent".
	SoftwareToUpdate string `json:"softwareToUpdate"`
	// Version to install.
	Version string `json:"version"`
	// S3URLSignerRole is the role ARN that signs artifact URLs (required, as in the seed).
	S3URLSignerRole string `json:"s3UrlSignerRole"`
	// UpdateAgentLogLevel is the agent's log level during the update; default ERROR.
	UpdateAgentLogLevel string `json:"updateAgentLogLevel,omitempty"`
	// Timeout bounds the wait for devices; when it passes the job is canceled and the
	// rollout fails. Default 30 minutes.
	Timeout time.Duration `json:"timeout,omitempty"`
	// PollInterval is how often device progress is read. Default 2 seconds.
	PollInterval time.Duration `json:"pollInterval,omitempty"`
	// SimulateFailures lists things whose simulated install should fail (demo and tests).
	SimulateFailures []string `json:"simulateFailures,omitempty"`
	// SimulateInstallTime is how long simulated installs take.
	SimulateInstallTime time.Duration `json:"simulateInstallTime,omitempty"`
}

// Platform is an operating system and architecture pair.
type Platform struct{ OS, Arch string }

// SupportedPlatforms are the combinations CreateSoftwareUpdateJob accepts (seed v1).
var SupportedPlatforms = []Platform{
	{"ubuntu", "x86_64"}, {"ubuntu", "aarch64"}, {"amazon_linux", "x86_64"},
	{"raspbian", "armv7l"}, {"raspbian", "armv6l"}, {"openwrt", "aarch64"}, {"openwrt", "armv7l"},
}

var (
	architectures = []string{"armv7l", "armv6l", "x86_64", "aarch64"}
	systems       = []string{"ubuntu", "amazon_linux", "raspbian", "openwrt"}
	softwares     = []string{"core", "ota_agent"}
	logLevels     = []string{"NONE", "TRACE", "DEBUG", "VERBOSE", "INFO", "WARN", "ERROR", "FATAL"}
)

func platformList() string {
	var s []string
	for _, p := range SupportedPlatforms {
		s = append(s, p.OS+"/"+p.Arch)
	}
	return strings.Join(s, ", ")
}

// Validate checks a request without any I/O; it fills in defaults. Every problem is reported
// at once, each saying what to change.
func (r *RolloutRequest) Validate() error {
	var problems []string
	add := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	if r.RolloutID == "" {
		add("rollout ID is empty")
	} else if !validID(r.RolloutID) {
		add("rollout ID %q may only contain a-z A-Z 0-9 _ - and be at most 56 characters", r.RolloutID)
	}
	if len(r.Targets) == 0 {
		add("no update targets: give at least one thing ARN (arn:aws:iot:REGION:ACCOUNT:thing/NAME) or thing name")
	}
	for _, t := range r.Targets {
		if t == "" {
			add("an update target is empty")
		}
	}
	archOK := slices.Contains(architectures, r.Architecture)
	osOK := slices.Contains(systems, r.OperatingSystem)
	if !archOK {
		add("architecture %q is invalid: use one of %s", r.Architecture, strings.Join(architectures, ", "))
	}
	if !osOK {
		add("operating system %q is invalid: use one of %s", r.OperatingSystem, strings.Join(systems, ", "))
	}
	if archOK && osOK && !slices.Contains(SupportedPlatforms, Platform{r.OperatingSystem, r.Architecture}) {
		add("%s/%s is not a supported combination: use one of %s", r.OperatingSystem, r.Architecture, platformList())
	}
	if !slices.Contains(softwares, r.SoftwareToUpdate) {
		add("software to update %q is invalid: use core or ota_agent", r.SoftwareToUpdate)
	}
	if r.Version == "" {
		add("no version to install")
	}
	if r.S3URLSignerRole == "" {
		add("no S3 URL signer role: give the ARN of the role that presigns artifact URLs (arn:aws:iam::ACCOUNT:role/NAME)")
	} else if !strings.HasPrefix(r.S3URLSignerRole, "arn:") || !strings.Contains(r.S3URLSignerRole, ":role/") {
		add("S3 URL signer role %q is not an IAM role ARN (arn:aws:iam::ACCOUNT:role/NAME)", r.S3URLSignerRole)
	}
	if r.UpdateAgentLogLevel == "" {
		r.UpdateAgentLogLevel = "ERROR"
	} else if !slices.Contains(logLevels, r.UpdateAgentLogLevel) {
		add("update agent log level %q is invalid: use one of %s", r.UpdateAgentLogLevel, strings.Join(logLevels, ", "))
	}
	if r.Timeout < 0 || r.PollInterval < 0 {
		add("timeout and poll interval must not be negative")
	}
	if r.Timeout == 0 {
		r.Timeout = 30 * time.Minute
	}
	if r.PollInterval == 0 {
		r.PollInterval = 2 * time.Second
	}
	if len(problems) > 0 {
		return fmt.Errorf("invalid rollout request: %s", strings.Join(problems, "; "))
	}
	return nil
}

func validID(s string) bool {
	if len(s) > 56 {
		return false
	}
	for _, c := range s {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// Counts are the devices in each execution state (AWS's jobProcessDetails).
type Counts struct {
	Queued     int `json:"queued"`
	InProgress int `json:"inProgress"`
	Succeeded  int `json:"succeeded"`
	Failed     int `json:"failed"`
	Rejected   int `json:"rejected"`
	TimedOut   int `json:"timedOut"`
	Canceled   int `json:"canceled"`
	Removed    int `json:"removed"`
}

// Total is the number of executions counted.
func (c Counts) Total() int {
	return c.Queued + c.InProgress + c.Succeeded + c.Failed + c.Rejected + c.TimedOut + c.Canceled + c.Removed
}

// Pending is the number of executions not yet in a terminal state.
func (c Counts) Pending() int { return c.Queued + c.InProgress }

// Rollout states.
const (
	StateValidating = "VALIDATING"
	StateRunning    = "RUNNING"
	StateSucceeded  = "SUCCEEDED"
	StateFailed     = "FAILED"
	StateTimedOut   = "TIMED_OUT"
	StateCanceled   = "CANCELED"
	StateInvalid    = "INVALID"
)

// RolloutResult is a rollout's outcome, and its progress while it runs (the status query).
type RolloutResult struct {
	RolloutID string `json:"rolloutId"`
	JobID     string `json:"jobId,omitempty"`
	JobArn    string `json:"jobArn,omitempty"`
	Version   string `json:"version"`
	State     string `json:"state"`
	Devices   int    `json:"devices"`
	Counts    Counts `json:"counts"`
	Message   string `json:"message,omitempty"`
}

// Activity inputs and outputs.
type (
	// ResolveTargetsResult lists the things a rollout targets.
	ResolveTargetsResult struct {
		ThingArns []string `json:"thingArns"`
	}
	// CreateJobInput creates a rollout's IoT job.
	CreateJobInput struct {
		JobID     string         `json:"jobId"`
		ThingArns []string       `json:"thingArns"`
		Request   RolloutRequest `json:"request"`
	}
	// CreateJobResult names the created job.
	CreateJobResult struct {
		JobID  string `json:"jobId"`
		JobArn string `json:"jobArn"`
	}
	// AwaitJobInput waits for a job's executions to finish.
	AwaitJobInput struct {
		JobID        string        `json:"jobId"`
		PollInterval time.Duration `json:"pollInterval"`
	}
	// CancelJobInput cancels a job, force-canceling executions in progress.
	CancelJobInput struct {
		JobID  string `json:"jobId"`
		Reason string `json:"reason"`
	}
)
