package agent

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/Masterminds/semver/v3"

	"github.com/otaflow/otaflow/internal/agent/artifact"
	"github.com/otaflow/otaflow/internal/agent/preflight"
	"github.com/otaflow/otaflow/internal/agent/slots"
	"github.com/otaflow/otaflow/internal/jobdoc"
)

// Installer settings for real installs (a job document with an artifact).
type Installer struct {
	// Root holds one slot tree per software (<Root>/core, <Root>/ota_agent) and downloads.
	Root string
	// PublicKey verifies artifact signatures.
	PublicKey ed25519.PublicKey
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
}

// installError is an update that failed; Rejected ones changed nothing.
type installError struct {
	rejected bool
	reason   string
}

func (e *installError) Error() string { return e.reason }

func reject(format string, args ...any) error {
	return &installError{rejected: true, reason: fmt.Sprintf(format, args...)}
}
func fail(format string, args ...any) error {
	return &installError{reason: fmt.Sprintf(format, args...)}
}

// installReal runs a real update: checks, download and verification, the pre script,
// unpacking into an inactive slot, the atomic switch, restart, health checks through the bake
// time, the post script. Any failure after the switch switches back and restarts the old
// version. It returns the version now running.
func (a *Agent) installReal(ctx context.Context, e *execution, doc *jobdoc.Document, cur Installed) (string, error) {
	in := a.cfg.Installer
	sl := slots.Slots{Root: filepath.Join(in.Root, doc.SoftwareToUpdate)}
	if doc.Operation == jobdoc.OpUpdate && cur.Version != "" {
		newV, err1 := semver.NewVersion(doc.Version)
		oldV, err2 := semver.NewVersion(cur.Version)
		if err1 == nil && err2 == nil && newV.LessThan(oldV) {
			return cur.Version, reject("%s %s is older than the installed %s: a downgrade needs a rollback job", doc.SoftwareToUpdate, doc.Version, cur.Version)
		}
	}
	var size int64
	if doc.Artifact != nil {
		size = doc.Artifact.Size
	} else if !sl.Installed(doc.Version) {
		return cur.Version, reject("the job has no artifact and %s %s is not installed on this device to switch to", doc.SoftwareToUpdate, doc.Version)
	}
	os.MkdirAll(sl.Root, 0o755)
	if err := preflight.Check(preflight.Config{
		InstallDir: sl.Root, ArtifactSize: size, FreeFactor: in.FreeDiskFactor, ManagedRespawn: in.ManagedRespawn,
		ScriptsDir: in.ScriptsDir, OwnerUID: in.ScriptsOwner, Env: in.Env,
	}); err != nil {
		return cur.Version, reject("requirements not met: %v", err)
	}
	pre, post := "ggc_pre_update.sh", "ggc_post_update.sh"
	if doc.SoftwareToUpdate == jobdoc.SoftwareOTAAgent {
		pre, post = "ota_pre_update.sh", "ota_post_update.sh"
	}
	back := func(why string) (string, error) {
		if _, err := sl.Rollback(); err != nil {
			return doc.Version, fail("%s; rolling back also failed: %v", why, err)
		}
		a.restart()
		return cur.Version, fail("%s; rolled back to %s", why, cur.Version)
	}
	if sl.Current() == doc.Version && sl.Current() != cur.Version {
		// A restart after the switch (crash, power cut): the new version is in place but was
		// never confirmed healthy. Check it now rather than installing again, unless it keeps
		// taking the device down.
		a.mu.Lock()
		starts := a.state.Starts
		a.mu.Unlock()
		limit := a.cfg.MaxStarts
		if limit == 0 {
			limit = 3
		}
		if starts > limit {
			return back(fmt.Sprintf("%s did not confirm healthy across %d restarts (a reboot loop)", doc.Version, starts))
		}
		return a.confirm(ctx, e, doc, cur, post, back)
	}
	file := ""
	if doc.Artifact != nil {
		if err := a.progress(ctx, e, "downloading", doc.Version); err != nil {
			return cur.Version, err
		}
		downloads := filepath.Join(in.Root, "downloads")
		os.MkdirAll(downloads, 0o755)
		file = filepath.Join(downloads, doc.SoftwareToUpdate+"-"+doc.Version+".tar.gz")
		spec := artifact.Spec{URL: doc.Artifact.URL, Size: doc.Artifact.Size, SHA256: doc.Artifact.SHA256, Signature: doc.Artifact.Signature}
		if err := artifact.Download(ctx, spec, file, artifact.Options{PublicKey: in.PublicKey, BytesPerSecond: in.DownloadBytesPerSecond,
			Progress: a.downloadProgress(ctx, e, doc.Version)}); err != nil {
			if errors.Is(err, artifact.ErrVerify) {
				return cur.Version, fail("%v", err)
			}
			return cur.Version, fail("download failed: %v", err)
		}
	}
	if in.ManagedRespawn {
		if err := preflight.RunScript(in.ScriptsDir, pre); err != nil {
			return cur.Version, fail("%v", err)
		}
	}
	if doc.SoftwareToUpdate == jobdoc.SoftwareOTAAgent {
		return a.handover(ctx, e, doc, cur, sl, file)
	}
	if err := a.progress(ctx, e, "installing", doc.Version); err != nil {
		return cur.Version, err
	}
	if file != "" {
		if err := sl.Install(doc.Version, file); err != nil {
			return cur.Version, fail("install into a new slot failed: %v", err)
		}
	}
	if err := a.setState(func(s *State) { s.Step = "switching" }); err != nil {
		return cur.Version, err
	}
	if err := sl.Switch(doc.Version); err != nil {
		return cur.Version, fail("switch to %s failed: %v", doc.Version, err)
	}
	if err := a.setState(func(s *State) { s.Step = "switched" }); err != nil {
		return doc.Version, err
	}
	if doc.RestartPolicy != jobdoc.RestartNone {
		if err := a.restart(); err != nil {
			return back(fmt.Sprintf("restarting %s failed: %v", doc.Version, err))
		}
	}
	os.Remove(file)
	return a.confirm(ctx, e, doc, cur, post, back)
}

