// Command agent is the otaflow device agent: run it as a system service on each device. It
// takes otaflow update jobs over the AWS IoT Jobs MQTT API, applies them one at a time and
// reports the outcome. Configure it with flags or OTAFLOW_AGENT_* environment variables.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/pflag"

	"github.com/otaflow/otaflow/internal/agent"
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
	var logLevel string
	fs := pflag.NewFlagSet("agent", pflag.ExitOnError)
	fs.StringVar(&cfg.ThingName, "thing-name", env("OTAFLOW_AGENT_THING_NAME", ""), "this device's thing name, also its MQTT client ID [OTAFLOW_AGENT_THING_NAME]")
	fs.StringVar(&cfg.BrokerURL, "broker", env("OTAFLOW_AGENT_BROKER", "tcp://"+cliconfig.DefaultMQTTAddr), "MQTT broker URL [OTAFLOW_AGENT_BROKER]")
	fs.StringVar(&cfg.Username, "username", env("OTAFLOW_AGENT_USERNAME", ""), "MQTT user name, if the broker wants one [OTAFLOW_AGENT_USERNAME]")
	fs.StringVar(&cfg.Password, "password", env("OTAFLOW_AGENT_PASSWORD", ""), "MQTT password [OTAFLOW_AGENT_PASSWORD]")
	fs.StringVar(&cfg.StateDir, "state-dir", env("OTAFLOW_AGENT_STATE_DIR", "/var/lib/otaflow-agent"), "where the agent keeps its state [OTAFLOW_AGENT_STATE_DIR]")
	fs.StringVar(&cfg.InitialVersion, "initial-version", env("OTAFLOW_AGENT_INITIAL_VERSION", ""), "core version to report before the first update [OTAFLOW_AGENT_INITIAL_VERSION]")
	fs.DurationVar(&cfg.InstallTime, "install-time", time.Second, "how long a simulated install takes")
	fs.StringVar(&logLevel, "log-level", env("OTAFLOW_AGENT_LOG_LEVEL", "info"), "log level: trace, debug, info, warn, error [OTAFLOW_AGENT_LOG_LEVEL]")
	fs.Parse(os.Args[1:])

	log, err := cliconfig.Logger(logLevel, false)
	if err != nil {
		fmt.Fprintln(os.Stderr, "agent:", err)
		os.Exit(2)
	}
	cfg.Logger = log
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
