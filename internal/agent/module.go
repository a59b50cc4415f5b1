package agent

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/otaflow/otaflow/internal/agent/preflight"
	"github.com/otaflow/otaflow/internal/tuf"
)

// Update modules install what the agent's versioned directories do not: a configuration file,
// a package, a container image, a root filesystem. A module is an executable in the modules
// directory, named after the module, owned by root and executable by root only (the seed's
// rule for managedRespawn scripts). The release's signed TUF target names the module and its
// settings; a job document cannot. docs/modules.md is the protocol:
//
//	MODULE STEP WORKDIR
//
// STEP is capabilities, install, switch, verify, commit or rollback, run in that order (rollback
// after a failure from switch on); WORKDIR holds the verified artifact ("artifact"), the signed
// settings ("settings.json") and whatever the module keeps there (what it replaced, for
// rollback). The environment carries OTAFLOW_STEP, OTAFLOW_SOFTWARE, OTAFLOW_VERSION,
// OTAFLOW_FROM_VERSION, OTAFLOW_THING_NAME, OTAFLOW_WORKDIR, OTAFLOW_ARTIFACT and each setting
// as OTAFLOW_SETTING_<NAME>. Exit 0 is success; exit 3 from capabilities or install means "refused,
// nothing changed" (the job ends REJECTED); any other exit fails the step, and the last line the
// module wrote to stderr is the reason. capabilities prints {"needsReboot": bool,
// "supportsRollback": bool}.

// DefaultModulesDir is where the agent looks for update modules.
const DefaultModulesDir = "/usr/lib/otaflow/modules"

// ModuleDirectory is the agent's own installer (versioned directories); a release that names
// no module uses it.
const ModuleDirectory = "directory"

// Module steps.
const (
	stepCapabilities = "capabilities"
	stepInstall      = "install"
	stepSwitch       = "switch"
	stepVerify       = "verify"
	stepCommit       = "commit"
	stepRollback     = "rollback"
)

// exitRefused is a module's "refused, nothing changed".
const exitRefused = 3

// defaultModuleTimeout bounds one step unless the release's setting timeoutSeconds says otherwise.
const defaultModuleTimeout = 10 * time.Minute

// capabilities is what a module says it needs and can do.
type capabilities struct {
	NeedsReboot      bool `json:"needsReboot"`
	SupportsRollback bool `json:"supportsRollback"`
}

// moduleRecord is what a module installed for a software: the active version and the one
// before (kept as <root>/<software>/module.json).
type moduleRecord struct {
	Module   string `json:"module"`
	Version  string `json:"version"`
	Previous string `json:"previous,omitempty"`
}

// usesModule reports whether a release installs through an update module, and which.
func usesModule(t *tuf.Target) (string, bool) {
	if t == nil || t.Module == "" || t.Module == ModuleDirectory {
		return "", false
	}
	return t.Module, true
}

func (in *SlotInstaller) modulesDir() string {
	if in.ModulesDir == "" {
		return DefaultModulesDir
	}
	return in.ModulesDir
}

// modulePath is the module's executable, checked: installed, and safe to run as root.
func (in *SlotInstaller) modulePath(name string) (string, error) {
	if err := tuf.ValidModule(name, nil); err != nil {
		return "", Reject("%v", err)
	}
	dir := in.modulesDir()
	p := filepath.Join(dir, name)
	if _, err := os.Lstat(p); err != nil {
		return "", Reject("the release installs through update module %q, which is not installed on this device (%s)", name, p)
	}
	if err := checkModulesDir(dir, in.ModulesOwner); err != nil {
		return "", Reject("update module %q refused: %v", name, err)
	}
	if err := preflight.CheckExecutable(p, in.ModulesOwner); err != nil {
		return "", Reject("update module %q refused: %v", name, err)
	}
	return p, nil
}

