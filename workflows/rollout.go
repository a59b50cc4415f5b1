package workflows

import (
	"cmp"
	"errors"
	"fmt"
	"github.com/otaflow/otaflow/workflows/contract"
	"strings"
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"
)

// reportEvery bounds one AwaitJob call: the status query's wave counts are refreshed this
// often (and when a wave ends or aborts). Every report is six history events, so a 30 s bound
// made the history grow with the rollout's length (162 events for a million devices, 36 for
// 100,000); what people watch (rollout status, --watch, the console) reads the counts live
// from the jobs service (rolloutclient.LiveStatus), and the activity heartbeats them.
const reportEvery = time.Hour

// Rollout runs one over-the-air update in waves: validate, resolve the targets, then for each
// wave create its IoT job, wait for the devices and check the gate. It can be paused, resumed,
// approved between waves and canceled (Temporal Updates); on abort or cancel it cancels the
// current job and, under the ROLLBACK policy, puts updated devices back on their old version.
func Rollout(ctx workflow.Context, req contract.RolloutRequest) (*contract.RolloutResult, error) {
	r := &rollout{req: req, res: contract.RolloutResult{RolloutID: req.RolloutID, Version: req.Version, State: contract.StateValidating}}
	if err := r.setup(ctx); err != nil {
		return nil, err
	}
	res, err := r.run(ctx)
	var can *workflow.ContinueAsNewError
	if !errors.As(err, &can) {
		r.release(ctx) // a continued run still needs the groups
	}
	return res, err
}

// versionFrozenTargets: from this version on, a rollout resolves its targets once into one
// static thing group per wave (FreezeTargets) and the workflow keeps only the groups; before
// it, every run resolved them again and carried the device list. Recorded histories of the
// old behaviour still replay.
const versionFrozenTargets = 1

// release deletes the rollout's thing groups once it has ended, so no device keeps a group
// membership (AWS allows a thing ten) after its rollout.
func (r *rollout) release(ctx workflow.Context) {
	var groups []string
	for _, w := range r.res.Waves {
		if w.Group != "" {
			groups = append(groups, w.Group)
		}
	}
	if rb := r.res.Rollback; rb != nil {
		groups = append(groups, rb.Groups...)
	}
	if len(groups) == 0 {
		return
	}
	dctx, _ := workflow.NewDisconnectedContext(ctx)
	dctx = workflow.WithActivityOptions(dctx, workflow.ActivityOptions{
		StartToCloseTimeout: 5 * time.Minute,
		RetryPolicy:         &temporal.RetryPolicy{InitialInterval: time.Second, MaximumInterval: 30 * time.Second, MaximumAttempts: 10},
	})
	if err := execute(dctx, contract.Activities.ReleaseTargets, contract.ReleaseTargetsInput{Groups: groups}).Get(dctx, nil); err != nil {
		workflow.GetLogger(ctx).Warn("could not delete the rollout's thing groups", "groups", groups, "error", err)
	}
}

type rollout struct {
	req       contract.RolloutRequest
	res       contract.RolloutResult
	approved  int // the highest wave approved to start
	waiting   bool
	cancelReq *contract.CancelRequest
	// canceled wakes a wave's poll when a cancel update arrives.
	canceled workflow.Channel
	// failedWave is the wave whose failures aborted the rollout, if any.
	failedWave int
	// deadline ends the wait for devices: the rollout's timeout of device work, pushed back by
	// every wait at a gate (approval, pause, maintenance window) when gatesExcluded.
	deadline time.Time
	// live: this run (not a replayed older one) excludes gate waits from the timeout, stops
	// watching a wave at once on a cancel, and answers a cancel once its jobs are canceled.
	live bool
	// jobsCanceled is set once an abort has canceled the running wave's job.
	jobsCanceled bool
	// events counts the webhook events this run sent.
	events int
}

// versionOperatorView: from this version on, the timeout counts device work only (waits for
// approval, a pause or a maintenance window push the deadline back), a cancel stops the wave's
// poll without waiting for the poll to notice, and the cancel update returns once the jobs are
// canceled (state CANCELING or ROLLING_BACK) rather than before anything happened.
const versionOperatorView = 1

func (r *rollout) finished() bool {
	switch r.res.State {
	case contract.StateSucceeded, contract.StateFailed, contract.StateAborted, contract.StateCanceled, contract.StateTimedOut, contract.StateInvalid:
		return true
	}
	return false
}

