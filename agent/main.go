// Command agent is the otaflow device agent: run it as a system service on each device. It
// takes otaflow update jobs over the AWS IoT Jobs MQTT API, applies them one at a time and
// reports the outcome. Configure it with a config file (--config, JSON or YAML), flags or
// OTAFLOW_AGENT_* environment variables; flags win over the environment, which wins over the
// file.
package main

import (
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/pflag"

	"github.com/otaflow/otaflow/internal/agent"
	"github.com/otaflow/otaflow/internal/agent/preflight"
	"github.com/otaflow/otaflow/internal/cliconfig"
)

// version is this agent's version, set at build time with -ldflags "-X main.version=…".
var version = "0.1.0"

func main() { os.Exit(run(os.Args[1:], os.Stderr)) }

// settings is everything the command line, environment and config file say.
type settings struct {
	cfg     agent.Config
	slots   agent.SlotInstaller
	log     agent.LogOutput
	probe   bool
	showVer bool
}

// pick returns the environment variable's value, else the file's, else the default.
func pick(envName, file, def string) string {
	if v := os.Getenv(envName); v != "" {
		return v
	}
	if file != "" {
		return file
	}
	return def
}

// configPath finds --config before the other flags are defined, since the file supplies
// their defaults.
func configPath(args []string) string {
	fs := pflag.NewFlagSet("pre", pflag.ContinueOnError)
	fs.ParseErrorsAllowlist.UnknownFlags = true
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	p := fs.String("config", os.Getenv("OTAFLOW_AGENT_CONFIG"), "")
	fs.Parse(args)
	return *p
}

