// Package devserver runs a complete Temporal server inside the process, persisting to a SQLite
// file (a restart keeps every workflow), with the Temporal web UI beside it. It is otaflow's
// embedded default; production uses a Temporal cluster or Temporal Cloud instead.
package devserver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	uiserver "github.com/temporalio/ui-server/v2/server"
	uiconfig "github.com/temporalio/ui-server/v2/server/config"
	uioptions "github.com/temporalio/ui-server/v2/server/server_options"
	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/server/common/authorization"
	"go.temporal.io/server/common/cluster"
	"go.temporal.io/server/common/config"
	"go.temporal.io/server/common/dynamicconfig"
	"go.temporal.io/server/common/log"
	"go.temporal.io/server/common/membership/static"
	"go.temporal.io/server/common/metrics"
	sqliteplugin "go.temporal.io/server/common/persistence/sql/sqlplugin/sqlite"
	"go.temporal.io/server/common/primitives"
	sqliteschema "go.temporal.io/server/schema/sqlite"
	"go.temporal.io/server/temporal"

	"github.com/otaflow/otaflow/internal/tlog"
)

// Options configure the embedded server.
type Options struct {
	// DBPath is the SQLite file; empty keeps everything in memory (tests).
	DBPath string
	// IP to bind, default 127.0.0.1.
	IP string
	// FrontendPort is the gRPC port clients and workers use (default 7233; 0 picks a free one).
	FrontendPort int
	// UIPort is the web UI's port (default 8233; 0 picks a free one; -1 disables the UI).
	UIPort int
	// Namespace to create, default "default".
	Namespace string
	// SearchAttributes are registered on the namespace when it is created.
	SearchAttributes map[string]enumspb.IndexedValueType
	// DynamicConfig overrides server settings by their dynamic-config name, e.g.
	// "limit.historyCount.suggestContinueAsNew" (tests make rare paths common with it).
	DynamicConfig map[string]any
	// Postgres, when set, keeps Temporal's state in PostgreSQL instead of SQLite (DBPath is
	// then not used).
	Postgres *Postgres
	Logger   zerolog.Logger
}

// Server is a running embedded Temporal server.
type Server struct {
	srv          temporal.Server
	ui           *uiserver.Server
	frontendAddr string
	uiURL        string
	namespace    string
	stopping     *atomic.Bool
	fatals       chan string
}

// Failed receives the first fatal error of the running server: it no longer works and should
// be stopped. The process goes on (see serverLogger.Fatal).
func (s *Server) Failed() <-chan string { return s.fatals }

// FrontendAddr is the host:port clients dial.
func (s *Server) FrontendAddr() string { return s.frontendAddr }

// UIURL is the web UI's address, empty when disabled.
func (s *Server) UIURL() string { return s.uiURL }

// Namespace is the namespace the server was started with.
func (s *Server) Namespace() string { return s.namespace }

// Start starts the server and waits until it answers.
func Start(ctx context.Context, o Options) (*Server, error) {
	if o.IP == "" {
		o.IP = "127.0.0.1"
	}
	if o.Namespace == "" {
		o.Namespace = "default"
	}
	fport, err := claimPort(o.IP, o.FrontendPort, "--temporal-port")
	if err != nil {
		return nil, err
	}
	uiPort := o.UIPort
	if uiPort >= 0 {
		if uiPort, err = claimPort(o.IP, uiPort, "--ui-port"); err != nil {
			return nil, err
		}
	}

	var sqlCfg, visCfg *config.SQL
	if o.Postgres != nil {
		if sqlCfg, visCfg, err = setupPostgres(o.Postgres, log.NewNoopLogger()); err != nil {
			return nil, err
		}
	} else if sqlCfg, err = setupSQLite(o); err != nil {
		return nil, err
	}

	var srv temporal.Server
	var hosts map[primitives.ServiceName]static.Hosts
	var cfg *config.Config
	stopping, running := new(atomic.Bool), new(atomic.Bool)
	fatals := make(chan string, 1)
	// A port reserved for an internal service can still be taken by a process that binds
	// it by number; the server then fails to listen. That is retried on other ports a few
	// times, never turned into a process exit.
	for attempt := 1; ; attempt++ {
		if hosts, err = internalHosts(o.IP, fport); err != nil {
			return nil, err
		}
		cfg = serverConfig(o.IP, hosts, sqlCfg, visCfg)
		srv, err = newServer(cfg, hosts, o.DynamicConfig, newLogger(o.Logger, stopping, running, fatals))
		if err == nil || !errors.Is(err, errFatal) || attempt == 3 {
			break
		}
		o.Logger.Warn().Err(err).Int("attempt", attempt).Msg("Temporal server could not start; retrying on other internal ports")
	}
	if err != nil {
		return nil, err
	}
	running.Store(true)
	s := &Server{srv: srv, frontendAddr: net.JoinHostPort(o.IP, fmt.Sprint(fport)), namespace: o.Namespace, stopping: stopping, fatals: fatals}
	if err := s.waitReady(ctx); err != nil {
		s.Stop()
		return nil, err
	}
	if o.Postgres != nil {
		if err := s.registerNamespace(ctx, o); err != nil {
			s.Stop()
			return nil, err
		}
	}
	if uiPort >= 0 {
		s.ui = uiserver.NewServer(uioptions.WithConfigProvider(&uiconfig.Config{
			TemporalGRPCAddress: s.frontendAddr,
			Host:                o.IP,
			Port:                uiPort,
			EnableUI:            true,
			DefaultNamespace:    o.Namespace,
			DisableNewsFetch:    true, // there may be no internet; the UI must not wait for it
			HideLogs:            true,
			CORS:                uiconfig.CORS{CookieInsecure: true},
		}))
		go s.ui.Start()
		s.uiURL = fmt.Sprintf("http://%s", net.JoinHostPort(o.IP, fmt.Sprint(uiPort)))
		if err := waitHTTP(ctx, s.uiURL); err != nil {
			s.Stop()
			return nil, fmt.Errorf("temporal web UI did not come up on %s: %w", s.uiURL, err)
		}
	}
	o.Logger.Info().Str("frontend", s.frontendAddr).Str("ui", s.uiURL).Str("db", o.DBPath).Msg("Temporal server ready")
	return s, nil
}