func (r *rollout) setup(ctx workflow.Context) error {
	r.canceled = workflow.NewBufferedChannel(ctx, 1)
	if err := workflow.SetQueryHandler(ctx, contract.QueryStatus, func() (contract.RolloutResult, error) { return r.res, nil }); err != nil {
		return err
	}
	active := func() error {
		if r.finished() || r.res.State == contract.StateRollingBack || r.res.State == contract.StateCanceling {
			return fmt.Errorf("rollout %s is %s", r.req.RolloutID, r.res.State)
		}
		return nil
	}
	handlers := []struct {
		name     string
		fn       any
		validate any
	}{
		{contract.UpdatePause, func(ctx workflow.Context, s contract.SteerRequest) (contract.RolloutResult, error) {
			r.res.Paused = true
			r.setState(ctx, r.res.State, "paused by "+cmp.Or(s.By, "operator")+withReason(s.Reason)+": no new wave starts until resumed")
			return r.res, nil
		}, func(contract.SteerRequest) error {
			if err := active(); err != nil {
				return err
			}
			if r.res.Paused {
				return errors.New("rollout is already paused")
			}
			return nil
		}},
		{contract.UpdateResume, func(ctx workflow.Context, s contract.SteerRequest) (contract.RolloutResult, error) {
			r.res.Paused = false
			r.setState(ctx, r.res.State, "resumed by "+cmp.Or(s.By, "operator")+withReason(s.Reason))
			return r.res, nil
		}, func(contract.SteerRequest) error {
			if !r.res.Paused {
				return errors.New("rollout is not paused")
			}
			return nil
		}},
		{contract.UpdateApprove, func(ctx workflow.Context, s contract.SteerRequest) (contract.RolloutResult, error) {
			r.approved = r.res.CurrentWave + 1
			if s.By != "" {
				r.res.Approvals = append(r.res.Approvals, contract.Approval{Wave: r.approved, By: s.By, At: workflow.Now(ctx)})
			}
			return r.res, nil
		}, func(s contract.SteerRequest) error {
			if !r.waiting {
				return fmt.Errorf("nothing waits for approval: the rollout is %s", r.res.State)
			}
			if !r.req.RequireSecondApprover {
				return nil
			}
			if s.By == "" {
				return fmt.Errorf("rollout %s follows the two-person rule: an approval must name its approver; approve in the console or with `starter rollout approve` through the jobs service", r.req.RolloutID)
			}
			if s.By == r.req.StartedBy {
				return fmt.Errorf("two-person rule: %s started rollout %s and may not approve its waves; another operator must", s.By, r.req.RolloutID)
			}
			return nil
		}},
		{contract.UpdateCancel, func(ctx workflow.Context, c contract.CancelRequest) (contract.RolloutResult, error) {
			r.cancelReq = &c
			r.canceled.SendAsync(true)
			if r.live {
				// Answer once no device can start the update any more.
				if err := workflow.Await(ctx, func() bool { return r.jobsCanceled || r.finished() }); err != nil {
					return r.res, err
				}
			}
			return r.res, nil
		}, func(c contract.CancelRequest) error {
			if err := active(); err != nil {
				return err
			}
			if r.cancelReq != nil {
				return errors.New("rollout is already being canceled")
			}
			return nil
		}},
		{contract.UpdateOverrideHealth, func(ctx workflow.Context, o contract.OverrideRequest) (contract.RolloutResult, error) {
			if w := r.breachedWave(); w != nil {
				w.Health.State = contract.HealthOverridden
				w.Health.Override = &contract.Override{By: o.By, Reason: o.Reason, At: workflow.Now(ctx)}
				r.setState(ctx, contract.StateRunning, fmt.Sprintf("wave %d: health gate overridden by %s: %s", w.Wave, o.By, o.Reason))
			}
			return r.res, nil
		}, func(o contract.OverrideRequest) error {
			if r.breachedWave() == nil {
				return errors.New("no health gate is breached: there is nothing to override")
			}
			if strings.TrimSpace(o.Reason) == "" {
				return errors.New("say why the breach may be ignored (--reason): it is recorded with the rollout")
			}
			return nil
		}},
	}
	for _, h := range handlers {
		if err := workflow.SetUpdateHandlerWithOptions(ctx, h.name, h.fn, workflow.UpdateHandlerOptions{Validator: h.validate}); err != nil {
			return err
		}
	}
	return nil
}

