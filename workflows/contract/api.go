// Package contract is the rollout's contract with everything that talks to it: the worker,
// the CLI, the console, the REST API, schedules. It holds every workflow, activity, query,
// update and search-attribute name, the task queue, the error types, the ID builders, and the
// requests, results and statuses that cross the boundary. It is plain Go: it imports the
// Temporal SDK's temporal package (search attribute keys) and otaflow's pure packages
// (jobdoc, arn, platform), never the workflow or activity code, so a client such as the jobs
// service links only this.
package contract

import (
	"fmt"
	"reflect"

	"go.temporal.io/sdk/temporal"
)

// A live workflow calls its activities by these names, and a client reaches a workflow by
// them: changing one is a change of the API. No string literal of them is used elsewhere.

// Workflow type names.
const (
	WorkflowRollout    = "Rollout"
	WorkflowDeployment = "Deployment"
)

// Activity names are API: a live workflow calls them by these names.
const (
	ActivityResolveTargets = "ResolveTargets"
	ActivityFreezeTargets  = "FreezeTargets"
	ActivityReleaseTargets = "ReleaseTargets"
	ActivityCreateJob      = "CreateJob"
	ActivityAwaitJob       = "AwaitJob"
	ActivityCancelJob      = "CancelJob"
	ActivityRollback       = "CreateRollbackJobs"
	ActivityWindow         = "MaintenanceWindow"
	ActivityFailedDevices  = "FailedDevices"
	ActivityLatestRelease  = "LatestRelease"
	ActivityEvaluateHealth = "EvaluateHealth"
)

// Activity is an activity's name with its input and result types. The workflows call an
// activity through it and the worker registers the implementation under it, both checked by
// the compiler against these types, without the workflows importing the activities (and
// with them the AWS SDK).
//
// Out is what the workflow reads the result into; the implementation returns it or a pointer
// to it (TestActivitiesMatchTheContract in package activities checks every one).
type Activity[In, Out any] struct{ Name string }

// Types are the activity's input and result types.
func (Activity[In, Out]) Types() (in, out reflect.Type) {
	return reflect.TypeFor[In](), reflect.TypeFor[Out]()
}

// Activities are the activities, typed: contract.Activities.CreateJob.
var Activities = struct {
	ResolveTargets     Activity[RolloutRequest, ResolveTargetsResult]
	FreezeTargets      Activity[FreezeTargetsInput, FreezeTargetsResult]
	ReleaseTargets     Activity[ReleaseTargetsInput, struct{}]
	CreateJob          Activity[CreateJobInput, CreateJobResult]
	AwaitJob           Activity[AwaitJobInputMax, AwaitJobResult]
	CancelJob          Activity[CancelJobInput, Counts]
	CreateRollbackJobs Activity[RollbackInput, RollbackResult]
	MaintenanceWindow  Activity[WindowInput, WindowState]
	FailedDevices      Activity[FailedDevicesInput, []string]
	LatestRelease      Activity[LatestReleaseInput, LatestReleaseResult]
	EvaluateHealth     Activity[EvaluateHealthInput, EvaluateHealthResult]
	SyncDeployment     Activity[SyncInput, SyncResult]
	DeliverWebhook     Activity[WebhookDelivery, struct{}]
}{
	ResolveTargets:     Activity[RolloutRequest, ResolveTargetsResult]{ActivityResolveTargets},
	FreezeTargets:      Activity[FreezeTargetsInput, FreezeTargetsResult]{ActivityFreezeTargets},
	ReleaseTargets:     Activity[ReleaseTargetsInput, struct{}]{ActivityReleaseTargets},
	CreateJob:          Activity[CreateJobInput, CreateJobResult]{ActivityCreateJob},
	AwaitJob:           Activity[AwaitJobInputMax, AwaitJobResult]{ActivityAwaitJob},
	CancelJob:          Activity[CancelJobInput, Counts]{ActivityCancelJob},
	CreateRollbackJobs: Activity[RollbackInput, RollbackResult]{ActivityRollback},
	MaintenanceWindow:  Activity[WindowInput, WindowState]{ActivityWindow},
	FailedDevices:      Activity[FailedDevicesInput, []string]{ActivityFailedDevices},
	LatestRelease:      Activity[LatestReleaseInput, LatestReleaseResult]{ActivityLatestRelease},
	EvaluateHealth:     Activity[EvaluateHealthInput, EvaluateHealthResult]{ActivityEvaluateHealth},
	SyncDeployment:     Activity[SyncInput, SyncResult]{ActivitySyncDeployment},
	DeliverWebhook:     Activity[WebhookDelivery, struct{}]{ActivityDeliverWebhook},
}

