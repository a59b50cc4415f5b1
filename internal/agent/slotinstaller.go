package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/Masterminds/semver/v3"

	"github.com/otaflow/otaflow/internal/agent/preflight"
	"github.com/otaflow/otaflow/internal/agent/slots"
	"github.com/otaflow/otaflow/internal/jobdoc"
	"github.com/otaflow/otaflow/internal/platform"
	"github.com/otaflow/otaflow/internal/tuf"
)

// SlotInstaller is the agent's installer: each software's versions live side by side in
// slots under Root (<Root>/core, <Root>/ota_agent), and a switch is one atomic rename of the
// "current" link. Every release is first verified through TUF (Trust): its signed target gives
// the artifact's length and digest, the health check and the restart policy. Artifacts are
// downloaded, checked against the signed length and SHA-256, and unpacked into a new slot; the
// seed's managedRespawn scripts run around the update.
type SlotInstaller struct {
	// Root holds one slot tree per software and the downloads.
	Root string
	// Trust is the release repository's metadata, verified on the device.
	Trust *tuf.Client
	// ManagedRespawn runs the seed's pre/post scripts from ScriptsDir, owned by ScriptsOwner.
	ManagedRespawn bool
	ScriptsDir     string
	ScriptsOwner   int
	// Restart restarts the managed software after a switch (e.g. systemctl restart ...).
	Restart []string
	// Env is what preflight checks see (default: the process environment).
	Env []string
	// FreeDiskFactor is the free disk needed, as a multiple of the artifact (default 3).
	FreeDiskFactor float64
	// DownloadBytesPerSecond caps the download bandwidth (0: no cap).
	DownloadBytesPerSecond int64
	// Platform is this device's OS and architecture: a release signed for another is refused.
	Platform platform.Platform
	// AllowHTTP lets artifacts come over plain HTTP (development only); otherwise an artifact
	// URL must be HTTPS.
	AllowHTTP bool
	// ModulesDir holds the update modules releases may name (default DefaultModulesDir);
	// each must be owned by ModulesOwner (root: 0) and executable by it only.
	ModulesDir   string
	ModulesOwner int
	// Reboot restarts the device, for update modules that need it (default systemctl reboot);
	// BootID tells one boot from the next (default /proc/sys/kernel/random/boot_id).
	Reboot []string
	BootID func() string
}

var _ Installer = (*SlotInstaller)(nil)

func (in *SlotInstaller) slots(software string) slots.Slots {
	return slots.Slots{Root: filepath.Join(in.Root, software)}
}

func (in *SlotInstaller) download(u *Update) string {
	return filepath.Join(in.Root, "downloads", u.Software()+"-"+u.Version()+".tar.gz")
}

// scripts are the managedRespawn scripts around an update of software (seed v1).
func scripts(software string) (pre, post string) {
	if software == jobdoc.SoftwareOTAAgent {
		return "ota_pre_update.sh", "ota_post_update.sh"
	}
	return "ggc_pre_update.sh", "ggc_post_update.sh"
}

// Active is the version a rollback job's module returned software to, or else the version an
// update module last made active, or else the version in its current slot.
func (in *SlotInstaller) Active(software string) string {
	if raw, err := os.ReadFile(in.rollbackPath(software)); err == nil {
		var j rollbackJob
		if json.Unmarshal(raw, &j) == nil && j.To != "" {
			return j.To // a module undid its release; the rollback job is not committed yet
		}
	}
	if r := in.record(software); r != nil {
		return r.Version
	}
	return in.slots(software).Current()
}

// signedPath is where the verified target of an installed version is kept: what Start and
// Verify act on, after a restart too, and what a rollback to that version uses.
func (in *SlotInstaller) signedPath(software, version string) string {
	return filepath.Join(in.Root, software, "signed", version+".json")
}

// signed is the verified target of software at version; nil for a version installed without
// one (the device's initial version).
func (in *SlotInstaller) signed(software, version string) *tuf.Target {
	raw, err := os.ReadFile(in.signedPath(software, version))
	if err != nil {
		return nil
	}
	var t tuf.Target
	if json.Unmarshal(raw, &t) != nil {
		return nil
	}
	return &t
}

