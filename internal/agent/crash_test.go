package agent_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/otaflow/otaflow/internal/agent"
	"github.com/otaflow/otaflow/internal/agent/slots"
	"github.com/otaflow/otaflow/internal/localiot/store"
	"github.com/otaflow/otaflow/internal/platform"
	"github.com/otaflow/otaflow/internal/tuf"
)

const crashEnv = "OTAFLOW_AGENT_CRASH_CHILD"

// TestAgentCrashChild is the agent process that TestAgentSurvivesSIGKILL kills.
func TestAgentCrashChild(t *testing.T) {
	if os.Getenv(crashEnv) == "" {
		t.Skip("run by TestAgentSurvivesSIGKILL")
	}
	trust := &tuf.Client{MetadataURL: os.Getenv("CRASH_TUF_URL"), TrustedRoot: []byte(os.Getenv("CRASH_TUF_ROOT")), Dir: filepath.Join(os.Getenv("CRASH_STATE"), "tuf")}
	cfg := agent.Config{ThingName: "dev-1", BrokerURL: os.Getenv("CRASH_BROKER"), StateDir: os.Getenv("CRASH_STATE"),
		InitialVersion: "1.0.0", AgentVersion: "1.0.0", HandoverTimeout: 5 * time.Second, StepTimeout: 10 * time.Minute, Logger: zerolog.New(os.Stderr),
		Installer: &agent.SlotInstaller{Root: os.Getenv("CRASH_ROOT"), Trust: trust, Platform: platform.Platform{OS: "ubuntu", Arch: "x86_64"}, AllowHTTP: true, Env: []string{"INVOCATION_ID=crash"}}}
	if ready, ok := agent.ProbeReady(); ok {
		cfg.ProbeReady = ready
	}
	if full := os.Getenv("FULL_AT"); full != "" {
		// The state directory's file system fills up once the update reaches this step.
		cfg.OnStateChange = func(st agent.State) {
			if string(st.Step) == full {
				fillDisk(filepath.Join(os.Getenv("CRASH_STATE"), "filler"))
			}
		}
	}
	if at, _ := strconv.Atoi(os.Getenv("CRASH_AT")); at > 0 {
		// Die like a power cut right after the at-th state change reaches the disk.
		n, prev := 0, agent.Step("-")
		cfg.OnStateChange = func(st agent.State) {
			if st.Step != prev {
				prev = st.Step
				if n++; n == at {
					syscall.Kill(os.Getpid(), syscall.SIGKILL)
				}
			}
		}
	}
	a, err := agent.New(cfg)
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	a.Run(context.Background())
}

// crashRig is an installRig whose agent runs as a child process, to be killed.
type crashRig struct {
	*installRig
	root  string
	start func() *exec.Cmd
	// startBinary starts the agent from another copy of the test binary.
	startBinary func(bin string) *exec.Cmd
	startEnv    func(bin string, env ...string) *exec.Cmd
	job         func(jobID, version string)
	core        slots.Slots
}

func newCrashRig(t *testing.T) *crashRig {
	ir := newInstallRig(t)
	root, state := t.TempDir(), t.TempDir()
	logs, err := os.Create(filepath.Join(t.TempDir(), "agent.log"))
	require.NoError(t, err)
	t.Cleanup(func() {
		if t.Failed() {
			out, _ := os.ReadFile(logs.Name())
			t.Logf("agent log:\n%s", tail(string(out), 6000))
		}
		logs.Close()
	})
	r := &crashRig{installRig: ir, root: root, core: slots.Slots{Root: filepath.Join(root, "core")}}
	r.start = func() *exec.Cmd { return r.startBinary(os.Args[0]) }
	r.startBinary = func(bin string) *exec.Cmd { return r.startEnv(bin) }
	trust := ir.trust()
	r.startEnv = func(bin string, env ...string) *exec.Cmd {
		cmd := exec.Command(bin, "-test.run", "^TestAgentCrashChild$", "-test.count=1")
		cmd.Env = append(append(os.Environ(), env...), crashEnv+"=1", "CRASH_TUF_URL="+trust.MetadataURL, "CRASH_TUF_ROOT="+string(trust.TrustedRoot), "CRASH_BROKER="+ir.brokerURL,
			"CRASH_STATE="+state, "CRASH_ROOT="+root)
		cmd.Stderr = logs
		require.NoError(t, cmd.Start())
		return cmd
	}
	r.job = func(jobID, version string) {
		r.create(jobID, version, r.artifact(version, "sleep", "0.3"), 1)
	}
	return r
}