func (r *rollout) run(ctx workflow.Context) (*contract.RolloutResult, error) {
	if r.req.RolloutIDFromWorkflowID {
		r.req.RolloutID = contract.RolloutIDFor(workflow.GetInfo(ctx).WorkflowExecution.ID)
		r.res.RolloutID = r.req.RolloutID
	}
	if err := r.req.Validate(); err != nil {
		r.setState(ctx, contract.StateInvalid, err.Error())
		return nil, temporal.NewNonRetryableApplicationError(err.Error(), contract.ErrInvalidRequest, nil, r.res)
	}
	short := workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		StartToCloseTimeout: 5 * time.Minute,
		HeartbeatTimeout:    time.Minute,
		RetryPolicy: &temporal.RetryPolicy{
			InitialInterval: time.Second, BackoffCoefficient: 2, MaximumInterval: 30 * time.Second,
			MaximumAttempts: 20, NonRetryableErrorTypes: []string{contract.ErrInvalidRequest},
		},
	})

	r.live = workflow.GetVersion(ctx, "operator-view", workflow.DefaultVersion, versionOperatorView) == versionOperatorView
	if r.req.Version == "" && r.req.LatestReleaseBucket != "" {
		// "The newest published release": which one is decided now, once, and kept.
		var latest contract.LatestReleaseResult
		if err := execute(short, contract.Activities.LatestRelease, contract.LatestReleaseInput{Software: r.req.SoftwareToUpdate, Bucket: r.req.LatestReleaseBucket,
			OS: r.req.OperatingSystem, Architecture: r.req.Architecture}).Get(ctx, &latest); err != nil {
			r.setState(ctx, contract.StateInvalid, "the newest published release could not be found: "+rootMessage(err))
			return nil, temporal.NewNonRetryableApplicationError(r.res.Message, contract.ErrInvalidRequest, err, r.res)
		}
		r.req.Version, r.req.Artifact = latest.Version, &contract.Artifact{URL: latest.ArtifactURL}
		r.res.Version = latest.Version
		workflow.GetLogger(ctx).Info("rolling out the newest published release", "version", latest.Version, "bucket", r.req.LatestReleaseBucket)
	}
	r.deadline = workflow.Now(ctx).Add(r.req.Timeout)
	frozen := workflow.GetVersion(ctx, "frozen-targets", workflow.DefaultVersion, versionFrozenTargets) == versionFrozenTargets
	resumed := r.req.Resume != nil
	if resumed {
		// A continued run: the waves, their jobs and the approvals so far carry over.
		rs := r.req.Resume
		r.res, r.approved, r.deadline = rs.Result, rs.Approved, rs.Deadline
		r.req.Resume = nil
		// Its waves' groups hold the devices frozen when the rollout began: nothing is resolved
		// again, so a membership change since can neither skip nor repeat a device.
		frozen = frozen && len(r.res.Waves) > 0 && (r.res.Waves[0].Group != "" || len(r.res.Waves[0].Targets) > 0)
	}
	// things is the device list of rollouts started before targets were frozen.
	var things []string
	switch {
	case frozen && !resumed:
		var f contract.FreezeTargetsResult
		if err := execute(short, contract.Activities.FreezeTargets, contract.FreezeTargetsInput{Request: r.req}).Get(ctx, &f); err != nil {
			r.setState(ctx, contract.StateInvalid, "targets could not be resolved: "+rootMessage(err))
			return nil, temporal.NewNonRetryableApplicationError(r.res.Message, contract.ErrInvalidRequest, err, r.res)
		}
		r.res.Devices = f.Devices
		for i, w := range f.Waves {
			r.res.Waves = append(r.res.Waves, contract.WaveResult{Wave: i + 1, Devices: w.Devices, Group: w.Group, GroupArn: w.GroupArn, Targets: w.Targets, State: contract.WavePending})
		}
	case !frozen:
		var targets contract.ResolveTargetsResult
		if err := execute(short, contract.Activities.ResolveTargets, r.req).Get(ctx, &targets); err != nil {
			r.setState(ctx, contract.StateInvalid, "targets could not be resolved: "+rootMessage(err))
			return nil, temporal.NewNonRetryableApplicationError(r.res.Message, contract.ErrInvalidRequest, err, r.res)
		}
		things = targets.ThingArns
		if !resumed {
			r.res.Devices = len(things)
			sizes, _ := contract.ParseWaves(r.req.Waves) // validated above
			plan := contract.PlanWaves(len(things), sizes)
			prev := 0
			for i, cum := range plan {
				r.res.Waves = append(r.res.Waves, contract.WaveResult{Wave: i + 1, Devices: cum - prev, State: contract.WavePending})
				prev = cum
			}
		}
	}
	if !resumed {
		r.res.Counts = contract.Counts{Queued: r.res.Devices}
		r.approved = 1
		r.setState(ctx, contract.StateRunning, fmt.Sprintf("%d devices in %d wave(s)", r.res.Devices, len(r.res.Waves)))
		r.event(ctx, contract.EventStarted, 0)
	}

	start := 0
	for i := range r.res.Waves {
		wave := &r.res.Waves[i]
		if wave.State == contract.WavePassed {
			start += wave.Devices
			continue
		}
		if wave.State != contract.WaveRunning { // a wave resumed after continue-as-new is running already
			waveThings := wave.Targets
			if wave.Group == "" && len(wave.Targets) == 0 {
				end := min(start+wave.Devices, len(things))
				waveThings = things[min(start, end):end]
			}
			if res, err := r.startWave(ctx, short, i, wave, waveThings); res != nil || err != nil {
				return res, err
			}
		}
		start += wave.Devices
		outcome, why := r.awaitWave(ctx, wave)
		switch outcome {
		case waveContinueAsNew:
			// The history is long: carry on in a fresh run (the wave's job keeps going meanwhile).
			if err := workflow.Await(ctx, func() bool { return workflow.AllHandlersFinished(ctx) }); err != nil {
				return nil, err
			}
			next := r.req
			next.Resume = &contract.RolloutResume{Result: r.res, Approved: r.approved, Deadline: r.deadline}
			return nil, workflow.NewContinueAsNewError(ctx, Rollout, next)
		case waveTimedOut:
			return r.abort(ctx, contract.StateTimedOut, why)
		case waveCanceled:
			return r.abort(ctx, contract.StateCanceled, why)
		case waveAborted:
			r.failedWave = wave.Wave
			return r.abort(ctx, contract.StateAborted, why)
		}
		c := wave.Counts
		pct := 100 * float64(c.Succeeded) / float64(max(wave.Devices, 1))
		if pct < r.req.SuccessThresholdPercent {
			wave.State = contract.WaveFailed
			why := fmt.Sprintf("wave %d: %d of %d devices updated (%.0f%%), below the %.0f%% success threshold (failed %d, rejected %d, timed out %d, canceled %d, removed %d)",
				wave.Wave, c.Succeeded, wave.Devices, pct, r.req.SuccessThresholdPercent, c.Failed, c.Rejected, c.TimedOut, c.Canceled, c.Removed)
			last := i == len(r.res.Waves)-1
			if last && r.req.OnFailure != contract.OnFailureRollback {
				r.setState(ctx, contract.StateFailed, why)
				return nil, temporal.NewNonRetryableApplicationError(r.res.Message, contract.ErrRolloutFailed, nil, r.res)
			}
			return r.abort(ctx, contract.StateAborted, why)
		}
		wave.State = contract.WavePassed
		if r.req.Health != nil {
			if res, err := r.observeHealth(ctx, short, i); res != nil || err != nil {
				return res, err
			}
		}
		r.event(ctx, contract.EventWavePassed, wave.Wave)
		// Between waves is the cheapest place to start a fresh run when the history is long:
		// no job is in flight, and the next run starts the next wave from the frozen groups.
		if i < len(r.res.Waves)-1 && r.cancelReq == nil && workflow.GetInfo(ctx).GetContinueAsNewSuggested() &&
			workflow.GetVersion(ctx, "continue-as-new-between-waves", workflow.DefaultVersion, 1) >= 1 {
			if err := workflow.Await(ctx, func() bool { return workflow.AllHandlersFinished(ctx) }); err != nil {
				return nil, err
			}
			next := r.req
			next.Resume = &contract.RolloutResume{Result: r.res, Approved: r.approved, Deadline: r.deadline}
			return nil, workflow.NewContinueAsNewError(ctx, Rollout, next)
		}
	}
	c := r.res.Counts
	msg := fmt.Sprintf("all %d devices updated to %s", c.Succeeded, r.req.Version)
	if c.Succeeded < r.res.Devices {
		msg = fmt.Sprintf("%d of %d devices updated to %s; every wave met its %.0f%% threshold", c.Succeeded, r.res.Devices, r.req.Version, r.req.SuccessThresholdPercent)
	}
	r.setState(ctx, contract.StateSucceeded, msg)
	return &r.res, nil
}