// checkModulesDir: a module is only as safe as its directory, which must be a directory owned
// by the modules' owner that nobody else may write to (or a module could be swapped between
// the check and the run).
func checkModulesDir(dir string, uid int) error {
	st, err := os.Lstat(dir)
	if err != nil {
		return err
	}
	if !st.IsDir() {
		return fmt.Errorf("%s is not a directory", dir)
	}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok && int(sys.Uid) != uid {
		return fmt.Errorf("the modules directory %s must be owned by uid %d, not %d", dir, uid, sys.Uid)
	}
	if st.Mode().Perm()&0o022 != 0 {
		return fmt.Errorf("the modules directory %s must be writable by its owner only (mode %04o)", dir, st.Mode().Perm())
	}
	return nil
}

// workDir is where a release's module keeps its artifact, settings and state.
func (in *SlotInstaller) workDir(software, version string) string {
	return filepath.Join(in.Root, software, "modules", version)
}

func (in *SlotInstaller) recordPath(software string) string {
	return filepath.Join(in.Root, software, "module.json")
}

// record is what a module last committed for software (nil: the versioned directories hold
// it).
func (in *SlotInstaller) record(software string) *moduleRecord {
	raw, err := os.ReadFile(in.recordPath(software))
	if err != nil {
		return nil
	}
	var r moduleRecord
	if json.Unmarshal(raw, &r) != nil || r.Version == "" {
		return nil
	}
	return &r
}

// runModule runs one step of the release's module for u and returns what it printed.
func (in *SlotInstaller) runModule(ctx context.Context, u *Update, t *tuf.Target, step string) ([]byte, error) {
	name, _ := usesModule(t)
	path, err := in.modulePath(name)
	if err != nil {
		return nil, err
	}
	work := in.workDir(u.Software(), u.Version())
	if err := os.MkdirAll(work, 0o700); err != nil {
		return nil, err
	}
	timeout := defaultModuleTimeout
	if n, err := strconv.Atoi(t.ModuleSettings["timeoutSeconds"]); err == nil && n > 0 {
		timeout = time.Duration(n) * time.Second
	}
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(cctx, path, step, work)
	cmd.Dir = work
	env := slices.Clone(in.env())
	env = append(env, "OTAFLOW_STEP="+step, "OTAFLOW_SOFTWARE="+u.Software(), "OTAFLOW_VERSION="+u.Version(),
		"OTAFLOW_FROM_VERSION="+u.From.Version, "OTAFLOW_THING_NAME="+u.Thing, "OTAFLOW_WORKDIR="+work,
		"OTAFLOW_ARTIFACT="+filepath.Join(work, "artifact"))
	for k, v := range t.ModuleSettings {
		env = append(env, "OTAFLOW_SETTING_"+strings.ToUpper(k)+"="+v)
	}
	cmd.Env = env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &limited{w: &stdout, n: 64 << 10}, &limited{w: &stderr, n: 64 << 10}
	err = cmd.Run()
	if err == nil {
		return stdout.Bytes(), nil
	}
	if ctx.Err() != nil {
		return nil, ctx.Err() // the agent is stopping: the step is resumed on its next start
	}
	if cctx.Err() != nil {
		return nil, Fail("update module %s: %s timed out after %s", name, step, timeout)
	}
	reason := lastLine(stderr.String())
	if reason == "" {
		reason = lastLine(stdout.String())
	}
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		msg := fmt.Sprintf("update module %s: %s failed (exit %d): %s", name, step, exit.ExitCode(), reason)
		if exit.ExitCode() == exitRefused && (step == stepCapabilities || step == stepInstall) {
			return nil, Reject("%s", msg)
		}
		return nil, Fail("%s", msg)
	}
	return nil, Fail("update module %s: %s: %v", name, step, err)
}

