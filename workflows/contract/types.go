package contract

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/otaflow/otaflow/internal/arn"
	"github.com/otaflow/otaflow/internal/jobdoc"
	"github.com/otaflow/otaflow/internal/platform"
)

// RolloutRequest asks for one over-the-air update of a set of devices (the seed's
// CreateSoftwareUpdateJob, plus otaflow's own controls).
type RolloutRequest struct {
	RolloutID string `json:"rolloutId"`
	// Targets are thing ARNs or thing names.
	Targets []string `json:"targets"`
	// Architecture and OperatingSystem of the targets; see platform.Supported.
	Architecture    string `json:"architecture"`
	OperatingSystem string `json:"operatingSystem"`
	// SoftwareToUpdate is "core" or "ota_agent".
	SoftwareToUpdate string `json:"softwareToUpdate"`
	// Version to install. Empty with LatestReleaseBucket: the newest release published there
	// when the rollout starts (what a schedule wants: every run the latest).
	Version string `json:"version"`
	// LatestReleaseBucket, with no Version, makes the rollout install the newest release of
	// SoftwareToUpdate published (signed as a TUF target) to this bucket when it starts.
	LatestReleaseBucket string `json:"latestReleaseBucket,omitempty"`
	// S3URLSignerRole is the role ARN that signs artifact URLs (required, as in the seed).
	S3URLSignerRole string `json:"s3UrlSignerRole"`
	// UpdateAgentLogLevel is the agent's log level during the update; default ERROR.
	UpdateAgentLogLevel string `json:"updateAgentLogLevel,omitempty"`
	// Timeout bounds the device work: the time waves run. Waits for approval, a pause or a
	// maintenance window do not count. When it passes the job is canceled and the rollout
	// ends TIMED_OUT. Default 30 minutes.
	Timeout time.Duration `json:"timeout,omitempty"`
	// PollInterval is how often device progress is read. Default 2 seconds.
	PollInterval time.Duration `json:"pollInterval,omitempty"`
	// Artifact is where devices download the release; without one, a device switches to the
	// version only if it is still in its slot. `starter release publish` signs the release
	// (with its health check and restart policy) as a TUF target and uploads it.
	Artifact *Artifact `json:"artifact,omitempty"`
	// BakeTime: a device counts as updated only after it stayed healthy this long after
	// installing; one that fails its health check rolls itself back and reports FAILED.
	BakeTime time.Duration `json:"bakeTime,omitempty"`
	// DownloadBytesPerSecond caps each device's download rate (0: no cap), so an update does
	// not starve the device's own traffic; a device's own lower cap stands.
	DownloadBytesPerSecond int64 `json:"downloadBytesPerSecond,omitempty"`
	// NoDelta leaves the chunk store out of the job document: every device downloads the full
	// artifact (agents from before delta updates refuse a document that names it).
	NoDelta bool `json:"noDelta,omitempty"`

	// Waves splits the targets: a comma-separated list of cumulative counts or percentages,
	// e.g. "1,10%,50%,100%" (a canary, then 10 %, half, everything). Default: one wave.
	Waves string `json:"waves,omitempty"`
	// SuccessThresholdPercent is the share of a wave's devices that must succeed before the
	// next wave starts (default 100).
	SuccessThresholdPercent float64 `json:"successThresholdPercent,omitempty"`
	// Abort stops the rollout as soon as a wave crosses it, without waiting for the wave.
	Abort *AbortCriteria `json:"abort,omitempty"`
	// ApproveWaves makes the rollout wait for an approval before every wave after the first.
	ApproveWaves bool `json:"approveWaves,omitempty"`
	// RequireSecondApprover is the two-person rule: each approval must name an approver other
	// than StartedBy.
	RequireSecondApprover bool `json:"requireSecondApprover,omitempty"`
	// StartedBy is who started the rollout (an access key, a console user), as the jobs
	// service authenticated it; empty for rollouts started on Temporal directly.
	StartedBy string `json:"startedBy,omitempty"`
	// OnFailure is what happens to devices already updated when the rollout aborts or is
	// canceled: ROLLBACK to the version each had, or DO_NOTHING (default).
	OnFailure string `json:"onFailure,omitempty"`
	// DeviceTimeout moves a device that stays IN_PROGRESS longer to TIMED_OUT (0: none).
	DeviceTimeout time.Duration `json:"deviceTimeout,omitempty"`
	// Retries is how many times a FAILED or TIMED_OUT device is retried.
	Retries int `json:"retries,omitempty"`
	// RateLimitPerMinute caps how many devices per minute each wave's job reaches (0: no cap).
	RateLimitPerMinute int `json:"rateLimitPerMinute,omitempty"`
	// Window, when set, lets waves start only inside maintenance windows.
	Window *MaintenanceWindow `json:"window,omitempty"`
	// Health, when set, watches each wave's devices after they updated and stops the rollout
	// when their health breaches its criteria (health.go).
	Health *HealthGate `json:"health,omitempty"`
	// Webhooks are told what happens to the rollout (webhook.go).
	Webhooks []string `json:"webhooks,omitempty"`
	// RolloutIDFromWorkflowID derives the rollout ID from the workflow ID, so that every run of
	// a Temporal Schedule (whose workflow IDs get the run's time appended) is its own rollout.
	RolloutIDFromWorkflowID bool `json:"rolloutIdFromWorkflowId,omitempty"`
	// Resume carries a rollout's progress across continue-as-new; users leave it empty.
	Resume *RolloutResume `json:"resume,omitempty"`
}