var serviceNames = []primitives.ServiceName{primitives.FrontendService, primitives.HistoryService, primitives.MatchingService, primitives.WorkerService}

// internalHosts gives each service its address: the frontend on its port, the others on
// reserved ports. The server resolves its services from this static list instead of
// ringpop membership, so there are no membership ports to pick, and a restart on new ports
// does not wait for the old members recorded in the database to expire.
func internalHosts(ip string, frontendPort int) (map[primitives.ServiceName]static.Hosts, error) {
	hosts := map[primitives.ServiceName]static.Hosts{}
	for _, name := range serviceNames {
		port := frontendPort
		if name != primitives.FrontendService {
			var err error
			if port, err = reserve(ip); err != nil {
				return nil, err
			}
		}
		hosts[name] = static.SingleLocalHost(net.JoinHostPort(ip, fmt.Sprint(port)))
	}
	return hosts, nil
}

func hostPort(h static.Hosts) int {
	_, p, _ := net.SplitHostPort(h.Self)
	n, _ := strconv.Atoi(p)
	return n
}

// errFatal is a fatal log of the server while it starts: the server cannot run, but the
// process that embeds it must not exit.
var errFatal = errors.New("temporal server failed to start")

// newServer creates the server, turning a fatal log during its construction into an error.
func newServer(cfg *config.Config, hosts map[primitives.ServiceName]static.Hosts, overrides map[string]any, logger log.Logger) (srv temporal.Server, err error) {
	dc := dynamicconfig.StaticClient{dynamicconfig.ForceSearchAttributesCacheRefreshOnRead.Key(): true}
	for k, v := range overrides {
		dc[dynamicconfig.MakeKey(k)] = v
	}
	authorizer, err := authorization.GetAuthorizerFromConfig(&cfg.Global.Authorization)
	if err != nil {
		return nil, err
	}
	claimMapper, err := authorization.GetClaimMapperFromConfig(&cfg.Global.Authorization, nil)
	if err != nil {
		return nil, err
	}
	defer func() {
		if r := recover(); r != nil {
			f, ok := r.(fatal)
			if !ok {
				panic(r)
			}
			srv, err = nil, fmt.Errorf("%w: %s", errFatal, string(f))
		}
	}()
	srv, err = temporal.NewServer(
		temporal.WithConfig(cfg),
		temporal.ForServices(temporal.DefaultServices),
		temporal.WithStaticHosts(hosts),
		temporal.WithLogger(logger),
		temporal.WithAuthorizer(authorizer),
		temporal.WithClaimMapper(func(*config.Config) authorization.ClaimMapper { return claimMapper }),
		temporal.WithCustomMetricsHandler(metrics.NoopMetricsHandler),
		temporal.WithDynamicConfigClient(dc),
	)
	if err != nil {
		return nil, fmt.Errorf("create Temporal server: %w", err)
	}
	if err := srv.Start(); err != nil {
		return nil, fmt.Errorf("start Temporal server: %w", err)
	}
	return srv, nil
}

