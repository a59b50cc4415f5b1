// Package fleet simulates a fleet of devices: N otaflow agents in one process, each with its
// own MQTT connection and state directory, speaking the real AWS IoT Jobs MQTT protocol. Each
// simulated install takes a configurable time and may fail, leave the device unhealthy (it
// rolls itself back) or crash the device mid-install (it "reboots" and resumes). The demo,
// the benchmarks and the tests use it; `starter fleet` runs one as its own process, which is
// how a benchmark gets past one process's open-file limit.
package fleet

import (
	"context"
	"crypto/tls"
	"fmt"
	"hash/fnv"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/otaflow/otaflow/internal/agent"
)

// Options configure a fleet.
type Options struct {
	BrokerURL string
	// TLS, for an ssl:// BrokerURL, gives each device its certificate (mutual TLS: the
	// broker takes the thing name from it).
	TLS    func(thing string) (*tls.Config, error)
	Things []string
	// StateDir holds one directory per device.
	StateDir       string
	InitialVersion string
	// Staged are versions already on every device's disk (in its spare slot), so that a job
	// without an artifact may switch to them, as a real device with them staged would. Any
	// other version needs a job with an artifact: simulated devices refuse what real ones do.
	Staged      []string
	InstallTime time.Duration
	// FailureRate, UnhealthyRate and CrashRate are the chances (0 to 1) that one install
	// fails, leaves the device unhealthy, or crashes the device before it reports.
	FailureRate, UnhealthyRate, CrashRate float64
	// RebootTime is how long a crashed device stays down (default 500ms).
	RebootTime time.Duration
	// RequestTimeout bounds each device's Jobs API requests (default 2m: when thousands of
	// devices start at once the requests queue at the jobs service, and a device that gives
	// up and asks again only adds to the queue).
	RequestTimeout time.Duration
	// IdleRecheck is how often an idle device asks for jobs without a notification (0: the
	// agent's default).
	IdleRecheck time.Duration
	// HealthInterval is how often a device reports its health after an update (0: the
	// agent's default).
	HealthInterval time.Duration
	// Seed makes the faults reproducible: the same seed, thing and job give the same fault.
	Seed uint64
	// Faults script the outcome of every install of the named things (before the rates
	// apply); SetFaults changes them while the fleet runs.
	Faults map[string]Fault
	// Installer, when set, gives a device a real installer (an agent.SlotInstaller) instead of
	// simulated installs.
	Installer func(thing string) (agent.Installer, error)
	// OnStateChange sees every device's persisted states.
	OnStateChange func(thing string, st agent.State)
	Logger        zerolog.Logger
}

// Fleet is a running fleet.
type Fleet struct {
	o       Options
	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	mu      sync.Mutex
	devices map[string]*device
	order   []string
	crashes atomic.Int64
	faults  map[string]Fault // guarded by mu
}

type device struct {
	mu      sync.Mutex
	agent   *agent.Agent
	crashed map[string]bool // jobs this device crashed in (once each)
}

// SetFaults scripts the outcome of every later install of the named things (nil: only the
// rates decide).
func (f *Fleet) SetFaults(faults map[string]Fault) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.faults = faults
}

// fault is the outcome of thing's install of jobID: scripted, else rolled from the rates.
func (f *Fleet) fault(thing, jobID string) Fault {
	f.mu.Lock()
	scripted, ok := f.faults[thing]
	f.mu.Unlock()
	if ok {
		return scripted
	}
	r := f.roll(thing, jobID)
	switch {
	case r < f.o.FailureRate:
		return FaultFail
	case r < f.o.FailureRate+f.o.UnhealthyRate:
		return FaultUnhealthy
	case r < f.o.FailureRate+f.o.UnhealthyRate+f.o.CrashRate:
		return FaultCrash
	}
	return FaultNone
}

// Start starts every device; they connect in the background.
func Start(o Options) (*Fleet, error) {
	if o.RebootTime == 0 {
		o.RebootTime = 500 * time.Millisecond
	}
	if o.RequestTimeout == 0 {
		o.RequestTimeout = 2 * time.Minute
	}
	ctx, cancel := context.WithCancel(context.Background())
	f := &Fleet{o: o, ctx: ctx, cancel: cancel, devices: map[string]*device{}, faults: o.Faults}
	for _, thing := range o.Things {
		if err := f.add(thing); err != nil {
			f.Close()
			return nil, err
		}
	}
	return f, nil
}

// roll is the fault decision for (thing, job): deterministic in the seed.
func (f *Fleet) roll(thing, jobID string) float64 {
	h := fnv.New64a()
	fmt.Fprintf(h, "%d/%s/%s", f.o.Seed, thing, jobID)
	return float64(h.Sum64()%1_000_000) / 1_000_000
}

