// Package agent is the otaflow device agent: it takes update jobs over the AWS IoT Jobs MQTT
// API, applies them one at a time, and reports the outcome.
package agent

import (
	"cmp"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/rs/zerolog"

	"github.com/otaflow/otaflow/internal/agent/slots"
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
	// InstallTime is how long a simulated install takes unless the job document says.
	InstallTime time.Duration
	// RequestTimeout bounds each Jobs API request.
	RequestTimeout time.Duration
	// Installer, when Root is set, performs real installs of documents with an artifact.
	Installer Installer
	// MaxStarts is how many times the agent may start with an unconfirmed new version
	// before it rolls the update back (default 3).
	MaxStarts int
	// StepTimeout, when set, is sent with each step (stepTimeoutInMinutes, rounded up; the
	// health-check step adds the bake time): a device that stops mid-step times out.
	StepTimeout time.Duration

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

	// Fault, when set, decides how each simulated install goes (the fleet simulator): fail it,
	// make the device unhealthy during the bake time, or nothing. A simulated crash is the
	// caller canceling the agent's context from inside Fault.
	Fault func(jobID string) Fault

	// NoSync skips fsync of the state file. Only simulated fleets use it: their devices stand
	// for other machines, whose disks should not load the machine under test.
	NoSync bool

	// OnStateChange, when set, sees every state the agent persists (metrics, tests).
	OnStateChange func(State)

	Logger zerolog.Logger
}

// Agent is one device's agent.
type Agent struct {
	cfg    Config
	log    zerolog.Logger
	client paho.Client

	mu      sync.Mutex
	state   *State
	waiters map[string]chan reply
	seq     atomic.Uint64
	wake    chan struct{}
	ready   chan struct{}
	ipc     *ipcServer
	// connected is true while subscribed to the jobs topics.
	connected atomic.Bool
	// subscribed is closed (and replaced) each time the agent has (re)subscribed: requests
	// in flight across a reconnect are sent again, since a clean session loses them.
	subscribed chan struct{}
}

// Connected reports whether the agent is connected and subscribed.
func (a *Agent) Connected() bool { return a.connected.Load() }

type reply struct {
	accepted bool
	payload  []byte
}

// Fault is a simulated install's outcome.
type Fault int

// Faults the fleet simulator injects.
const (
	FaultNone Fault = iota
	FaultFail
	FaultUnhealthy
	FaultCrash
)

// New prepares an agent; Run connects it.
func New(cfg Config) (*Agent, error) {
	if cfg.ThingName == "" {
		return nil, errors.New("agent: thing name is required (--thing-name)")
	}
	if cfg.StateDir == "" {
		return nil, errors.New("agent: state directory is required (--state-dir)")
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
	if cfg.DeferralResponseTimeout == 0 {
		cfg.DeferralResponseTimeout = 5 * time.Second
	}
	if cfg.MaxDeferral == 0 {
		cfg.MaxDeferral = time.Hour
	}
	if err := os.MkdirAll(cfg.StateDir, 0o755); err != nil {
		return nil, fmt.Errorf("agent: create state dir: %w", err)
	}
	st, err := loadState(cfg.StateDir)
	if err != nil {
		return nil, err
	}
	if st.CurrentJob != "" && (st.Step == "switched" || st.Step == "health-check") {
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
	return &Agent{
		cfg: cfg, log: cfg.Logger.With().Str("thing", cfg.ThingName).Logger(), state: st,
		waiters: map[string]chan reply{}, wake: make(chan struct{}, 1), ready: make(chan struct{}, 1), subscribed: make(chan struct{}),
	}, nil
}

// InstalledVersion returns the installed version of a piece of software ("core", "ota_agent").
func (a *Agent) InstalledVersion(software string) string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.state.Installed[software].Version
}

func (a *Agent) topic(suffix string) string {
	return "$aws/things/" + a.cfg.ThingName + "/jobs/" + suffix
}

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
		SetOrderMatters(false).
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
		a.ipc = ipc
		defer ipc.Close()
	}
	// A failed pass (a request that timed out, a broker that went away) is retried after a
	// growing pause: a device must not wait for a notification that may never come.
	retry := time.Duration(0)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-a.wake:
		}
		for ctx.Err() == nil {
			more, err := a.processNext(ctx)
			if err != nil && ctx.Err() != nil {
				return nil // stopping
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
		}
	}
}

func (a *Agent) signal() {
	select {
	case a.wake <- struct{}{}:
	default:
	}
}

