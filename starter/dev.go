package main

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/otaflow/otaflow/internal/cliconfig"
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
			log, err := cliconfig.Logger(sf.logLevel, false)
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
			fmt.Printf(`otaflow local stack is up (data in %s)

  Temporal frontend  %s   (namespace %s, task queue %s)
  Temporal web UI    %s
  MQTT broker        tcp://%s   (devices connect with their thing name as client ID)
  Jobs API (AWS IoT) %s   (region %s)
  Credentials        AWS_ACCESS_KEY_ID=%s AWS_SECRET_ACCESS_KEY=%s
  Worker             %s
  Simulated devices  %d (%s .. %s)

Try:
  go run ./starter create-software-update-job --update-targets-architecture x86_64 \
      --update-targets '["arn:aws:iot:%s:000000000000:thing/%s"]' --update-targets-operating-system ubuntu \
      --software-to-update core --s3-url-signer-role arn:aws:iam::000000000000:role/signer
  go run ./agent --thing-name my-device --state-dir /tmp/my-device   (after registering it)

Press Ctrl-C to stop.
`, sf.dataDir, s.Temporal.FrontendAddr(), s.Temporal.Namespace(), cliconfig.DefaultTaskQueue, s.Temporal.UIURL(),
				s.Broker.Addr(), s.JobsURL, cliconfig.DefaultRegion, cliconfig.DefaultAccessKeyID, cliconfig.DefaultSecretKey,
				worker, devices, stack.Device(1), stack.Device(max(devices, 1)), cliconfig.DefaultRegion, stack.Device(1))
			waitForInterrupt()
			fmt.Println("stopping")
			return nil
		},
	}
	sf.bind(cmd.Flags(), ".otaflow", "info")
	cmd.Flags().IntVar(&devices, "devices", 0, "also run this many simulated devices")
	cmd.Flags().BoolVar(&noWorker, "no-worker", false, "do not run the rollout worker in this process")
	return cmd
}
