package main

import (
	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/otaflow/otaflow/internal/cliconfig"
	"github.com/otaflow/otaflow/internal/release"
	"github.com/otaflow/otaflow/internal/stack"
)

func devCmd() *cobra.Command {
	var (
		sf       stackFlags
		devices  int
		noWorker bool
	)
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run the local stack (Temporal + web UI, MQTT broker, jobs service, worker) until Ctrl-C",
		Long: `dev runs the same stack as demo, without the demo rollout, so that worker, agent and starter
can run as separate processes against it. State persists in --data-dir: stop and start again
and every rollout, job and device is still there.`,
		Example: "  starter dev\n  starter dev --devices 5          # also run 5 simulated devices\n  starter dev --no-worker          # run ./worker yourself",
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := cliconfig.Logger(sf.logLevel, outputJSON(cmd))
			if err != nil {
				return err
			}
			o := sf.options(log)
			o.NoWorker = noWorker
			s, err := stack.Start(cmd.Context(), o)
			if err != nil {
				return err
			}
			defer s.Close()
			if devices > 0 {
				if _, err := s.StartDevices(cmd.Context(), devices, "1.10.2", 200*time.Millisecond); err != nil {
					return err
				}
			}
			worker := "running in this process"
			if noWorker {
				worker = "not started: run `go run ./worker`"
			}
			tufURL := release.MetadataURL(s.JobsURL, stack.ReleaseBucket)
			if outputJSON(cmd) {
				json.NewEncoder(os.Stdout).Encode(map[string]any{"dataDir": sf.dataDir, "temporal": s.Temporal.FrontendAddr(), "namespace": s.Temporal.Namespace(),
					"taskQueue": cliconfig.DefaultTaskQueue, "temporalUI": s.Temporal.UIURL(), "console": s.ConsoleURL, "mqttTLS": s.Broker.TLSURL(),
					"mqtt": "tcp://" + s.Broker.Addr(), "ca": s.CA.CertFile(), "jobsEndpoint": s.JobsURL, "region": cliconfig.DefaultRegion,
					"tufURL": tufURL, "devices": devices, "worker": !noWorker})
				cliconfig.WaitForInterrupt()
				return nil
			}
			fmt.Printf(`otaflow local stack is up (data in %[1]s)

  Temporal frontend  %[2]s   (namespace %[3]s, task queue %[4]s)
  Temporal web UI    %[5]s
  Fleet console      %[18]s
  MQTT broker        %[6]s   (mutual TLS: a device's certificate names its thing; CA %[7]s)
                     tcp://%[8]s   (plain: the client ID is the identity, for local use only)
  Jobs API (AWS IoT) %[9]s   (region %[10]s; release metadata at %[11]s)
  Credentials        AWS_ACCESS_KEY_ID=%[12]s AWS_SECRET_ACCESS_KEY=%[13]s (the dev key: jobs-service refuses it)
  Worker             %[14]s
  Simulated devices  %[15]d (%[16]s .. %[17]s)

Try (the exports point the CLI at the ports this stack uses). Every update installs a
published release: devices, simulated ones too, refuse a job with nothing to download.
  export TEMPORAL_ADDRESS=%[2]s OTAFLOW_JOBS_ENDPOINT=%[9]s
  go run ./starter release init --repo %[1]s/release
  mkdir -p /tmp/core/bin && printf '#!/bin/sh\necho core 1.11.6\n' > /tmp/core/bin/core && chmod +x /tmp/core/bin/core
  tar -C /tmp/core -czf /tmp/core-1.11.6.tar.gz bin
  go run ./starter release publish --repo %[1]s/release --file /tmp/core-1.11.6.tar.gz \
      --software core --version 1.11.6 --os ubuntu --architecture x86_64
  go run ./starter create-software-update-job --update-targets-architecture x86_64 \
      --update-targets '["arn:aws:iot:%[10]s:000000000000:thing/%[16]s"]' --update-targets-operating-system ubuntu \
      --software-to-update core --s3-url-signer-role arn:aws:iam::000000000000:role/signer

A real agent (register the thing first; it trusts the repository made above):
  go run ./starter device-cert --data-dir %[1]s --thing my-device --out /tmp/my-device
  go run ./agent --thing-name my-device --broker %[6]s --ca %[7]s \
      --cert /tmp/my-device/my-device.crt --key /tmp/my-device/my-device.key \
      --trusted-root %[1]s/release/metadata/root.json --tuf-url %[11]s \
      --state-dir /tmp/my-device/state --install-root /tmp/my-device/root \
      --restart-command true --dev --os ubuntu --architecture x86_64
  (--dev: this stack serves plain HTTP; --restart-command: what restarts your software after
  an update, "true" when there is nothing to restart; under systemd it is not needed)

Press Ctrl-C to stop.
`, sf.dataDir, s.Temporal.FrontendAddr(), s.Temporal.Namespace(), cliconfig.DefaultTaskQueue, s.Temporal.UIURL(),
				s.Broker.TLSURL(), s.CA.CertFile(), s.Broker.Addr(), s.JobsURL, cliconfig.DefaultRegion, tufURL,
				cliconfig.DefaultAccessKeyID, cliconfig.DefaultSecretKey, worker, devices, stack.Device(1), stack.Device(max(devices, 1)), s.ConsoleURL)
			cliconfig.WaitForInterrupt()
			fmt.Println("stopping")
			return nil
		},
	}
	sf.bind(cmd.Flags(), ".otaflow", "info")
	cmd.Flags().IntVar(&devices, "devices", 0, "also run this many simulated devices")
	cmd.Flags().BoolVar(&noWorker, "no-worker", false, "do not run the rollout worker in this process")
	return cmd
}
