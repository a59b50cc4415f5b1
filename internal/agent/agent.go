// Package agent is the otaflow device agent: it takes update jobs over the AWS IoT Jobs MQTT
// API, applies them one at a time, and reports the outcome.
package agent

import (
	"cmp"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode"

	"github.com/otaflow/otaflow/internal/iotjobs"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/rs/zerolog"

	"github.com/otaflow/otaflow/internal/jobdoc"
)

// Config configures one agent.
type Config struct {
	ThingName string
	BrokerURL string
	Username  string
	Password  string
	// TLS, for ssl:// broker URLs, holds the device certificate for mutual TLS.
	TLS *tls.Config
	// StateDir holds the agent's persistent state.
	StateDir string
	// InitialVersion is reported as installed before the first update.
	InitialVersion string
	// RequestTimeout bounds each Jobs API request.
	RequestTimeout time.Duration
	// Installer applies updates: a *SlotInstaller on a device, a simulated one in the fleet
	// simulator. Required.
	Installer Installer
	// MaxStarts is how many times the agent may start with an unconfirmed new version
	// before it rolls the update back (default 3).
	MaxStarts int
	// StepTimeout, when set, is sent with each step (stepTimeoutInMinutes, rounded up; the
	// health-check step adds the bake time): a device that stops mid-step times out.
	StepTimeout time.Duration
	// NoInventory stops the agent from keeping its inventory in its named shadow.
	NoInventory bool
	// IdleRecheck is how often an idle agent asks for pending jobs even without a
	// notification (default 10m, plus up to a fifth at random).
	IdleRecheck time.Duration

	// AgentVersion is this agent's own version, reported as the installed ota_agent.
	AgentVersion string
	// HandoverTimeout bounds how long a new agent may take to show it works (default 1m).
	HandoverTimeout time.Duration
	// Args and Environ start a new agent on self-update (default: this process's).
	Args    []string
	Environ []string
	// ProbeReady, when set, makes this a probe started by an older agent's self-update: it
	// connects, subscribes, calls ProbeReady and returns.
	ProbeReady func()

	// IPCSocket is the unix socket local components use to defer updates ("" turns it off).
	IPCSocket string
	// DeferralResponseTimeout is how long components have to answer (default 5s);
	// MaxDeferral caps how long they may hold an update back in total (default 1h).
	DeferralResponseTimeout time.Duration
	MaxDeferral             time.Duration

	// NoSync skips fsync of the state file. Only simulated fleets use it: their devices stand
	// for other machines, whose disks should not load the machine under test.
	NoSync bool

	// OnStateChange, when set, sees every state the agent persists (metrics, tests).
	OnStateChange func(State)

	// HealthInterval is how often the agent re-runs the health check and reports its health
	// within HealthWindow of an update (defaults 1m and 1h); HealthIdle how often otherwise
	// (default 15m). NoHealth turns health reports off.
	HealthInterval, HealthWindow, HealthIdle time.Duration
	NoHealth                                 bool
	// ServiceUnit is the managed software's systemd unit, whose restarts are reported.
	ServiceUnit string
	// HealthDiskPath is where free space is reported for (the install root).
	HealthDiskPath string
	// BootID identifies this boot (default: /proc/sys/kernel/random/boot_id); tests replace it.
	BootID func() string

	Logger zerolog.Logger
}

// Agent is one device's agent.
type Agent struct {
	cfg    Config
	log    zerolog.Logger
	client paho.Client
	// jobs is the Jobs API the state machine reports through (mqttJobs over client).
	jobs JobsAPI

	mu    sync.Mutex
	state *State
	// lastJob is the last job this agent finished (for its inventory shadow).
	lastJob map[string]any
	waiters map[string]chan reply
	seq     atomic.Uint64
	// tokenPrefix starts every client token: random per agent start.
	tokenPrefix string
	wake        chan struct{}
	ready       chan struct{}
	ipc         *ipcServer
	// connected is true while subscribed to the jobs topics.
	connected atomic.Bool
	// connectedOnce: a later connection counts as a reconnect in the health record;
	// firstConnect closes at the first.
	connectedOnce bool
	firstConnect  chan struct{}
	// healthReset restarts the health report interval after an update.
	healthReset chan struct{}
	// subscribed is closed (and replaced) each time the agent has (re)subscribed: requests
	// in flight across a reconnect are sent again, since a clean session loses them.
	subscribed chan struct{}
	// notices is what notify-next and notify said since the last pass (notices.go).
	notices notices
}

