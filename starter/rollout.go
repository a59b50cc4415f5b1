package main

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/iot"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"go.temporal.io/sdk/client"
	"sigs.k8s.io/yaml"

	"github.com/otaflow/otaflow/internal/cliconfig"
	"github.com/otaflow/otaflow/internal/iotclient"
	"github.com/otaflow/otaflow/internal/rolloutclient"
	"github.com/otaflow/otaflow/internal/rolloutops"
	"github.com/otaflow/otaflow/internal/temporalconf"
	"github.com/otaflow/otaflow/workflows/contract"
)

// rolloutFlags are the staged-rollout controls shared by every command that starts one.
type rolloutFlags struct {
	waves            string
	threshold        float64
	abortType        string
	abortThreshold   float64
	abortMinExecuted int
	approveWaves     bool
	twoPerson        bool
	onFailure        string
	deviceTimeout    time.Duration
	retries          int
	timeout          time.Duration
	bake             time.Duration
	downloadRate     int64
	noDelta          bool
	rate             int
	healthWindow     time.Duration
	healthInterval   time.Duration
	healthAction     string
	healthCriteria   string
	noHealthDefaults bool
	restartsRatio    float64
	metricBounds     []string
	healthMinSample  int
	webhooks         []string
}

func (f *rolloutFlags) bind(fs *pflag.FlagSet, defaultTimeout time.Duration) {
	fs.StringVar(&f.waves, "waves", "", `waves as cumulative counts or percentages, e.g. "1,10%,50%,100%" (default: one wave)`)
	fs.Float64Var(&f.threshold, "success-threshold", 100, "percent of a wave's devices that must succeed before the next wave starts")
	fs.StringVar(&f.abortType, "abort-failure-type", "", "abort a wave early on this outcome: FAILED, REJECTED, TIMED_OUT or ALL")
	fs.Float64Var(&f.abortThreshold, "abort-threshold", 20, "abort when this percent of a wave's finished devices ended in --abort-failure-type")
	fs.IntVar(&f.abortMinExecuted, "abort-min-executed", 1, "...once at least this many devices of the wave have finished")
	fs.BoolVar(&f.approveWaves, "approve-waves", false, "wait for `starter rollout approve` before every wave after the first")
	fs.BoolVar(&f.twoPerson, "two-person", false, "with --approve-waves: each wave must be approved by someone other than who started the rollout (needs the jobs service, which names them)")
	fs.StringVar(&f.onFailure, "on-failure", contract.OnFailureDoNothing, "on abort or cancel: ROLLBACK updated devices to their previous version, or DO_NOTHING")
	fs.DurationVar(&f.deviceTimeout, "device-timeout", 0, "a device IN_PROGRESS longer than this is TIMED_OUT (minutes; 0: no limit)")
	fs.IntVar(&f.retries, "retries", 0, "retries for a device that FAILED or TIMED_OUT")
	fs.DurationVar(&f.timeout, "rollout-timeout", defaultTimeout, "cancel the job and end the rollout if devices have not finished by then")
	fs.IntVar(&f.rate, "rate-limit", 0, "at most this many devices per minute per wave (0: no limit)")
	fs.BoolVar(&f.noDelta, "no-delta", false, "devices download the full artifact instead of building the release from the version they run (for agents older than delta updates, which refuse a job naming the chunk store)")
	fs.Int64Var(&f.downloadRate, "download-bytes-per-second", 0, "cap each device's download rate for this update (0: no cap; a device's own lower cap stands)")
	fs.DurationVar(&f.bake, "bake-time", 0, "a device counts as updated only after staying healthy this long after installing")
	fs.DurationVar(&f.healthWindow, "health-window", 0, "after each wave, watch the updated devices' health this long before the next (0: no health gate); docs/health.md")
	fs.DurationVar(&f.healthInterval, "health-interval", time.Minute, "evaluate the health criteria this often during --health-window")
	fs.StringVar(&f.healthAction, "health-action", contract.HealthPause, "on a health breach: pause (for `starter rollout override-health` or cancel) or abort (with --on-failure ROLLBACK, updated devices go back)")
	fs.StringVar(&f.healthCriteria, "health-criteria", "", "JSON or YAML file with health criteria (a list of {name, metric, statistic, over, max, maxRatio, minSample})")
	fs.Float64Var(&f.restartsRatio, "health-restarts-ratio", 0, "breach when the updated devices' restarts per device exceed this many times the control cohort's (e.g. 3; 0: not judged)")
	fs.StringArrayVar(&f.metricBounds, "health-max", nil, "breach when a health metric's statistic exceeds a bound: METRIC[:STATISTIC]=MAX, e.g. metrics.errors:p95=10 or restarts=2 (statistic default average; repeatable)")
	fs.IntVar(&f.healthMinSample, "health-min-sample", 10, "devices that must report a metric before --health-restarts-ratio and --health-max judge it")
	fs.BoolVar(&f.noHealthDefaults, "no-health-defaults", false, "judge only --health-criteria, not the defaults (offline since the update, reboot loops, failing health checks)")
	fs.StringSliceVar(&f.webhooks, "webhook", nil, "POST the rollout's events (started, wave passed, awaiting approval, health gate breached, rolled back, succeeded, aborted...) to this URL, signed with the worker's --webhook-secret (repeatable; docs/production.md)")
	cliconfig.Env(fs, "webhook", "OTAFLOW_WEBHOOKS")
}