// Query and update names.
const (
	QueryStatus   = "status"
	UpdatePause   = "pause"
	UpdateResume  = "resume"
	UpdateApprove = "approve"
	UpdateCancel  = "cancel"
	// UpdateOverrideHealth goes on past a breached health gate (OverrideRequest).
	UpdateOverrideHealth = "override-health"
)

// Error types a rollout fails with; a caller can read the RolloutResult from the details.
const (
	ErrInvalidRequest  = "InvalidRequest"
	ErrRolloutFailed   = "RolloutFailed"
	ErrRolloutAborted  = "RolloutAborted"
	ErrRolloutTimedOut = "RolloutTimedOut"
)

// Search attributes the rollout keeps current, so the web UI can list and filter rollouts.
var (
	SearchRolloutID     = temporal.NewSearchAttributeKeyKeyword("OtaflowRolloutId")
	SearchTargetVersion = temporal.NewSearchAttributeKeyKeyword("OtaflowTargetVersion")
	SearchState         = temporal.NewSearchAttributeKeyKeyword("OtaflowState")
	SearchWave          = temporal.NewSearchAttributeKeyInt64("OtaflowWave")
)

// TaskQueue is where rollout workflows and their activities run.
const TaskQueue = "otaflow-rollouts"

// RolloutWorkflowID is the workflow ID of a rollout: one rollout ID, one workflow.
func RolloutWorkflowID(rolloutID string) string { return "rollout-" + rolloutID }

// RolloutJobID is the IoT job of a rollout's first wave (the only one, by default).
// Deterministic, so creating it is idempotent.
func RolloutJobID(rolloutID string) string { return "otaflow-" + rolloutID }

// WaveJobID is the IoT job of wave i (1-based).
func WaveJobID(rolloutID string, wave int) string {
	if wave <= 1 {
		return RolloutJobID(rolloutID)
	}
	return fmt.Sprintf("otaflow-%s-w%d", rolloutID, wave)
}

// RollbackJobID is the k-th rollback job of a rollout.
func RollbackJobID(rolloutID string, k int) string {
	return fmt.Sprintf("otaflow-%s-rb%d", rolloutID, k)
}

// WaveGroup is the static thing group that holds a wave's devices, frozen when the rollout
// starts and deleted when it ends.
func WaveGroup(rolloutID string, wave int) string {
	return fmt.Sprintf("otaflow-%s-w%d", rolloutID, wave)
}

// RollbackGroup holds the devices of a rollback job too large to list in the job.
func RollbackGroup(rolloutID string, k int) string {
	return fmt.Sprintf("otaflow-%s-rb%d", rolloutID, k)
}

// WorkflowRollback is the workflow type of `starter rollout rollback`.
const WorkflowRollback = "RollbackRollout"

// ErrNothingToRollBack: the rollout updated no device, or every updated device failed to
// report the version it had.
const ErrNothingToRollBack = "NothingToRollBack"

// RollbackWorkflowID is the workflow that rolls a finished rollout back: one per rollout, so
// asking twice finds the first.
func RollbackWorkflowID(rolloutID string) string { return "rollback-" + rolloutID }

// RollbackRolloutID names a rollback's own jobs and groups ("rb-" and the rollout ID, cut so
// the job IDs stay within AWS's 64 characters).
func RollbackRolloutID(rolloutID string) string {
	id := "rb-" + rolloutID
	if len(id) > 48 {
		id = id[:48]
	}
	return id
}

// Deployment names.
const (
	ActivitySyncDeployment = "SyncDeployment"
	UpdateRevise           = "revise"
)

// DeploymentWorkflowID is the workflow ID of a deployment.
func DeploymentWorkflowID(id string) string { return "deployment-" + id }

// DeploymentJobPrefix prefixes every IoT job of one revision of a deployment.
func DeploymentJobPrefix(id string, revision int) string {
	return fmt.Sprintf("deploy-%s-r%d-", id, revision)
}
