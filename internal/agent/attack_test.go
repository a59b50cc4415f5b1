package agent_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/otaflow/otaflow/internal/agent"
	"github.com/otaflow/otaflow/internal/agent/slots"
	"github.com/otaflow/otaflow/internal/iotjobs"
	"github.com/otaflow/otaflow/internal/localiot"
	"github.com/otaflow/otaflow/internal/localiot/store"
	"github.com/otaflow/otaflow/internal/release"
	"github.com/otaflow/otaflow/internal/tuf"
)

// rawJob queues a job whose document is exactly raw, as anyone holding the REST key can
// (CreateJob takes any JSON; the rollout's own checks are not in the way).
func (r *installRig) rawJob(jobID, raw string) *store.Execution {
	_, err := r.svc.CreateJob(localiot.CreateJobInput{JobID: jobID, Targets: []string{"dev-1"}, Document: raw})
	require.NoError(r.t, err)
	return waitTerminal(r.t, r.svc, jobID, "dev-1")
}

// reportedSoftware is what the device's inventory shadow says it runs.
func (r *installRig) reportedSoftware() map[string]any {
	doc, err := r.svc.GetShadow("dev-1", iotjobs.InventoryShadow)
	require.NoError(r.t, err)
	state, _ := doc["state"].(map[string]any)
	reported, _ := state["reported"].(map[string]any)
	raw, _ := json.Marshal(reported)
	var out struct {
		Software map[string]any `json:"software"`
	}
	require.NoError(r.t, json.Unmarshal(raw, &out))
	return out.Software
}

// TestComponentsCannotDowngradeTheCore is issue #22's first attack through a real agent: a
// components job naming core wrote 0.0.1 as the installed core, after which an ordinary
// update to an old signed release passed the downgrade check (3.0.0 → 1.0.0). Now the
// document is refused, the old release stays refused, and the inventory tells the truth.
func TestComponentsCannotDowngradeTheCore(t *testing.T) {
	r := newInstallRig(t)
	root := t.TempDir()
	a, err := agent.New(agent.Config{ThingName: "dev-1", BrokerURL: r.brokerURL, StateDir: t.TempDir(), InitialVersion: "1.0.0", Logger: zerolog.Nop(),
		Installer: r.installer(root)})
	require.NoError(t, err)
	runAgent(t, a)
	core := slots.Slots{Root: filepath.Join(root, "core")}
	old := r.artifact("1.0.0", "true") // an old release, signed long ago
	r.create("to-3", "3.0.0", r.artifact("3.0.0", "true"), 0)
	e := waitTerminal(t, r.svc, "to-3", "dev-1")
	require.Equal(t, store.ExecSucceeded, e.Status, e.StatusDetails["reason"])

	for i, name := range []string{"core", "ota_agent", "Core", "components"} {
		e = r.rawJob("lie-"+string(rune('a'+i)), `{"type":"otaflow.update","schemaVersion":"1","operation":"update","softwareToUpdate":"components","components":{"`+name+`":"0.0.1"}}`)
		require.Equal(t, store.ExecRejected, e.Status, name)
		require.Contains(t, e.StatusDetails["reason"], "reserved", name)
	}
	require.Equal(t, "3.0.0", a.InstalledVersion("core"))

	r.create("down", "1.0.0", old, 0)
	e = waitTerminal(t, r.svc, "down", "dev-1")
	require.Equal(t, store.ExecRejected, e.Status)
	require.Contains(t, e.StatusDetails["reason"], "older than the installed 3.0.0")
	require.Equal(t, "3.0.0", core.Current())
	require.Eventually(t, func() bool { return r.reportedSoftware()["core"] == "3.0.0" }, 10*time.Second, 20*time.Millisecond)

	// A component version is recorded only when its recipe is signed, and apart from core.
	comp := `{"type":"otaflow.update","schemaVersion":"1","operation":"update","softwareToUpdate":"components","components":{"com.example.Cache":"1.2.0"}}`
	e = r.rawJob("unsigned-component", comp)
	require.Equal(t, store.ExecRejected, e.Status)
	require.Contains(t, e.StatusDetails["reason"], "component com.example.Cache 1.2.0 refused")
	require.Empty(t, a.InstalledVersion("com.example.Cache"))
	require.NoError(t, release.PublishComponent(context.Background(), r.repo, nil, "", "com.example.Cache", "1.2.0", []byte(`{"name":"com.example.Cache","version":"1.2.0"}`)))
	r.publishMetadata()
	e = r.rawJob("signed-component", comp)
	require.Equal(t, store.ExecSucceeded, e.Status, e.StatusDetails["reason"])
	require.Equal(t, "1.2.0", a.InstalledVersion("com.example.Cache"))
	require.Equal(t, "3.0.0", a.InstalledVersion("core"))
	require.NotContains(t, r.reportedSoftware(), "com.example.Cache", "components are reported apart from the software")
}

