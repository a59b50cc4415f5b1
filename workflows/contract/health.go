package contract

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Release health: after a wave's devices updated, the rollout watches their health for a
// window (durable timers), comparing the devices that took the release with those of the
// rollout's later waves that did not (the control cohort), through AWS IoT fleet indexing
// over the agents' "health" shadow. A breach pauses the rollout for the operator or aborts
// it (and, under OnFailure ROLLBACK, puts the updated devices back).

// HealthGate is a rollout's health gate.
type HealthGate struct {
	// Criteria are checked every Interval; with none (or with them), DefaultHealthCriteria
	// apply unless NoDefaults.
	Criteria   []HealthCriterion `json:"criteria,omitempty"`
	NoDefaults bool              `json:"noDefaults,omitempty"`
	// Window is how long each wave is watched after its devices updated; Interval how often
	// the criteria are evaluated (it should be at least the agents' --health-interval).
	Window   time.Duration `json:"window"`
	Interval time.Duration `json:"interval"`
	// Action on a breach: HealthPause (wait for the operator) or HealthAbort.
	Action string `json:"action,omitempty"`
}

// Health gate actions.
const (
	HealthPause = "pause"
	HealthAbort = "abort"
)

// HealthCriterion bounds one statistic of one health metric over the updated devices.
type HealthCriterion struct {
	// Name says what it guards, in messages ("restarts per device").
	Name string `json:"name,omitempty"`
	// Metric is a field of the health record ("restarts", "healthCheckFailures",
	// "metrics.errors") or any fleet index field ("shadow.name.x.reported.y").
	Metric string `json:"metric"`
	// Statistic is average, sum, maximum, p50 … p99, share (the share of devices whose value
	// is over Over) or stale (the share of devices whose last report is older than three
	// intervals: offline since their update).
	Statistic string  `json:"statistic"`
	Over      float64 `json:"over,omitempty"`
	// Max is an absolute bound; MaxRatio a bound relative to the control cohort (the updated
	// devices' statistic may be at most MaxRatio times the control's).
	Max      *float64 `json:"max,omitempty"`
	MaxRatio float64  `json:"maxRatio,omitempty"`
	// MinSample is the fewest devices with a value (in each cohort, for MaxRatio) for the
	// criterion to be judged at all (default 1).
	MinSample int `json:"minSample,omitempty"`
}

func bound(v float64) *float64 { return &v }

// DefaultHealthCriteria catch a release that installs and then misbehaves: devices that went
// silent after their update, devices in a reboot loop, and devices whose signed health check
// keeps failing.
func DefaultHealthCriteria() []HealthCriterion {
	return []HealthCriterion{
		{Name: "devices offline since their update", Metric: "reportedAt", Statistic: "stale", Max: bound(0.2), MinSample: 1},
		{Name: "devices in a reboot loop", Metric: "bootsSinceUpdate", Statistic: "share", Over: 2, Max: bound(0), MinSample: 1},
		{Name: "devices failing their health check", Metric: "healthCheckFailures", Statistic: "share", Over: 0, Max: bound(0.1), MinSample: 1},
	}
}

// All is the criteria the gate judges: its own and, unless NoDefaults, the defaults.
func (g *HealthGate) All() []HealthCriterion {
	if g.NoDefaults {
		return g.Criteria
	}
	return append(append([]HealthCriterion{}, g.Criteria...), DefaultHealthCriteria()...)
}

var (
	metricRE    = regexp.MustCompile(`^[a-zA-Z][a-zA-Z0-9_]*(\.[a-zA-Z0-9_:-]+)*$`)
	percentRE   = regexp.MustCompile(`^p([1-9][0-9]?)$`)
	statistics  = []string{"average", "sum", "maximum", "share", "stale"}
	maxGateWave = 10 // AWS allows 12 terms in a query; the gate's names every wave group
)

// Field is the fleet index field a criterion reads.
func (c HealthCriterion) Field() string {
	for _, p := range []string{"shadow.", "attributes.", "connectivity.", "registry."} {
		if strings.HasPrefix(c.Metric, p) {
			return c.Metric
		}
	}
	return "shadow.name.health.reported." + c.Metric
}

// Percent is the percentile of a pNN statistic (0 otherwise).
func (c HealthCriterion) Percent() float64 {
	if m := percentRE.FindStringSubmatch(c.Statistic); m != nil {
		p, _ := strconv.Atoi(m[1])
		return float64(p)
	}
	return 0
}

// Label names the criterion in messages.
func (c HealthCriterion) Label() string {
	if c.Name != "" {
		return c.Name
	}
	return c.Statistic + " of " + c.Metric
}