// breachedWave is the wave whose health gate is breached and waits for the operator.
func (r *rollout) breachedWave() *contract.WaveResult {
	for i := range r.res.Waves {
		if h := r.res.Waves[i].Health; h != nil && h.State == contract.HealthBreached && r.req.Health.Action != contract.HealthAbort {
			return &r.res.Waves[i]
		}
	}
	return nil
}

// observeHealth watches the health of the devices of waves 1..i+1 for the gate's window,
// evaluating its criteria every interval (durable timers: a worker restart keeps the window).
// A breach aborts the rollout or waits for the operator's override or cancel.
func (r *rollout) observeHealth(ctx, short workflow.Context, i int) (*contract.RolloutResult, error) {
	g := r.req.Health
	wave := &r.res.Waves[i]
	if wave.Health == nil {
		wave.Health = &contract.HealthGateResult{State: contract.HealthObserving, Until: workflow.Now(ctx).Add(g.Window)}
	}
	var updated, control []string
	for j, w := range r.res.Waves {
		groups := waveGroups(w)
		if j <= i {
			updated = append(updated, groups...)
		} else {
			control = append(control, groups...)
		}
	}
	waves := fmt.Sprintf("wave %d", wave.Wave)
	if i > 0 {
		waves = fmt.Sprintf("waves 1-%d", wave.Wave)
	}
	criteria := g.All()
	// Watching is a gate, not device work: it does not count against the rollout's timeout.
	gateStart := workflow.Now(ctx)
	defer func() {
		if r.live {
			r.deadline = r.deadline.Add(workflow.Now(ctx).Sub(gateStart))
		}
	}()
	r.setState(ctx, contract.StateObserving, fmt.Sprintf("%s: watching the health of the updated devices until %s (%d criteria, every %s)",
		waves, wave.Health.Until.Format(time.RFC3339), len(criteria), g.Interval))
	for wave.Health.State == contract.HealthObserving {
		left := wave.Health.Until.Sub(workflow.Now(ctx))
		if left <= 0 {
			wave.Health.State = contract.HealthPassed
			break
		}
		r.sleepOrCancel(ctx, min(g.Interval, left))
		if r.cancelReq != nil {
			return r.abort(ctx, contract.StateCanceled, r.canceledBy()+": "+r.cancelReq.Reason)
		}
		now := workflow.Now(ctx)
		var res contract.EvaluateHealthResult
		err := execute(short, contract.Activities.EvaluateHealth, contract.EvaluateHealthInput{
			Criteria: criteria, Version: r.req.Version, Waves: waves, UpdatedGroups: updated, ControlGroups: control,
			StaleBefore: now.Add(-3 * g.Interval).Unix(),
		}).Get(ctx, &res)
		if err != nil {
			// The gate cannot see: that is no reason to go on.
			res.Breach = "the health gate could not be evaluated: " + rootMessage(err)
		}
		result := "passed"
		switch {
		case err != nil:
			result = "error"
		case res.Breach != "":
			result = "breached"
		}
		workflow.GetMetricsHandler(ctx).WithTags(map[string]string{"result": result}).Counter("otaflow_health_gate_evaluations").Inc(1)
		h := wave.Health
		h.Evaluations++
		h.Last = res.Values
		if len(res.Values) > 0 {
			p := res.Values[0]
			for _, v := range res.Values {
				if v.Breached {
					p = v
					break
				}
			}
			h.History = append(h.History, contract.HealthPoint{At: now, Criterion: p.Criterion, Updated: p.Updated, Control: p.Control})
			if len(h.History) > contract.MaxHealthHistory {
				h.History = h.History[len(h.History)-contract.MaxHealthHistory:]
			}
		}
		if res.Breach == "" {
			continue
		}
		h.State, h.Reason = contract.HealthBreached, res.Breach
		workflow.GetLogger(ctx).Warn("health gate breached", "wave", wave.Wave, "reason", res.Breach)
		r.event(ctx, contract.EventHealthBreached, wave.Wave)
		if g.Action == contract.HealthAbort {
			wave.State = contract.WaveFailed
			r.failedWave = wave.Wave
			return r.abort(ctx, contract.StateAborted, "health gate breached: "+res.Breach)
		}
		r.setState(ctx, contract.StateObserving, fmt.Sprintf("health gate breached, rollout held: %s. Override with `starter rollout override-health %s --reason ...`, or cancel (with --rollback to put the updated devices back)",
			res.Breach, r.req.RolloutID))
		if err := workflow.Await(ctx, func() bool { return r.cancelReq != nil || h.State != contract.HealthBreached }); err != nil {
			return nil, err
		}
		if r.cancelReq != nil {
			return r.abort(ctx, contract.StateCanceled, r.canceledBy()+" after the health gate breached: "+r.cancelReq.Reason)
		}
	}
	if wave.Health.State == contract.HealthPassed {
		r.setState(ctx, contract.StateRunning, fmt.Sprintf("%s: health gate passed after %d evaluations", waves, wave.Health.Evaluations))
	}
	return nil, nil
}

