package rest

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"time"

	"golang.org/x/net/netutil"
)

// ServerOptions bound what one client can hold of the REST listener.
type ServerOptions struct {
	// MaxConnections caps concurrent connections (default DefaultMaxConnections); more wait
	// in the kernel's accept queue.
	MaxConnections int
	// CertFile and KeyFile, when set, serve HTTPS (the REST API, artifacts, TUF metadata and
	// the console).
	CertFile, KeyFile string
}

// DefaultMaxConnections is the REST listener's connection cap: well above what a rollout's
// downloads and the operators need, well below the 20,000 files a process may hold.
const DefaultMaxConnections = 4096

// Server is the REST listener with its limits: a request's headers must arrive within 10 s,
// an unauthenticated body within 30 s (SigV4Verifier), an idle keep-alive connection closes
// after 2 minutes, headers are at most 64 KiB, and connections are capped.
type Server struct {
	*http.Server
	ln  net.Listener
	tls bool
}

// NewServer wraps ln (already listening) with the limits and, with a certificate, TLS.
func NewServer(ln net.Listener, h http.Handler, o ServerOptions) (*Server, error) {
	n := o.MaxConnections
	if n <= 0 {
		n = DefaultMaxConnections
	}
	s := &Server{Server: &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute, MaxHeaderBytes: 64 << 10},
		ln: netutil.LimitListener(ln, n)}
	if o.CertFile != "" || o.KeyFile != "" {
		if o.CertFile == "" || o.KeyFile == "" {
			return nil, fmt.Errorf("--tls-cert and --tls-key go together: the certificate (PEM, with its chain) and its private key")
		}
		cert, err := tls.LoadX509KeyPair(o.CertFile, o.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("load the REST API's TLS certificate: %w", err)
		}
		s.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
		s.ln = tls.NewListener(s.ln, s.TLSConfig)
		s.tls = true
	}
	return s, nil
}

// Scheme is "https" when the server serves TLS, else "http".
func (s *Server) Scheme() string {
	if s.tls {
		return "https"
	}
	return "http"
}

// Serve serves until Close.
func (s *Server) Serve() error { return s.Server.Serve(s.ln) }

// InProcessClient is an HTTP client whose requests h serves in this process: what the console
// reads the service through, so it needs neither a loopback connection nor the service's
// TLS certificate. Requests are still signed and checked like any other.
func InProcessClient(h http.Handler) *http.Client {
	return &http.Client{Transport: inProcess{h}}
}

type inProcess struct{ h http.Handler }

func (t inProcess) RoundTrip(req *http.Request) (*http.Response, error) {
	rec := httptest.NewRecorder()
	r := req.Clone(req.Context())
	if r.Body == nil {
		r.Body = http.NoBody
	}
	r.RemoteAddr = "in-process"
	if r.Host == "" {
		r.Host = r.URL.Host // as a server sees it: the signature covers the host
	}
	t.h.ServeHTTP(rec, r)
	resp := rec.Result()
	resp.Request = req
	return resp, nil
}