// moduleCapabilities asks the release's module what it needs and can do.
func (in *SlotInstaller) moduleCapabilities(ctx context.Context, u *Update, t *tuf.Target) (capabilities, error) {
	var c capabilities
	out, err := in.runModule(ctx, u, t, stepCapabilities)
	if err != nil {
		return c, err
	}
	if err := json.Unmarshal(bytes.TrimSpace(out), &c); err != nil {
		name, _ := usesModule(t)
		return c, Reject("update module %s: capabilities printed %q, not {\"needsReboot\": …, \"supportsRollback\": …}", name, lastLine(string(out)))
	}
	return c, nil
}

// env is the base environment of commands the agent runs for an update.
func (in *SlotInstaller) env() []string {
	if in.Env != nil {
		return in.Env
	}
	return os.Environ()
}

// lastLine is the last non-empty line of s, at most 512 bytes.
func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	l := strings.TrimSpace(lines[len(lines)-1])
	if len(l) > 512 {
		l = l[:511] + "…"
	}
	return l
}

// limited keeps the first n bytes written to it and drops the rest.
type limited struct {
	w io.Writer
	n int
}

func (l *limited) Write(p []byte) (int, error) {
	if l.n > 0 {
		k := min(len(p), l.n)
		l.w.Write(p[:k])
		l.n -= k
	}
	return len(p), nil
}

// moduleInstall gives the verified artifact and the signed settings to the release's module
// and runs its install step (which must not make the release active).
func (in *SlotInstaller) moduleInstall(ctx context.Context, u *Update, t *tuf.Target) error {
	work := in.workDir(u.Software(), u.Version())
	if err := os.MkdirAll(work, 0o700); err != nil {
		return err
	}
	if err := os.Rename(in.download(u), filepath.Join(work, "artifact")); err != nil && !os.IsNotExist(err) {
		return Fail("hand the artifact to update module %s: %v", t.Module, err)
	}
	settings, err := json.Marshal(t.ModuleSettings)
	if err != nil {
		return err
	}
	if err := writeFileAtomic(filepath.Join(work, "settings.json"), settings, true); err != nil {
		return err
	}
	_, err = in.runModule(ctx, u, t, stepInstall)
	return err
}

// moduleSwitch has the module make the release active and records it, keeping what was
// recorded before for a rollback.
func (in *SlotInstaller) moduleSwitch(ctx context.Context, u *Update, t *tuf.Target) error {
	work := in.workDir(u.Software(), u.Version())
	before, err := os.ReadFile(in.recordPath(u.Software()))
	switch {
	case err == nil:
		if err := writeFileAtomic(filepath.Join(work, "record-before.json"), before, true); err != nil {
			return err
		}
	case os.IsNotExist(err):
		os.Remove(filepath.Join(work, "record-before.json"))
	default:
		return err
	}
	if _, err := in.runModule(ctx, u, t, stepSwitch); err != nil {
		var ue *UpdateError
		if !errors.As(err, &ue) {
			return err
		}
		// A switch that failed may have changed part of what it replaces: the module puts it
		// back (the agent rolls back only after a switch that succeeded).
		if _, rerr := in.moduleRollback(ctx, u, t); rerr != nil {
			return Fail("%s; rolling back also failed: %v", ue.Reason, rerr)
		}
		return Fail("%s; rolled back to %s", ue.Reason, cmp.Or(u.From.Version, "nothing (first install)"))
	}
	raw, err := json.Marshal(moduleRecord{Module: t.Module, Version: u.Version(), Previous: u.From.Version})
	if err != nil {
		return err
	}
	return writeFileAtomic(in.recordPath(u.Software()), raw, true)
}