// waveGroups are the thing groups that hold a wave's devices.
func waveGroups(w contract.WaveResult) []string {
	if w.Group != "" {
		return []string{w.Group}
	}
	var out []string
	for _, t := range w.Targets {
		if _, name, ok := strings.Cut(t, ":thinggroup/"); ok {
			out = append(out, name)
		}
	}
	return out
}

// sleepOrCancel waits d (a durable timer) or until a cancel arrives, whichever is first.
func (r *rollout) sleepOrCancel(ctx workflow.Context, d time.Duration) {
	timerCtx, stop := workflow.WithCancel(ctx)
	defer stop()
	timer := workflow.NewTimer(timerCtx, d)
	sel := workflow.NewSelector(ctx)
	sel.AddFuture(timer, func(workflow.Future) {})
	sel.AddReceive(r.canceled, func(workflow.ReceiveChannel, bool) {})
	sel.Select(ctx)
}

// awaitWindow returns once the maintenance window is open (or a cancel arrives).
func (r *rollout) awaitWindow(ctx, actx workflow.Context, wave int) error {
	for r.cancelReq == nil {
		var w contract.WindowState
		if err := execute(actx, contract.Activities.MaintenanceWindow, contract.WindowInput{Window: *r.req.Window, At: workflow.Now(ctx)}).Get(ctx, &w); err != nil {
			r.setState(ctx, contract.StateInvalid, "maintenance window: "+rootMessage(err))
			return temporal.NewNonRetryableApplicationError(r.res.Message, contract.ErrInvalidRequest, err, r.res)
		}
		if w.Open {
			return nil
		}
		r.setState(ctx, contract.StateWaitingWindow, fmt.Sprintf("wave %d waits for the maintenance window opening at %s", wave, w.OpensAt.Format(time.RFC3339)))
		r.sleepOrCancel(ctx, w.OpensAt.Sub(workflow.Now(ctx)))
		if ctx.Err() != nil {
			return nil
		}
	}
	return nil
}