func (a *Agent) onConnect(c paho.Client) {
	subs := map[string]byte{
		a.topic("notify-next"):       1,
		a.topic("notify"):            1,
		a.topic("get/accepted"):      1,
		a.topic("get/rejected"):      1,
		a.topic("+/get/accepted"):    1,
		a.topic("+/get/rejected"):    1,
		a.topic("+/update/accepted"): 1,
		a.topic("+/update/rejected"): 1,
	}
	tok := c.SubscribeMultiple(subs, a.onMessage)
	if !tok.WaitTimeout(a.cfg.RequestTimeout) || tok.Error() != nil {
		a.log.Error().Err(tok.Error()).Msg("subscribe to jobs topics failed")
		return
	}
	a.connected.Store(true)
	a.mu.Lock()
	close(a.subscribed)
	a.subscribed = make(chan struct{})
	a.mu.Unlock()
	a.log.Debug().Msg("connected; checking for pending jobs")
	select {
	case a.ready <- struct{}{}:
	default:
	}
	a.signal()
}

func (a *Agent) onMessage(_ paho.Client, m paho.Message) {
	t := m.Topic()
	// notify-next says the next job changed; notify, that any pending job did (a new job
	// behind another software's job changes only the latter).
	if strings.HasSuffix(t, "/notify-next") || strings.HasSuffix(t, "/notify") {
		a.signal()
		return
	}
	var tok struct {
		ClientToken string `json:"clientToken"`
	}
	if json.Unmarshal(m.Payload(), &tok) != nil || tok.ClientToken == "" {
		return
	}
	a.mu.Lock()
	ch := a.waiters[tok.ClientToken]
	delete(a.waiters, tok.ClientToken)
	a.mu.Unlock()
	if ch != nil {
		ch <- reply{accepted: strings.HasSuffix(t, "/accepted"), payload: m.Payload()}
	}
}

// rejection is a Jobs API rejected reply.
type rejection struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

func (r *rejection) Error() string { return r.Code + ": " + r.Message }