// moduleRollback has the module restore what the release replaced, then restores the record
// of what was active before. reboot says the module printed "reboot": the device must restart
// to finish it (an A/B module whose new slot is the one running).
func (in *SlotInstaller) moduleRollback(ctx context.Context, u *Update, t *tuf.Target) (reboot bool, err error) {
	caps, err := in.moduleCapabilities(ctx, u, t)
	if err != nil {
		return false, err
	}
	if !caps.SupportsRollback {
		return false, fmt.Errorf("update module %s does not support rollback", t.Module)
	}
	out, err := in.runModule(ctx, u, t, stepRollback)
	if err != nil {
		return false, err
	}
	reboot = caps.NeedsReboot && lastLine(string(out)) == "reboot"
	work := in.workDir(u.Software(), u.Version())
	if before, err := os.ReadFile(filepath.Join(work, "record-before.json")); err == nil {
		return reboot, writeFileAtomic(in.recordPath(u.Software()), before, true)
	}
	if err := os.Remove(in.recordPath(u.Software())); err != nil && !os.IsNotExist(err) {
		return reboot, err
	}
	return reboot, nil
}

// bootIDFile is where Linux says which boot this is.
const bootIDFile = "/proc/sys/kernel/random/boot_id"

func (in *SlotInstaller) bootID() string {
	if in.BootID != nil {
		return in.BootID()
	}
	raw, err := os.ReadFile(bootIDFile)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(raw))
}

// ErrRebooting is an update waiting for the device to restart into its new version: the
// agent keeps the step and carries on after the reboot.
var ErrRebooting = errors.New("the device is restarting into the new version")

// rebootInto records this boot and has the device restart into the release the module
// switched to.
func (in *SlotInstaller) rebootInto(ctx context.Context, u *Update) error {
	if err := u.Report(ctx, StepRebooting, nil); err != nil {
		return err
	}
	work := in.workDir(u.Software(), u.Version())
	if err := writeFileAtomic(filepath.Join(work, "reboot-from"), []byte(in.bootID()), true); err != nil {
		return err
	}
	if err := in.runReboot(); err != nil {
		return Fail("%v", err)
	}
	return ErrRebooting
}

// rebooted holds an update whose module needs a reboot until the device has restarted since
// the agent asked for it (asking again: a reboot may have been refused or lost).
func (in *SlotInstaller) rebooted(ctx context.Context, u *Update) error {
	from, err := os.ReadFile(filepath.Join(in.workDir(u.Software(), u.Version()), "reboot-from"))
	if err != nil || string(from) != in.bootID() {
		return nil // no reboot was asked for, or it happened
	}
	if err := in.runReboot(); err != nil {
		return Fail("%v", err)
	}
	return ErrRebooting
}

