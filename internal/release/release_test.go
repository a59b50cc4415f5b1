package release_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/otaflow/otaflow/internal/agent/artifact"
	"github.com/otaflow/otaflow/internal/jobs"
	"github.com/otaflow/otaflow/internal/release"
)

// TestPublishAndDownload: a key made by GenerateKey signs a package; Upload puts it in the
// jobs service's store with SigV4; a device downloads it through a presigned URL and verifies
// it with the public key file.
func TestPublishAndDownload(t *testing.T) {
	dir := t.TempDir()
	pubPath, keyPath, err := release.GenerateKey(filepath.Join(dir, "fleet"))
	require.NoError(t, err)
	_, _, err = release.GenerateKey(filepath.Join(dir, "fleet"))
	require.ErrorContains(t, err, "already exists", "the fleet key is never overwritten")
	st, err := os.Stat(keyPath)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), st.Mode().Perm())
	key, err := release.LoadPrivateKey(keyPath)
	require.NoError(t, err)
	_, err = release.LoadPrivateKey(pubPath)
	require.ErrorContains(t, err, "not an ed25519 private key")

	data, err := release.Pack(release.File{Name: "bin/core", Mode: 0o755, Body: bytes.Repeat([]byte("core "), 50000)})
	require.NoError(t, err)
	file := filepath.Join(dir, "core.tar.gz")
	require.NoError(t, os.WriteFile(file, data, 0o644))
	a, err := release.Sign(bytes.NewReader(data), key, release.S3URL("releases", "core", "2.0.0"))
	require.NoError(t, err)
	require.Equal(t, "s3://releases/core/2.0.0.tar.gz", a.URL)
	_, err = release.Sign(bytes.NewReader(nil), key, a.URL)
	require.ErrorContains(t, err, "empty")

	svc, err := jobs.Open(jobs.Options{Path: filepath.Join(dir, "jobs.db"), Logger: zerolog.Nop()})
	require.NoError(t, err)
	defer svc.Close()
	srv := httptest.NewServer(svc.HTTPHandler(&jobs.SigV4Verifier{Creds: jobs.Credentials{AccessKeyID: "k", SecretAccessKey: "s"}, Region: "us-east-1"}))
	defer srv.Close()
	svc.SetBaseURL(srv.URL)
	ctx := context.Background()
	store := release.Store{Endpoint: srv.URL, Region: "us-east-1", AccessKeyID: "k", SecretAccessKey: "wrong"}
	require.ErrorContains(t, store.Upload(ctx, a, file), "403")
	store.SecretAccessKey = "s"
	require.NoError(t, store.Upload(ctx, a, file))

	// Past the 16 MiB limit of buffered requests, the stated hash is checked as the body
	// streams; a body that does not match it is refused and nothing is stored.
	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<20+1)
	bigFile := filepath.Join(dir, "big.bin")
	require.NoError(t, os.WriteFile(bigFile, big, 0o644))
	bigArt, err := release.Sign(bytes.NewReader(big), key, "s3://releases/big.bin")
	require.NoError(t, err)
	require.NoError(t, store.Upload(ctx, bigArt, bigFile))
	n, err := os.Stat(filepath.Join(dir, "artifacts", "releases", "big.bin"))
	require.NoError(t, err)
	require.Equal(t, int64(len(big)), n.Size())
	lying := *bigArt
	lying.URL, lying.SHA256 = "s3://releases/lying.bin", a.SHA256
	require.Error(t, store.Upload(ctx, &lying, bigFile))
	_, err = os.Stat(filepath.Join(dir, "artifacts", "releases", "lying.bin"))
	require.ErrorIs(t, err, os.ErrNotExist, "a body that does not match its signed hash is not stored")

	url := svc.PresignURL("releases", "core/2.0.0.tar.gz", time.Minute)
	raw, err := os.ReadFile(pubPath)
	require.NoError(t, err)
	pub, err := hex.DecodeString(string(bytes.TrimSpace(raw)))
	require.NoError(t, err)
	got := filepath.Join(dir, "got.tar.gz")
	require.NoError(t, artifact.Download(ctx, artifact.Spec{URL: url, Size: a.Size, SHA256: a.SHA256, Signature: a.Signature}, got,
		artifact.Options{PublicKey: ed25519.PublicKey(pub)}))
	back, err := os.ReadFile(got)
	require.NoError(t, err)
	require.Equal(t, data, back)
}