// RolloutResume is the state a rollout hands to its next run when it continues as new.
type RolloutResume struct {
	Result   RolloutResult `json:"result"`
	Approved int           `json:"approved"`
	Deadline time.Time     `json:"deadline"`
}

// MaintenanceWindow opens at every activation of Cron (in TimeZone) for Duration.
type MaintenanceWindow struct {
	Cron     string        `json:"cron"`
	Duration time.Duration `json:"duration"`
	TimeZone string        `json:"timeZone,omitempty"`
}

// WindowState says whether a maintenance window is open at a moment, and when it next
// opens or closes.
type WindowState struct {
	Open     bool      `json:"open"`
	OpensAt  time.Time `json:"opensAt"`
	ClosesAt time.Time `json:"closesAt"`
}

// WindowInput asks for the window's state at At.
type WindowInput struct {
	Window MaintenanceWindow `json:"window"`
	At     time.Time         `json:"at"`
}

// RolloutIDFor turns a workflow ID into a valid rollout ID: "rollout-" dropped, characters
// outside a-z A-Z 0-9 _ - replaced, at most 56 characters kept (from the end, where a
// schedule's run time is).
func RolloutIDFor(workflowID string) string {
	id := []byte(strings.TrimPrefix(workflowID, "rollout-"))
	for i, c := range id {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-') {
			id[i] = '-'
		}
	}
	if len(id) > 56 {
		id = id[len(id)-56:]
	}
	return string(id)
}

// AbortCriteria abort a rollout when, in a wave, at least MinExecuted devices have finished
// and ThresholdPercent of them ended in FailureType (FAILED, REJECTED, TIMED_OUT or ALL).
type AbortCriteria struct {
	FailureType      string  `json:"failureType"`
	ThresholdPercent float64 `json:"thresholdPercent"`
	MinExecuted      int     `json:"minExecuted"`
}

// Failure policies.
const (
	OnFailureRollback  = "ROLLBACK"
	OnFailureDoNothing = "DO_NOTHING"
)

// Crossed reports whether counts cross the criteria.
func (a *AbortCriteria) Crossed(c Counts) (bool, string) {
	if a == nil {
		return false, ""
	}
	executed := c.Succeeded + c.Failed + c.Rejected + c.TimedOut
	if executed == 0 || executed < a.MinExecuted {
		return false, ""
	}
	var bad int
	switch a.FailureType {
	case "FAILED":
		bad = c.Failed
	case "REJECTED":
		bad = c.Rejected
	case "TIMED_OUT":
		bad = c.TimedOut
	default:
		bad = c.Failed + c.Rejected + c.TimedOut
	}
	pct := 100 * float64(bad) / float64(executed)
	if pct >= a.ThresholdPercent {
		return true, fmt.Sprintf("%d of %d finished devices ended %s (%.0f%%, abort threshold %.0f%%)", bad, executed, a.FailureType, pct, a.ThresholdPercent)
	}
	return false, ""
}

