package agent_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/otaflow/otaflow/internal/agent"
	"github.com/otaflow/otaflow/internal/agent/slots"
	"github.com/otaflow/otaflow/internal/jobdoc"
	"github.com/otaflow/otaflow/internal/jobs"
	"github.com/otaflow/otaflow/internal/mqtttest"
)

const crashEnv = "OTAFLOW_AGENT_CRASH_CHILD"

// TestAgentCrashChild is the agent process that TestAgentSurvivesSIGKILL kills.
func TestAgentCrashChild(t *testing.T) {
	if os.Getenv(crashEnv) == "" {
		t.Skip("run by TestAgentSurvivesSIGKILL")
	}
	key, _ := hex.DecodeString(os.Getenv("CRASH_KEY"))
	a, err := agent.New(agent.Config{ThingName: "dev-1", BrokerURL: os.Getenv("CRASH_BROKER"), StateDir: os.Getenv("CRASH_STATE"),
		InitialVersion: "1.0.0", Logger: zerolog.Nop(),
		Installer: agent.Installer{Root: os.Getenv("CRASH_ROOT"), PublicKey: ed25519.PublicKey(key), Env: []string{"INVOCATION_ID=crash"}}})
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	a.Run(context.Background())
}

// crashRig is a jobs service, a broker and an agent that runs as a child process.
type crashRig struct {
	t     *testing.T
	svc   *jobs.Service
	start func() *exec.Cmd
	job   func(jobID, version string)
	core  slots.Slots
}

func newCrashRig(t *testing.T) *crashRig {
	b := mqtttest.Embedded(t)
	svc, err := jobs.Open(jobs.Options{Path: filepath.Join(t.TempDir(), "jobs.db"), Logger: zerolog.Nop(), SweepInterval: 50 * time.Millisecond})
	require.NoError(t, err)
	t.Cleanup(func() { svc.Close() })
	srv := httptest.NewServer(svc.HTTPHandler(&jobs.SigV4Verifier{Creds: jobs.Credentials{AccessKeyID: "k", SecretAccessKey: "s"}, Region: "us-east-1"}))
	t.Cleanup(srv.Close)
	svc.SetBaseURL(srv.URL)
	plane, err := svc.ServeMQTT(jobs.MQTTOptions{BrokerURL: b.URL, Username: mqtttest.ServiceUser, Password: mqtttest.ServicePassword, Logger: zerolog.Nop()})
	require.NoError(t, err)
	t.Cleanup(plane.Close)
	_, err = svc.CreateThing("dev-1", nil)
	require.NoError(t, err)
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	root, state := t.TempDir(), t.TempDir()
	r := &crashRig{t: t, svc: svc, core: slots.Slots{Root: filepath.Join(root, "core")}}
	r.start = func() *exec.Cmd {
		cmd := exec.Command(os.Args[0], "-test.run", "^TestAgentCrashChild$", "-test.count=1")
		cmd.Env = append(os.Environ(), crashEnv+"=1", "CRASH_KEY="+hex.EncodeToString(pub), "CRASH_BROKER="+b.URL,
			"CRASH_STATE="+state, "CRASH_ROOT="+root)
		require.NoError(t, cmd.Start())
		return cmd
	}
	r.job = func(jobID, version string) {
		data := coreTarball(t, version)
		_, err := svc.PutArtifact("releases", version+".tar.gz", bytes.NewReader(data))
		require.NoError(t, err)
		sum := sha256.Sum256(data)
		d := jobdoc.Document{Type: jobdoc.Type, SchemaVersion: jobdoc.SchemaVersion, Operation: jobdoc.OpUpdate, RolloutID: "r",
			SoftwareToUpdate: jobdoc.SoftwareCore, Version: version, BakeSeconds: 1,
			HealthCheck: &jobdoc.HealthCheck{Command: []string{"sleep", "0.3"}},
			Artifact: &jobdoc.Artifact{URL: "${aws:iot:s3-presigned-url:https://s3.amazonaws.com/releases/" + version + ".tar.gz}",
				Size: int64(len(data)), SHA256: hex.EncodeToString(sum[:]), Signature: hex.EncodeToString(ed25519.Sign(priv, sum[:]))}}
		body, err := d.Marshal()
		require.NoError(t, err)
		_, err = svc.CreateJob(jobs.CreateJobInput{JobID: jobID, Targets: []string{"dev-1"}, Document: body,
			Presign: &jobs.PresignConfig{RoleArn: "arn:aws:iam::0:role/s", ExpiresInSec: 600}})
		require.NoError(t, err)
	}
	return r
}