// parseMetricBound reads METRIC[:STATISTIC]=MAX.
func parseMetricBound(b string) (contract.HealthCriterion, error) {
	lhs, rhs, ok := strings.Cut(b, "=")
	max, err := strconv.ParseFloat(strings.TrimSpace(rhs), 64)
	if !ok || err != nil {
		return contract.HealthCriterion{}, fmt.Errorf("--health-max %q: write METRIC[:STATISTIC]=MAX, e.g. metrics.errors:p95=10", b)
	}
	metric, stat, _ := strings.Cut(strings.TrimSpace(lhs), ":")
	if stat == "" {
		stat = "average"
	}
	return contract.HealthCriterion{Name: stat + " of " + metric, Metric: metric, Statistic: stat, Max: &max}, nil
}

// healthGate reads the health flags; nil without --health-window.
func (f *rolloutFlags) healthGate() (*contract.HealthGate, error) {
	if f.healthWindow == 0 {
		if f.healthCriteria != "" || f.noHealthDefaults || f.restartsRatio > 0 || len(f.metricBounds) > 0 {
			return nil, fmt.Errorf("health criteria need --health-window: how long to watch each wave after it updated")
		}
		return nil, nil
	}
	g := &contract.HealthGate{Window: f.healthWindow, Interval: f.healthInterval, Action: strings.ToLower(f.healthAction), NoDefaults: f.noHealthDefaults}
	if f.restartsRatio > 0 {
		g.Criteria = append(g.Criteria, contract.HealthCriterion{Name: "restarts per device", Metric: "restarts", Statistic: "average",
			MaxRatio: f.restartsRatio, MinSample: f.healthMinSample})
	}
	for _, b := range f.metricBounds {
		c, err := parseMetricBound(b)
		if err != nil {
			return nil, err
		}
		c.MinSample = f.healthMinSample
		g.Criteria = append(g.Criteria, c)
	}
	if f.healthCriteria != "" {
		raw, err := os.ReadFile(f.healthCriteria)
		if err != nil {
			return nil, fmt.Errorf("--health-criteria: %w", err)
		}
		var fromFile []contract.HealthCriterion
		if err := yaml.UnmarshalStrict(raw, &fromFile); err != nil {
			return nil, fmt.Errorf("--health-criteria %s is not a list of criteria ({name, metric, statistic, over, max, maxRatio, minSample}): %w", f.healthCriteria, err)
		}
		g.Criteria = append(g.Criteria, fromFile...)
	}
	return g, nil
}

