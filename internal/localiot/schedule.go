package localiot

import (
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/robfig/cron/v3"

	"github.com/otaflow/otaflow/internal/localiot/store"
)

// Scheduled jobs (CreateJob's schedulingConfig): a job with a startTime in the future is
// SCHEDULED and queues no execution until then; at its endTime the endBehavior applies
// (STOP_ROLLOUT, CANCEL or FORCE_CANCEL); with maintenance windows, executions are released to
// devices only inside a window (the rest wait, QUEUED but held, as under maximumPerMinute).
// Times are UTC, as on AWS.

// JobScheduled is the status of a job waiting for its startTime.
const JobScheduled store.JobStatus = "SCHEDULED"

// recordJobSchedule marks a job that still has a start or an end to act on; the sweep reads
// only these, not every job.
const recordJobSchedule = "job-schedule"

// awsTimeLayouts are the forms a schedulingConfig time may take: AWS's YYYY-MM-DDTHH:MM, with
// seconds, or RFC 3339.
var awsTimeLayouts = []string{"2006-01-02T15:04", "2006-01-02T15:04:05", "2006-01-02T15:04Z07:00", time.RFC3339}

func parseScheduleTime(member, v string) (time.Time, error) {
	for _, l := range awsTimeLayouts {
		if t, err := time.Parse(l, v); err == nil {
			return t.UTC(), nil
		}
	}
	return time.Time{}, Errorf(CodeInvalidRequest, "schedulingConfig.%s %q: use YYYY-MM-DDTHH:MM (UTC), e.g. 2030-01-31T02:00", member, v)
}

// checkScheduling validates sc and fills Start and End. Under AWS's quotas the start is 30
// minutes to a year ahead, the end 30 minutes to two years ahead and 30 minutes to two years
// after the start; without them any future time will do.
func (s *Service) checkScheduling(sc *store.Scheduling, now time.Time) error {
	var err error
	if sc.StartTime != "" {
		if sc.Start, err = parseScheduleTime("startTime", sc.StartTime); err != nil {
			return err
		}
		if s.quotas && (sc.Start.Before(now.Add(30*time.Minute)) || sc.Start.After(now.AddDate(1, 0, 0))) {
			return Errorf(CodeInvalidRequest, "schedulingConfig.startTime %s must be from 30 minutes to one year from now (%s)", sc.StartTime, now.Format("2006-01-02T15:04"))
		}
	}
	if sc.EndTime != "" {
		if sc.End, err = parseScheduleTime("endTime", sc.EndTime); err != nil {
			return err
		}
		from := now
		if !sc.Start.IsZero() {
			from = sc.Start
		}
		if !sc.End.After(from) {
			return Errorf(CodeInvalidRequest, "schedulingConfig.endTime %s must be after the start", sc.EndTime)
		}
		if s.quotas && (sc.End.Before(now.Add(30*time.Minute)) || sc.End.After(now.AddDate(2, 0, 0)) ||
			sc.End.Sub(from) < 30*time.Minute || sc.End.After(from.AddDate(2, 0, 0))) {
			return Errorf(CodeInvalidRequest, "schedulingConfig.endTime %s must be 30 minutes to two years from now and from the start", sc.EndTime)
		}
	}
	switch sc.EndBehavior {
	case "", "STOP_ROLLOUT", "CANCEL", "FORCE_CANCEL":
	default:
		return Errorf(CodeInvalidRequest, "schedulingConfig.endBehavior %q is invalid: use STOP_ROLLOUT, CANCEL or FORCE_CANCEL", sc.EndBehavior)
	}
	for i, w := range sc.MaintenanceWindows {
		if w.DurationInMinutes < 1 || w.DurationInMinutes > 1430 {
			return Errorf(CodeInvalidRequest, "maintenanceWindows[%d].durationInMinutes must be from 1 to 1430", i)
		}
		if _, err := parseWindowCron(w.StartTime); err != nil {
			return Errorf(CodeInvalidRequest, "maintenanceWindows[%d].startTime: %v", i, err)
		}
	}
	return nil
}

// windowCron is a parsed AWS cron expression: robfig/cron's five fields and AWS's year field.
type windowCron struct {
	sched cron.Schedule
	years func(int) bool
}

var (
	cronParser = cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow)
	dowNumber  = regexp.MustCompile(`(^|[,-])([1-7])`)
	dowNames   = [...]string{"SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"}
)