// killAtStep waits until the execution reports step (with a version number above after) or
// ends, kills the child, and returns the version number seen.
func (r *crashRig) killAtStep(cmd *exec.Cmd, jobID, step string, after int64) int64 {
	var seen int64
	require.Eventually(r.t, func() bool {
		e, err := r.svc.DescribeJobExecution(jobID, "dev-1")
		if err != nil {
			return false
		}
		seen = e.VersionNumber
		return (e.StatusDetails["step"] == step && e.VersionNumber > after) || e.Status.Terminal()
	}, 20*time.Second, 2*time.Millisecond, "step %s", step)
	require.NoError(r.t, cmd.Process.Signal(syscall.SIGKILL))
	cmd.Wait()
	return seen
}

// TestAgentSurvivesSIGKILL kills the agent process in each step of a real update, starts it
// again, and checks that the device ends on exactly the old or the new version and that the
// job's final status says which.
func TestAgentSurvivesSIGKILL(t *testing.T) {
	r := newCrashRig(t)
	installed := "1.0.0"
	for i, killAt := range []string{"downloading", "installing", "health-check", "health-check-late"} {
		version := fmt.Sprintf("2.%d.0", i)
		jobID := "crash-" + killAt
		cmd := r.start()
		r.job(jobID, version)
		step := killAt
		if killAt == "health-check-late" {
			step = "health-check"
			require.Eventually(t, func() bool {
				e, err := r.svc.DescribeJobExecution(jobID, "dev-1")
				return err == nil && (e.StatusDetails["step"] == step || e.Status.Terminal())
			}, 20*time.Second, 2*time.Millisecond)
			time.Sleep(600 * time.Millisecond)
		}
		r.killAtStep(cmd, jobID, step, 0)

		cmd = r.start()
		e := waitTerminal(t, r.svc, jobID, "dev-1")
		require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
		cmd.Wait()
		switch e.Status {
		case jobs.ExecSucceeded:
			installed = version
		case jobs.ExecFailed:
		default:
			t.Fatalf("killed at %s: job ended %s (%v)", killAt, e.Status, e.StatusDetails)
		}
		require.Equal(t, installed, r.core.Current(), "killed at %s: the device runs exactly the version the job reports (%s, %v)", killAt, e.Status, e.StatusDetails)
		t.Logf("killed at %s: %s, running %s", killAt, e.Status, r.core.Current())
	}

	// A version that takes the device down during every health check is rolled back after
	// three restarts: the reboot loop ends on the old version.
	cmd := r.start()
	r.job("loop", "3.0.0")
	seen := r.killAtStep(cmd, "loop", "health-check", 0)
	for i := 0; i < 3; i++ {
		seen = r.killAtStep(r.start(), "loop", "health-check", seen)
	}
	cmd = r.start()
	defer func() { cmd.Process.Signal(syscall.SIGKILL); cmd.Wait() }()
	e := waitTerminal(t, r.svc, "loop", "dev-1")
	require.Equal(t, jobs.ExecFailed, e.Status)
	require.Contains(t, e.StatusDetails["reason"], "reboot loop")
	require.Equal(t, installed, r.core.Current(), "back on the version before the loop")
}
