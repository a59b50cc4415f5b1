package agent_test

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/otaflow/otaflow/internal/agent"
	"github.com/otaflow/otaflow/internal/fleet"
	"github.com/otaflow/otaflow/internal/jobdoc"
	"github.com/otaflow/otaflow/internal/localiot"
	"github.com/otaflow/otaflow/internal/localiot/mqttplane"
	"github.com/otaflow/otaflow/internal/localiot/store"
	"github.com/otaflow/otaflow/internal/mqtttest"
)

// doc is an update job's document for core version, with its artifact (the simulated
// installer takes it as downloaded; without one it would refuse the job, as an agent does).
func doc(t *testing.T, version string) string {
	d := jobdoc.Document{Type: jobdoc.Type, SchemaVersion: jobdoc.SchemaVersion, Operation: jobdoc.OpUpdate,
		RolloutID: "r", SoftwareToUpdate: jobdoc.SoftwareCore, Version: version,
		Artifact: jobdoc.PresignedArtifact("s3://releases/core/" + version + ".tar.gz")}
	s, err := d.Marshal()
	require.NoError(t, err)
	return s
}

func waitTerminal(t *testing.T, svc *localiot.Service, jobID, thing string) *store.Execution {
	t.Helper()
	var e *store.Execution
	require.Eventually(t, func() bool {
		var err error
		e, err = svc.DescribeJobExecution(jobID, thing)
		return err == nil && e.Status.Terminal()
	}, 15*time.Second, 20*time.Millisecond, "job %s on %s did not finish", jobID, thing)
	return e
}

// jobsOverBroker starts a jobs service serving the MQTT Jobs API through an embedded broker,
// with thing dev-1 registered.
func jobsOverBroker(t *testing.T) (*localiot.Service, mqtttest.Broker) {
	svc, b := jobsBeside(t)
	t.Cleanup(servePlane(t, svc, b).Close)
	return svc, b
}

// jobsBeside starts an embedded broker and a jobs service, with thing dev-1 registered, that
// does not serve the broker yet (see servePlane).
func jobsBeside(t *testing.T) (*localiot.Service, mqtttest.Broker) {
	b := mqtttest.Embedded(t)
	svc, err := localiot.Open(localiot.Options{Path: filepath.Join(t.TempDir(), "jobs.db"), Logger: zerolog.Nop()})
	require.NoError(t, err)
	t.Cleanup(func() { svc.Close() })
	_, err = svc.CreateThing("dev-1", nil)
	require.NoError(t, err)
	return svc, b
}

// servePlane connects the jobs service's MQTT plane to the broker.
func servePlane(t *testing.T, svc *localiot.Service, b mqtttest.Broker) *mqttplane.Plane {
	plane, err := mqttplane.Serve(svc, mqttplane.Options{BrokerURL: b.URL, Username: mqtttest.ServiceUser, Password: mqtttest.ServicePassword, Logger: zerolog.Nop()})
	require.NoError(t, err)
	return plane
}

// runAgent runs a until the test ends.
func runAgent(t *testing.T, a *agent.Agent) { runAgentStoppable(t, a) }

// runAgentStoppable runs a until the test ends or stop is called (which waits for it).
func runAgentStoppable(t *testing.T, a *agent.Agent) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { a.Run(ctx); close(done) }()
	stop = func() { cancel(); <-done }
	t.Cleanup(stop)
	return stop
}

func startAgent(t *testing.T, b mqtttest.Broker, dir string) (*agent.Agent, context.CancelFunc) {
	t.Helper()
	// The job "d-fails" fails on this device, as the fleet simulator scripts it.
	in := fleet.SimulatedInstaller(0, func(jobID string) fleet.Fault {
		if jobID == "d-fails" {
			return fleet.FaultFail
		}
		return fleet.FaultNone
	})
	a, err := agent.New(agent.Config{ThingName: "dev-1", BrokerURL: b.DeviceURL, TLS: b.DeviceTLS(t, "dev-1"), StateDir: dir, InitialVersion: "1.0.0", Installer: in, Logger: zerolog.Nop()})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { a.Run(ctx); close(done) }()
	stop := func() { cancel(); <-done }
	t.Cleanup(stop)
	return a, stop
}