// startWave passes the gates before a wave (cancel, pause, approval, maintenance window) and
// creates its job. A non-nil result or error ends the rollout.
func (r *rollout) startWave(ctx, short workflow.Context, i int, wave *contract.WaveResult, things []string) (*contract.RolloutResult, error) {
	// Gates before the wave: a pause, an approval. Time spent at them is not device work.
	gateStart := workflow.Now(ctx)
	if i > 0 && r.req.ApproveWaves {
		r.waiting = true
		r.setState(ctx, contract.StateAwaiting, fmt.Sprintf("wave %d of %d (%d devices) waits for approval", wave.Wave, len(r.res.Waves), wave.Devices))
	}
	if err := workflow.Await(ctx, func() bool {
		return r.cancelReq != nil || (!r.res.Paused && (!r.req.ApproveWaves || r.approved >= wave.Wave))
	}); err != nil {
		return r.abort(ctx, contract.StateCanceled, "rollout canceled")
	}
	r.waiting = false
	if r.cancelReq == nil && r.req.Window != nil {
		if err := r.awaitWindow(ctx, short, wave.Wave); err != nil {
			return nil, err
		}
	}
	if r.cancelReq != nil {
		return r.abort(ctx, contract.StateCanceled, r.canceledBy()+": "+r.cancelReq.Reason)
	}
	if r.live {
		r.deadline = r.deadline.Add(workflow.Now(ctx).Sub(gateStart))
	}
	r.res.CurrentWave = wave.Wave
	r.setState(ctx, contract.StateRunning, fmt.Sprintf("wave %d of %d: %d devices", wave.Wave, len(r.res.Waves), wave.Devices))

	wave.JobID = contract.WaveJobID(r.req.RolloutID, wave.Wave)
	wave.State = contract.WaveRunning
	var created contract.CreateJobResult
	err := execute(short, contract.Activities.CreateJob, contract.CreateJobInput{
		JobID: wave.JobID, ThingArns: things, GroupArn: wave.GroupArn, Devices: wave.Devices, Request: r.req, Wave: wave.Wave,
	}).Get(ctx, &created)
	if err != nil {
		r.setState(ctx, contract.StateFailed, fmt.Sprintf("the IoT job for wave %d could not be created: %s", wave.Wave, rootMessage(err)))
		return nil, temporal.NewNonRetryableApplicationError(r.res.Message, contract.ErrRolloutFailed, err, r.res)
	}
	if i == 0 {
		r.res.JobID, r.res.JobArn = created.JobID, created.JobArn
	}
	wave.Counts = contract.Counts{Queued: wave.Devices}
	workflow.GetLogger(ctx).Info("wave started", "wave", wave.Wave, "job", wave.JobID, "devices", wave.Devices)
	return nil, nil
}

type waveOutcome int

const (
	waveDone waveOutcome = iota
	waveAborted
	waveTimedOut
	waveCanceled
	waveContinueAsNew
)

