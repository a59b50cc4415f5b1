// Package bench measures otaflow on the machine it runs on, each figure beside a baseline
// measured in the same run: rollout throughput against the jobs service alone, workflow
// history length by fleet size, job notification latency against a raw MQTT round trip, the
// agent's footprint, and the agent's download speed against curl. `starter bench` prints it.
package bench

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/rs/zerolog"
	"google.golang.org/protobuf/proto"

	"github.com/otaflow/otaflow/internal/jobdoc"
	"github.com/otaflow/otaflow/internal/localiot"
	"github.com/otaflow/otaflow/internal/pgserver"
	"github.com/otaflow/otaflow/internal/rolloutclient"
	"github.com/otaflow/otaflow/internal/stack"
	"github.com/otaflow/otaflow/workflows/contract"
)

// Options say what to measure.
type Options struct {
	// Sizes are the fleet sizes for throughput and history length.
	Sizes []int
	// SimulatedSizes are fleet sizes measured with the light protocol-level simulator
	// (simfleet.go) instead of one agent and MQTT connection per device.
	SimulatedSizes []int
	// Repeat runs each throughput measurement this many times; the median is reported.
	Repeat int
	// Samples is the number of notify-latency samples.
	Samples int
	// ArtifactMB is the size of the artifact for the install and download figures (0 skips).
	ArtifactMB int
	// DeltaMB is the size of the tree for the delta update figures (0 skips; delta.go).
	DeltaMB int
	// DeltaPublishes is how many successive releases are published for the store's growth
	// (default 10).
	DeltaPublishes int
	// Starter is the starter binary, run as `starter fleet` child processes.
	Starter string
	// AgentPackage is built for the footprint figures ("" skips them).
	AgentPackage string
	// GateSizes are the fleet sizes one health gate evaluation is timed at (gate.go).
	GateSizes []int
	// ConsoleSizes are the fleet sizes one open console tab is measured at (console.go).
	ConsoleSizes []int
	// DevicesPerProcess bounds each fleet process (one process holds at most ~20,000 files).
	DevicesPerProcess int
	// PostgresURL, an admin URL, puts the jobs service on PostgreSQL: each throughput run gets
	// a database of its own there. PostgresPIDs are the server's processes, whose CPU time is
	// reported beside the stack's.
	PostgresURL  string
	PostgresPIDs func() []int
	// Replicas, with PostgresURL, is how many jobs services serve the devices at once.
	Replicas int
	// AfterRollout, when set, runs after each rollout while the devices are still connected
	// (a heap profile, say).
	AfterRollout func()
	// Progress gets one line per step.
	Progress io.Writer
	Logger   zerolog.Logger
}

// Results are every figure, for the table and -o json.
type Results struct {
	Machine    Machine         `json:"machine"`
	Throughput []Throughput    `json:"throughput"`
	Notify     *Latency        `json:"notifyLatency,omitempty"`
	Agent      *AgentFigures   `json:"agent,omitempty"`
	Download   *Download       `json:"download,omitempty"`
	Gates      []Gate          `json:"healthGates,omitempty"`
	Delta      *DeltaFigures   `json:"delta,omitempty"`
	Console    []ConsoleFigure `json:"console,omitempty"`
}

// Machine describes where the figures were measured.
type Machine struct {
	Date      string `json:"date"`
	CPUs      int    `json:"cpus"`
	GoVersion string `json:"goVersion"`
	OS        string `json:"os"`
	Model     string `json:"cpuModel"`
}