// confirm health-checks the switched version through the bake time and runs the post script;
// a failure switches back.
func (a *Agent) confirm(ctx context.Context, e *execution, doc *jobdoc.Document, cur Installed, post string, back func(string) (string, error)) (string, error) {
	if err := a.progress(ctx, e, "health-check", doc.Version); err != nil {
		return doc.Version, err
	}
	env := append(os.Environ(), "OTAFLOW_THING_NAME="+a.cfg.ThingName, "OTAFLOW_SOFTWARE="+doc.SoftwareToUpdate, "OTAFLOW_VERSION="+doc.Version)
	if err := healthy(ctx, doc, slots.Slots{Root: filepath.Join(a.cfg.Installer.Root, doc.SoftwareToUpdate)}.Dir(doc.Version), env); err != nil {
		return back(fmt.Sprintf("health check of %s failed: %v", doc.Version, err))
	}
	if in := a.cfg.Installer; in.ManagedRespawn {
		if err := preflight.RunScript(in.ScriptsDir, post); err != nil {
			return back(err.Error())
		}
	}
	return doc.Version, nil
}

// downloadProgress reports the download's progress in statusDetails.progress, at most every
// tenth of the artifact or every five seconds.
func (a *Agent) downloadProgress(ctx context.Context, e *execution, version string) func(done, total int64) {
	var lastPct int64 = -1
	var last time.Time
	return func(done, total int64) {
		pct := done * 100 / max(total, 1)
		if pct < 100 && pct < lastPct+10 && time.Since(last) < 5*time.Second {
			return
		}
		lastPct, last = pct, time.Now()
		if _, err := a.request(ctx, e.JobID+"/update", a.stepUpdate(e, "downloading", version, map[string]string{"progress": fmt.Sprintf("%d%%", pct)})); err == nil {
			e.VersionNumber++
		}
	}
}

// stepUpdate is an IN_PROGRESS update for step, with the step timer restarted when the agent
// has a step timeout: a device that dies mid-step times out instead of holding its wave.
func (a *Agent) stepUpdate(e *execution, step, version string, extra map[string]string) map[string]any {
	details := map[string]string{"step": step, "version": version}
	for k, v := range extra {
		details[k] = v
	}
	u := map[string]any{"status": "IN_PROGRESS", "statusDetails": details, "expectedVersion": e.VersionNumber}
	if t := a.cfg.StepTimeout; t > 0 {
		if step == "health-check" {
			t += time.Duration(e.bakeSeconds) * time.Second
		}
		u["stepTimeoutInMinutes"] = int64((t + time.Minute - 1) / time.Minute)
	}
	return u
}

func (a *Agent) progress(ctx context.Context, e *execution, step, version string) error {
	if err := a.setState(func(s *State) { s.Step = step }); err != nil {
		return err
	}
	_, err := a.request(ctx, e.JobID+"/update", a.stepUpdate(e, step, version, nil))
	if err != nil {
		return fmt.Errorf("report %s: %w", step, err)
	}
	e.VersionNumber++
	return nil
}

func (a *Agent) restart() error {
	r := a.cfg.Installer.Restart
	if len(r) == 0 {
		return nil
	}
	out, err := exec.Command(r[0], r[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%v: %s", err, out)
	}
	return nil
}

// healthy runs the document's health check, repeatedly through the bake time, in the new
// version's directory with the thing name and version in its environment.
func healthy(ctx context.Context, doc *jobdoc.Document, dir string, env []string) error {
	if doc.HealthCheck == nil {
		return nil
	}
	timeout := time.Duration(doc.HealthCheck.TimeoutSeconds) * time.Second
	if timeout == 0 {
		timeout = 30 * time.Second
	}
	check := func() error {
		cctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		cmd := exec.CommandContext(cctx, doc.HealthCheck.Command[0], doc.HealthCheck.Command[1:]...)
		cmd.Dir, cmd.Env = dir, env
		out, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("%v: %s", err, strings.TrimSpace(string(out)))
		}
		return nil
	}
	deadline := time.Now().Add(time.Duration(doc.BakeSeconds) * time.Second)
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
