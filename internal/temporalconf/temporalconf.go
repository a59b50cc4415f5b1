// Package temporalconf is how otaflow's binaries reach Temporal: the Temporal SDK's own
// environment configuration (the same the Temporal CLI reads), overridden by flags, with the
// local dev server as the default. It is apart from cliconfig so the device agent, which
// shares cliconfig, never links the Temporal SDK.
package temporalconf

import (
	"cmp"
	"context"
	"fmt"
	"time"

	"github.com/rs/zerolog"
	"github.com/spf13/pflag"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/contrib/envconfig"

	"github.com/otaflow/otaflow/internal/cliconfig"
	"github.com/otaflow/otaflow/internal/tlog"
)

// Temporal is how to reach Temporal. Address, namespace, TLS and API key come from the
// Temporal SDK's environment configuration (TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE,
// TEMPORAL_API_KEY, TEMPORAL_TLS_*, or a profile of the Temporal CLI's config file,
// TEMPORAL_PROFILE / TEMPORAL_CONFIG_FILE), the same that `temporal` and the SDK samples
// read; the flags override it, and the local dev server is the default.
type Temporal struct {
	Address   string
	Namespace string
	Profile   string
	TaskQueue string
	// Metrics, when set, receives the Temporal SDK's metrics (the worker's /metrics).
	Metrics client.MetricsHandler
}

// Bind registers the Temporal flags.
func (t *Temporal) Bind(fs *pflag.FlagSet) {
	fs.StringVar(&t.Address, "temporal-address", "", "Temporal frontend host:port (default: TEMPORAL_ADDRESS or the profile's, else "+cliconfig.DefaultTemporalAddress+")")
	fs.StringVar(&t.Namespace, "namespace", "", "Temporal namespace (default: TEMPORAL_NAMESPACE or the profile's, else "+cliconfig.DefaultNamespace+")")
	fs.StringVar(&t.Profile, "temporal-profile", "", "profile of the Temporal config file to use (TLS, API key, address, namespace) [TEMPORAL_PROFILE]")
	fs.StringVar(&t.TaskQueue, "task-queue", cliconfig.DefaultTaskQueue, "task queue of the rollout worker")
	cliconfig.Env(fs, "task-queue", "OTAFLOW_TASK_QUEUE")
}

// ClientOptions are the SDK client options: the environment configuration, then the flags,
// then the local defaults. It fills in t.Address and t.Namespace with what it chose.
func (t *Temporal) ClientOptions() (client.Options, error) {
	o, err := envconfig.LoadClientOptions(envconfig.LoadClientOptionsRequest{ConfigFileProfile: t.Profile})
	if err != nil {
		return o, fmt.Errorf("temporal client configuration (environment, or profile %q of the Temporal config file): %w", t.Profile, err)
	}
	o.HostPort = cmp.Or(t.Address, o.HostPort, cliconfig.DefaultTemporalAddress)
	o.Namespace = cmp.Or(t.Namespace, o.Namespace, cliconfig.DefaultNamespace)
	t.Address, t.Namespace = o.HostPort, o.Namespace
	return o, nil
}

// DialTimeout bounds connecting to Temporal.
const DialTimeout = 15 * time.Second

// Dial connects to Temporal.
func (t *Temporal) Dial(ctx context.Context, log zerolog.Logger) (client.Client, error) {
	o, err := t.ClientOptions()
	if err != nil {
		return nil, err
	}
	o.Logger = tlog.New(log)
	if t.Metrics != nil {
		o.MetricsHandler = t.Metrics
	}
	// A frontend that accepts the connection and never answers ends the dial, not the CLI's
	// patience (the SDK bounds each later call itself).
	dctx, cancel := context.WithTimeout(ctx, DialTimeout)
	defer cancel()
	c, err := client.DialContext(dctx, o)
	if err != nil {
		return nil, fmt.Errorf("connect to Temporal at %s (namespace %s): %w (start a local stack with 'starter dev', or set --temporal-address / TEMPORAL_ADDRESS)", o.HostPort, o.Namespace, err)
	}
	return c, nil
}

// Settings are the Temporal settings for Describe.
func (t *Temporal) Settings() map[string]string {
	return map[string]string{"temporalAddress": t.Address, "namespace": t.Namespace, "temporalProfile": t.Profile, "taskQueue": t.TaskQueue}
}
