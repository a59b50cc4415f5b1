package agent

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/otaflow/otaflow/internal/iotjobs"
	"github.com/otaflow/otaflow/internal/jobdoc"
)

// The agent's state machine: process takes one started execution through the steps of
// step.go, persisting each before its work, and reports the outcome.

// execution is the job execution being processed.
type execution struct {
	iotjobs.JobExecution
	// notes are added to the final statusDetails (e.g. deferrals).
	notes       map[string]string
	bakeSeconds int
}

func (e *execution) note(k, v string) {
	if e.notes == nil {
		e.notes = map[string]string{}
	}
	e.notes[k] = v
}

// processOrFail processes e; when the state directory cannot be written (a full disk), the
// job ends FAILED, with the device switched back to the version it ran if the update had got
// that far, rather than being retried in vain until it times out.
func (a *Agent) processOrFail(ctx context.Context, e *execution) error {
	err := a.process(ctx, e)
	var se *stateWriteError
	if !errors.As(err, &se) || !se.unwritable() || ctx.Err() != nil {
		return err
	}
	reason := fmt.Sprintf("the agent cannot write its state in %s (%v): free space there, then retry the job", se.dir, se.err)
	details := map[string]string{}
	if doc, perr := jobdoc.Parse(e.JobDocument); perr == nil && doc.SoftwareToUpdate != jobdoc.SoftwareComponents {
		a.mu.Lock()
		cur := a.state.Installed[doc.SoftwareToUpdate] // the last state on disk: before this job
		a.mu.Unlock()
		in := a.cfg.Installer
		if active := in.Active(doc.SoftwareToUpdate); active != "" && active != cur.Version {
			u := &Update{JobID: e.JobID, Thing: a.cfg.ThingName, Doc: doc, From: cur, Report: func(context.Context, Step, map[string]string) error { return nil }}
			if rerr := in.Rollback(ctx, u); rerr != nil {
				reason += fmt.Sprintf("; switching back to %s failed: %v", cur.Version, rerr)
			} else {
				reason += "; switched back to " + cmp.Or(cur.Version, "what ran before")
			}
		}
		details["installedVersion"] = cur.Version
	}
	details["reason"] = reason
	a.log.Error().Str("job", e.JobID).Msg(reason)
	a.notices.ending(e.JobID, e.ExecutionNumber)
	rerr := a.started(ctx, e, iotjobs.StatusFailed)
	if rerr == nil {
		_, rerr = a.jobs.Update(ctx, e.JobID, &iotjobs.UpdateRequest{Status: iotjobs.StatusFailed, StatusDetails: details, ExpectedVersion: e.VersionNumber})
	}
	if ended(rerr) != nil {
		rerr = nil
	}
	if rerr != nil {
		return fmt.Errorf("report FAILED: %w", rerr)
	}
	// The disk still holds the step this job reached; in memory the agent is idle, and a
	// restart finds the job ended and leaves it.
	a.mu.Lock()
	a.state.CurrentJob, a.state.Step = "", StepIdle
	a.mu.Unlock()
	return nil
}

