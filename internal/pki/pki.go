// Package pki is the local certificate authority of `starter dev` and `starter demo`: it
// issues the broker's server certificate and one client certificate per device whose common
// name is the thing name, as AWS IoT does. The broker takes a device's identity from its
// certificate, never from the client ID it chooses.
package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// CA is a certificate authority kept in Dir (ca.pem, and ca.key with mode 0600).
type CA struct {
	Dir  string
	Cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

// Validity of what the CA issues.
const (
	caValidity   = 10 * 365 * 24 * time.Hour
	certValidity = 2 * 365 * 24 * time.Hour
)

// Open loads the CA in dir, creating it on first use.
func Open(dir string) (*CA, error) {
	if _, err := os.Stat(filepath.Join(dir, "ca.key")); errors.Is(err, os.ErrNotExist) {
		return create(dir, filepath.Join(dir, "ca.pem"), filepath.Join(dir, "ca.key"))
	}
	return Load(dir)
}

// Load loads the CA in dir (ca.pem and ca.key), never creating one: a service that signs
// device certificates must use the CA the broker trusts, not a new one.
func Load(dir string) (*CA, error) {
	certFile, keyFile := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "ca.key")
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("load the local CA from %s: %w", dir, err)
	}
	cert, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return nil, err
	}
	key, ok := pair.PrivateKey.(*ecdsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("%s is not an ECDSA key", keyFile)
	}
	return &CA{Dir: dir, Cert: cert, key: key}, nil
}

func create(dir, certFile, keyFile string) (*CA, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{SerialNumber: serial(), Subject: pkix.Name{CommonName: "otaflow local CA", Organization: []string{"otaflow"}},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(caValidity), IsCA: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign, BasicConstraintsValid: true, MaxPathLenZero: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	if err := writePEM(keyFile, key); err != nil {
		return nil, err
	}
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return nil, err
	}
	return &CA{Dir: dir, Cert: cert, key: key}, nil
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	return n
}

func writePEM(path string, key *ecdsa.PrivateKey) error {
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), 0o600)
}

// CertFile is the CA certificate devices trust (agent --ca).
func (ca *CA) CertFile() string { return filepath.Join(ca.Dir, "ca.pem") }

// Pool holds the CA certificate.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

// issue signs a new key's certificate for cn.
func (ca *CA) issue(cn string, usage x509.ExtKeyUsage, hosts []string) (tls.Certificate, []byte, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, nil, nil, err
	}
	tmpl := &x509.Certificate{SerialNumber: serial(), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(certValidity),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage}}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.key)
	if err != nil {
		return tls.Certificate{}, nil, nil, err
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return tls.Certificate{}, nil, nil, err
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	return pair, certPEM, keyPEM, err
}

// ServerTLS is the broker's mutual-TLS configuration: a server certificate for hosts, and
// client certificates required and verified against this CA.
func (ca *CA) ServerTLS(hosts ...string) (*tls.Config, error) {
	pair, _, _, err := ca.issue("otaflow broker", x509.ExtKeyUsageServerAuth, hosts)
	if err != nil {
		return nil, err
	}
	return &tls.Config{Certificates: []tls.Certificate{pair}, ClientCAs: ca.Pool(), ClientAuth: tls.RequireAndVerifyClientCert,
		MinVersion: tls.VersionTLS12}, nil
}

// IssueFiles writes a certificate and key for cn into dir (<cn>.crt, <cn>.key with mode 0600)
// and returns their paths. server issues a server certificate for hosts instead of a client
// one.
func (ca *CA) IssueFiles(dir, cn string, server bool, hosts ...string) (certFile, keyFile string, err error) {
	usage := x509.ExtKeyUsageClientAuth
	if server {
		usage = x509.ExtKeyUsageServerAuth
	}
	_, certPEM, keyPEM, err := ca.issue(cn, usage, hosts)
	if err != nil {
		return "", "", err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", "", err
	}
	certFile, keyFile = filepath.Join(dir, cn+".crt"), filepath.Join(dir, cn+".key")
	if err := os.WriteFile(keyFile, keyPEM, 0o600); err != nil {
		return "", "", err
	}
	return certFile, keyFile, os.WriteFile(certFile, certPEM, 0o644)
}