// request publishes a Jobs API request and waits for its accepted or rejected reply.
//
// A request or its reply can be lost without an error: the broker restarts, or the device
// reconnects before the jobs service has subscribed again. So the request goes out again,
// with the same client token, when the agent resubscribes and after every resend interval
// of silence, until RequestTimeout. Repeats are harmless: reads are idempotent, updates
// carry expectedVersion (a repeat of an applied update is rejected, and its reply comes
// after the accepted one, which has already been taken).
func (a *Agent) request(ctx context.Context, suffix string, body map[string]any) ([]byte, error) {
	token := fmt.Sprintf("%s-%d", a.cfg.ThingName, a.seq.Add(1))
	body["clientToken"] = token
	raw, err := json.Marshal(body)
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
				var rej rejection
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

type execution struct {
	JobID           string            `json:"jobId"`
	JobDocument     json.RawMessage   `json:"jobDocument"`
	Status          string            `json:"status"`
	StatusDetails   map[string]string `json:"statusDetails"`
	VersionNumber   int64             `json:"versionNumber"`
	ExecutionNumber int64             `json:"executionNumber"`
	// notes are added to the final statusDetails (e.g. deferrals).
	notes       map[string]string
	bakeSeconds int
}

// processNext starts the next pending execution and sees it through. It reports whether
// there was one.
func (a *Agent) processNext(ctx context.Context) (bool, error) {
	// Look at the pending jobs instead of taking whatever start-next hands out: jobs that are
	// not otaflow updates belong to other software on the device and are left alone (seed v1).
	raw, err := a.request(ctx, "get", map[string]any{})
	if err != nil {
		return false, err
	}
	var pending struct {
		InProgress []struct {
			JobID string `json:"jobId"`
		} `json:"inProgressJobs"`
		Queued []struct {
			JobID string `json:"jobId"`
		} `json:"queuedJobs"`
	}
	if err := json.Unmarshal(raw, &pending); err != nil {
		return false, fmt.Errorf("get reply: %w", err)
	}
	ids := make([]string, 0, len(pending.InProgress)+len(pending.Queued))
	for _, j := range append(pending.InProgress, pending.Queued...) {
		ids = append(ids, j.JobID)
	}
	for _, id := range ids {
		raw, err := a.request(ctx, id+"/get", map[string]any{"includeJobDocument": true})
		if err != nil {
			return false, err
		}
		var resp struct {
			Execution *execution `json:"execution"`
		}
		if err := json.Unmarshal(raw, &resp); err != nil || resp.Execution == nil {
			continue
		}
		e := resp.Execution
		if !jobdoc.IsOtaflow(e.JobDocument) {
			a.log.Debug().Str("job", id).Msg("not an otaflow update; left for other software")
			continue
		}
		if e.Status == "QUEUED" {
			raw, err := a.request(ctx, id+"/update", map[string]any{
				"status": "IN_PROGRESS", "statusDetails": map[string]string{"step": "accepted"},
				"expectedVersion": e.VersionNumber, "includeJobExecutionState": true,
			})
			if err != nil {
				return false, fmt.Errorf("start job %s: %w", id, err)
			}
			var st struct {
				State struct {
					VersionNumber int64 `json:"versionNumber"`
				} `json:"executionState"`
			}
			json.Unmarshal(raw, &st)
			e.VersionNumber = st.State.VersionNumber
		}
		return true, a.process(ctx, e)
	}
	return false, nil
}

func (a *Agent) process(ctx context.Context, e *execution) error {
	log := a.log.With().Str("job", e.JobID).Logger()
	doc, err := jobdoc.Parse(e.JobDocument)
	if err != nil {
		log.Warn().Err(err).Msg("rejecting invalid job document")
		return a.finish(ctx, e, "REJECTED", map[string]string{"reason": err.Error()})
	}
	e.bakeSeconds = doc.BakeSeconds
	log = jobLogLevel(log, doc.UpdateAgentLogLevel).With().Str("software", doc.SoftwareToUpdate).Str("version", doc.Version).Logger()
	if err := a.awaitDeferrals(ctx, e, doc, log); err != nil {
		return err
	}
	if doc.SoftwareToUpdate == jobdoc.SoftwareComponents {
		return a.deploy(ctx, e, doc)
	}

	a.mu.Lock()
	cur := a.state.Installed[doc.SoftwareToUpdate]
	resumed := a.state.CurrentJob == e.JobID && a.state.Step == "installed"
	a.mu.Unlock()
	if resumed && cur.Version == doc.Version {
		log.Info().Msg("update was installed before a restart; reporting it")
		return a.finish(ctx, e, "SUCCEEDED", map[string]string{"installedVersion": cur.Version, "previousVersion": cur.Previous})
	}
	if !resumed && cur.Version == doc.Version && a.onDisk(doc) {
		// Re-running a rollout over a partly updated fleet: nothing to do. The previous
		// version is this one, so a compensating rollback leaves the device as it is.
		log.Info().Msg("already on this version")
		return a.finish(ctx, e, "SUCCEEDED", map[string]string{"installedVersion": cur.Version, "previousVersion": cur.Version, "note": "already installed"})
	}

	if err := a.setState(func(s *State) { s.CurrentJob, s.Step = e.JobID, "installing" }); err != nil {
		return err
	}
	if a.cfg.Installer.Root != "" {
		running, err := a.installReal(ctx, e, doc, cur)
		var ie *installError
		if errors.As(err, &ie) {
			status := "FAILED"
			if ie.rejected {
				status = "REJECTED"
			}
			log.Warn().Str("status", status).Msg(ie.reason)
			if err := a.setState(func(s *State) { s.Installed[doc.SoftwareToUpdate] = cur }); err != nil {
				return err
			}
			return a.finish(ctx, e, status, map[string]string{"reason": ie.reason, "installedVersion": running})
		}
		if err != nil {
			return err
		}
		if err := a.setState(func(s *State) {
			s.Installed[doc.SoftwareToUpdate] = Installed{Version: doc.Version, Previous: cur.Version}
			s.Step = "installed"
		}); err != nil {
			return err
		}
		log.Info().Msg("installed, healthy, committed")
		return a.finish(ctx, e, "SUCCEEDED", map[string]string{"installedVersion": doc.Version, "previousVersion": cur.Version})
	}
	if _, err := a.request(ctx, e.JobID+"/update", map[string]any{
		"status": "IN_PROGRESS", "statusDetails": map[string]string{"step": "installing", "version": doc.Version},
		"expectedVersion": e.VersionNumber,
	}); err != nil {
		return fmt.Errorf("report IN_PROGRESS: %w", err)
	}
	e.VersionNumber++
	log.Info().Str("from", cur.Version).Msg("installing")

	wait := a.cfg.InstallTime
	if doc.Simulate != nil && doc.Simulate.InstallMillis > 0 {
		wait = time.Duration(doc.Simulate.InstallMillis) * time.Millisecond
	}
	fault := FaultNone
	if a.cfg.Fault != nil {
		fault = a.cfg.Fault(e.JobID)
	}
	select {
	case <-time.After(wait):
	case <-ctx.Done():
		return ctx.Err()
	}
	if doc.Simulate.FailsOn(a.cfg.ThingName) || fault == FaultFail {
		log.Warn().Msg("simulated install failure; the installed version is unchanged")
		if err := a.setState(func(s *State) { s.CurrentJob, s.Step = "", "" }); err != nil {
			return err
		}
		return a.finish(ctx, e, "FAILED", map[string]string{
			"reason": "simulated install failure requested by the job document", "installedVersion": cur.Version,
		})
	}
	if err := a.setState(func(s *State) {
		s.Installed[doc.SoftwareToUpdate] = Installed{Version: doc.Version, Previous: cur.Version}
		s.Step = "installed"
	}); err != nil {
		return err
	}
	log.Info().Msg("installed")
	if fault == FaultUnhealthy && doc.BakeSeconds == 0 {
		doc.BakeSeconds = 1 // an unhealthy device shows it in its first health check
	}
	if doc.BakeSeconds > 0 {
		healthy, err := a.bake(ctx, e, doc, fault == FaultUnhealthy)
		if err != nil {
			return err
		}
		if !healthy {
			log.Warn().Str("to", cur.Version).Msg("health check failed during bake; rolled back")
			if err := a.setState(func(s *State) {
				s.Installed[doc.SoftwareToUpdate] = cur
				s.CurrentJob, s.Step = "", ""
			}); err != nil {
				return err
			}
			return a.finish(ctx, e, "FAILED", map[string]string{
				"reason": "health check failed during the bake time; rolled back", "installedVersion": cur.Version, "rolledBackFrom": doc.Version,
			})
		}
	}
	return a.finish(ctx, e, "SUCCEEDED", map[string]string{"installedVersion": doc.Version, "previousVersion": cur.Version})
}

// onDisk reports whether the document's version is what the device runs: for real installs
// the current slot must agree with the state (a crash between the two is finished elsewhere).
func (a *Agent) onDisk(doc *jobdoc.Document) bool {
	if a.cfg.Installer.Root == "" {
		return true
	}
	return slots.Slots{Root: filepath.Join(a.cfg.Installer.Root, doc.SoftwareToUpdate)}.Current() == doc.Version
}

// bake watches the device's health for the bake time after an install, reporting progress.
// The simulated health check fails for the things the job document names.
func (a *Agent) bake(ctx context.Context, e *execution, doc *jobdoc.Document, unhealthy bool) (bool, error) {
	if _, err := a.request(ctx, e.JobID+"/update", map[string]any{
		"status": "IN_PROGRESS", "statusDetails": map[string]string{"step": "baking", "version": doc.Version, "bakeSeconds": fmt.Sprint(doc.BakeSeconds)},
		"expectedVersion": e.VersionNumber,
	}); err != nil {
		return false, fmt.Errorf("report baking: %w", err)
	}
	e.VersionNumber++
	bake := time.Duration(doc.BakeSeconds) * time.Second
	check := time.NewTicker(min(bake/4+time.Millisecond, 10*time.Second))
	defer check.Stop()
	deadline := time.After(bake)
	for {
		select {
		case <-ctx.Done():
			return false, ctx.Err()
		case <-deadline:
			return true, nil
		case <-check.C:
			if unhealthy || doc.Simulate.UnhealthyOn(a.cfg.ThingName) {
				return false, nil
			}
		}
	}
}

// deploy applies a components deployment: every component to its version, all at once.
func (a *Agent) deploy(ctx context.Context, e *execution, doc *jobdoc.Document) error {
	if _, err := a.request(ctx, e.JobID+"/update", map[string]any{
		"status": "IN_PROGRESS", "statusDetails": map[string]string{"step": "deploying"}, "expectedVersion": e.VersionNumber,
	}); err != nil {
		return fmt.Errorf("report IN_PROGRESS: %w", err)
	}
	e.VersionNumber++
	select {
	case <-time.After(a.cfg.InstallTime):
	case <-ctx.Done():
		return ctx.Err()
	}
	if doc.Simulate.FailsOn(a.cfg.ThingName) {
		return a.finish(ctx, e, "FAILED", map[string]string{"reason": "simulated deployment failure requested by the job document"})
	}
	var parts []string
	if err := a.setState(func(s *State) {
		for name, v := range doc.Components {
			s.Installed[name] = Installed{Version: v, Previous: s.Installed[name].Version}
		}
	}); err != nil {
		return err
	}
	for name, v := range doc.Components {
		parts = append(parts, name+"="+v)
	}
	slices.Sort(parts)
	a.log.Info().Str("job", e.JobID).Strs("components", parts).Msg("deployed")
	return a.finish(ctx, e, "SUCCEEDED", map[string]string{"components": strings.Join(parts, ",")})
}

func (a *Agent) setState(change func(*State)) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	change(a.state)
	if err := saveStateSync(a.cfg.StateDir, a.state, !a.cfg.NoSync); err != nil {
		return fmt.Errorf("write agent state: %w", err)
	}
	if a.cfg.OnStateChange != nil {
		a.cfg.OnStateChange(a.state.clone())
	}
	return nil
}

