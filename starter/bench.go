package main

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/otaflow/otaflow/internal/bench"
	"github.com/otaflow/otaflow/internal/cliconfig"
	"github.com/otaflow/otaflow/internal/pgserver"
)

func benchCmd() *cobra.Command {
	var (
		sizes, output string
		simSizes      string
		gateSizes     string
		consoleSizes  string
		save          string
		cpuProfile    string
		o             bench.Options
		quick         bool
		postgres      bool
		memProfile    string
	)
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure otaflow on this machine, each figure beside a baseline, and print one table",
		Long: `bench starts the local stack (in memory) and measures:
  - rollout throughput (devices/min) for each --sizes, zero-time installs, every device its own
    agent and MQTT connection (in "starter fleet" child processes), beside the same devices given
    one job by the jobs service alone (no Temporal): the ratio is the orchestration's cost
    (each agent takes one unmeasured job first, and each run starts once the fleet is quiet);
  - the rollout's workflow history length at each size;
  - notify latency, CreateJob → the device's notify-next, beside a raw MQTT publish → receive;
  - the agent: stripped binary size, idle RSS and CPU, peak RSS while installing an
    --artifact-mb artifact for real;
  - download throughput of that artifact through the agent's downloader beside curl.
Throughput figures are medians of --repeat runs. Run it from the repository (it builds ./agent).`,
		Example: "  starter bench                 # 100, 1,000 and 10,000 devices; 500 MiB artifact\n  starter bench --quick -o json",
		RunE: func(cmd *cobra.Command, _ []string) error {
			if quick {
				sizes, o.Repeat, o.Samples, o.ArtifactMB = "100,1000", 1, 50, 50
			}
			var err error
			if o.Sizes, err = deviceCounts("--sizes", sizes); err != nil {
				return err
			}
			if o.SimulatedSizes, err = deviceCounts("--simulated-sizes", simSizes); err != nil {
				return err
			}
			if o.GateSizes, err = deviceCounts("--gate-sizes", gateSizes); err != nil {
				return err
			}
			if o.ConsoleSizes, err = deviceCounts("--console-things", consoleSizes); err != nil {
				return err
			}
			if output != "text" && output != "json" {
				return fmt.Errorf("-o must be text or json")
			}
			exe, err := os.Executable()
			if err != nil {
				return err
			}
			o.Starter, o.Progress = exe, os.Stderr
			if o.Logger, err = cliconfig.Logger("error", false); err != nil {
				return err
			}
			if cpuProfile != "" {
				f, err := os.Create(cpuProfile)
				if err != nil {
					return err
				}
				defer f.Close()
				if err := pprof.StartCPUProfile(f); err != nil {
					return err
				}
				defer pprof.StopCPUProfile()
			}
			if o.Replicas > 1 && !postgres {
				return fmt.Errorf("--replicas %d: replicas share a PostgreSQL database; add --postgres", o.Replicas)
			}
			if postgres {
				dir, err := os.MkdirTemp("", "otaflow-bench-pg-")
				if err != nil {
					return err
				}
				defer os.RemoveAll(dir)
				fmt.Fprintln(os.Stderr, "starting Debian's PostgreSQL (fsync on) for the jobs service's store")
				pg, err := pgserver.Start(dir, pgserver.Options{Durable: true})
				if err != nil {
					return err
				}
				defer pg.Stop()
				o.PostgresURL, o.PostgresPIDs = pg.URL, pg.PIDs
			}
			if memProfile != "" {
				o.AfterRollout = func() {
					f, err := os.Create(memProfile)
					if err == nil {
						runtime.GC()
						pprof.WriteHeapProfile(f)
						f.Close()
					}
				}
			}
			res, err := bench.Run(cmd.Context(), o)
			if err != nil {
				return err
			}
			if save != "" {
				raw, _ := json.MarshalIndent(res, "", "  ")
				if err := os.WriteFile(save, append(raw, '\n'), 0o644); err != nil {
					return err
				}
			}
			if output == "json" {
				enc := json.NewEncoder(os.Stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(res)
			}
			printBench(os.Stdout, res)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&sizes, "sizes", "100,1000,10000", "fleet sizes for throughput and history length")
	f.StringVar(&consoleSizes, "console-things", "", "fleet sizes at which one open console tab is measured: bytes and stack CPU a minute, e.g. 100000")
	f.StringVar(&gateSizes, "gate-sizes", "", "fleet sizes at which one health gate evaluation is timed, on bbolt (on PostgreSQL with --postgres), e.g. 10000,100000")
	f.StringVar(&simSizes, "simulated-sizes", "", "fleet sizes driven by the light protocol-level simulator (8 MQTT sessions for all devices, no agents), e.g. 100000,1000000")
	f.IntVar(&o.Repeat, "repeat", 3, "runs per throughput figure (the median is reported)")
	f.IntVar(&o.Samples, "samples", 200, "notify latency samples (0 skips)")
	f.IntVar(&o.ArtifactMB, "artifact-mb", 500, "artifact size for the install and download figures (0 skips)")
	f.IntVar(&o.DeltaMB, "delta-mb", 0, "tree size for the delta update figures: releases changing 1, 10 and 50 percent installed as deltas and in full by two real agents, and 10 successive publishes (0 skips; e.g. 100)")
	f.IntVar(&o.DeltaPublishes, "delta-publishes", 10, "successive releases published for the chunk store's growth (with --delta-mb)")
	f.StringVar(&o.AgentPackage, "agent-package", "./agent", "agent package to build for its footprint (\"\" skips)")
	f.IntVar(&o.DevicesPerProcess, "devices-per-process", 5000, "simulated devices per fleet process")
	f.IntVar(&o.Replicas, "replicas", 1, "with --postgres: jobs service replicas serving the devices at once (through an MQTT shared subscription)")
	f.BoolVar(&postgres, "postgres", false, "keep the jobs service's state in PostgreSQL (Debian's, started for the run, fsync on) instead of bbolt")
	f.BoolVar(&quick, "quick", false, "a short run: 100 and 1,000 devices once, 50 samples, 50 MiB")
	f.StringVarP(&output, "output", "o", "text", "text or json")
	f.StringVar(&save, "save", "", "also write the results as JSON to this file")
	f.StringVar(&memProfile, "memprofile", "", "write a heap profile of the stack's process to this file after each rollout (with every device still connected)")
	f.StringVar(&cpuProfile, "cpuprofile", "", "write a CPU profile of the stack's process (Temporal, worker, jobs service, broker) to this file")
	return cmd
}

// deviceCounts parses a comma-separated list of fleet sizes ("" is none).
func deviceCounts(flag, list string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(list, ",") {
		if strings.TrimSpace(f) == "" {
			continue
		}
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("%s %q: give device counts like 100,1000,10000", flag, list)
		}
		out = append(out, n)
	}
	return out, nil
}