func (a *Agent) process(ctx context.Context, e *execution) error {
	log := a.log.With().Str("job", e.JobID).Logger()
	doc, err := jobdoc.Parse(e.JobDocument)
	if err != nil {
		log.Warn().Err(err).Msg("rejecting invalid job document")
		return a.finish(ctx, e, iotjobs.StatusRejected, map[string]string{"reason": err.Error()})
	}
	e.bakeSeconds = doc.BakeSeconds
	log = jobLogLevel(log, doc.UpdateAgentLogLevel).With().Str("software", doc.SoftwareToUpdate).Str("version", doc.Version).Logger()
	if err := a.awaitDeferrals(ctx, e, doc, log); err != nil {
		return err
	}
	if doc.SoftwareToUpdate == jobdoc.SoftwareComponents {
		return a.deploy(ctx, e, doc)
	}

	a.mu.Lock()
	cur := a.state.Installed[doc.SoftwareToUpdate]
	step := StepIdle
	if a.state.CurrentJob == e.JobID {
		step = a.state.Step
	}
	starts := a.state.Starts
	a.mu.Unlock()
	in := a.cfg.Installer
	u := &Update{JobID: e.JobID, Thing: a.cfg.ThingName, Doc: doc, From: cur,
		Report: func(ctx context.Context, s Step, details map[string]string) error {
			return a.report(ctx, e, s, doc.Version, details)
		}}
	done := map[string]string{"installedVersion": doc.Version, "previousVersion": cur.Version}

	switch resumption[step].how {
	case resumeReport:
		if cur.Version == doc.Version {
			log.Info().Msg("update was installed before a restart; reporting it")
			return a.finish(ctx, e, iotjobs.StatusSucceeded, map[string]string{"installedVersion": cur.Version, "previousVersion": cur.Previous})
		}
	case resumeFromDisk:
		if active := in.Active(doc.SoftwareToUpdate); active == doc.Version && active != cur.Version {
			// A restart after the switch (crash, power cut): the new version is in place but
			// was never confirmed healthy. Check it now rather than install again, unless it
			// keeps taking the device down.
			limit := cmp.Or(a.cfg.MaxStarts, 3)
			if starts > limit {
				return a.rollBack(ctx, e, u, fmt.Sprintf("%s did not confirm healthy across %d restarts (a reboot loop)", doc.Version, starts))
			}
			log.Info().Str("step", string(step)).Msg("resuming a switched update: checking its health")
			return a.confirm(ctx, e, u, done, log)
		}
	}
	if resumption[step].how == resumeFromStart && cur.Version == doc.Version && a.onDisk(doc) {
		// Re-running a rollout over a partly updated fleet: nothing to do. The previous
		// version is this one, so a compensating rollback leaves the device as it is.
		log.Info().Msg("already on this version")
		return a.finish(ctx, e, iotjobs.StatusSucceeded, map[string]string{"installedVersion": cur.Version, "previousVersion": cur.Version, "note": "already installed"})
	}

	if doc.Operation == jobdoc.OpRollback && doc.Version != cur.Previous {
		// A rollback may go down a version, so it may only go where this device came from: a
		// rollback job to any other version is how an attacker would force a downgrade.
		reason := fmt.Sprintf("a rollback may only return %s to the version it ran before this one (%s); %s is not it",
			doc.SoftwareToUpdate, cmp.Or(cur.Previous, "none recorded"), doc.Version)
		log.Warn().Msg(reason)
		return a.finish(ctx, e, iotjobs.StatusRejected, map[string]string{"reason": reason, "installedVersion": cur.Version})
	}
	if err := a.setState(func(s *State) { s.CurrentJob, s.Step = e.JobID, StepInstalling }); err != nil {
		return err
	}
	log.Info().Str("from", cur.Version).Msg("installing")
	if err := in.Prepare(ctx, u); err != nil {
		return a.failed(ctx, e, u, err, log)
	}
	if doc.SoftwareToUpdate == jobdoc.SoftwareOTAAgent {
		if su, ok := in.(SelfUpdater); ok {
			return a.failed(ctx, e, u, a.handover(ctx, u, su), log)
		}
	}
	if err := u.Report(ctx, StepInstalling, nil); err != nil {
		return err
	}
	if err := in.Install(ctx, u); err != nil {
		return a.failed(ctx, e, u, err, log)
	}
	if err := a.setStep(StepSwitching); err != nil {
		return err
	}
	if err := in.Switch(ctx, u); err != nil {
		return a.failed(ctx, e, u, err, log)
	}
	if err := a.setStep(StepSwitched); err != nil {
		return err
	}
	if err := in.Start(ctx, u); err != nil {
		return a.rollBackOn(ctx, e, u, err)
	}
	return a.confirm(ctx, e, u, done, log)
}

// confirm checks the switched version's health, commits it, records it and reports SUCCEEDED;
// a failure rolls back.
func (a *Agent) confirm(ctx context.Context, e *execution, u *Update, done map[string]string, log zerolog.Logger) error {
	in := a.cfg.Installer
	report := u.Report
	if !in.Checks(u) && u.Doc.BakeSeconds == 0 {
		// Nothing to watch: the step is recorded, not announced (one control-plane call per
		// device fewer, which a large wave feels).
		report = func(_ context.Context, s Step, _ map[string]string) error { return a.setStep(s) }
	}
	if err := report(ctx, StepHealthCheck, nil); err != nil {
		return err
	}
	if err := in.Verify(ctx, u); err != nil {
		return a.rollBackOn(ctx, e, u, err)
	}
	if err := in.Commit(ctx, u); err != nil {
		return a.rollBackOn(ctx, e, u, err)
	}
	if err := a.setState(func(s *State) {
		s.Installed[u.Software()] = Installed{Version: u.Version(), Previous: u.From.Version}
		s.Step = StepInstalled
	}); err != nil {
		return err
	}
	log.Info().Msg("installed, healthy, committed")
	for k, v := range u.Details {
		done[k] = v
	}
	if u.Software() == jobdoc.SoftwareCore && u.Doc.Operation == jobdoc.OpUpdate {
		if err := a.resetHealth(u.Version()); err != nil {
			return err
		}
	}
	return a.finish(ctx, e, iotjobs.StatusSucceeded, done)
}

