package stack

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/otaflow/otaflow/internal/agent"
	"github.com/otaflow/otaflow/internal/agent/preflight"
	"github.com/otaflow/otaflow/internal/agent/slots"
	"github.com/otaflow/otaflow/internal/platform"
	"github.com/otaflow/otaflow/internal/release"
	"github.com/otaflow/otaflow/internal/tuf"
)

// ReleaseBucket is where the local stack keeps published releases.
const ReleaseBucket = release.DefaultBucket

// RealFleet makes the stack's simulated devices install for real: each device gets its own
// install root with the starting version unpacked in a slot, the managedRespawn scripts and the
// root of the stack's TUF release repository; releases are packed, signed as TUF targets and
// uploaded with the repository's metadata to the artifact store.
type RealFleet struct {
	s       *Stack
	repo    *tuf.Repo
	dir     string
	from    string
	payload int
}

// UseRealInstalls prepares devices (started afterwards) on fromVersion. Devices named in
// failPreUpdate get a ggc_pre_update.sh that fails, as a device whose service will not stop.
func (s *Stack) UseRealInstalls(ctx context.Context, fromVersion string, failPreUpdate []string) (*RealFleet, error) {
	f := &RealFleet{s: s, dir: filepath.Join(s.opts.DataDir, "releases"), from: fromVersion}
	if err := os.MkdirAll(f.dir, 0o755); err != nil {
		return nil, err
	}
	repo, err := s.releaseRepo()
	if err != nil {
		return nil, err
	}
	f.repo = repo
	root, err := repo.Root()
	if err != nil {
		return nil, err
	}
	initial, err := f.pack(fromVersion)
	if err != nil {
		return nil, err
	}
	trusted := root
	s.DeviceInstaller = func(thing string) (agent.Installer, error) {
		root := filepath.Join(s.opts.DataDir, "devices", thing, "root")
		scripts := filepath.Join(root, "usr", "scripts")
		if err := os.MkdirAll(scripts, 0o755); err != nil {
			return nil, err
		}
		for _, name := range preflight.Scripts {
			body := "#!/bin/sh\nexit 0\n"
			if strings.HasPrefix(name, "ggc_pre") && slices.Contains(failPreUpdate, thing) {
				body = "#!/bin/sh\necho \"demo: the core service on " + thing + " would not stop\" >&2\nexit 1\n"
			}
			if err := os.WriteFile(filepath.Join(scripts, name), []byte(body), 0o700); err != nil {
				return nil, err
			}
		}
		core := slots.Slots{Root: filepath.Join(root, "core")}
		if core.Current() == "" {
			if err := core.Install(fromVersion, initial); err != nil {
				return nil, err
			}
			if err := core.Switch(fromVersion); err != nil {
				return nil, err
			}
		}
		trust := &tuf.Client{MetadataURL: release.MetadataURL(s.ArtifactStore().Endpoint, ReleaseBucket), TrustedRoot: trusted,
			Dir: filepath.Join(s.opts.DataDir, "devices", thing, "tuf")}
		return &agent.SlotInstaller{Root: root, Trust: trust, ManagedRespawn: true, Platform: DevicePlatform, AllowHTTP: true,
			ScriptsDir: scripts, ScriptsOwner: os.Getuid(), Env: []string{"PATH=" + os.Getenv("PATH")}}, nil
	}
	return f, nil
}

// releaseRepo is the stack's own TUF release repository: new keys per data directory (never
// a shared default).
func (s *Stack) releaseRepo() (*tuf.Repo, error) {
	repoDir := filepath.Join(s.opts.DataDir, "release-repo")
	repo, err := tuf.Open(repoDir, nil, tuf.Options{})
	if err != nil {
		if repo, err = tuf.Init(repoDir, tuf.Options{}); err != nil {
			return nil, err
		}
	}
	return repo, nil
}

// PublishRelease packs a small release of software at version (bin/core prints the version),
// signs it with the stack's own repository for DevicePlatform and uploads it with the
// metadata to ReleaseBucket, as `starter release publish` would: what a rollout to simulated
// devices installs (they refuse a job without an artifact, as agents do).
func (s *Stack) PublishRelease(ctx context.Context, software, version string) (*release.Release, error) {
	repo, err := s.releaseRepo()
	if err != nil {
		return nil, err
	}
	data, err := release.Pack(release.File{Name: "bin/core", Mode: 0o755, Body: []byte("#!/bin/sh\necho \"otaflow " + software + " " + version + "\"\n")})
	if err != nil {
		return nil, err
	}
	file := filepath.Join(s.opts.DataDir, "release-repo", software+"-"+version+".tar.gz")
	if err := os.WriteFile(file, data, 0o644); err != nil {
		return nil, err
	}
	store := s.ArtifactStore()
	rel, err := release.Publish(ctx, repo, &store, ReleaseBucket, file,
		tuf.Custom{Software: software, Version: version, OS: DevicePlatform.OS, Architecture: DevicePlatform.Arch})
	if err != nil {
		return nil, fmt.Errorf("publish %s %s: %w", software, version, err)
	}
	return rel, nil
}

