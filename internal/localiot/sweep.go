package localiot

import (
	"time"

	"github.com/otaflow/otaflow/internal/localiot/store"
)

// The background sweeps: rate-limited executions released each minute, and executions past their
// step or in-progress deadline timed out.

// sweepLoop times out overdue executions, starts and ends scheduled jobs and releases
// rate-limited executions, every interval until Close.
func (s *Service) sweepLoop(every time.Duration) {
	if every <= 0 {
		every = time.Second
	}
	s.every(every, func() {
		// One time for the whole tick: a job's end is applied before the same minute's
		// release, never after a later one.
		now := s.Clock()
		if _, err := s.sweepTimeouts(now); err != nil {
			s.log.Error().Err(err).Msg("timing out executions failed; will retry")
		}
		started, err := s.sweepSchedules(now)
		if err != nil {
			s.log.Error().Err(err).Msg("starting or ending scheduled jobs failed; will retry")
		}
		s.queueChanged(started)
		released, err := s.releaseHeld(now)
		if err != nil {
			s.log.Error().Err(err).Msg("releasing rate-limited executions failed; will retry")
		}
		s.queueChanged(released)
		if err := s.settleJobs(now); err != nil {
			s.log.Error().Err(err).Msg("completing or aborting jobs on their committed counts failed; will retry")
		}
		s.flushLater()
	})
}

// every runs fn every d until the service closes (the caller has added to s.swept).
func (s *Service) every(d time.Duration, fn func()) {
	defer s.swept.Done()
	tick := time.NewTicker(d)
	defer tick.Stop()
	for {
		select {
		case <-s.stopSweep:
			return
		case <-tick.C:
			fn()
		}
	}
}

// releaseHeld releases held executions of rate-limited jobs: up to each job's maximum per
// minute. It returns the things whose queue changed.
func (s *Service) releaseHeld(now time.Time) ([]string, error) {
	var things []string
	err := s.st.Update(func(t store.Tx) error {
		things = nil // a run again (after a lost race) starts afresh
		jobIDs, err := t.HeldJobs()
		if err != nil {
			return err
		}
		for _, id := range jobIDs {
			j, err := t.Job(id)
			if err != nil {
				return err
			}
			if j == nil {
				continue
			}
			if j.Status == store.JobInProgress && !inWindow(j.Scheduling, now) {
				continue // outside its maintenance windows: nothing is released
			}
			if now.Sub(j.RateWindow) >= time.Minute {
				j.RateWindow, j.RateReleased = now, 0
				rampUp(j)
			}
			held, err := t.Held(id)
			if err != nil {
				return err
			}
			for _, h := range held {
				if j.Status == store.JobInProgress && heldBySchedule(j, now) {
					break
				}
				thing := h.Thing
				if err := t.Release(id, h); err != nil {
					return err
				}
				e, err := t.Execution(id, thing)
				if err != nil {
					return err
				}
				if e == nil || !e.Held {
					continue
				}
				if e.Status != store.ExecQueued { // canceled or removed while held
					e.Held = false
					if err := t.PutExecution(e); err != nil {
						return err
					}
					continue
				}
				e.Held = false
				markOffered(j)
				if err := t.PutExecution(e); err != nil {
					return err
				}
				things = append(things, thing)
			}
			if err := t.PutJob(j); err != nil {
				return err
			}
		}
		return nil
	})
	return things, err
}

// sweepTimeouts moves every IN_PROGRESS execution whose deadline has passed to TIMED_OUT
// (or, under a retry policy, back to QUEUED). It returns how many it timed out.
func (s *Service) sweepTimeouts(now time.Time) (int, error) {
	var things []string
	err := s.st.Update(func(t store.Tx) error {
		things = nil // a run again (after a lost race) starts afresh
		due, err := t.DueTimeouts(now)
		if err != nil {
			return err
		}
		for _, k := range due {
			jobID, thing := k.JobID, k.Thing
			e, err := t.Execution(jobID, thing)
			if err != nil {
				return err
			}
			if e == nil || e.Status != store.ExecInProgress || e.Deadline().After(now) {
				if err := t.DeleteTimeout(k); err != nil {
					return err
				}
				continue
			}
			j, err := t.Job(jobID)
			if err != nil {
				return err
			}
			if err := s.setStatus(t, j, e, store.ExecTimedOut, nil, s.Clock()); err != nil {
				return err
			}
			things = append(things, thing)
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	if len(things) > 0 {
		s.log.Info().Int("executions", len(things)).Msg("executions timed out")
	}
	s.queueChanged(things)
	return len(things), nil
}

// unsettled notes, on a shared store, that this replica ended an execution of job id.
func (s *Service) unsettled(id string) {
	if !s.shared {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.unsettledJobs == nil {
		s.unsettledJobs = map[string]struct{}{}
	}
	s.unsettledJobs[id] = struct{}{}
}

// settleJobs completes, on their committed counters, the jobs an execution of which this
// replica ended since the last sweep. On a shared store each transaction decides on the
// counters its own snapshot shows, so when two replicas end a job's last two executions at
// once, neither sees the job done; the sweep after both have committed does. (One replica's
// transactions race each other the same way.) An abort threshold is checked again when the
// next execution ends, as it is on one store, so it needs no settling: two failures ending at
// once can only delay an abort to the next end.
func (s *Service) settleJobs(now time.Time) error {
	s.mu.Lock()
	ids := s.unsettledJobs
	s.unsettledJobs = nil
	s.mu.Unlock()
	for id := range ids {
		err := s.st.Update(func(t store.Tx) error {
			j, err := t.Job(id)
			if err != nil || j == nil || j.Status != store.JobInProgress {
				return err
			}
			completeIfDone(j, now)
			if j.Status == store.JobInProgress {
				return nil
			}
			return t.PutJob(j)
		})
		if err != nil {
			s.unsettled(id)
			return err
		}
	}
	return nil
}