// Connected reports whether the agent is connected and subscribed.
func (a *Agent) Connected() bool { return a.connected.Load() }

type reply struct {
	accepted bool
	payload  []byte
}

// New prepares an agent; Run connects it.
func New(cfg Config) (*Agent, error) {
	if cfg.ThingName == "" {
		return nil, errors.New("agent: thing name is required (--thing-name)")
	}
	if cfg.StateDir == "" {
		return nil, errors.New("agent: state directory is required (--state-dir)")
	}
	if cfg.Installer == nil {
		return nil, errors.New("agent: an installer is required (--install-root)")
	}
	if cfg.RequestTimeout == 0 {
		cfg.RequestTimeout = 30 * time.Second
	}
	if cfg.Args == nil {
		cfg.Args = os.Args[1:]
	}
	if cfg.Environ == nil {
		cfg.Environ = os.Environ()
	}
	if cfg.IdleRecheck == 0 {
		cfg.IdleRecheck = 10 * time.Minute
	}
	if cfg.DeferralResponseTimeout == 0 {
		cfg.DeferralResponseTimeout = 5 * time.Second
	}
	if cfg.MaxDeferral == 0 {
		cfg.MaxDeferral = time.Hour
	}
	if cfg.HealthInterval == 0 {
		cfg.HealthInterval = time.Minute
	}
	if cfg.HealthWindow == 0 {
		cfg.HealthWindow = time.Hour
	}
	if cfg.HealthIdle == 0 {
		cfg.HealthIdle = 15 * time.Minute
	}
	if err := os.MkdirAll(cfg.StateDir, 0o755); err != nil {
		return nil, fmt.Errorf("agent: create state dir: %w", err)
	}
	st, err := loadState(cfg.StateDir)
	if err != nil {
		return nil, err
	}
	if st.CurrentJob != "" && resumption[st.Step].countsStart {
		st.Starts++
		if err := saveState(cfg.StateDir, st); err != nil {
			return nil, fmt.Errorf("agent: write state: %w", err)
		}
	}
	for sw, v := range map[string]string{jobdoc.SoftwareCore: cfg.InitialVersion, jobdoc.SoftwareOTAAgent: cfg.AgentVersion} {
		if _, ok := st.Installed[sw]; !ok && v != "" {
			st.Installed[sw] = Installed{Version: v}
			if err := saveState(cfg.StateDir, st); err != nil {
				return nil, fmt.Errorf("agent: write state: %w", err)
			}
		}
	}
	// Between jobs, what the installer has active is what the device runs: a state that says
	// otherwise (written by an earlier agent that let a components job name core) is corrected,
	// so the inventory reports only what is installed.
	if st.CurrentJob == "" {
		for _, sw := range []string{jobdoc.SoftwareCore, jobdoc.SoftwareOTAAgent} {
			if active := cfg.Installer.Active(sw); active != "" && active != st.Installed[sw].Version {
				cfg.Logger.Warn().Str("software", sw).Str("recorded", st.Installed[sw].Version).Str("active", active).
					Msg("the recorded version is not the one installed; recording the installed one")
				st.Installed[sw] = Installed{Version: active, Previous: st.Installed[sw].Previous}
				if err := saveState(cfg.StateDir, st); err != nil {
					return nil, fmt.Errorf("agent: write state: %w", err)
				}
			}
		}
	}
	if st.noteBoot(bootIDOf(cfg)) {
		if err := saveState(cfg.StateDir, st); err != nil {
			return nil, fmt.Errorf("agent: write state: %w", err)
		}
	}
	var r [16]byte
	if _, err := rand.Read(r[:]); err != nil {
		return nil, fmt.Errorf("agent: random client tokens: %w", err)
	}
	a := &Agent{
		tokenPrefix: hex.EncodeToString(r[:]),
		cfg:         cfg, log: cfg.Logger.With().Str("thing", cfg.ThingName).Logger(), state: st,
		waiters: map[string]chan reply{}, wake: make(chan struct{}, 1), ready: make(chan struct{}, 1), subscribed: make(chan struct{}),
		firstConnect: make(chan struct{}), healthReset: make(chan struct{}, 1),
	}
	a.jobs = mqttJobs{a.request}
	return a, nil
}

