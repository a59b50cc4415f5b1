package stack_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/stretchr/testify/require"

	"github.com/otaflow/otaflow/internal/pki"
	"github.com/otaflow/otaflow/internal/stack"
)

// connectWith connects an MQTT client as clientID with a certificate and key (PEM) to the
// stack's mutual-TLS listener; lost is closed when the broker drops it.
func connectWith(t *testing.T, s *stack.Stack, clientID, certPEM, keyPEM string) (paho.Client, <-chan struct{}, error) {
	pair, err := tls.X509KeyPair([]byte(certPEM), []byte(keyPEM))
	require.NoError(t, err)
	lost := make(chan struct{})
	opts := paho.NewClientOptions().AddBroker(s.Broker.TLSURL()).SetClientID(clientID).SetAutoReconnect(false).
		SetConnectTimeout(5 * time.Second).
		SetTLSConfig(&tls.Config{Certificates: []tls.Certificate{pair}, RootCAs: s.CA.Pool(), MinVersion: tls.VersionTLS12}).
		SetConnectionLostHandler(func(paho.Client, error) { close(lost) })
	c := paho.NewClient(opts)
	tok := c.Connect()
	if !tok.WaitTimeout(10 * time.Second) {
		return nil, nil, os.ErrDeadlineExceeded
	}
	if tok.Error() != nil {
		return nil, nil, tok.Error()
	}
	t.Cleanup(func() { c.Disconnect(0) })
	return c, lost, nil
}

