// Command starter is otaflow's CLI: it runs the local stack (demo, dev), starts rollouts
// (create-software-update-job, as in the AWS Greengrass API) and reports on them.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/otaflow/otaflow/internal/cliconfig"
)

// exitError carries a chosen exit status without printing anything more.
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

// refuseUnknownSubcommands makes every command group fail on a subcommand it does not have
// (cobra prints the group's help and exits 0 for `starter rollout statsu`, which a script
// would take for success).
func refuseUnknownSubcommands(c *cobra.Command) {
	for _, sub := range c.Commands() {
		refuseUnknownSubcommands(sub)
	}
	if c.HasSubCommands() && c.Run == nil && c.RunE == nil {
		c.Args = cobra.ArbitraryArgs
		c.RunE = func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				return fmt.Errorf("unknown command %q for %q; run '%s --help' for its commands", args[0], cmd.CommandPath(), cmd.CommandPath())
			}
			return cmd.Help()
		}
	}
}

func main() {
	root := &cobra.Command{
		Use:           "starter",
		Short:         "otaflow: durable over-the-air updates for fleets of devices",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	cliconfig.Command(root, "OTAFLOW_CONFIG")
	root.AddCommand(demoCmd(), devCmd(), jobsServiceCmd(), createSoftwareUpdateJobCmd(), describeJobCmd(), rolloutCmd(), scheduleCmd(), deploymentCmd(), componentCmd(), releaseCmd(), deviceCertCmd(), fleetCmd(), benchCmd())
	refuseUnknownSubcommands(root)
	if err := root.ExecuteContext(context.Background()); err != nil {
		var ee exitError
		if errors.As(err, &ee) {
			os.Exit(ee.code)
		}
		fmt.Fprintln(os.Stderr, "starter:", err)
		os.Exit(1)
	}
}
