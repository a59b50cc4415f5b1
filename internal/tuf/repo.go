// Package tuf is otaflow's use of The Update Framework (go-tuf/v2): the release repository
// that `starter release` keeps (root, targets, snapshot and timestamp roles, each with its own
// ed25519 keys) and the device-side check that every update is a signed target.
//
// A target is named <software>/<version>.tar.gz. Its signed custom data carries everything a
// device acts on besides the bytes: the software and version, the health check it runs, the
// restart policy and the oldest version it may be installed over. The job document only names
// the target; nothing the agent runs comes from it.
package tuf

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/sigstore/sigstore/pkg/signature"
	"github.com/theupdateframework/go-tuf/v2/metadata"

	"github.com/otaflow/otaflow/internal/platform"
)

// Roles, in the order a change cascades: a new targets needs a new snapshot, which needs a
// new timestamp.
const (
	RoleRoot      = metadata.ROOT
	RoleTargets   = metadata.TARGETS
	RoleSnapshot  = metadata.SNAPSHOT
	RoleTimestamp = metadata.TIMESTAMP
)

// Roles lists the four top-level roles.
var Roles = []string{RoleRoot, RoleTargets, RoleSnapshot, RoleTimestamp}

// DefaultExpiry is how long each role's metadata stays valid once signed. The timestamp is
// re-signed on every publish and by `starter release timestamp` (run it daily from cron, or
// devices refuse updates once it expires: that is what stops a freeze attack).
var DefaultExpiry = map[string]time.Duration{
	RoleRoot:      365 * 24 * time.Hour,
	RoleTargets:   90 * 24 * time.Hour,
	RoleSnapshot:  30 * 24 * time.Hour,
	RoleTimestamp: 7 * 24 * time.Hour,
}

// HealthCheck is a command that exits 0 while the new version is healthy.
type HealthCheck struct {
	Command        []string `json:"command"`
	TimeoutSeconds int      `json:"timeoutSeconds,omitempty"`
}

// Custom is the signed instructions a target carries.
type Custom struct {
	Software string `json:"software"`
	Version  string `json:"version"`
	// Component names the component of a component target (Software is then
	// SoftwareComponents): a signed recipe, not a package.
	Component string `json:"component,omitempty"`
	// OS and Architecture are the platform the release is built for (the seed's names:
	// ubuntu, amazon_linux, raspbian, openwrt; x86_64, aarch64, armv7l, armv6l). A device on
	// another platform refuses it. Component recipes carry none.
	OS           string `json:"os,omitempty"`
	Architecture string `json:"architecture,omitempty"`
	// HealthCheck runs after the switch and through the bake time; failing it rolls back.
	HealthCheck *HealthCheck `json:"healthCheck,omitempty"`
	// RestartPolicy is "service" (the agent's restart command; the default) or "none".
	RestartPolicy string `json:"restartPolicy,omitempty"`
	// MinimumVersion is the oldest installed version this release may be installed over.
	MinimumVersion string `json:"minimumVersion,omitempty"`
	// Module names the update module that installs this release on a device (an executable
	// in the agent's modules directory; "" is the agent's own versioned directories), and
	// ModuleSettings are what it is given. Signed, so no job document can choose either.
	Module         string            `json:"module,omitempty"`
	ModuleSettings map[string]string `json:"moduleSettings,omitempty"`
	// Delta, when set, lets a device build this release from the version it runs plus the
	// chunks it lacks (package delta): signed here, the chunk index's digest binds every chunk.
	Delta *Delta `json:"delta,omitempty"`
}

// Delta is a release's chunk index as its signed target names it.
type Delta struct {
	// Format is the index's format (delta.Format); a device that does not know it downloads
	// the full artifact.
	Format string `json:"format"`
	// Index is the index's key under the bucket's chunk store, and IndexLength and
	// IndexSHA256 what it must be.
	Index       string `json:"index"`
	IndexLength int64  `json:"indexLength"`
	IndexSHA256 string `json:"indexSha256"`
	// Length and SHA256 are the uncompressed tar the index rebuilds, which is what the device
	// installs from.
	Length int64  `json:"length"`
	SHA256 string `json:"sha256"`
}