func (f *rolloutFlags) apply(r *contract.RolloutRequest) error {
	g, err := f.healthGate()
	if err != nil {
		return err
	}
	r.Health = g
	r.Waves, r.SuccessThresholdPercent, r.ApproveWaves, r.RequireSecondApprover = f.waves, f.threshold, f.approveWaves, f.twoPerson
	r.OnFailure, r.DeviceTimeout, r.Retries, r.Timeout = strings.ToUpper(f.onFailure), f.deviceTimeout, f.retries, f.timeout
	r.BakeTime, r.RateLimitPerMinute, r.DownloadBytesPerSecond, r.NoDelta = f.bake, f.rate, f.downloadRate, f.noDelta
	r.Webhooks = f.webhooks
	if f.abortType != "" {
		r.Abort = &contract.AbortCriteria{FailureType: strings.ToUpper(f.abortType), ThresholdPercent: f.abortThreshold, MinExecuted: f.abortMinExecuted}
	}
	return nil
}

// printPlan resolves the targets and prints what the rollout would do, creating nothing.
func printPlan(ctx context.Context, ic cliconfig.IoT, req contract.RolloutRequest, output string) error {
	ic.Resolve()
	c, err := iotclient.ForCLI(ctx, &ic)
	if err != nil {
		return err
	}
	targets, err := (&rolloutops.Ops{IoT: c}).ResolveTargets(ctx, req)
	if err != nil {
		return err
	}
	sizes, _ := contract.ParseWaves(req.Waves)
	plan := contract.PlanWaves(len(targets.ThingArns), sizes)
	type wavePlan struct {
		Wave    int      `json:"wave"`
		JobID   string   `json:"jobId"`
		Devices []string `json:"devices"`
		Gate    string   `json:"gate"`
	}
	var waves []wavePlan
	prev := 0
	for i, cum := range plan {
		gate := fmt.Sprintf("≥ %.0f%% succeed", req.SuccessThresholdPercent)
		if req.Abort != nil {
			gate += fmt.Sprintf("; abort at %.0f%% %s once %d finished", req.Abort.ThresholdPercent, req.Abort.FailureType, req.Abort.MinExecuted)
		}
		if req.ApproveWaves && i > 0 {
			gate = "approval, then " + gate
		}
		var names []string
		for _, arn := range targets.ThingArns[prev:cum] {
			names = append(names, arn[strings.LastIndex(arn, "/")+1:])
		}
		waves = append(waves, wavePlan{Wave: i + 1, JobID: contract.WaveJobID(req.RolloutID, i+1), Devices: names, Gate: gate})
		prev = cum
	}
	if output == "json" {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(map[string]any{"rolloutId": req.RolloutID, "software": req.SoftwareToUpdate, "version": req.Version,
			"devices": len(targets.ThingArns), "onFailure": req.OnFailure, "waves": waves})
	}
	fmt.Printf("dry run: rollout %s would update %s to %s on %d devices (%s/%s), on failure %s; nothing was created\n",
		req.RolloutID, req.SoftwareToUpdate, req.Version, len(targets.ThingArns), req.OperatingSystem, req.Architecture, req.OnFailure)
	for _, w := range waves {
		shown := w.Devices
		if len(shown) > 8 {
			shown = append(shown[:8:8], fmt.Sprintf("… %d more", len(w.Devices)-8))
		}
		fmt.Printf("  wave %d  %-28s %4d devices  gate: %s\n           %s\n", w.Wave, w.JobID, len(w.Devices), w.Gate, strings.Join(shown, " "))
	}
	return nil
}