// serverConfig is the server's configuration: one SQL store for everything, or (visCfg set)
// separate persistence and visibility databases.
func serverConfig(ip string, hosts map[primitives.ServiceName]static.Hosts, sqlCfg, visCfg *config.SQL) *config.Config {
	persistence := config.Persistence{DefaultStore: "default", VisibilityStore: "default", NumHistoryShards: 1,
		DataStores: map[string]config.DataStore{"default": {SQL: sqlCfg}}}
	if visCfg != nil {
		persistence.VisibilityStore = "visibility"
		persistence.DataStores["visibility"] = config.DataStore{SQL: visCfg}
		persistence.NumHistoryShards = 4
	}
	services := map[string]config.Service{}
	for _, name := range serviceNames {
		services[string(name)] = config.Service{RPC: config.RPC{GRPCPort: hostPort(hosts[name]), BindOnIP: ip}}
	}
	frontend := hosts[primitives.FrontendService].Self
	return &config.Config{
		Global: config.Global{
			Membership: config.Membership{BroadcastAddress: ip},
		},
		Persistence: persistence,
		ClusterMetadata: &cluster.Config{
			EnableGlobalNamespace:    false,
			FailoverVersionIncrement: 10,
			MasterClusterName:        "active",
			CurrentClusterName:       "active",
			ClusterInformation: map[string]cluster.ClusterInformation{
				"active": {Enabled: true, InitialFailoverVersion: 1, RPCAddress: frontend},
			},
		},
		DCRedirectionPolicy: config.DCRedirectionPolicy{Policy: "noop"},
		Services:            services,
		Archival: config.Archival{
			History:    config.HistoryArchival{State: "disabled"},
			Visibility: config.VisibilityArchival{State: "disabled"},
		},
		NamespaceDefaults: config.NamespaceDefaults{Archival: config.ArchivalNamespaceDefaults{
			History:    config.HistoryArchivalNamespaceDefaults{State: "disabled"},
			Visibility: config.VisibilityArchivalNamespaceDefaults{State: "disabled"},
		}},
		PublicClient: config.PublicClient{HostPort: frontend},
	}
}

// waitReady dials the frontend until it answers a health check.
func (s *Server) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	for {
		c, err := client.Dial(client.Options{HostPort: s.frontendAddr, Namespace: s.namespace, Logger: tlog.New(zerolog.Nop())})
		if err == nil {
			_, err = c.CheckHealth(ctx, &client.CheckHealthRequest{})
			c.Close()
			if err == nil {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("temporal server on %s did not become ready: %w", s.frontendAddr, err)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func waitHTTP(ctx context.Context, url string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url+"/healthz", nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			return nil
		}
		select {
		case <-ctx.Done():
			return errors.Join(ctx.Err(), err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Stop stops the UI and the server.
func (s *Server) Stop() {
	if s.ui != nil {
		s.ui.Stop()
	}
	s.stopping.Store(true)
	s.srv.Stop()
}

// setupSQLite is the persistence of the embedded default: a SQLite file (or memory), its
// schema and namespace written before the server starts.
func setupSQLite(o Options) (*config.SQL, error) {
	sqlCfg := &config.SQL{PluginName: sqliteplugin.PluginName, ConnectAttributes: map[string]string{}}
	if o.DBPath == "" {
		sqlCfg.DatabaseName = fmt.Sprintf("otaflow-%d", time.Now().UnixNano())
		sqlCfg.ConnectAttributes["mode"] = "memory"
		sqlCfg.ConnectAttributes["cache"] = "shared"
	} else {
		if err := os.MkdirAll(filepath.Dir(o.DBPath), 0o755); err != nil {
			return nil, fmt.Errorf("temporal data dir: %w", err)
		}
		sqlCfg.DatabaseName = o.DBPath
		sqlCfg.ConnectAttributes["mode"] = "rwc"
		sqlCfg.ConnectAttributes["_journal_mode"] = "wal"
	}
	fresh := true
	if o.DBPath != "" {
		if _, err := os.Stat(o.DBPath); err == nil {
			fresh = false
		}
	}
	if fresh && o.DBPath != "" {
		if err := sqliteschema.SetupSchema(sqlCfg); err != nil {
			return nil, fmt.Errorf("create Temporal schema in %s: %w", o.DBPath, err)
		}
	}
	ns, err := sqliteschema.NewNamespaceConfig("active", o.Namespace, false, o.SearchAttributes)
	if err != nil {
		return nil, fmt.Errorf("namespace config: %w", err)
	}
	if err := sqliteschema.CreateNamespaces(sqlCfg, ns); err != nil {
		return nil, fmt.Errorf("create namespace %s: %w", o.Namespace, err)
	}

	return sqlCfg, nil
}