// rollBackOn rolls a switched update back after err; a transient err (the agent is stopping)
// leaves the step persisted for the next start to resume.
func (a *Agent) rollBackOn(ctx context.Context, e *execution, u *Update, err error) error {
	var ue *UpdateError
	if !errors.As(err, &ue) {
		return err
	}
	return a.rollBack(ctx, e, u, ue.Reason)
}

// rollBack makes the previous version active again and reports FAILED with why.
func (a *Agent) rollBack(ctx context.Context, e *execution, u *Update, why string) error {
	if err := a.cfg.Installer.Rollback(ctx, u); err != nil {
		return a.failed(ctx, e, u, Fail("%s; rolling back also failed: %v", why, err), a.log)
	}
	return a.failed(ctx, e, u, Fail("%s; rolled back to %s", why, cmp.Or(u.From.Version, "nothing (first install)")), a.log)
}

// failed ends the job after an UpdateError (REJECTED or FAILED, the device on u.From); any
// other error is returned for the job to be retried.
func (a *Agent) failed(ctx context.Context, e *execution, u *Update, err error, log zerolog.Logger) error {
	var ue *UpdateError
	if !errors.As(err, &ue) {
		return err
	}
	status := iotjobs.StatusFailed
	if ue.Rejected {
		status = iotjobs.StatusRejected
	}
	log.Warn().Str("status", string(status)).Msg(ue.Reason)
	if err := a.setState(func(s *State) { s.Installed[u.Software()] = u.From }); err != nil {
		return err
	}
	details := map[string]string{"reason": ue.Reason, "installedVersion": u.From.Version}
	for k, v := range u.Details {
		details[k] = v
	}
	return a.finish(ctx, e, status, details)
}

// onDisk reports whether the document's version is what the installer says is active ("" is
// an installer that does not know: the state stands).
func (a *Agent) onDisk(doc *jobdoc.Document) bool {
	active := a.cfg.Installer.Active(doc.SoftwareToUpdate)
	return active == "" || active == doc.Version
}

// report persists step and reports it as the job's progress.
func (a *Agent) report(ctx context.Context, e *execution, step Step, version string, extra map[string]string) error {
	if err := a.setStep(step); err != nil {
		return err
	}
	if _, err := a.jobs.Update(ctx, e.JobID, a.stepUpdate(e, step, version, extra)); err != nil {
		return fmt.Errorf("report %s: %w", step, err)
	}
	e.VersionNumber, e.Status = e.VersionNumber+1, iotjobs.StatusInProgress
	return nil
}

// stepUpdate is an IN_PROGRESS update for step, with the step timer restarted when the agent
// has a step timeout: a device that dies mid-step times out instead of holding its wave.
func (a *Agent) stepUpdate(e *execution, step Step, version string, extra map[string]string) *iotjobs.UpdateRequest {
	details := map[string]string{"step": string(step), "version": version}
	for k, v := range extra {
		details[k] = v
	}
	u := &iotjobs.UpdateRequest{Status: iotjobs.StatusInProgress, StatusDetails: details, ExpectedVersion: e.VersionNumber}
	if t := a.cfg.StepTimeout; t > 0 {
		if step == StepHealthCheck {
			t += time.Duration(e.bakeSeconds) * time.Second
		}
		u.StepTimeoutInMinutes = int64((t + time.Minute - 1) / time.Minute)
	}
	return u
}

