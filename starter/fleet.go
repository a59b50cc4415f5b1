package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/iot"
	"github.com/spf13/cobra"

	"github.com/otaflow/otaflow/internal/cliconfig"
	"github.com/otaflow/otaflow/internal/fleet"
	"github.com/otaflow/otaflow/internal/iotclient"
	"github.com/otaflow/otaflow/internal/stack"
)

func fleetCmd() *cobra.Command {
	var (
		ic                 cliconfig.IoT
		o                  fleet.Options
		first, devices     int
		register           bool
		stateDir, logLevel string
		connectTimeout     time.Duration
	)
	cmd := &cobra.Command{
		Use:   "fleet",
		Short: "Run simulated devices (one agent and MQTT connection each) against a broker until Ctrl-C",
		Long: `fleet runs N simulated devices in this process, each a real otaflow agent with its own MQTT
connection and state, with simulated installs that take --install-time and fail, turn unhealthy
or crash the device at the given rates (reproducibly, by --seed). Devices are named like the
demo's (device-0001, …). Run several fleets to go past one process's open-file limit; the
benchmark does. It prints "connected N" when every device is connected.`,
		Example: "  starter fleet --devices 1000 --register --failure-rate 0.01 --crash-rate 0.05",
		RunE: func(cmd *cobra.Command, _ []string) error {
			if devices < 1 || first < 1 {
				return fmt.Errorf("--devices and --first must be at least 1")
			}
			for _, r := range []float64{o.FailureRate, o.UnhealthyRate, o.CrashRate} {
				if r < 0 || r > 1 {
					return fmt.Errorf("rates must be from 0 to 1")
				}
			}
			log, err := cliconfig.Logger(logLevel, outputJSON(cmd))
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			for i := first; i < first+devices; i++ {
				o.Things = append(o.Things, stack.Device(i))
			}
			if register {
				ic.Resolve()
				c, err := iotclient.ForCLI(ctx, &ic)
				if err != nil {
					return err
				}
				for _, t := range o.Things {
					if _, err := c.CreateThing(ctx, &iot.CreateThingInput{ThingName: aws.String(t)}); err != nil {
						return fmt.Errorf("register %s: %w", t, err)
					}
				}
			}
			if stateDir == "" {
				if stateDir, err = os.MkdirTemp("", "otaflow-fleet-"); err != nil {
					return err
				}
				defer os.RemoveAll(stateDir)
			}
			o.StateDir, o.Logger = stateDir, log
			f, err := fleet.Start(o)
			if err != nil {
				return err
			}
			defer f.Close()
			wctx, cancel := context.WithTimeout(ctx, connectTimeout)
			defer cancel()
			if err := f.WaitConnected(wctx); err != nil {
				return fmt.Errorf("devices did not connect to %s: %w", o.BrokerURL, err)
			}
			emit(cmd, map[string]int{"connected": devices}, "connected %d\n", devices)
			sig := make(chan os.Signal, 1)
			signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
			<-sig
			fmt.Fprintf(os.Stderr, "fleet: stopping %d devices (%d simulated crashes)\n", devices, f.Crashes())
			return nil
		},
	}
	fs := cmd.Flags()
	ic.Bind(fs)
	fs.StringVar(&o.BrokerURL, "broker", "tcp://"+cliconfig.DefaultMQTTAddr, "MQTT broker URL")
	fs.IntVar(&devices, "devices", 10, "number of devices")
	fs.IntVar(&first, "first", 1, "number of the first device (device-0001 is 1)")
	fs.BoolVar(&register, "register", false, "register the things with the jobs API first")
	fs.StringVar(&stateDir, "state-dir", "", "where devices keep state (default: a temporary directory)")
	fs.StringVar(&o.InitialVersion, "initial-version", "1.10.2", "core version the devices start on")
	fs.StringSliceVar(&o.Staged, "staged", nil, "versions already on every device's disk (its spare slot): a job without an artifact may switch to them; any other version needs a published release, as on a real device")
	fs.DurationVar(&o.InstallTime, "install-time", 200*time.Millisecond, "how long each simulated install takes")
	fs.Float64Var(&o.FailureRate, "failure-rate", 0, "chance that an install fails")
	fs.Float64Var(&o.UnhealthyRate, "unhealthy-rate", 0, "chance that a device is unhealthy after installing (it rolls itself back)")
	fs.Float64Var(&o.CrashRate, "crash-rate", 0, "chance that a device crashes mid-install (it reboots and resumes)")
	fs.Uint64Var(&o.Seed, "seed", 1, "seed of the fault choices")
	fs.StringVar(&logLevel, "log-level", "warn", "log level")
	fs.DurationVar(&connectTimeout, "connect-timeout", 2*time.Minute, "how long devices may take to connect")
	return cmd
}
