// Package preflight checks, before an update touches anything, what the seed requires of a
// device: enough free disk (about three times the artifact), read/write access to the install
// location, no network proxy, an init system that restarts the software (systemd, or
// managedRespawn with its scripts), and a single agent instance. Every unmet requirement is
// reported, so the job is REJECTED with all the reasons at once.
package preflight

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
)

// Scripts are the managedRespawn scripts (seed v1), run from <root>/usr/scripts.
var Scripts = []string{"ggc_pre_update.sh", "ggc_post_update.sh", "ota_pre_update.sh", "ota_post_update.sh"}

// Config says what to check.
type Config struct {
	// InstallDir must be writable, and hold FreeFactor × ArtifactSize free bytes.
	InstallDir   string
	ArtifactSize int64
	FreeFactor   float64 // default 3
	// ManagedRespawn: the four scripts must exist in ScriptsDir, owned by OwnerUID and
	// executable by that owner only.
	ManagedRespawn bool
	ScriptsDir     string
	OwnerUID       int
	// Env is the process environment (default os.Environ()).
	Env []string
	// RestartCommand says the agent was given a command that restarts the managed software
	// (--restart-command): something restarts it even outside an init system.
	RestartCommand bool
}

// Check returns every unmet requirement, or nil.
func Check(c Config) error {
	if c.FreeFactor == 0 {
		c.FreeFactor = 3
	}
	if c.Env == nil {
		c.Env = os.Environ()
	}
	var problems []string
	if err := writable(c.InstallDir); err != nil {
		problems = append(problems, err.Error())
	} else if c.ArtifactSize > 0 {
		var st syscall.Statfs_t
		if err := syscall.Statfs(c.InstallDir, &st); err != nil {
			problems = append(problems, fmt.Sprintf("cannot read free space of %s: %v", c.InstallDir, err))
		} else if free, need := float64(st.Bavail)*float64(st.Bsize), float64(c.ArtifactSize)*c.FreeFactor; free < need {
			problems = append(problems, fmt.Sprintf("not enough free disk in %s: %.0f MB free, %.0f MB needed (%.0f× the %d MB artifact)",
				c.InstallDir, free/(1<<20), need/(1<<20), c.FreeFactor, c.ArtifactSize>>20))
		}
	}
	for _, kv := range c.Env {
		k, v, _ := strings.Cut(kv, "=")
		switch strings.ToUpper(k) {
		case "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY":
			if v != "" {
				problems = append(problems, fmt.Sprintf("a network proxy is configured (%s); OTA updates do not work through a proxy", k))
			}
		}
	}
	underSystemd := false
	for _, kv := range c.Env {
		if strings.HasPrefix(kv, "INVOCATION_ID=") || strings.HasPrefix(kv, "NOTIFY_SOCKET=") {
			underSystemd = true
		}
	}
	if c.ManagedRespawn {
		problems = append(problems, checkScripts(c.ScriptsDir, c.OwnerUID)...)
	} else if !underSystemd && !c.RestartCommand {
		problems = append(problems, "the agent is not running under an init system (systemd), managedRespawn is off and no --restart-command is set: nothing would restart the software after the update (run the agent as a systemd service, deploy/systemd/otaflow-agent.service; or pass --managed-respawn with the seed's scripts in --scripts-dir; or --restart-command with the command that restarts your software)")
	}
	if len(problems) > 0 {
		return errors.New(strings.Join(problems, "; "))
	}
	return nil
}

func writable(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("install location %s cannot be created: %v", dir, err)
	}
	f, err := os.CreateTemp(dir, ".otaflow-write-check-*")
	if err != nil {
		return fmt.Errorf("install location %s is not writable: %v", dir, err)
	}
	f.Close()
	return os.Remove(f.Name())
}

func checkScripts(dir string, uid int) []string {
	var problems []string
	for _, name := range Scripts {
		p := filepath.Join(dir, name)
		if _, err := os.Stat(p); err != nil {
			problems = append(problems, fmt.Sprintf("managedRespawn is on but %s is missing", p))
			continue
		}
		if err := CheckExecutable(p, uid); err != nil {
			problems = append(problems, err.Error())
		}
	}
	return problems
}

// CheckExecutable is the seed's rule for what the agent runs as root on an update's behalf
// (managedRespawn scripts, update modules): a regular file (not a link) owned by uid,
// executable by its owner, and neither writable nor executable by anyone else.
func CheckExecutable(p string, uid int) error {
	st, err := os.Lstat(p)
	if err != nil {
		return err
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("%s must be a regular file, not %s", p, st.Mode().Type())
	}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok && int(sys.Uid) != uid {
		return fmt.Errorf("%s must be owned by uid %d, not %d", p, uid, sys.Uid)
	}
	if mode := st.Mode().Perm(); mode&0o100 == 0 || mode&0o033 != 0 {
		return fmt.Errorf("%s must be executable by its owner only and writable by nobody else (mode %04o)", p, mode)
	}
	return nil
}

// RunScript runs one managedRespawn script; a non-zero exit fails the update with its output.
func RunScript(dir, name string) error {
	out, err := exec.Command(filepath.Join(dir, name)).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s failed (%v): %s", name, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// Lock takes the single-instance lock; a second agent gets an error saying which is running.
func Lock(path string) (release func(), err error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		pid, _ := os.ReadFile(path)
		f.Close()
		return nil, fmt.Errorf("another otaflow agent is running (pid %s, lock %s); two agents would process the same jobs, so this one exits", strings.TrimSpace(string(pid)), path)
	}
	f.Truncate(0)
	fmt.Fprintf(f, "%d\n", os.Getpid())
	return func() { syscall.Flock(int(f.Fd()), syscall.LOCK_UN); f.Close() }, nil
}
