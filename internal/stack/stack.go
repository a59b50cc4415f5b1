// Package stack starts otaflow's whole local system in one process: the embedded Temporal
// server and web UI, the MQTT broker, the jobs service, the rollout worker and simulated
// devices. `starter demo`, `starter dev` and the end-to-end tests all use it.
package stack

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/iot"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/worker"

	"github.com/otaflow/otaflow/internal/agent"
	"github.com/otaflow/otaflow/internal/broker"
	"github.com/otaflow/otaflow/internal/cliconfig"
	"github.com/otaflow/otaflow/internal/components"
	"github.com/otaflow/otaflow/internal/console"
	"github.com/otaflow/otaflow/internal/devserver"
	"github.com/otaflow/otaflow/internal/fleet"
	"github.com/otaflow/otaflow/internal/greengrass"
	"github.com/otaflow/otaflow/internal/iotclient"
	"github.com/otaflow/otaflow/internal/localiot"
	"github.com/otaflow/otaflow/internal/localiot/mqttplane"
	"github.com/otaflow/otaflow/internal/localiot/rest"
	"github.com/otaflow/otaflow/internal/pki"
	"github.com/otaflow/otaflow/internal/release"
	"github.com/otaflow/otaflow/internal/rolloutapi"
	"github.com/otaflow/otaflow/internal/rolloutclient"
	"github.com/otaflow/otaflow/internal/rolloutops"
	"github.com/otaflow/otaflow/internal/rolloutworker"
	"github.com/otaflow/otaflow/internal/tlog"
	"github.com/otaflow/otaflow/internal/workermetrics"
	"github.com/otaflow/otaflow/workflows/contract"
)

// Options configure the local stack. Zero ports pick free ones (tests); the CLI passes the
// documented defaults.
type Options struct {
	// DataDir holds the Temporal SQLite file, the jobs database and the devices' state.
	DataDir string
	// InMemoryTemporal keeps Temporal's state in memory instead of DataDir.
	InMemoryTemporal bool
	TemporalPort     int
	UIPort           int // -1: no web UI
	MQTTAddr         string
	// MQTTTLSAddr is the broker's mutual-TLS listener: devices present a certificate from the
	// stack's local CA (DataDir/pki) whose common name is their thing name. The plain
	// MQTTAddr listener takes the thing name from the client ID: for local use only.
	MQTTTLSAddr string
	JobsAddr    string
	// DeviceHost is the name or address devices reach this machine by when it is not the
	// listen address (behind NAT, a virtual machine's gateway such as 10.0.2.2, a DNS name):
	// the broker's certificate names it, presigned artifact URLs use it, and the jobs API
	// answers requests for it.
	DeviceHost      string
	Region          string
	AccessKeyID     string
	SecretAccessKey string
	// NoWorker leaves the rollout worker out (run `worker` separately).
	NoWorker bool
	// NoAWSQuotas lifts the AWS IoT quotas the jobs service enforces.
	NoAWSQuotas bool
	// NoFleetIndex leaves fleet indexing off (AWS's default), as benchmarks of the rollout
	// path do; the stack turns it on otherwise, with the agents' health fields, for health
	// gates.
	NoFleetIndex bool
	// DeviceHealthInterval is how often the stack's devices report their health after an
	// update (0: the agent's default, a minute).
	DeviceHealthInterval time.Duration
	// TemporalDynamicConfig overrides Temporal server settings by name (devserver.Options).
	TemporalDynamicConfig map[string]any
	// JobsPostgresURL keeps the jobs service's state in this PostgreSQL database instead of
	// bbolt in DataDir (artifacts stay in DataDir).
	JobsPostgresURL string
	// JobsReplicas, with JobsPostgresURL, runs this many jobs services on that database (in
	// this process), all serving device requests through one MQTT shared subscription on the
	// embedded broker; the first also serves REST. 0 or 1: one.
	JobsReplicas int
	// ReconcileEvery is how often the worker looks for rollouts ended outside otaflow (default
	// 30 s).
	ReconcileEvery time.Duration
	// ConsolePassword, when set, is the fleet console's password (HTTP basic auth).
	ConsolePassword string
	Logger          zerolog.Logger
}

