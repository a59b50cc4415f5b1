// Command jobs-service runs otaflow's AWS IoT Jobs service on its own: the REST control plane
// and the MQTT Jobs API, on bbolt or, for replicas, PostgreSQL. It is the production
// container's binary: unlike starter, it links no Temporal server or web UI. See --help.
package main

import (
	"fmt"
	"os"

	"github.com/otaflow/otaflow/internal/cliconfig"
	"github.com/otaflow/otaflow/internal/jobsservice"
)

func main() {
	cmd := jobsservice.Command()
	cmd.Use = "jobs-service"
	cmd.SilenceUsage, cmd.SilenceErrors = true, true
	cliconfig.Command(cmd, "OTAFLOW_CONFIG")
	if err := cmd.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "jobs-service:", err)
		os.Exit(1)
	}
}