// Throughput is one fleet size: a whole rollout (Temporal, worker, jobs service, devices over
// MQTT) beside the same devices given one job by the jobs service alone.
type Throughput struct {
	Devices          int     `json:"devices"`
	RolloutPerMin    float64 `json:"rolloutDevicesPerMinute"`
	BaselinePerMin   float64 `json:"baselineDevicesPerMinute"`
	Ratio            float64 `json:"rolloutToBaseline"`
	HistoryEvents    int     `json:"historyEvents"`
	RolloutSeconds   float64 `json:"rolloutSeconds"`
	BaselineSeconds  float64 `json:"baselineSeconds"`
	FleetProcesses   int     `json:"fleetProcesses"`
	RepeatsEachSide  int     `json:"repeats"`
	ConnectedSeconds float64 `json:"devicesConnectedSeconds"`
	// ControlCallsPerDevice and DeviceCallsPerDevice are the jobs service's REST and MQTT
	// requests during one rollout, per device; ControlCalls and DeviceCalls break them down.
	ControlCallsPerDevice float64          `json:"controlPlaneCallsPerDevice"`
	DeviceCallsPerDevice  float64          `json:"deviceCallsPerDevice"`
	ControlCalls          map[string]int64 `json:"controlPlaneCalls"`
	DeviceCalls           map[string]int64 `json:"deviceCalls"`
	// Simulated: the devices were the protocol-level simulator, not agents.
	Simulated bool `json:"simulated,omitempty"`
	// StackCPUSecondsPerDevice is the CPU time (user + system) of the stack's process
	// (Temporal, worker, jobs service, broker; not the devices) during the rollout, per device,
	// the median over the repeats; PostgresCPUSecondsPerDevice is the PostgreSQL server's, when
	// the jobs service is on it.
	StackCPUSecondsPerDevice    float64 `json:"stackCpuSecondsPerDevice"`
	PostgresCPUSecondsPerDevice float64 `json:"postgresCpuSecondsPerDevice,omitempty"`
	// DevicesCPUSecondsPerDevice is what the device processes spent (the agents of `starter
	// fleet`, or the simulator), not counted in the stack's; the median over the repeats too.
	DevicesCPUSecondsPerDevice float64 `json:"devicesCpuSecondsPerDevice,omitempty"`
	// StackPeakRSSMiB is the stack process's peak resident memory so far (VmHWM).
	StackPeakRSSMiB float64 `json:"stackPeakRssMiB"`
	// RegistrationSeconds is how long registering the fleet's things (in its group) took,
	// through bulk registration (StartThingRegistrationTask).
	RegistrationSeconds float64 `json:"registrationSeconds"`
	// WarmUpSeconds is how long each agent's first job took, before the measured runs (real
	// agents only): a job the jobs service gives every device, as the baseline's.
	WarmUpSeconds float64 `json:"warmUpSeconds,omitempty"`
	// HistoryBytes is the rollout workflow's history size (the events' encoded size).
	HistoryBytes int `json:"historyBytes"`
	// AWSRolloutMinutes is how long the same rollout takes at AWS IoT Jobs' highest rollout
	// rate (1,000 executions per minute per job): arithmetic, not a simulation.
	AWSRolloutMinutes float64 `json:"awsRolloutMinutes"`
	Store             string  `json:"jobsStore"`
}

// Latency is job created → device notified, beside a raw MQTT publish → receive.
type Latency struct {
	Samples  int     `json:"samples"`
	P50ms    float64 `json:"p50ms"`
	P99ms    float64 `json:"p99ms"`
	RawP50ms float64 `json:"rawMqttP50ms"`
	RawP99ms float64 `json:"rawMqttP99ms"`
}

// AgentFigures are the device agent's costs.
type AgentFigures struct {
	BinaryBytes       int64   `json:"strippedBinaryBytes"`
	IdleRSSKiB        int64   `json:"idleRssKiB"`
	IdleCPUPercent    float64 `json:"idleCpuPercent"`
	IdleSeconds       float64 `json:"idleSeconds"`
	InstallPeakRSSKiB int64   `json:"installPeakRssKiB"`
	InstallMB         int     `json:"installArtifactMB"`
	InstallSeconds    float64 `json:"installSeconds"`
}

// Download is the agent's downloader beside curl on the same presigned URL.
type Download struct {
	MB        int     `json:"artifactMB"`
	AgentMBps float64 `json:"agentMBps"`
	CurlMBps  float64 `json:"curlMBps"`
	Ratio     float64 `json:"agentToCurl"`
}

