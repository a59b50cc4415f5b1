package agent

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// Self-update (softwareToUpdate "ota_agent"). The new agent is unpacked into its own slot
// and started as a probe beside the old one, which has let go of the broker connection. The
// probe loads the configuration and state, connects and subscribes with the device's identity,
// says "ready" on an inherited pipe and exits. Only then does the old agent switch the slot and
// exec the new binary in its own process (same PID: systemd sees no restart). The new agent
// finds the switched, unconfirmed update in its state, checks health, runs ota_post_update.sh
// and reports SUCCEEDED. A probe that fails or says nothing within HandoverTimeout is killed,
// the slot is never switched, and the old agent reconnects and reports FAILED with the
// probe's last output: the device keeps the agent it had.

// AgentBinary is the executable an ota_agent artifact must hold at its top level.
const AgentBinary = "otaflow-agent"

// ProbeEnv, set in a probe's environment, names the inherited file descriptor it reports
// readiness on.
const ProbeEnv = "OTAFLOW_AGENT_PROBE_FD"

// ProbeReady, in a process started as a probe, returns the function that reports readiness;
// ok is false otherwise. Pass it as Config.ProbeReady.
func ProbeReady() (ready func(), ok bool) {
	fd := os.Getenv(ProbeEnv)
	if fd == "" {
		return nil, false
	}
	var n int
	if _, err := fmt.Sscan(fd, &n); err != nil {
		return nil, false
	}
	f := os.NewFile(uintptr(n), "probe")
	return func() {
		fmt.Fprintln(f, "ready")
		f.Close()
	}, true
}

// SelfUpdater is an Installer that can update the agent itself (softwareToUpdate ota_agent):
// it installs the new agent beside the running one, says where its executable is, and makes
// it, or again the one before, the active agent. An installer without it cannot self-update.
type SelfUpdater interface {
	Installer
	// AgentExecutable is the installed new agent's executable.
	AgentExecutable(u *Update) string
	// SwitchAgent makes the new agent the active one; RestoreAgent the one before.
	SwitchAgent(u *Update) error
	RestoreAgent(u *Update) error
}

// AgentExecutable, SwitchAgent and RestoreAgent make the slot installer a SelfUpdater.
func (in *SlotInstaller) AgentExecutable(u *Update) string {
	return in.slots(u.Software()).Dir(u.Version()) + "/" + AgentBinary
}
func (in *SlotInstaller) SwitchAgent(u *Update) error {
	return in.slots(u.Software()).Switch(u.Version())
}
func (in *SlotInstaller) RestoreAgent(u *Update) error {
	_, err := in.slots(u.Software()).Rollback()
	return err
}

var _ SelfUpdater = (*SlotInstaller)(nil)

// handover installs a new agent and hands over to it. It returns only on failure (an
// UpdateError: the device keeps the agent it had): on success the process image is replaced.
func (a *Agent) handover(ctx context.Context, u *Update, in SelfUpdater) error {
	if err := u.Report(ctx, StepInstalling, nil); err != nil {
		return err
	}
	if err := in.Install(ctx, u); err != nil {
		return err
	}
	cur := u.From
	bin := in.AgentExecutable(u)
	if st, err := os.Stat(bin); err != nil || st.Mode()&0o100 == 0 {
		return Fail("the ota_agent artifact has no executable %s at its top level", AgentBinary)
	}
	if err := u.Report(ctx, StepHandover, nil); err != nil {
		return err
	}
	timeout := a.cfg.HandoverTimeout
	if timeout == 0 {
		timeout = time.Minute
	}
	// The device has one MQTT identity: let go of it for the probe.
	a.client.Disconnect(250)
	reconnect := func() {
		if tok := a.client.Connect(); !tok.WaitTimeout(a.cfg.RequestTimeout) || tok.Error() != nil {
			a.log.Error().Err(tok.Error()).Msg("reconnect after a failed handover")
		}
	}
	if err := a.probe(ctx, bin, timeout); err != nil {
		reconnect()
		return Fail("new agent %s did not start: %v; kept agent %s", u.Version(), err, cur.Version)
	}
	if err := in.SwitchAgent(u); err != nil {
		reconnect()
		return Fail("switch to agent %s failed: %v", u.Version(), err)
	}
	if err := a.setState(func(s *State) { s.Step, s.Starts = StepSwitched, 0 }); err != nil {
		in.RestoreAgent(u)
		reconnect()
		return err
	}
	a.log.Info().Str("binary", bin).Msg("handing over to the new agent")
	err := syscall.Exec(bin, append([]string{bin}, a.cfg.Args...), a.cfg.Environ)
	// Still here: exec failed and this agent carries on.
	in.RestoreAgent(u)
	a.setStep(StepHandover)
	reconnect()
	return Fail("exec of agent %s failed: %v; kept agent %s", u.Version(), err, cur.Version)
}

// probe starts bin as a probe and waits for it to say ready.
func (a *Agent) probe(ctx context.Context, bin string, timeout time.Duration) error {
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	defer r.Close()
	var out bytes.Buffer
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(cctx, bin, a.cfg.Args...)
	cmd.Env = append(append([]string{}, a.cfg.Environ...), ProbeEnv+"=3")
	cmd.ExtraFiles = []*os.File{w}
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		w.Close()
		return err
	}
	w.Close()
	ready := make(chan bool, 1)
	go func() {
		line, _ := bufio.NewReader(r).ReadString('\n')
		ready <- strings.TrimSpace(line) == "ready"
	}()
	select {
	case ok := <-ready:
		if ok {
			cmd.Wait()
			return nil
		}
		err := cmd.Wait()
		return fmt.Errorf("it exited (%v) before it was ready: %s", err, tail(out.String()))
	case <-cctx.Done():
		cmd.Wait()
		return fmt.Errorf("not ready within %s: %s", timeout, tail(out.String()))
	}
}

// tail is the last lines of a program's output, for a job's reason.
func tail(s string) string {
	s = strings.TrimSpace(s)
	if len(s) > 400 {
		s = "…" + s[len(s)-400:]
	}
	if s == "" {
		return "no output"
	}
	return s
}