// InstalledVersion returns the installed version of a piece of software ("core", "ota_agent").
func (a *Agent) InstalledVersion(software string) string {
	a.mu.Lock()
	defer a.mu.Unlock()
	if software == jobdoc.SoftwareCore || software == jobdoc.SoftwareOTAAgent {
		return a.state.Installed[software].Version
	}
	return a.state.Components[software].Version
}

func (a *Agent) topic(suffix string) string { return iotjobs.Topic(a.cfg.ThingName, suffix) }

// Run connects to the broker and processes jobs until ctx ends.
func (a *Agent) Run(ctx context.Context) error {
	opts := paho.NewClientOptions().
		AddBroker(a.cfg.BrokerURL).
		SetClientID(a.cfg.ThingName).
		SetUsername(a.cfg.Username).
		SetPassword(a.cfg.Password).
		SetCleanSession(true).
		SetAutoReconnect(true).
		SetMaxReconnectInterval(10 * time.Second).
		// In order: the last notify-next handled is the service's latest word (notices.go).
		// The handler never blocks.
		SetOrderMatters(true).
		SetTLSConfig(a.cfg.TLS).
		SetOnConnectHandler(a.onConnect).
		SetConnectionLostHandler(func(_ paho.Client, err error) {
			a.connected.Store(false)
			a.log.Warn().Err(err).Msg("lost broker connection; reconnecting")
		})
	a.client = paho.NewClient(opts)
	// Connect ourselves rather than with paho's ConnectRetry, which retries silently: an
	// operator must see why a device cannot connect (wrong certificate, policy, address).
	for backoff := time.Second; ; backoff = min(backoff*2, 30*time.Second) {
		tok := a.client.Connect()
		select {
		case <-tok.Done():
		case <-ctx.Done():
			a.client.Disconnect(0)
			return nil
		}
		if tok.Error() == nil {
			break
		}
		a.log.Warn().Err(tok.Error()).Str("broker", a.cfg.BrokerURL).Dur("retryIn", backoff).Msg("cannot connect to the broker; retrying")
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return nil
		}
	}
	defer a.client.Disconnect(250)
	defer a.reportInventory(false) // a clean stop says so; a crash shows as a stale check-in
	if a.cfg.ProbeReady != nil {
		select {
		case <-a.ready:
			a.log.Info().Msg("probe: connected and subscribed; reporting ready")
			a.cfg.ProbeReady()
		case <-ctx.Done():
		}
		return nil
	}
	if a.cfg.IPCSocket != "" {
		ipc, err := listenIPC(a.cfg.IPCSocket, a.cfg.DeferralResponseTimeout, a.log)
		if err != nil {
			return err
		}
		ipc.onMetric = a.SetMetric
		a.ipc = ipc
		defer ipc.Close()
	}
	hctx, stopHealth := context.WithCancel(ctx)
	healthDone := make(chan struct{})
	go func() { defer close(healthDone); a.healthLoop(hctx) }()
	defer func() { stopHealth(); <-healthDone }()
	// A failed pass (a request that timed out, a broker that went away) is retried after a
	// growing pause: a device must not wait for a notification that may never come.
	retry := time.Duration(0)
	for {
		// An idle device also looks for jobs now and then: a notification can be lost (a
		// broker that dropped it under load, a reconnect at the wrong moment), and a device
		// must not wait forever for one that never comes. The jitter keeps a fleet from asking
		// all at once.
		idle := time.NewTimer(jitter(a.cfg.IdleRecheck))
		select {
		case <-ctx.Done():
			idle.Stop()
			return nil
		case <-a.wake:
		case <-idle.C:
			a.log.Debug().Msg("idle recheck: looking for pending jobs")
			a.reportInventory(true)
		}
		idle.Stop()
		for ctx.Err() == nil {
			more, err := a.processNext(ctx)
			if err != nil && ctx.Err() != nil {
				return nil // stopping
			}
			if errors.Is(err, ErrRebooting) {
				// Asked again every half minute: a reboot may have been refused or lost.
				a.log.Info().Msg("waiting for the device to restart into the new version")
				time.AfterFunc(30*time.Second, a.signal)
				break
			}
			if err != nil {
				retry = min(max(2*retry, 2*time.Second), time.Minute)
				a.log.Warn().Err(err).Dur("retryIn", retry).Msg("job processing interrupted; retrying")
				time.AfterFunc(retry, a.signal)
				break
			}
			retry = 0
			if !more {
				break
			}
			// A job ended. The service announces what is next (notify-next: AWS sends one when
			// the next execution changes), so wait for that rather than ask; ask if it is slow.
			after := time.NewTimer(resendInterval(a.cfg.RequestTimeout))
			select {
			case <-a.wake:
			case <-after.C:
			case <-ctx.Done():
			}
			after.Stop()
		}
	}
}