func (o *Options) say(format string, args ...any) {
	if o.Progress != nil {
		fmt.Fprintf(o.Progress, time.Now().Format("15:04:05")+"  "+format+"\n", args...)
	}
}

// Run measures everything Options ask for.
func Run(ctx context.Context, o Options) (*Results, error) {
	if o.Repeat < 1 {
		o.Repeat = 1
	}
	if o.DevicesPerProcess == 0 {
		o.DevicesPerProcess = 5000
	}
	res := &Results{Machine: machine()}
	for _, n := range o.Sizes {
		t, err := throughput(ctx, &o, n, false)
		if err != nil {
			return res, fmt.Errorf("throughput at %d devices: %w", n, err)
		}
		res.Throughput = append(res.Throughput, *t)
	}
	for _, n := range o.SimulatedSizes {
		t, err := throughput(ctx, &o, n, true)
		if err != nil {
			return res, fmt.Errorf("throughput at %d simulated devices: %w", n, err)
		}
		res.Throughput = append(res.Throughput, *t)
	}
	if o.Samples > 0 {
		l, err := notifyLatency(ctx, &o)
		if err != nil {
			return res, fmt.Errorf("notify latency: %w", err)
		}
		res.Notify = l
	}
	for _, n := range o.GateSizes {
		for _, pg := range gateStores(&o) {
			g, err := gateFigure(ctx, &o, n, pg)
			if err != nil {
				return res, fmt.Errorf("health gate at %d things: %w", n, err)
			}
			res.Gates = append(res.Gates, *g)
		}
	}
	for _, n := range o.ConsoleSizes {
		c, err := consoleFigure(ctx, &o, n)
		if err != nil {
			return res, fmt.Errorf("console at %d things: %w", n, err)
		}
		res.Console = append(res.Console, *c)
	}
	if o.AgentPackage != "" || o.ArtifactMB > 0 {
		a, d, err := agentFigures(ctx, &o)
		if err != nil {
			return res, fmt.Errorf("agent figures: %w", err)
		}
		res.Agent, res.Download = a, d
	}
	if o.DeltaMB > 0 {
		if o.AgentPackage == "" {
			return res, fmt.Errorf("the delta figures need the agent (--agent-package)")
		}
		d, err := deltaFigures(ctx, &o)
		if err != nil {
			return res, fmt.Errorf("delta figures: %w", err)
		}
		res.Delta = d
	}
	return res, nil
}

func machine() Machine {
	m := Machine{Date: time.Now().UTC().Format("2006-01-02"), CPUs: runtime.NumCPU(), GoVersion: runtime.Version(), OS: runtime.GOOS + "/" + runtime.GOARCH}
	if raw, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(raw), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.Model = strings.TrimSpace(v)
				break
			}
		}
	}
	return m
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func percentile(xs []float64, p float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	i := int(p/100*float64(len(s)) + 0.5)
	return s[min(max(i-1, 0), len(s)-1)]
}

func newStack(ctx context.Context, o *Options) (*stack.Stack, string, error) {
	dir, err := os.MkdirTemp("", "otaflow-bench-")
	if err != nil {
		return nil, "", err
	}
	so := stack.Options{DataDir: dir, InMemoryTemporal: true, UIPort: -1, Logger: o.Logger, NoFleetIndex: true}
	if o.PostgresURL != "" {
		dbURL, err := pgserver.CreateDatabase(ctx, o.PostgresURL, "bench_"+strings.ReplaceAll(filepath.Base(dir), "-", "_"))
		if err != nil {
			os.RemoveAll(dir)
			return nil, "", err
		}
		so.JobsPostgresURL, so.JobsReplicas = dbURL, o.Replicas
	}
	s, err := stack.Start(ctx, so)
	if err != nil {
		os.RemoveAll(dir)
		return nil, "", err
	}
	return s, dir, nil
}

