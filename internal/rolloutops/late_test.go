package rolloutops_test

import (
	"context"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/iot"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/otaflow/otaflow/internal/agent"
	"github.com/otaflow/otaflow/internal/fleet"
	"github.com/otaflow/otaflow/internal/iotclient"
	"github.com/otaflow/otaflow/internal/jobdoc"
	"github.com/otaflow/otaflow/internal/localiot"
	"github.com/otaflow/otaflow/internal/localiot/mqttplane"
	"github.com/otaflow/otaflow/internal/localiot/rest"
	"github.com/otaflow/otaflow/internal/localiot/store"
	"github.com/otaflow/otaflow/internal/mqtttest"
	"github.com/otaflow/otaflow/internal/rolloutops"
	"github.com/otaflow/otaflow/workflows/contract"
)

// gatedInstaller installs only once the test opens its gate.
type gatedInstaller struct {
	agent.Installer
	installing chan struct{}
	once       sync.Once
	gate       chan struct{}
}

func (g *gatedInstaller) Install(ctx context.Context, u *agent.Update) error {
	g.once.Do(func() { close(g.installing) })
	select {
	case <-g.gate:
	case <-ctx.Done():
		return ctx.Err()
	}
	return g.Installer.Install(ctx, u)
}

// Device truth, end to end: a real agent is still installing when the jobs service times its
// execution out; it then reports success, which the service refuses (as AWS does). The agent
// keeps the update and says so in its inventory; the rollout finds the device through the
// fleet index as updated-but-late, and a rollback includes it, back to the version it came from.
func TestALateDeviceIsCountedAndRolledBack(t *testing.T) {
	ctx := context.Background()
	var mu sync.Mutex
	clock := time.Now()
	now := func() time.Time { mu.Lock(); defer mu.Unlock(); return clock }
	svc, err := localiot.Open(localiot.Options{Path: filepath.Join(t.TempDir(), "jobs.db"), Logger: zerolog.Nop(), Now: now,
		SweepInterval: 20 * time.Millisecond, FleetIndexing: true})
	require.NoError(t, err)
	defer svc.Close()
	b := mqtttest.Embedded(t)
	plane, err := mqttplane.Serve(svc, mqttplane.Options{BrokerURL: b.URL, Username: mqtttest.ServiceUser, Password: mqtttest.ServicePassword, Logger: zerolog.Nop()})
	require.NoError(t, err)
	defer plane.Close()
	creds := rest.Credentials{AccessKeyID: "late-test", SecretAccessKey: "late-test-secret"}
	iotc, err := iotclient.NewIoT(ctx, iotclient.Config{Endpoint: "http://jobs-service.in-process", Region: "us-east-1",
		AccessKeyID: creds.AccessKeyID, SecretAccessKey: creds.SecretAccessKey,
		HTTP: rest.InProcessClient(rest.Handler(svc, &rest.SigV4Verifier{Creds: creds, Region: "us-east-1"}))})
	require.NoError(t, err)
	th, err := iotc.CreateThing(ctx, &iot.CreateThingInput{ThingName: aws.String("dev-1")})
	require.NoError(t, err)

	in := &gatedInstaller{Installer: fleet.SimulatedInstaller(0, nil), installing: make(chan struct{}), gate: make(chan struct{})}
	a, err := agent.New(agent.Config{ThingName: "dev-1", BrokerURL: b.DeviceURL, TLS: b.DeviceTLS(t, "dev-1"), StateDir: t.TempDir(),
		InitialVersion: "1.0.0", Installer: in, Logger: zerolog.Nop()})
	require.NoError(t, err)
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { a.Run(runCtx); close(done) }()
	defer func() { stop(); <-done }()

	doc, err := (&jobdoc.Document{Type: jobdoc.Type, SchemaVersion: jobdoc.SchemaVersion, Operation: jobdoc.OpUpdate,
		RolloutID: "late", SoftwareToUpdate: jobdoc.SoftwareCore, Version: "2.0.0", Artifact: jobdoc.PresignedArtifact("s3://releases/core/2.0.0.tar.gz")}).Marshal()
	require.NoError(t, err)
	_, err = svc.CreateJob(localiot.CreateJobInput{JobID: "late-wave-1", Document: doc, Targets: []string{aws.ToString(th.ThingArn)}, InProgressTimeoutMinutes: 1})
	require.NoError(t, err)
	select {
	case <-in.installing:
	case <-time.After(15 * time.Second):
		t.Fatal("the agent did not start installing")
	}
	mu.Lock()
	clock = clock.Add(2 * time.Minute) // the service's timeout passes while the device installs
	mu.Unlock()
	require.Eventually(t, func() bool {
		e, err := svc.DescribeJobExecution("late-wave-1", "dev-1")
		return err == nil && e.Status == store.ExecTimedOut
	}, 10*time.Second, 20*time.Millisecond, "the service times the execution out")
	close(in.gate)

	ops := &rolloutops.Ops{IoT: iotc}
	var late []rolloutops.LateDevice
	require.Eventually(t, func() bool {
		var note string
		late, note, err = ops.LateDevices(ctx, []string{"late-wave-1"})
		require.NoError(t, err)
		require.Empty(t, note)
		return len(late) == 1
	}, 15*time.Second, 50*time.Millisecond, "the device reports its late success in its inventory")
	require.Equal(t, rolloutops.LateDevice{Thing: "dev-1", Version: "2.0.0", Previous: "1.0.0"}, late[0])
	require.Equal(t, "2.0.0", a.InstalledVersion(jobdoc.SoftwareCore), "the device kept the update")
	e, err := svc.DescribeJobExecution("late-wave-1", "dev-1")
	require.NoError(t, err)
	require.Equal(t, store.ExecTimedOut, e.Status, "the service's record stands, as on AWS")

	req := contract.RolloutRequest{RolloutID: "late", SoftwareToUpdate: jobdoc.SoftwareCore, Version: "2.0.0"}
	rb, err := ops.CreateRollbackJobs(ctx, contract.RollbackInput{JobIDs: []string{"late-wave-1"}, Request: req})
	require.NoError(t, err)
	require.Equal(t, 1, rb.Devices)
	require.Equal(t, 1, rb.UpdatedLate)
	require.Len(t, rb.JobIDs, 1, "the late device is rolled back: %s", rb.Message)
	require.Eventually(t, func() bool {
		return a.InstalledVersion(jobdoc.SoftwareCore) == "1.0.0"
	}, 15*time.Second, 50*time.Millisecond, "the rollback returns the late device to the version it came from")
}
