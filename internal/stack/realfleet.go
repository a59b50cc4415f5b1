package stack

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/otaflow/otaflow/internal/agent"
	"github.com/otaflow/otaflow/internal/agent/preflight"
	"github.com/otaflow/otaflow/internal/agent/slots"
	"github.com/otaflow/otaflow/internal/release"
	"github.com/otaflow/otaflow/workflows"
)

// ReleaseBucket is where the local stack keeps published releases.
const ReleaseBucket = "otaflow-releases"

// RealFleet makes the stack's simulated devices install for real: each device gets its own
// install root with the starting version unpacked in a slot, the managedRespawn scripts and the
// fleet's public key; releases are packed, signed and uploaded to the artifact store.
type RealFleet struct {
	s   *Stack
	key ed25519.PrivateKey
	dir string
}

// UseRealInstalls prepares devices (started afterwards) on fromVersion. Devices named in
// failPreUpdate get a ggc_pre_update.sh that fails, as a device whose service will not stop.
func (s *Stack) UseRealInstalls(ctx context.Context, fromVersion string, failPreUpdate []string) (*RealFleet, error) {
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	f := &RealFleet{s: s, key: key, dir: filepath.Join(s.opts.DataDir, "releases")}
	if err := os.MkdirAll(f.dir, 0o755); err != nil {
		return nil, err
	}
	initial, err := f.pack(fromVersion)
	if err != nil {
		return nil, err
	}
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
		return &agent.SlotInstaller{Root: root, PublicKey: key.Public().(ed25519.PublicKey), ManagedRespawn: true,
			ScriptsDir: scripts, ScriptsOwner: os.Getuid(), Env: []string{"PATH=" + os.Getenv("PATH")}}, nil
	}
	return f, nil
}

// pack builds the demo's core software at version: bin/core prints its version.
func (f *RealFleet) pack(version string) (string, error) {
	data, err := release.Pack(
		release.File{Name: "bin/core", Mode: 0o755, Body: []byte("#!/bin/sh\necho \"otaflow demo core " + version + "\"\n")},
		release.File{Name: "VERSION", Mode: 0o644, Body: []byte(version + "\n")})
	if err != nil {
		return "", err
	}
	file := filepath.Join(f.dir, "core-"+version+".tar.gz")
	return file, os.WriteFile(file, data, 0o644)
}

// Publish packs, signs and uploads core at version, and returns the rollout's artifact.
func (f *RealFleet) Publish(ctx context.Context, version string) (*workflows.Artifact, error) {
	file, err := f.pack(version)
	if err != nil {
		return nil, err
	}
	r, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	a, err := release.Sign(r, f.key, release.S3URL(ReleaseBucket, "core", version))
	if err != nil {
		return nil, err
	}
	if err := f.s.ArtifactStore().Upload(ctx, a, file); err != nil {
		return nil, fmt.Errorf("publish core %s: %w", version, err)
	}
	return a, nil
}

// HealthCheck is the demo's health check: the new version's bin/core runs and reports the
// version the job installs, and the devices named unhealthy fail on that version.
func HealthCheck(version string, unhealthy []string) []string {
	script := `./bin/core | grep -qF "$OTAFLOW_VERSION" || { echo "bin/core does not report $OTAFLOW_VERSION" >&2; exit 1; }`
	if len(unhealthy) > 0 {
		script += `; if [ "$OTAFLOW_VERSION" = "` + version + `" ]; then case "$OTAFLOW_THING_NAME" in ` + strings.Join(unhealthy, "|") +
			`) echo "demo: $OTAFLOW_THING_NAME is unhealthy on $OTAFLOW_VERSION" >&2; exit 1;; esac; fi`
	}
	return []string{"sh", "-c", script}
}
