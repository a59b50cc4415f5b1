package agent

import (
	"context"
	"encoding/json"
	"slices"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/otaflow/otaflow/internal/iotjobs"
	"github.com/otaflow/otaflow/internal/jobdoc"
)

// fakeJobs is a jobs service of one execution, in memory: the state machine is driven
// through JobsAPI alone, with no broker.
type fakeJobs struct {
	mu      sync.Mutex
	exec    iotjobs.JobExecution
	updates []iotjobs.UpdateRequest
	// endedAs, when set, is the terminal status the service recorded before the device's
	// own terminal report arrived (a timeout, a cancellation).
	endedAs iotjobs.Status
	// asked counts GetPending and Describe calls.
	asked int
}

func (f *fakeJobs) GetPending(context.Context) (*iotjobs.GetPendingReply, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.asked++
	if f.exec.Status.Terminal() {
		return &iotjobs.GetPendingReply{}, nil
	}
	return &iotjobs.GetPendingReply{QueuedJobs: []iotjobs.JobExecutionSummary{{JobID: f.exec.JobID}}}, nil
}

func (f *fakeJobs) Describe(_ context.Context, jobID string) (*iotjobs.JobExecution, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.asked++
	e := f.exec
	return &e, nil
}

func (f *fakeJobs) Update(_ context.Context, jobID string, u *iotjobs.UpdateRequest) (*iotjobs.UpdateReply, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if u.ExpectedVersion != 0 && u.ExpectedVersion != f.exec.VersionNumber {
		return nil, &iotjobs.ErrorReply{Code: iotjobs.CodeVersionMismatch, Message: "version mismatch"}
	}
	if f.endedAs != "" && u.Status.Terminal() {
		f.exec.Status = f.endedAs
		return nil, &iotjobs.ErrorReply{Code: iotjobs.CodeInvalidStateTransition, Message: "already " + string(f.endedAs),
			ExecutionState: &iotjobs.ExecutionState{Status: f.endedAs, VersionNumber: f.exec.VersionNumber}}
	}
	f.updates = append(f.updates, *u)
	f.exec.Status, f.exec.VersionNumber = u.Status, f.exec.VersionNumber+1
	return &iotjobs.UpdateReply{ExecutionState: &iotjobs.ExecutionState{Status: u.Status, VersionNumber: f.exec.VersionNumber}}, nil
}

// stepInstaller records the installer steps it is asked for.
type stepInstaller struct{ steps []string }

func (s *stepInstaller) step(name string) error                      { s.steps = append(s.steps, name); return nil }
func (s *stepInstaller) Prepare(_ context.Context, u *Update) error  { return s.step("prepare") }
func (s *stepInstaller) Install(_ context.Context, u *Update) error  { return s.step("install") }
func (s *stepInstaller) Switch(_ context.Context, u *Update) error   { return s.step("switch") }
func (s *stepInstaller) Start(_ context.Context, u *Update) error    { return s.step("start") }
func (s *stepInstaller) Verify(_ context.Context, u *Update) error   { return s.step("verify") }
func (s *stepInstaller) Checks(*Update) bool                         { return false }
func (s *stepInstaller) Commit(_ context.Context, u *Update) error   { return s.step("commit") }
func (s *stepInstaller) Rollback(_ context.Context, u *Update) error { return s.step("rollback") }
func (s *stepInstaller) Active(string) string                        { return "" }

// withFakeJobs is an agent on 1.0.0 whose jobs service is a fake holding one queued update to
// 2.0.0 (ended as endedAs before the device's terminal report, when set).
func withFakeJobs(t *testing.T, endedAs iotjobs.Status) (*Agent, *stepInstaller, *fakeJobs) {
	in := &stepInstaller{}
	a, err := New(Config{ThingName: "dev-1", StateDir: t.TempDir(), Installer: in, InitialVersion: "1.0.0"})
	require.NoError(t, err)
	doc, err := (&jobdoc.Document{Type: jobdoc.Type, SchemaVersion: jobdoc.SchemaVersion, Operation: jobdoc.OpUpdate,
		RolloutID: "r1", SoftwareToUpdate: jobdoc.SoftwareCore, Version: "2.0.0"}).Marshal()
	require.NoError(t, err)
	jobs := &fakeJobs{exec: iotjobs.JobExecution{JobID: "j1", ThingName: "dev-1", Status: iotjobs.StatusQueued, VersionNumber: 1, JobDocument: json.RawMessage(doc)},
		endedAs: endedAs}
	a.jobs = jobs
	return a, in, jobs
}

// The state machine reaches the jobs service only through JobsAPI: with a fake in its place,
// a queued update is started, reported step by step with expectedVersion, and SUCCEEDED.
func TestStateMachineTalksThroughJobsAPI(t *testing.T) {
	a, in, jobs := withFakeJobs(t, "")

	did, err := a.processNext(context.Background())
	require.NoError(t, err)
	require.True(t, did)
	require.Equal(t, "2.0.0", a.InstalledVersion(jobdoc.SoftwareCore))
	require.Equal(t, []string{"prepare", "install", "switch", "start", "verify", "commit"}, in.steps)

	jobs.mu.Lock()
	require.Equal(t, iotjobs.StatusSucceeded, jobs.exec.Status)
	first, last := jobs.updates[0], jobs.updates[len(jobs.updates)-1]
	require.Equal(t, "installing", first.StatusDetails["step"], "the first report takes the job: no separate claim")
	require.Equal(t, iotjobs.StatusInProgress, first.Status)
	require.Equal(t, "2.0.0", last.StatusDetails["installedVersion"])
	require.Equal(t, "1.0.0", last.StatusDetails["previousVersion"])
	for i, u := range jobs.updates {
		require.EqualValues(t, i+1, u.ExpectedVersion, "update %d carries the version it expects", i)
	}
	jobs.mu.Unlock()

	did, err = a.processNext(context.Background())
	require.NoError(t, err)
	require.False(t, did, "nothing is pending after the job ended")
}

// Device truth: a device whose report of success arrives after the service timed its
// execution out keeps the update and says so in its inventory (late, what the service
// recorded, the version it came from), so that the rollout counts it and a rollback includes
// it; one whose job was canceled meanwhile switches back, as the rollout decided.
func TestALateSuccessStandsACanceledOneIsReverted(t *testing.T) {
	for _, tc := range []struct {
		endedAs iotjobs.Status
		version string
		late    bool
	}{{iotjobs.StatusTimedOut, "2.0.0", true}, {iotjobs.StatusCanceled, "1.0.0", false}} {
		t.Run(string(tc.endedAs), func(t *testing.T) {
			a, in, _ := withFakeJobs(t, tc.endedAs)
			did, err := a.processNext(context.Background())
			require.NoError(t, err)
			require.True(t, did)
			require.Equal(t, tc.version, a.InstalledVersion(jobdoc.SoftwareCore))
			require.Equal(t, !tc.late, slices.Contains(in.steps, "rollback"), "steps %v", in.steps)
			a.mu.Lock()
			defer a.mu.Unlock()
			if tc.late {
				require.Equal(t, "SUCCEEDED", a.lastJob["status"])
				require.Equal(t, true, a.lastJob["late"])
				require.Equal(t, "TIMED_OUT", a.lastJob["recordedAs"])
				require.Equal(t, "1.0.0", a.lastJob["previousVersion"])
			} else {
				require.NotContains(t, a.lastJob, "late")
				require.Equal(t, "CANCELED", a.lastJob["status"])
				require.Equal(t, "1.0.0", a.lastJob["version"])
				require.Equal(t, true, a.lastJob["reverted"])
			}
		})
	}
}