func (f *Fleet) add(thing string) error {
	d := &device{crashed: map[string]bool{}}
	f.mu.Lock()
	f.devices[thing] = d
	f.order = append(f.order, thing)
	f.mu.Unlock()
	first := make(chan error, 1)
	f.wg.Add(1)
	// The simulated installer outlives the device's reboots: it is its disk.
	sim := &simInstaller{installTime: f.o.InstallTime, fault: func(jobID string) Fault { return f.fault(thing, jobID) },
		active: map[string]string{}, staged: f.o.Staged}
	go func() {
		defer f.wg.Done()
		for boot := 0; ; boot++ {
			runCtx, crash := context.WithCancel(f.ctx)
			var err error
			cfg := agent.Config{
				ThingName: thing, BrokerURL: f.o.BrokerURL, StateDir: filepath.Join(f.o.StateDir, thing),
				InitialVersion: f.o.InitialVersion, NoSync: f.o.Installer == nil, RequestTimeout: f.o.RequestTimeout, IdleRecheck: f.o.IdleRecheck,
				HealthInterval: f.o.HealthInterval,
				Logger:         f.o.Logger.With().Str("component", "agent").Logger(), Installer: sim,
			}
			if f.o.TLS != nil {
				if cfg.TLS, err = f.o.TLS(thing); err != nil {
					crash()
					if boot == 0 {
						first <- fmt.Errorf("device %s certificate: %w", thing, err)
					}
					return
				}
			}
			if f.o.OnStateChange != nil {
				cfg.OnStateChange = func(st agent.State) { f.o.OnStateChange(thing, st) }
			}
			if f.o.Installer != nil {
				in, err := f.o.Installer(thing)
				if err != nil {
					crash()
					if boot == 0 {
						first <- fmt.Errorf("prepare device %s: %w", thing, err)
					}
					return
				}
				cfg.Installer = in
			}
			sim.crash = func(jobID string) {
				d.mu.Lock()
				again := d.crashed[jobID]
				d.crashed[jobID] = true
				d.mu.Unlock()
				if !again {
					f.crashes.Add(1)
					crash() // power cut: the agent stops where it is
				}
			}
			a, err := agent.New(cfg)
			if boot == 0 {
				first <- err
			}
			if err != nil {
				crash()
				if boot > 0 {
					f.o.Logger.Error().Err(err).Str("thing", thing).Msg("device did not come back after a crash")
				}
				return
			}
			d.mu.Lock()
			d.agent = a
			d.mu.Unlock()
			if err := a.Run(runCtx); err != nil {
				f.o.Logger.Error().Err(err).Str("thing", thing).Msg("agent stopped")
			}
			crash()
			if f.ctx.Err() != nil {
				return
			}
			select { // crashed: reboot after a while
			case <-time.After(f.o.RebootTime):
			case <-f.ctx.Done():
				return
			}
		}
	}()
	return <-first
}

// Add starts more devices.
func (f *Fleet) Add(things ...string) error {
	for _, t := range things {
		if err := f.add(t); err != nil {
			return err
		}
	}
	return nil
}

// WaitConnected waits until every device is connected and subscribed.
func (f *Fleet) WaitConnected(ctx context.Context) error {
	for {
		if n, total := f.Connected(); n == total {
			return nil
		}
		select {
		case <-ctx.Done():
			n, total := f.Connected()
			return fmt.Errorf("%d of %d devices connected: %w", n, total, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Connected counts connected devices.
func (f *Fleet) Connected() (n, total int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, d := range f.devices {
		d.mu.Lock()
		if d.agent != nil && d.agent.Connected() {
			n++
		}
		d.mu.Unlock()
	}
	return n, len(f.devices)
}

// InstalledVersion is a device's installed version of software ("" for unknown devices).
func (f *Fleet) InstalledVersion(thing, software string) string {
	f.mu.Lock()
	d := f.devices[thing]
	f.mu.Unlock()
	if d == nil {
		return ""
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.agent == nil {
		return ""
	}
	return d.agent.InstalledVersion(software)
}

// Agents are the devices' current agents, in the order they were added (a device that
// crashed has a new one).
func (f *Fleet) Agents() []*agent.Agent {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]*agent.Agent, 0, len(f.order))
	for _, t := range f.order {
		d := f.devices[t]
		d.mu.Lock()
		out = append(out, d.agent)
		d.mu.Unlock()
	}
	return out
}

// Crashes counts the simulated crashes so far.
func (f *Fleet) Crashes() int64 { return f.crashes.Load() }

// Close stops every device and waits for them.
func (f *Fleet) Close() error {
	f.cancel()
	f.wg.Wait()
	return nil
}
