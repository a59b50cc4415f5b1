package main

import (
	"cmp"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/otaflow/otaflow/internal/cliconfig"
	"github.com/otaflow/otaflow/internal/rolloutclient"
	"github.com/otaflow/otaflow/internal/stack"
	"github.com/otaflow/otaflow/workflows/contract"
)

// demoSummary is what `starter demo -o json` prints.
type demoSummary struct {
	RolloutID        string                `json:"rolloutId"`
	WorkflowID       string                `json:"workflowId"`
	State            string                `json:"state"`
	Message          string                `json:"message,omitempty"`
	FromVersion      string                `json:"fromVersion"`
	Version          string                `json:"version"`
	Devices          int                   `json:"devices"`
	Counts           contract.Counts       `json:"counts"`
	DevicesOnVersion int                   `json:"devicesOnVersion"`
	JobID            string                `json:"jobId"`
	JobArn           string                `json:"jobArn"`
	DurationSeconds  float64               `json:"durationSeconds"`
	Waves            []contract.WaveResult `json:"waves"`
	WebUI            string                `json:"webUI,omitempty"`
}

func demoCmd() *cobra.Command {
	var (
		sf          stackFlags
		devices     int
		fail        int
		unhealthy   int
		keep        bool
		output      string
		fromVersion string
		version     string
		installTime time.Duration
		simulate    bool
		degrade     int
		degradeIn   time.Duration
		rf          rolloutFlags
	)
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run the whole local stack and one rollout to simulated devices, end to end",
		Long: `demo starts everything in this process: an embedded Temporal server with its web UI, an
MQTT broker, the jobs service (AWS IoT Jobs API), the rollout worker and N simulated devices.
It then rolls a new core version out to every device, shows progress, and prints a summary.
It exits 0 only if every device updated.

Devices install for real, each in its own directory under the data directory: the new version
is packed, signed with a fresh fleet key and published to the jobs service's artifact store;
each device downloads it through a presigned URL, checks its SHA-256 and signature, runs its
managedRespawn scripts, unpacks it into a new slot, switches, and health-checks it (rolling
back on failure). --simulate skips all of that and only pretends to install.`,
		Example: "  starter demo --devices 50\n  starter demo --devices 20 --fail 2 -o json\n  starter demo --degrade 2 --on-failure ROLLBACK   # a release that misbehaves after installing\n  starter demo --keep   # keep the stack and web UI up afterwards",
		RunE: func(cmd *cobra.Command, _ []string) error {
			if devices < 1 {
				return fmt.Errorf("--devices must be at least 1")
			}
			if fail < 0 || unhealthy < 0 || degrade < 0 || fail+unhealthy+degrade > devices {
				return fmt.Errorf("--fail, --unhealthy and --degrade together must be between 0 and --devices (%d)", devices)
			}
			if degrade > 0 && simulate {
				return fmt.Errorf("--degrade needs real installs: the degraded release fails its signed health check after a while (drop --simulate)")
			}
			if !cmd.Flags().Changed("health-action") {
				rf.healthAction = contract.HealthAbort // nobody is there to override a held demo
			}
			if degrade > 0 && rf.healthWindow == 0 {
				// A health gate that watches each wave long enough to see the release degrade.
				rf.healthWindow, rf.healthInterval = 3*degradeIn, time.Second
			}
			if unhealthy > 0 && rf.bake == 0 {
				rf.bake = 2 * time.Second
			}
			if output != "text" && output != "json" {
				return fmt.Errorf("-o must be text or json")
			}
			log, err := cliconfig.Logger(sf.logLevel, false)
			if err != nil {
				return err
			}
			if sf.dataDir == "" {
				dir, err := os.MkdirTemp("", "otaflow-demo-")
				if err != nil {
					return err
				}
				sf.dataDir = dir
				defer os.RemoveAll(dir)
			}
			ctx := cmd.Context()
			errOut := os.Stderr
			for _, m := range sf.freeDefaults(cmd.Flags()) {
				fmt.Fprintln(errOut, m)
			}
			fmt.Fprintf(errOut, "starting the local stack (Temporal, web UI, MQTT broker, jobs service, worker) in %s\n", sf.dataDir)
			so := sf.options(log)
			if rf.healthWindow > 0 {
				so.DeviceHealthInterval = min(rf.healthInterval, time.Minute)
			}
			s, err := stack.Start(ctx, so)
			if err != nil {
				return err
			}
			defer s.Close()
			fmt.Fprintf(errOut, "stack up: Temporal %s, web UI %s, MQTT %s (mutual TLS, local CA %s) and tcp://%s (plain: local use only), jobs API %s\n",
				s.Temporal.FrontendAddr(), cmp.Or(s.Temporal.UIURL(), "off"), s.Broker.TLSURL(), s.CA.CertFile(), s.Broker.Addr(), s.JobsURL)
			var failing, sick, degrading []string
			for i := devices - fail + 1; i <= devices; i++ {
				failing = append(failing, stack.Device(i))
			}
			for i := devices - fail - unhealthy + 1; i <= devices-fail; i++ {
				sick = append(sick, stack.Device(i))
			}
			// The degrading devices are the first after the canary: the rollout should stop at
			// the second wave, not reach the fleet.
			for i := 2; i < 2+degrade; i++ {
				degrading = append(degrading, stack.Device(i))
			}
			var fleet *stack.RealFleet
			if !simulate {
				if fleet, err = s.UseRealInstalls(ctx, fromVersion, failing); err != nil {
					return err
				}
			}
			fmt.Fprintf(errOut, "registering %s and starting their agents (on %s)\n", devicesN(devices), fromVersion)
			arns, err := s.StartDevices(ctx, devices, fromVersion, installTime)
			if err != nil {
				return err
			}

			rolloutID := "demo-" + time.Now().UTC().Format("20060102-150405")
			req := contract.RolloutRequest{
				RolloutID: rolloutID, Targets: arns, Architecture: "x86_64", OperatingSystem: "ubuntu",
				SoftwareToUpdate: "core", Version: version, UpdateAgentLogLevel: "WARN",
				S3URLSignerRole: "arn:aws:iam::000000000000:role/otaflow-local-signer",
				PollInterval:    250 * time.Millisecond,
			}
			if err := rf.apply(&req); err != nil {
				return err
			}
			if fleet != nil {
				rel, err := fleet.Publish(ctx, version, stack.DegradingHealthCheck(version, sick, degrading, degradeIn))
				if err != nil {
					return err
				}
				req.Artifact = rel.Artifact
				fmt.Fprintf(errOut, "published core %s: %s (%d bytes, sha256 %s…, signed as a TUF target with its health check)\n", version, rel.Artifact.URL, rel.Length, rel.SHA256[:12])
			} else {
				// Simulated devices take the artifact as downloaded, but as agents they refuse a
				// job without one: the demo publishes the release all the same.
				rel, err := s.PublishRelease(ctx, "core", version)
				if err != nil {
					return err
				}
				req.Artifact = rel.Artifact
				s.SetDeviceFaults(failing, sick)
			}
			start := time.Now()
			run, err := rolloutclient.Start(ctx, s.Client, contract.TaskQueue, req)
			if err != nil {
				return err
			}
			fmt.Fprintf(errOut, "rollout %s started: updating core %s -> %s on %s\n", rolloutID, fromVersion, version, devicesN(devices))
			stop := make(chan struct{})
			watched := make(chan struct{})
			go func() {
				watchRollout(ctx, s.Client, s.IoT, rolloutID, devices, errOut, stop)
				close(watched)
			}()
			res, runErr := rolloutclient.Result(ctx, run)
			close(stop)
			<-watched

			onVersion := 0
			for _, a := range s.Agents() {
				if a.InstalledVersion("core") == version {
					onVersion++
				}
			}
			sum := demoSummary{
				RolloutID: rolloutID, WorkflowID: run.GetID(), State: res.State, Message: res.Message,
				FromVersion: fromVersion, Version: version, Devices: res.Devices, Counts: res.Counts,
				DevicesOnVersion: onVersion, JobID: res.JobID, JobArn: res.JobArn, Waves: res.Waves,
				DurationSeconds: time.Since(start).Round(time.Millisecond).Seconds(),
			}
			if ui := s.Temporal.UIURL(); ui != "" {
				sum.WebUI = fmt.Sprintf("%s/namespaces/%s/workflows/%s/%s/history", ui, s.Temporal.Namespace(), url.PathEscape(run.GetID()), run.GetRunID())
			}
			if runErr != nil && res.State == "" {
				return fmt.Errorf("rollout %s: %w", rolloutID, runErr)
			}
			printDemoSummary(sum, output)
			if keep {
				fmt.Fprintf(errOut, "\nthe stack stays up: web UI %s, Temporal %s, MQTT tcp://%s, jobs API %s (access key %s).\npress Ctrl-C to stop.\n",
					s.Temporal.UIURL(), s.Temporal.FrontendAddr(), s.Broker.Addr(), s.JobsURL, cliconfig.DefaultAccessKeyID)
				cliconfig.WaitForInterrupt()
			}
			if res.State != contract.StateSucceeded {
				return exitError{code: 1}
			}
			return nil
		},
	}
	sf.bind(cmd.Flags(), "", "warn")
	cmd.Flags().IntVar(&devices, "devices", 10, "number of simulated devices")
	cmd.Flags().IntVar(&fail, "fail", 0, "make this many devices' updates fail (their pre-update script fails; to see a failed rollout)")
	cmd.Flags().IntVar(&unhealthy, "unhealthy", 0, "make this many devices fail their health check on the new version (they roll themselves back)")
	cmd.Flags().IntVar(&degrade, "degrade", 0, "make this many devices' new version install cleanly, then fail its health check after --degrade-after: the health gate stops the rollout (adds --health-window if not given)")
	cmd.Flags().DurationVar(&degradeIn, "degrade-after", 3*time.Second, "how long the degrading devices' new version stays healthy")
	cmd.Flags().BoolVar(&simulate, "simulate", false, "simulate installs (the release is published, but devices download nothing and have no slots or scripts)")
	cmd.Flags().BoolVar(&keep, "keep", false, "keep the stack and web UI running after the rollout, until Ctrl-C")
	cmd.Flags().StringVarP(&output, "output", "o", "text", "summary format: text or json")
	cmd.Flags().StringVar(&fromVersion, "from-version", "1.10.2", "core version the devices start on")
	cmd.Flags().StringVar(&version, "version", "1.11.6", "core version to roll out")
	cmd.Flags().DurationVar(&installTime, "install-time", 200*time.Millisecond, "how long each install takes with --simulate")
	rf.bind(cmd.Flags(), 5*time.Minute)
	cmd.Flags().Lookup("waves").DefValue = "1,10%,50%,100%"
	cmd.Flags().Set("waves", "1,10%,50%,100%")
	return cmd
}

func printDemoSummary(s demoSummary, output string) {
	if output == "json" {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		enc.Encode(s)
		return
	}
	fmt.Printf("\nRollout %s: %s\n", s.RolloutID, s.State)
	if s.Message != "" {
		fmt.Printf("  %s\n", s.Message)
	}
	fmt.Printf("  core %s -> %s on %s (ubuntu/x86_64)\n", s.FromVersion, s.Version, devicesN(s.Devices))
	fmt.Printf("  devices:  %s\n", countsLine(s.Counts))
	for _, w := range s.Waves {
		fmt.Printf("  wave %d:   %-8s %11s  job %s  (%s)\n", w.Wave, w.State, devicesN(w.Devices), w.JobID, countsLine(w.Counts))
		printHealth(w.Health)
	}
	fmt.Printf("  on %s: %d of %d (read from each device's own state)\n", s.Version, s.DevicesOnVersion, s.Devices)
	fmt.Printf("  took %.1fs\n", s.DurationSeconds)
	if s.WebUI != "" {
		fmt.Printf("  web UI:   %s\n", s.WebUI)
	}
}