// deploy applies a components deployment: every component to its version, all at once, once
// the installer has checked each against its signed recipe (ComponentVerifier).
func (a *Agent) deploy(ctx context.Context, e *execution, doc *jobdoc.Document) error {
	if _, err := a.jobs.Update(ctx, e.JobID, &iotjobs.UpdateRequest{
		Status: iotjobs.StatusInProgress, StatusDetails: map[string]string{"step": "deploying"}, ExpectedVersion: e.VersionNumber,
	}); err != nil {
		return fmt.Errorf("report IN_PROGRESS: %w", err)
	}
	e.VersionNumber, e.Status = e.VersionNumber+1, iotjobs.StatusInProgress
	if v, ok := a.cfg.Installer.(ComponentVerifier); ok {
		if err := v.VerifyComponents(ctx, doc.Components); err != nil {
			var ue *UpdateError
			if !errors.As(err, &ue) {
				return err
			}
			a.log.Warn().Str("job", e.JobID).Msg(ue.Reason)
			return a.finish(ctx, e, iotjobs.StatusRejected, map[string]string{"reason": ue.Reason})
		}
	}
	var parts []string
	if err := a.setState(func(s *State) {
		if s.Components == nil {
			s.Components = map[string]Installed{}
		}
		for name, v := range doc.Components {
			s.Components[name] = Installed{Version: v, Previous: s.Components[name].Version}
		}
	}); err != nil {
		return err
	}
	for name, v := range doc.Components {
		parts = append(parts, name+"="+v)
	}
	slices.Sort(parts)
	a.log.Info().Str("job", e.JobID).Strs("components", parts).Msg("deployed")
	return a.finish(ctx, e, iotjobs.StatusSucceeded, map[string]string{"components": strings.Join(parts, ",")})
}

// started makes sure an execution the device ends as status has left QUEUED: from there AWS
// takes only IN_PROGRESS or REJECTED, so a job that ends SUCCEEDED or FAILED before its
// first report (already installed, a full disk) is started first.
func (a *Agent) started(ctx context.Context, e *execution, status iotjobs.Status) error {
	if e.Status != iotjobs.StatusQueued || status == iotjobs.StatusRejected {
		return nil
	}
	_, err := a.jobs.Update(ctx, e.JobID, &iotjobs.UpdateRequest{
		Status: iotjobs.StatusInProgress, StatusDetails: map[string]string{"step": "accepted"}, ExpectedVersion: e.VersionNumber,
	})
	if ended(err) != nil {
		return nil // it ended meanwhile: the terminal report finds out what it was
	}
	if err != nil {
		return err
	}
	e.VersionNumber, e.Status = e.VersionNumber+1, iotjobs.StatusInProgress
	return nil
}

// finish reports a terminal status and clears the current job.
func (a *Agent) finish(ctx context.Context, e *execution, status iotjobs.Status, details map[string]string) error {
	a.notices.ending(e.JobID, e.ExecutionNumber)
	if err := a.started(ctx, e, status); err != nil {
		return fmt.Errorf("report %s: %w", status, err)
	}
	for k, v := range e.notes {
		details[k] = v
	}
	_, err := a.jobs.Update(ctx, e.JobID, &iotjobs.UpdateRequest{
		Status: status, StatusDetails: details, ExpectedVersion: e.VersionNumber,
	})
	var late, reverted iotjobs.Status
	if rej := ended(err); rej != nil {
		// Either this very report was applied and only its reply was lost (a resend then
		// finds the execution in the status it asked for), or the job ended meanwhile.
		recorded := rej.ExecutionState.Status
		switch {
		case recorded == status:
		case status == iotjobs.StatusSucceeded && recorded == iotjobs.StatusTimedOut:
			// The service timed the execution out before this report reached it (it was
			// unreachable, or the install outlasted the timeout). The update is in place and
			// working: the device's truth stands, and its inventory says so (lastJob.late), so
			// the rollout counts it updated-but-late and a rollback includes it.
			late = recorded
			a.log.Warn().Str("job", e.JobID).Str("version", details["installedVersion"]).
				Msg("the job was timed out before this device's report of success arrived; keeping the update and reporting it late in the inventory")
		case status == iotjobs.StatusSucceeded:
			// The rollout canceled the job (or removed this device from it): the fleet counts
			// this device as not updated, so an install it just finished must not stand.
			a.revert(ctx, e, details["previousVersion"], details["installedVersion"])
			reverted = recorded
		}
		err = nil
	}
	if err != nil {
		return fmt.Errorf("report %s: %w", status, err)
	}
	a.log.Info().Str("job", e.JobID).Str("status", string(status)).Msg("reported")
	a.mu.Lock()
	a.lastJob = map[string]any{"jobId": e.JobID, "status": string(status), "reason": details["reason"],
		"version": details["installedVersion"], "at": time.Now().UTC().Format(time.RFC3339)}
	if late != "" {
		a.lastJob["late"], a.lastJob["recordedAs"], a.lastJob["previousVersion"] = true, string(late), details["previousVersion"]
	}
	if reverted != "" { // the inventory says what the device runs: the version it went back to
		a.lastJob["status"], a.lastJob["version"], a.lastJob["reverted"] = string(reverted), details["previousVersion"], true
	}
	a.mu.Unlock()
	err = a.setState(func(s *State) { s.CurrentJob, s.Step, s.Starts, s.DeferredSince = "", StepIdle, 0, time.Time{} })
	a.reportInventory(true)
	return err
}

