// Package devserver runs a complete Temporal server inside the process, persisting to a SQLite
// file (a restart keeps every workflow), with the Temporal web UI beside it. It is otaflow's
// embedded default; production uses a Temporal cluster or Temporal Cloud instead.
package devserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
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
	"go.temporal.io/server/common/metrics"
	sqliteplugin "go.temporal.io/server/common/persistence/sql/sqlplugin/sqlite"
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
	Logger           zerolog.Logger
}

// Server is a running embedded Temporal server.
type Server struct {
	srv          temporal.Server
	ui           *uiserver.Server
	frontendAddr string
	uiURL        string
	namespace    string
	stopping     *atomic.Bool
}

// FrontendAddr is the host:port clients dial.
func (s *Server) FrontendAddr() string { return s.frontendAddr }

// UIURL is the web UI's address, empty when disabled.
func (s *Server) UIURL() string { return s.uiURL }

// Namespace is the namespace the server was started with.
func (s *Server) Namespace() string { return s.namespace }

// freePort asks the kernel for an unused port.
func freePort(ip string) (int, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// claimPort returns port, or a free one when port is 0, failing clearly when it is taken.
func claimPort(ip string, port int, flag string) (int, error) {
	if port == 0 {
		return freePort(ip)
	}
	l, err := net.Listen("tcp", net.JoinHostPort(ip, fmt.Sprint(port)))
	if err != nil {
		return 0, fmt.Errorf("port %d on %s is not free (%v); pick another with %s", port, ip, err, flag)
	}
	l.Close()
	return port, nil
}

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

	ports, err := internalPorts(o.IP, o.DBPath)
	if err != nil {
		return nil, err
	}
	cfg := serverConfig(o.IP, fport, ports, sqlCfg)
	if err != nil {
		return nil, err
	}
	authorizer, err := authorization.GetAuthorizerFromConfig(&cfg.Global.Authorization)
	if err != nil {
		return nil, err
	}
	claimMapper, err := authorization.GetClaimMapperFromConfig(&cfg.Global.Authorization, nil)
	if err != nil {
		return nil, err
	}
	stopping := new(atomic.Bool)
	srv, err := temporal.NewServer(
		temporal.WithConfig(cfg),
		temporal.ForServices(temporal.DefaultServices),
		temporal.WithLogger(newLogger(o.Logger, stopping)),
		temporal.WithAuthorizer(authorizer),
		temporal.WithClaimMapper(func(*config.Config) authorization.ClaimMapper { return claimMapper }),
		temporal.WithCustomMetricsHandler(metrics.NoopMetricsHandler),
		temporal.WithDynamicConfigClient(dynamicconfig.StaticClient{
			dynamicconfig.ForceSearchAttributesCacheRefreshOnRead.Key(): true,
		}),
	)
	if err != nil {
		return nil, fmt.Errorf("create Temporal server: %w", err)
	}
	if err := srv.Start(); err != nil {
		return nil, fmt.Errorf("start Temporal server: %w", err)
	}
	s := &Server{srv: srv, frontendAddr: net.JoinHostPort(o.IP, fmt.Sprint(fport)), namespace: o.Namespace, stopping: stopping}
	if err := s.waitReady(ctx); err != nil {
		s.Stop()
		return nil, err
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

// servicePorts are the ports of the server's internal services.
type servicePorts struct {
	GRPC       map[string]int `json:"grpc"`
	Membership map[string]int `json:"membership"`
}

var serviceNames = []string{"frontend", "history", "matching", "worker"}

// internalPorts picks ports for the internal services. With a database file they are kept in
// a file beside it and reused on restart: the database remembers the cluster's members by
// address, and a restarted server on new ports would wait for the old members to expire.
func internalPorts(ip, dbPath string) (servicePorts, error) {
	var p servicePorts
	path := ""
	if dbPath != "" {
		path = dbPath + ".ports.json"
		if raw, err := os.ReadFile(path); err == nil && json.Unmarshal(raw, &p) == nil && portsFree(ip, p) {
			return p, nil
		}
	}
	p = servicePorts{GRPC: map[string]int{}, Membership: map[string]int{}}
	for _, name := range serviceNames {
		var err error
		if name != "frontend" {
			if p.GRPC[name], err = freePort(ip); err != nil {
				return p, err
			}
		}
		if p.Membership[name], err = freePort(ip); err != nil {
			return p, err
		}
	}
	if path != "" {
		raw, _ := json.Marshal(p)
		if err := os.WriteFile(path, raw, 0o644); err != nil {
			return p, fmt.Errorf("record Temporal's ports: %w", err)
		}
	}
	return p, nil
}

func portsFree(ip string, p servicePorts) bool {
	for _, name := range serviceNames {
		for _, port := range []int{p.GRPC[name], p.Membership[name]} {
			if name == "frontend" && port == p.GRPC[name] {
				continue
			}
			if port == 0 {
				return false
			}
			if _, err := claimPort(ip, port, ""); err != nil {
				return false
			}
		}
	}
	return true
}

func serverConfig(ip string, frontendPort int, ports servicePorts, sqlCfg *config.SQL) *config.Config {
	services := map[string]config.Service{}
	for _, name := range serviceNames {
		grpc := ports.GRPC[name]
		if name == "frontend" {
			grpc = frontendPort
		}
		services[name] = config.Service{RPC: config.RPC{GRPCPort: grpc, MembershipPort: ports.Membership[name], BindOnIP: ip}}
	}
	frontend := net.JoinHostPort(ip, fmt.Sprint(frontendPort))
	return &config.Config{
		Global: config.Global{
			Membership: config.Membership{MaxJoinDuration: 30 * time.Second, BroadcastAddress: ip},
		},
		Persistence: config.Persistence{
			DefaultStore:     sqliteplugin.PluginName,
			VisibilityStore:  sqliteplugin.PluginName,
			NumHistoryShards: 1,
			DataStores:       map[string]config.DataStore{sqliteplugin.PluginName: {SQL: sqlCfg}},
		},
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