// revert puts the software back on previous after a job was canceled under it.
func (a *Agent) revert(jobID, previous, installed string) {
	if previous == "" {
		return
	}
	a.setState(func(s *State) {
		for sw, inst := range s.Installed {
			if inst.Version == installed {
				s.Installed[sw] = Installed{Version: previous}
			}
		}
	})
	a.log.Warn().Str("job", jobID).Str("version", previous).Msg("job was canceled while installing; reverted to the previous version")
}

// finish reports a terminal status and clears the current job.
func (a *Agent) finish(ctx context.Context, e *execution, status string, details map[string]string) error {
	for k, v := range e.notes {
		details[k] = v
	}
	_, err := a.request(ctx, e.JobID+"/update", map[string]any{
		"status": status, "statusDetails": details, "expectedVersion": e.VersionNumber,
	})
	var rej *rejection
	if errors.As(err, &rej) && rej.Code == "TerminalStateReached" {
		// The job ended meanwhile (canceled by the rollout): the fleet counts this device as
		// not updated, so an install it just finished must not stand.
		if status == "SUCCEEDED" {
			a.revert(e.JobID, details["previousVersion"], details["installedVersion"])
		}
		err = nil
	}
	if err != nil {
		return fmt.Errorf("report %s: %w", status, err)
	}
	a.log.Info().Str("job", e.JobID).Str("status", status).Msg("reported")
	return a.setState(func(s *State) { s.CurrentJob, s.Step, s.Starts, s.DeferredSince = "", "", 0, time.Time{} })
}

