package agent_test

import (
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/otaflow/otaflow/internal/agent"
	"github.com/otaflow/otaflow/internal/agent/slots"
	"github.com/otaflow/otaflow/internal/jobdoc"
	"github.com/otaflow/otaflow/internal/localiot/store"
	"github.com/otaflow/otaflow/internal/tuf"
)

// TestSelfUpdate updates the agent itself (ota_agent) end to end: the agent runs as a process
// from its slot, installs a new agent, probes it and execs it in the same process; then a new
// agent that cannot start, and one that hangs, are refused and the running agent stays.
func TestSelfUpdate(t *testing.T) {
	r := newCrashRig(t)
	self, err := os.ReadFile(os.Args[0])
	require.NoError(t, err)
	agentSlots := slots.Slots{Root: filepath.Join(r.root, jobdoc.SoftwareOTAAgent)}
	// Installed as the README says: the first version in its slot, started through current.
	v1 := filepath.Join(agentSlots.Dir("1.0.0"), agent.AgentBinary)
	require.NoError(t, os.MkdirAll(filepath.Dir(v1), 0o755))
	require.NoError(t, os.WriteFile(v1, self, 0o755))
	require.NoError(t, agentSlots.Switch("1.0.0"))
	cmd := r.startBinary(filepath.Join(r.root, jobdoc.SoftwareOTAAgent, "current", agent.AgentBinary))
	t.Cleanup(func() { cmd.Process.Signal(syscall.SIGKILL); cmd.Wait() })
	exe := func() string {
		p, err := os.Readlink("/proc/" + strconv.Itoa(cmd.Process.Pid) + "/exe")
		require.NoError(t, err)
		return p
	}
	selfUpdate := func(jobID, version string, binary []byte) *store.Execution {
		art := r.sign(tarGz(t, agent.AgentBinary, binary), tuf.Custom{Software: jobdoc.SoftwareOTAAgent, Version: version, OS: "ubuntu", Architecture: "x86_64"})
		r.createDoc(jobID, jobdoc.Document{Type: jobdoc.Type, SchemaVersion: jobdoc.SchemaVersion, Operation: jobdoc.OpUpdate, RolloutID: "r",
			SoftwareToUpdate: jobdoc.SoftwareOTAAgent, Version: version, Artifact: art})
		return waitTerminal(t, r.svc, jobID, "dev-1")
	}

	e := selfUpdate("agent-2", "2.0.0", self)
	require.Equal(t, store.ExecSucceeded, e.Status, e.StatusDetails["reason"])
	require.Equal(t, "2.0.0", e.StatusDetails["installedVersion"])
	require.Equal(t, "2.0.0", agentSlots.Current())
	require.Equal(t, filepath.Join(agentSlots.Dir("2.0.0"), agent.AgentBinary), exe(), "the same process now runs the new agent")

	e = selfUpdate("agent-3-broken", "3.0.0", []byte("#!/bin/sh\necho 'boom: cannot read config' >&2\nexit 3\n"))
	require.Equal(t, store.ExecFailed, e.Status)
	require.Contains(t, e.StatusDetails["reason"], "new agent 3.0.0 did not start")
	require.Contains(t, e.StatusDetails["reason"], "boom: cannot read config")
	require.Contains(t, e.StatusDetails["reason"], "kept agent 2.0.0")
	require.Equal(t, "2.0.0", e.StatusDetails["installedVersion"])
	require.Equal(t, "2.0.0", agentSlots.Current(), "a broken agent is never switched to")

	e = selfUpdate("agent-3-hangs", "3.0.1", []byte("#!/bin/sh\nexec sleep 60\n"))
	require.Equal(t, store.ExecFailed, e.Status)
	require.Contains(t, e.StatusDetails["reason"], "not ready within 5s")
	require.Equal(t, "2.0.0", agentSlots.Current())

	// The agent that stayed still takes jobs.
	r.job("core-after", "1.1.0")
	e = waitTerminal(t, r.svc, "core-after", "dev-1")
	require.Equal(t, store.ExecSucceeded, e.Status, e.StatusDetails["reason"])
	require.Equal(t, filepath.Join(agentSlots.Dir("2.0.0"), agent.AgentBinary), exe())
}