// verify checks the job's release through TUF before a byte of it is downloaded, and keeps
// the verified target.
func (in *SlotInstaller) verify(u *Update) (*tuf.Target, error) {
	if in.Trust == nil {
		return nil, Reject("this device has no trusted release root (--trusted-root), so it installs nothing")
	}
	t, err := in.Trust.Target(tuf.TargetName(u.Software(), u.Version()))
	var ve *tuf.VerifyError
	if errors.As(err, &ve) {
		return nil, Reject("release %s %s refused: %s", u.Software(), u.Version(), ve.Reason)
	}
	if err != nil {
		return nil, fmt.Errorf("fetch the release metadata: %s", redactURLs(err.Error()))
	}
	if t.OS == "" || t.Architecture == "" {
		return nil, Reject("release %s %s names no platform in its signed target; publish it again with --os and --architecture", u.Software(), u.Version())
	}
	if t.OS != in.Platform.OS || t.Architecture != in.Platform.Arch {
		return nil, Reject("release %s %s is built for %s/%s; this device is %s (the agent's --os and --architecture)", u.Software(), u.Version(), t.OS, t.Architecture, in.Platform)
	}
	if t.MinimumVersion != "" && u.From.Version != "" {
		minV, err1 := semver.NewVersion(t.MinimumVersion)
		fromV, err2 := semver.NewVersion(u.From.Version)
		if err1 != nil || err2 != nil || fromV.LessThan(minV) {
			return nil, Reject("%s %s must be installed over %s or newer; this device runs %s", u.Software(), u.Version(), t.MinimumVersion, u.From.Version)
		}
	}
	raw, err := json.Marshal(t)
	if err != nil {
		return nil, err
	}
	p := in.signedPath(u.Software(), u.Version())
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return nil, err
	}
	return t, writeFileAtomic(p, raw, true)
}

// VerifyComponents checks that every component version of a deployment is a signed recipe
// (the TUF target components/NAME/VERSION.json), so the agent records only versions the
// release repository vouches for.
func (in *SlotInstaller) VerifyComponents(_ context.Context, components map[string]string) error {
	if in.Trust == nil {
		return Reject("this device has no trusted release root (--trusted-root), so it records no component versions")
	}
	names := slices.Sorted(maps.Keys(components))
	for _, name := range names {
		v := components[name]
		t, err := in.Trust.Target(tuf.ComponentTargetName(name, v))
		var ve *tuf.VerifyError
		if errors.As(err, &ve) {
			return Reject("component %s %s refused: %s (sign its recipe with `starter component add --repo`)", name, v, ve.Reason)
		}
		if err != nil {
			return fmt.Errorf("fetch the release metadata: %s", redactURLs(err.Error()))
		}
		if t.Component != name || t.Version != v {
			return Reject("component %s %s refused: its signed recipe names %s %s", name, v, t.Component, t.Version)
		}
	}
	return nil
}

// Checks reports whether Verify runs a health check for u (the signed one of its version).
func (in *SlotInstaller) Checks(u *Update) bool {
	t := in.signed(u.Software(), u.Version())
	return t != nil && t.HealthCheck != nil
}

// Prepare refuses downgrades outside rollback jobs and devices that do not meet the
// requirements, verifies the release through TUF, then downloads and checks the artifact and
// runs the pre-update script.
func (in *SlotInstaller) Prepare(ctx context.Context, u *Update) error {
	doc, sl := u.Doc, in.slots(u.Software())
	if err := CheckDowngrade(u); err != nil {
		return err
	}
	var target *tuf.Target
	if doc.Artifact != nil {
		var err error
		if target, err = in.verify(u); err != nil {
			return err
		}
		if err := tuf.CheckLocation("the artifact URL", doc.Artifact.URL, in.AllowHTTP); err != nil {
			return Reject("%s", redactURLs(err.Error()))
		}
	} else if undo, _, err := in.undoing(u); err != nil {
		return err
	} else if err := CheckSwitch(u, undo != nil || sl.Installed(doc.Version)); err != nil {
		return err
	}
	if _, ok := usesModule(target); ok {
		caps, err := in.moduleCapabilities(ctx, u, target)
		if err != nil {
			return err
		}
		if caps.NeedsReboot && in.bootID() == "" {
			return Reject("update module %s needs a reboot, and this device cannot tell one boot from the next (no %s)", target.Module, bootIDFile)
		}
	}
	var size int64
	if target != nil {
		size = target.Length
	}
	os.MkdirAll(sl.Root, 0o755)
	if err := preflight.Check(preflight.Config{
		InstallDir: sl.Root, ArtifactSize: size, FreeFactor: in.FreeDiskFactor, ManagedRespawn: in.ManagedRespawn,
		ScriptsDir: in.ScriptsDir, OwnerUID: in.ScriptsOwner, Env: in.Env, RestartCommand: len(in.Restart) > 0,
	}); err != nil {
		return Reject("requirements not met: %v", err)
	}
	if target != nil {
		if err := u.Report(ctx, StepDownloading, nil); err != nil {
			return err
		}
		os.MkdirAll(filepath.Join(in.Root, "downloads"), 0o755)
		if err := in.fetchRelease(ctx, u, target); err != nil {
			return err
		}
	}
	if in.ManagedRespawn {
		pre, _ := scripts(u.Software())
		if err := preflight.RunScript(in.ScriptsDir, pre); err != nil {
			os.Remove(in.download(u))
			os.Remove(in.tarPath(u))
			return Fail("%v", err)
		}
	}
	return nil
}