// parseWindowCron parses "cron(Minutes Hours Day-of-month Month Day-of-week Year)", AWS's form
// (the cron( ) wrapper may be left out). AWS numbers days of the week 1 (SUN) to 7 (SAT).
func parseWindowCron(expr string) (*windowCron, error) {
	e := strings.TrimSpace(expr)
	if strings.HasPrefix(e, "cron(") && strings.HasSuffix(e, ")") {
		e = e[len("cron(") : len(e)-1]
	}
	f := strings.Fields(e)
	if len(f) != 6 {
		return nil, fmt.Errorf("%q is not a cron expression of six fields: minutes hours day-of-month month day-of-week year, e.g. cron(0 2 ? * SUN *)", expr)
	}
	if strings.ContainsAny(strings.Join(f, " "), "LW#") {
		return nil, fmt.Errorf("%q: L, W and # are not supported by this jobs service; list the days instead", expr)
	}
	// Day numbers before a "/" step; the step itself stays a number.
	dow := f[4]
	head, step, hasStep := strings.Cut(dow, "/")
	head = dowNumber.ReplaceAllStringFunc(head, func(m string) string {
		n, _ := strconv.Atoi(m[len(m)-1:])
		return m[:len(m)-1] + dowNames[n-1]
	})
	if hasStep {
		head += "/" + step
	}
	f[4] = head
	sched, err := cronParser.Parse(strings.Join(f[:5], " "))
	if err != nil {
		return nil, fmt.Errorf("%q: %v", expr, err)
	}
	years, err := parseYears(f[5])
	if err != nil {
		return nil, fmt.Errorf("%q: %v", expr, err)
	}
	return &windowCron{sched: sched, years: years}, nil
}

// parseYears parses the year field: *, ?, a year, a range, or a list of those.
func parseYears(field string) (func(int) bool, error) {
	if field == "*" || field == "?" {
		return func(int) bool { return true }, nil
	}
	type span struct{ lo, hi int }
	var spans []span
	for _, part := range strings.Split(field, ",") {
		lo, hi, isRange := strings.Cut(part, "-")
		a, err1 := strconv.Atoi(lo)
		b := a
		var err2 error
		if isRange {
			b, err2 = strconv.Atoi(hi)
		}
		if err1 != nil || err2 != nil || a < 1970 || b < a || b > 2199 {
			return nil, fmt.Errorf("year field %q: use *, a year, a range or a list of them (1970-2199)", field)
		}
		spans = append(spans, span{a, b})
	}
	return func(y int) bool {
		for _, s := range spans {
			if y >= s.lo && y <= s.hi {
				return true
			}
		}
		return false
	}, nil
}

// next is the first window start after t, or zero within the next ten years.
func (c *windowCron) next(t time.Time) time.Time {
	limit := t.AddDate(10, 0, 0)
	for n := c.sched.Next(t); !n.IsZero() && n.Before(limit); n = c.sched.Next(n) {
		if c.years(n.Year()) {
			return n
		}
		// Not a year of the expression: go on from the last second of that year.
		n = time.Date(n.Year()+1, 1, 1, 0, 0, 0, 0, time.UTC).Add(-time.Second)
	}
	return time.Time{}
}

// inWindow says whether now falls inside one of the job's maintenance windows; a job without
// windows is always inside.
func inWindow(sc *store.Scheduling, now time.Time) bool {
	if sc == nil || len(sc.MaintenanceWindows) == 0 {
		return true
	}
	for _, w := range sc.MaintenanceWindows {
		c, err := parseWindowCron(w.StartTime)
		if err != nil {
			continue // validated at creation
		}
		d := time.Duration(w.DurationInMinutes) * time.Minute
		if start := c.next(now.Add(-d)); !start.IsZero() && !start.After(now) {
			return true
		}
	}
	return false
}

// NextRollouts are the next n window starts after now over all windows (DescribeJob's
// scheduledJobRollouts).
func NextRollouts(sc *store.Scheduling, now time.Time, n int) []string {
	var out []time.Time
	for _, w := range sc.MaintenanceWindows {
		c, err := parseWindowCron(w.StartTime)
		if err != nil {
			continue
		}
		for t, k := now, 0; k < n; k++ {
			if t = c.next(t); t.IsZero() {
				break
			}
			out = append(out, t)
		}
	}
	slices.SortFunc(out, time.Time.Compare)
	if len(out) > n {
		out = out[:n]
	}
	s := make([]string, len(out))
	for i, t := range out {
		s[i] = t.Format("2006-01-02T15:04")
	}
	return s
}

// holds says whether a newly queued execution of j must wait: for the rate limit, or for a
// maintenance window.
func heldBySchedule(j *store.Job, now time.Time) bool {
	lim := rateLimit(j)
	return (lim > 0 && j.RateReleased >= lim) || !inWindow(j.Scheduling, now)
}

