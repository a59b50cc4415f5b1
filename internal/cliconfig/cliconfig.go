// Package cliconfig holds the settings otaflow's binaries share. Each setting comes from a
// flag, else an environment variable, else a default; Describe prints them with secrets masked.
package cliconfig

import (
	"fmt"
	"os"
	"strings"

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

func env(name, def string) string {
	if v, ok := os.LookupEnv(name); ok && v != "" {
		return v
	}
	return def
}

// Temporal is how to reach Temporal.
type Temporal struct {
	Address   string
	Namespace string
	TaskQueue string
}

// Bind registers the Temporal flags.
func (t *Temporal) Bind(fs *pflag.FlagSet) {
	fs.StringVar(&t.Address, "temporal-address", env("TEMPORAL_ADDRESS", DefaultTemporalAddress), "Temporal frontend host:port [TEMPORAL_ADDRESS]")
	fs.StringVar(&t.Namespace, "namespace", env("TEMPORAL_NAMESPACE", DefaultNamespace), "Temporal namespace [TEMPORAL_NAMESPACE]")
	fs.StringVar(&t.TaskQueue, "task-queue", env("OTAFLOW_TASK_QUEUE", DefaultTaskQueue), "task queue of the rollout worker [OTAFLOW_TASK_QUEUE]")
}

// IoT is how to reach the AWS IoT control plane (or the local jobs service).
type IoT struct {
	Endpoint        string
	Region          string
	AccessKeyID     string
	SecretAccessKey string
}

// Bind registers the IoT flags.
func (i *IoT) Bind(fs *pflag.FlagSet) {
	fs.StringVar(&i.Endpoint, "jobs-endpoint", env("OTAFLOW_JOBS_ENDPOINT", DefaultJobsEndpoint), "AWS IoT endpoint URL; 'aws' for AWS's own endpoint [OTAFLOW_JOBS_ENDPOINT]")
	fs.StringVar(&i.Region, "region", env("AWS_REGION", DefaultRegion), "AWS region [AWS_REGION]")
	fs.StringVar(&i.AccessKeyID, "access-key-id", env("OTAFLOW_ACCESS_KEY_ID", ""), "access key for the jobs API; empty: the local default for a local endpoint, the AWS credential chain for AWS [OTAFLOW_ACCESS_KEY_ID]")
	fs.StringVar(&i.SecretAccessKey, "secret-access-key", env("OTAFLOW_SECRET_ACCESS_KEY", ""), "secret key for the jobs API [OTAFLOW_SECRET_ACCESS_KEY]")
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
func Describe(log zerolog.Logger, what string, settings map[string]string) {
	e := log.Info()
	for k, v := range settings {
		if strings.Contains(strings.ToLower(k), "secret") || strings.Contains(strings.ToLower(k), "password") {
			v = Mask(v)
		}
		e = e.Str(k, v)
	}
	e.Msg(fmt.Sprintf("%s configuration", what))
}

// Logger returns the console or JSON logger binaries use.
func Logger(level string, json bool) (zerolog.Logger, error) {
	lvl, err := zerolog.ParseLevel(strings.ToLower(level))
	if err != nil {
		return zerolog.Logger{}, fmt.Errorf("log level %q: use trace, debug, info, warn or error", level)
	}
	var z zerolog.Logger
	if json {
		z = zerolog.New(os.Stderr)
	} else {
		z = zerolog.New(zerolog.ConsoleWriter{Out: os.Stderr, TimeFormat: "15:04:05"})
	}
	return z.Level(lvl).With().Timestamp().Logger(), nil
}