// TestAgentThroughBrokers runs the agent against the jobs service through the embedded
// broker and through Debian's mosquitto.
func TestAgentThroughBrokers(t *testing.T) {
	for _, start := range mqtttest.All() {
		b := start(t)
		t.Run(b.Name, func(t *testing.T) {
			svc, err := localiot.Open(localiot.Options{Path: filepath.Join(t.TempDir(), "jobs.db"), Logger: zerolog.Nop()})
			require.NoError(t, err)
			defer svc.Close()
			plane, err := mqttplane.Serve(svc, mqttplane.Options{BrokerURL: b.URL, Username: mqtttest.ServiceUser, Password: mqtttest.ServicePassword, Logger: zerolog.Nop()})
			require.NoError(t, err)
			defer plane.Close()
			_, err = svc.CreateThing("dev-1", nil)
			require.NoError(t, err)

			// Jobs queued before the agent starts are picked up when it connects, in order.
			for _, j := range []struct{ id, doc string }{
				{"a-update", doc(t, "1.1.0")},
				{"b-bad-schema", `{"type":"otaflow.update","schemaVersion":"9","operation":"update","softwareToUpdate":"core","version":"2"}`},
				{"c-not-ours", `{"operation":"reboot"}`},
				{"d-fails", doc(t, "1.2.0")},
			} {
				_, err := svc.CreateJob(localiot.CreateJobInput{JobID: j.id, Targets: []string{"dev-1"}, Document: j.doc})
				require.NoError(t, err)
			}
			dir := t.TempDir()
			a, stop := startAgent(t, b, dir)

			e := waitTerminal(t, svc, "a-update", "dev-1")
			require.Equal(t, store.ExecSucceeded, e.Status)
			require.Equal(t, "1.1.0", e.StatusDetails["installedVersion"])
			require.Equal(t, "1.0.0", e.StatusDetails["previousVersion"])

			e = waitTerminal(t, svc, "b-bad-schema", "dev-1")
			require.Equal(t, store.ExecRejected, e.Status)
			require.Contains(t, e.StatusDetails["reason"], `schema version "9" is not supported`)

			e = waitTerminal(t, svc, "d-fails", "dev-1")
			require.Equal(t, store.ExecFailed, e.Status)
			require.Contains(t, e.StatusDetails["reason"], "simulated install failure")
			require.Equal(t, "1.1.0", a.InstalledVersion("core"), "a failed install leaves the old version")
			e, err = svc.DescribeJobExecution("c-not-ours", "dev-1")
			require.NoError(t, err)
			require.Equal(t, store.ExecQueued, e.Status, "another software's job is left alone (seed: the agent ignores other job types)")

			// The installed version survives a restart of the agent.
			stop()
			a2, _ := startAgent(t, b, dir)
			require.Equal(t, "1.1.0", a2.InstalledVersion("core"))
			_, err = svc.CreateJob(localiot.CreateJobInput{JobID: "e-after-restart", Targets: []string{"dev-1"}, Document: doc(t, "1.3.0")})
			require.NoError(t, err)
			e = waitTerminal(t, svc, "e-after-restart", "dev-1")
			require.Equal(t, store.ExecSucceeded, e.Status)
			require.Equal(t, "1.3.0", a2.InstalledVersion("core"))
		})
	}
}

