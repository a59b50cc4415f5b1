package localiot

import (
	"fmt"
	"math"
	"time"

	"github.com/otaflow/otaflow/internal/localiot/store"
)

// Job abort (CreateJob's and UpdateJob's abortConfig, kept in job templates too): once enough
// things have taken the job and the share of failures of a type reaches the threshold, the job
// is canceled the way CancelJob cancels it: its QUEUED executions become CANCELED, and the
// executions already IN_PROGRESS run to their end.

// checkAbort applies the service model's constraints to an abortConfig.criteriaList.
func checkAbort(list []store.AbortCriteria) error {
	for _, c := range list {
		switch c.FailureType {
		case "FAILED", "REJECTED", "TIMED_OUT", "ALL":
		default:
			return Errorf(CodeInvalidRequest, "abortConfig failureType %q is invalid: use FAILED, REJECTED, TIMED_OUT or ALL", c.FailureType)
		}
		if c.Action != "CANCEL" {
			return Errorf(CodeInvalidRequest, "abortConfig action %q is invalid: the only action is CANCEL", c.Action)
		}
		if c.ThresholdPercentage <= 0 || c.ThresholdPercentage > 100 {
			return Errorf(CodeInvalidRequest, "abortConfig thresholdPercentage %v must be above 0 and at most 100", c.ThresholdPercentage)
		}
		if !atMostDecimals(c.ThresholdPercentage, 2) {
			return Errorf(CodeInvalidRequest, "abortConfig thresholdPercentage %v has more than two digits after the decimal point", c.ThresholdPercentage)
		}
		if c.MinNumberOfExecutedThings < 1 {
			return Errorf(CodeInvalidRequest, "abortConfig minNumberOfExecutedThings must be at least 1")
		}
	}
	return nil
}

// atMostDecimals reports whether v has at most n digits after the decimal point (the service
// model's limit on thresholdPercentage and incrementFactor), within float error.
func atMostDecimals(v float64, n int) bool {
	scaled := v * math.Pow10(n)
	return math.Abs(scaled-math.Round(scaled)) <= 1e-6
}

// abortReason says why j must be aborted now, or "" when no criterion is met. Executed things
// are those that took the job: IN_PROGRESS or ended, not canceled or removed.
func abortReason(j *store.Job) string {
	c := j.Counts
	executed := c.InProgress + c.Succeeded + c.Failed + c.Rejected + c.TimedOut
	for _, a := range j.Abort {
		if executed < a.MinNumberOfExecutedThings {
			continue
		}
		failures := map[string]int{"FAILED": c.Failed, "REJECTED": c.Rejected, "TIMED_OUT": c.TimedOut,
			"ALL": c.Failed + c.Rejected + c.TimedOut}[a.FailureType]
		if pct := 100 * float64(failures) / float64(executed); pct >= a.ThresholdPercentage {
			return fmt.Sprintf("aborted by abortConfig: %d of %d executed things (%.2f%%) ended %s, at or above the %.2f%% threshold",
				failures, executed, pct, a.FailureType, a.ThresholdPercentage)
		}
	}
	return ""
}

// abortIfDue cancels j within t when an abort criterion is met, after an execution of j
// ended. The things whose executions it cancels are notified once the sweep runs (notifyLater):
// the caller's transaction has not committed yet.
func (s *Service) abortIfDue(t store.Tx, j *store.Job, now time.Time) error {
	if j.Status != store.JobInProgress || len(j.Abort) == 0 {
		return nil
	}
	reason := abortReason(j)
	if reason == "" {
		return nil
	}
	changed, err := s.cancelInTx(t, j, false, reason, "", now)
	if err != nil {
		return err
	}
	s.log.Warn().Str("job", j.ID).Int("canceled", len(changed)).Msg(reason)
	s.notifyLater(changed)
	return nil
}

// notifyLater queues things to be told of a change to their queue at the next sweep.
func (s *Service) notifyLater(things []string) {
	if len(things) == 0 {
		return
	}
	s.mu.Lock()
	s.later = append(s.later, things...)
	s.mu.Unlock()
}

// flushLater notifies the things notifyLater queued.
func (s *Service) flushLater() {
	s.mu.Lock()
	things := s.later
	s.later = nil
	s.mu.Unlock()
	s.queueChanged(things)
}
