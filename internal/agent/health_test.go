package agent_test

import (
	"bufio"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/otaflow/otaflow/internal/agent"
	"github.com/otaflow/otaflow/internal/iotjobs"
	"github.com/otaflow/otaflow/internal/localiot"
	"github.com/otaflow/otaflow/internal/localiot/store"
)

// reportedHealth is the device's health shadow, as the service holds it.
func reportedHealth(t *testing.T, svc *localiot.Service) map[string]any {
	doc, err := svc.GetShadow("dev-1", iotjobs.HealthShadow)
	if err != nil {
		return nil
	}
	state, _ := doc["state"].(map[string]any)
	rep, _ := state["reported"].(map[string]any)
	return rep
}

// TestHealthAfterAnUpdate: after an update the agent re-runs the release's signed health check
// every interval and reports its health (checks, failures, boots, reconnects, free space,
// application metrics pushed over the IPC socket, restarts of its systemd unit) in the named
// shadow "health"; a restart on a new boot counts a boot.
func TestHealthAfterAnUpdate(t *testing.T) {
	r := newInstallRig(t)
	root, stateDir := t.TempDir(), t.TempDir()
	// The managed software's unit: a systemctl that reports 4 restarts, then 7.
	bin := t.TempDir()
	restarts := filepath.Join(bin, "n")
	require.NoError(t, os.WriteFile(restarts, []byte("4\n"), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(bin, "systemctl"), []byte("#!/bin/sh\ncat "+restarts+"\n"), 0o755))
	t.Setenv("PATH", bin+":"+os.Getenv("PATH"))
	flag := filepath.Join(t.TempDir(), "broken")
	socket := filepath.Join(t.TempDir(), "agent.sock")
	boot := "boot-1"
	cfg := agent.Config{ThingName: "dev-1", BrokerURL: r.brokerURL, StateDir: stateDir, InitialVersion: "1.0.0", Logger: zerolog.Nop(),
		Installer: r.installer(root), HealthInterval: 200 * time.Millisecond, HealthWindow: time.Hour, ServiceUnit: "core.service",
		HealthDiskPath: root, IPCSocket: socket, BootID: func() string { return boot }}
	a, err := agent.New(cfg)
	require.NoError(t, err)
	stop := runAgentStoppable(t, a)

	// The health check passes until the flag file appears.
	r.create("up", "2.0.0", r.artifact("2.0.0", "sh", "-c", "test ! -e "+flag), 0)
	e := waitTerminal(t, r.svc, "up", "dev-1")
	require.Equal(t, store.ExecSucceeded, e.Status, e.StatusDetails["reason"])
	require.Eventually(t, func() bool {
		h := reportedHealth(t, r.svc)
		return h != nil && h["version"] == "2.0.0" && h["healthChecks"].(float64) >= 1 && h["healthy"] == true
	}, 10*time.Second, 50*time.Millisecond)

	// Local software reports metrics; bad ones are refused with the reason.
	conn, err := net.Dial("unix", socket)
	require.NoError(t, err)
	defer conn.Close()
	in := bufio.NewScanner(conn)
	send := func(m string) map[string]any {
		_, err := conn.Write([]byte(m + "\n"))
		require.NoError(t, err)
		require.True(t, in.Scan())
		var reply map[string]any
		require.NoError(t, json.Unmarshal(in.Bytes(), &reply))
		return reply
	}
	require.Equal(t, "ok", send(`{"op":"metric","name":"errors","value":2,"add":true}`)["type"])
	require.Equal(t, "ok", send(`{"op":"metric","name":"errors","value":1,"add":true}`)["type"])
	require.Equal(t, "ok", send(`{"op":"metric","name":"queueDepth","value":12}`)["type"])
	require.Contains(t, send(`{"op":"metric","name":"bad name!","value":1}`)["error"], "metric name")
	require.Contains(t, send(`{"op":"metric","name":"nov"}`)["error"], "numeric value")
	for i := 0; i < agent.MaxMetrics-2; i++ {
		require.Equal(t, "ok", send(`{"op":"metric","name":"m` + string(rune('a'+i)) + `","value":1}`)["type"])
	}
	require.Contains(t, send(`{"op":"metric","name":"oneTooMany","value":1}`)["error"], "at most 16 metrics")

	require.NoError(t, os.WriteFile(flag, nil, 0o644)) // the release starts misbehaving
	require.NoError(t, os.WriteFile(restarts, []byte("7\n"), 0o644))
	require.Eventually(t, func() bool {
		h := reportedHealth(t, r.svc)
		m, _ := h["metrics"].(map[string]any)
		return h != nil && h["healthCheckFailures"].(float64) >= 2 && h["healthy"] == false && m["errors"] == 3.0 && m["queueDepth"] == 12.0 &&
			h["restarts"] == 3.0 && h["freeBytes"].(float64) > 0
	}, 10*time.Second, 50*time.Millisecond, "health: %v", reportedHealth(t, r.svc))

	// A restart on a new boot counts it.
	stop()
	boot = "boot-2"
	a, err = agent.New(cfg)
	require.NoError(t, err)
	runAgent(t, a)
	require.Eventually(t, func() bool {
		h := reportedHealth(t, r.svc)
		return h != nil && h["bootsSinceUpdate"] == 1.0 && h["bootId"] == "boot-2"
	}, 10*time.Second, 50*time.Millisecond, "health: %v", reportedHealth(t, r.svc))
}