// Validate checks the gate, with what to fix.
func (g *HealthGate) Validate(waves int) []string {
	var out []string
	add := func(format string, args ...any) { out = append(out, fmt.Sprintf(format, args...)) }
	if g.Window <= 0 {
		add("the health window must be positive (e.g. --health-window 10m)")
	}
	if g.Interval <= 0 || g.Interval > g.Window {
		add("the health interval must be positive and at most the window (e.g. --health-interval 1m)")
	}
	if g.Action != "" && g.Action != HealthPause && g.Action != HealthAbort {
		add("the health gate's action %q: use pause or abort", g.Action)
	}
	if waves > maxGateWave {
		add("a health gate watches at most %d waves (fleet indexing allows 12 terms per query); use fewer waves", maxGateWave)
	}
	if g.NoDefaults && len(g.Criteria) == 0 {
		add("the health gate has no criteria: give some, or keep the defaults")
	}
	for i, c := range g.Criteria {
		where := fmt.Sprintf("health criterion %d (%s)", i+1, c.Label())
		if !metricRE.MatchString(c.Metric) || len(c.Metric) > 128 {
			add("%s: metric %q is not a field name (e.g. restarts, healthCheckFailures, metrics.errors)", where, c.Metric)
		}
		if c.Percent() == 0 && !slices.Contains(statistics, c.Statistic) {
			add("%s: statistic %q: use average, sum, maximum, share, stale or p1 … p99", where, c.Statistic)
		}
		if c.Max == nil && c.MaxRatio <= 0 {
			add("%s: give a bound: max (absolute) and/or maxRatio (against the control cohort)", where)
		}
		if (c.Statistic == "share" || c.Statistic == "stale") && c.Max != nil && (*c.Max < 0 || *c.Max > 1) {
			add("%s: a share's max is a fraction from 0 to 1, not %v", where, *c.Max)
		}
		if c.MinSample < 0 {
			add("%s: minSample must not be negative", where)
		}
	}
	return out
}

// Health gate states.
const (
	HealthObserving  = "OBSERVING"
	HealthPassed     = "PASSED"
	HealthBreached   = "BREACHED"
	HealthOverridden = "OVERRIDDEN"
)

// HealthGateResult is a wave's health gate as it stands.
type HealthGateResult struct {
	State       string           `json:"state"`
	Until       time.Time        `json:"until"`
	Evaluations int              `json:"evaluations"`
	Reason      string           `json:"reason,omitempty"`
	Last        []CriterionValue `json:"last,omitempty"`
	// History keeps each evaluation's first breached (or first) criterion, for a small chart
	// (at most MaxHealthHistory points).
	History  []HealthPoint `json:"history,omitempty"`
	Override *Override     `json:"override,omitempty"`
}

const MaxHealthHistory = 60

// HealthPoint is one evaluation, for a chart.
type HealthPoint struct {
	At        time.Time `json:"at"`
	Criterion string    `json:"criterion"`
	Updated   float64   `json:"updated"`
	Control   float64   `json:"control"`
}

// CriterionValue is one criterion's evaluation: both cohorts' values and sizes, and the
// verdict with its reason.
type CriterionValue struct {
	Criterion string  `json:"criterion"`
	Updated   float64 `json:"updated"`
	UpdatedN  int     `json:"updatedN"`
	Control   float64 `json:"control"`
	ControlN  int     `json:"controlN"`
	Breached  bool    `json:"breached,omitempty"`
	// Note says why a criterion was not judged (too small a sample) or how it was breached.
	Note string `json:"note,omitempty"`
}

// Override is an operator's decision to go on past a breached gate.
type Override struct {
	By     string    `json:"by"`
	Reason string    `json:"reason"`
	At     time.Time `json:"at"`
}

// OverrideRequest asks to go on past a breached health gate.
type OverrideRequest struct {
	By     string `json:"by"`
	Reason string `json:"reason"`
}

// EvaluateHealthInput asks for one evaluation of a gate's criteria.
type EvaluateHealthInput struct {
	Criteria []HealthCriterion `json:"criteria"`
	Version  string            `json:"version"`
	// Waves is "waves 1-2", for messages.
	Waves         string   `json:"waves"`
	UpdatedGroups []string `json:"updatedGroups"`
	ControlGroups []string `json:"controlGroups,omitempty"`
	// StaleBefore: a report older than this (epoch seconds) counts as offline.
	StaleBefore int64 `json:"staleBefore"`
}

// EvaluateHealthResult is the evaluation: every criterion's values, and the first breach.
type EvaluateHealthResult struct {
	Values []CriterionValue `json:"values"`
	Breach string           `json:"breach,omitempty"`
}

// Judge decides a criterion from both cohorts' values and sizes, and says why.
func (c HealthCriterion) Judge(updated float64, updatedN int, control float64, controlN int, waves string) CriterionValue {
	v := CriterionValue{Criterion: c.Label(), Updated: updated, UpdatedN: updatedN, Control: control, ControlN: controlN}
	minN := max(c.MinSample, 1)
	if updatedN < minN {
		v.Note = fmt.Sprintf("not judged: %d updated devices reported it, fewer than the %d needed", updatedN, minN)
		return v
	}
	cohorts := fmt.Sprintf("%s %s in %s (n=%d)", c.Label(), formatValue(c, updated), waves, updatedN)
	if c.Max != nil && updated > *c.Max {
		v.Breached = true
		v.Note = fmt.Sprintf("%s: over the bound %s", cohorts, formatValue(c, *c.Max))
		return v
	}
	if c.MaxRatio > 0 {
		if controlN < minN {
			v.Note = fmt.Sprintf("not compared: %d control devices reported it, fewer than the %d needed", controlN, minN)
			return v
		}
		if updated > c.MaxRatio*control+1e-9 {
			v.Breached = true
			v.Note = fmt.Sprintf("%s against %s in control (n=%d): over the %gx bound", cohorts, formatValue(c, control), controlN, c.MaxRatio)
		}
	}
	return v
}

func formatValue(c HealthCriterion, v float64) string {
	if c.Statistic == "share" || c.Statistic == "stale" {
		return fmt.Sprintf("%.0f%%", 100*v)
	}
	return strconv.FormatFloat(v, 'f', -1, 64)
}