func printBench(w io.Writer, r *bench.Results) {
	m := r.Machine
	fmt.Fprintf(w, "otaflow benchmark, %s, %d CPUs (%s), %s, %s\n\n", m.Date, m.CPUs, m.Model, m.OS, m.GoVersion)
	if len(r.Throughput) > 0 {
		fmt.Fprintf(w, "%-9s %16s %18s %8s %15s %8s %8s\n", "devices", "rollout dev/min", "baseline dev/min", "ratio", "history events", "rollout", "baseline")
		for _, t := range r.Throughput {
			fmt.Fprintf(w, "%-9d %16.0f %18.0f %8.2f %15d %7.1fs %7.1fs\n", t.Devices, t.RolloutPerMin, t.BaselinePerMin, t.Ratio, t.HistoryEvents, t.RolloutSeconds, t.BaselineSeconds)
		}
		fmt.Fprintf(w, "(medians of %d runs; baseline = the same devices given one job by the jobs service alone)\n", r.Throughput[0].RepeatsEachSide)
		for _, t := range r.Throughput {
			ops := slices.Sorted(maps.Keys(t.DeviceCalls))
			for i, op := range ops {
				ops[i] = fmt.Sprintf("%s %.2f", op, float64(t.DeviceCalls[op])/float64(t.Devices))
			}
			fmt.Fprintf(w, "%-9d control-plane calls per device %.2f, device (MQTT) calls per device %.2f (%s)\n", t.Devices, t.ControlCallsPerDevice, t.DeviceCallsPerDevice, strings.Join(ops, ", "))
			pg := ""
			if t.PostgresCPUSecondsPerDevice > 0 {
				pg = fmt.Sprintf(", PostgreSQL %.2f ms", t.PostgresCPUSecondsPerDevice*1000)
			}
			kind := "agents"
			if t.Simulated {
				kind = "simulated"
			}
			if t.DevicesCPUSecondsPerDevice > 0 {
				pg += fmt.Sprintf(" (the devices' own %.2f ms)", t.DevicesCPUSecondsPerDevice*1000)
			}
			fmt.Fprintf(w, "%-9d %s; jobs store %s; stack CPU per device %.2f ms%s; stack peak RSS %.0f MiB; history %d events, %d bytes; at AWS's 1,000/min: %.1f min; registered in %.1f s\n",
				t.Devices, kind, t.Store, t.StackCPUSecondsPerDevice*1000, pg, t.StackPeakRSSMiB, t.HistoryEvents, t.HistoryBytes, t.AWSRolloutMinutes, t.RegistrationSeconds)
			if t.WarmUpSeconds > 0 {
				fmt.Fprintf(w, "%-9d each agent's first job, before the measured runs: %.1f s (not in the figures)\n", t.Devices, t.WarmUpSeconds)
			}
		}
		fmt.Fprintln(w)
	}
	if l := r.Notify; l != nil {
		fmt.Fprintf(w, "notify latency (%d samples)   job created → notify-next  p50 %.2f ms  p99 %.2f ms\n", l.Samples, l.P50ms, l.P99ms)
		fmt.Fprintf(w, "                              raw MQTT publish → receive p50 %.2f ms  p99 %.2f ms\n\n", l.RawP50ms, l.RawP99ms)
	}
	if a := r.Agent; a != nil {
		fmt.Fprintf(w, "agent   stripped binary %.1f MB   idle RSS %.1f MiB   idle CPU %.2f%% (%.0fs)\n", float64(a.BinaryBytes)/1e6, float64(a.IdleRSSKiB)/1024, a.IdleCPUPercent, a.IdleSeconds)
		if a.InstallMB > 0 {
			fmt.Fprintf(w, "        peak RSS %.1f MiB while installing a %d MiB artifact (%.1fs: download, verify, unpack, switch)\n", float64(a.InstallPeakRSSKiB)/1024, a.InstallMB, a.InstallSeconds)
		}
		fmt.Fprintln(w)
	}
	if d := r.Download; d != nil {
		fmt.Fprintf(w, "download of %d MiB   agent %.0f MB/s   curl %.0f MB/s   ratio %.2f (medians of 5)\n", d.MB, d.AgentMBps, d.CurlMBps, d.Ratio)
	}
	if d := r.Delta; d != nil {
		fmt.Fprintf(w, "\ndelta updates of a %d MiB tree (two real agents: one builds each release from the last, one downloads it whole)\n", d.MB)
		fmt.Fprintf(w, "%-8s %10s %9s %11s %7s %11s %7s %6s %9s %9s %9s %9s\n", "changed", "changed", "index", "full bytes", "full s", "delta bytes", "delta s", "ratio", "delta CPU", "delta RSS", "full CPU", "full RSS")
		for _, x := range d.Rows {
			fmt.Fprintf(w, "%6d %% %10s %9s %11s %7.2f %11s %7.2f %6.3f %8.2fs %6.1f MiB %8.2fs %5.1f MiB\n", x.ChangedPercent, humanBytes(x.ChangedBytes), humanBytes(x.IndexBytes),
				humanBytes(x.FullBytes), x.FullSeconds, humanBytes(x.DeltaBytes), x.DeltaSeconds, x.Ratio, x.AgentCPUSeconds, float64(x.AgentPeakRSSKiB)/1024, x.FullCPUSeconds, float64(x.FullPeakRSSKiB)/1024)
		}
		fmt.Fprintf(w, "(ratio: delta bytes / (changed + index); goal at most 1.3)\n")
		for _, p := range d.Publish {
			fmt.Fprintf(w, "publish %2d: %.2fs, %d chunks added; chunk store %s, full artifacts %s\n", p.Release, p.Seconds, p.ChunksAdded, humanBytes(p.ChunkBytes), humanBytes(p.FullBytes))
		}
		fmt.Fprintln(w)
	}
	for _, c := range r.Console {
		fmt.Fprintf(w, "console at %d things: one open tab %s and %.2f s of stack CPU a minute (the idle stack %.2f s); overview %.0f ms, device list page %.0f ms (median); registration %.0f s\n",
			c.Things, humanBytes(c.BytesPerMinute), c.CPUSecondsPerMinute, c.IdleCPUSecondsPerMinute, c.OverviewMs, c.DevicesMs, c.PopulateSeconds)
	}
	for _, g := range r.Gates {
		fmt.Fprintf(w, "health gate at %d things on %s: one evaluation %.0f ms (median of 5; 8 aggregations through the REST API); index built in %.1f s; registration %.0f s\n",
			g.Things, g.Store, g.EvaluateMs, g.IndexBuildSeconds, g.PopulateSeconds)
	}
}
