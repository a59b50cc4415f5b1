// Package release prepares software for otaflow rollouts: the fleet's ed25519 signing key,
// signed artifacts (a .tar.gz, its size, SHA-256 and the signature of that digest), and their
// upload to the local jobs service's artifact store, which stands in for S3.
package release

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"

	"github.com/otaflow/otaflow/workflows"
)

// GenerateKey writes a new fleet key pair: <prefix>.key (private, mode 0600) and
// <prefix>.pub (public; give it to every agent with --public-key). Existing files are kept.
func GenerateKey(prefix string) (pubPath, keyPath string, err error) {
	pubPath, keyPath = prefix+".pub", prefix+".key"
	if _, err := os.Stat(keyPath); err == nil {
		return "", "", fmt.Errorf("%s already exists; remove it first if you really mean to replace the fleet key (devices would refuse artifacts signed by a new one)", keyPath)
	}
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return "", "", err
	}
	if err := os.WriteFile(keyPath, []byte(hex.EncodeToString(priv)+"\n"), 0o600); err != nil {
		return "", "", err
	}
	return pubPath, keyPath, os.WriteFile(pubPath, []byte(hex.EncodeToString(pub)+"\n"), 0o644)
}

// LoadPrivateKey reads a key written by GenerateKey.
func LoadPrivateKey(path string) (ed25519.PrivateKey, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read signing key: %w", err)
	}
	key, err := hex.DecodeString(strings.TrimSpace(string(raw)))
	if err != nil || len(key) != ed25519.PrivateKeySize {
		return nil, fmt.Errorf("%s is not an ed25519 private key in hex (make one with `starter release keygen`)", path)
	}
	return ed25519.PrivateKey(key), nil
}

// Sign describes the artifact in r, signed with key, to be fetched from s3URL.
func Sign(r io.Reader, key ed25519.PrivateKey, s3URL string) (*workflows.Artifact, error) {
	h := sha256.New()
	n, err := io.Copy(h, r)
	if err != nil {
		return nil, err
	}
	if n == 0 {
		return nil, fmt.Errorf("the artifact is empty")
	}
	sum := h.Sum(nil)
	return &workflows.Artifact{URL: s3URL, Size: n, SHA256: hex.EncodeToString(sum), Signature: hex.EncodeToString(ed25519.Sign(key, sum))}, nil
}

// S3URL is where an artifact of software at version lives in bucket.
func S3URL(bucket, software, version string) string {
	return "s3://" + bucket + "/" + software + "/" + version + ".tar.gz"
}

// Store is the local jobs service's artifact store.
type Store struct {
	Endpoint        string // e.g. http://127.0.0.1:4566
	Region          string
	AccessKeyID     string
	SecretAccessKey string
	HTTP            *http.Client
}

// Upload PUTs the file to the store at the artifact's S3 URL, signed with SigV4.
func (s Store) Upload(ctx context.Context, a *workflows.Artifact, file string) error {
	u, err := url.Parse(a.URL)
	if err != nil || u.Scheme != "s3" || u.Host == "" {
		return fmt.Errorf("artifact URL %q is not s3://BUCKET/KEY", a.URL)
	}
	f, err := os.Open(file)
	if err != nil {
		return err
	}
	defer f.Close()
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, strings.TrimSuffix(s.Endpoint, "/")+"/artifacts/"+u.Host+u.Path, f)
	if err != nil {
		return err
	}
	req.ContentLength = a.Size
	// Stated up front, the hash lets the store check the body as it streams (any size).
	req.Header.Set("X-Amz-Content-Sha256", a.SHA256)
	creds := aws.Credentials{AccessKeyID: s.AccessKeyID, SecretAccessKey: s.SecretAccessKey}
	if err := v4.NewSigner().SignHTTP(ctx, creds, req, a.SHA256, "iot", s.Region, time.Now()); err != nil {
		return err
	}
	hc := s.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("upload to %s: %w (is the jobs service running? `starter dev` starts it)", s.Endpoint, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return fmt.Errorf("upload to %s: %s: %s", s.Endpoint, resp.Status, strings.TrimSpace(string(body)))
	}
	return nil
}

// File is one entry of a package built with Pack.
type File struct {
	Name string
	Mode int64
	Body []byte
}

// Pack builds a .tar.gz from files (the demo's releases and tests).
func Pack(files ...File) ([]byte, error) {
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for _, f := range files {
		if err := tw.WriteHeader(&tar.Header{Name: f.Name, Mode: f.Mode, Size: int64(len(f.Body)), Typeflag: tar.TypeReg}); err != nil {
			return nil, err
		}
		if _, err := tw.Write(f.Body); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	if err := gz.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
