package agent_test

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/otaflow/otaflow/internal/agent"
	"github.com/otaflow/otaflow/internal/agent/slots"
	"github.com/otaflow/otaflow/internal/jobdoc"
	"github.com/otaflow/otaflow/internal/jobs"
	"github.com/otaflow/otaflow/internal/mqtttest"
	"github.com/otaflow/otaflow/internal/release"
)

func coreTarball(t *testing.T, version string) []byte {
	return tarGz(t, "bin/core", []byte("#!/bin/sh\necho core "+version+"\n"))
}

// tarGz packs one executable file.
func tarGz(t *testing.T, name string, body []byte) []byte {
	data, err := release.Pack(release.File{Name: name, Mode: 0o755, Body: body})
	require.NoError(t, err)
	return data
}

// installRig is a jobs service with its artifact store and a broker, and the fleet's
// signing key: what a device's real installs talk to.
type installRig struct {
	t         *testing.T
	svc       *jobs.Service
	brokerURL string
	pub       ed25519.PublicKey
	priv      ed25519.PrivateKey
}

func newInstallRig(t *testing.T) *installRig {
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
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	return &installRig{t: t, svc: svc, brokerURL: b.URL, pub: pub, priv: priv}
}

// artifact uploads a core tarball for version and describes it, signed (or forged).
func (r *installRig) artifact(version string, forged bool) *jobdoc.Artifact {
	return r.upload("core-"+version+".tar.gz", coreTarball(r.t, version), forged)
}

// upload puts data in the artifact store and describes it as a job document's artifact.
func (r *installRig) upload(key string, data []byte, forged bool) *jobdoc.Artifact {
	_, err := r.svc.PutArtifact("releases", key, bytes.NewReader(data))
	require.NoError(r.t, err)
	sum := sha256.Sum256(data)
	sig := ed25519.Sign(r.priv, sum[:])
	if forged {
		sig[0] ^= 0xff
	}
	return &jobdoc.Artifact{URL: "${aws:iot:s3-presigned-url:https://s3.amazonaws.com/releases/" + key + "}",
		Size: int64(len(data)), SHA256: hex.EncodeToString(sum[:]), Signature: hex.EncodeToString(sig)}
}

// create queues a core update job for dev-1.
func (r *installRig) create(jobID, version string, art *jobdoc.Artifact, bakeSeconds int, health ...string) {
	d := jobdoc.Document{Type: jobdoc.Type, SchemaVersion: jobdoc.SchemaVersion, Operation: jobdoc.OpUpdate, RolloutID: "r",
		SoftwareToUpdate: jobdoc.SoftwareCore, Version: version, Artifact: art, BakeSeconds: bakeSeconds}
	if len(health) > 0 {
		d.HealthCheck = &jobdoc.HealthCheck{Command: health}
	}
	r.createDoc(jobID, d)
}

// createDoc queues a job with document d for dev-1.
func (r *installRig) createDoc(jobID string, d jobdoc.Document) {
	body, err := d.Marshal()
	require.NoError(r.t, err)
	_, err = r.svc.CreateJob(jobs.CreateJobInput{JobID: jobID, Targets: []string{"dev-1"}, Document: body,
		Presign: &jobs.PresignConfig{RoleArn: "arn:aws:iam::0:role/s", ExpiresInSec: 600}})
	require.NoError(r.t, err)
}

// TestRealInstallPath runs the agent's real install path against the jobs service's artifact
// store: signed download, slot install, atomic switch, health check, rollback.
func TestRealInstallPath(t *testing.T) {
	r := newInstallRig(t)
	artifactFor := r.artifact
	job := func(id, version string, art *jobdoc.Artifact, health ...string) *jobs.Execution {
		r.create(id, version, art, 0, health...)
		return waitTerminal(t, r.svc, id, "dev-1")
	}

	root := t.TempDir()
	a, err := agent.New(agent.Config{ThingName: "dev-1", BrokerURL: r.brokerURL, StateDir: t.TempDir(), InitialVersion: "1.0.0", Logger: zerolog.Nop(),
		Installer: &agent.SlotInstaller{Root: root, PublicKey: r.pub, Env: []string{"INVOCATION_ID=test"}}})
	require.NoError(t, err)
	runAgent(t, a)
	core := slots.Slots{Root: filepath.Join(root, "core")}

	e := job("good", "2.0.0", artifactFor("2.0.0", false), "true")
	require.Equal(t, jobs.ExecSucceeded, e.Status, e.StatusDetails["reason"])
	require.Equal(t, "2.0.0", core.Current())
	out, err := os.ReadFile(filepath.Join(root, "core", "current", "bin", "core"))
	require.NoError(t, err)
	require.Contains(t, string(out), "core 2.0.0")

	e = job("unhealthy", "3.0.0", artifactFor("3.0.0", false), "false")
	require.Equal(t, jobs.ExecFailed, e.Status)
	require.Contains(t, e.StatusDetails["reason"], "health check of 3.0.0 failed")
	require.Contains(t, e.StatusDetails["reason"], "rolled back to 2.0.0")
	require.Equal(t, "2.0.0", core.Current(), "the device is back on the old version")
	require.Equal(t, "2.0.0", a.InstalledVersion("core"))

	e = job("forged", "3.1.0", artifactFor("3.1.0", true), "true")
	require.Equal(t, jobs.ExecFailed, e.Status)
	require.Contains(t, e.StatusDetails["reason"], "signature does not match")
	require.Equal(t, "2.0.0", core.Current(), "nothing was switched")

	e = job("downgrade", "1.5.0", artifactFor("1.5.0", false), "true")
	require.Equal(t, jobs.ExecRejected, e.Status)
	require.Contains(t, e.StatusDetails["reason"], "downgrade needs a rollback job")
	require.Equal(t, "2.0.0", core.Current())
}