func parse(args []string, stderr io.Writer) (*settings, error) {
	var fc agent.FileConfig
	if p := configPath(args); p != "" {
		var err error
		if fc, err = agent.LoadFile(p); err != nil {
			return nil, err
		}
	}
	s := &settings{}
	cfg := &s.cfg
	var publicKey, restart, maxDeferral, handover, ipc, stepTimeout string
	var managed bool
	fs := pflag.NewFlagSet("agent", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.String("config", "", "configuration file, JSON or YAML (see README.md) [OTAFLOW_AGENT_CONFIG]")
	fs.BoolVar(&s.showVer, "version", false, "print the agent's version and exit")
	fs.StringVar(&cfg.ThingName, "thing-name", pick("OTAFLOW_AGENT_THING_NAME", fc.ThingName, ""), "this device's thing name, also its MQTT client ID [OTAFLOW_AGENT_THING_NAME]")
	fs.StringVar(&cfg.BrokerURL, "broker", pick("OTAFLOW_AGENT_BROKER", fc.Broker, "tcp://"+cliconfig.DefaultMQTTAddr), "MQTT broker URL; ssl://<endpoint>:8883 or :443 for AWS IoT Core [OTAFLOW_AGENT_BROKER]")
	fs.StringVar(&cfg.Username, "username", pick("OTAFLOW_AGENT_USERNAME", fc.Username, ""), "MQTT user name, if the broker wants one [OTAFLOW_AGENT_USERNAME]")
	fs.StringVar(&cfg.Password, "password", pick("OTAFLOW_AGENT_PASSWORD", fc.Password, ""), "MQTT password [OTAFLOW_AGENT_PASSWORD]")
	var tlsFiles agent.TLSFiles
	fs.StringVar(&tlsFiles.CAFile, "ca", pick("OTAFLOW_AGENT_CA", fc.TLS.CAFile, ""), "CA certificate that signed the broker's (AWS: AmazonRootCA1.pem) [OTAFLOW_AGENT_CA]")
	fs.StringVar(&tlsFiles.CertFile, "cert", pick("OTAFLOW_AGENT_CERT", fc.TLS.CertFile, ""), "device certificate for mutual TLS [OTAFLOW_AGENT_CERT]")
	fs.StringVar(&tlsFiles.KeyFile, "key", pick("OTAFLOW_AGENT_KEY", fc.TLS.KeyFile, ""), "device private key for mutual TLS [OTAFLOW_AGENT_KEY]")
	fs.BoolVar(&tlsFiles.ALPN, "alpn", pick("OTAFLOW_AGENT_ALPN", fmt.Sprint(fc.TLS.ALPN), "false") == "true", "offer ALPN x-amzn-mqtt-ca, for AWS IoT Core on port 443 [OTAFLOW_AGENT_ALPN]")
	fs.StringVar(&cfg.StateDir, "state-dir", pick("OTAFLOW_AGENT_STATE_DIR", fc.StateDir, "/var/lib/otaflow-agent"), "where the agent keeps its state [OTAFLOW_AGENT_STATE_DIR]")
	fs.StringVar(&cfg.InitialVersion, "initial-version", pick("OTAFLOW_AGENT_INITIAL_VERSION", fc.InitialVersion, ""), "core version to report before the first update [OTAFLOW_AGENT_INITIAL_VERSION]")
	fs.StringVar(&s.log.Level, "log-level", pick("OTAFLOW_AGENT_LOG_LEVEL", fc.LogLevel, "info"), "log level: trace, debug, info, warn, error; a job's updateAgentLogLevel applies while it runs [OTAFLOW_AGENT_LOG_LEVEL]")
	fs.StringVar(&s.log.File, "log-file", pick("OTAFLOW_AGENT_LOG_FILE", fc.LogFile, ""), "also log to this file (JSON lines), rotated and gzipped [OTAFLOW_AGENT_LOG_FILE]")
	fs.IntVar(&s.log.MaxSizeMB, "log-max-size-mb", fc.LogMaxSizeMB, "rotate the log file at this size (default 10)")
	fs.IntVar(&s.log.MaxBackups, "log-max-backups", fc.LogMaxBackups, "rotated log files to keep (default 5)")
	fs.StringVar(&s.slots.Root, "install-root", pick("OTAFLOW_AGENT_INSTALL_ROOT", fc.InstallRoot, "/var/lib/otaflow"), "where versions are installed side by side, one slot each [OTAFLOW_AGENT_INSTALL_ROOT]")
	fs.StringVar(&publicKey, "public-key", pick("OTAFLOW_AGENT_PUBLIC_KEY", fc.PublicKey, ""), "the fleet's ed25519 public key (hex, or a file holding it) that signs artifacts [OTAFLOW_AGENT_PUBLIC_KEY]")
	fs.BoolVar(&managed, "managed-respawn", pick("OTAFLOW_AGENT_MANAGED_RESPAWN", fmt.Sprint(fc.ManagedRespawn), "false") == "true", "run {ggc,ota}_{pre,post}_update.sh from --scripts-dir around updates [OTAFLOW_AGENT_MANAGED_RESPAWN]")
	fs.StringVar(&s.slots.ScriptsDir, "scripts-dir", pick("OTAFLOW_AGENT_SCRIPTS_DIR", fc.ScriptsDir, "/greengrass/usr/scripts"), "managedRespawn scripts directory [OTAFLOW_AGENT_SCRIPTS_DIR]")
	fs.StringVar(&restart, "restart-command", pick("OTAFLOW_AGENT_RESTART_COMMAND", fc.RestartCommand, ""), "command that restarts the managed software after a switch, e.g. 'systemctl restart greengrass' [OTAFLOW_AGENT_RESTART_COMMAND]")
	fs.Float64Var(&s.slots.FreeDiskFactor, "free-disk-factor", fc.FreeDiskFactor, "free disk needed, as a multiple of the artifact size (default 3)")
	fs.StringVar(&ipc, "ipc-socket", pick("OTAFLOW_AGENT_IPC_SOCKET", fc.IPCSocket, ""), "unix socket where local components may defer updates (default <state-dir>/agent.sock; \"off\" disables) [OTAFLOW_AGENT_IPC_SOCKET]")
	fs.StringVar(&maxDeferral, "max-deferral", pick("OTAFLOW_AGENT_MAX_DEFERRAL", fc.MaxDeferral, "1h"), "longest time components may defer one update [OTAFLOW_AGENT_MAX_DEFERRAL]")
	fs.StringVar(&handover, "handover-timeout", pick("OTAFLOW_AGENT_HANDOVER_TIMEOUT", fc.HandoverTimeout, "1m"), "how long a new agent has to show it works on self-update [OTAFLOW_AGENT_HANDOVER_TIMEOUT]")
	fs.StringVar(&stepTimeout, "step-timeout", pick("OTAFLOW_AGENT_STEP_TIMEOUT", fc.StepTimeout, "30m"), "a step that shows no progress this long times the job out (sent as stepTimeoutInMinutes; 0 disables) [OTAFLOW_AGENT_STEP_TIMEOUT]")
	fs.Int64Var(&s.slots.DownloadBytesPerSecond, "download-bytes-per-second", fc.DownloadBytesPerSecond, "cap the artifact download bandwidth (0: no cap)")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if s.showVer {
		return s, nil
	}
	var err error
	if cfg.MaxDeferral, err = time.ParseDuration(maxDeferral); err != nil {
		return nil, fmt.Errorf("--max-deferral: %w", err)
	}
	if cfg.StepTimeout, err = time.ParseDuration(stepTimeout); err != nil {
		return nil, fmt.Errorf("--step-timeout: %w", err)
	}
	if cfg.HandoverTimeout, err = time.ParseDuration(handover); err != nil {
		return nil, fmt.Errorf("--handover-timeout: %w", err)
	}
	switch ipc {
	case "off":
	case "":
		cfg.IPCSocket = filepath.Join(cfg.StateDir, "agent.sock")
	default:
		cfg.IPCSocket = ipc
	}
	if tlsFiles.Enabled() {
		if cfg.TLS, err = tlsFiles.Config(); err != nil {
			return nil, err
		}
		if strings.HasPrefix(cfg.BrokerURL, "tcp://") {
			return nil, fmt.Errorf("--cert/--key are set but --broker %s is plain TCP: use ssl://<endpoint>:8883 (or :443 with --alpn)", cfg.BrokerURL)
		}
	}
	s.slots.ManagedRespawn = managed
	if s.slots.Root == "" {
		return nil, fmt.Errorf("--install-root is empty: the agent installs into slots under it (default /var/lib/otaflow)")
	}
	if s.slots.PublicKey, err = readPublicKey(publicKey); err != nil {
		return nil, err
	}
	s.slots.Restart = strings.Fields(restart)
	cfg.Installer = &s.slots
	cfg.AgentVersion = version
	if ready, ok := agent.ProbeReady(); ok {
		cfg.ProbeReady, s.probe = ready, true
	}
	return s, nil
}

func run(args []string, stderr io.Writer) int {
	s, err := parse(args, stderr)
	if errors.Is(err, pflag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "agent:", err)
		return 2
	}
	if s.showVer {
		fmt.Fprintln(os.Stdout, version)
		return 0
	}
	cfg := s.cfg
	s.log.Stderr = stderr
	if s.probe {
		s.log.File = "" // the running agent owns the log file
	}
	log, closeLog, err := s.log.Open()
	if err != nil {
		fmt.Fprintln(stderr, "agent:", err)
		return 2
	}
	defer closeLog()
	cfg.Logger = log
	if !s.probe {
		// One agent per device: two would process the same jobs (seed v1). A probe runs
		// while the agent that started it holds the lock.
		os.MkdirAll(cfg.StateDir, 0o755)
		release, err := preflight.Lock(filepath.Join(cfg.StateDir, "agent.lock"))
		if err != nil {
			fmt.Fprintln(stderr, "agent:", err)
			return 2
		}
		defer release()
	}
	cliconfig.Describe(log, "agent", map[string]string{
		"version": version, "thingName": cfg.ThingName, "broker": cfg.BrokerURL, "username": cfg.Username, "password": cfg.Password,
		"stateDir": cfg.StateDir, "installRoot": s.slots.Root, "ipcSocket": cfg.IPCSocket, "logFile": s.log.File,
	})
	a, err := agent.New(cfg)
	if err != nil {
		fmt.Fprintln(stderr, "agent:", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if s.probe {
		ctx, stop = context.WithTimeout(ctx, cfg.HandoverTimeout)
		defer stop()
	}
	log.Info().Str("thing", cfg.ThingName).Str("core", a.InstalledVersion("core")).Str("agent", version).Bool("probe", s.probe).Msg("agent started; waiting for update jobs")
	if err := a.Run(ctx); err != nil {
		fmt.Fprintln(stderr, "agent:", err)
		return 1
	}
	return 0
}

// readPublicKey takes a hex key, or a file that holds one.
func readPublicKey(v string) (ed25519.PublicKey, error) {
	if v == "" {
		return nil, fmt.Errorf("--public-key is required with --install-root: artifacts are installed only if signed by the fleet key")
	}
	if raw, err := os.ReadFile(v); err == nil {
		v = strings.TrimSpace(string(raw))
	}
	key, err := hex.DecodeString(v)
	if err != nil || len(key) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("--public-key must be a %d-byte ed25519 public key in hex", ed25519.PublicKeySize)
	}
	return ed25519.PublicKey(key), nil
}
