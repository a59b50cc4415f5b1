package tuf_test

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sigstore/sigstore/pkg/signature"
	"github.com/stretchr/testify/require"
	"github.com/theupdateframework/go-tuf/v2/metadata"

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
	custom := tuf.Custom{Software: "core", Version: "2.0.0", OS: "ubuntu", Architecture: "x86_64", HealthCheck: &tuf.HealthCheck{Command: []string{"bin/core", "--check"}},
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
	_, err = repo.AddTarget("core/2.0.0.tar.gz", artifact(t, "two"), tuf.Custom{Software: "core", Version: "3.0.0", OS: "ubuntu", Architecture: "x86_64"})
	require.ErrorContains(t, err, "does not match")
}

// TestTamperedMetadataIsRefused: a mirror (or anyone on the path) that edits the signed
// instructions, say to run another health check, is refused.
func TestTamperedMetadataIsRefused(t *testing.T) {
	repo, m, c := setup(t, tuf.Options{})
	_, err := repo.AddTarget("core/2.0.0.tar.gz", artifact(t, "two"), tuf.Custom{Software: "core", Version: "2.0.0", OS: "ubuntu", Architecture: "x86_64",
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
	_, err := repo.AddTarget("core/2.0.0.tar.gz", artifact(t, "two"), tuf.Custom{Software: "core", Version: "2.0.0", OS: "ubuntu", Architecture: "x86_64"})
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
	_, err := repo.AddTarget("core/1.1.0.tar.gz", artifact(t, "one"), tuf.Custom{Software: "core", Version: "1.1.0", OS: "ubuntu", Architecture: "x86_64"})
	require.NoError(t, err)
	old := m.publish(t, repo)
	_, err = repo.AddTarget("core/2.0.0.tar.gz", artifact(t, "two"), tuf.Custom{Software: "core", Version: "2.0.0", OS: "ubuntu", Architecture: "x86_64"})
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
	_, err := repo.AddTarget("core/2.0.0.tar.gz", artifact(t, "two"), tuf.Custom{Software: "core", Version: "2.0.0", OS: "ubuntu", Architecture: "x86_64"})
	require.NoError(t, err)
	m.publish(t, repo)
	_, err = c.Target("core/2.0.0.tar.gz")
	require.NoError(t, err)
	oldTargets := mustRead(t, filepath.Join(repo.Dir, "metadata", "targets.json"))

	require.NoError(t, repo.Rotate(tuf.RoleTargets))
	require.NoError(t, repo.Rotate(tuf.RoleRoot))
	_, err = repo.AddTarget("core/2.1.0.tar.gz", artifact(t, "two-one"), tuf.Custom{Software: "core", Version: "2.1.0", OS: "ubuntu", Architecture: "x86_64"})
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

// stolen holds copies of a repository's private key files for some roles, taken before a
// recovery: what an attacker who copied them can sign.
type stolen map[string]signature.Signer

func steal(t *testing.T, repo *tuf.Repo, roles ...string) stolen {
	s := stolen{}
	for _, role := range roles {
		files, _ := filepath.Glob(filepath.Join(repo.Dir, "keys", role+"-*.key"))
		require.Len(t, files, 1, role)
		seed, err := hex.DecodeString(strings.TrimSpace(string(mustRead(t, files[0]))))
		require.NoError(t, err)
		signer, err := signature.LoadED25519Signer(ed25519.PrivateKey(seed))
		require.NoError(t, err)
		s[role] = signer
	}
	return s
}

func pinOf(raw []byte, version int64) *metadata.MetaFiles {
	sum := sha256.Sum256(raw)
	m := metadata.MetaFile(version)
	m.Length, m.Hashes = int64(len(raw)), metadata.Hashes{"sha256": sum[:]}
	return m
}

// forge rewrites the published files with the stolen keys: targets gets a health check that
// runs the attacker's command, and each role the attacker holds is re-signed at the next
// version, pinning what it lists. Roles the attacker does not hold stay as published.
func (s stolen) forge(t *testing.T, files map[string][]byte, target string) map[string][]byte {
	out := map[string][]byte{}
	for k, v := range files {
		out[k] = v
	}
	if signer, ok := s[tuf.RoleTargets]; ok {
		m, err := metadata.Targets().FromBytes(files["targets.json"])
		require.NoError(t, err)
		custom := json.RawMessage(`{"software":"core","version":"2.0.0","os":"ubuntu","architecture":"x86_64","healthCheck":{"command":["sh","-c","id > /tmp/pwned"]}}`)
		m.Signed.Targets[target].Custom = &custom
		m.Signed.Version++
		m.ClearSignatures()
		_, err = m.Sign(signer)
		require.NoError(t, err)
		out["targets.json"], err = m.ToBytes(true)
		require.NoError(t, err)
	}
	if signer, ok := s[tuf.RoleSnapshot]; ok {
		m, err := metadata.Snapshot().FromBytes(files["snapshot.json"])
		require.NoError(t, err)
		tv, err := metadata.Targets().FromBytes(out["targets.json"])
		require.NoError(t, err)
		m.Signed.Meta["targets.json"] = pinOf(out["targets.json"], tv.Signed.Version)
		m.Signed.Version++
		m.ClearSignatures()
		_, err = m.Sign(signer)
		require.NoError(t, err)
		out["snapshot.json"], err = m.ToBytes(true)
		require.NoError(t, err)
	}
	if signer, ok := s[tuf.RoleTimestamp]; ok {
		m, err := metadata.Timestamp().FromBytes(files["timestamp.json"])
		require.NoError(t, err)
		sv, err := metadata.Snapshot().FromBytes(out["snapshot.json"])
		require.NoError(t, err)
		m.Signed.Meta["snapshot.json"] = pinOf(out["snapshot.json"], sv.Signed.Version)
		m.Signed.Version++
		m.ClearSignatures()
		_, err = m.Sign(signer)
		require.NoError(t, err)
		out["timestamp.json"], err = m.ToBytes(true)
		require.NoError(t, err)
	}
	return out
}

// TestTargetsResignedAtTheSameVersionIsRefused is the attack of issue #22: with the targets
// key alone, targets.json re-signed at the same version with a new health check. The snapshot
// pins the length and hashes of the targets it lists, so a device refuses it.
func TestTargetsResignedAtTheSameVersionIsRefused(t *testing.T) {
	repo, m, c := setup(t, tuf.Options{})
	_, err := repo.AddTarget("core/2.0.0.tar.gz", artifact(t, "two"), tuf.Custom{Software: "core", Version: "2.0.0", OS: "ubuntu", Architecture: "x86_64",
		HealthCheck: &tuf.HealthCheck{Command: []string{"true"}}})
	require.NoError(t, err)
	files := m.publish(t, repo)

	targets, err := metadata.Targets().FromBytes(files["targets.json"])
	require.NoError(t, err)
	custom := json.RawMessage(`{"software":"core","version":"2.0.0","os":"ubuntu","architecture":"x86_64","healthCheck":{"command":["sh","-c","id > /tmp/pwned"]}}`)
	targets.Signed.Targets["core/2.0.0.tar.gz"].Custom = &custom
	targets.ClearSignatures()
	_, err = targets.Sign(steal(t, repo, tuf.RoleTargets)[tuf.RoleTargets])
	require.NoError(t, err)
	files["targets.json"], err = targets.ToBytes(true)
	require.NoError(t, err)
	m.set(files)

	_, err = c.Target("core/2.0.0.tar.gz")
	requireRefused(t, err, "did not verify")
	require.Contains(t, err.Error(), "mismatch")
}

// requireNotForged: the device either refuses the metadata or never acts on the forgery.
func requireNotForged(t *testing.T, got *tuf.Target, err error) {
	t.Helper()
	var ve *tuf.VerifyError
	if err != nil {
		require.ErrorAs(t, err, &ve)
		return
	}
	require.Nil(t, got.HealthCheck, "the device took the attacker's health check")
}

// TestRecoveryFromAStolenKey: for each role, the recovery docs/production.md gives (`starter
// release rotate --role ...`) makes whatever the stolen key signs worthless to devices that
// follow the new root.
func TestRecoveryFromAStolenKey(t *testing.T) {
	for _, tc := range []struct {
		name   string
		stolen []string
		rotate []string
	}{
		{"the online keys (targets, snapshot, timestamp)", []string{tuf.RoleTargets, tuf.RoleSnapshot, tuf.RoleTimestamp}, []string{tuf.RoleTargets, tuf.RoleSnapshot, tuf.RoleTimestamp}},
		{"targets", []string{tuf.RoleTargets}, []string{tuf.RoleTargets}},
		{"snapshot", []string{tuf.RoleSnapshot}, []string{tuf.RoleSnapshot}},
		{"timestamp", []string{tuf.RoleTimestamp}, []string{tuf.RoleTimestamp}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			repo, m, c := setup(t, tuf.Options{})
			_, err := repo.AddTarget("core/2.0.0.tar.gz", artifact(t, "two"), tuf.Custom{Software: "core", Version: "2.0.0", OS: "ubuntu", Architecture: "x86_64"})
			require.NoError(t, err)
			files := m.publish(t, repo)
			keys := steal(t, repo, tc.stolen...)
			if len(keys) == 3 {
				// Before the recovery, all the online keys let the attacker feed devices.
				m.set(keys.forge(t, files, "core/2.0.0.tar.gz"))
				got, err := (&tuf.Client{MetadataURL: c.MetadataURL, TrustedRoot: c.TrustedRoot, Dir: t.TempDir()}).Target("core/2.0.0.tar.gz")
				require.NoError(t, err)
				require.Contains(t, got.HealthCheck.Command[2], "pwned")
			}

			require.NoError(t, repo.Rotate(tc.rotate...))
			files = m.publish(t, repo)
			_, err = c.Target("core/2.0.0.tar.gz") // the device follows the new root
			require.NoError(t, err)
			m.set(keys.forge(t, files, "core/2.0.0.tar.gz"))
			got, err := c.Target("core/2.0.0.tar.gz")
			requireNotForged(t, got, err)
			// A device provisioned with the first root follows the chain and refuses it too.
			got, err = (&tuf.Client{MetadataURL: c.MetadataURL, TrustedRoot: c.TrustedRoot, Dir: t.TempDir()}).Target("core/2.0.0.tar.gz")
			requireNotForged(t, got, err)
		})
	}
	t.Run("root", func(t *testing.T) {
		repo, m, c := setup(t, tuf.Options{})
		_, err := repo.AddTarget("core/2.0.0.tar.gz", artifact(t, "two"), tuf.Custom{Software: "core", Version: "2.0.0", OS: "ubuntu", Architecture: "x86_64"})
		require.NoError(t, err)
		m.publish(t, repo)
		thief := steal(t, repo, tuf.RoleRoot)[tuf.RoleRoot]
		require.NoError(t, repo.Rotate(tuf.RoleRoot))
		files := m.publish(t, repo)
		_, err = c.Target("core/2.0.0.tar.gz") // on root 2 now
		require.NoError(t, err)

		// The thief signs a root 3 that trusts a key of theirs for every role.
		root, err := metadata.Root().FromBytes(files["root.json"])
		require.NoError(t, err)
		root.Signed.Version = 3
		root.ClearSignatures()
		_, err = root.Sign(thief)
		require.NoError(t, err)
		files["3.root.json"], err = root.ToBytes(true)
		require.NoError(t, err)
		m.set(files)
		_, err = c.Target("core/2.0.0.tar.gz")
		requireRefused(t, err, "")
	})
}

// TestRotateTheOnlineRolesTogether: one new root version replaces the keys of several roles.
func TestRotateTheOnlineRolesTogether(t *testing.T) {
	repo, m, c := setup(t, tuf.Options{})
	_, err := repo.AddTarget("core/2.0.0.tar.gz", artifact(t, "two"), tuf.Custom{Software: "core", Version: "2.0.0", OS: "ubuntu", Architecture: "x86_64"})
	require.NoError(t, err)
	before := steal(t, repo, tuf.RoleTargets, tuf.RoleSnapshot, tuf.RoleTimestamp)
	require.NoError(t, repo.Rotate(tuf.RoleTargets, tuf.RoleSnapshot, tuf.RoleTimestamp))
	files := m.publish(t, repo)
	require.Contains(t, files, "2.root.json")
	require.NotContains(t, files, "3.root.json")
	after := steal(t, repo, tuf.RoleTargets, tuf.RoleSnapshot, tuf.RoleTimestamp)
	for role := range before {
		b, _ := before[role].PublicKey()
		a, _ := after[role].PublicKey()
		require.NotEqual(t, b, a, role)
	}
	revoked, _ := filepath.Glob(filepath.Join(repo.Dir, "keys", "revoked", "*.key"))
	require.Len(t, revoked, 3)
	_, err = c.Target("core/2.0.0.tar.gz")
	require.NoError(t, err)
	require.ErrorContains(t, repo.Rotate("bogus"), "not one of")
}

// TestTargetsNameTheirPlatform: a release target must say which OS and architecture it is
// built for; component recipes live apart from core and ota_agent.
func TestTargetsNameTheirPlatform(t *testing.T) {
	repo, m, c := setup(t, tuf.Options{})
	_, err := repo.AddTarget("core/2.0.0.tar.gz", artifact(t, "two"), tuf.Custom{Software: "core", Version: "2.0.0"})
	require.ErrorContains(t, err, "names no operating system and architecture")
	_, err = repo.AddTarget("core/2.0.0.tar.gz", artifact(t, "two"), tuf.Custom{Software: "core", Version: "2.0.0", OS: "raspbian", Architecture: "x86_64"})
	require.ErrorContains(t, err, "not a supported combination")
	_, err = repo.AddTarget("core/2.0.0.tar.gz", artifact(t, "two"), tuf.Custom{Software: "core", Version: "2.0.0", OS: "raspbian", Architecture: "armv7l"})
	require.NoError(t, err)

	name := tuf.ComponentTargetName("com.example.Cache", "1.2.0")
	require.Equal(t, "components/com.example.Cache/1.2.0.json", name)
	_, err = repo.AddTarget(name, artifact(t, `{"name":"com.example.Cache","version":"1.2.0"}`), tuf.Custom{Software: tuf.SoftwareComponents, Component: "com.example.Cache", Version: "1.2.0"})
	require.NoError(t, err)
	_, err = repo.AddTarget("components/core/1.0.0.tar.gz", artifact(t, "x"), tuf.Custom{Software: "components", Component: "core", Version: "1.0.0"})
	require.ErrorContains(t, err, "invalid")
	_, err = repo.AddTarget("other/1.0.0.tar.gz", artifact(t, "x"), tuf.Custom{Software: "other", Version: "1.0.0", OS: "ubuntu", Architecture: "x86_64"})
	require.ErrorContains(t, err, "invalid")
	m.publish(t, repo)
	got, err := c.Target(name)
	require.NoError(t, err)
	require.Equal(t, "com.example.Cache", got.Component)
	got, err = c.Target("core/2.0.0.tar.gz")
	require.NoError(t, err)
	require.Equal(t, "raspbian", got.OS)
	require.Equal(t, "armv7l", got.Architecture)
}

// TestMetadataFromALocalPath: a device may read the metadata from a directory (a mounted
// medium), verified the same way; plain HTTP is refused outside development.
func TestMetadataFromALocalPath(t *testing.T) {
	repo, _, c := setup(t, tuf.Options{})
	_, err := repo.AddTarget("core/2.0.0.tar.gz", artifact(t, "two"), tuf.Custom{Software: "core", Version: "2.0.0", OS: "ubuntu", Architecture: "x86_64"})
	require.NoError(t, err)
	for _, loc := range []string{filepath.Join(repo.Dir, "metadata"), "file://" + filepath.Join(repo.Dir, "metadata")} {
		local := &tuf.Client{MetadataURL: loc, TrustedRoot: c.TrustedRoot, Dir: t.TempDir()}
		got, err := local.Target("core/2.0.0.tar.gz")
		require.NoError(t, err, loc)
		require.Equal(t, "2.0.0", got.Version)
	}
	require.NoError(t, tuf.CheckLocation("--tuf-url", "https://jobs.example.com/tuf/b/", false))
	require.NoError(t, tuf.CheckLocation("--tuf-url", "/media/usb/tuf", false))
	require.NoError(t, tuf.CheckLocation("--tuf-url", "http://127.0.0.1:4566/tuf/b/", true))
	require.ErrorContains(t, tuf.CheckLocation("--tuf-url", "http://jobs:4566/tuf/b/", false), "plain HTTP")
	require.ErrorContains(t, tuf.CheckLocation("--tuf-url", "ftp://x/y", false), "not an https:// URL")
}
