// Package cliconfig holds the settings otaflow's binaries share and the one way each binary
// reads its settings (apply.go): flag, else environment variable, else config file, else
// default. Describe prints them with secrets masked.
package cliconfig

import (
	"fmt"
	"maps"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/rs/zerolog"
	"github.com/spf13/pflag"
)

// Local defaults: what `starter dev` and `starter demo` serve.
const (
	DefaultTemporalAddress = "127.0.0.1:7233"
	DefaultUIPort          = 8233
	DefaultMQTTAddr        = "127.0.0.1:1883"
	DefaultJobsEndpoint    = "http://127.0.0.1:4566"
	DefaultRegion          = "us-east-1"
	DefaultAccessKeyID     = "otaflow"
	DefaultSecretKey       = "otaflow-secret"
	DefaultNamespace       = "default"
	DefaultTaskQueue       = "otaflow-rollouts" // workflows.TaskQueue; a test keeps them equal
	// DefaultMQTTServiceUser is the broker identity of the jobs service.
	DefaultMQTTServiceUser = "otaflow-jobs"
)

// IoT is how to reach the AWS IoT control plane (or the local jobs service).
type IoT struct {
	Endpoint        string
	Region          string
	AccessKeyID     string
	SecretAccessKey string
}

// Bind registers the IoT flags.
func (i *IoT) Bind(fs *pflag.FlagSet) {
	fs.StringVar(&i.Endpoint, "jobs-endpoint", DefaultJobsEndpoint, "AWS IoT endpoint URL; 'aws' for AWS's own endpoint")
	fs.StringVar(&i.Region, "region", DefaultRegion, "AWS region")
	fs.StringVar(&i.AccessKeyID, "access-key-id", "", "access key for the jobs API; empty: the local default for a local endpoint, the AWS credential chain for AWS")
	fs.StringVar(&i.SecretAccessKey, "secret-access-key", "", "secret key for the jobs API")
	Env(fs, "jobs-endpoint", "OTAFLOW_JOBS_ENDPOINT")
	Env(fs, "region", "AWS_REGION")
	Env(fs, "access-key-id", "OTAFLOW_ACCESS_KEY_ID")
	Env(fs, "secret-access-key", "OTAFLOW_SECRET_ACCESS_KEY")
}

// Settings are the IoT settings for Describe.
func (i *IoT) Settings() map[string]string {
	return map[string]string{"jobsEndpoint": i.Endpoint, "region": i.Region, "accessKeyId": i.AccessKeyID, "secretAccessKey": i.SecretAccessKey}
}

// Resolve fills in defaults that depend on other settings.
func (i *IoT) Resolve() {
	if i.Endpoint == "aws" {
		i.Endpoint = ""
		return
	}
	if i.AccessKeyID == "" && i.Endpoint != "" {
		i.AccessKeyID, i.SecretAccessKey = DefaultAccessKeyID, DefaultSecretKey
	}
}

// Mask hides a secret but its length class.
func Mask(s string) string {
	if s == "" {
		return ""
	}
	return "****"
}

// Describe logs every setting of a binary on start, secrets masked.
func Describe(log zerolog.Logger, what string, settings ...map[string]string) {
	all := map[string]string{}
	for _, s := range settings {
		maps.Copy(all, s)
	}
	e := log.Info()
	for k, v := range all {
		if l := strings.ToLower(k); strings.Contains(l, "secret") || strings.Contains(l, "password") || strings.Contains(l, "apikey") {
			v = Mask(v)
		}
		e = e.Str(k, v)
	}
	e.Msg(fmt.Sprintf("%s configuration", what))
}

// Logger returns the logger binaries use: readable lines on a terminal, one JSON object per
// line otherwise (a container's log collector, a file, a pipe), never colour codes there.
// OTAFLOW_LOG_FORMAT=json or text overrides the choice; json forces JSON.
func Logger(level string, json bool) (zerolog.Logger, error) {
	lvl, err := zerolog.ParseLevel(strings.ToLower(level))
	if err != nil {
		return zerolog.Logger{}, fmt.Errorf("log level %q: use trace, debug, info, warn or error", level)
	}
	switch format := os.Getenv("OTAFLOW_LOG_FORMAT"); format {
	case "json":
		json = true
	case "text", "":
		json = json || (format == "" && !isTerminal(os.Stderr))
	default:
		return zerolog.Logger{}, fmt.Errorf("OTAFLOW_LOG_FORMAT=%q: use json or text", format)
	}
	var z zerolog.Logger
	if json {
		z = zerolog.New(os.Stderr)
	} else {
		z = zerolog.New(zerolog.ConsoleWriter{Out: os.Stderr, TimeFormat: "15:04:05"})
	}
	return z.Level(lvl).With().Timestamp().Logger(), nil
}

func isTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// WaitForInterrupt blocks until Ctrl-C or SIGTERM.
func WaitForInterrupt() {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, os.Interrupt, syscall.SIGTERM)
	<-ch
	signal.Stop(ch)
}
