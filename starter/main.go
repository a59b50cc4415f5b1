// Command starter is otaflow's CLI: it runs the local stack (demo, dev), starts rollouts
// (create-software-update-job, as in the AWS Greengrass API) and reports on them.
package main

import (
	"context"
	"encoding/json"
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

// checkOutput makes every command refuse an --output it does not have, before it runs: `-o
// yaml` must not print text, nor `-o json` a file named json.
func checkOutput(c *cobra.Command) {
	for _, sub := range c.Commands() {
		checkOutput(sub)
	}
	if c.RunE == nil {
		return
	}
	run := c.RunE
	c.RunE = func(cmd *cobra.Command, args []string) error {
		if f := cmd.Flag("output"); f != nil {
			if v := f.Value.String(); v != "text" && v != "json" {
				return fmt.Errorf("--output %q: use text or json", v)
			}
		}
		return run(cmd, args)
	}
}

// outputJSON reports whether the command was asked for JSON (-o json).
func outputJSON(cmd *cobra.Command) bool {
	f := cmd.Flag("output")
	return f != nil && f.Value.String() == "json"
}

// emit prints a command's result: v as JSON with -o json, else text.
func emit(cmd *cobra.Command, v any, text string, args ...any) error {
	if outputJSON(cmd) {
		return json.NewEncoder(os.Stdout).Encode(v)
	}
	_, err := fmt.Printf(text, args...)
	return err
}

func main() {
	root := &cobra.Command{
		Use:           "starter",
		Short:         "otaflow: durable over-the-air updates for fleets of devices",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	cliconfig.Command(root, "OTAFLOW_CONFIG")
	root.PersistentFlags().StringP("output", "o", "text", "output format: text or json")
	root.AddCommand(demoCmd(), devCmd(), jobsServiceCmd(), createSoftwareUpdateJobCmd(), describeJobCmd(), rolloutCmd(), scheduleCmd(), deploymentCmd(), componentCmd(), releaseCmd(), deviceCertCmd(), thingCmd(), fleetCmd(), accessCmd(), auditCmd(), benchCmd(), downloadCmd(), simfleetCmd())
	refuseUnknownSubcommands(root)
	checkOutput(root)
	if err := root.ExecuteContext(context.Background()); err != nil {
		var ee exitError
		if errors.As(err, &ee) {
			os.Exit(ee.code)
		}
		fmt.Fprintln(os.Stderr, "starter:", err)
		os.Exit(1)
	}
}
