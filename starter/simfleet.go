package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/otaflow/otaflow/internal/bench"
)

// simfleetCmd runs the benchmark's protocol-level device simulator in a process of its own,
// so that the stack's CPU figure does not include what the simulated devices spend.
func simfleetCmd() *cobra.Command {
	var broker, user string
	cmd := &cobra.Command{
		Use:    "simfleet",
		Short:  "Run the benchmark's protocol-level device simulator (every thing through a few MQTT sessions) until stopped; for the benchmark",
		Hidden: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			password, ok := os.LookupEnv(bench.SimPasswordEnv)
			if !ok {
				return fmt.Errorf("set %s to the jobs service's broker password", bench.SimPasswordEnv)
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return bench.RunSimFleet(ctx, broker, user, password, cmd.OutOrStdout())
		},
	}
	cmd.Flags().StringVar(&broker, "broker", "", "broker URL")
	cmd.Flags().StringVar(&user, "username", "", "the jobs service's broker user name (its password comes from "+bench.SimPasswordEnv+")")
	return cmd
}
