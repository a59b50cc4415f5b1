package tuf_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/otaflow/otaflow/internal/tuf"
)

// mirror serves a repository's metadata as the jobs service does; tests may swap its files.
type mirror struct {
	mu    sync.Mutex
	files map[string][]byte
	srv   *httptest.Server
}

func newMirror(t *testing.T) *mirror {
	m := &mirror{files: map[string][]byte{}}
	m.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		m.mu.Lock()
		defer m.mu.Unlock()
		raw, ok := m.files[strings.TrimPrefix(r.URL.Path, "/")]
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Write(raw)
	}))
	t.Cleanup(m.srv.Close)
	return m
}

func (m *mirror) publish(t *testing.T, r *tuf.Repo) map[string][]byte {
	files, err := r.Files()
	require.NoError(t, err)
	m.mu.Lock()
	m.files = files
	m.mu.Unlock()
	return files
}

func (m *mirror) set(files map[string][]byte) {
	m.mu.Lock()
	m.files = files
	m.mu.Unlock()
}

func artifact(t *testing.T, body string) string {
	p := filepath.Join(t.TempDir(), "a.tar.gz")
	require.NoError(t, os.WriteFile(p, []byte(body), 0o644))
	return p
}

func setup(t *testing.T, o tuf.Options) (*tuf.Repo, *mirror, *tuf.Client) {
	dir := t.TempDir()
	repo, err := tuf.Init(dir, o)
	require.NoError(t, err)
	root, err := repo.Root()
	require.NoError(t, err)
	m := newMirror(t)
	return repo, m, &tuf.Client{MetadataURL: m.srv.URL, TrustedRoot: root, Dir: t.TempDir(), Now: o.Now}
}

func requireRefused(t *testing.T, err error, contains string) {
	t.Helper()
	var ve *tuf.VerifyError
	require.ErrorAs(t, err, &ve)
	require.Contains(t, ve.Reason, contains)
}

func TestSignedTargetCarriesItsInstructions(t *testing.T) {
	repo, m, c := setup(t, tuf.Options{})
	custom := tuf.Custom{Software: "core", Version: "2.0.0", HealthCheck: &tuf.HealthCheck{Command: []string{"bin/core", "--check"}},
		RestartPolicy: "none", MinimumVersion: "1.0.0"}
	_, err := repo.AddTarget("core/2.0.0.tar.gz", artifact(t, "two"), custom)
	require.NoError(t, err)
	m.publish(t, repo)

	got, err := c.Target("core/2.0.0.tar.gz")
	require.NoError(t, err)
	require.Equal(t, custom, got.Custom)
	require.EqualValues(t, 3, got.Length)
	require.Equal(t, "3fc4ccfe745870e2c0d99f71f30ff0656c8dedd41cc1d7d3d376b0dbe685e2f3", got.SHA256)

	_, err = c.Target("core/9.9.9.tar.gz")
	requireRefused(t, err, "not a signed target")
	_, err = repo.AddTarget("core/2.0.0.tar.gz", artifact(t, "other bytes"), custom)
	require.ErrorContains(t, err, "already signed with other content")
	_, err = repo.AddTarget("core/2.0.0.tar.gz", artifact(t, "two"), tuf.Custom{Software: "core", Version: "3.0.0"})
	require.ErrorContains(t, err, "does not match")
}

// TestTamperedMetadataIsRefused: a mirror (or anyone on the path) that edits the signed
// instructions, say to run another health check, is refused.
func TestTamperedMetadataIsRefused(t *testing.T) {
	repo, m, c := setup(t, tuf.Options{})
	_, err := repo.AddTarget("core/2.0.0.tar.gz", artifact(t, "two"), tuf.Custom{Software: "core", Version: "2.0.0",
		HealthCheck: &tuf.HealthCheck{Command: []string{"true"}}})
	require.NoError(t, err)
	files := m.publish(t, repo)
	files["targets.json"] = []byte(strings.Replace(string(files["targets.json"]), `"true"`, `"/bin/sh", "-c", "id > /tmp/pwned"`, 1))
	m.set(files)
	_, err = c.Target("core/2.0.0.tar.gz")
	var ve *tuf.VerifyError
	require.ErrorAs(t, err, &ve)
}