// Install unpacks the downloaded artifact into a new slot (a rollback to a version still in
// its slot has nothing to unpack), or hands it to the release's update module.
func (in *SlotInstaller) Install(ctx context.Context, u *Update) error {
	if u.Doc.Artifact == nil {
		return nil
	}
	if t := in.signed(u.Software(), u.Version()); t != nil {
		if _, ok := usesModule(t); ok {
			return in.moduleInstall(ctx, u, t)
		}
	}
	file := in.download(u)
	if _, err := os.Stat(in.tarPath(u)); err == nil {
		file = in.tarPath(u) // rebuilt from chunks
	}
	err := in.slots(u.Software()).Install(u.Version(), file)
	os.Remove(file) // installed, or refused: either way it is not needed again
	if err != nil {
		return Fail("install into a new slot failed: %v", err)
	}
	return nil
}

// Switch points the current link at the new slot, or has the release's update module make
// it active.
func (in *SlotInstaller) Switch(ctx context.Context, u *Update) error {
	if t := in.signed(u.Software(), u.Version()); t != nil && u.Doc.Artifact != nil {
		if _, ok := usesModule(t); ok {
			return in.moduleSwitch(ctx, u, t)
		}
	}
	if u.Doc.Artifact == nil && in.record(u.Software()) != nil {
		return in.undo(ctx, u) // a rollback job over a module's release
	}
	if err := in.slots(u.Software()).Switch(u.Version()); err != nil {
		return Fail("switch to %s failed: %v", u.Version(), err)
	}
	return nil
}

// Start runs the restart command, unless the release's signed restart policy is none; for an
// update module that needs a reboot, it reboots the device.
func (in *SlotInstaller) Start(ctx context.Context, u *Update) error {
	if j := in.pendingRollback(u); j != nil && j.Reboot {
		return in.startRollback(ctx, u, j)
	}
	if t := in.signed(u.Software(), u.Version()); t != nil && u.Doc.Artifact != nil {
		if _, ok := usesModule(t); ok {
			if caps, err := in.moduleCapabilities(ctx, u, t); err != nil {
				return err
			} else if caps.NeedsReboot {
				return in.rebootInto(ctx, u)
			}
		}
	}
	if t := in.signed(u.Software(), u.Version()); t != nil && t.RestartPolicy == jobdoc.RestartNone {
		return nil
	}
	if err := in.restart(); err != nil {
		return Fail("restarting %s failed: %v", u.Version(), err)
	}
	return nil
}

// Verify runs the job's health check in the new version's directory through the bake time.
func (in *SlotInstaller) Verify(ctx context.Context, u *Update) error {
	t := in.signed(u.Software(), u.Version())
	dir := in.slots(u.Software()).Dir(u.Version())
	j := in.pendingRollback(u)
	if j != nil && j.Reboot && j.BootFrom == in.bootID() {
		if err := in.runReboot(); err != nil { // asked again: it was refused or lost
			return Fail("%v", err)
		}
		return ErrRebooting
	}
	_, isModule := usesModule(t)
	if isModule && j != nil {
		if _, err := os.Stat(in.workDir(u.Software(), u.Version())); err != nil {
			isModule = false // the module's work for this version is gone: the health check stands
		}
	}
	if isModule && (u.Doc.Artifact != nil || j != nil) {
		if err := in.rebooted(ctx, u); err != nil {
			return err
		}
		if _, err := in.runModule(ctx, u, t, stepVerify); err != nil {
			return err
		}
		dir = in.workDir(u.Software(), u.Version())
	}
	env := append(os.Environ(), "OTAFLOW_THING_NAME="+u.Thing, "OTAFLOW_SOFTWARE="+u.Software(), "OTAFLOW_VERSION="+u.Version())
	if err := healthy(ctx, t, u.Doc.BakeSeconds, dir, env); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return Fail("health check of %s failed: %v", u.Version(), err)
	}
	return nil
}

// CheckHealth re-runs the active version's signed health check once (HealthChecker).
func (in *SlotInstaller) CheckHealth(ctx context.Context, thing, software string) error {
	v := in.Active(software)
	t := in.signed(software, v)
	if v == "" || t == nil || t.HealthCheck == nil {
		return nil
	}
	env := append(os.Environ(), "OTAFLOW_THING_NAME="+thing, "OTAFLOW_SOFTWARE="+software, "OTAFLOW_VERSION="+v)
	return healthy(ctx, t, 0, in.slots(software).Dir(v), env)
}

var _ HealthChecker = (*SlotInstaller)(nil)