func printStatus(res contract.RolloutResult, output string, failed []rolloutclient.DeviceResult, stale []string, late lateDevices) {
	if output == "json" {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		enc.Encode(struct {
			contract.RolloutResult
			FailedDevices []rolloutclient.DeviceResult `json:"failedDevices,omitempty"`
			StaleJobs     []string                     `json:"staleJobs,omitempty"`
			UpdatedLate   int                          `json:"updatedLate,omitempty"`
		}{res, failed, stale, len(late.devices)})
		return
	}
	// Paused reads the same here as in `rollout list` and the console: PAUSED while it would
	// otherwise run, "(paused)" beside any other state (a pause holds the next wave).
	state := res.State
	switch {
	case res.Paused && state == contract.StateRunning:
		state = contract.StatePaused
	case res.Paused:
		state += " (paused)"
	}
	fmt.Printf("rollout %s: %s  version %s  wave %d of %d\n", res.RolloutID, state, res.Version, res.CurrentWave, len(res.Waves))
	if res.Message != "" {
		fmt.Printf("  %s\n", res.Message)
	}
	fmt.Printf("  total %s: %s\n", devicesN(res.Devices), countsLine(res.Counts))
	if n := len(late.devices); n > 0 {
		fmt.Printf("  updated late: %d of the timed-out devices installed %s all the same (their report came after the timeout); they run it, and a rollback includes them\n", n, res.Version)
	} else if late.note != "" {
		fmt.Printf("  (%s)\n", late.note)
	}
	for _, w := range res.Waves {
		fmt.Printf("  wave %d  %-9s %4d devices  %s\n", w.Wave, w.State, w.Devices, countsLine(w.Counts))
		printHealth(w.Health)
	}
	if len(stale) > 0 {
		fmt.Printf("  (counts of %s are the rollout's last poll: the jobs service did not answer)\n", strings.Join(stale, ", "))
	}
	if rb := res.Rollback; rb != nil {
		fmt.Printf("  rollback: %d of %d devices rolled back, %d failed %s %s\n", rb.RolledBack, rb.Devices, rb.Failed, strings.Join(rb.FailedDevices, " "), rb.Message)
	}
	printFailed(os.Stdout, failed)
}

// printDownloads shows how each device downloaded the release and the rollout's totals.
func printDownloads(devices []rolloutclient.DeviceResult, output string) {
	t := rolloutclient.Downloads(devices)
	if output == "json" {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		enc.Encode(struct {
			Totals  rolloutclient.DownloadTotals `json:"downloads"`
			Devices []rolloutclient.DeviceResult `json:"devices"`
		}{t, devices})
		return
	}
	if t.Delta+t.Full == 0 {
		fmt.Println("  downloads: no device has reported one yet")
		return
	}
	fmt.Printf("  downloads: %d delta, %d full; %s fetched of %s in full (%.0f %%)\n", t.Delta, t.Full,
		humanBytes(t.BytesFetched), humanBytes(t.ArtifactBytes), 100*float64(t.BytesFetched)/float64(max(t.ArtifactBytes, 1)))
	for _, d := range devices {
		if d.Download == "" {
			continue
		}
		note := ""
		if d.DownloadNote != "" {
			note = "  (" + d.DownloadNote + ")"
		}
		fmt.Printf("    %-28s %-5s %10s of %10s%s\n", d.Thing, d.Download, humanBytes(d.BytesFetched), humanBytes(d.ArtifactBytes), note)
	}
}

// humanBytes is n in B, KiB, MiB or GiB.
func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	v, i := float64(n)/unit, 0
	for v >= unit && i < 2 {
		v /= unit
		i++
	}
	return fmt.Sprintf("%.1f %s", v, []string{"KiB", "MiB", "GiB"}[i])
}

// printHealth shows a wave's health gate: its state, and each criterion's updated and
// control values.
func printHealth(h *contract.HealthGateResult) {
	if h == nil {
		return
	}
	line := fmt.Sprintf("    health gate %s after %d evaluations", h.State, h.Evaluations)
	if h.State == contract.HealthObserving {
		line += " (until " + h.Until.Format(time.Kitchen) + ")"
	}
	fmt.Println(line)
	if h.Reason != "" {
		fmt.Printf("      %s\n", h.Reason)
	}
	if o := h.Override; o != nil {
		fmt.Printf("      overridden by %s at %s: %s\n", o.By, o.At.Format(time.RFC3339), o.Reason)
	}
	for _, v := range h.Last {
		verdict := "ok"
		if v.Breached {
			verdict = "BREACHED"
		}
		fmt.Printf("      %-36s updated %g (n=%d)  control %g (n=%d)  %s %s\n", v.Criterion, v.Updated, v.UpdatedN, v.Control, v.ControlN, verdict, v.Note)
	}
}