// runReboot runs the reboot command.
func (in *SlotInstaller) runReboot() error {
	cmd := in.Reboot
	if len(cmd) == 0 {
		cmd = []string{"systemctl", "reboot"}
	}
	if out, err := exec.Command(cmd[0], cmd[1:]...).CombinedOutput(); err != nil {
		return fmt.Errorf("the reboot command %s failed: %v: %s", strings.Join(cmd, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// moduleCommit runs the module's commit step and the post-update script, then removes the
// work directories of releases older than the one before this.
func (in *SlotInstaller) moduleCommit(ctx context.Context, u *Update, t *tuf.Target) error {
	if _, err := in.runModule(ctx, u, t, stepCommit); err != nil {
		return err
	}
	if in.ManagedRespawn {
		_, post := scripts(u.Software())
		if err := preflight.RunScript(in.ScriptsDir, post); err != nil {
			return Fail("%v", err)
		}
	}
	keep := []string{u.Version(), u.From.Version}
	dirs, _ := os.ReadDir(filepath.Join(in.Root, u.Software(), "modules"))
	for _, d := range dirs {
		if !slices.Contains(keep, d.Name()) {
			os.RemoveAll(filepath.Join(in.Root, u.Software(), "modules", d.Name()))
		}
	}
	signed, _ := filepath.Glob(filepath.Join(in.Root, u.Software(), "signed", "*"))
	for _, f := range signed {
		v := strings.TrimSuffix(strings.TrimSuffix(filepath.Base(f), ".json"), ".index")
		if !slices.Contains(keep, v) {
			os.Remove(f)
		}
	}
	return nil
}

// A rollout's rollback job returns a device to the version before the one it runs. When an
// update module installed the one it runs, that module undoes it: its rollback step, in the
// work directory it kept, restores what the release replaced. rollbackJob records it between
// the steps of the job (<root>/<software>/rollback.json).
type rollbackJob struct {
	From     string `json:"from"` // the module release undone
	To       string `json:"to"`   // the version returned to
	Reboot   bool   `json:"reboot,omitempty"`
	BootFrom string `json:"bootFrom,omitempty"` // the boot the reboot was asked in
}

func (in *SlotInstaller) rollbackPath(software string) string {
	return filepath.Join(in.Root, software, "rollback.json")
}

// pendingRollback is the rollback job u is in the middle of, if any.
func (in *SlotInstaller) pendingRollback(u *Update) *rollbackJob {
	if u.Doc.Artifact != nil {
		return nil
	}
	raw, err := os.ReadFile(in.rollbackPath(u.Software()))
	if err != nil {
		return nil
	}
	var j rollbackJob
	if json.Unmarshal(raw, &j) != nil || j.To != u.Version() {
		return nil
	}
	return &j
}

func (in *SlotInstaller) savePendingRollback(u *Update, j *rollbackJob) error {
	raw, err := json.Marshal(j)
	if err != nil {
		return err
	}
	return writeFileAtomic(in.rollbackPath(u.Software()), raw, true)
}

// undoing is, for a rollback job, the module release it undoes (the one the module record
// says is active) as an update of its own, with its signed target.
func (in *SlotInstaller) undoing(u *Update) (*Update, *tuf.Target, error) {
	r := in.record(u.Software())
	if u.Doc.Artifact != nil || r == nil {
		return nil, nil, nil
	}
	if r.Previous != u.Version() {
		return nil, nil, Reject("%s %s came through update module %s over %s; a rollback job may only return to %s", u.Software(), r.Version, r.Module, r.Previous, r.Previous)
	}
	t := in.signed(u.Software(), r.Version)
	if _, ok := usesModule(t); !ok {
		return nil, nil, Reject("the signed release of %s %s, which update module %s installed, is no longer on this device", u.Software(), r.Version, r.Module)
	}
	if _, err := os.Stat(in.workDir(u.Software(), r.Version)); err != nil {
		return nil, nil, Reject("update module %s kept nothing to undo %s %s with (%v)", r.Module, u.Software(), r.Version, err)
	}
	doc := *u.Doc
	doc.Version = r.Version
	undo := &Update{JobID: u.JobID, Thing: u.Thing, Doc: &doc, From: Installed{Version: r.Previous}, Report: u.Report}
	caps, err := in.moduleCapabilities(context.Background(), undo, t)
	if err != nil {
		return nil, nil, err
	}
	if !caps.SupportsRollback {
		return nil, nil, Reject("update module %s cannot roll %s %s back", r.Module, u.Software(), r.Version)
	}
	return undo, t, nil
}

// undo runs a rollback job's switch: the module's rollback of the release it undoes.
func (in *SlotInstaller) undo(ctx context.Context, u *Update) error {
	undo, t, err := in.undoing(u)
	if err != nil || undo == nil {
		return err
	}
	reboot, err := in.moduleRollback(ctx, undo, t)
	if err != nil {
		return Fail("update module %s could not undo %s: %v", t.Module, undo.Version(), err)
	}
	return in.savePendingRollback(u, &rollbackJob{From: undo.Version(), To: u.Version(), Reboot: reboot})
}

// startRollback reboots the device when the undone release's module said it must.
func (in *SlotInstaller) startRollback(ctx context.Context, u *Update, j *rollbackJob) error {
	if err := u.Report(ctx, StepRebooting, nil); err != nil {
		return err
	}
	j.BootFrom = in.bootID()
	if err := in.savePendingRollback(u, j); err != nil {
		return err
	}
	if err := in.runReboot(); err != nil {
		return Fail("%v", err)
	}
	return ErrRebooting
}
