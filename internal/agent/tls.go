package agent

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
)

// ALPNProtocol is what AWS IoT Core expects on port 443 for MQTT with a client certificate.
const ALPNProtocol = "x-amzn-mqtt-ca"

// TLSFiles name the device's credentials for mutual TLS, as AWS IoT Core wants them: the
// device certificate and key, and the CA that signed the broker's certificate (Amazon Root CA 1).
type TLSFiles struct {
	CAFile   string `json:"caFile,omitempty"`
	CertFile string `json:"certFile,omitempty"`
	KeyFile  string `json:"keyFile,omitempty"`
	// ALPN offers x-amzn-mqtt-ca, for MQTT over port 443 where 8883 is blocked.
	ALPN bool `json:"alpn,omitempty"`
}

// Enabled reports whether any TLS setting was given.
func (f TLSFiles) Enabled() bool { return f.CAFile != "" || f.CertFile != "" || f.KeyFile != "" }

// Config loads the files into a client TLS configuration.
func (f TLSFiles) Config() (*tls.Config, error) {
	if f.CertFile == "" || f.KeyFile == "" {
		return nil, fmt.Errorf("mutual TLS needs both the device certificate (--cert) and its private key (--key)")
	}
	pair, err := tls.LoadX509KeyPair(f.CertFile, f.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("load device certificate %s and key %s: %w", f.CertFile, f.KeyFile, err)
	}
	c := &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}
	if f.CAFile != "" {
		pem, err := os.ReadFile(f.CAFile)
		if err != nil {
			return nil, fmt.Errorf("read CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("CA file %s holds no PEM certificate", f.CAFile)
		}
		c.RootCAs = pool
	}
	if f.ALPN {
		c.NextProtos = []string{ALPNProtocol}
	}
	return c, nil
}
