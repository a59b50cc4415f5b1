package release_test

import (
	"bytes"
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/otaflow/otaflow/internal/agent/artifact"
	"github.com/otaflow/otaflow/internal/delta"
	"github.com/otaflow/otaflow/internal/release"
	"github.com/otaflow/otaflow/internal/tuf"
)

// TestPublishAndDownload: a release is signed as a TUF target and uploaded with SigV4, with
// the repository's metadata; a device verifies it through the jobs service's /tuf/ path and
// downloads it through a presigned URL, checked against the signed length and digest.
func TestPublishAndDownload(t *testing.T) {
	dir := t.TempDir()
	repo, err := tuf.Init(filepath.Join(dir, "repo"), tuf.Options{})
	require.NoError(t, err)
	_, err = tuf.Init(filepath.Join(dir, "repo"), tuf.Options{})
	require.ErrorContains(t, err, "already holds", "the fleet's root is never overwritten")
	keys, _ := filepath.Glob(filepath.Join(dir, "repo", "keys", "*.key"))
	require.Len(t, keys, 4)
	for _, k := range keys {
		st, err := os.Stat(k)
		require.NoError(t, err)
		require.Equal(t, os.FileMode(0o600), st.Mode().Perm())
	}

	data, err := release.Pack(release.File{Name: "bin/core", Mode: 0o755, Body: bytes.Repeat([]byte("core "), 50000)})
	require.NoError(t, err)
	file := filepath.Join(dir, "core.tar.gz")
	require.NoError(t, os.WriteFile(file, data, 0o644))

	svc, srvURL := artifactService(t, dir)
	ctx := context.Background()
	custom := tuf.Custom{Software: "core", Version: "2.0.0", OS: "ubuntu", Architecture: "x86_64", HealthCheck: &tuf.HealthCheck{Command: []string{"bin/core", "--version"}}}
	store := &release.Store{Endpoint: srvURL, Region: "us-east-1", AccessKeyID: "k", SecretAccessKey: "wrong"}
	_, err = release.Publish(ctx, repo, store, "releases", file, custom)
	require.ErrorContains(t, err, "403")
	store.SecretAccessKey = "s"
	rel, err := release.Publish(ctx, repo, store, "releases", file, custom)
	require.NoError(t, err)
	require.Equal(t, "s3://releases/core/2.0.0.tar.gz", rel.Artifact.URL)

	// Past the 16 MiB limit of buffered requests, the stated hash is checked as the body
	// streams; a body that does not match it is refused and nothing is stored.
	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<20+1)
	require.NoError(t, store.PutBytes(ctx, "releases", "big.bin", big))
	n, err := os.Stat(filepath.Join(dir, "artifacts", "releases", "big.bin"))
	require.NoError(t, err)
	require.Equal(t, int64(len(big)), n.Size())
	require.Error(t, store.Put(ctx, "releases", "lying.bin", bytes.NewReader(big), int64(len(big)), rel.SHA256))
	_, err = os.Stat(filepath.Join(dir, "artifacts", "releases", "lying.bin"))
	require.ErrorIs(t, err, os.ErrNotExist, "a body that does not match its stated hash is not stored")

	root, err := repo.Root()
	require.NoError(t, err)
	client := &tuf.Client{MetadataURL: release.MetadataURL(srvURL, "releases"), TrustedRoot: root, Dir: filepath.Join(dir, "device-tuf")}
	target, err := client.Target("core/2.0.0.tar.gz")
	require.NoError(t, err)
	require.NotNil(t, target.Delta, "the signed target names the release's chunk index")
	d := target.Delta
	custom.Delta = d
	require.Equal(t, custom, target.Custom)
	require.Equal(t, rel.SHA256, target.SHA256)

	// The chunk store is granted as a whole (every key under delta/), and nothing else is.
	src := delta.Source{Store: svc.PresignURL("releases", delta.Prefix, time.Minute)}
	idxURL, err := src.URL(d.Index)
	require.NoError(t, err)
	idxFile := filepath.Join(dir, "index")
	require.NoError(t, artifact.Download(ctx, artifact.Spec{URL: idxURL, Size: d.IndexLength, SHA256: d.IndexSHA256}, idxFile, artifact.Options{}))
	raw, err := os.ReadFile(idxFile)
	require.NoError(t, err)
	x, err := delta.Decode(raw)
	require.NoError(t, err)
	require.Equal(t, d.Length, x.Length)
	require.Equal(t, d.SHA256, x.SHA256)
	escape := strings.Replace(idxURL, "/"+d.Index, "/core/2.0.0.tar.gz", 1)
	resp, err := http.Get(escape)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusForbidden, resp.StatusCode, "a chunk store grant opens nothing outside it")
	// Chunks are written once: a conditional write over one is answered 412 and is no error.
	key := delta.ChunkKey(x.Segments[0].Chunks[0].SHA256)
	st, err := os.Stat(filepath.Join(dir, "artifacts", "releases", key))
	require.NoError(t, err)
	require.NoError(t, store.PutBytesOnce(ctx, "releases", key, []byte("other bytes")))
	st2, err := os.Stat(filepath.Join(dir, "artifacts", "releases", key))
	require.NoError(t, err)
	require.Equal(t, st.Size(), st2.Size(), "the stored chunk is not replaced")

	url := svc.PresignURL("releases", "core/2.0.0.tar.gz", time.Minute)
	got := filepath.Join(dir, "got.tar.gz")
	require.NoError(t, artifact.Download(ctx, artifact.Spec{URL: url, Size: target.Length, SHA256: target.SHA256}, got, artifact.Options{}))
	back, err := os.ReadFile(got)
	require.NoError(t, err)
	require.Equal(t, data, back)

	resp, err = http.Get(srvURL + "/tuf/releases/keys.json")
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusNotFound, resp.StatusCode, "only metadata is public under /tuf/")
}