// TestForeignPlatformReleaseIsRejected is the attack of an armv7l/raspbian release installed
// on an x86_64 device: the signed target names its platform and the device refuses another.
// An artifact over plain HTTP is refused outside development too.
func TestForeignPlatformReleaseIsRejected(t *testing.T) {
	r := newInstallRig(t)
	root := t.TempDir()
	in := r.installer(root)
	a, err := agent.New(agent.Config{ThingName: "dev-1", BrokerURL: r.brokerURL, StateDir: t.TempDir(), InitialVersion: "1.0.0", Logger: zerolog.Nop(), Installer: in})
	require.NoError(t, err)
	runAgent(t, a)

	art := r.sign(coreTarball(t, "2.0.0"), tuf.Custom{Software: "core", Version: "2.0.0", OS: "raspbian", Architecture: "armv7l"})
	r.create("arm", "2.0.0", art, 0)
	e := waitTerminal(t, r.svc, "arm", "dev-1")
	require.Equal(t, store.ExecRejected, e.Status)
	require.Contains(t, e.StatusDetails["reason"], "built for raspbian/armv7l; this device is ubuntu/x86_64")
	require.Equal(t, "1.0.0", a.InstalledVersion("core"))
	require.Empty(t, slots.Slots{Root: filepath.Join(root, "core")}.Current(), "nothing was installed")

	// A device outside development, whose job hands it a plain HTTP artifact URL.
	r = newInstallRig(t)
	in = r.installer(t.TempDir())
	in.AllowHTTP = false
	a, err = agent.New(agent.Config{ThingName: "dev-1", BrokerURL: r.brokerURL, StateDir: t.TempDir(), InitialVersion: "1.0.0", Logger: zerolog.Nop(), Installer: in})
	require.NoError(t, err)
	runAgent(t, a)
	r.create("plain", "2.1.0", r.artifact("2.1.0", "true"), 0)
	e = waitTerminal(t, r.svc, "plain", "dev-1")
	require.Equal(t, store.ExecRejected, e.Status)
	require.Contains(t, e.StatusDetails["reason"], "plain HTTP")
	require.NotContains(t, e.StatusDetails["reason"], "X-Otaflow-Signature", "the presigned URL's signature is not shown")
	require.Equal(t, "1.0.0", a.InstalledVersion("core"))
}

// TestAPoisonedStateIsCorrected: a device whose state an earlier agent let a components job
// poison (core "0.0.1" recorded while 3.0.0 is installed) records what is installed again at
// the next start, and its component versions move apart from core.
func TestAPoisonedStateIsCorrected(t *testing.T) {
	root, stateDir := t.TempDir(), t.TempDir()
	pkg := filepath.Join(t.TempDir(), "core.tar.gz")
	require.NoError(t, os.WriteFile(pkg, coreTarball(t, "3.0.0"), 0o644))
	core := slots.Slots{Root: filepath.Join(root, "core")}
	require.NoError(t, core.Install("3.0.0", pkg))
	require.NoError(t, core.Switch("3.0.0"))
	require.NoError(t, os.WriteFile(filepath.Join(stateDir, "state.json"),
		[]byte(`{"installed":{"core":{"version":"0.0.1","previous":"3.0.0"},"aws.greengrass.Nucleus":{"version":"2.1.0"}}}`), 0o644))
	a, err := agent.New(agent.Config{ThingName: "dev-1", BrokerURL: "tcp://127.0.0.1:1", StateDir: stateDir, Logger: zerolog.Nop(),
		Installer: &agent.SlotInstaller{Root: root}})
	require.NoError(t, err)
	require.Equal(t, "3.0.0", a.InstalledVersion("core"))
	require.Equal(t, "2.1.0", a.InstalledVersion("aws.greengrass.Nucleus"))
	raw, err := os.ReadFile(filepath.Join(stateDir, "state.json"))
	require.NoError(t, err)
	require.NotContains(t, string(raw), "0.0.1")
}
