package agent_test

import (
	"bufio"
	"encoding/json"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/otaflow/otaflow/internal/agent"
	"github.com/otaflow/otaflow/internal/fleet"
	"github.com/otaflow/otaflow/internal/localiot"
	"github.com/otaflow/otaflow/internal/localiot/store"
)

// component is a local program on the device speaking the deferral protocol.
type component struct {
	t    *testing.T
	conn net.Conn
	in   *bufio.Scanner
}

func dialComponent(t *testing.T, socket, name string) *component {
	var conn net.Conn
	require.Eventually(t, func() bool {
		var err error
		conn, err = net.Dial("unix", socket)
		return err == nil
	}, 10*time.Second, 10*time.Millisecond, "agent socket %s", socket)
	t.Cleanup(func() { conn.Close() })
	c := &component{t: t, conn: conn, in: bufio.NewScanner(conn)}
	c.send(agent.IPCMessage{Op: "subscribe", Component: name})
	require.Equal(t, "subscribed", c.next().Type)
	return c
}

func (c *component) send(m agent.IPCMessage) {
	raw, _ := json.Marshal(m)
	_, err := c.conn.Write(append(raw, '\n'))
	require.NoError(c.t, err)
}

func (c *component) next() agent.IPCMessage {
	c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	require.True(c.t, c.in.Scan(), "no message from the agent: %v", c.in.Err())
	var m agent.IPCMessage
	require.NoError(c.t, json.Unmarshal(c.in.Bytes(), &m))
	return m
}

// TestDeferral: a component defers an update twice, then lets it go; the job reports the
// deferral while it waits and in its final details. A component that keeps deferring is
// overridden at the configured limit. Garbage on the socket gets an error, not a crash.
func TestDeferral(t *testing.T) {
	svc, b := jobsOverBroker(t)

	socket := filepath.Join(t.TempDir(), "agent.sock")
	a, err := agent.New(agent.Config{ThingName: "dev-1", BrokerURL: b.URL, StateDir: t.TempDir(), InitialVersion: "1.0.0", Logger: zerolog.Nop(),
		Installer: fleet.SimulatedInstaller(0, nil), IPCSocket: socket, DeferralResponseTimeout: 2 * time.Second, MaxDeferral: 1500 * time.Millisecond})
	require.NoError(t, err)
	runAgent(t, a)
	c := dialComponent(t, socket, "com.example.Logger")

	c.send(agent.IPCMessage{Op: "explode"})
	require.Contains(t, c.next().Error, "unknown op")
	_, err = c.conn.Write([]byte("{not json\n"))
	require.NoError(t, err)
	require.Contains(t, c.next().Error, "not a JSON message")

	_, err = svc.CreateJob(localiot.CreateJobInput{JobID: "deferred", Targets: []string{"dev-1"}, Document: doc(t, "1.1.0")})
	require.NoError(t, err)
	for i := 0; i < 2; i++ {
		n := c.next()
		require.Equal(t, "update-pending", n.Type)
		require.Equal(t, "deferred", n.JobID)
		require.Equal(t, "1.1.0", n.Version)
		c.send(agent.IPCMessage{Op: "defer", JobID: n.JobID, RecheckAfterMs: 200, Message: "flushing buffers"})
		if i == 0 {
			require.Eventually(t, func() bool {
				e, _ := svc.DescribeJobExecution("deferred", "dev-1")
				return e != nil && e.StatusDetails["step"] == "deferred"
			}, 5*time.Second, 5*time.Millisecond)
			e, _ := svc.DescribeJobExecution("deferred", "dev-1")
			require.Equal(t, "com.example.Logger", e.StatusDetails["deferredBy"])
			require.Equal(t, "flushing buffers", e.StatusDetails["message"])
			require.Equal(t, "1.0.0", a.InstalledVersion("core"), "nothing is installed while deferred")
		}
	}
	n := c.next()
	c.send(agent.IPCMessage{Op: "ack", JobID: n.JobID})
	e := waitTerminal(t, svc, "deferred", "dev-1")
	require.Equal(t, store.ExecSucceeded, e.Status)
	require.Equal(t, "2", e.StatusDetails["deferrals"])
	require.Equal(t, "1.1.0", a.InstalledVersion("core"))

	// A component that never lets go is overridden at MaxDeferral.
	_, err = svc.CreateJob(localiot.CreateJobInput{JobID: "stubborn", Targets: []string{"dev-1"}, Document: doc(t, "1.2.0")})
	require.NoError(t, err)
	go func() {
		for {
			c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
			if !c.in.Scan() {
				return
			}
			var m agent.IPCMessage
			json.Unmarshal(c.in.Bytes(), &m)
			raw, _ := json.Marshal(agent.IPCMessage{Op: "defer", JobID: m.JobID, RecheckAfterMs: 400})
			c.conn.Write(append(raw, '\n'))
		}
	}()
	e = waitTerminal(t, svc, "stubborn", "dev-1")
	require.Equal(t, store.ExecSucceeded, e.Status)
	require.Contains(t, e.StatusDetails["deferralLimitReached"], "com.example.Logger asked to defer again")
	require.Equal(t, "1.2.0", a.InstalledVersion("core"))
}
