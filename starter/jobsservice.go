package main

import (
	"github.com/spf13/cobra"

	"github.com/otaflow/otaflow/internal/jobsservice"
)

// jobsServiceCmd is the same command as the lean jobs-service binary (./jobs-service).
func jobsServiceCmd() *cobra.Command { return jobsservice.Command() }