// Stack is a running local system.
type Stack struct {
	opts     Options
	Temporal *devserver.Server
	Broker   *broker.Broker
	Jobs     *localiot.Service
	JobsURL  string
	// ConsoleURL is the fleet console's page.
	ConsoleURL string
	Client     client.Client
	IoT        *iot.Client
	// CA is the local certificate authority that issues device certificates.
	CA *pki.CA
	// Catalog is the component catalog deployments resolve against.
	Catalog *components.Catalog
	// WebhookSecret signs the rollouts' webhooks (kept in DataDir/webhook-secret, mode 0600).
	WebhookSecret []byte
	// workerMetrics are the worker's metrics (the Temporal SDK's, the rollouts' events),
	// served with the jobs service's at /metrics.
	workerMetrics *workermetrics.Metrics
	// DeviceInstaller, when set before StartDevices, gives each simulated device a real
	// installer (slots on disk, signed artifacts, scripts, health checks) instead of
	// simulated installs.
	DeviceInstaller func(thing string) (agent.Installer, error)

	httpSrv *http.Server
	mqtt    *mqttplane.Plane
	// replicas are the jobs services beyond the first (Options.JobsReplicas), with their planes.
	replicas []*localiot.Service
	planes   []*mqttplane.Plane
	worker   worker.Worker
	// stopReconciler stops the worker's check for rollouts ended outside otaflow.
	stopReconciler context.CancelFunc

	servicePassword string
	brokerOpts      broker.Options

	mu      sync.Mutex
	fleets  []*fleet.Fleet
	devices int
}

