package tuf

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"
	"github.com/theupdateframework/go-tuf/v2/metadata/config"
	"github.com/theupdateframework/go-tuf/v2/metadata/updater"
)

// Client is a device's view of the release repository: it trusts TrustedRoot (then the newest
// root it has verified, kept in Dir) and fetches metadata from MetadataURL.
type Client struct {
	// MetadataURL is where root, timestamp, snapshot and targets metadata are served, e.g.
	// http://jobs:4566/tuf/otaflow-artifacts/.
	MetadataURL string
	// TrustedRoot is the root metadata the device was provisioned with.
	TrustedRoot []byte
	// Dir keeps the verified metadata between runs (rollback protection depends on it).
	Dir  string
	HTTP *http.Client
	// Now is the clock (tests move it); nil is the system clock.
	Now func() time.Time

	mu sync.Mutex
}

// Target is a target verified through TUF: its length and digest, and its signed
// instructions.
type Target struct {
	Name   string `json:"name"`
	Length int64  `json:"length"`
	SHA256 string `json:"sha256"`
	Custom
}

// VerifyError is metadata or a target that did not verify: the update must be refused.
type VerifyError struct{ Reason string }

func (e *VerifyError) Error() string { return e.Reason }

// Target refreshes the metadata (root chain, timestamp, snapshot, targets, each checked for
// signatures, expiry and rollback) and returns the named target. A *VerifyError means the
// metadata or the target is not acceptable; any other error is transient (network).
func (c *Client) Target(name string) (*Target, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := os.MkdirAll(c.Dir, 0o700); err != nil {
		return nil, err
	}
	root := c.TrustedRoot
	if raw, err := os.ReadFile(filepath.Join(c.Dir, "root.json")); err == nil {
		root = raw // the newest root this device verified
	}
	if len(root) == 0 {
		return nil, &VerifyError{"no trusted root: provision the device with the release repository's root.json (--trusted-root)"}
	}
	base, hc := c.MetadataURL, c.HTTP
	if local, ok := localPath(base); ok {
		// Metadata from a local directory (a mounted medium, a directory another process
		// syncs): read through a file transport, verified exactly as if fetched.
		tr := &http.Transport{}
		tr.RegisterProtocol("file", http.NewFileTransport(http.Dir(local)))
		base, hc = "file:///", &http.Client{Transport: tr}
	}
	cfg, err := config.New(strings.TrimSuffix(base, "/")+"/", root)
	if err != nil {
		return nil, err
	}
	cfg.LocalMetadataDir = c.Dir
	cfg.LocalTargetsDir = filepath.Join(c.Dir, "targets")
	cfg.PrefixTargetsWithHash = false
	if hc != nil {
		if err := cfg.SetDefaultFetcherHTTPClient(hc); err != nil {
			return nil, err
		}
	}
	// No retries inside a refresh: the end of the root chain is a 404, and the agent retries
	// a failed job itself.
	up, err := updater.New(cfg)
	if err != nil {
		return nil, classify("the trusted root", err)
	}
	if c.Now != nil {
		up.UnsafeSetRefTime(c.Now())
	}
	if err := up.Refresh(); err != nil {
		return nil, classify("update metadata", err)
	}
	tf, err := up.GetTargetInfo(name)
	if err != nil {
		return nil, &VerifyError{fmt.Sprintf("%s is not a signed target of the release repository", name)}
	}
	return parseTarget(name, tf)
}

// localPath reports whether a metadata location is a local directory (an absolute path or a
// file:// URL) and which.
func localPath(raw string) (string, bool) {
	if strings.HasPrefix(raw, "/") {
		return raw, true
	}
	if u, err := url.Parse(raw); err == nil && u.Scheme == "file" && u.Path != "" {
		return u.Path, true
	}
	return "", false
}

// CheckLocation checks where a device fetches metadata or artifacts from: HTTPS or a local
// path. Plain HTTP lets anyone on the path hide a new root or delay updates, so it is refused
// unless allowHTTP (development only: `starter dev` and the demo).
func CheckLocation(what, raw string, allowHTTP bool) error {
	if _, ok := localPath(raw); ok {
		return nil
	}
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return fmt.Errorf("%s %q is not an https:// URL or a local path", what, raw)
	}
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		if allowHTTP {
			return nil
		}
		return fmt.Errorf("%s %s is plain HTTP: serve it over HTTPS (jobs-service --tls-cert/--tls-key) or give a local path; plain HTTP is for development only (--dev)", what, u.Redacted())
	}
	return fmt.Errorf("%s %q is not an https:// URL or a local path", what, raw)
}

func parseTarget(name string, tf *metadata.TargetFiles) (*Target, error) {
	sum, ok := tf.Hashes["sha256"]
	if !ok || len(sum) != 32 || tf.Length <= 0 {
		return nil, &VerifyError{fmt.Sprintf("signed target %s has no sha256 digest and length", name)}
	}
	t := &Target{Name: name, Length: tf.Length, SHA256: hex.EncodeToString(sum)}
	if tf.Custom == nil {
		return nil, &VerifyError{fmt.Sprintf("signed target %s carries no otaflow instructions (software, version)", name)}
	}
	if err := json.Unmarshal(*tf.Custom, &t.Custom); err != nil {
		return nil, &VerifyError{fmt.Sprintf("signed target %s has unreadable instructions: %v", name, err)}
	}
	if t.Custom.Name() != name {
		return nil, &VerifyError{fmt.Sprintf("signed target %s says it is %s", name, t.Custom.Name())}
	}
	return t, nil
}

// classify sorts go-tuf's errors: a failed download is transient, anything about the
// metadata itself is a refusal.
func classify(what string, err error) error {
	var dl *metadata.ErrDownload
	var http404 *metadata.ErrDownloadHTTP
	switch {
	case errors.As(err, &http404) && http404.StatusCode == http.StatusNotFound:
		return &VerifyError{fmt.Sprintf("%s is not published at the metadata URL: %v", what, err)}
	case errors.As(err, &dl), errors.As(err, &http404):
		return fmt.Errorf("fetch %s: %w", what, err)
	}
	var expired *metadata.ErrExpiredMetadata
	var unsigned *metadata.ErrUnsignedMetadata
	var version *metadata.ErrBadVersionNumber
	var equal *metadata.ErrEqualVersionNumber
	switch {
	case errors.As(err, &expired):
		return &VerifyError{fmt.Sprintf("%s expired (%v): the release repository's timestamp must be re-signed (`starter release timestamp`)", what, err)}
	case errors.As(err, &unsigned):
		return &VerifyError{fmt.Sprintf("%s is not signed by the trusted keys: %v", what, err)}
	case errors.As(err, &version), errors.As(err, &equal):
		return &VerifyError{fmt.Sprintf("%s was rolled back to an older version than this device has seen: %v", what, err)}
	}
	var netErr interface{ Timeout() bool }
	if errors.As(err, &netErr) {
		return fmt.Errorf("fetch %s: %w", what, err)
	}
	return &VerifyError{fmt.Sprintf("%s did not verify: %v", what, err)}
}
