package rolloutops

import (
	"context"
	"fmt"
	"time"

	"github.com/robfig/cron/v3"

	"github.com/otaflow/otaflow/workflows/contract"
)

var cronParser = cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

// MaintenanceWindow says whether the window is open at in.At and when it next opens or
// closes. It is an activity because time zones come from the system's tz database.
func (a *Ops) MaintenanceWindow(_ context.Context, in contract.WindowInput) (*contract.WindowState, error) {
	s, err := WindowAt(in.Window, in.At)
	if err != nil {
		return nil, invalidErr(err.Error(), nil)
	}
	return s, nil
}

// WindowAt computes a maintenance window's state at t (also used to validate a window before
// a rollout starts).
func WindowAt(w contract.MaintenanceWindow, t time.Time) (*contract.WindowState, error) {
	loc := time.UTC
	if w.TimeZone != "" {
		l, err := time.LoadLocation(w.TimeZone)
		if err != nil {
			return nil, fmt.Errorf("maintenance window time zone %q is unknown: use an IANA name such as Europe/Berlin", w.TimeZone)
		}
		loc = l
	}
	sched, err := cronParser.Parse(w.Cron)
	if err != nil {
		return nil, fmt.Errorf("maintenance window cron %q is invalid (%v): use five fields, e.g. \"0 2 * * *\" for 02:00 daily", w.Cron, err)
	}
	if w.Duration < time.Minute {
		return nil, fmt.Errorf("maintenance window duration must be at least a minute")
	}
	local := t.In(loc)
	// The latest opening not more than one duration ago decides whether we are inside.
	start := sched.Next(local.Add(-w.Duration).Add(-time.Second))
	if !start.After(local) && local.Before(start.Add(w.Duration)) {
		return &contract.WindowState{Open: true, OpensAt: start.UTC(), ClosesAt: start.Add(w.Duration).UTC()}, nil
	}
	if !start.After(local) {
		start = sched.Next(local)
	}
	return &contract.WindowState{OpensAt: start.UTC(), ClosesAt: start.Add(w.Duration).UTC()}, nil
}
