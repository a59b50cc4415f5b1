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
	"go.temporal.io/sdk/client"

	"github.com/otaflow/otaflow/activities"
	"github.com/otaflow/otaflow/internal/cliconfig"
	"github.com/otaflow/otaflow/internal/components"
	"github.com/otaflow/otaflow/internal/iotclient"
	"github.com/otaflow/otaflow/internal/rolloutworker"
	"github.com/otaflow/otaflow/internal/tlog"
)

func main() {
	var (
		tc       cliconfig.Temporal
		ic       cliconfig.IoT
		logLevel string
		catalog  string
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
			cliconfig.Describe(log, "worker", map[string]string{
				"temporalAddress": tc.Address, "namespace": tc.Namespace, "taskQueue": tc.TaskQueue,
				"jobsEndpoint": ic.Endpoint, "region": ic.Region, "accessKeyId": ic.AccessKeyID, "secretAccessKey": ic.SecretAccessKey,
			})
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			c, err := client.DialContext(ctx, client.Options{HostPort: tc.Address, Namespace: tc.Namespace, Logger: tlog.New(log)})
			if err != nil {
				return fmt.Errorf("connect to Temporal at %s: %w (is it running? start a local one with 'starter dev', or set --temporal-address)", tc.Address, err)
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
			return rolloutworker.Run(ctx, c, tc.Namespace, tc.TaskQueue, &activities.Activities{IoT: iotc, Catalog: cat}, log)
		},
	}
	tc.Bind(cmd.Flags())
	ic.Bind(cmd.Flags())
	cmd.Flags().StringVar(&logLevel, "log-level", "info", "log level: trace, debug, info, warn, error")
	cmd.Flags().StringVar(&catalog, "catalog", ".otaflow/components.json", "component catalog for deployments (created with the AWS defaults if missing)")
	if err := cmd.ExecuteContext(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, "worker:", err)
		os.Exit(1)
	}
}
