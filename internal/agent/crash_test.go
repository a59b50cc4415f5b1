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

// TestAgentSurvivesSIGKILL kills the agent process in each step of a real update, starts it
// again, and checks that the device ends on exactly the old or the new version and that the
// job's final status says which.
func TestAgentSurvivesSIGKILL(t *testing.T) {
	b := mqtttest.Embedded(t)
	svc, err := jobs.Open(jobs.Options{Path: filepath.Join(t.TempDir(), "jobs.db"), Logger: zerolog.Nop(), SweepInterval: 50 * time.Millisecond})
	require.NoError(t, err)
	defer svc.Close()
	srv := httptest.NewServer(svc.HTTPHandler(&jobs.SigV4Verifier{Creds: jobs.Credentials{AccessKeyID: "k", SecretAccessKey: "s"}, Region: "us-east-1"}))
	defer srv.Close()
	svc.SetBaseURL(srv.URL)
	plane, err := svc.ServeMQTT(jobs.MQTTOptions{BrokerURL: b.URL, Username: mqtttest.ServiceUser, Password: mqtttest.ServicePassword, Logger: zerolog.Nop()})
	require.NoError(t, err)
	defer plane.Close()
	_, err = svc.CreateThing("dev-1", nil)
	require.NoError(t, err)
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	root, state := t.TempDir(), t.TempDir()

	start := func() *exec.Cmd {
		cmd := exec.Command(os.Args[0], "-test.run", "^TestAgentCrashChild$", "-test.count=1")
		cmd.Env = append(os.Environ(), crashEnv+"=1", "CRASH_KEY="+hex.EncodeToString(pub), "CRASH_BROKER="+b.URL,
			"CRASH_STATE="+state, "CRASH_ROOT="+root)
		require.NoError(t, cmd.Start())
		return cmd
	}
	core := slots.Slots{Root: filepath.Join(root, "core")}
	installed := "1.0.0"
	for i, killAt := range []string{"downloading", "installing", "health-check", "health-check-late"} {
		version := fmt.Sprintf("2.%d.0", i)
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
		jobID := "crash-" + killAt
		cmd := start()
		_, err = svc.CreateJob(jobs.CreateJobInput{JobID: jobID, Targets: []string{"dev-1"}, Document: body,
			Presign: &jobs.PresignConfig{RoleArn: "arn:aws:iam::0:role/s", ExpiresInSec: 600}})
		require.NoError(t, err)
		step := killAt
		if killAt == "health-check-late" {
			step = "health-check"
		}
		require.Eventually(t, func() bool {
			e, err := svc.DescribeJobExecution(jobID, "dev-1")
			return err == nil && (e.StatusDetails["step"] == step || e.Status.Terminal())
		}, 20*time.Second, 2*time.Millisecond, "step %s", step)
		if killAt == "health-check-late" {
			time.Sleep(600 * time.Millisecond)
		}
		require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
		cmd.Wait()

		cmd = start()
		e := waitTerminal(t, svc, jobID, "dev-1")
		require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
		cmd.Wait()
		switch e.Status {
		case jobs.ExecSucceeded:
			installed = version
		case jobs.ExecFailed:
		default:
			t.Fatalf("killed at %s: job ended %s (%v)", killAt, e.Status, e.StatusDetails)
		}
		require.Equal(t, installed, core.Current(), "killed at %s: the device runs exactly the version the job reports (%s, %v)", killAt, e.Status, e.StatusDetails)
		t.Logf("killed at %s: %s, running %s", killAt, e.Status, core.Current())
	}
}