// reportInventory publishes the agent's inventory to its named shadow (iotjobs.InventoryShadow):
// installed versions, the last job's outcome, and connected with how often it checks in, so
// a console can tell a device that went away from one that is idle. It does not wait: the
// shadow is a report, not a request the agent depends on.
func (a *Agent) reportInventory(connected bool) {
	if a.cfg.NoInventory || a.client == nil || !a.client.IsConnectionOpen() {
		return
	}
	a.mu.Lock()
	software, comps := map[string]any{}, map[string]any{}
	for sw, in := range a.state.Installed {
		software[sw] = in.Version
	}
	for name, in := range a.state.Components {
		comps[name] = in.Version
	}
	reported := map[string]any{"software": software, "connected": connected,
		"checkInSeconds": int(a.cfg.IdleRecheck.Seconds()) * 6 / 5, "agentVersion": a.cfg.AgentVersion}
	if a.lastJob != nil {
		reported["lastJob"] = a.lastJob
	}
	if len(comps) > 0 {
		reported["components"] = comps
	}
	a.mu.Unlock()
	raw, err := json.Marshal(map[string]any{"state": map[string]any{"reported": reported}})
	if err != nil {
		return
	}
	tok := a.client.Publish(iotjobs.ShadowTopic(a.cfg.ThingName, iotjobs.InventoryShadow, "update"), 1, false, raw)
	if !connected {
		tok.WaitTimeout(time.Second)
	}
}

// jitter is d plus up to a fifth more, at random.
func jitter(d time.Duration) time.Duration {
	return d + time.Duration(mrand.Int64N(int64(d/5)+1))
}

func (a *Agent) signal() {
	select {
	case a.wake <- struct{}{}:
	default:
	}
}

func (a *Agent) onConnect(c paho.Client) {
	subs := map[string]byte{
		a.topic(iotjobs.SuffixNotifyNext): 1,
		a.topic(iotjobs.SuffixNotify):     1,
	}
	for _, req := range []string{iotjobs.SuffixGetPending, iotjobs.DescribeSuffix("+"), iotjobs.UpdateSuffix("+")} {
		subs[iotjobs.Accepted(a.topic(req))] = 1
		subs[iotjobs.Rejected(a.topic(req))] = 1
	}
	tok := c.SubscribeMultiple(subs, a.onMessage)
	if !tok.WaitTimeout(a.cfg.RequestTimeout) || tok.Error() != nil {
		a.log.Error().Err(tok.Error()).Msg("subscribe to jobs topics failed")
		return
	}
	a.connected.Store(true)
	a.mu.Lock()
	if a.connectedOnce {
		a.state.Health.Reconnects++ // persisted with the next state change
	} else {
		close(a.firstConnect)
	}
	a.connectedOnce = true
	close(a.subscribed)
	a.subscribed = make(chan struct{})
	a.mu.Unlock()
	a.log.Debug().Msg("connected; checking for pending jobs")
	a.notices.askNext() // what was published while away is lost: ask
	a.reportInventory(true)
	select {
	case a.ready <- struct{}{}:
	default:
	}
	a.signal()
}