// printFailed lists devices that did not update, each with the reason its agent gave.
func printFailed(out *os.File, failed []rolloutclient.DeviceResult) {
	if len(failed) == 0 {
		return
	}
	fmt.Fprintf(out, "  devices that did not update (%d shown):\n", len(failed))
	for _, d := range failed {
		fmt.Fprintf(out, "    %-28s %-10s %s\n", d.Thing, d.Status, cmp.Or(d.Reason, "(no reason reported)"))
	}
}

// terminal reports whether a rollout state is final.
func terminal(state string) bool {
	switch state {
	case contract.StateSucceeded, contract.StateFailed, contract.StateAborted, contract.StateCanceled, contract.StateTimedOut, contract.StateInvalid:
		return true
	}
	return false
}

// failedShown is how many failed devices status and --wait list with their reasons.
const failedShown = 20

func rolloutCmd() *cobra.Command {
	var tc temporalconf.Temporal
	var ic cliconfig.IoT
	var output string
	cmd := &cobra.Command{Use: "rollout", Short: "Watch and steer running rollouts"}
	tc.Bind(cmd.PersistentFlags())
	ic.Bind(cmd.PersistentFlags())
	cmd.PersistentFlags().StringVarP(&output, "output", "o", "text", "text or json")

	var watch, downloads bool
	status := &cobra.Command{
		Use: "status ROLLOUT_ID", Short: "Show a rollout's state, waves, live device counts and failed devices with their reasons", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			iotc, err := iotclient.ForCLI(cmd.Context(), &ic)
			if err != nil {
				return err
			}
			return withTemporal(cmd.Context(), &tc, func(c client.Client) error {
				for {
					res, stale, err := rolloutclient.LiveStatus(cmd.Context(), c, iotc, args[0])
					if err != nil {
						return err
					}
					var failed []rolloutclient.DeviceResult
					if res.Counts.Failed+res.Counts.Rejected+res.Counts.TimedOut > 0 {
						failed, _ = rolloutclient.DeviceResults(cmd.Context(), iotc, res, true, failedShown)
					}
					var late lateDevices
					if res.Counts.TimedOut > 0 {
						late = findLate(cmd.Context(), iotc, res, failed)
					}
					if watch && output == "text" {
						fmt.Print("\033[H\033[2J")
					}
					printStatus(res, output, failed, stale, late)
					if downloads {
						devices, err := rolloutclient.DeviceResults(cmd.Context(), iotc, res, false, 0)
						if err != nil {
							return err
						}
						printDownloads(devices, output)
					}
					if !watch || terminal(res.State) {
						return nil
					}
					time.Sleep(time.Second)
				}
			})
		},
	}
	status.Flags().BoolVar(&downloads, "downloads", false, "also list how each device downloaded the release (delta or full, bytes fetched against the full size) and the rollout's totals; reads every device's execution")
	status.Flags().BoolVarP(&watch, "watch", "w", false, "refresh every second (counts read live from the jobs service) until the rollout ends")

	list := &cobra.Command{
		Use: "list", Short: "List rollouts, newest first (scheduled runs included)",
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withTemporal(cmd.Context(), &tc, func(c client.Client) error {
				rows, err := rolloutclient.List(cmd.Context(), c, 100)
				if err != nil {
					return err
				}
				if output == "json" {
					return json.NewEncoder(os.Stdout).Encode(rows)
				}
				fmt.Printf("%-36s %-10s %-18s %-12s %s\n", "ROLLOUT", "VERSION", "STATE", "WORKFLOW", "STARTED")
				for _, r := range rows {
					fmt.Printf("%-36s %-10s %-18s %-12s %s\n", r.RolloutID, r.Version, r.State, r.Status, r.Started.Format(time.RFC3339))
				}
				return nil
			})
		},
	}

	// control is a steering command; every one takes --reason (recorded in the rollout's
	// history and, through the jobs service, the audit log).
	control := func(name, short string, action func() string, defaultReason string) *cobra.Command {
		var reason string
		c := &cobra.Command{
			Use: name + " ROLLOUT_ID", Short: short, Args: cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				out, err := steerRollout(cmd.Context(), &tc, ic, args[0], action(), reason)
				if err != nil {
					return err
				}
				if output == "json" {
					return json.NewEncoder(os.Stdout).Encode(out.Status)
				}
				res := out.Status
				fmt.Printf("%s: done; rollout %s is %s: %s\n", name, res.RolloutID, res.State, res.Message)
				return nil
			},
		}
		c.Flags().StringVar(&reason, "reason", defaultReason, "why (recorded with the rollout and in the audit log)")
		return c
	}
	fixed := func(a string) func() string { return func() string { return a } }
	var rollback, noRollback bool
	cancel := control(contract.UpdateCancel, "Cancel a rollout: no device starts the update once this returns (with --rollback, updated devices go back)", func() string {
		switch {
		case rollback:
			return rolloutclient.ActionCancelRollback
		case noRollback:
			return rolloutclient.ActionCancelNoRollback
		}
		return contract.UpdateCancel
	}, "canceled from the CLI")
	cancel.Flags().BoolVar(&rollback, "rollback", false, "roll updated devices back, whatever the rollout's policy")
	cancel.Flags().BoolVar(&noRollback, "no-rollback", false, "leave updated devices as they are, whatever the rollout's policy")
	cancel.MarkFlagsMutuallyExclusive("rollback", "no-rollback")

	var rbWait, rbAnyway bool
	var rbReason string
	rollbackCmd := &cobra.Command{
		Use:   "rollback ROLLOUT_ID",
		Short: "Put every device a finished rollout updated back on the version it had before",
		Long: `Rolls a finished rollout back: for every device that succeeded in its waves, a rollback job
returns it to the version its agent reported having before (the one still in its other slot).
One rollback per rollout: asking again shows the first. A running rollout is refused: use
'rollout cancel --rollback' for it. So is one that later rollouts of the same devices moved on
(a device returns only to the version it ran just before): roll the latest back first, or
give --anyway to roll back the devices they did not reach.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			action := rolloutclient.ActionRollback
			if rbAnyway {
				action = rolloutclient.ActionRollbackAnyway
			}
			out, err := steerRollout(cmd.Context(), &tc, ic, args[0], action, rbReason)
			if err != nil {
				return err
			}
			if note := out.LaterNote(args[0]); note != "" {
				fmt.Fprintln(os.Stderr, note)
			}
			if !rbWait {
				if output == "json" {
					return json.NewEncoder(os.Stdout).Encode(map[string]any{"workflowId": out.RollbackWorkflow, "message": out.Message})
				}
				fmt.Printf("%s; `starter rollout rollback --wait %s` waits for it\n", out.Message, args[0])
				return nil
			}
			return withTemporal(cmd.Context(), &tc, func(c client.Client) error {
				rb, err := rolloutclient.RollbackResult(cmd.Context(), c.GetWorkflow(cmd.Context(), out.RollbackWorkflow, ""))
				if output == "json" {
					json.NewEncoder(os.Stdout).Encode(rb)
				} else {
					fmt.Printf("rollback of %s: %d of %d devices rolled back, %d failed %s %s\n", args[0], rb.RolledBack, rb.Devices, rb.Failed, strings.Join(rb.FailedDevices, " "), rb.Message)
				}
				if err != nil {
					fmt.Fprintln(os.Stderr, "starter:", err)
					return exitError{code: 1}
				}
				return nil
			})
		},
	}
	rollbackCmd.Flags().BoolVar(&rbWait, "wait", false, "wait for the rollback to finish; exit 1 unless every device rolled back")
	rollbackCmd.Flags().StringVar(&rbReason, "reason", "rolled back from the CLI", "why, recorded in the rollback")
	rollbackCmd.Flags().BoolVar(&rbAnyway, "anyway", false, "roll back although later rollouts target the same devices (those they moved on refuse it)")

	override := control(contract.UpdateOverrideHealth, "Go on past a breached health gate (recorded with who and why)", fixed(rolloutclient.ActionOverrideHealth), "")
	override.Flags().Lookup("reason").Usage = "why the breach may be ignored (required; recorded with the rollout)"
	pause := control(contract.UpdatePause, "Pause: no new wave starts until resumed", fixed(contract.UpdatePause), "")
	resume := control(contract.UpdateResume, "Resume a paused rollout", fixed(contract.UpdateResume), "")
	approve := control(contract.UpdateApprove, "Approve the next wave of a rollout that waits for approval (under --two-person, not by who started it)", fixed(contract.UpdateApprove), "")
	cmd.AddCommand(status, list, override, pause, resume, approve, cancel, rollbackCmd)
	return cmd
}

// startRollout starts a rollout through the jobs service when the CLI has one (which checks
// the key's role, records it in the audit log and names the key as the rollout's starter, as
// the two-person rule needs), on Temporal directly against AWS.
func startRollout(ctx context.Context, c client.Client, tc *temporalconf.Temporal, ic cliconfig.IoT, req contract.RolloutRequest) (client.WorkflowRun, error) {
	ic.Resolve()
	if ic.Endpoint == "" {
		return rolloutclient.Start(ctx, c, tc.TaskQueue, req)
	}
	ac, err := accessClient(ctx, &ic)
	if err != nil {
		return nil, err
	}
	st, err := ac.StartRollout(ctx, req)
	if err != nil {
		return nil, err
	}
	return c.GetWorkflow(ctx, st.WorkflowID, st.RunID), nil
}

// steerRollout steers a rollout through the jobs service when the CLI has one: the service
// checks the key's role, records the change in the audit log and names the key in the
// rollout's history. Against AWS (--jobs-endpoint aws) it steers on Temporal directly, naming
// the local user, which Temporal does not check.
func steerRollout(ctx context.Context, tc *temporalconf.Temporal, ic cliconfig.IoT, rolloutID, action, reason string) (rolloutclient.Steered, error) {
	ic.Resolve()
	if ic.Endpoint != "" {
		ac, err := accessClient(ctx, &ic)
		if err != nil {
			return rolloutclient.Steered{}, err
		}
		return ac.Steer(ctx, rolloutID, action, reason)
	}
	var out rolloutclient.Steered
	err := withTemporal(ctx, tc, func(c client.Client) error {
		var err error
		out, err = rolloutclient.Steer(ctx, c, tc.TaskQueue, rolloutID, action, os.Getenv("USER"), reason)
		return err
	})
	return out, err
}

// decodeKeyword reads a keyword search attribute's JSON payload.
func decodeKeyword(data []byte) string {
	var s string
	if json.Unmarshal(data, &s) != nil {
		return ""
	}
	return s
}

// withTemporal runs fn with a client connected to Temporal as tc says, and closes it after.
func withTemporal(ctx context.Context, tc *temporalconf.Temporal, fn func(c client.Client) error) error {
	c, err := tc.Dial(ctx, quietLogger())
	if err != nil {
		return err
	}
	defer c.Close()
	return fn(c)
}

// lateDevices are a rollout's devices that the service timed out although they installed the
// update (device truth: rolloutops/late.go), or why they cannot be known.
type lateDevices struct {
	devices []rolloutops.LateDevice
	note    string
}

// findLate looks the rollout's late devices up in the fleet index and marks them among failed.
func findLate(ctx context.Context, iotc *iot.Client, res contract.RolloutResult, failed []rolloutclient.DeviceResult) lateDevices {
	var jobs []string
	for _, w := range res.Waves {
		if w.JobID != "" {
			jobs = append(jobs, w.JobID)
		}
	}
	devices, note, err := (&rolloutops.Ops{IoT: iotc}).LateDevices(ctx, jobs)
	if err != nil {
		return lateDevices{note: "late devices could not be looked up: " + err.Error()}
	}
	by := map[string]rolloutops.LateDevice{}
	for _, d := range devices {
		by[d.Thing] = d
	}
	for i, f := range failed {
		if d, ok := by[f.Thing]; ok && f.Status == "TIMED_OUT" {
			failed[i].Late, failed[i].Version, failed[i].Previous = true, d.Version, d.Previous
			failed[i].Reason = "updated late: timed out by the service, then reported success; runs " + d.Version
		}
	}
	return lateDevices{devices: devices, note: note}
}