// fleetProcs starts `starter fleet` processes for devices 1..n and waits until every device
// is connected.
func fleetProcs(ctx context.Context, o *Options, brokerURL, dir string, n int) (stop func(), pids func() []int, procs int, err error) {
	var cmds []*exec.Cmd
	for first := 1; first <= n; first += o.DevicesPerProcess {
		k := min(o.DevicesPerProcess, n-first+1)
		cmds = append(cmds, exec.CommandContext(ctx, o.Starter, "fleet", "--broker", brokerURL, "--devices", fmt.Sprint(k), "--first", fmt.Sprint(first),
			"--install-time", "0s", "--initial-version", "1.0.0", "--staged", strings.Join(stagedVersions(o.Repeat), ","), "--state-dir", filepath.Join(dir, fmt.Sprintf("fleet-%d", first)), "--connect-timeout", "5m"))
	}
	if stop, pids, err = startProcs(cmds...); err != nil {
		return nil, nil, 0, fmt.Errorf("fleet process: %w", err)
	}
	return stop, pids, len(cmds), nil
}

// startProcs starts device processes (`starter fleet`, `starter simfleet`) and waits until
// each says "connected"; stop ends them, pids lists them.
func startProcs(cmds ...*exec.Cmd) (stop func(), pids func() []int, err error) {
	var started []*exec.Cmd
	stop = func() {
		for _, c := range started {
			c.Process.Signal(syscall.SIGTERM)
		}
		for _, c := range started {
			c.Wait()
		}
	}
	ready := make(chan error, len(cmds))
	for _, cmd := range cmds {
		cmd.Stderr = os.Stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			stop()
			return nil, nil, err
		}
		if err := cmd.Start(); err != nil {
			stop()
			return nil, nil, fmt.Errorf("start %s: %w", cmd.Path, err)
		}
		started = append(started, cmd)
		go func() {
			line, err := bufio.NewReader(out).ReadString('\n')
			if err == nil && !strings.HasPrefix(line, "connected") {
				err = fmt.Errorf("%s said %q", cmd.Args[1], line)
			}
			ready <- err
			io.Copy(io.Discard, out)
		}()
	}
	for range cmds {
		if err := <-ready; err != nil {
			stop()
			return nil, nil, err
		}
	}
	pids = func() []int {
		var out []int
		for _, c := range started {
			out = append(out, c.Process.Pid)
		}
		return out
	}
	return stop, pids, nil
}