func (a *Agent) onMessage(_ paho.Client, m paho.Message) {
	t := m.Topic()
	// notify-next says the next job changed, and what it is; notify, that any pending job did
	// (a new job behind another software's job changes only the latter).
	switch t {
	case a.topic(iotjobs.SuffixNotifyNext):
		if a.notices.nextNotice(m.Payload()) {
			a.signal()
		}
		return
	case a.topic(iotjobs.SuffixNotify):
		if a.notices.listNotice(m.Payload()) {
			a.signal()
		}
		return
	}
	_, accepted, ok := iotjobs.ReplyTopic(t)
	var tok iotjobs.Token
	if !ok || json.Unmarshal(m.Payload(), &tok) != nil || tok.ClientToken == "" {
		return
	}
	a.mu.Lock()
	ch := a.waiters[tok.ClientToken]
	delete(a.waiters, tok.ClientToken)
	a.mu.Unlock()
	if ch != nil {
		ch <- reply{accepted: accepted, payload: m.Payload()}
	}
}

// request publishes a Jobs API request and waits for its accepted or rejected reply.
//
// A request or its reply can be lost without an error: the broker restarts, or the device
// reconnects before the jobs service has subscribed again. So the request goes out again,
// with the same client token, when the agent resubscribes and after every resend interval
// of silence, until RequestTimeout. Repeats are harmless: reads are idempotent, updates
// carry expectedVersion (a repeat of an applied update is rejected, and its reply comes
// after the accepted one, which has already been taken).
func (a *Agent) request(ctx context.Context, suffix string, msg iotjobs.Message) ([]byte, error) {
	// Unpredictable: a reply is taken only if it carries a token nobody else could guess.
	token := fmt.Sprintf("%s-%d", a.tokenPrefix, a.seq.Add(1))
	msg.SetClientToken(token)
	if u, ok := msg.(*iotjobs.UpdateRequest); ok {
		u.StatusDetails = fitDetails(u.StatusDetails)
	}
	raw, err := json.Marshal(msg)
	if err != nil {
		return nil, err
	}
	ch := make(chan reply, 1)
	a.mu.Lock()
	a.waiters[token] = ch
	a.mu.Unlock()
	defer func() {
		a.mu.Lock()
		delete(a.waiters, token)
		a.mu.Unlock()
	}()
	deadline := time.NewTimer(a.cfg.RequestTimeout)
	defer deadline.Stop()
	resendEvery := resendInterval(a.cfg.RequestTimeout)
	var lastErr error
	for sends := 1; ; sends++ {
		a.mu.Lock()
		resubscribed := a.subscribed
		a.mu.Unlock()
		pub := a.client.Publish(a.topic(suffix), 1, false, raw)
		resend := time.NewTimer(resendEvery)
		select {
		case r := <-ch:
			resend.Stop()
			if !r.accepted {
				var rej iotjobs.ErrorReply
				json.Unmarshal(r.payload, &rej)
				return nil, &rej
			}
			return r.payload, nil
		case <-resubscribed:
		case <-resend.C:
		case <-deadline.C:
			resend.Stop()
			if err := cmp.Or(pubError(pub), lastErr); err != nil {
				return nil, fmt.Errorf("%s: no reply within %s (%d sends; last publish error: %w)", suffix, a.cfg.RequestTimeout, sends, err)
			}
			return nil, fmt.Errorf("%s: no reply within %s (%d sends)", suffix, a.cfg.RequestTimeout, sends)
		case <-ctx.Done():
			resend.Stop()
			return nil, ctx.Err()
		}
		resend.Stop()
		lastErr = cmp.Or(pubError(pub), lastErr)
		a.log.Debug().Str("request", suffix).Str("clientToken", token).Int("sends", sends).Msg("no reply yet; sending the request again")
	}
}

// resendInterval is how long a request waits for its reply before it is sent again: a
// quarter of the request timeout, within 1s to 30s (long enough not to add to a busy jobs
// service's queue, short enough that a lost request does not stall a device for minutes).
func resendInterval(timeout time.Duration) time.Duration {
	return min(max(timeout/4, time.Second), 30*time.Second)
}

