package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/otaflow/otaflow/internal/iotjobs"
	"github.com/otaflow/otaflow/internal/jobdoc"
)

// Device health after an update: the agent reports a small record in its named shadow
// "health" (iotjobs.HealthShadow), so the rollout's health gates can compare the devices that
// took a release with those that did not, through AWS IoT fleet indexing. After an update it
// reports every HealthInterval through HealthWindow, re-running the release's signed health
// check each time; otherwise every HealthIdle.
//
// The record (all counts since the last update of core):
//
//	version              the core version running
//	updatedAt            when it was installed (epoch seconds)
//	reportedAt           when this record was made (epoch seconds)
//	bootId, bootsSinceUpdate
//	restarts             restarts of the managed software (its systemd unit's NRestarts)
//	healthChecks, healthCheckFailures, healthy   the signed health check re-run
//	reconnects           MQTT reconnections
//	freeBytes            free space under the install root
//	metrics              counters and gauges local software pushed over the IPC socket

// HealthChecker is an Installer that can re-run the active version's signed health check.
type HealthChecker interface {
	CheckHealth(ctx context.Context, thing, software string) error
}

// HealthState is what the agent keeps of the health record across restarts.
type HealthState struct {
	Version      string             `json:"version,omitempty"`
	UpdatedAt    int64              `json:"updatedAt,omitempty"`
	BootID       string             `json:"bootId,omitempty"`
	Boots        int                `json:"bootsSinceUpdate,omitempty"`
	Checks       int                `json:"healthChecks,omitempty"`
	Failures     int                `json:"healthCheckFailures,omitempty"`
	Healthy      *bool              `json:"healthy,omitempty"`
	Reconnects   int                `json:"reconnects,omitempty"`
	RestartsBase int                `json:"restartsBase,omitempty"`
	Metrics      map[string]float64 `json:"metrics,omitempty"`
}

// Metric bounds: a few named counters and gauges, so local software cannot bloat the record
// (AWS's 8 KB shadow) or the index.
const (
	MaxMetrics = 16
)

var metricNameRE = regexp.MustCompile(`^[a-zA-Z][a-zA-Z0-9_]{0,31}$`)

// bootID is this boot's identity (Linux); "" elsewhere.
func bootID() string {
	raw, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(raw))
}

// resetHealth starts a new record after core was updated to version.
func (a *Agent) resetHealth(version string) error {
	base, _ := a.serviceRestarts()
	err := a.setState(func(s *State) {
		s.Health = HealthState{Version: version, UpdatedAt: time.Now().Unix(), BootID: a.bootID(), RestartsBase: base}
	})
	select { // the next report comes one health interval from now
	case a.healthReset <- struct{}{}:
	default:
	}
	return err
}

func (a *Agent) bootID() string { return bootIDOf(a.cfg) }

// bootIDOf is this boot's identity as cfg tells it (tests replace it).
func bootIDOf(cfg Config) string {
	if cfg.BootID != nil {
		return cfg.BootID()
	}
	return bootID()
}

// noteBoot counts a new boot since the update (at start).
func (st *State) noteBoot(id string) bool {
	if id == "" || st.Health.UpdatedAt == 0 || st.Health.BootID == id {
		return false
	}
	st.Health.BootID = id
	st.Health.Boots++
	return true
}

// serviceRestarts is the managed software's restart count (its systemd unit's NRestarts).
func (a *Agent) serviceRestarts() (int, bool) {
	if a.cfg.ServiceUnit == "" {
		return 0, false
	}
	out, err := exec.Command("systemctl", "show", "--property=NRestarts", "--value", a.cfg.ServiceUnit).Output()
	if err != nil {
		return 0, false
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(out)))
	return n, err == nil
}