// registerFleet registers devices 1..n in group as an operator registers a fleet: one input
// file of their names and one bulk registration task, followed to its end.
func registerFleet(svc *localiot.Service, group string, n int, progress func(done int)) error {
	var in bytes.Buffer
	for i := 1; i <= n; i++ {
		fmt.Fprintf(&in, "{\"ThingName\":%q}\n", stack.Device(i))
	}
	key := fmt.Sprintf("bench/%s.jsonl", group)
	if _, err := svc.PutArtifact("bench-registration", key, &in); err != nil {
		return err
	}
	template := fmt.Sprintf(`{"Parameters": {"ThingName": {"Type": "String"}}, "Resources": {"thing": {"Type": "AWS::IoT::Thing",
		"Properties": {"ThingName": {"Ref": "ThingName"}, "ThingGroups": [%q]}}}}`, group)
	id, err := svc.StartThingRegistrationTask(template, "bench-registration", key, "arn:aws:iam::000000000000:role/bench")
	if err != nil {
		return err
	}
	last := time.Now()
	for {
		task, err := svc.DescribeThingRegistrationTask(id)
		if err != nil {
			return err
		}
		switch {
		case task.Status == localiot.TaskCompleted && task.FailureCount == 0:
			return nil
		case task.Status != localiot.TaskInProgress:
			return fmt.Errorf("registering %d things: task %s is %s with %d failures: %s", n, id, task.Status, task.FailureCount, task.Message)
		}
		if time.Since(last) > 10*time.Second {
			progress(task.SuccessCount)
			last = time.Now()
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// settle waits until the devices have gone quiet after, as the log says, what: an agent
// reports its inventory and looks for pending jobs when it connects, and reports its
// inventory again after each job succeeds, so without a wait each run would pay for the tail
// of the one before it (the first rollout for the fleet's connecting, the baseline for the
// rollout's reports). Quiet is no device or control-plane call for a second; it gives up
// waiting after a minute.
func settle(ctx context.Context, o *Options, s *stack.Stack, n int, what string) error {
	began := time.Now()
	total := func() (sum int64) {
		for _, c := range s.Jobs.APICalls() {
			sum += c
		}
		return sum
	}
	last, quiet := total(), 0
	for quiet < 2 && time.Since(began) < time.Minute {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
		if now := total(); now == last {
			quiet++
		} else {
			quiet, last = 0, now
		}
	}
	o.say("%d devices: quiet after %s (waited %.1fs)", n, what, time.Since(began).Seconds())
	return nil
}

// warmUpVersion is what every agent's first job, unmeasured, switches to (below 2.0.0).
const warmUpVersion = "1.1.0"

// stagedVersions are the versions the throughput runs roll out (2.R.0 by the workflow, 2.R.1
// by the baseline job), each above the one before: agents refuse a downgrade outside a
// rollback job, and with 3.R.0 for the baseline every agent rejected the second rollout of
// `--repeat 3`. The bench's devices hold them on disk already: the jobs carry no artifact,
// so the figures are the control plane's and the devices', not the artifact store's (the
// install and download figures measure that).
func stagedVersions(repeat int) []string {
	out := []string{warmUpVersion}
	for r := 0; r < repeat; r++ {
		out = append(out, fmt.Sprintf("2.%d.0", r), fmt.Sprintf("2.%d.1", r))
	}
	return out
}

func throughput(ctx context.Context, o *Options, n int, simulated bool) (*Throughput, error) {
	s, dir, err := newStack(ctx, o)
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	defer s.Close()
	// The fleet is a thing group, as an operator's is: rollout and baseline target it.
	fleetGroup, err := s.Jobs.CreateThingGroup(fmt.Sprintf("bench-fleet-%d", n), "", localiot.GroupProperties{})
	if err != nil {
		return nil, err
	}
	registered := time.Now()
	if err := registerFleet(s.Jobs, fleetGroup.Name, n, func(done int) {
		o.say("%d devices: %d registered (%.0fs)", n, done, time.Since(registered).Seconds())
	}); err != nil {
		return nil, err
	}
	registration := time.Since(registered)
	o.say("%d devices: registered in %.1fs (StartThingRegistrationTask)", n, registration.Seconds())
	arns := []string{fleetGroup.Arn}
	start := time.Now()
	var stop func()
	var devicePIDs func() []int
	procs := 0
	if simulated {
		o.say("%d devices: starting the protocol-level simulator (%d MQTT sessions for all devices)", n, simSessions)
		user, password := s.MQTTServiceCredentials()
		cmd := exec.CommandContext(ctx, o.Starter, "simfleet", "--broker", s.Broker.URL(), "--username", user)
		cmd.Env = append(os.Environ(), SimPasswordEnv+"="+password)
		if stop, devicePIDs, err = startProcs(cmd); err != nil {
			return nil, fmt.Errorf("simulator process: %w", err)
		}
		procs = 1
	} else {
		o.say("%d devices: starting the fleet (one MQTT connection per device)", n)
		if stop, devicePIDs, procs, err = fleetProcs(ctx, o, s.Broker.URL(), dir, n); err != nil {
			return nil, err
		}
	}
	defer stop()
	t := &Throughput{Devices: n, FleetProcesses: procs, RepeatsEachSide: o.Repeat, ConnectedSeconds: time.Since(start).Seconds(), Store: "bbolt", Simulated: simulated,
		RegistrationSeconds: registration.Seconds()}
	if err := settle(ctx, o, s, n, "connecting"); err != nil {
		return nil, err
	}
	if o.PostgresURL != "" {
		t.Store = "postgres"
		if o.Replicas > 1 {
			t.Store = fmt.Sprintf("postgres, %d jobs service replicas", o.Replicas)
		}
	}
	if !simulated {
		// Every agent takes one unmeasured job first, so both sides measure agents past their
		// first job. (The first pair of every run was once the slow one. The warm-up itself
		// took no longer than later jobs; the cause was the reports of the run before, which
		// settle now waits out.)
		took, err := serviceJob(ctx, s, arns, n, fmt.Sprintf("warm-up-%d", n), warmUpVersion)
		if err != nil {
			return nil, fmt.Errorf("warm-up job: %w", err)
		}
		t.WarmUpSeconds = took.Seconds()
		o.say("%d devices: warm-up job (each agent's first) took %.2fs, not measured", n, took.Seconds())
		if err := settle(ctx, o, s, n, "the warm-up"); err != nil {
			return nil, err
		}
	}
	var rollout, baseline, stackCPU, devicesCPU, pgCPU []float64
	for r := 0; r < o.Repeat; r++ {
		// Rollout: Temporal workflow, worker, activities through the AWS SDK, jobs service.
		req := contract.RolloutRequest{
			RolloutID: fmt.Sprintf("bench-%d-%d", n, r), Targets: arns, Architecture: "x86_64", OperatingSystem: "ubuntu",
			SoftwareToUpdate: "core", Version: fmt.Sprintf("2.%d.0", r), S3URLSignerRole: "arn:aws:iam::000000000000:role/bench",
			PollInterval: 100 * time.Millisecond, Timeout: 30 * time.Minute,
		}
		before := s.Jobs.APICalls()
		cpuBefore, pgBefore, devBefore := selfCPU(), pidsCPU(o.PostgresPIDs), pidsCPU(devicePIDs)
		began := time.Now()
		run, err := rolloutclient.Start(ctx, s.Client, contract.TaskQueue, req)
		if err != nil {
			return nil, err
		}
		res, err := rolloutclient.Result(ctx, run)
		if err != nil {
			return nil, fmt.Errorf("rollout: %w (%s)", err, res.Message)
		}
		took := time.Since(began)
		// The rollout's CPU includes its tail (the agents' inventory reports after they
		// succeed), and the baseline starts after it.
		if err := settle(ctx, o, s, n, fmt.Sprintf("rollout %d", r+1)); err != nil {
			return nil, err
		}
		stackCPU = append(stackCPU, (selfCPU()-cpuBefore)/float64(n))
		devicesCPU = append(devicesCPU, (pidsCPU(devicePIDs)-devBefore)/float64(n))
		if o.PostgresPIDs != nil {
			pgCPU = append(pgCPU, (pidsCPU(o.PostgresPIDs)-pgBefore)/float64(n))
		}
		t.StackPeakRSSMiB = float64(peakRSSKiB()) / 1024
		if o.AfterRollout != nil {
			o.AfterRollout()
		}
		t.AWSRolloutMinutes = float64(n) / 1000
		t.ControlCalls, t.DeviceCalls = map[string]int64{}, map[string]int64{}
		var control, device int64
		for op, c := range s.Jobs.APICalls() {
			d := c - before[op]
			if strings.HasPrefix(op, "mqtt ") {
				device += d
				if d > 0 {
					t.DeviceCalls[strings.TrimPrefix(op, "mqtt ")] = d
				}
			} else if d > 0 {
				control += d
				t.ControlCalls[op] = d
			}
		}
		t.ControlCallsPerDevice, t.DeviceCallsPerDevice = float64(control)/float64(n), float64(device)/float64(n)
		rollout = append(rollout, took.Seconds())
		it := s.Client.GetWorkflowHistory(ctx, run.GetID(), run.GetRunID(), false, 0)
		events, size := 0, 0
		for it.HasNext() {
			ev, err := it.Next()
			if err != nil {
				return nil, err
			}
			events++
			size += proto.Size(ev)
		}
		t.HistoryEvents, t.HistoryBytes = events, size
		o.say("%d devices: rollout %d/%d took %.2fs (%d history events, %.2f control-plane and %.2f device calls per device)", n, r+1, o.Repeat,
			took.Seconds(), events, t.ControlCallsPerDevice, t.DeviceCallsPerDevice)

		// Baseline: the same devices, one job straight from the jobs service.
		if took, err = serviceJob(ctx, s, arns, n, fmt.Sprintf("baseline-%d-%d", n, r), fmt.Sprintf("2.%d.1", r)); err != nil {
			return nil, fmt.Errorf("baseline job: %w", err)
		}
		baseline = append(baseline, took.Seconds())
		o.say("%d devices: baseline %d/%d took %.2fs", n, r+1, o.Repeat, took.Seconds())
		if r+1 < o.Repeat {
			if err := settle(ctx, o, s, n, fmt.Sprintf("baseline %d", r+1)); err != nil {
				return nil, err
			}
		}
	}
	t.RolloutSeconds, t.BaselineSeconds = median(rollout), median(baseline)
	t.StackCPUSecondsPerDevice, t.DevicesCPUSecondsPerDevice, t.PostgresCPUSecondsPerDevice = median(stackCPU), median(devicesCPU), median(pgCPU)
	t.RolloutPerMin = float64(n) / t.RolloutSeconds * 60
	t.BaselinePerMin = float64(n) / t.BaselineSeconds * 60
	t.Ratio = t.RolloutPerMin / t.BaselinePerMin
	return t, nil
}

// serviceJob gives every device one job straight from the jobs service (no Temporal), a
// switch to the staged version, and returns how long it took until every device succeeded.
func serviceJob(ctx context.Context, s *stack.Stack, targets []string, n int, jobID, version string) (time.Duration, error) {
	d := jobdoc.Document{Type: jobdoc.Type, SchemaVersion: jobdoc.SchemaVersion, Operation: jobdoc.OpUpdate, RolloutID: jobID,
		SoftwareToUpdate: jobdoc.SoftwareCore, Version: version}
	body, _ := d.Marshal()
	began := time.Now()
	if _, err := s.Jobs.CreateJob(localiot.CreateJobInput{JobID: jobID, Targets: targets, Document: body}); err != nil {
		return 0, err
	}
	for {
		j, err := s.Jobs.DescribeJob(jobID)
		if err != nil {
			return 0, err
		}
		if j.Counts.Succeeded == n {
			return time.Since(began), nil
		}
		if done := j.Counts.Failed + j.Counts.Rejected + j.Counts.TimedOut + j.Counts.Canceled; done > 0 {
			return 0, fmt.Errorf("%d devices did not succeed", done)
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// selfCPU is this process's CPU time so far (user + system), in seconds.
func selfCPU() float64 {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

// pidsCPU is the CPU time so far of the processes pids lists (from /proc), in seconds.
func pidsCPU(pids func() []int) float64 {
	if pids == nil {
		return 0
	}
	var ticks int64
	for _, pid := range pids() {
		raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		// Fields after the command name (which may hold spaces): utime is the 14th, stime the 15th.
		rest := string(raw)
		if i := strings.LastIndexByte(rest, ')'); i >= 0 {
			rest = rest[i+2:]
		}
		f := strings.Fields(rest)
		if len(f) > 12 {
			u, _ := strconv.ParseInt(f[11], 10, 64)
			st, _ := strconv.ParseInt(f[12], 10, 64)
			ticks += u + st
		}
	}
	return float64(ticks) / 100 // USER_HZ
}

// peakRSSKiB is this process's peak resident set (VmHWM).
func peakRSSKiB() int64 {
	raw, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return n
		}
	}
	return 0
}