// awaitWave polls the wave's job until it is done, crosses the abort criteria, runs past the
// rollout's deadline or the rollout is canceled.
func (r *rollout) awaitWave(ctx workflow.Context, wave *contract.WaveResult) (waveOutcome, string) {
	for {
		if r.cancelReq != nil {
			return waveCanceled, r.canceledBy() + ": " + r.cancelReq.Reason
		}
		remaining := r.deadline.Sub(workflow.Now(ctx))
		if remaining <= 0 {
			why := fmt.Sprintf("devices did not finish within %s", r.req.Timeout)
			if r.live {
				why += " of device work (waits for approval, pauses and maintenance windows not counted)"
			}
			return waveTimedOut, why
		}
		wait := min(remaining, reportEvery)
		actx, cancelPoll := workflow.WithCancel(ctx)
		actx = workflow.WithActivityOptions(actx, workflow.ActivityOptions{
			StartToCloseTimeout: wait + 30*time.Second,
			HeartbeatTimeout:    max(30*time.Second, 3*r.req.PollInterval),
			// An older run waited for the poll to acknowledge a cancel (up to 24 s, the heartbeat
			// throttle) before canceling the job; devices kept starting meanwhile.
			WaitForCancellation: !r.live,
			RetryPolicy:         &temporal.RetryPolicy{InitialInterval: time.Second, BackoffCoefficient: 2, MaximumInterval: 30 * time.Second},
		})
		fut := execute(actx, contract.Activities.AwaitJob, contract.AwaitJobInputMax{
			AwaitJobInput: contract.AwaitJobInput{JobID: wave.JobID, PollInterval: r.req.PollInterval, Abort: r.req.Abort}, MaxWait: wait,
		})
		var progress contract.AwaitJobResult
		var err error
		interrupted := false
		sel := workflow.NewSelector(ctx)
		sel.AddFuture(fut.Future, func(workflow.Future) { err = fut.Get(ctx, &progress) })
		sel.AddReceive(r.canceled, func(c workflow.ReceiveChannel, _ bool) { interrupted = true })
		sel.Select(ctx)
		cancelPoll()
		if interrupted {
			if !r.live {
				_ = fut.Get(ctx, nil)
			}
			return waveCanceled, r.canceledBy() + ": " + r.cancelReq.Reason
		}
		if ctx.Err() != nil {
			return waveCanceled, "rollout canceled"
		}
		if err != nil {
			return waveTimedOut, "waiting for devices failed: " + rootMessage(err)
		}
		r.updateCounts(wave, progress.Counts)
		if progress.Aborted != "" {
			return waveAborted, fmt.Sprintf("wave %d crossed the abort criteria: %s", wave.Wave, progress.Aborted)
		}
		if progress.Done {
			return waveDone, ""
		}
		if workflow.GetInfo(ctx).GetContinueAsNewSuggested() && r.cancelReq == nil {
			return waveContinueAsNew, ""
		}
	}
}

// updateCounts records a wave's counts and recomputes the totals: devices of later waves are
// still to be queued.
func (r *rollout) updateCounts(wave *contract.WaveResult, c contract.Counts) {
	wave.Counts = c
	r.recount()
}

// recount sums the waves into the totals.
func (r *rollout) recount() {
	var total contract.Counts
	for _, w := range r.res.Waves {
		if w.JobID == "" {
			if w.State == contract.WavePending {
				total.Queued += w.Devices
			} else {
				total.Canceled += w.Devices
			}
			continue
		}
		total = total.Add(w.Counts)
	}
	r.res.Counts = total
}

// abort ends the rollout in state: it cancels the running wave's job and, under the ROLLBACK
// policy, puts every device that took the update back on its previous version. It runs on a
// disconnected context, so canceling the workflow cannot skip it.
// withReason is ", because REASON" for a message (nothing without one).
func withReason(reason string) string {
	if reason == "" {
		return ""
	}
	return " (" + reason + ")"
}

// canceledBy is "canceled by WHO", WHO the one the cancel request names ("operator" when it
// names no one, as requests before identities did).
func (r *rollout) canceledBy() string {
	if r.cancelReq.By == "" {
		return "canceled by operator"
	}
	return "canceled by " + r.cancelReq.By
}

func (r *rollout) abort(ctx workflow.Context, state, why string) (*contract.RolloutResult, error) {
	dctx, _ := workflow.NewDisconnectedContext(ctx)
	dctx = workflow.WithActivityOptions(dctx, workflow.ActivityOptions{
		StartToCloseTimeout: 5 * time.Minute,
		HeartbeatTimeout:    time.Minute,
		RetryPolicy:         &temporal.RetryPolicy{InitialInterval: time.Second, MaximumInterval: 30 * time.Second, MaximumAttempts: 20},
	})
	if r.live && state == contract.StateCanceled {
		r.setState(dctx, contract.StateCanceling, why+"; canceling the running job")
	}
	var jobs []string
	for i := range r.res.Waves {
		w := &r.res.Waves[i]
		if w.State == contract.WavePending {
			w.State = contract.WaveCanceled // never started: its devices keep their version
			continue
		}
		if w.JobID == "" {
			continue
		}
		jobs = append(jobs, w.JobID)
		if w.State != contract.WaveRunning {
			continue
		}
		var counts contract.Counts
		if err := execute(dctx, contract.Activities.CancelJob, contract.CancelJobInput{JobID: w.JobID, Reason: why}).Get(dctx, &counts); err != nil {
			why += "; canceling job " + w.JobID + " failed: " + rootMessage(err)
		} else {
			r.updateCounts(w, counts)
		}
		w.State = contract.WaveCanceled
		if w.Wave == r.failedWave {
			w.State = contract.WaveFailed
		}
	}
	r.recount()
	r.jobsCanceled = true
	rollback := r.req.OnFailure == contract.OnFailureRollback
	if r.cancelReq != nil && r.cancelReq.Rollback != nil {
		rollback = *r.cancelReq.Rollback
	}
	msg := fmt.Sprintf("%s: %d of %d devices updated", why, r.res.Counts.Succeeded, r.res.Devices)
	if rollback && r.res.Counts.Succeeded > 0 {
		r.setState(dctx, contract.StateRollingBack, why+"; rolling back")
		rb := r.rollback(dctx, jobs)
		r.res.Rollback = &rb
		r.event(dctx, contract.EventRolledBack, 0)
		msg = fmt.Sprintf("%s; rolled back %d of %d updated devices", why, rb.RolledBack, rb.Devices)
		if rb.Failed > 0 {
			msg += fmt.Sprintf(" (%d failed to roll back)", rb.Failed)
		}
	}
	r.setState(dctx, state, msg)
	switch state {
	case contract.StateCanceled:
		return nil, temporal.NewCanceledError(r.res)
	case contract.StateTimedOut:
		return nil, temporal.NewNonRetryableApplicationError(r.res.Message, contract.ErrRolloutTimedOut, nil, r.res)
	}
	return nil, temporal.NewNonRetryableApplicationError(r.res.Message, contract.ErrRolloutAborted, nil, r.res)
}

