// Command worker runs otaflow's Temporal worker: the rollout workflow and its activities.
// Configure it with flags or environment variables; see --help.
package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/otaflow/otaflow/internal/cliconfig"
	"github.com/otaflow/otaflow/internal/components"
	"github.com/otaflow/otaflow/internal/iotclient"
	"github.com/otaflow/otaflow/internal/rolloutops"
	"github.com/otaflow/otaflow/internal/rolloutworker"
	"github.com/otaflow/otaflow/internal/temporalconf"
	"github.com/otaflow/otaflow/internal/workermetrics"
)

func main() {
	var (
		tc       temporalconf.Temporal
		ic       cliconfig.IoT
		logLevel string
		catalog  string
		metaURL  string
		metrics  string
		secret   string
	)
	cmd := &cobra.Command{
		Use:           "worker",
		Short:         "Run the otaflow rollout worker",
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := cliconfig.Logger(logLevel, false)
			if err != nil {
				return err
			}
			ic.Resolve()
			if _, err := tc.ClientOptions(); err != nil {
				return err
			}
			cliconfig.Describe(log, "worker", tc.Settings(), ic.Settings(), map[string]string{"catalog": catalog, "metricsAddr": metrics, "webhookSecret": secret})
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			var wm *workermetrics.Metrics
			if metrics != "" {
				m, err := workermetrics.New(true)
				if err != nil {
					return err
				}
				tc.Metrics, wm = m.Temporal, m
				ln, err := net.Listen("tcp", metrics)
				if err != nil {
					return fmt.Errorf("--metrics-addr: %w", err)
				}
				mux := http.NewServeMux()
				mux.Handle("GET /metrics", m.Handler())
				srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
				go srv.Serve(ln)
				defer srv.Close()
				log.Info().Str("addr", ln.Addr().String()).Msg("serving Prometheus metrics at /metrics")
			}
			c, err := tc.Dial(ctx, log)
			if err != nil {
				return err
			}
			defer c.Close()
			if wm != nil {
				wm.Registry.MustRegister(workermetrics.RolloutsCollector(c))
			}
			iotc, err := iotclient.NewIoT(ctx, iotclient.Config{Endpoint: ic.Endpoint, Region: ic.Region, AccessKeyID: ic.AccessKeyID, SecretAccessKey: ic.SecretAccessKey})
			if err != nil {
				return err
			}
			cat, err := components.Open(catalog)
			if err != nil {
				return err
			}
			ops := &rolloutops.Ops{IoT: iotc, Catalog: cat, ReleaseMetadataURL: rolloutops.MetadataURLs(metaURL, ic.Endpoint), WebhookSecret: []byte(secret)}
			return rolloutworker.Run(ctx, c, tc.Namespace, tc.TaskQueue, ops, log)
		},
	}
	tc.Bind(cmd.Flags())
	ic.Bind(cmd.Flags())
	cmd.Flags().StringVar(&logLevel, "log-level", "info", "log level: trace, debug, info, warn, error")
	cmd.Flags().StringVar(&catalog, "catalog", ".otaflow/components.json", "component catalog for deployments (created with the AWS defaults if missing)")
	cmd.Flags().StringVar(&metaURL, "release-metadata-url", "", `where a bucket's TUF metadata is read, for rollouts of the newest published release; "{bucket}" is replaced (default: the local jobs service's /tuf/{bucket}/; with AWS e.g. https://{bucket}.s3.amazonaws.com/tuf/)`)
	cmd.Flags().StringVar(&metrics, "metrics-addr", "", "serve Prometheus metrics at http://ADDR/metrics: the Temporal SDK's and the rollouts' events (unauthenticated: keep it on an internal address); empty: off")
	cmd.Flags().StringVar(&secret, "webhook-secret", "", "signs rollout webhooks (HMAC-SHA256; receivers check X-Otaflow-Signature with it); set it from the environment, OTAFLOW_WEBHOOK_SECRET")
	cliconfig.Env(cmd.Flags(), "metrics-addr", "OTAFLOW_METRICS_ADDR")
	cliconfig.Env(cmd.Flags(), "webhook-secret", "OTAFLOW_WEBHOOK_SECRET")
	cliconfig.Env(cmd.Flags(), "release-metadata-url", "OTAFLOW_RELEASE_METADATA_URL")
	cliconfig.Env(cmd.Flags(), "log-level", "OTAFLOW_LOG_LEVEL")
	cliconfig.Env(cmd.Flags(), "catalog", "OTAFLOW_CATALOG")
	cliconfig.Command(cmd, "OTAFLOW_WORKER_CONFIG")
	if err := cmd.ExecuteContext(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, "worker:", err)
		os.Exit(1)
	}
}