// killAtStep waits until the execution reports step (with a version number above after) or
// ends, kills the child, and returns the version number seen.
func (r *crashRig) killAtStep(cmd *exec.Cmd, jobID, step string, after int64) int64 {
	var seen int64
	require.Eventually(r.t, func() bool {
		e, err := r.svc.DescribeJobExecution(jobID, "dev-1")
		if err != nil {
			return false
		}
		seen = e.VersionNumber
		return (e.StatusDetails["step"] == step && e.VersionNumber > after) || e.Status.Terminal()
	}, 20*time.Second, 2*time.Millisecond, "step %s", step)
	require.NoError(r.t, cmd.Process.Signal(syscall.SIGKILL))
	cmd.Wait()
	return seen
}

// finishAfterKill restarts the agent after it was killed at point, lets the job end, and
// checks the device runs exactly the version the job's final status reports. It returns the
// version now installed.
func (r *crashRig) finishAfterKill(jobID, version, installed, point string) string {
	t := r.t
	cmd := r.start()
	e := waitTerminal(t, r.svc, jobID, "dev-1")
	require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
	cmd.Wait()
	switch e.Status {
	case store.ExecSucceeded:
		installed = version
	case store.ExecFailed:
	default:
		t.Fatalf("killed at %s: job ended %s (%v)", point, e.Status, e.StatusDetails)
	}
	require.Equal(t, installed, r.core.Current(), "killed at %s: the device runs exactly the version the job reports (%s, %v)", point, e.Status, e.StatusDetails)
	t.Logf("killed at %s: %s, running %s", point, e.Status, r.core.Current())
	return installed
}

