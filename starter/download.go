package main

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/otaflow/otaflow/internal/agent/artifact"
)

// downloadCmd runs the agent's downloader in a process of its own: the benchmark times it
// against curl, each a process beside the stack, as on a device.
func downloadCmd() *cobra.Command {
	var spec artifact.Spec
	var out string
	cmd := &cobra.Command{
		Use:    "download",
		Short:  "Download an artifact as the agent does (resumable, SHA-256 checked as it streams) and print its seconds; for the benchmark",
		Hidden: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			// The transfer's own time, from the request to the verified file, as curl's
			// %{time_total} is: this binary takes a quarter of a second to start (it carries the
			// Temporal server), which a device's long-running agent never pays per download.
			began := time.Now()
			if err := artifact.Download(cmd.Context(), spec, out, artifact.Options{}); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%.6f\n", time.Since(began).Seconds())
			return nil
		},
	}
	cmd.Flags().StringVar(&spec.URL, "url", "", "artifact URL")
	cmd.Flags().Int64Var(&spec.Size, "size", 0, "its size in bytes")
	cmd.Flags().StringVar(&spec.SHA256, "sha256", "", "its SHA-256, hex")
	cmd.Flags().StringVar(&out, "out", "", "file to write")
	return cmd
}