// SetMetric records an application metric (gauge), or adds to it (counter).
func (a *Agent) SetMetric(name string, value float64, add bool) error {
	if !metricNameRE.MatchString(name) {
		return fmt.Errorf("metric name %q: use 1-32 of a-z A-Z 0-9 _, starting with a letter", name)
	}
	if math.IsNaN(value) || math.IsInf(value, 0) {
		return fmt.Errorf("metric %s: the value must be a finite number", name)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	m := a.state.Health.Metrics
	if _, ok := m[name]; !ok && len(m) >= MaxMetrics {
		return fmt.Errorf("metric %s: at most %d metrics are reported; this device has %d", name, MaxMetrics, len(m))
	}
	if m == nil {
		m = map[string]float64{}
		a.state.Health.Metrics = m
	}
	if add {
		m[name] += value
	} else {
		m[name] = value
	}
	return nil
}

// healthLoop reports health until ctx ends: every HealthInterval within HealthWindow of the
// last update, every HealthIdle otherwise.
func (a *Agent) healthLoop(ctx context.Context) {
	if a.cfg.NoHealth {
		return
	}
	// The first report waits for the connection; later ones follow the intervals.
	select {
	case <-ctx.Done():
		return
	case <-a.firstConnect:
	}
	for {
		a.reportHealth(ctx)
		for {
			a.mu.Lock()
			since := time.Since(time.Unix(a.state.Health.UpdatedAt, 0))
			a.mu.Unlock()
			every := a.cfg.HealthIdle
			if since < a.cfg.HealthWindow {
				every = a.cfg.HealthInterval
			}
			timer := time.NewTimer(every)
			select {
			case <-ctx.Done():
				timer.Stop()
				return
			case <-a.healthReset:
				timer.Stop()
				continue // a new update: count its interval from now
			case <-timer.C:
			}
			break
		}
	}
}

// reportHealth re-runs the health check (between jobs, within the window) and publishes the
// record. It does not wait for the broker: a report is not a request.
func (a *Agent) reportHealth(ctx context.Context) {
	a.mu.Lock()
	busy := a.state.CurrentJob != ""
	h := a.state.Health
	a.mu.Unlock()
	if h.UpdatedAt > 0 && !busy && time.Since(time.Unix(h.UpdatedAt, 0)) < a.cfg.HealthWindow {
		if hc, ok := a.cfg.Installer.(HealthChecker); ok {
			err := hc.CheckHealth(ctx, a.cfg.ThingName, jobdoc.SoftwareCore)
			if ctx.Err() != nil {
				return
			}
			ok := err == nil
			a.setState(func(s *State) {
				s.Health.Checks++
				if !ok {
					s.Health.Failures++
				}
				s.Health.Healthy = &ok
			})
			if !ok {
				a.log.Warn().Err(err).Msg("health check failed after the update")
			}
		}
	}
	if a.client == nil || !a.client.IsConnectionOpen() {
		return
	}
	a.mu.Lock()
	h = a.state.Health
	reported := map[string]any{"version": a.state.Installed[jobdoc.SoftwareCore].Version, "reportedAt": time.Now().Unix(),
		"bootsSinceUpdate": h.Boots, "reconnects": h.Reconnects, "healthChecks": h.Checks, "healthCheckFailures": h.Failures}
	if h.UpdatedAt > 0 {
		reported["updatedAt"] = h.UpdatedAt
	}
	if h.Healthy != nil {
		reported["healthy"] = *h.Healthy
	}
	if h.BootID != "" {
		reported["bootId"] = h.BootID
	}
	metrics := map[string]any{}
	for k, v := range h.Metrics {
		metrics[k] = v
	}
	a.mu.Unlock()
	reported["metrics"] = metrics
	if n, ok := a.serviceRestarts(); ok {
		reported["restarts"] = max(n-h.RestartsBase, 0)
	}
	if root := a.cfg.HealthDiskPath; root != "" {
		var st syscall.Statfs_t
		if syscall.Statfs(root, &st) == nil {
			reported["freeBytes"] = st.Bavail * uint64(st.Bsize)
		}
	}
	raw, err := json.Marshal(map[string]any{"state": map[string]any{"reported": reported}})
	if err != nil {
		return
	}
	a.client.Publish(iotjobs.ShadowTopic(a.cfg.ThingName, iotjobs.HealthShadow, "update"), 1, false, raw)
}
