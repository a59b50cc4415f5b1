package fleet

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/otaflow/otaflow/internal/jobdoc"
	"github.com/otaflow/otaflow/internal/localiot"
	"github.com/otaflow/otaflow/internal/localiot/mqttplane"
	"github.com/otaflow/otaflow/internal/localiot/store"
	"github.com/otaflow/otaflow/internal/mqtttest"
)

// jobsService is a jobs service answering devices through an embedded broker.
func jobsService(t *testing.T) (mqtttest.Broker, *localiot.Service) {
	b := mqtttest.Embedded(t)
	svc, err := localiot.Open(localiot.Options{Path: filepath.Join(t.TempDir(), "jobs.db"), Logger: zerolog.Nop()})
	require.NoError(t, err)
	t.Cleanup(func() { svc.Close() })
	plane, err := mqttplane.Serve(svc, mqttplane.Options{BrokerURL: b.URL, Username: mqtttest.ServiceUser, Password: mqtttest.ServicePassword, Logger: zerolog.Nop()})
	require.NoError(t, err)
	t.Cleanup(func() { plane.Close() })
	return b, svc
}

// TestFleetFaults runs 60 devices (with 2.0.0 staged on their disks, so a job without an
// artifact may install it) over real MQTT with failures, unhealthy devices and crashes
// mid-install; every device ends as its (seeded) fault says, and crashed devices resume.
func TestFleetFaults(t *testing.T) {
	b, svc := jobsService(t)
	var things []string
	for i := 0; i < 60; i++ {
		things = append(things, fmt.Sprintf("sim-%02d", i))
		_, err := svc.CreateThing(things[i], nil)
		require.NoError(t, err)
	}
	f, err := Start(Options{BrokerURL: b.URL, Things: things, StateDir: t.TempDir(), InitialVersion: "1.0.0", Staged: []string{"2.0.0"}, InstallTime: 20 * time.Millisecond,
		FailureRate: 0.2, UnhealthyRate: 0.1, CrashRate: 0.2, RebootTime: 100 * time.Millisecond, Seed: 7, Logger: zerolog.Nop()})
	require.NoError(t, err)
	defer f.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	require.NoError(t, f.WaitConnected(ctx))

	d := jobdoc.Document{Type: jobdoc.Type, SchemaVersion: jobdoc.SchemaVersion, Operation: jobdoc.OpUpdate, RolloutID: "r",
		SoftwareToUpdate: jobdoc.SoftwareCore, Version: "2.0.0"}
	body, err := d.Marshal()
	require.NoError(t, err)
	_, err = svc.CreateJob(localiot.CreateJobInput{JobID: "fleet-job", Targets: things, Document: body})
	require.NoError(t, err)

	wantCrashes := 0
	for _, th := range things {
		var e *store.Execution
		require.Eventually(t, func() bool {
			e, err = svc.DescribeJobExecution("fleet-job", th)
			return err == nil && e.Status.Terminal()
		}, 20*time.Second, 10*time.Millisecond, th)
		r := f.roll(th, "fleet-job")
		want, version := store.ExecSucceeded, "2.0.0"
		switch {
		case r < 0.2:
			want, version = store.ExecFailed, "1.0.0"
		case r < 0.3:
			want, version = store.ExecFailed, "1.0.0"
			require.Contains(t, e.StatusDetails["reason"], "health check failed")
		case r < 0.5:
			wantCrashes++
		}
		require.Equal(t, want, e.Status, "%s (roll %.2f): %v", th, r, e.StatusDetails)
		require.Eventually(t, func() bool { return f.InstalledVersion(th, "core") == version }, 5*time.Second, 10*time.Millisecond, th)
	}
	require.Positive(t, wantCrashes)
	require.EqualValues(t, wantCrashes, f.Crashes())
}

// TestSimulatedDevicesRefuseWhatAgentsRefuse: a simulated device runs the agent's own checks. A
// job with no artifact for a version it does not hold and a downgrade outside a rollback job
// are REJECTED with the reason an agent gives; a job with an artifact installs, and a rollback
// job returns it to the version it ran before.
func TestSimulatedDevicesRefuseWhatAgentsRefuse(t *testing.T) {
	b, svc := jobsService(t)
	_, err := svc.CreateThing("sim", nil)
	require.NoError(t, err)
	f, err := Start(Options{BrokerURL: b.URL, Things: []string{"sim"}, StateDir: t.TempDir(), InitialVersion: "1.0.0", Logger: zerolog.Nop()})
	require.NoError(t, err)
	defer f.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	require.NoError(t, f.WaitConnected(ctx))

	run := func(jobID, op, version string, artifact bool) *store.Execution {
		t.Helper()
		d := jobdoc.Document{Type: jobdoc.Type, SchemaVersion: jobdoc.SchemaVersion, Operation: op, RolloutID: "r",
			SoftwareToUpdate: jobdoc.SoftwareCore, Version: version}
		if artifact {
			d.Artifact = jobdoc.PresignedArtifact("s3://releases/core/" + version + ".tar.gz")
		}
		body, err := d.Marshal()
		require.NoError(t, err)
		_, err = svc.CreateJob(localiot.CreateJobInput{JobID: jobID, Targets: []string{"sim"}, Document: body})
		require.NoError(t, err)
		var e *store.Execution
		require.Eventually(t, func() bool {
			e, err = svc.DescribeJobExecution(jobID, "sim")
			return err == nil && e.Status.Terminal()
		}, 20*time.Second, 10*time.Millisecond, jobID)
		return e
	}
	e := run("no-artifact", jobdoc.OpUpdate, "2.0.0", false)
	require.Equal(t, store.ExecRejected, e.Status, "%v", e.StatusDetails)
	require.Contains(t, e.StatusDetails["reason"], "the job has no artifact and core 2.0.0 is not installed on this device")
	require.Equal(t, "1.0.0", f.InstalledVersion("sim", "core"))

	e = run("update", jobdoc.OpUpdate, "2.0.0", true)
	require.Equal(t, store.ExecSucceeded, e.Status, "%v", e.StatusDetails)
	require.Equal(t, "2.0.0", f.InstalledVersion("sim", "core"))

	e = run("downgrade", jobdoc.OpUpdate, "1.5.0", true)
	require.Equal(t, store.ExecRejected, e.Status, "%v", e.StatusDetails)
	require.Contains(t, e.StatusDetails["reason"], "core 1.5.0 is older than the installed 2.0.0: a downgrade needs a rollback job")
	require.Equal(t, "2.0.0", f.InstalledVersion("sim", "core"))

	// The version it ran before is still in its other slot: a rollback needs no artifact.
	e = run("rollback", jobdoc.OpRollback, "1.0.0", false)
	require.Equal(t, store.ExecSucceeded, e.Status, "%v", e.StatusDetails)
	require.Equal(t, "1.0.0", f.InstalledVersion("sim", "core"))
}
