package localiot

import (
	"math"

	"github.com/otaflow/otaflow/internal/localiot/store"
)

// Rollout rates (jobExecutionsRolloutConfig): maximumPerMinute caps how many executions are
// offered to devices per minute; exponentialRate starts at baseRatePerMinute and multiplies the
// rate by incrementFactor each time rateIncreaseCriteria is met (so many more things notified,
// or so many more succeeded, since the last increase), up to maximumPerMinute (or AWS's 1,000).

// checkExponentialRate applies the service model's constraints.
func checkExponentialRate(e *store.ExponentialRate) error {
	if e == nil {
		return nil
	}
	if e.BaseRatePerMinute < 1 || e.BaseRatePerMinute > 1000 {
		return Errorf(CodeInvalidRequest, "exponentialRate.baseRatePerMinute must be from 1 to 1000")
	}
	if e.IncrementFactor < 1.1 || e.IncrementFactor > 5 {
		return Errorf(CodeInvalidRequest, "exponentialRate.incrementFactor must be from 1.1 to 5")
	}
	if !atMostDecimals(e.IncrementFactor, 1) {
		return Errorf(CodeInvalidRequest, "exponentialRate.incrementFactor %v has more than one digit after the decimal point", e.IncrementFactor)
	}
	c := e.RateIncreaseCriteria
	if (c.NumberOfNotifiedThings == 0) == (c.NumberOfSucceededThings == 0) || c.NumberOfNotifiedThings < 0 || c.NumberOfSucceededThings < 0 {
		return Errorf(CodeInvalidRequest, "exponentialRate.rateIncreaseCriteria needs one of numberOfNotifiedThings or numberOfSucceededThings, at least 1")
	}
	return nil
}

// rateLimit is how many executions j may offer per minute now; 0 is no limit.
func rateLimit(j *store.Job) int {
	if j.Exponential == nil {
		return j.MaxPerMinute
	}
	if j.Ramp.Rate == 0 {
		j.Ramp.Rate = j.Exponential.BaseRatePerMinute
	}
	return j.Ramp.Rate
}

// offered counts one more execution offered to a device.
func markOffered(j *store.Job) {
	if rateLimit(j) > 0 {
		j.RateReleased++
	}
	j.Ramp.Notified++
}

// rampUp multiplies the rate when the increase criterion is met since the last increase. It
// runs as a new minute of the rate window begins, so one minute never offers more than the
// rate that minute began with.
func rampUp(j *store.Job) {
	e := j.Exponential
	if e == nil {
		return
	}
	c, r := e.RateIncreaseCriteria, &j.Ramp
	due := (c.NumberOfNotifiedThings > 0 && r.Notified-r.NotifiedAt >= c.NumberOfNotifiedThings) ||
		(c.NumberOfSucceededThings > 0 && j.Counts.Succeeded-r.SucceededAt >= c.NumberOfSucceededThings)
	if !due {
		return
	}
	ceiling := 1000
	if j.MaxPerMinute > 0 {
		ceiling = j.MaxPerMinute
	}
	r.Rate = min(ceiling, int(math.Ceil(float64(rateLimit(j))*e.IncrementFactor)))
	r.NotifiedAt, r.SucceededAt = r.Notified, j.Counts.Succeeded
}
