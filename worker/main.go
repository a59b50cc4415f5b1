// Command worker runs otaflow's Temporal worker: the rollout workflow and its activities.
// Configure it with flags or environment variables; see --help.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/otaflow/otaflow/internal/cliconfig"
	"github.com/otaflow/otaflow/internal/components"
	"github.com/otaflow/otaflow/internal/iotclient"
	"github.com/otaflow/otaflow/internal/rolloutops"
	"github.com/otaflow/otaflow/internal/rolloutworker"
	"github.com/otaflow/otaflow/internal/temporalconf"
)

func main() {
	var (
		tc       temporalconf.Temporal
		ic       cliconfig.IoT
		logLevel string
		catalog  string
		metaURL  string
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
			cliconfig.Describe(log, "worker", tc.Settings(), ic.Settings(), map[string]string{"catalog": catalog})
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			c, err := tc.Dial(ctx, log)
			if err != nil {
				return err
			}
			defer c.Close()
			iotc, err := iotclient.NewIoT(ctx, iotclient.Config{Endpoint: ic.Endpoint, Region: ic.Region, AccessKeyID: ic.AccessKeyID, SecretAccessKey: ic.SecretAccessKey})
			if err != nil {
				return err
			}
			cat, err := components.Open(catalog)
			if err != nil {
				return err
			}
			ops := &rolloutops.Ops{IoT: iotc, Catalog: cat, ReleaseMetadataURL: rolloutops.MetadataURLs(metaURL, ic.Endpoint)}
			return rolloutworker.Run(ctx, c, tc.Namespace, tc.TaskQueue, ops, log)
		},
	}
	tc.Bind(cmd.Flags())
	ic.Bind(cmd.Flags())
	cmd.Flags().StringVar(&logLevel, "log-level", "info", "log level: trace, debug, info, warn, error")
	cmd.Flags().StringVar(&catalog, "catalog", ".otaflow/components.json", "component catalog for deployments (created with the AWS defaults if missing)")
	cmd.Flags().StringVar(&metaURL, "release-metadata-url", "", `where a bucket's TUF metadata is read, for rollouts of the newest published release; "{bucket}" is replaced (default: the local jobs service's /tuf/{bucket}/; with AWS e.g. https://{bucket}.s3.amazonaws.com/tuf/)`)
	cliconfig.Env(cmd.Flags(), "release-metadata-url", "OTAFLOW_RELEASE_METADATA_URL")
	cliconfig.Env(cmd.Flags(), "log-level", "OTAFLOW_LOG_LEVEL")
	cliconfig.Env(cmd.Flags(), "catalog", "OTAFLOW_CATALOG")
	cliconfig.Command(cmd, "OTAFLOW_WORKER_CONFIG")
	if err := cmd.ExecuteContext(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, "worker:", err)
		os.Exit(1)
	}
}