// DevicePlatform is what the stack's real devices say they are (the demo's rollouts target
// it): they run on this machine whatever its OS, as ubuntu/x86_64 devices would.
var DevicePlatform = platform.Platform{OS: "ubuntu", Arch: "x86_64"}

// WithPayload gives every version (the starting one too: call it before devices start) a
// library of n bytes that versions share but for 32 KiB in its middle, as a release that
// changes a little of a large tree: what delta updates are for.
func (f *RealFleet) WithPayload(n int) error {
	f.payload = n
	_, err := f.pack(f.from)
	return err
}

// payloadFile is the library of version (see WithPayload).
func (f *RealFleet) payloadFile(version string) release.File {
	body := make([]byte, f.payload)
	r := rand.New(rand.NewPCG(7, 7))
	for i := range body {
		body[i] = byte(r.Uint32())
	}
	var seed uint64
	for _, c := range version {
		seed = seed*31 + uint64(c)
	}
	r = rand.New(rand.NewPCG(seed, 1))
	mid := len(body) / 2
	for i := mid; i < min(mid+32<<10, len(body)); i++ {
		body[i] = byte(r.Uint32())
	}
	return release.File{Name: "lib/libcore.so", Mode: 0o644, Body: body}
}

// pack builds the demo's core software at version: bin/core prints its version.
func (f *RealFleet) pack(version string) (string, error) {
	files := []release.File{
		{Name: "bin/core", Mode: 0o755, Body: []byte("#!/bin/sh\necho \"otaflow demo core " + version + "\"\n")},
		{Name: "VERSION", Mode: 0o644, Body: []byte(version + "\n")}}
	if f.payload > 0 {
		files = append(files, f.payloadFile(version))
	}
	data, err := release.Pack(files...)
	if err != nil {
		return "", err
	}
	file := filepath.Join(f.dir, "core-"+version+".tar.gz")
	return file, os.WriteFile(file, data, 0o644)
}

// Publish packs core at version, signs it as a TUF target with the health check, uploads it
// and the repository's metadata, and returns the rollout's artifact.
func (f *RealFleet) Publish(ctx context.Context, version string, healthCheck []string) (*release.Release, error) {
	file, err := f.pack(version)
	if err != nil {
		return nil, err
	}
	c := tuf.Custom{Software: "core", Version: version, OS: DevicePlatform.OS, Architecture: DevicePlatform.Arch}
	if len(healthCheck) > 0 {
		c.HealthCheck = &tuf.HealthCheck{Command: healthCheck}
	}
	store := f.s.ArtifactStore()
	rel, err := release.Publish(ctx, f.repo, &store, ReleaseBucket, file, c)
	if err != nil {
		return nil, fmt.Errorf("publish core %s: %w", version, err)
	}
	return rel, nil
}

// HealthCheck is the demo's health check: the new version's bin/core runs and reports the
// version the job installs, and the devices named unhealthy fail on that version.
// DegradingHealthCheck adds devices whose new version passes its checks for the first
// degradeAfter after it was installed and fails every one after: a release that installs
// cleanly and then misbehaves.
func DegradingHealthCheck(version string, unhealthy, degrading []string, degradeAfter time.Duration) []string {
	hc := HealthCheck(version, unhealthy)
	if len(degrading) == 0 {
		return hc
	}
	script := hc[2] + `; if [ "$OTAFLOW_VERSION" = "` + version + `" ]; then case "$OTAFLOW_THING_NAME" in ` + strings.Join(degrading, "|") +
		`) age=$(( $(date +%s) - $(stat -c %Y .) )); if [ "$age" -ge ` + strconv.Itoa(int(degradeAfter.Seconds())) +
		` ]; then echo "demo: $OTAFLOW_THING_NAME degraded on $OTAFLOW_VERSION after ${age}s" >&2; exit 1; fi;; esac; fi`
	return []string{"sh", "-c", script}
}

func HealthCheck(version string, unhealthy []string) []string {
	script := `./bin/core | grep -qF "$OTAFLOW_VERSION" || { echo "bin/core does not report $OTAFLOW_VERSION" >&2; exit 1; }`
	if len(unhealthy) > 0 {
		script += `; if [ "$OTAFLOW_VERSION" = "` + version + `" ]; then case "$OTAFLOW_THING_NAME" in ` + strings.Join(unhealthy, "|") +
			`) echo "demo: $OTAFLOW_THING_NAME is unhealthy on $OTAFLOW_VERSION" >&2; exit 1;; esac; fi`
	}
	return []string{"sh", "-c", script}
}