// pubError is a publish's error if it has completed with one.
func pubError(t paho.Token) error {
	select {
	case <-t.Done():
		return t.Error()
	default:
		return nil
	}
}

// processNext starts the next pending execution and sees it through. It reports whether
// there was one.
func (a *Agent) processNext(ctx context.Context) (bool, error) {
	next, ask := a.notices.take()
	if !ask {
		if next == nil {
			return false, nil // the service's last word: nothing is pending
		}
		if jobdoc.IsOtaflow(next.JobDocument) {
			e := &execution{JobExecution: *next}
			err := a.processOrFail(ctx, e)
			var rej *iotjobs.ErrorReply
			if errors.As(err, &rej) && e.VersionNumber == next.VersionNumber {
				// Refused before any report was applied: the notice is stale (the job was
				// canceled or changed meanwhile). Ask.
				a.log.Debug().Str("job", e.JobID).Str("code", string(rej.Code)).Msg("notify-next was stale; looking at the pending jobs")
				return a.scan(ctx)
			}
			return true, err
		}
	}
	return a.scan(ctx)
}

// scan asks the service for the pending executions and starts the first otaflow one.
func (a *Agent) scan(ctx context.Context) (bool, error) {
	// Look at the pending jobs instead of taking whatever start-next hands out: jobs that are
	// not otaflow updates belong to other software on the device and are left alone (seed v1).
	pending, err := a.jobs.GetPending(ctx)
	if err != nil {
		return false, err
	}
	listed := append(pending.InProgressJobs, pending.QueuedJobs...)
	for _, j := range listed {
		a.notices.saw(j.JobID)
	}
	for _, j := range listed {
		ex, err := a.jobs.Describe(ctx, j.JobID)
		var rej *iotjobs.ErrorReply
		if errors.As(err, &rej) && (rej.Code == iotjobs.CodeTerminalStateReached || rej.Code == iotjobs.CodeResourceNotFound) {
			continue // it ended (or was deleted) since the list was read
		}
		if err != nil {
			return false, err
		}
		if ex == nil {
			continue
		}
		e := &execution{JobExecution: *ex}
		if !jobdoc.IsOtaflow(e.JobDocument) {
			a.log.Debug().Str("job", j.JobID).Msg("not an otaflow update; left for other software")
			continue
		}
		// A QUEUED execution becomes IN_PROGRESS (or ends) with the device's first report:
		// a separate "accepted" update before it would cost every device and job one more
		// request, with nothing in it an operator could use.
		return true, a.processOrFail(ctx, e)
	}
	return false, nil
}

func (a *Agent) setState(change func(*State)) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	before := a.state.clone()
	change(a.state)
	if err := saveStateSync(a.cfg.StateDir, a.state, !a.cfg.NoSync); err != nil {
		// What is in memory stays what is on disk: the change did not happen.
		*a.state = before
		return &stateWriteError{dir: a.cfg.StateDir, err: err}
	}
	if a.cfg.OnStateChange != nil {
		a.cfg.OnStateChange(a.state.clone())
	}
	return nil
}

// setStep persists the current job's step (no write when it is unchanged).
func (a *Agent) setStep(step Step) error {
	a.mu.Lock()
	same := a.state.Step == step
	a.mu.Unlock()
	if same {
		return nil
	}
	return a.setState(func(s *State) { s.Step = step })
}

// fitDetails makes statusDetails acceptable to AWS IoT: a failure reason with a script's
// output loses its line breaks and is cut to the limit, and empty values are left out (a
// report AWS refuses would be resent forever).
func fitDetails(d map[string]string) map[string]string {
	for k, v := range d {
		v = strings.Map(func(r rune) rune {
			if unicode.IsControl(r) {
				return ' '
			}
			return r
		}, v)
		if rs := []rune(v); len(rs) > iotjobs.MaxDetailsValue {
			v = string(rs[:iotjobs.MaxDetailsValue-1]) + "…"
		}
		if strings.TrimSpace(v) == "" {
			delete(d, k)
			continue
		}
		d[k] = v
	}
	return d
}