// ClientTLS is a device's configuration for thing: its certificate, and this CA for the
// broker's.
func (ca *CA) ClientTLS(thing string) (*tls.Config, error) {
	pair, _, _, err := ca.issue(thing, x509.ExtKeyUsageClientAuth, nil)
	if err != nil {
		return nil, err
	}
	return &tls.Config{Certificates: []tls.Certificate{pair}, RootCAs: ca.Pool(), MinVersion: tls.VersionTLS12}, nil
}

// ServerTLSFiles is a broker's mutual-TLS configuration from files: its certificate and key,
// and the CA whose client certificates it accepts.
func ServerTLSFiles(certFile, keyFile, caFile string) (*tls.Config, error) {
	if certFile == "" || keyFile == "" || caFile == "" {
		return nil, errors.New("the broker's TLS listener needs its certificate, its key and the CA of device certificates")
	}
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("load the broker's certificate %s and key %s: %w", certFile, keyFile, err)
	}
	raw, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("read the device CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(raw) {
		return nil, fmt.Errorf("%s holds no PEM certificate", caFile)
	}
	return &tls.Config{Certificates: []tls.Certificate{pair}, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12}, nil
}

// IssueClient signs a new key pair's client certificate for cn (as AWS IoT's
// CreateKeysAndCertificate does): the certificate, its public key and its private key, in PEM.
func (ca *CA) IssueClient(cn string) (certPEM, publicPEM, privatePEM []byte, err error) {
	pair, certPEM, keyPEM, err := ca.issue(cn, x509.ExtKeyUsageClientAuth, nil)
	if err != nil {
		return nil, nil, nil, err
	}
	pub, err := x509.MarshalPKIXPublicKey(pair.PrivateKey.(*ecdsa.PrivateKey).Public())
	if err != nil {
		return nil, nil, nil, err
	}
	return certPEM, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}), keyPEM, nil
}

// SignCSR signs the public key of a certificate signing request (PEM) as a client
// certificate, keeping its subject, after checking the request's own signature (as AWS IoT's
// CreateCertificateFromCsr does). The private key never leaves the device.
func (ca *CA) SignCSR(csrPEM []byte) ([]byte, error) {
	block, _ := pem.Decode(csrPEM)
	if block == nil || block.Type != "CERTIFICATE REQUEST" && block.Type != "NEW CERTIFICATE REQUEST" {
		return nil, errors.New("the certificate signing request is not PEM (-----BEGIN CERTIFICATE REQUEST-----)")
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("the certificate signing request does not parse: %w", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("the certificate signing request's signature does not verify: %w", err)
	}
	tmpl := &x509.Certificate{SerialNumber: serial(), Subject: csr.Subject,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(certValidity),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, csr.PublicKey, ca.key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), nil
}

// RevocationList is a certificate revocation list (PEM) signed by this CA: the certificates
// with these serial numbers must not be accepted. number orders the lists (a later one has a
// higher number); it is valid until nextUpdate from now.
func (ca *CA) RevocationList(number int64, serials []*big.Int, nextUpdate time.Duration) ([]byte, error) {
	now := time.Now()
	entries := make([]x509.RevocationListEntry, len(serials))
	for i, s := range serials {
		entries[i] = x509.RevocationListEntry{SerialNumber: s, RevocationTime: now}
	}
	der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{Number: big.NewInt(number), ThisUpdate: now.Add(-time.Minute),
		NextUpdate: now.Add(nextUpdate), RevokedCertificateEntries: entries}, ca.Cert, ca.key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der}), nil
}
