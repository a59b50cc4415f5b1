package main

import (
	"fmt"
	"net"

	"github.com/rs/zerolog"
	"github.com/spf13/pflag"

	"github.com/otaflow/otaflow/internal/cliconfig"
	"github.com/otaflow/otaflow/internal/stack"
)

// stackFlags are the settings of the in-process local stack (demo and dev).
type stackFlags struct {
	dataDir      string
	temporalPort int
	uiPort       int
	mqttAddr     string
	mqttTLSAddr  string
	jobsAddr     string
	deviceHost   string
	logLevel     string
	noQuotas     bool
}

func (f *stackFlags) bind(fs *pflag.FlagSet, defaultDataDir, defaultLogLevel string) {
	fs.StringVar(&f.dataDir, "data-dir", defaultDataDir, "where the stack keeps Temporal's SQLite file, the jobs database and device state")
	fs.IntVar(&f.temporalPort, "temporal-port", 7233, "Temporal frontend port (0 picks a free one)")
	fs.IntVar(&f.uiPort, "ui-port", cliconfig.DefaultUIPort, "Temporal web UI port (0 picks a free one, -1 disables the UI)")
	fs.StringVar(&f.mqttAddr, "mqtt-addr", cliconfig.DefaultMQTTAddr, "MQTT broker listen address (plain: the client ID is the identity; for local use only)")
	fs.StringVar(&f.mqttTLSAddr, "mqtt-tls-addr", "127.0.0.1:8883", "MQTT mutual-TLS listen address: devices present a certificate from the local CA (starter device-cert)")
	fs.StringVar(&f.jobsAddr, "jobs-addr", "127.0.0.1:4566", "jobs API (AWS IoT REST) listen address")
	fs.StringVar(&f.deviceHost, "device-host", "", "the name or address devices reach this machine by, when it is not the listen address (behind NAT, a VM's gateway such as 10.0.2.2, a DNS name): the broker's certificate names it and artifact URLs use it")
	fs.StringVar(&f.logLevel, "log-level", defaultLogLevel, "log level: trace, debug, info, warn, error")
	fs.BoolVar(&f.noQuotas, "no-aws-quotas", false, "lift the AWS IoT quotas the jobs service enforces: what works then may fail on AWS")
}

func (f *stackFlags) options(log zerolog.Logger) stack.Options {
	return stack.Options{
		DataDir: f.dataDir, TemporalPort: f.temporalPort, UIPort: f.uiPort,
		MQTTAddr: f.mqttAddr, MQTTTLSAddr: f.mqttTLSAddr, JobsAddr: f.jobsAddr, DeviceHost: f.deviceHost, Logger: log, NoAWSQuotas: f.noQuotas,
	}
}

// freeDefaults moves every port the user did not choose off its default when that default is
// taken (a machine that already runs mosquitto or a Temporal dev server), so that the demo
// runs anyway. It returns a line for each port it moved.
func (f *stackFlags) freeDefaults(fs *pflag.FlagSet) []string {
	var moved []string
	taken := func(addr string) bool {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			return true
		}
		l.Close()
		return false
	}
	port := func(flag string, p *int) {
		if fs.Changed(flag) || *p <= 0 || !taken(net.JoinHostPort("127.0.0.1", fmt.Sprint(*p))) {
			return
		}
		moved = append(moved, fmt.Sprintf("port %d is taken: --%s picks a free one", *p, flag))
		*p = 0
	}
	addr := func(flag string, a *string) {
		host, _, err := net.SplitHostPort(*a)
		if fs.Changed(flag) || err != nil || !taken(*a) {
			return
		}
		moved = append(moved, fmt.Sprintf("%s is taken: --%s picks a free port", *a, flag))
		*a = net.JoinHostPort(host, "0")
	}
	port("temporal-port", &f.temporalPort)
	port("ui-port", &f.uiPort)
	addr("mqtt-addr", &f.mqttAddr)
	addr("mqtt-tls-addr", &f.mqttTLSAddr)
	addr("jobs-addr", &f.jobsAddr)
	return moved
}

// quietLogger is for SDK clients in short CLI commands: warnings and errors only.
func quietLogger() zerolog.Logger {
	log, _ := cliconfig.Logger("warn", false)
	return log
}
