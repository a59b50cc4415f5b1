package agent_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/otaflow/otaflow/internal/agent"
	"github.com/otaflow/otaflow/internal/broker"
	"github.com/otaflow/otaflow/internal/fleet"
	"github.com/otaflow/otaflow/internal/jobs"
	"github.com/otaflow/otaflow/internal/mqtttest"
)

// testCA issues certificates as AWS IoT does: a CA, the broker's server certificate and one
// certificate per device whose common name is the thing name.
type testCA struct {
	t    *testing.T
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	dir  string
}

func newTestCA(t *testing.T) *testCA {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "otaflow test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true,
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	cert, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	ca := &testCA{t: t, cert: cert, key: key, dir: t.TempDir()}
	ca.write("ca.pem", "CERTIFICATE", der)
	return ca
}

func (ca *testCA) write(name, kind string, der []byte) string {
	p := filepath.Join(ca.dir, name)
	require.NoError(ca.t, os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der}), 0o600))
	return p
}

// issue returns the certificate and key files for cn.
func (ca *testCA) issue(cn string, server bool) (certFile, keyFile string) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(ca.t, err)
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	require.NoError(ca.t, err)
	kder, err := x509.MarshalECPrivateKey(key)
	require.NoError(ca.t, err)
	return ca.write(cn+".crt", "CERTIFICATE", der), ca.write(cn+".key", "EC PRIVATE KEY", kder)
}

// TestAgentMutualTLSWithALPN connects the agent as it connects to AWS IoT Core: mutual TLS
// with its device certificate, offering ALPN x-amzn-mqtt-ca (port 443 style). A certificate
// issued to another thing is refused.
func TestAgentMutualTLSWithALPN(t *testing.T) {
	ca := newTestCA(t)
	srvCert, srvKey := ca.issue("broker", true)
	pair, err := tls.LoadX509KeyPair(srvCert, srvKey)
	require.NoError(t, err)
	pool := x509.NewCertPool()
	pool.AddCert(ca.cert)
	var mu sync.Mutex
	var negotiated []string
	b, err := broker.Start(broker.Options{Addr: "127.0.0.1:0", TLSAddr: "127.0.0.1:0", ServiceUser: mqtttest.ServiceUser, ServicePassword: mqtttest.ServicePassword,
		Logger: zerolog.Nop(), TLS: &tls.Config{Certificates: []tls.Certificate{pair}, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert,
			NextProtos: []string{agent.ALPNProtocol},
			VerifyConnection: func(cs tls.ConnectionState) error {
				mu.Lock()
				negotiated = append(negotiated, cs.NegotiatedProtocol)
				mu.Unlock()
				return nil
			}}})
	require.NoError(t, err)
	t.Cleanup(func() { b.Close() })

	svc, err := jobs.Open(jobs.Options{Path: filepath.Join(t.TempDir(), "jobs.db"), Logger: zerolog.Nop()})
	require.NoError(t, err)
	t.Cleanup(func() { svc.Close() })
	plane, err := svc.ServeMQTT(jobs.MQTTOptions{BrokerURL: b.URL(), Username: mqtttest.ServiceUser, Password: mqtttest.ServicePassword, Logger: zerolog.Nop()})
	require.NoError(t, err)
	t.Cleanup(plane.Close)
	_, err = svc.CreateThing("dev-1", nil)
	require.NoError(t, err)
	_, err = svc.CreateJob(jobs.CreateJobInput{JobID: "over-tls", Targets: []string{"dev-1"}, Document: doc(t, "1.1.0")})
	require.NoError(t, err)

	newAgent := func(certCN string, log zerolog.Logger) *agent.Agent {
		cert, key := ca.issue(certCN, false)
		tc, err := agent.TLSFiles{CAFile: filepath.Join(ca.dir, "ca.pem"), CertFile: cert, KeyFile: key, ALPN: true}.Config()
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
	require.Equal(t, jobs.ExecQueued, e.Status)

	runAgent(t, newAgent("dev-1", zerolog.Nop()))
	e = waitTerminal(t, svc, "over-tls", "dev-1")
	require.Equal(t, jobs.ExecSucceeded, e.Status)
	mu.Lock()
	defer mu.Unlock()
	require.Contains(t, negotiated, agent.ALPNProtocol)

	_, err = agent.TLSFiles{CertFile: "/nonexistent.crt", KeyFile: "/nonexistent.key"}.Config()
	require.ErrorContains(t, err, "load device certificate")
	_, err = agent.TLSFiles{CAFile: "x"}.Config()
	require.ErrorContains(t, err, "needs both")
}