func randomSecret() string {
	b := make([]byte, 16)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// Start brings every part up, in dependency order; on any failure it stops what it started.
func Start(ctx context.Context, o Options) (_ *Stack, err error) {
	if o.DataDir == "" {
		return nil, errors.New("stack: a data directory is required")
	}
	if o.Region == "" {
		o.Region = cliconfig.DefaultRegion
	}
	if o.AccessKeyID == "" {
		o.AccessKeyID, o.SecretAccessKey = cliconfig.DefaultAccessKeyID, cliconfig.DefaultSecretKey
	}
	if o.MQTTAddr == "" {
		o.MQTTAddr = "127.0.0.1:0"
	}
	if o.JobsAddr == "" {
		o.JobsAddr = "127.0.0.1:0"
	}
	if o.MQTTTLSAddr == "" {
		o.MQTTTLSAddr = "127.0.0.1:0"
	}
	log := o.Logger
	s := &Stack{opts: o}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()

	dbPath := filepath.Join(o.DataDir, "temporal.db")
	if o.InMemoryTemporal {
		dbPath = ""
	}
	s.Temporal, err = devserver.Start(ctx, devserver.Options{
		DBPath: dbPath, FrontendPort: o.TemporalPort, UIPort: o.UIPort,
		SearchAttributes: rolloutworker.SearchAttributes(), DynamicConfig: o.TemporalDynamicConfig, Logger: log,
	})
	if err != nil {
		return nil, err
	}

	s.Catalog, err = components.Open(filepath.Join(o.DataDir, "components.json"))
	if err != nil {
		return nil, err
	}
	if s.workerMetrics, err = workermetrics.New(false); err != nil {
		return nil, err
	}
	if s.WebhookSecret, err = loadOrCreateSecret(filepath.Join(o.DataDir, "webhook-secret")); err != nil {
		return nil, err
	}
	s.Client, err = client.DialContext(ctx, client.Options{
		HostPort: s.Temporal.FrontendAddr(), Namespace: s.Temporal.Namespace(), MetricsHandler: s.workerMetrics.Temporal,
		Logger: tlog.New(log.With().Str("component", "temporal-client").Logger().Level(max(log.GetLevel(), zerolog.WarnLevel))),
	})
	if err != nil {
		return nil, fmt.Errorf("connect to the embedded Temporal server: %w", err)
	}
	s.workerMetrics.Registry.MustRegister(workermetrics.RolloutsCollector(s.Client))

	servicePassword := randomSecret()
	s.servicePassword = servicePassword
	if s.CA, err = pki.Open(filepath.Join(o.DataDir, "pki")); err != nil {
		return nil, err
	}
	tlsHost, _, _ := net.SplitHostPort(o.MQTTTLSAddr)
	serverTLS, err := s.CA.ServerTLS(uniq("127.0.0.1", "localhost", tlsHost, o.DeviceHost)...)
	if err != nil {
		return nil, err
	}
	s.brokerOpts = broker.Options{
		Addr: o.MQTTAddr, TLSAddr: o.MQTTTLSAddr, TLS: serverTLS,
		ServiceUser: cliconfig.DefaultMQTTServiceUser, ServicePassword: servicePassword,
		Logger: log.With().Str("component", "broker").Logger(),
	}
	s.Broker, err = broker.Start(s.brokerOpts)
	if err != nil {
		return nil, err
	}
	// A restart comes back on the same ports.
	s.brokerOpts.Addr = s.Broker.Addr()
	s.brokerOpts.TLSAddr = strings.TrimPrefix(s.Broker.TLSURL(), "ssl://")

	jlog := log.With().Str("component", "jobs").Logger()
	jobsOpts := localiot.Options{FleetIndexing: !o.NoFleetIndex, Path: filepath.Join(o.DataDir, "jobs.db"), PostgresURL: o.JobsPostgresURL, ArtifactDir: filepath.Join(o.DataDir, "artifacts"),
		Region: o.Region, Logger: jlog, NoAWSQuotas: o.NoAWSQuotas, CA: s.CA}
	s.Jobs, err = localiot.Open(jobsOpts)
	if err != nil {
		return nil, err
	}
	// The broker admits registered certificates as the registry says, and drops the devices of
	// one that is deactivated, revoked or detached.
	s.Jobs.ServeBroker(s.Broker)
	s.Jobs.OnCertificateChange(func(id string) {
		if n := s.Broker.DisconnectCertificate(id); n > 0 {
			jlog.Info().Str("certificate", id).Int("devices", n).Msg("disconnected the devices using a certificate that is no longer usable")
		}
	})
	planeOpts := mqttplane.Options{BrokerURL: s.Broker.URL(), Username: cliconfig.DefaultMQTTServiceUser, Password: servicePassword, Logger: jlog}
	if o.JobsReplicas > 1 {
		if o.JobsPostgresURL == "" {
			return nil, fmt.Errorf("jobs service replicas share a PostgreSQL database: give one (JobsPostgresURL)")
		}
		planeOpts.SharedGroup = "otaflow-jobs"
	} else {
		planeOpts.Inline = s.Broker // one plane beside its broker: in process, no connection
	}
	if s.mqtt, err = mqttplane.Serve(s.Jobs, planeOpts); err != nil {
		return nil, err
	}
	for i := 1; i < o.JobsReplicas; i++ {
		rlog := jlog.With().Int("replica", i).Logger()
		ro := jobsOpts // the same database and artifacts (Path is not used on PostgreSQL)
		ro.Logger = rlog
		svc, err := localiot.Open(ro)
		if err != nil {
			return nil, fmt.Errorf("jobs service replica %d: %w", i, err)
		}
		s.replicas = append(s.replicas, svc)
		po := planeOpts
		po.ClientID, po.Logger = fmt.Sprintf("otaflow-jobs-service-%d", i), rlog
		plane, err := mqttplane.Serve(svc, po)
		if err != nil {
			return nil, fmt.Errorf("jobs service replica %d: %w", i, err)
		}
		s.planes = append(s.planes, plane)
	}
	ln, err := net.Listen("tcp", o.JobsAddr)
	if err != nil {
		return nil, fmt.Errorf("jobs API cannot listen on %s: %w (choose another address with --jobs-addr)", o.JobsAddr, err)
	}
	s.JobsURL = "http://" + ln.Addr().String()
	s.Jobs.SetBaseURL(s.JobsURL)
	if o.DeviceHost != "" {
		// Presigned artifact URLs are for devices: they name the host devices reach.
		s.Jobs.SetBaseURL("http://" + net.JoinHostPort(o.DeviceHost, strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)))
	}
	s.IoT, err = iotclient.NewIoT(ctx, iotclient.Config{Endpoint: s.JobsURL, Region: o.Region, AccessKeyID: o.AccessKeyID, SecretAccessKey: o.SecretAccessKey})
	if err != nil {
		ln.Close()
		return nil, err
	}
	// The fleet console, beside the jobs API: on the loopback address of a local stack it
	// needs no password (like the Temporal dev server's UI); ConsolePassword sets one.
	s.ConsoleURL = s.JobsURL + "/console/"
	con := console.New(console.Options{
		Temporal: s.Client, IoT: s.IoT, TemporalUI: s.Temporal.UIURL(), Password: o.ConsolePassword, Logger: jlog,
		Users: s.Jobs, Audit: func(e localiot.AuditEntry) { s.Jobs.Audit(e) }, AuditLog: s.Jobs.AuditLog,
		ReleaseMetadataURL: rolloutops.MetadataURLs("", s.JobsURL), ReleaseBuckets: []string{ReleaseBucket},
		Shadows: &console.ShadowReader{Endpoint: s.JobsURL, Region: o.Region,
			Credentials: credentials.NewStaticCredentialsProvider(o.AccessKeyID, o.SecretAccessKey, "")},
	})
	top := http.NewServeMux()
	top.Handle("/console/", con.Handler("/console/"))
	// Prometheus metrics (loopback only, as the whole local stack is).
	metrics := prometheus.Gatherers{localiot.MetricsRegistry(s.Jobs, localiot.SessionsCollector(func() int64 { return s.Broker.Sessions() })), s.workerMetrics.Registry}
	top.Handle("GET /metrics", promhttp.HandlerFor(metrics, promhttp.HandlerOpts{}))
	top.Handle("/", rest.Handler(s.Jobs, &rest.SigV4Verifier{Creds: rest.Credentials{AccessKeyID: o.AccessKeyID, SecretAccessKey: o.SecretAccessKey}, Region: o.Region},
		append(rolloutapi.Routes(s.Client, contract.TaskQueue), rest.Route{Pattern: "POST /greengrass/updates", Action: "CreateSoftwareUpdateJob", Handler: &greengrass.Handler{
			Jobs: s.Jobs, Starter: rolloutclient.Starter{Client: s.Client, TaskQueue: contract.TaskQueue}, Log: jlog,
			Releases: greengrass.LocalReleases(s.Jobs, ReleaseBucket), ReleaseBucket: ReleaseBucket,
		}})...))
	srv, err := rest.NewServer(ln, hostCheck(top, o.DeviceHost), rest.ServerOptions{})
	if err != nil {
		return nil, err
	}
	s.httpSrv = srv.Server
	go srv.Serve()
	jlog.Info().Str("url", s.JobsURL).Str("console", s.ConsoleURL).Msg("jobs API and fleet console listening")
	if !o.NoWorker {
		if err := s.StartWorker(); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// hostCheck refuses a request whose Host names neither an IP address nor localhost: the dev
// stack answers without the production credentials' protection (a known key, a console
// without password), and a web page could otherwise reach it from the operator's browser by
// DNS rebinding (its own name resolved to 127.0.0.1). An IP literal cannot be rebound.
func hostCheck(next http.Handler, deviceHost string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host := r.Host
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		host = strings.TrimSuffix(strings.Trim(host, "[]"), ".")
		if net.ParseIP(host) == nil && !strings.EqualFold(host, "localhost") && !strings.HasSuffix(strings.ToLower(host), ".localhost") &&
			(deviceHost == "" || !strings.EqualFold(host, deviceHost)) {
			http.Error(w, fmt.Sprintf("host %q is not this development stack's address: use http://127.0.0.1 or http://localhost (requests under other names are refused, so that no web page can reach the stack by DNS rebinding)", r.Host), http.StatusMisdirectedRequest)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// StartWorker starts the in-process rollout worker (again, after StopWorker).
func (s *Stack) StartWorker() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.worker != nil {
		return nil
	}
	if err := rolloutworker.EnsureSearchAttributes(context.Background(), s.Client, s.Temporal.Namespace()); err != nil {
		return err
	}
	ops := &rolloutops.Ops{IoT: s.IoT, Catalog: s.Catalog, ReleaseMetadataURL: rolloutops.MetadataURLs("", s.JobsURL), WebhookSecret: s.WebhookSecret}
	w := rolloutworker.New(s.Client, contract.TaskQueue, ops)
	if err := w.Start(); err != nil {
		return fmt.Errorf("start rollout worker: %w", err)
	}
	s.worker = w
	rctx, stop := context.WithCancel(context.Background())
	s.stopReconciler = stop
	go (&rolloutworker.Reconciler{Client: s.Client, Ops: ops, Every: s.opts.ReconcileEvery, Log: s.opts.Logger}).Run(rctx)
	return nil
}

// StopWorker stops the in-process worker; running rollouts wait, durably, for one to return.
func (s *Stack) StopWorker() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.worker != nil {
		s.stopReconciler()
		s.worker.Stop()
		s.worker = nil
	}
}

// Device names a simulated device.
func Device(i int) string { return fmt.Sprintf("device-%04d", i) }

// StartDevices registers n things and starts a simulated device (an agent with its own
// MQTT connection, from internal/fleet) for each, all reporting initialVersion until updated.
// It returns their thing ARNs.
func (s *Stack) StartDevices(ctx context.Context, n int, initialVersion string, installTime time.Duration) ([]string, error) {
	return s.StartFleet(ctx, n, fleet.Options{InitialVersion: initialVersion, InstallTime: installTime})
}

// SetDeviceFaults scripts every later install of the simulated devices: those in fail fail
// before the switch, those in unhealthy fail their health check and roll back, the others
// succeed. It applies to every fleet the stack started.
func (s *Stack) SetDeviceFaults(fail, unhealthy []string) {
	faults := map[string]fleet.Fault{}
	for _, t := range fail {
		faults[t] = fleet.FaultFail
	}
	for _, t := range unhealthy {
		faults[t] = fleet.FaultUnhealthy
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, f := range s.fleets {
		f.SetFaults(faults)
	}
}

// StartFleet registers n more things and starts a fleet for them with o (its broker, things,
// state directory and installer are filled in). It returns their thing ARNs.
func (s *Stack) StartFleet(ctx context.Context, n int, o fleet.Options) ([]string, error) {
	if o.HealthInterval == 0 {
		o.HealthInterval = s.opts.DeviceHealthInterval
	}
	s.mu.Lock()
	first := s.devices + 1
	s.devices += n
	s.mu.Unlock()
	var arns []string
	o.Things = nil
	for i := first; i < first+n; i++ {
		name := Device(i)
		out, err := s.IoT.CreateThing(ctx, &iot.CreateThingInput{ThingName: aws.String(name)})
		if err != nil {
			return nil, fmt.Errorf("register thing %s: %w", name, err)
		}
		arns = append(arns, aws.ToString(out.ThingArn))
		o.Things = append(o.Things, name)
	}
	o.BrokerURL, o.StateDir = s.Broker.URL(), filepath.Join(s.opts.DataDir, "devices")
	if o.Installer == nil {
		o.Installer = s.DeviceInstaller
	}
	o.Logger = s.opts.Logger.Level(max(s.opts.Logger.GetLevel(), zerolog.WarnLevel))
	f, err := fleet.Start(o)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.fleets = append(s.fleets, f)
	s.mu.Unlock()
	return arns, nil
}

// Agents are the simulated devices' agents, in the order they were started.
func (s *Stack) Agents() []*agent.Agent {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*agent.Agent
	for _, f := range s.fleets {
		out = append(out, f.Agents()...)
	}
	return out
}

// StopBroker stops the MQTT broker, dropping every connection (fault tests).
func (s *Stack) StopBroker() { s.Broker.Close() }

// StartBroker starts the broker again on the same address; clients reconnect by themselves.
func (s *Stack) StartBroker() error {
	b, err := broker.Start(s.brokerOpts)
	if err != nil {
		return err
	}
	if s.Jobs != nil {
		s.Jobs.ServeBroker(b)
	}
	if s.mqtt != nil && s.mqtt.Inline() {
		if err := s.mqtt.UseInline(b); err != nil {
			b.Close()
			return err
		}
	}
	s.Broker = b
	return nil
}

// MQTTServiceCredentials are the broker credentials of the jobs service, which may publish on
// every thing's topics (benchmarks and fault tests use them).
func (s *Stack) MQTTServiceCredentials() (user, password string) {
	return cliconfig.DefaultMQTTServiceUser, s.servicePassword
}

// ArtifactStore is the jobs service's artifact store, with the stack's credentials.
func (s *Stack) ArtifactStore() release.Store {
	return release.Store{Endpoint: s.JobsURL, Region: s.opts.Region, AccessKeyID: s.opts.AccessKeyID, SecretAccessKey: s.opts.SecretAccessKey}
}

// Close stops everything, in reverse order.
func (s *Stack) Close() {
	s.mu.Lock()
	fleets := s.fleets
	s.fleets = nil
	s.mu.Unlock()
	for _, f := range fleets {
		f.Close()
	}
	s.StopWorker()
	if s.Client != nil {
		s.Client.Close()
	}
	if s.httpSrv != nil {
		s.httpSrv.Close()
	}
	if s.mqtt != nil {
		s.mqtt.Close()
	}
	for _, p := range s.planes {
		p.Close()
	}
	for _, r := range s.replicas {
		r.Close()
	}
	if s.Jobs != nil {
		s.Jobs.Close()
	}
	if s.Broker != nil {
		s.Broker.Close()
	}
	if s.Temporal != nil {
		s.Temporal.Stop()
	}
}

// uniq drops empty and repeated hosts.
func uniq(hosts ...string) []string {
	var out []string
	for _, h := range hosts {
		if ip := net.ParseIP(h); h == "" || (ip != nil && ip.IsUnspecified()) || slices.Contains(out, h) {
			continue
		}
		{
			out = append(out, h)
		}
	}
	return out
}

// loadOrCreateSecret reads a secret kept in path, making one (32 random bytes, hex) the first
// time.
func loadOrCreateSecret(path string) ([]byte, error) {
	if b, err := os.ReadFile(path); err == nil {
		return bytes.TrimSpace(b), nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	secret := []byte(randomSecret())
	if err := os.WriteFile(path, append(secret, '\n'), 0o600); err != nil {
		return nil, err
	}
	return secret, nil
}