// sweepSchedules starts SCHEDULED jobs whose startTime has come and applies the end behavior
// of jobs past their endTime. It returns the things whose queue changed.
func (s *Service) sweepSchedules(now time.Time) ([]string, error) {
	var things []string
	err := s.st.Update(func(t store.Tx) error {
		things = nil
		all, err := t.Records(recordJobSchedule)
		if err != nil {
			return err
		}
		for _, raw := range all {
			var id string
			if err := json.Unmarshal(raw, &id); err != nil {
				return err
			}
			j, err := t.Job(id)
			if err != nil {
				return err
			}
			if j == nil || j.Scheduling == nil {
				if err := t.DeleteRecord(recordJobSchedule, id); err != nil {
					return err
				}
				continue
			}
			sc := j.Scheduling
			if j.Status == JobScheduled && !sc.Start.After(now) {
				started, err := s.startScheduled(t, j, now)
				if err != nil {
					return err
				}
				things = append(things, started...)
			}
			if j.Status == store.JobInProgress && !sc.End.IsZero() && !sc.Ended && !sc.End.After(now) {
				ended, err := s.endScheduled(t, j, now)
				if err != nil {
					return err
				}
				things = append(things, ended...)
			}
			if j.Status != JobScheduled && (sc.End.IsZero() || sc.Ended || j.Status != store.JobInProgress) {
				if err := t.DeleteRecord(recordJobSchedule, id); err != nil {
					return err
				}
			}
		}
		return nil
	})
	return things, err
}

// startScheduled rolls a SCHEDULED job out: its targets are resolved now (a group's members
// as of the start) and one execution queued per thing.
func (s *Service) startScheduled(t store.Tx, j *store.Job, now time.Time) ([]string, error) {
	withTargets, err := t.JobWithTargets(j.ID)
	if err != nil {
		return nil, err
	}
	things, groups, err := s.splitTargets(withTargets.Targets)
	if err != nil {
		return nil, err
	}
	var present []string
	for _, name := range things {
		th, err := t.Thing(name)
		if err != nil {
			return nil, err
		}
		if th == nil {
			s.log.Warn().Str("job", j.ID).Str("thing", name).Msg("scheduled job: target thing was deleted before the start; skipped")
			continue
		}
		present = append(present, name)
	}
	all, err := resolveGroups(t, present, groups)
	if err != nil {
		return nil, err
	}
	j.Status = store.JobInProgress
	queued, err := s.rollOut(t, j, all, now)
	if err != nil {
		return nil, err
	}
	s.log.Info().Str("job", j.ID).Int("things", len(all)).Msg("scheduled job started")
	return queued, t.PutJob(j)
}

// endScheduled applies a job's endBehavior at its endTime. STOP_ROLLOUT (the default) cancels
// the executions not yet offered to a device (held by the rate limit or a maintenance window)
// and stops a CONTINUOUS job from taking new members; those already offered run on. CANCEL and
// FORCE_CANCEL cancel the job as CancelJob does.
func (s *Service) endScheduled(t store.Tx, j *store.Job, now time.Time) ([]string, error) {
	j.Scheduling.Ended = true
	reason := fmt.Sprintf("schedulingConfig.endTime %s reached", j.Scheduling.EndTime)
	switch j.Scheduling.EndBehavior {
	case "CANCEL", "FORCE_CANCEL":
		s.log.Info().Str("job", j.ID).Str("endBehavior", j.Scheduling.EndBehavior).Msg(reason)
		return s.cancelInTx(t, j, j.Scheduling.EndBehavior == "FORCE_CANCEL", reason, "", now)
	}
	for _, g := range j.TargetGroups {
		if err := t.SetContinuousJob(g, j.ID, false); err != nil {
			return nil, err
		}
	}
	held, err := t.Held(j.ID)
	if err != nil {
		return nil, err
	}
	var stopped []string
	for _, h := range held {
		thing := h.Thing
		if err := t.Release(j.ID, h); err != nil {
			return nil, err
		}
		e, err := t.Execution(j.ID, thing)
		if err != nil {
			return nil, err
		}
		if e == nil || !e.Held {
			continue
		}
		e.Held = false
		if e.Status == store.ExecQueued {
			if err := s.setStatus(t, j, e, store.ExecCanceled, nil, now); err != nil {
				return nil, err
			}
			stopped = append(stopped, thing)
			continue
		}
		if err := t.PutExecution(e); err != nil {
			return nil, err
		}
	}
	if j.TargetSelection == "CONTINUOUS" && j.Counts.Pending() == 0 {
		j.Status, j.CompletedAt = store.JobCompleted, now
	}
	j.Comment = reason + ": rollout stopped"
	j.LastUpdatedAt = now
	s.log.Info().Str("job", j.ID).Int("notRolledOut", len(stopped)).Msg(reason + ": rollout stopped")
	return nil, t.PutJob(j)
}