// WaveSize is one step of a wave plan: an absolute count, or a percentage of the targets.
type WaveSize struct {
	Count   int     `json:"count,omitempty"`
	Percent float64 `json:"percent,omitempty"`
}

// ParseWaves reads a wave list such as "1,10%,50%,100%".
func ParseWaves(spec string) ([]WaveSize, error) {
	if strings.TrimSpace(spec) == "" {
		return []WaveSize{{Percent: 100}}, nil
	}
	var out []WaveSize
	for _, part := range strings.Split(spec, ",") {
		part = strings.TrimSpace(part)
		var w WaveSize
		if p, ok := strings.CutSuffix(part, "%"); ok {
			v, err := strconv.ParseFloat(p, 64)
			if err != nil || v <= 0 || v > 100 {
				return nil, fmt.Errorf("wave %q: a percentage must be above 0%% and at most 100%%", part)
			}
			w.Percent = v
		} else {
			v, err := strconv.Atoi(part)
			if err != nil || v <= 0 {
				return nil, fmt.Errorf("wave %q: use a device count (e.g. 1) or a percentage (e.g. 10%%)", part)
			}
			w.Count = v
		}
		out = append(out, w)
	}
	return out, nil
}

// PlanWaves turns a wave list into the cumulative number of devices updated after each wave,
// for n targets. Waves that add no device are dropped; the last wave always reaches n.
func PlanWaves(n int, sizes []WaveSize) []int {
	var cum []int
	last := 0
	for _, w := range sizes {
		c := w.Count
		if w.Percent > 0 {
			c = int(math.Ceil(w.Percent * float64(n) / 100))
		}
		c = min(c, n)
		if c > last {
			cum = append(cum, c)
			last = c
		}
	}
	if last < n {
		cum = append(cum, n)
	}
	return cum
}

var (
	softwares = []string{"core", "ota_agent"}
	logLevels = []string{"NONE", "TRACE", "DEBUG", "VERBOSE", "INFO", "WARN", "ERROR", "FATAL"}
)

// Artifact is a release's .tar.gz that devices download through a presigned URL. What they
// check it against (length, digest) comes from the signed TUF metadata, not from here.
type Artifact struct {
	// URL is an S3 URL (s3://bucket/key or https://s3.amazonaws.com/bucket/key); the job
	// document carries it as ${aws:iot:s3-presigned-url:URL}.
	URL string `json:"url"`
}

func isHex(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for _, c := range s {
		if !strings.ContainsRune("0123456789abcdefABCDEF", c) {
			return false
		}
	}
	return true
}