func TestExpiredTimestampIsRefused(t *testing.T) {
	now := time.Now()
	clock := func() time.Time { return now }
	repo, m, c := setup(t, tuf.Options{Now: clock})
	_, err := repo.AddTarget("core/2.0.0.tar.gz", artifact(t, "two"), tuf.Custom{Software: "core", Version: "2.0.0"})
	require.NoError(t, err)
	m.publish(t, repo)
	_, err = c.Target("core/2.0.0.tar.gz")
	require.NoError(t, err)

	now = now.Add(8 * 24 * time.Hour) // past the timestamp's week
	_, err = c.Target("core/2.0.0.tar.gz")
	requireRefused(t, err, "expired")

	require.NoError(t, repo.RefreshTimestamp()) // `starter release timestamp`
	m.publish(t, repo)
	_, err = c.Target("core/2.0.0.tar.gz")
	require.NoError(t, err)
}

// TestRolledBackMetadataIsRefused: once a device has seen new metadata, a mirror that serves
// the older set (to hide a fix, or to bring back a withdrawn release) is refused.
func TestRolledBackMetadataIsRefused(t *testing.T) {
	repo, m, c := setup(t, tuf.Options{})
	_, err := repo.AddTarget("core/1.1.0.tar.gz", artifact(t, "one"), tuf.Custom{Software: "core", Version: "1.1.0"})
	require.NoError(t, err)
	old := m.publish(t, repo)
	_, err = repo.AddTarget("core/2.0.0.tar.gz", artifact(t, "two"), tuf.Custom{Software: "core", Version: "2.0.0"})
	require.NoError(t, err)
	m.publish(t, repo)
	_, err = c.Target("core/2.0.0.tar.gz")
	require.NoError(t, err)

	m.set(old)
	_, err = c.Target("core/1.1.0.tar.gz")
	requireRefused(t, err, "rolled back")
}

// TestKeyRotation: targets and root keys are replaced; a device provisioned with the first
// root follows the chain of roots and accepts what the new keys sign, and nothing the old
// targets key signs.
func TestKeyRotation(t *testing.T) {
	repo, m, c := setup(t, tuf.Options{RootKeys: 3, RootThreshold: 2})
	_, err := repo.AddTarget("core/2.0.0.tar.gz", artifact(t, "two"), tuf.Custom{Software: "core", Version: "2.0.0"})
	require.NoError(t, err)
	m.publish(t, repo)
	_, err = c.Target("core/2.0.0.tar.gz")
	require.NoError(t, err)
	oldTargets := mustRead(t, filepath.Join(repo.Dir, "metadata", "targets.json"))

	require.NoError(t, repo.Rotate(tuf.RoleTargets))
	require.NoError(t, repo.Rotate(tuf.RoleRoot))
	_, err = repo.AddTarget("core/2.1.0.tar.gz", artifact(t, "two-one"), tuf.Custom{Software: "core", Version: "2.1.0"})
	require.NoError(t, err)
	files := m.publish(t, repo)
	require.Contains(t, files, "3.root.json")
	got, err := c.Target("core/2.1.0.tar.gz")
	require.NoError(t, err)
	require.Equal(t, "2.1.0", got.Version)

	// A device provisioned with the first root, seeing the retired targets key's metadata,
	// refuses it.
	files["targets.json"] = oldTargets
	m.set(files)
	fresh := &tuf.Client{MetadataURL: c.MetadataURL, TrustedRoot: c.TrustedRoot, Dir: t.TempDir()}
	_, err = fresh.Target("core/2.0.0.tar.gz")
	var ve *tuf.VerifyError
	require.ErrorAs(t, err, &ve)
}

// TestRootThreshold: with 2 of 3 root keys required, one key may be lost; two may not.
func TestRootThreshold(t *testing.T) {
	repo, _, _ := setup(t, tuf.Options{RootKeys: 3, RootThreshold: 2})
	keys, _ := filepath.Glob(filepath.Join(repo.Dir, "keys", "root-*.key"))
	require.Len(t, keys, 3)
	offline := t.TempDir()
	for _, k := range keys[:2] {
		require.NoError(t, os.Rename(k, filepath.Join(offline, filepath.Base(k))))
	}
	r, err := tuf.Open(repo.Dir, nil, tuf.Options{})
	require.NoError(t, err)
	require.ErrorContains(t, r.Rotate(tuf.RoleRoot), "needs 2 signatures but only 1")

	r, err = tuf.Open(repo.Dir, []string{offline}, tuf.Options{}) // the root keys brought back from offline
	require.NoError(t, err)
	require.NoError(t, r.Rotate(tuf.RoleRoot))
	var root struct {
		Signed struct{ Version int } `json:"signed"`
	}
	require.NoError(t, json.Unmarshal(mustRead(t, filepath.Join(repo.Dir, "metadata", "root.json")), &root))
	require.Equal(t, 2, root.Signed.Version)
}

func mustRead(t *testing.T, p string) []byte {
	raw, err := os.ReadFile(p)
	require.NoError(t, err)
	return raw
}