// Device identity as AWS IoT manages it, through the AWS CLI: a certificate made by the
// service (keys and certificate, or from a device's CSR), attached to a thing, lets that thing
// connect and no other; revoked, it drops the device at once and never works again; it can
// be deleted only once inactive and detached.
func TestDeviceIdentityThroughAWSCLI(t *testing.T) {
	s := startStack(t)
	iot := iotCLI(t, s.JobsURL)
	var created struct {
		CertificateArn, CertificateID, CertificatePem string
		KeyPair                                       struct{ PublicKey, PrivateKey string }
	}
	require.NoError(t, json.Unmarshal([]byte(iot("create-keys-and-certificate", "--set-as-active")), &created))
	require.Len(t, created.CertificateID, 64)
	require.Contains(t, created.KeyPair.PrivateKey, "PRIVATE KEY")
	iot("create-thing", "--thing-name", "cert-dev")
	iot("create-thing", "--thing-name", "other-dev")

	_, _, err := connectWith(t, s, "cert-dev", created.CertificatePem, created.KeyPair.PrivateKey)
	require.Error(t, err, "a registered certificate attached to no thing connects nothing")
	iot("attach-thing-principal", "--thing-name", "cert-dev", "--principal", created.CertificateArn)
	require.JSONEq(t, `{"principals":["`+created.CertificateArn+`"]}`, iot("list-thing-principals", "--thing-name", "cert-dev"))
	require.JSONEq(t, `{"things":["cert-dev"]}`, iot("list-principal-things", "--principal", created.CertificateArn))
	var desc struct {
		CertificateDescription struct{ Status, CertificateId, OwnedBy string }
	}
	require.NoError(t, json.Unmarshal([]byte(iot("describe-certificate", "--certificate-id", created.CertificateID)), &desc))
	require.Equal(t, "ACTIVE", desc.CertificateDescription.Status)
	require.Contains(t, iot("list-certificates"), created.CertificateID)

	_, _, err = connectWith(t, s, "other-dev", created.CertificatePem, created.KeyPair.PrivateKey)
	require.Error(t, err, "the certificate is cert-dev's, not other-dev's")
	_, lost, err := connectWith(t, s, "cert-dev", created.CertificatePem, created.KeyPair.PrivateKey)
	require.NoError(t, err, "attached and active: the thing connects")

	// A stolen device: revoke its certificate. The device is dropped at once and cannot come back.
	iot("update-certificate", "--certificate-id", created.CertificateID, "--new-status", "REVOKED")
	select {
	case <-lost:
	case <-time.After(10 * time.Second):
		t.Fatal("the device using the revoked certificate is still connected")
	}
	_, _, err = connectWith(t, s, "cert-dev", created.CertificatePem, created.KeyPair.PrivateKey)
	require.Error(t, err, "a revoked certificate connects nothing")
	_, stderr, err := awsCLI(t, s.JobsURL, "iot", "update-certificate", "--certificate-id", created.CertificateID, "--new-status", "ACTIVE")
	require.Error(t, err)
	require.Contains(t, string(stderr), "CertificateStateException")

	_, stderr, err = awsCLI(t, s.JobsURL, "iot", "delete-certificate", "--certificate-id", created.CertificateID)
	require.Error(t, err)
	require.Contains(t, string(stderr), "DeleteConflictException", "attached to cert-dev")
	_, stderr, err = awsCLI(t, s.JobsURL, "iot", "delete-thing", "--thing-name", "cert-dev")
	require.Error(t, err)
	require.Contains(t, string(stderr), "principal", "a thing with a principal attached is not deleted")
	iot("detach-thing-principal", "--thing-name", "cert-dev", "--principal", created.CertificateArn)
	iot("delete-certificate", "--certificate-id", created.CertificateID)
	_, stderr, err = awsCLI(t, s.JobsURL, "iot", "describe-certificate", "--certificate-id", created.CertificateID)
	require.Error(t, err)
	require.Contains(t, string(stderr), "ResourceNotFoundException")

	// From a CSR: the private key never leaves the device.
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	csrDER, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "factory-0042"}}, key)
	require.NoError(t, err)
	csrFile := filepath.Join(t.TempDir(), "device.csr")
	require.NoError(t, os.WriteFile(csrFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csrDER}), 0o600))
	var fromCSR struct{ CertificateArn, CertificateID, CertificatePem string }
	require.NoError(t, json.Unmarshal([]byte(iot("create-certificate-from-csr", "--certificate-signing-request", "file://"+csrFile, "--set-as-active")), &fromCSR))
	iot("attach-thing-principal", "--thing-name", "other-dev", "--principal", fromCSR.CertificateArn)
	kder, err := x509.MarshalECPrivateKey(key)
	require.NoError(t, err)
	keyPEM := string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}))
	_, _, err = connectWith(t, s, "other-dev", fromCSR.CertificatePem, keyPEM)
	require.NoError(t, err, "the CSR's certificate connects the thing it is attached to")
	_, stderr, err = awsCLI(t, s.JobsURL, "iot", "create-certificate-from-csr", "--certificate-signing-request", "not a csr")
	require.Error(t, err)
	require.Contains(t, string(stderr), "InvalidRequestException")

	// A certificate the devices' CA signed elsewhere: unknown to the registry, it connects
	// nothing, even as the thing its common name names; registered, the registry decides.
	iot("create-thing", "--thing-name", "legacy-dev")
	dir := t.TempDir()
	certFile, keyFile, err := s.CA.IssueFiles(dir, "legacy-dev", false)
	require.NoError(t, err)
	certPEM, _ := os.ReadFile(certFile)
	legacyKey, _ := os.ReadFile(keyFile)
	_, _, err = connectWith(t, s, "legacy-dev", string(certPEM), string(legacyKey))
	require.Error(t, err, "an unregistered certificate connects nothing")
	var registered struct{ CertificateArn, CertificateID string }
	require.NoError(t, json.Unmarshal([]byte(iot("register-certificate", "--certificate-pem", "file://"+certFile, "--set-as-active")), &registered))
	_, _, err = connectWith(t, s, "legacy-dev", string(certPEM), string(legacyKey))
	require.Error(t, err, "registered, it must be attached like any other")
	iot("attach-thing-principal", "--thing-name", "legacy-dev", "--principal", registered.CertificateArn)
	_, _, err = connectWith(t, s, "legacy-dev", string(certPEM), string(legacyKey))
	require.NoError(t, err)
	otherCA, err := pki.Open(t.TempDir())
	require.NoError(t, err)
	foreign, _, err := otherCA.IssueFiles(t.TempDir(), "legacy-dev", false)
	require.NoError(t, err)
	_, stderr, err = awsCLI(t, s.JobsURL, "iot", "register-certificate", "--certificate-pem", "file://"+foreign)
	require.Error(t, err)
	require.Contains(t, string(stderr), "CertificateValidationException")

	// A CA named with the certificate must be the one registered here, and must have signed it.
	_, stderr, err = awsCLI(t, s.JobsURL, "iot", "register-certificate", "--certificate-pem", "file://"+foreign, "--ca-certificate-pem", "file://"+otherCA.CertFile())
	require.Error(t, err)
	require.Contains(t, string(stderr), "names a CA that is not registered here")
	_, stderr, err = awsCLI(t, s.JobsURL, "iot", "register-certificate", "--certificate-pem", "file://"+foreign, "--ca-certificate-pem", "file://"+s.CA.CertFile())
	require.Error(t, err)
	require.Contains(t, string(stderr), "not signed by the CA in caCertificatePem")
	other, _, err := s.CA.IssueFiles(t.TempDir(), "legacy-dev-2", false)
	require.NoError(t, err)
	_, stderr, err = awsCLI(t, s.JobsURL, "iot", "register-certificate", "--certificate-pem", "file://"+other, "--ca-certificate-pem", "file://"+s.CA.CertFile())
	require.NoError(t, err, "its own CA named: %s", stderr)

	// A certificate no CA here signed (self-signed, a factory's own CA): refused at the TLS
	// handshake until registered without a CA; then, attached and ACTIVE, it connects its thing.
	selfKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "self-signed"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	selfDER, err := x509.CreateCertificate(rand.Reader, tpl, tpl, &selfKey.PublicKey, selfKey)
	require.NoError(t, err)
	selfPEM := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: selfDER}))
	selfKeyDER, err := x509.MarshalECPrivateKey(selfKey)
	require.NoError(t, err)
	selfKeyPEM := string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: selfKeyDER}))
	iot("create-thing", "--thing-name", "byo-dev")
	_, _, err = connectWith(t, s, "byo-dev", selfPEM, selfKeyPEM)
	require.Error(t, err, "no CA here signed it and it is not registered")
	selfFile := filepath.Join(t.TempDir(), "self.pem")
	require.NoError(t, os.WriteFile(selfFile, []byte(selfPEM), 0o644))
	var noCA struct{ CertificateArn, CertificateId string }
	require.NoError(t, json.Unmarshal([]byte(iot("register-certificate-without-ca", "--certificate-pem", "file://"+selfFile, "--status", "ACTIVE")), &noCA))
	require.Contains(t, iot("describe-certificate", "--certificate-id", noCA.CertificateId), `"certificateMode": "SNI_ONLY"`)
	_, _, err = connectWith(t, s, "byo-dev", selfPEM, selfKeyPEM)
	require.Error(t, err, "registered, but attached to no thing, and byo-dev is a thing: not a claim either")
	iot("attach-thing-principal", "--thing-name", "byo-dev", "--principal", noCA.CertificateArn)
	_, lost, err = connectWith(t, s, "byo-dev", selfPEM, selfKeyPEM)
	require.NoError(t, err)
	iot("update-certificate", "--certificate-id", noCA.CertificateId, "--new-status", "INACTIVE")
	select {
	case <-lost:
	case <-time.After(10 * time.Second):
		t.Fatal("the device using the deactivated certificate is still connected")
	}
	_, _, err = connectWith(t, s, "byo-dev", selfPEM, selfKeyPEM)
	require.Error(t, err, "inactive: refused, at the handshake already")
}