// TestAgentSurvivesSIGKILL kills the agent process in each step of a real update, starts it
// again, and checks that the device ends on exactly the old or the new version and that the
// job's final status says which.
func TestAgentSurvivesSIGKILL(t *testing.T) {
	r := newCrashRig(t)
	installed := "1.0.0"
	for i, killAt := range []string{"downloading", "installing", "health-check", "health-check-late"} {
		version := fmt.Sprintf("2.%d.0", i)
		jobID := "crash-" + killAt
		cmd := r.start()
		r.job(jobID, version)
		step := killAt
		if killAt == "health-check-late" {
			step = "health-check"
			require.Eventually(t, func() bool {
				e, err := r.svc.DescribeJobExecution(jobID, "dev-1")
				return err == nil && (e.StatusDetails["step"] == step || e.Status.Terminal())
			}, 20*time.Second, 2*time.Millisecond)
			time.Sleep(600 * time.Millisecond)
		}
		r.killAtStep(cmd, jobID, step, 0)
		if e, err := r.svc.DescribeJobExecution(jobID, "dev-1"); err == nil && !e.Status.Terminal() {
			// The agent's step timeout stands while it is down: a dead device would time out.
			require.WithinDuration(t, time.Now().Add(10*time.Minute), e.StepDeadline, 2*time.Minute, "killed at %s", killAt)
		}

		installed = r.finishAfterKill(jobID, version, installed, killAt)
	}

	// A version that takes the device down during every health check is rolled back after
	// three restarts: the reboot loop ends on the old version.
	cmd := r.start()
	r.job("loop", "3.0.0")
	seen := r.killAtStep(cmd, "loop", "health-check", 0)
	for i := 0; i < 3; i++ {
		seen = r.killAtStep(r.start(), "loop", "health-check", seen)
	}
	cmd = r.start()
	defer func() { cmd.Process.Signal(syscall.SIGKILL); cmd.Wait() }()
	e := waitTerminal(t, r.svc, "loop", "dev-1")
	require.Equal(t, store.ExecFailed, e.Status)
	require.Contains(t, e.StatusDetails["reason"], "reboot loop")
	require.Equal(t, installed, r.core.Current(), "back on the version before the loop")
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// TestAgentKilledAtEveryState kills the agent right after each state of a real update reaches
// the disk (the moment a power cut hurts most), restarts it, and checks that the device ends on
// exactly the old or the new version and that the job's final status says which.
func TestAgentKilledAtEveryState(t *testing.T) {
	r := newCrashRig(t)
	installed := "1.0.0"
	// installing downloading installing switching switched health-check installed (cleared)
	states := []string{"installing", "downloading", "installing(unpack)", "switching", "switched", "health-check", "installed", "cleared"}
	for i, state := range states {
		version := fmt.Sprintf("4.%d.0", i)
		jobID := fmt.Sprintf("kill-%d", i)
		cmd := r.startEnv(os.Args[0], "CRASH_AT="+strconv.Itoa(i+1))
		r.job(jobID, version)
		err := cmd.Wait()
		require.Error(t, err, "the agent killed itself at %s", state)

		installed = r.finishAfterKill(jobID, version, installed, state)
		e, err := r.svc.DescribeJobExecution(jobID, "dev-1")
		require.NoError(t, err)
		require.Equal(t, installed, e.StatusDetails["installedVersion"], "killed at %s", state)
	}
}

// fillDisk writes path until its file system has no space left.
func fillDisk(path string) {
	f, err := os.Create(path)
	if err != nil {
		return
	}
	defer f.Close()
	chunk := make([]byte, 4096)
	for {
		if _, err := f.Write(chunk); err != nil {
			return
		}
	}
}

// TestFullStateDiskEndsFailed: the file system under the agent's state directory fills up
// in the middle of an update, after the switch. The job ends FAILED at once, saying so, with
// the device switched back to the version it ran, rather than IN_PROGRESS until it times out.
// The state directory is a small tmpfs in the agent's own mount namespace (unshare -m).
func TestFullStateDiskEndsFailed(t *testing.T) {
	ir := newInstallRig(t)
	root, state := t.TempDir(), t.TempDir()
	core := slots.Slots{Root: filepath.Join(root, "core")}
	require.NoError(t, os.MkdirAll(core.Dir("1.0.0"), 0o755))
	require.NoError(t, core.Switch("1.0.0"))
	require.NoError(t, os.WriteFile(filepath.Join(state, "state.json"), []byte(`{"installed":{"core":{"version":"1.0.0"}}}`), 0o600))
	trust := ir.trust()
	unshare := []string{"unshare", "-m"}
	if os.Getuid() != 0 {
		unshare = []string{"unshare", "-r", "-m"} // a user namespace lets an unprivileged user mount
	}
	script := `mount -t tmpfs -o size=256k tmpfs "$CRASH_STATE" && cp "$STATE_SEED" "$CRASH_STATE/state.json" && exec "$0" -test.run '^TestAgentCrashChild$' -test.count=1`
	seed := filepath.Join(t.TempDir(), "state.json")
	require.NoError(t, os.Rename(filepath.Join(state, "state.json"), seed))
	cmd := exec.Command(unshare[0], append(unshare[1:], "sh", "-c", script, os.Args[0])...)
	var logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	cmd.Env = append(os.Environ(), crashEnv+"=1", "FULL_AT=switched", "STATE_SEED="+seed, "CRASH_TUF_URL="+trust.MetadataURL,
		"CRASH_TUF_ROOT="+string(trust.TrustedRoot), "CRASH_BROKER="+ir.brokerURL, "CRASH_STATE="+state, "CRASH_ROOT="+root)
	require.NoError(t, cmd.Start(), "unshare (util-linux) runs the agent with its own tmpfs")
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()
		if t.Failed() {
			t.Logf("agent:\n%s", tail(logs.String(), 6000))
		}
	})
	ir.create("full-disk", "2.0.0", ir.artifact("2.0.0", "true"), 0)
	e := waitTerminal(t, ir.svc, "full-disk", "dev-1")
	require.Equal(t, store.ExecFailed, e.Status, e.StatusDetails["reason"])
	require.Contains(t, e.StatusDetails["reason"], "cannot write its state")
	require.Contains(t, e.StatusDetails["reason"], "no space left on device")
	require.Contains(t, e.StatusDetails["reason"], "switched back to 1.0.0")
	require.Equal(t, "1.0.0", e.StatusDetails["installedVersion"])
	require.Equal(t, "1.0.0", core.Current(), "the device runs the version it ran before")
}