// awaitDeferrals asks local components (over the IPC socket) whether the update may go ahead,
// and waits while they defer it, up to MaxDeferral in total (counted across agent restarts).
func (a *Agent) awaitDeferrals(ctx context.Context, e *execution, doc *jobdoc.Document, log zerolog.Logger) error {
	if a.ipc == nil {
		return nil
	}
	a.mu.Lock()
	started := a.state.CurrentJob == e.JobID && a.state.Step != "" && a.state.Step != "deferred"
	since := a.state.DeferredSince
	if a.state.CurrentJob != e.JobID {
		since = time.Time{}
	}
	a.mu.Unlock()
	if started {
		return nil // the install began before a restart: too late to defer
	}
	deferrals := 0
	for {
		d := a.ipc.ask(ctx, IPCMessage{JobID: e.JobID, Software: doc.SoftwareToUpdate, Version: doc.Version})
		if err := ctx.Err(); err != nil {
			return err
		}
		if d == nil {
			break
		}
		if since.IsZero() {
			since = time.Now()
		}
		if time.Since(since)+d.After > a.cfg.MaxDeferral {
			log.Warn().Str("component", d.Component).Dur("maxDeferral", a.cfg.MaxDeferral).Msg("deferral limit reached; updating now")
			e.note("deferralLimitReached", fmt.Sprintf("%s asked to defer again after %s; the limit is %s", d.Component, time.Since(since).Round(time.Millisecond), a.cfg.MaxDeferral))
			break
		}
		deferrals++
		log.Info().Str("component", d.Component).Str("message", d.Message).Dur("recheckAfter", d.After).Msg("update deferred by a component")
		if err := a.setState(func(s *State) { s.CurrentJob, s.Step, s.DeferredSince = e.JobID, "deferred", since }); err != nil {
			return err
		}
		if _, err := a.request(ctx, e.JobID+"/update", map[string]any{
			"status": "IN_PROGRESS", "expectedVersion": e.VersionNumber,
			"statusDetails": map[string]string{"step": "deferred", "version": doc.Version, "deferredBy": d.Component,
				"message": d.Message, "recheckAfterMs": fmt.Sprint(d.After.Milliseconds())},
		}); err != nil {
			return fmt.Errorf("report deferral: %w", err)
		}
		e.VersionNumber++
		select {
		case <-time.After(d.After):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if deferrals > 0 {
		e.note("deferrals", fmt.Sprint(deferrals))
		e.note("deferredMs", fmt.Sprint(time.Since(since).Milliseconds()))
	}
	return nil
}

func (e *execution) note(k, v string) {
	if e.notes == nil {
		e.notes = map[string]string{}
	}
	e.notes[k] = v
}
