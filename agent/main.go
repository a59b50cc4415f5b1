// Command agent is the otaflow device agent: run it as a system service on each device. It
// takes otaflow update jobs over the AWS IoT Jobs MQTT API, applies them one at a time and
// reports the outcome. Configure it with flags or OTAFLOW_AGENT_* environment variables.
package main

import (
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"fmt"
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

func env(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func main() {
	var cfg agent.Config
	var logLevel, publicKey, restart string
	fs := pflag.NewFlagSet("agent", pflag.ExitOnError)
	fs.StringVar(&cfg.ThingName, "thing-name", env("OTAFLOW_AGENT_THING_NAME", ""), "this device's thing name, also its MQTT client ID [OTAFLOW_AGENT_THING_NAME]")
	fs.StringVar(&cfg.BrokerURL, "broker", env("OTAFLOW_AGENT_BROKER", "tcp://"+cliconfig.DefaultMQTTAddr), "MQTT broker URL [OTAFLOW_AGENT_BROKER]")
	fs.StringVar(&cfg.Username, "username", env("OTAFLOW_AGENT_USERNAME", ""), "MQTT user name, if the broker wants one [OTAFLOW_AGENT_USERNAME]")
	fs.StringVar(&cfg.Password, "password", env("OTAFLOW_AGENT_PASSWORD", ""), "MQTT password [OTAFLOW_AGENT_PASSWORD]")
	fs.StringVar(&cfg.StateDir, "state-dir", env("OTAFLOW_AGENT_STATE_DIR", "/var/lib/otaflow-agent"), "where the agent keeps its state [OTAFLOW_AGENT_STATE_DIR]")
	fs.StringVar(&cfg.InitialVersion, "initial-version", env("OTAFLOW_AGENT_INITIAL_VERSION", ""), "core version to report before the first update [OTAFLOW_AGENT_INITIAL_VERSION]")
	fs.DurationVar(&cfg.InstallTime, "install-time", time.Second, "how long a simulated install takes")
	fs.StringVar(&logLevel, "log-level", env("OTAFLOW_AGENT_LOG_LEVEL", "info"), "log level: trace, debug, info, warn, error [OTAFLOW_AGENT_LOG_LEVEL]")
	fs.StringVar(&cfg.Installer.Root, "install-root", env("OTAFLOW_AGENT_INSTALL_ROOT", ""), "where versions are installed side by side; empty: simulated installs only [OTAFLOW_AGENT_INSTALL_ROOT]")
	fs.StringVar(&publicKey, "public-key", env("OTAFLOW_AGENT_PUBLIC_KEY", ""), "the fleet's ed25519 public key (hex, or a file holding it) that signs artifacts [OTAFLOW_AGENT_PUBLIC_KEY]")
	fs.BoolVar(&cfg.Installer.ManagedRespawn, "managed-respawn", env("OTAFLOW_AGENT_MANAGED_RESPAWN", "") == "true", "run <root>/usr/scripts/{ggc,ota}_{pre,post}_update.sh around updates [OTAFLOW_AGENT_MANAGED_RESPAWN]")
	fs.StringVar(&cfg.Installer.ScriptsDir, "scripts-dir", env("OTAFLOW_AGENT_SCRIPTS_DIR", "/greengrass/usr/scripts"), "managedRespawn scripts directory [OTAFLOW_AGENT_SCRIPTS_DIR]")
	fs.StringVar(&restart, "restart-command", env("OTAFLOW_AGENT_RESTART_COMMAND", ""), "command that restarts the managed software after a switch, e.g. 'systemctl restart greengrass' [OTAFLOW_AGENT_RESTART_COMMAND]")
	fs.Parse(os.Args[1:])

	log, err := cliconfig.Logger(logLevel, false)
	if err != nil {
		fmt.Fprintln(os.Stderr, "agent:", err)
		os.Exit(2)
	}
	cfg.Logger = log
	if cfg.Installer.Root != "" {
		key, err := readPublicKey(publicKey)
		if err != nil {
			fmt.Fprintln(os.Stderr, "agent:", err)
			os.Exit(2)
		}
		cfg.Installer.PublicKey = key
		cfg.Installer.Restart = strings.Fields(restart)
	}
	// One agent per device: two would process the same jobs (seed v1).
	os.MkdirAll(cfg.StateDir, 0o755)
	release, err := preflight.Lock(filepath.Join(cfg.StateDir, "agent.lock"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "agent:", err)
		os.Exit(2)
	}
	defer release()
	cliconfig.Describe(log, "agent", map[string]string{
		"thingName": cfg.ThingName, "broker": cfg.BrokerURL, "username": cfg.Username, "password": cfg.Password, "stateDir": cfg.StateDir,
	})
	a, err := agent.New(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "agent:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log.Info().Str("thing", cfg.ThingName).Str("core", a.InstalledVersion("core")).Msg("agent started; waiting for update jobs")
	if err := a.Run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "agent:", err)
		os.Exit(1)
	}
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