// ended is the rejection of an update to an execution that has already ended: AWS answers
// InvalidStateTransition with the execution's (terminal) state; older otaflow services
// answered TerminalStateReached.
func ended(err error) *iotjobs.ErrorReply {
	var rej *iotjobs.ErrorReply
	if !errors.As(err, &rej) || (rej.Code != iotjobs.CodeInvalidStateTransition && rej.Code != iotjobs.CodeTerminalStateReached) {
		return nil
	}
	if rej.ExecutionState == nil || !rej.ExecutionState.Status.Terminal() {
		return nil
	}
	return rej
}

// revert puts the software back on previous after a job was canceled under it: on disk
// through the installer, then in the state.
func (a *Agent) revert(ctx context.Context, e *execution, previous, installed string) {
	if previous == "" || previous == installed {
		return
	}
	doc, err := jobdoc.Parse(e.JobDocument)
	if err == nil && doc.SoftwareToUpdate != jobdoc.SoftwareComponents {
		u := &Update{JobID: e.JobID, Thing: a.cfg.ThingName, Doc: doc, From: Installed{Version: previous},
			Report: func(context.Context, Step, map[string]string) error { return nil }}
		if err := a.cfg.Installer.Rollback(ctx, u); err != nil {
			a.log.Error().Err(err).Str("job", e.JobID).Str("version", previous).Msg("job was canceled after installing; switching back failed")
			return
		}
	}
	a.setState(func(s *State) {
		for sw, inst := range s.Installed {
			if inst.Version == installed {
				s.Installed[sw] = Installed{Version: previous}
			}
		}
	})
	a.log.Warn().Str("job", e.JobID).Str("version", previous).Msg("job was canceled while installing; reverted to the previous version")
}

// awaitDeferrals asks local components (over the IPC socket) whether the update may go ahead,
// and waits while they defer it, up to MaxDeferral in total (counted across agent restarts).
func (a *Agent) awaitDeferrals(ctx context.Context, e *execution, doc *jobdoc.Document, log zerolog.Logger) error {
	if a.ipc == nil {
		return nil
	}
	a.mu.Lock()
	started := a.state.CurrentJob == e.JobID && a.state.Step != StepIdle && a.state.Step != StepDeferred
	since := a.state.DeferredSince
	if a.state.CurrentJob != e.JobID {
		since = time.Time{}
	}
	a.mu.Unlock()
	if started {
		return nil // the install began before a restart: too late to defer
	}
	deferrals := 0
	for {
		d := a.ipc.ask(ctx, IPCMessage{JobID: e.JobID, Software: doc.SoftwareToUpdate, Version: doc.Version})
		if err := ctx.Err(); err != nil {
			return err
		}
		if d == nil {
			break
		}
		if since.IsZero() {
			since = time.Now()
		}
		if time.Since(since)+d.After > a.cfg.MaxDeferral {
			log.Warn().Str("component", d.Component).Dur("maxDeferral", a.cfg.MaxDeferral).Msg("deferral limit reached; updating now")
			e.note("deferralLimitReached", fmt.Sprintf("%s asked to defer again after %s; the limit is %s", d.Component, time.Since(since).Round(time.Millisecond), a.cfg.MaxDeferral))
			break
		}
		deferrals++
		log.Info().Str("component", d.Component).Str("message", d.Message).Dur("recheckAfter", d.After).Msg("update deferred by a component")
		if err := a.setState(func(s *State) { s.CurrentJob, s.Step, s.DeferredSince = e.JobID, StepDeferred, since }); err != nil {
			return err
		}
		if _, err := a.jobs.Update(ctx, e.JobID, &iotjobs.UpdateRequest{
			Status: iotjobs.StatusInProgress, ExpectedVersion: e.VersionNumber,
			StatusDetails: map[string]string{"step": string(StepDeferred), "version": doc.Version, "deferredBy": d.Component,
				"message": d.Message, "recheckAfterMs": fmt.Sprint(d.After.Milliseconds())},
		}); err != nil {
			return fmt.Errorf("report deferral: %w", err)
		}
		e.VersionNumber, e.Status = e.VersionNumber+1, iotjobs.StatusInProgress
		select {
		case <-time.After(d.After):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if deferrals > 0 {
		e.note("deferrals", fmt.Sprint(deferrals))
		e.note("deferredMs", fmt.Sprint(time.Since(since).Milliseconds()))
	}
	return nil
}
