package fleet

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/otaflow/otaflow/internal/agent"
)

// Fault is how one simulated install goes.
type Fault int

// The faults the simulator injects.
const (
	FaultNone Fault = iota
	// FaultFail fails the install before the switch: the device keeps its version.
	FaultFail
	// FaultUnhealthy makes the new version fail its health check: the device rolls back.
	FaultUnhealthy
	// FaultCrash cuts the device's power mid-install, once per job: it reboots and resumes.
	FaultCrash
)

// simInstaller is a device's pretend installer: it takes InstallTime, keeps the active
// versions in memory (the device's "disk", which survives its simulated reboots) and fails
// as its fault says.
type simInstaller struct {
	installTime time.Duration
	// staged are the versions on the device's disk besides the ones it ran.
	staged []string
	// fault decides the install of a job; crash cuts the power (cancels the agent) the first
	// time a job's install crashes.
	fault func(jobID string) Fault
	crash func(jobID string)

	mu     sync.Mutex
	active map[string]string
}

var _ agent.Installer = (*simInstaller)(nil)

func (s *simInstaller) Active(software string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.active[software]
}

func (s *simInstaller) setActive(software, version string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.active[software] = version
}

// Prepare runs the agent's own checks, so a simulated device refuses what a real one would: a
// downgrade outside a rollback job, and a job with no artifact for a version it does not hold.
// Like an A/B device it holds the version it runs and the one before (its other slot), and the
// versions staged on every device of the fleet (Options.Staged).
func (s *simInstaller) Prepare(_ context.Context, u *agent.Update) error {
	if err := agent.CheckDowngrade(u); err != nil {
		return err
	}
	v := u.Version()
	return agent.CheckSwitch(u, v == u.From.Version || v == u.From.Previous || slices.Contains(s.staged, v))
}

func (s *simInstaller) Install(ctx context.Context, u *agent.Update) error {
	fault := s.fault(u.JobID)
	if fault == FaultCrash {
		s.crash(u.JobID)
	}
	select {
	case <-time.After(s.installTime):
	case <-ctx.Done():
		return ctx.Err()
	}
	if fault == FaultFail {
		return agent.Fail("simulated install failure (the fleet simulator's fault for this device)")
	}
	return nil
}

func (s *simInstaller) Switch(_ context.Context, u *agent.Update) error {
	s.setActive(u.Software(), u.Version())
	return nil
}

func (s *simInstaller) Start(context.Context, *agent.Update) error { return nil }

// Verify watches the bake time; an unhealthy device shows it at its first check (so even
// without a bake time).
func (s *simInstaller) Verify(ctx context.Context, u *agent.Update) error {
	if s.fault(u.JobID) == FaultUnhealthy {
		bake := time.Duration(u.Doc.BakeSeconds) * time.Second
		select {
		case <-time.After(min(bake/4, 10*time.Second)):
		case <-ctx.Done():
			return ctx.Err()
		}
		return agent.Fail("health check failed during the bake time (the fleet simulator's fault for this device)")
	}
	select {
	case <-time.After(time.Duration(u.Doc.BakeSeconds) * time.Second):
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *simInstaller) Commit(context.Context, *agent.Update) error { return nil }

// Checks: simulated devices have no health check to announce (a simulated unhealthy device
// fails in Verify all the same).
func (s *simInstaller) Checks(*agent.Update) bool { return false }

func (s *simInstaller) Rollback(_ context.Context, u *agent.Update) error {
	s.setActive(u.Software(), u.From.Version)
	return nil
}

// SimulatedInstaller is one simulated device's installer, for tests of a single agent: each
// install takes installTime and goes as fault says for its job (nil: always well); staged are
// versions already on its disk, which a job without an artifact may switch to.
func SimulatedInstaller(installTime time.Duration, fault func(jobID string) Fault, staged ...string) agent.Installer {
	if fault == nil {
		fault = func(string) Fault { return FaultNone }
	}
	return &simInstaller{installTime: installTime, fault: fault, crash: func(string) {}, active: map[string]string{}, staged: staged}
}