// ValidateBeforeRelease is Validate for a request whose version is still to be picked from
// the published releases (so an empty version is no error yet).
func (r RolloutRequest) ValidateBeforeRelease() error {
	if r.Version == "" && r.LatestReleaseBucket == "" {
		r.Version = "0.0.0"
	}
	return r.Validate()
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
	if r.RequireSecondApprover && !r.ApproveWaves {
		add("the two-person rule (--two-person) is about approving waves: add --approve-waves")
	}
	for _, t := range r.Targets {
		if _, err := arn.ParseTarget(t); err != nil {
			add("%v", err)
		}
	}
	for _, p := range platform.Problems(r.OperatingSystem, r.Architecture) {
		add("%s", p)
	}
	if !slices.Contains(softwares, r.SoftwareToUpdate) {
		add("software to update %q is invalid: use core or ota_agent", r.SoftwareToUpdate)
	}
	if r.Version == "" && r.LatestReleaseBucket == "" {
		add("no version to install: give one, or roll out the newest published release (latest)")
	} else if r.Version == "" {
		if r.Artifact != nil {
			add("an artifact needs its version: the newest published release brings its own artifact")
		}
	} else if err := jobdoc.ValidVersion(r.Version); err != nil {
		add("%v", err)
	}
	if r.S3URLSignerRole == "" {
		add("no S3 URL signer role: give the ARN of the role that presigns artifact URLs (arn:aws:iam::ACCOUNT:role/NAME)")
	} else if !arn.IsRole(r.S3URLSignerRole) {
		add("S3 URL signer role %q is not an IAM role ARN (arn:aws:iam::ACCOUNT:role/NAME)", r.S3URLSignerRole)
	}
	if a := r.Artifact; a != nil {
		if !strings.HasPrefix(a.URL, "s3://") && !strings.HasPrefix(a.URL, "https://") {
			add("artifact URL %q must be an S3 URL (s3://BUCKET/KEY or https://s3.amazonaws.com/BUCKET/KEY)", a.URL)
		}
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
	if _, err := ParseWaves(r.Waves); err != nil {
		add("%v", err)
	}
	for _, p := range checkWebhooks(r.Webhooks) {
		add("%s", p)
	}
	if r.SuccessThresholdPercent < 0 || r.SuccessThresholdPercent > 100 {
		add("success threshold must be from 0 to 100 percent")
	}
	if r.SuccessThresholdPercent == 0 {
		r.SuccessThresholdPercent = 100
	}
	if a := r.Abort; a != nil {
		if !slices.Contains([]string{"FAILED", "REJECTED", "TIMED_OUT", "ALL"}, a.FailureType) {
			add("abort failure type %q is invalid: use FAILED, REJECTED, TIMED_OUT or ALL", a.FailureType)
		}
		if a.ThresholdPercent <= 0 || a.ThresholdPercent > 100 {
			add("abort threshold must be above 0 and at most 100 percent")
		}
		if a.MinExecuted < 0 {
			add("abort minimum executed must not be negative")
		}
	}
	switch r.OnFailure {
	case "":
		r.OnFailure = OnFailureDoNothing
	case OnFailureRollback, OnFailureDoNothing:
	default:
		add("on-failure policy %q is invalid: use ROLLBACK or DO_NOTHING", r.OnFailure)
	}
	if w := r.Window; w != nil && (w.Cron == "" || w.Duration < time.Minute) {
		add("a maintenance window needs a cron expression and a duration of at least a minute")
	}
	if r.RateLimitPerMinute < 0 || r.RateLimitPerMinute > 1000 {
		add("rate limit must be from 1 to 1000 devices per minute (AWS IoT's range)")
	}
	if r.DownloadBytesPerSecond < 0 {
		add("download bytes per second must not be negative (0 is no cap)")
	}
	if r.BakeTime < 0 || r.BakeTime > 7*24*time.Hour {
		add("bake time must be from 0 to a week")
	}
	if r.Retries < 0 || r.Retries > 10 {
		add("retries must be from 0 to 10")
	}
	if r.DeviceTimeout < 0 || (r.DeviceTimeout > 0 && r.DeviceTimeout < time.Minute) {
		add("device timeout must be at least one minute (AWS IoT counts it in minutes)")
	}
	if r.PollInterval == 0 {
		r.PollInterval = 2 * time.Second
	}
	if r.Health != nil {
		sizes, _ := ParseWaves(r.Waves)
		for _, p := range r.Health.Validate(max(len(sizes), 1)) {
			add("%s", p)
		}
	}
	if len(problems) > 0 {
		return fmt.Errorf("invalid rollout request: %s", strings.Join(problems, "; "))
	}
	return nil
}

// ValidID reports whether the request's rollout ID is one a rollout can have.
func (r *RolloutRequest) ValidID() bool { return r.RolloutID != "" && validID(r.RolloutID) }

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

// Add returns the sum of c and o: the one place counts of several jobs or waves are summed.
func (c Counts) Add(o Counts) Counts {
	return Counts{
		Queued: c.Queued + o.Queued, InProgress: c.InProgress + o.InProgress, Succeeded: c.Succeeded + o.Succeeded,
		Failed: c.Failed + o.Failed, Rejected: c.Rejected + o.Rejected, TimedOut: c.TimedOut + o.TimedOut,
		Canceled: c.Canceled + o.Canceled, Removed: c.Removed + o.Removed,
	}
}

// Total is the number of executions counted.
func (c Counts) Total() int {
	return c.Queued + c.InProgress + c.Succeeded + c.Failed + c.Rejected + c.TimedOut + c.Canceled + c.Removed
}

// Pending is the number of executions not yet in a terminal state.
func (c Counts) Pending() int { return c.Queued + c.InProgress }

// Rollout states.
const (
	StateValidating    = "VALIDATING"
	StateRunning       = "RUNNING"
	StatePaused        = "PAUSED"
	StateAwaiting      = "AWAITING_APPROVAL"
	StateAborted       = "ABORTED"
	StateRollingBack   = "ROLLING_BACK"
	StateCanceling     = "CANCELING"
	StateWaitingWindow = "WAITING_FOR_WINDOW"
	StateObserving     = "OBSERVING_HEALTH"
	StateSucceeded     = "SUCCEEDED"
	StateFailed        = "FAILED"
	StateTimedOut      = "TIMED_OUT"
	StateCanceled      = "CANCELED"
	StateInvalid       = "INVALID"
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
	// Waves holds each wave's plan and counts; CurrentWave is 1-based (0 before the first).
	Waves       []WaveResult `json:"waves,omitempty"`
	CurrentWave int          `json:"currentWave"`
	Paused      bool         `json:"paused,omitempty"`
	// Approvals are the waves approved, by whom and when.
	Approvals []Approval `json:"approvals,omitempty"`
	// Rollback reports the compensation after an abort or cancel.
	Rollback *RollbackResult `json:"rollback,omitempty"`
}

// WaveResult is one wave of a rollout.
type WaveResult struct {
	Wave    int `json:"wave"`
	Devices int `json:"devices"`
	// Group and GroupArn are the static thing group that holds the wave's devices (frozen
	// when the rollout started); empty in rollouts started before targets were frozen.
	Group    string `json:"group,omitempty"`
	GroupArn string `json:"groupArn,omitempty"`
	// Targets, set instead of a group, are the thing groups the wave's job targets as they are
	// (a one-wave rollout of thing groups needs no group of its own).
	Targets []string `json:"targets,omitempty"`
	JobID   string   `json:"jobId,omitempty"`
	State   string   `json:"state"`
	Counts  Counts   `json:"counts"`
	// Health is the wave's health gate, when the rollout has one.
	Health *HealthGateResult `json:"health,omitempty"`
}

// Wave states.
const (
	WavePending  = "PENDING"
	WaveRunning  = "RUNNING"
	WavePassed   = "PASSED"
	WaveFailed   = "FAILED"
	WaveCanceled = "CANCELED"
)

// RollbackResult says how the devices already updated were put back.
type RollbackResult struct {
	JobIDs     []string `json:"jobIds,omitempty"`
	Devices    int      `json:"devices"`
	RolledBack int      `json:"rolledBack"`
	Failed     int      `json:"failed"`
	// FailedDevices names the devices that did not roll back (at most 100).
	FailedDevices []string `json:"failedDevices,omitempty"`
	Message       string   `json:"message,omitempty"`
	// Groups hold the devices of rollback jobs too large to list them (deleted at the end).
	Groups []string `json:"groups,omitempty"`
	// UpdatedLate are the devices among Devices whose execution was timed out although they
	// installed the update (their inventory says so): rolled back with the rest.
	UpdatedLate int `json:"updatedLate,omitempty"`
}

// FailedDevicesInput asks which devices did not succeed in the given jobs.
type FailedDevicesInput struct {
	JobIDs []string `json:"jobIds"`
	Limit  int      `json:"limit"`
}

// CancelRequest is the cancel update's argument.
// SteerRequest is a pause, resume or approval: who asks, and why (both optional; a rollout
// under the two-person rule needs its approvals to name their approver).
type SteerRequest struct {
	By     string `json:"by,omitempty"`
	Reason string `json:"reason,omitempty"`
}

// Approval is one wave's approval.
type Approval struct {
	Wave int       `json:"wave"`
	By   string    `json:"by,omitempty"`
	At   time.Time `json:"at"`
}

type CancelRequest struct {
	Reason string `json:"reason"`
	// By is who canceled (a console user, an access key), for the rollout's message and
	// history; empty: "operator".
	By string `json:"by,omitempty"`
	// Rollback overrides the request's OnFailure policy when set.
	Rollback *bool `json:"rollback,omitempty"`
}

// Activity inputs and outputs.
type (
	// ResolveTargetsResult lists the things a rollout targets.
	ResolveTargetsResult struct {
		ThingArns []string `json:"thingArns"`
	}
	// FreezeTargetsInput resolves a rollout's targets once and puts each wave's devices in its
	// own static thing group (WaveGroup).
	FreezeTargetsInput struct {
		Request RolloutRequest `json:"request"`
	}
	// FreezeTargetsResult is the frozen plan: the number of devices and each wave's group.
	FreezeTargetsResult struct {
		Devices int          `json:"devices"`
		Waves   []FrozenWave `json:"waves"`
	}
	// FrozenWave is one wave's devices, in their group.
	FrozenWave struct {
		Devices  int    `json:"devices"`
		Group    string `json:"group,omitempty"`
		GroupArn string `json:"groupArn,omitempty"`
		// Targets, instead of a group: the request's thing groups, for a one-wave rollout.
		Targets []string `json:"targets,omitempty"`
	}
	// ReleaseTargetsInput deletes a rollout's groups (its devices leave them).
	ReleaseTargetsInput struct {
		Groups []string `json:"groups"`
	}
	// CreateJobInput creates a rollout's IoT job, for a wave's group (or, in rollouts started
	// before targets were frozen, its things).
	CreateJobInput struct {
		JobID     string         `json:"jobId"`
		ThingArns []string       `json:"thingArns,omitempty"`
		GroupArn  string         `json:"groupArn,omitempty"`
		Devices   int            `json:"devices,omitempty"`
		Request   RolloutRequest `json:"request"`
		// Wave is the wave this job serves (for its description).
		Wave int `json:"wave,omitempty"`
	}
	// RollbackInput asks for rollback jobs for every device that succeeded in JobIDs.
	RollbackInput struct {
		RolloutID string         `json:"rolloutId"`
		JobIDs    []string       `json:"jobIds"`
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
		// Abort, when set, ends the wait early once the counts cross it.
		Abort *AbortCriteria `json:"abort,omitempty"`
	}
	// LatestReleaseInput asks for the newest release of Software published to Bucket.
	LatestReleaseInput struct {
		Software string `json:"software"`
		Bucket   string `json:"bucket"`
		// OS and Architecture are the targets' platform: the newest release built for it.
		OS           string `json:"os,omitempty"`
		Architecture string `json:"architecture,omitempty"`
	}
	// LatestReleaseResult is that release: its version and where devices download it.
	LatestReleaseResult struct {
		Version     string `json:"version"`
		ArtifactURL string `json:"artifactUrl"`
	}
	// CancelJobInput cancels a job, force-canceling executions in progress.
	CancelJobInput struct {
		JobID  string `json:"jobId"`
		Reason string `json:"reason"`
	}
)

// AwaitJobResult is AwaitJob's answer: the counts, whether every execution is terminal, and
// whether the abort criteria were crossed (with why).
type AwaitJobResult struct {
	Counts  Counts `json:"counts"`
	Done    bool   `json:"done"`
	Aborted string `json:"aborted,omitempty"`
}

// AwaitJobInputMax is AwaitJobInput with the longest the activity may wait this call.
type AwaitJobInputMax struct {
	AwaitJobInput
	MaxWait time.Duration `json:"maxWait"`
}

// RollbackRolloutRequest puts every device a finished rollout updated back on the version it
// had before (as reported by its agent in the job execution).
type RollbackRolloutRequest struct {
	RolloutID string `json:"rolloutId"`
	// Request is the rollout's own request (software, platform, timeouts).
	Request RolloutRequest `json:"request"`
	// JobIDs are the rollout's wave jobs.
	JobIDs []string `json:"jobIds"`
	Reason string   `json:"reason,omitempty"`
}
