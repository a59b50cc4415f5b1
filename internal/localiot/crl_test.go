package localiot_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"os"
	"path/filepath"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/otaflow/otaflow/internal/localiot"
	"github.com/otaflow/otaflow/internal/mqtttest"
)

// Revocation on Debian's mosquitto, which does not ask the registry: the service keeps a
// revocation list (signed by the devices' CA) that mosquitto reads as its crlfile and reloads on
// SIGHUP. A device whose certificate is revoked is refused from its next connection; a deleted
// certificate stays on the list.
func TestMosquittoRefusesARevokedCertificate(t *testing.T) {
	b := mqtttest.Mosquitto(t)
	svc, err := localiot.Open(localiot.Options{Path: filepath.Join(t.TempDir(), "jobs.db"), Logger: zerolog.Nop(),
		CA: b.CA, CRLFile: b.CRLFile, CRLReload: b.Reload})
	require.NoError(t, err)
	defer svc.Close()
	_, err = svc.CreateThing("dev-1", nil)
	require.NoError(t, err)

	// The device's certificate, from its CSR (its common name is the thing: mosquitto's ACL).
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "dev-1"}}, key)
	require.NoError(t, err)
	c, err := svc.CreateCertificateFromCsr(string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr})), true)
	require.NoError(t, err)
	require.NoError(t, svc.AttachThingPrincipal("dev-1", c.Arn))
	kder, err := x509.MarshalECPrivateKey(key)
	require.NoError(t, err)
	pair, err := tls.X509KeyPair([]byte(c.PEM), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}))
	require.NoError(t, err)
	connect := func() error {
		cl := paho.NewClient(paho.NewClientOptions().AddBroker(b.DeviceURL).SetClientID("dev-1").SetAutoReconnect(false).SetConnectTimeout(5 * time.Second).
			SetTLSConfig(&tls.Config{Certificates: []tls.Certificate{pair}, RootCAs: b.CA.Pool(), MinVersion: tls.VersionTLS12}))
		tok := cl.Connect()
		if !tok.WaitTimeout(10 * time.Second) {
			return os.ErrDeadlineExceeded
		}
		if tok.Error() == nil {
			cl.Disconnect(0)
		}
		return tok.Error()
	}
	require.NoError(t, connect(), "ACTIVE: mosquitto admits it")

	require.NoError(t, svc.UpdateCertificate(c.ID, localiot.CertRevoked))
	serial := pair.Leaf
	if serial == nil {
		serial, err = x509.ParseCertificate(pair.Certificate[0])
		require.NoError(t, err)
	}
	listed := func() bool {
		raw, err := os.ReadFile(b.CRLFile)
		require.NoError(t, err)
		block, _ := pem.Decode(raw)
		require.NotNil(t, block)
		crl, err := x509.ParseRevocationList(block.Bytes)
		require.NoError(t, err)
		require.NoError(t, crl.CheckSignatureFrom(b.CA.Cert))
		for _, e := range crl.RevokedCertificateEntries {
			if e.SerialNumber.Cmp(serial.SerialNumber) == 0 {
				return true
			}
		}
		return false
	}
	require.True(t, listed(), "the revoked certificate is on the list")
	// mosquitto handles SIGHUP between its network loops: wait for it to take the new list.
	require.Eventually(t, func() bool { return connect() != nil }, 10*time.Second, 100*time.Millisecond, "mosquitto still admits the revoked certificate")

	require.NoError(t, svc.DetachThingPrincipal("dev-1", c.Arn))
	require.NoError(t, svc.DeleteCertificate(c.ID))
	require.True(t, listed(), "deleted, it stays on the list: the CA signed it")
	require.Error(t, connect())
}
