package agent_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/otaflow/otaflow/internal/agent"
	"github.com/otaflow/otaflow/internal/broker"
	"github.com/otaflow/otaflow/internal/fleet"
	"github.com/otaflow/otaflow/internal/localiot"
	"github.com/otaflow/otaflow/internal/localiot/mqttplane"
	"github.com/otaflow/otaflow/internal/localiot/store"
	"github.com/otaflow/otaflow/internal/mqtttest"
	"github.com/otaflow/otaflow/internal/pki"
)

// TestAgentMutualTLSWithALPN connects the agent as it connects to AWS IoT Core: mutual TLS
// with its device certificate, offering ALPN x-amzn-mqtt-ca (port 443 style). A certificate
// issued to another thing is refused.
func TestAgentMutualTLSWithALPN(t *testing.T) {
	ca, err := pki.Open(t.TempDir())
	require.NoError(t, err)
	serverTLS, err := ca.ServerTLS("127.0.0.1")
	require.NoError(t, err)
	var mu sync.Mutex
	var negotiated []string
	serverTLS.NextProtos = []string{agent.ALPNProtocol}
	serverTLS.VerifyConnection = func(cs tls.ConnectionState) error {
		mu.Lock()
		negotiated = append(negotiated, cs.NegotiatedProtocol)
		mu.Unlock()
		return nil
	}
	b, err := broker.Start(broker.Options{Addr: "127.0.0.1:0", TLSAddr: "127.0.0.1:0", ServiceUser: mqtttest.ServiceUser, ServicePassword: mqtttest.ServicePassword,
		Logger: zerolog.Nop(), TLS: serverTLS})
	require.NoError(t, err)
	t.Cleanup(func() { b.Close() })

	svc, err := localiot.Open(localiot.Options{Path: filepath.Join(t.TempDir(), "jobs.db"), Logger: zerolog.Nop()})
	require.NoError(t, err)
	t.Cleanup(func() { svc.Close() })
	plane, err := mqttplane.Serve(svc, mqttplane.Options{BrokerURL: b.URL(), Username: mqtttest.ServiceUser, Password: mqtttest.ServicePassword, Logger: zerolog.Nop()})
	require.NoError(t, err)
	t.Cleanup(plane.Close)
	_, err = svc.CreateThing("dev-1", nil)
	require.NoError(t, err)
	_, err = svc.CreateJob(localiot.CreateJobInput{JobID: "over-tls", Targets: []string{"dev-1"}, Document: doc(t, "1.1.0")})
	require.NoError(t, err)

	newAgent := func(certCN string, log zerolog.Logger) *agent.Agent {
		cert, key, err := ca.IssueFiles(t.TempDir(), certCN, false)
		require.NoError(t, err)
		tc, err := agent.TLSFiles{CAFile: ca.CertFile(), CertFile: cert, KeyFile: key, ALPN: true}.Config()
		require.NoError(t, err)
		a, err := agent.New(agent.Config{ThingName: "dev-1", BrokerURL: b.TLSURL(), TLS: tc, StateDir: t.TempDir(),
			InitialVersion: "1.0.0", RequestTimeout: 2 * time.Second, Installer: fleet.SimulatedInstaller(0, nil), Logger: log})
		require.NoError(t, err)
		return a
	}

	// Another thing's certificate: the broker refuses the connection, and the agent says so.
	var logs bytes.Buffer
	impostor := newAgent("dev-2", zerolog.New(&logs))
	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancel()
	require.NoError(t, impostor.Run(ctx))
	require.Contains(t, logs.String(), "cannot connect to the broker")
	require.Contains(t, logs.String(), "not Authorized", "the log names the broker's reason")
	e, err := svc.DescribeJobExecution("over-tls", "dev-1")
	require.NoError(t, err)
	require.Equal(t, store.ExecQueued, e.Status)

	runAgent(t, newAgent("dev-1", zerolog.Nop()))
	e = waitTerminal(t, svc, "over-tls", "dev-1")
	require.Equal(t, store.ExecSucceeded, e.Status)
	mu.Lock()
	defer mu.Unlock()
	require.Contains(t, negotiated, agent.ALPNProtocol)

	_, err = agent.TLSFiles{CertFile: "/nonexistent.crt", KeyFile: "/nonexistent.key"}.Config()
	require.ErrorContains(t, err, "load device certificate")
	_, err = agent.TLSFiles{CAFile: "x"}.Config()
	require.ErrorContains(t, err, "needs both")
}