// Commit runs the post-update script, then removes the slots of versions older than the one
// the device can roll back to.
func (in *SlotInstaller) Commit(ctx context.Context, u *Update) error {
	if j := in.pendingRollback(u); j != nil {
		os.Remove(in.rollbackPath(u.Software()))
		if in.ManagedRespawn {
			_, post := scripts(u.Software())
			if err := preflight.RunScript(in.ScriptsDir, post); err != nil {
				return Fail("%v", err)
			}
		}
		return nil
	}
	if t := in.signed(u.Software(), u.Version()); t != nil && u.Doc.Artifact != nil {
		if _, ok := usesModule(t); ok {
			return in.moduleCommit(ctx, u, t)
		}
	}
	if in.ManagedRespawn {
		_, post := scripts(u.Software())
		if err := preflight.RunScript(in.ScriptsDir, post); err != nil {
			return Fail("%v", err)
		}
	}
	// The versioned directories hold the software again, whatever a module installed before.
	os.Remove(in.recordPath(u.Software()))
	// Pruning is housekeeping: the update stands even if an old slot cannot be removed (the
	// next update tries again).
	sl := in.slots(u.Software())
	sl.Prune()
	kept, _ := filepath.Glob(filepath.Join(in.Root, u.Software(), "signed", "*"))
	for _, f := range kept {
		v := strings.TrimSuffix(strings.TrimSuffix(filepath.Base(f), ".json"), ".index")
		if v != sl.Current() && v != sl.Previous() {
			os.Remove(f)
		}
	}
	return nil
}

// Rollback switches back to the previous slot (or has the release's update module restore
// what it replaced) and restarts it.
func (in *SlotInstaller) Rollback(ctx context.Context, u *Update) error {
	if j := in.pendingRollback(u); j != nil {
		os.Remove(in.rollbackPath(u.Software()))
		return fmt.Errorf("%s %s was undone by its update module, which cannot be undone in turn: publish %s again to return to it", u.Software(), j.From, j.From)
	}
	if t := in.signed(u.Software(), u.Version()); t != nil && u.Doc.Artifact != nil {
		if _, ok := usesModule(t); ok {
			reboot, err := in.moduleRollback(ctx, u, t)
			if err != nil {
				return err
			}
			if reboot {
				// The device runs the release being rolled back: the module has pointed
				// the bootloader back, and a reboot completes it.
				return in.runReboot()
			}
			in.restart()
			return nil
		}
	}
	if _, err := in.slots(u.Software()).Rollback(); err != nil {
		return err
	}
	in.restart()
	return nil
}

var urlQueryRE = regexp.MustCompile(`(https?://[^\s"'?]+)\?[^\s"']*`)

// redactURLs drops the query of every URL in s: a presigned URL's signature is a credential,
// and FAILED reasons are read by anyone who may list job executions.
func redactURLs(s string) string { return urlQueryRE.ReplaceAllString(s, "$1?…") }

// downloadProgress reports the download's progress in statusDetails.progress, at most every
// tenth of the artifact or every five seconds. A lost report is not an error: the next one
// carries the newer figure.
func downloadProgress(ctx context.Context, u *Update) func(done, total int64) {
	var lastPct int64 = -1
	var last time.Time
	return func(done, total int64) {
		pct := done * 100 / max(total, 1)
		if pct < 100 && pct < lastPct+10 && time.Since(last) < 5*time.Second {
			return
		}
		lastPct, last = pct, time.Now()
		u.Report(ctx, StepDownloading, map[string]string{"progress": fmt.Sprintf("%d%%", pct)})
	}
}

func (in *SlotInstaller) restart() error {
	r := in.Restart
	if len(r) == 0 {
		return nil
	}
	out, err := exec.Command(r[0], r[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%v: %s", err, out)
	}
	return nil
}

// healthy runs the release's signed health check, repeatedly through the bake time, in the
// new version's directory with the thing name and version in its environment.
func healthy(ctx context.Context, t *tuf.Target, bakeSeconds int, dir string, env []string) error {
	if t == nil || t.HealthCheck == nil || len(t.HealthCheck.Command) == 0 {
		return nil
	}
	hc := t.HealthCheck
	timeout := time.Duration(hc.TimeoutSeconds) * time.Second
	if timeout == 0 {
		timeout = 30 * time.Second
	}
	check := func() error {
		cctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		cmd := exec.CommandContext(cctx, hc.Command[0], hc.Command[1:]...)
		cmd.Dir, cmd.Env = dir, env
		out, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("%v: %s", err, strings.TrimSpace(string(out)))
		}
		return nil
	}
	deadline := time.Now().Add(time.Duration(bakeSeconds) * time.Second)
	for {
		if err := check(); err != nil {
			return err
		}
		if !time.Now().Before(deadline) {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(min(time.Until(deadline)+time.Millisecond, 5*time.Second)):
		}
	}
}
