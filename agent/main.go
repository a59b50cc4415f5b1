// Command agent is the otaflow device agent: run it as a system service on each device. It
// takes otaflow update jobs over the AWS IoT Jobs MQTT API, applies them one at a time and
// reports the outcome. Configure it with a config file (--config, JSON or YAML), flags or
// OTAFLOW_AGENT_* environment variables; flags win over the environment, which wins over the
// file.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
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
	"github.com/otaflow/otaflow/internal/platform"
	"github.com/otaflow/otaflow/internal/tuf"
)

// version is this agent's version, set at build time with -ldflags "-X main.version=…".
var version = "0.1.0"

func main() { os.Exit(run(os.Args[1:], os.Stderr)) }

// settings is everything the command line, environment and config file say.
type settings struct {
	cfg agent.Config
	// claim, when set, provisions the device's identity on its first start.
	claim   *agent.Claim
	slots   agent.SlotInstaller
	log     agent.LogOutput
	probe   bool
	showVer bool
}

func parse(args []string, stderr io.Writer) (*settings, error) {
	s := &settings{}
	cfg := &s.cfg
	var trustedRoot, tufURL, restart, rebootCmd, maxDeferral, handover, ipc, stepTimeout, configFile string
	var managed bool
	var tlsFiles, claimFiles agent.TLSFiles
	var claimTemplate string
	var claimParams []string
	detected := platform.Detect()
	// Defaults are constants: the environment and the config file are applied after parsing,
	// so --help never shows a password or key from them.
	fs := pflag.NewFlagSet("agent", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&configFile, "config", "", "configuration file, JSON or YAML (deploy/agent/agent.yaml lists every key)")
	fs.BoolVar(&s.showVer, "version", false, "print the agent's version and exit")
	fs.StringVar(&cfg.ThingName, "thing-name", "", "this device's thing name, also its MQTT client ID")
	fs.StringVar(&cfg.BrokerURL, "broker", "tcp://"+cliconfig.DefaultMQTTAddr, "MQTT broker URL; ssl://<endpoint>:8883 or :443 for AWS IoT Core")
	fs.StringVar(&cfg.Username, "username", "", "MQTT user name, if the broker wants one")
	fs.StringVar(&cfg.Password, "password", "", "MQTT password")
	fs.StringVar(&tlsFiles.CAFile, "ca", "", "CA certificate that signed the broker's (AWS: AmazonRootCA1.pem)")
	fs.StringVar(&tlsFiles.CertFile, "cert", "", "device certificate for mutual TLS")
	fs.StringVar(&tlsFiles.KeyFile, "key", "", "device private key for mutual TLS")
	fs.BoolVar(&tlsFiles.ALPN, "alpn", false, "offer ALPN x-amzn-mqtt-ca, for AWS IoT Core on port 443")
	fs.StringVar(&claimFiles.CertFile, "claim-cert", "", "fleet provisioning: a claim certificate, with which the device provisions its own identity on first start (instead of --cert, --key and --thing-name)")
	fs.StringVar(&claimFiles.KeyFile, "claim-key", "", "fleet provisioning: the claim certificate's private key")
	fs.StringVar(&claimTemplate, "provisioning-template", "", "fleet provisioning: the provisioning template the device provisions itself from")
	fs.StringArrayVar(&claimParams, "provisioning-parameter", nil, "fleet provisioning: NAME=VALUE for the template's parameters (repeat), e.g. SerialNumber=$(cat /etc/serial)")
	fs.StringVar(&cfg.StateDir, "state-dir", "/var/lib/otaflow-agent", "where the agent keeps its state")
	fs.StringVar(&cfg.InitialVersion, "initial-version", "", "core version to report before the first update")
	fs.StringVar(&s.log.Level, "log-level", "info", "log level: trace, debug, info, warn, error; a job's updateAgentLogLevel applies while it runs")
	fs.StringVar(&s.log.File, "log-file", "", "also log to this file (JSON lines), rotated and gzipped")
	fs.IntVar(&s.log.MaxSizeMB, "log-max-size-mb", 0, "rotate the log file at this size (default 10)")
	fs.IntVar(&s.log.MaxBackups, "log-max-backups", 0, "rotated log files to keep (default 5)")
	fs.StringVar(&s.slots.Root, "install-root", "/var/lib/otaflow", "where versions are installed side by side, one slot each")
	fs.StringVar(&trustedRoot, "trusted-root", "", "the release repository's root.json this device trusts (`starter release root`; required): every update is verified through TUF")
	fs.StringVar(&tufURL, "tuf-url", "", "where the release repository's metadata is served, e.g. http://jobs:4566/tuf/otaflow-releases/ (required)")
	fs.BoolVar(&managed, "managed-respawn", false, "run {ggc,ota}_{pre,post}_update.sh from --scripts-dir around updates")
	fs.StringVar(&s.slots.ScriptsDir, "scripts-dir", "/greengrass/usr/scripts", "managedRespawn scripts directory")
	fs.StringVar(&s.slots.ModulesDir, "modules-dir", agent.DefaultModulesDir, "update modules releases may name (each owned by root and executable by root only; docs/modules.md)")
	fs.StringVar(&rebootCmd, "reboot-command", "systemctl reboot", "command that restarts the device, for update modules that need a reboot (rootfs-ab)")
	fs.StringVar(&restart, "restart-command", "", "command that restarts the managed software after a switch, e.g. 'systemctl restart greengrass'")
	fs.Float64Var(&s.slots.FreeDiskFactor, "free-disk-factor", 0, "free disk needed, as a multiple of the artifact size (default 3)")
	fs.StringVar(&ipc, "ipc-socket", "", "unix socket where local components may defer updates (default <state-dir>/agent.sock; \"off\" disables)")
	fs.StringVar(&maxDeferral, "max-deferral", "1h", "longest time components may defer one update")
	fs.StringVar(&handover, "handover-timeout", "1m", "how long a new agent has to show it works on self-update")
	fs.StringVar(&stepTimeout, "step-timeout", "30m", "a step that shows no progress this long times the job out (sent as stepTimeoutInMinutes; 0 disables)")
	fs.DurationVar(&cfg.IdleRecheck, "idle-recheck", 10*time.Minute, "how often an idle agent asks for pending jobs without a notification (a lost one must not strand the device)")
	fs.StringVar(&s.slots.Platform.OS, "os", detected.OS, "this device's operating system, as releases name it (ubuntu, amazon_linux, raspbian, openwrt); default read from /etc/os-release")
	fs.StringVar(&s.slots.Platform.Arch, "architecture", detected.Arch, "this device's architecture, as releases name it (x86_64, aarch64, armv7l, armv6l); default from uname")
	fs.DurationVar(&cfg.HealthInterval, "health-interval", time.Minute, "after an update, re-run the release's health check and report health this often")
	fs.DurationVar(&cfg.HealthWindow, "health-window", time.Hour, "how long after an update health is reported every --health-interval (then every 15m)")
	fs.StringVar(&cfg.ServiceUnit, "service-unit", "", "the managed software's systemd unit, whose restarts the health record counts (e.g. greengrass.service)")
	fs.BoolVar(&s.slots.AllowHTTP, "dev", false, "development only: accept release metadata and artifacts over plain HTTP (starter dev, the demo)")
	fs.Int64Var(&s.slots.DownloadBytesPerSecond, "download-bytes-per-second", 0, "cap the download bandwidth of updates, full or delta (0: no cap; a rollout's lower --download-bytes-per-second stands)")
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Name != "version" {
			cliconfig.Env(fs, f.Name, "OTAFLOW_AGENT_"+strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_")))
		}
	})
	for flag, key := range map[string]string{"ca": "tls.caFile", "cert": "tls.certFile", "key": "tls.keyFile", "alpn": "tls.alpn", "log-max-size-mb": "logMaxSizeMB"} {
		cliconfig.FileKey(fs, flag, key)
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if err := cliconfig.Apply(fs, nil, "", nil); err != nil { // --config may come from the environment
		return nil, err
	}
	if configFile != "" {
		file, err := cliconfig.ReadFile(configFile)
		if err != nil {
			return nil, fmt.Errorf("read agent config: %w", err)
		}
		if err := cliconfig.Apply(fs, file, configFile, nil); err != nil {
			return nil, err
		}
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
	if claimFiles.CertFile != "" || claimFiles.KeyFile != "" {
		if tlsFiles.CertFile != "" || tlsFiles.KeyFile != "" {
			return nil, fmt.Errorf("--claim-cert provisions the device's own certificate: leave out --cert and --key (after provisioning, the identity is kept in %s)", filepath.Join(cfg.StateDir, "identity"))
		}
		if strings.HasPrefix(cfg.BrokerURL, "tcp://") {
			return nil, fmt.Errorf("--claim-cert needs the broker's mutual-TLS listener: use --broker ssl://<endpoint>:8883")
		}
		params := map[string]string{}
		for _, kv := range claimParams {
			k, v, ok := strings.Cut(kv, "=")
			if !ok || k == "" {
				return nil, fmt.Errorf("--provisioning-parameter %q: use NAME=VALUE", kv)
			}
			params[k] = v
		}
		claimFiles.CAFile, claimFiles.ALPN = tlsFiles.CAFile, tlsFiles.ALPN
		claimTLS, err := claimFiles.Config()
		if err != nil {
			return nil, fmt.Errorf("claim certificate: %w", err)
		}
		s.claim = &agent.Claim{BrokerURL: cfg.BrokerURL, TLS: claimTLS, Template: claimTemplate, Parameters: params, Dir: filepath.Join(cfg.StateDir, "identity")}
		tlsFiles.CertFile, tlsFiles.KeyFile = "", "" // set from the identity when the agent starts
	} else if tlsFiles.Enabled() {
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
	if s.slots.Trust, err = trust(trustedRoot, tufURL, cfg.StateDir, s.slots.AllowHTTP); err != nil {
		return nil, err
	}
	if err := platform.Validate(s.slots.Platform.OS, s.slots.Platform.Arch); err != nil {
		return nil, fmt.Errorf("this device's platform (--os %q, --architecture %q): %w", s.slots.Platform.OS, s.slots.Platform.Arch, err)
	}
	s.slots.Restart = strings.Fields(restart)
	s.slots.Reboot = strings.Fields(rebootCmd)
	cfg.HealthDiskPath = s.slots.Root
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
	if s.claim != nil {
		// The identity the device provisioned (now, on its first start) is the one it runs as.
		s.claim.Logger = log
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		id, err := s.claim.LoadOrProvision(ctx)
		stop()
		if err != nil {
			fmt.Fprintln(stderr, "agent: fleet provisioning:", err)
			return 1
		}
		files := agent.TLSFiles{CertFile: id.CertFile, KeyFile: id.KeyFile}
		tc, err := files.Config()
		if err != nil {
			fmt.Fprintln(stderr, "agent:", err)
			return 2
		}
		tc.RootCAs, tc.NextProtos = s.claim.TLS.RootCAs, s.claim.TLS.NextProtos
		cfg.TLS, cfg.ThingName = tc, id.Thing
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

// trust is the device's TUF client: the provisioned root, the metadata URL, and the verified
// metadata kept under the state directory.
func trust(rootFile, metadataURL, stateDir string, allowHTTP bool) (*tuf.Client, error) {
	if rootFile == "" {
		return nil, fmt.Errorf("--trusted-root is required: the device installs only releases signed in the fleet's TUF repository (copy its root.json from `starter release root`)")
	}
	root, err := os.ReadFile(rootFile)
	if err != nil {
		return nil, fmt.Errorf("--trusted-root: %w", err)
	}
	if metadataURL == "" {
		return nil, fmt.Errorf("--tuf-url is required: the https:// URL the release metadata is served from (the jobs service serves it at /tuf/BUCKET/), or a local directory")
	}
	if err := tuf.CheckLocation("--tuf-url", metadataURL, allowHTTP); err != nil {
		return nil, err
	}
	return &tuf.Client{MetadataURL: metadataURL, TrustedRoot: root, Dir: filepath.Join(stateDir, "tuf"), HTTP: &http.Client{Timeout: time.Minute}}, nil
}
