package agent_test

import (
	"bytes"
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
	"github.com/otaflow/otaflow/internal/localiot"
	"github.com/otaflow/otaflow/internal/localiot/mqttplane"
	"github.com/otaflow/otaflow/internal/localiot/rest"
	"github.com/otaflow/otaflow/internal/localiot/store"
	"github.com/otaflow/otaflow/internal/mqtttest"
	"github.com/otaflow/otaflow/internal/platform"
	"github.com/otaflow/otaflow/internal/release"
	"github.com/otaflow/otaflow/internal/tuf"
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

// installRig is a jobs service with its artifact store and a broker, and the fleet's TUF
// release repository: what a device's real installs talk to.
type installRig struct {
	t         *testing.T
	svc       *localiot.Service
	brokerURL string
	httpURL   string
	repo      *tuf.Repo
}

func newInstallRig(t *testing.T) *installRig {
	b := mqtttest.Embedded(t)
	svc, err := localiot.Open(localiot.Options{Path: filepath.Join(t.TempDir(), "jobs.db"), Logger: zerolog.Nop(), SweepInterval: 50 * time.Millisecond})
	require.NoError(t, err)
	t.Cleanup(func() { svc.Close() })
	srv := httptest.NewServer(rest.Handler(svc, &rest.SigV4Verifier{Creds: rest.Credentials{AccessKeyID: "k", SecretAccessKey: "s"}, Region: "us-east-1"}))
	t.Cleanup(srv.Close)
	svc.SetBaseURL(srv.URL)
	plane, err := mqttplane.Serve(svc, mqttplane.Options{BrokerURL: b.URL, Username: mqtttest.ServiceUser, Password: mqtttest.ServicePassword, Logger: zerolog.Nop()})
	require.NoError(t, err)
	t.Cleanup(plane.Close)
	_, err = svc.CreateThing("dev-1", nil)
	require.NoError(t, err)
	repo, err := tuf.Init(filepath.Join(t.TempDir(), "release"), tuf.Options{})
	require.NoError(t, err)
	return &installRig{t: t, svc: svc, brokerURL: b.URL, httpURL: srv.URL, repo: repo}
}

// trust is a device's TUF client (its own metadata cache) for the rig's repository.
func (r *installRig) trust() *tuf.Client {
	root, err := r.repo.Root()
	require.NoError(r.t, err)
	return &tuf.Client{MetadataURL: release.MetadataURL(r.httpURL, "releases"), TrustedRoot: root, Dir: r.t.TempDir()}
}

// installer is the agent's real installer on root, trusting the rig's repository.
func (r *installRig) installer(root string) *agent.SlotInstaller {
	return &agent.SlotInstaller{Root: root, Trust: r.trust(), Platform: platform.Platform{OS: "ubuntu", Arch: "x86_64"}, AllowHTTP: true, Env: []string{"INVOCATION_ID=test"}}
}

// artifact signs and uploads a core release of version with the health check.
func (r *installRig) artifact(version string, health ...string) *jobdoc.Artifact {
	c := tuf.Custom{Software: jobdoc.SoftwareCore, Version: version, OS: "ubuntu", Architecture: "x86_64"}
	if len(health) > 0 {
		c.HealthCheck = &tuf.HealthCheck{Command: health}
	}
	return r.sign(coreTarball(r.t, version), c)
}

// sign signs data as the release c names, uploads it and the repository's metadata, and
// returns the job document's artifact for it.
func (r *installRig) sign(data []byte, c tuf.Custom) *jobdoc.Artifact {
	file := filepath.Join(r.t.TempDir(), "release.tar.gz")
	require.NoError(r.t, os.WriteFile(file, data, 0o644))
	_, err := r.repo.AddTarget(tuf.TargetName(c.Software, c.Version), file, c)
	require.NoError(r.t, err)
	r.publishMetadata()
	return r.upload(c.Software+"/"+c.Version+".tar.gz", data)
}

// publishMetadata puts the repository's metadata where devices fetch it.
func (r *installRig) publishMetadata() {
	files, err := r.repo.Files()
	require.NoError(r.t, err)
	for name, raw := range files {
		_, err := r.svc.PutArtifact("releases", release.MetadataKey(name), bytes.NewReader(raw))
		require.NoError(r.t, err)
	}
}

// upload puts data in the artifact store, unsigned, and returns a job document's artifact
// pointing at it.
func (r *installRig) upload(key string, data []byte) *jobdoc.Artifact {
	_, err := r.svc.PutArtifact("releases", key, bytes.NewReader(data))
	require.NoError(r.t, err)
	return &jobdoc.Artifact{URL: "${aws:iot:s3-presigned-url:https://s3.amazonaws.com/releases/" + key + "}"}
}

// create queues a core update job for dev-1.
func (r *installRig) create(jobID, version string, art *jobdoc.Artifact, bakeSeconds int) {
	r.createDoc(jobID, jobdoc.Document{Type: jobdoc.Type, SchemaVersion: jobdoc.SchemaVersion, Operation: jobdoc.OpUpdate, RolloutID: "r",
		SoftwareToUpdate: jobdoc.SoftwareCore, Version: version, Artifact: art, BakeSeconds: bakeSeconds})
}

// createDoc queues a job with document d for dev-1.
func (r *installRig) createDoc(jobID string, d jobdoc.Document) {
	body, err := d.Marshal()
	require.NoError(r.t, err)
	_, err = r.svc.CreateJob(localiot.CreateJobInput{JobID: jobID, Targets: []string{"dev-1"}, Document: body,
		Presign: &store.PresignConfig{RoleArn: "arn:aws:iam::0:role/s", ExpiresInSec: 600}})
	require.NoError(r.t, err)
}

// TestRealInstallPath runs the agent's real install path against the jobs service's artifact
// store: TUF-verified download, slot install, atomic switch, signed health check, rollback.
func TestRealInstallPath(t *testing.T) {
	r := newInstallRig(t)
	job := func(id, version string, art *jobdoc.Artifact) *store.Execution {
		r.create(id, version, art, 0)
		return waitTerminal(t, r.svc, id, "dev-1")
	}

	root := t.TempDir()
	a, err := agent.New(agent.Config{ThingName: "dev-1", BrokerURL: r.brokerURL, StateDir: t.TempDir(), InitialVersion: "1.0.0", Logger: zerolog.Nop(),
		Installer: r.installer(root)})
	require.NoError(t, err)
	runAgent(t, a)
	core := slots.Slots{Root: filepath.Join(root, "core")}

	e := job("good", "2.0.0", r.artifact("2.0.0", "true"))
	require.Equal(t, store.ExecSucceeded, e.Status, e.StatusDetails["reason"])
	require.Equal(t, "2.0.0", core.Current())
	out, err := os.ReadFile(filepath.Join(root, "core", "current", "bin", "core"))
	require.NoError(t, err)
	require.Contains(t, string(out), "core 2.0.0")

	e = job("unhealthy", "3.0.0", r.artifact("3.0.0", "false"))
	require.Equal(t, store.ExecFailed, e.Status)
	require.Contains(t, e.StatusDetails["reason"], "health check of 3.0.0 failed")
	require.Contains(t, e.StatusDetails["reason"], "rolled back to 2.0.0")
	require.Equal(t, "2.0.0", core.Current(), "the device is back on the old version")
	require.Equal(t, "2.0.0", a.InstalledVersion("core"))

	// Relabelling: the signed 2.0.0 package offered as 9.9.9, a version nobody signed, is
	// refused before anything is downloaded; the real newer release still installs after.
	e = job("relabelled", "9.9.9", r.upload("core/9.9.9.tar.gz", coreTarball(t, "2.0.0")))
	require.Equal(t, store.ExecRejected, e.Status)
	require.Contains(t, e.StatusDetails["reason"], "not a signed target")
	require.Equal(t, "2.0.0", core.Current(), "nothing was switched")
	e = job("real-newer", "3.1.0", r.artifact("3.1.0", "true"))
	require.Equal(t, store.ExecSucceeded, e.Status, e.StatusDetails["reason"])

	e = job("downgrade", "1.5.0", r.artifact("1.5.0", "true"))
	require.Equal(t, store.ExecRejected, e.Status)
	require.Contains(t, e.StatusDetails["reason"], "downgrade needs a rollback job")
	require.Equal(t, "3.1.0", core.Current())
}
