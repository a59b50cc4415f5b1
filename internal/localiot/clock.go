package localiot

import (
	"context"
	"time"
)

// One clock for replicas. Deadlines, timeouts, rate-limit minutes, schedules and maintenance
// windows are decided on Clock. Replicas on one PostgreSQL database each run the sweep, so
// with their own clocks a replica whose clock runs ahead would time out executions that are
// still within their deadline, and one behind would release rate-limited executions late. So
// on a shared store Clock is the database's clock: this machine's clock corrected by its
// offset to the database's, measured when the service opens and every clockEvery after.

const (
	// clockEvery is how often the offset to the database's clock is measured again.
	clockEvery = 10 * time.Second
	// clockWarnAbove is the offset beyond which the replica says its clock is off.
	clockWarnAbove = 2 * time.Second
)

// Clock is the service's time: the database's on a shared store, this machine's otherwise.
func (s *Service) Clock() time.Time {
	return s.now().Add(time.Duration(s.clockOffset.Load())).UTC().Truncate(time.Millisecond)
}

// ClockOffset is how far the database's clock is ahead of this machine's (zero on an
// embedded store): the correction Clock applies.
func (s *Service) ClockOffset() time.Duration { return time.Duration(s.clockOffset.Load()) }

// measureClock measures the offset to the shared store's clock: the database's time against
// the middle of the round trip on this machine's clock.
func (s *Service) measureClock() error {
	sh, ok := s.Shared()
	if !ok {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	before := s.now()
	db, err := sh.Now(ctx)
	if err != nil {
		return err
	}
	rtt := s.now().Sub(before)
	offset := db.Sub(before.Add(rtt / 2))
	old := time.Duration(s.clockOffset.Swap(int64(offset)))
	if offset.Abs() > clockWarnAbove && (old.Abs() <= clockWarnAbove || (offset-old).Abs() > clockWarnAbove) {
		s.log.Warn().Dur("offset", offset).Msgf("this machine's clock is %s the database's: deadlines, timeouts and schedules use the database's clock; fix this machine's time sync (NTP)", describeOffset(-offset))
	}
	return nil
}

// trackClock measures the offset every clockEvery until the service closes; a failed
// measurement keeps the last offset.
func (s *Service) trackClock() {
	s.every(clockEvery, func() {
		if err := s.measureClock(); err != nil {
			s.log.Debug().Err(err).Msg("could not read the database's clock; keeping the last offset")
		}
	})
}

// ClockProblem says what is wrong with this replica's clock, or "" when nothing is.
func (s *Service) ClockProblem() string {
	if off := s.ClockOffset(); off.Abs() > clockWarnAbove {
		return "this replica's clock is " + describeOffset(-off) + " the database's (deadlines use the database's)"
	}
	return ""
}

func describeOffset(ahead time.Duration) string {
	if ahead >= 0 {
		return ahead.Round(100*time.Millisecond).String() + " ahead of"
	}
	return (-ahead).Round(100*time.Millisecond).String() + " behind"
}