// TestAgentSurvivesMalformedMessages floods the agent's topics with malformed JSON, wrong
// types and an oversize payload; it keeps taking jobs.
func TestAgentSurvivesMalformedMessages(t *testing.T) {
	svc, b := jobsOverBroker(t)
	a, _ := startAgent(t, b, t.TempDir())

	// Only the service may publish on a device's jobs topics; use its credentials.
	c := b.ServiceClient(t, "flood")
	junk := [][]byte{[]byte("{"), []byte("null"), []byte(`{"clientToken":42}`), []byte(`{"clientToken":"dev-1-1","execution":7}`),
		[]byte(`{"execution":{"jobId":"ghost","jobDocument":"not an object"}}`), bytes.Repeat([]byte("x"), 100<<10), {}}
	topics := []string{"notify-next", "notify", "get/accepted", "get/rejected", "ghost/get/accepted", "ghost/update/accepted", "ghost/update/rejected"}
	for i := 0; i < 20; i++ {
		for _, topic := range topics {
			for _, p := range junk {
				c.Publish("$aws/things/dev-1/jobs/"+topic, 0, false, p)
			}
		}
	}
	_, err := svc.CreateJob(localiot.CreateJobInput{JobID: "after-flood", Targets: []string{"dev-1"}, Document: doc(t, "1.1.0")})
	require.NoError(t, err)
	e := waitTerminal(t, svc, "after-flood", "dev-1")
	require.Equal(t, store.ExecSucceeded, e.Status)
	require.Equal(t, "1.1.0", a.InstalledVersion("core"))
}

// lockedLog collects an agent's log lines.
type lockedLog struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *lockedLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *lockedLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// TestAgentResendsLostRequests starts the agent while the jobs service is not yet subscribed
// to the broker (as after a broker restart, when devices come back first): its first request
// is lost without an error. The agent sends it again and takes the job without ever letting
// the request time out.
func TestAgentResendsLostRequests(t *testing.T) {
	svc, b := jobsBeside(t)
	_, err := svc.CreateJob(localiot.CreateJobInput{JobID: "update", Targets: []string{"dev-1"}, Document: doc(t, "1.1.0")})
	require.NoError(t, err)

	var logs lockedLog
	a, err := agent.New(agent.Config{ThingName: "dev-1", BrokerURL: b.URL, StateDir: t.TempDir(), InitialVersion: "1.0.0",
		RequestTimeout: 20 * time.Second, Installer: fleet.SimulatedInstaller(0, nil), Logger: zerolog.New(&logs).Level(zerolog.DebugLevel)})
	require.NoError(t, err)
	runAgent(t, a)
	require.Eventually(t, func() bool { return strings.Contains(logs.String(), "checking for pending jobs") }, 10*time.Second, 10*time.Millisecond)
	time.Sleep(200 * time.Millisecond) // the first get is out, and lost: nobody serves the Jobs API yet

	defer servePlane(t, svc, b).Close()
	e := waitTerminal(t, svc, "update", "dev-1")
	require.Equal(t, store.ExecSucceeded, e.Status)
	require.Contains(t, logs.String(), "sending the request again")
	require.NotContains(t, logs.String(), "no reply within", "the lost request was sent again before it timed out")
}

// TestIdleRecheckFindsJobWithoutNotification: a job queued while the jobs service could not
// tell the device (its MQTT plane was down, so no notify-next went out) is still taken, by the
// idle agent's own periodic look.
func TestIdleRecheckFindsJobWithoutNotification(t *testing.T) {
	svc, b := jobsBeside(t)
	plane := servePlane(t, svc, b)
	var logs lockedLog
	a, err := agent.New(agent.Config{ThingName: "dev-1", BrokerURL: b.URL, StateDir: t.TempDir(), InitialVersion: "1.0.0",
		Installer: fleet.SimulatedInstaller(0, nil), IdleRecheck: 500 * time.Millisecond, Logger: zerolog.New(&logs).Level(zerolog.DebugLevel),
		// A recheck sent while no plane serves is sent again after a quarter of this (1 s),
		// not after the default's 7.5 s, which under a loaded CI can outlast waitTerminal.
		RequestTimeout: 4 * time.Second})
	require.NoError(t, err)
	runAgent(t, a)
	require.Eventually(t, a.Connected, 10*time.Second, 10*time.Millisecond)
	time.Sleep(300 * time.Millisecond) // its first look, at connect, found nothing

	plane.Close()
	_, err = svc.CreateJob(localiot.CreateJobInput{JobID: "quiet", Targets: []string{"dev-1"}, Document: doc(t, "1.1.0")})
	require.NoError(t, err)
	defer servePlane(t, svc, b).Close()
	e := waitTerminal(t, svc, "quiet", "dev-1")
	require.Equal(t, store.ExecSucceeded, e.Status)
	require.Contains(t, logs.String(), "idle recheck")
}