// rollback creates the rollback jobs (one per previous version, so per-device data stays in
// the jobs service) and waits for them.
func (r *rollout) rollback(ctx workflow.Context, jobs []string) contract.RollbackResult {
	var rb contract.RollbackResult
	if err := execute(ctx, contract.Activities.CreateRollbackJobs, contract.RollbackInput{RolloutID: r.req.RolloutID, JobIDs: jobs, Request: r.req}).Get(ctx, &rb); err != nil {
		rb.Message = "creating rollback jobs failed: " + rootMessage(err)
		return rb
	}
	for _, id := range rb.JobIDs {
		deadline := workflow.Now(ctx).Add(r.req.Timeout)
		for {
			wait := min(deadline.Sub(workflow.Now(ctx)), reportEvery)
			if wait <= 0 {
				rb.Message = "rollback job " + id + " did not finish in time"
				break
			}
			actx := workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
				StartToCloseTimeout: wait + 30*time.Second,
				HeartbeatTimeout:    max(30*time.Second, 3*r.req.PollInterval),
				RetryPolicy:         &temporal.RetryPolicy{InitialInterval: time.Second, MaximumInterval: 30 * time.Second},
			})
			var p contract.AwaitJobResult
			if err := execute(actx, contract.Activities.AwaitJob, contract.AwaitJobInputMax{
				AwaitJobInput: contract.AwaitJobInput{JobID: id, PollInterval: r.req.PollInterval}, MaxWait: wait,
			}).Get(ctx, &p); err != nil {
				rb.Message = "waiting for rollback job " + id + " failed: " + rootMessage(err)
				break
			}
			if p.Done {
				rb.RolledBack += p.Counts.Succeeded
				rb.Failed += p.Counts.Total() - p.Counts.Succeeded
				break
			}
		}
	}
	if rb.Failed > 0 && len(rb.JobIDs) > 0 {
		var names []string
		if err := execute(ctx, contract.Activities.FailedDevices, contract.FailedDevicesInput{JobIDs: rb.JobIDs, Limit: 100}).Get(ctx, &names); err == nil {
			rb.FailedDevices = append(rb.FailedDevices, names...)
		}
	}
	return rb
}

func (r *rollout) setState(ctx workflow.Context, state, msg string) {
	r.res.State, r.res.Message = state, msg
	shown := state
	if r.res.Paused && state == contract.StateRunning {
		shown = contract.StatePaused
	}
	err := workflow.UpsertTypedSearchAttributes(ctx,
		contract.SearchRolloutID.ValueSet(r.req.RolloutID), contract.SearchTargetVersion.ValueSet(r.req.Version), contract.SearchState.ValueSet(shown),
		contract.SearchWave.ValueSet(int64(r.res.CurrentWave)))
	if err != nil {
		workflow.GetLogger(ctx).Warn("could not update search attributes", "error", err)
	}
	// What the web UI shows for the rollout, in words.
	workflow.SetCurrentDetails(ctx, fmt.Sprintf("**%s** — %s to %s, wave %d of %d, %d of %d devices updated. %s",
		shown, r.req.SoftwareToUpdate, r.req.Version, r.res.CurrentWave, len(r.res.Waves), r.res.Counts.Succeeded, r.res.Devices, msg))
	workflow.GetLogger(ctx).Info("rollout state", "state", shown, "message", msg)
	if ev := eventOfState(state); ev != "" {
		wave := r.res.CurrentWave
		if state == contract.StateAwaiting {
			wave++ // the wave that waits
		}
		r.event(ctx, ev, wave)
	}
}

// rootMessage is the innermost error's message: what actually went wrong.
func rootMessage(err error) string {
	for {
		next := errors.Unwrap(err)
		if next == nil {
			return err.Error()
		}
		err = next
	}
}