// TargetName is the target path of software at version.
func TargetName(software, version string) string { return software + "/" + version + ".tar.gz" }

// SoftwareComponents is the Software of component targets.
const SoftwareComponents = "components"

// ComponentTargetName is the target path of a component version's signed recipe. It lives
// under components/, apart from the software targets, so no component can pass for core or
// ota_agent.
func ComponentTargetName(component, version string) string {
	return SoftwareComponents + "/" + component + "/" + version + ".json"
}

// Name is the target path these instructions belong to.
func (c Custom) Name() string {
	if c.Software == SoftwareComponents {
		return ComponentTargetName(c.Component, c.Version)
	}
	return TargetName(c.Software, c.Version)
}

var (
	moduleRE     = regexp.MustCompile(`^[a-z][a-z0-9-]{0,63}$`)
	moduleSetRE  = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_]{0,63}$`)
	maxModuleSet = 32
)

// ValidModule checks a release's update module and settings: a module name is lowercase
// letters, digits and dashes (it names a file in the agent's modules directory, so never a
// path), and setting names are letters, digits and underscores (modules get them as
// OTAFLOW_SETTING_<NAME> in their environment).
func ValidModule(module string, settings map[string]string) error {
	if module == "" {
		if len(settings) > 0 {
			return fmt.Errorf("module settings need a module (--module)")
		}
		return nil
	}
	if !moduleRE.MatchString(module) {
		return fmt.Errorf("module %q is not a module name: lowercase letters, digits and dashes, starting with a letter", module)
	}
	if len(settings) > maxModuleSet {
		return fmt.Errorf("%d module settings; at most %d", len(settings), maxModuleSet)
	}
	for k, v := range settings {
		if !moduleSetRE.MatchString(k) {
			return fmt.Errorf("module setting %q: names are letters, digits and underscores, starting with a letter", k)
		}
		if len(v) > 4096 || strings.ContainsRune(v, 0) {
			return fmt.Errorf("module setting %s: at most 4096 bytes and no NUL", k)
		}
	}
	return nil
}

// Options shape a new repository.
type Options struct {
	// RootKeys is how many root keys to make and RootThreshold how many must sign a root
	// (default 1 of 1). With 3 of 2, any two key holders can rotate keys.
	RootKeys, RootThreshold int
	// Expiry overrides DefaultExpiry per role.
	Expiry map[string]time.Duration
	// Now is the clock (tests move it).
	Now func() time.Time
}

// Repo is a TUF repository on disk: metadata/ holds what devices fetch, keys/ the private
// keys. Root keys belong offline: move keys/root-*.key to removable media and pass that
// directory (KeyDirs) only when root must be signed.
type Repo struct {
	Dir     string
	KeyDirs []string
	expiry  map[string]time.Duration
	now     func() time.Time

	root      *metadata.Metadata[metadata.RootType]
	targets   *metadata.Metadata[metadata.TargetsType]
	snapshot  *metadata.Metadata[metadata.SnapshotType]
	timestamp *metadata.Metadata[metadata.TimestampType]
	signers   map[string]signature.Signer // by key ID
}

func (r *Repo) metaPath(name string) string { return filepath.Join(r.Dir, "metadata", name) }
func (r *Repo) keyDir() string              { return filepath.Join(r.Dir, "keys") }

// Init creates a repository in dir with new keys for every role and empty targets.
func Init(dir string, o Options) (*Repo, error) {
	if _, err := os.Stat(filepath.Join(dir, "metadata", "root.json")); err == nil {
		return nil, fmt.Errorf("%s already holds a TUF repository; devices trust its root, so it is not replaced (use `starter release rotate` to change keys)", dir)
	}
	o.RootKeys, o.RootThreshold = max(o.RootKeys, 1), max(o.RootThreshold, 1)
	if o.RootThreshold > o.RootKeys {
		return nil, fmt.Errorf("a root threshold of %d needs at least %d root keys, not %d", o.RootThreshold, o.RootThreshold, o.RootKeys)
	}
	r := newRepo(dir, nil, o)
	for _, d := range []string{r.keyDir(), filepath.Join(dir, "metadata")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, err
		}
	}
	r.root = metadata.Root(r.expires(RoleRoot))
	r.root.Signed.ConsistentSnapshot = false
	for _, role := range Roles {
		n := 1
		if role == RoleRoot {
			n = o.RootKeys
			r.root.Signed.Roles[role].Threshold = o.RootThreshold
		}
		for range n {
			if err := r.newKey(role); err != nil {
				return nil, err
			}
		}
	}
	r.targets = metadata.Targets(r.expires(RoleTargets))
	r.snapshot = metadata.Snapshot(r.expires(RoleSnapshot))
	r.timestamp = metadata.Timestamp(r.expires(RoleTimestamp))
	// commit counts each from here to version 1.
	r.targets.Signed.Version, r.snapshot.Signed.Version, r.timestamp.Signed.Version = 0, 0, 0
	if err := r.signRoot(nil); err != nil {
		return nil, err
	}
	return r, r.commit(RoleTargets)
}

func newRepo(dir string, keyDirs []string, o Options) *Repo {
	r := &Repo{Dir: dir, KeyDirs: keyDirs, expiry: map[string]time.Duration{}, now: o.Now, signers: map[string]signature.Signer{}}
	if r.now == nil {
		r.now = time.Now
	}
	for role, d := range DefaultExpiry {
		r.expiry[role] = d
	}
	for role, d := range o.Expiry {
		r.expiry[role] = d
	}
	return r
}

func (r *Repo) expires(role string) time.Time {
	return r.now().UTC().Add(r.expiry[role]).Truncate(time.Second)
}

// Open loads the repository in dir with the keys in dir/keys and keyDirs.
func Open(dir string, keyDirs []string, o Options) (*Repo, error) {
	r := newRepo(dir, keyDirs, o)
	var err error
	if r.root, err = metadata.Root().FromFile(r.metaPath("root.json")); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("%s is not a TUF repository: create one with `starter release init --repo %s`", dir, dir)
		}
		return nil, fmt.Errorf("read %s: %w", r.metaPath("root.json"), err)
	}
	if r.targets, err = metadata.Targets().FromFile(r.metaPath("targets.json")); err != nil {
		return nil, fmt.Errorf("read targets metadata: %w", err)
	}
	if r.snapshot, err = metadata.Snapshot().FromFile(r.metaPath("snapshot.json")); err != nil {
		return nil, fmt.Errorf("read snapshot metadata: %w", err)
	}
	if r.timestamp, err = metadata.Timestamp().FromFile(r.metaPath("timestamp.json")); err != nil {
		return nil, fmt.Errorf("read timestamp metadata: %w", err)
	}
	for _, d := range append([]string{r.keyDir()}, keyDirs...) {
		files, _ := filepath.Glob(filepath.Join(d, "*.key"))
		for _, f := range files {
			if err := r.loadKey(f); err != nil {
				return nil, err
			}
		}
	}
	return r, nil
}

// Root returns the current root metadata: what devices are given to trust (agent
// --trusted-root). A device with an older root follows the chain of N.root.json to this one.
func (r *Repo) Root() ([]byte, error) { return r.root.ToBytes(true) }

func (r *Repo) loadKey(path string) error {
	raw, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	seed, err := hex.DecodeString(strings.TrimSpace(string(raw)))
	if err != nil || len(seed) != ed25519.PrivateKeySize {
		return fmt.Errorf("%s is not an ed25519 private key in hex", path)
	}
	s, err := signature.LoadED25519Signer(ed25519.PrivateKey(seed))
	if err != nil {
		return err
	}
	id, err := keyID(ed25519.PrivateKey(seed).Public())
	if err != nil {
		return err
	}
	r.signers[id] = s
	return nil
}

func keyID(pub any) (string, error) {
	k, err := metadata.KeyFromPublicKey(pub)
	if err != nil {
		return "", err
	}
	return k.ID()
}

// newKey makes a key for role, stores it in keys/ (mode 0600) and adds it to root.
func (r *Repo) newKey(role string) error {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return err
	}
	k, err := metadata.KeyFromPublicKey(pub)
	if err != nil {
		return err
	}
	id, err := k.ID()
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(r.keyDir(), role+"-"+id[:12]+".key"), []byte(hex.EncodeToString(priv)+"\n"), 0o600); err != nil {
		return err
	}
	s, err := signature.LoadED25519Signer(priv)
	if err != nil {
		return err
	}
	r.signers[id] = s
	return r.root.Signed.AddKey(k, role)
}

// sign signs m with the keys of role in root, failing unless at least the threshold of them
// is at hand.
func sign[T metadata.Roles](r *Repo, m *metadata.Metadata[T], root *metadata.RootType, role string) error {
	rr := root.Roles[role]
	n := 0
	for _, id := range rr.KeyIDs {
		s, ok := r.signers[id]
		if !ok {
			continue
		}
		if slices.ContainsFunc(m.Signatures, func(sig metadata.Signature) bool { return sig.KeyID == id }) {
			n++
			continue
		}
		if _, err := m.Sign(s); err != nil {
			return fmt.Errorf("sign %s: %w", role, err)
		}
		n++
	}
	if n < rr.Threshold {
		return fmt.Errorf("%s metadata needs %d signatures but only %d of its keys are at hand (looked in %s): pass the directory that holds the others with --keys",
			role, rr.Threshold, n, strings.Join(append([]string{r.keyDir()}, r.KeyDirs...), ", "))
	}
	return nil
}

// signRoot signs the root with its own keys and, after a rotation, with the previous root's
// (prev), as TUF requires for devices to accept the new root; it then writes N.root.json.
func (r *Repo) signRoot(prev *metadata.RootType) error {
	r.root.ClearSignatures()
	if prev != nil {
		if err := sign(r, r.root, prev, RoleRoot); err != nil {
			return fmt.Errorf("the new root must also be signed by the current root's keys: %w", err)
		}
	}
	if err := sign(r, r.root, &r.root.Signed, RoleRoot); err != nil {
		return err
	}
	if err := r.root.ToFile(r.metaPath(strconv.FormatInt(r.root.Signed.Version, 10)+".root.json"), true); err != nil {
		return err
	}
	return r.root.ToFile(r.metaPath("root.json"), true)
}

// commit re-signs role and every role after it in the cascade (targets → snapshot →
// timestamp), each with a new version and expiry, and writes them.
func (r *Repo) commit(from string) error {
	steps := []string{RoleTargets, RoleSnapshot, RoleTimestamp}
	i := slices.Index(steps, from)
	for _, role := range steps[i:] {
		var err error
		switch role {
		case RoleTargets:
			t := &r.targets.Signed
			err = resign(r, r.targets, &t.Version, &t.Expires, role, "targets.json")
		case RoleSnapshot:
			s := &r.snapshot.Signed
			if s.Meta["targets.json"], err = r.pin("targets.json", r.targets.Signed.Version); err == nil {
				err = resign(r, r.snapshot, &s.Version, &s.Expires, role, "snapshot.json")
			}
		case RoleTimestamp:
			ts := &r.timestamp.Signed
			if ts.Meta["snapshot.json"], err = r.pin("snapshot.json", r.snapshot.Signed.Version); err == nil {
				err = resign(r, r.timestamp, &ts.Version, &ts.Expires, role, "timestamp.json")
			}
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// pin is the snapshot's (or timestamp's) entry for a metadata file: its version, length and
// SHA-256, so that a file re-signed at the same version (with only the targets key, say) no
// longer matches what the other roles signed, and devices refuse it.
func (r *Repo) pin(file string, version int64) (*metadata.MetaFiles, error) {
	raw, err := os.ReadFile(r.metaPath(file))
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(raw)
	m := metadata.MetaFile(version)
	m.Length, m.Hashes = int64(len(raw)), metadata.Hashes{"sha256": sum[:]}
	return m, nil
}

// resign gives m (of role) its next version and a new expiry, signs it and writes it to file.
func resign[T metadata.Roles](r *Repo, m *metadata.Metadata[T], version *int64, expires *time.Time, role, file string) error {
	*version, *expires = *version+1, r.expires(role)
	m.ClearSignatures()
	if err := sign(r, m, &r.root.Signed, role); err != nil {
		return err
	}
	return m.ToFile(r.metaPath(file), true)
}

var (
	targetRE    = regexp.MustCompile(`^(core|ota_agent)/[0-9A-Za-z][0-9A-Za-z.+-]{0,63}\.tar\.gz$`)
	componentRE = regexp.MustCompile(`^components/[a-zA-Z0-9._-]{1,128}/[0-9A-Za-z][0-9A-Za-z.+-]{0,63}\.json$`)
)

// AddTarget signs the file at path as target name with its custom data and publishes new
// targets, snapshot and timestamp. A target already signed with other content is refused:
// devices that installed it would differ from those that install it now.
func (r *Repo) AddTarget(name, path string, c Custom) (*metadata.TargetFiles, error) {
	if !(targetRE.MatchString(name) || componentRE.MatchString(name)) || strings.Contains(name, "..") {
		return nil, fmt.Errorf("target name %q is invalid: use <software>/<version>.tar.gz (core or ota_agent) or components/<name>/<version>.json", name)
	}
	if name != c.Name() {
		return nil, fmt.Errorf("target %s does not match its software %q, component %q and version %q", name, c.Software, c.Component, c.Version)
	}
	if c.Software != SoftwareComponents {
		if c.OS == "" || c.Architecture == "" {
			return nil, fmt.Errorf("target %s names no operating system and architecture: say which platform it is built for (--os, --architecture)", name)
		}
		if err := platform.Validate(c.OS, c.Architecture); err != nil {
			return nil, fmt.Errorf("target %s: %w", name, err)
		}
		if err := ValidModule(c.Module, c.ModuleSettings); err != nil {
			return nil, fmt.Errorf("target %s: %w", name, err)
		}
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return nil, err
	}
	if n == 0 {
		return nil, fmt.Errorf("%s is empty", path)
	}
	raw, err := json.Marshal(c)
	if err != nil {
		return nil, err
	}
	custom := json.RawMessage(raw)
	tf := &metadata.TargetFiles{Length: n, Hashes: metadata.Hashes{"sha256": h.Sum(nil)}, Custom: &custom, Path: name}
	if old, ok := r.targets.Signed.Targets[name]; ok {
		if old.Length != tf.Length || !old.Hashes.Equal(tf.Hashes) {
			return nil, fmt.Errorf("%s is already signed with other content (%d bytes, sha256 %x); publish a new version instead", name, old.Length, old.Hashes["sha256"])
		}
		if old.Custom != nil && string(*old.Custom) == string(raw) {
			return old, r.commit(RoleTimestamp)
		}
	}
	r.targets.Signed.Targets[name] = tf
	return tf, r.commit(RoleTargets)
}

// RemoveTarget withdraws a signed target and publishes new targets, snapshot and timestamp:
// devices refuse to install it from then on (those that run it keep it, and may still roll
// back to it from its slot).
func (r *Repo) RemoveTarget(name string) error {
	if _, ok := r.targets.Signed.Targets[name]; !ok {
		return fmt.Errorf("%s is not a signed target of this repository (`starter release list` lists them)", name)
	}
	delete(r.targets.Signed.Targets, name)
	return r.commit(RoleTargets)
}

// Signed is every signed software target with its length, digest and instructions (component
// recipes left out).
func (r *Repo) Signed() ([]Target, error) {
	var out []Target
	for _, name := range r.Targets() {
		tf := r.targets.Signed.Targets[name]
		if tf.Custom == nil {
			continue
		}
		t, err := parseTarget(name, tf)
		if err != nil {
			return nil, err
		}
		if t.Software != SoftwareComponents {
			out = append(out, *t)
		}
	}
	return out, nil
}

// Targets lists the signed target names.
func (r *Repo) Targets() []string {
	out := make([]string, 0, len(r.targets.Signed.Targets))
	for n := range r.targets.Signed.Targets {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// RefreshTimestamp re-signs the timestamp with a new expiry.
func (r *Repo) RefreshTimestamp() error { return r.commit(RoleTimestamp) }

// Rotate replaces the keys of roles with new ones in one new root version, signed by the old
// and the new root keys, then re-signs the rotated roles' metadata (and what follows them in
// the cascade) with the new keys. The old key files move to keys/revoked/. Rotate the online
// roles together (targets, snapshot, timestamp) when one of their keys may be known to
// someone else: they are usually kept on the same machine.
func (r *Repo) Rotate(roles ...string) error {
	if len(roles) == 0 {
		return fmt.Errorf("name at least one role to rotate: %v", Roles)
	}
	for _, role := range roles {
		if !slices.Contains(Roles, role) {
			return fmt.Errorf("role %q is not one of %v", role, Roles)
		}
	}
	prevRaw, err := r.root.ToBytes(false)
	if err != nil {
		return err
	}
	prev, err := metadata.Root().FromBytes(prevRaw)
	if err != nil {
		return err
	}
	var old []string
	for _, role := range roles {
		ids := slices.Clone(r.root.Signed.Roles[role].KeyIDs)
		for _, id := range ids {
			if err := r.root.Signed.RevokeKey(id, role); err != nil {
				return err
			}
		}
		n := 1
		if role == RoleRoot {
			n = max(len(ids), r.root.Signed.Roles[role].Threshold)
		}
		for range n {
			if err := r.newKey(role); err != nil {
				return err
			}
		}
		old = append(old, ids...)
	}
	r.root.Signed.Version++
	r.root.Signed.Expires = r.expires(RoleRoot)
	if err := r.signRoot(&prev.Signed); err != nil {
		return err
	}
	r.retire(old)
	// Re-sign from the earliest rotated role of the cascade: its successors pin it anew.
	for _, role := range []string{RoleTargets, RoleSnapshot, RoleTimestamp} {
		if slices.Contains(roles, role) {
			return r.commit(role)
		}
	}
	return nil
}

// retire moves the key files of ids out of the way (they may no longer sign anything).
func (r *Repo) retire(ids []string) {
	os.MkdirAll(filepath.Join(r.keyDir(), "revoked"), 0o700)
	for _, d := range append([]string{r.keyDir()}, r.KeyDirs...) {
		for _, id := range ids {
			files, _ := filepath.Glob(filepath.Join(d, "*-"+id[:12]+".key"))
			for _, f := range files {
				os.Rename(f, filepath.Join(r.keyDir(), "revoked", filepath.Base(f)))
			}
		}
	}
	for _, id := range ids {
		delete(r.signers, id)
	}
}

// Files are the metadata files devices fetch: every N.root.json, root.json, targets.json,
// snapshot.json and timestamp.json.
func (r *Repo) Files() (map[string][]byte, error) {
	names, err := filepath.Glob(r.metaPath("*.json"))
	if err != nil {
		return nil, err
	}
	out := map[string][]byte{}
	for _, p := range names {
		raw, err := os.ReadFile(p)
		if err != nil {
			return nil, err
		}
		out[filepath.Base(p)] = raw
	}
	return out, nil
}
