package main

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/spf13/pflag"
	"github.com/stretchr/testify/require"

	"github.com/otaflow/otaflow/workflows/contract"
)

// TestHealthFlags: the common criteria have flags, the rest a file; every criterion is
// validated with the rollout, and a criterion without a window is refused with the reason.
func TestHealthFlags(t *testing.T) {
	file := filepath.Join(t.TempDir(), "criteria.yaml")
	require.NoError(t, os.WriteFile(file, []byte("- name: queue depth\n  metric: metrics.queueDepth\n  statistic: maximum\n  max: 100\n"), 0o644))
	parse := func(args ...string) (*contract.RolloutRequest, error) {
		var f rolloutFlags
		fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
		f.bind(fs, time.Hour)
		require.NoError(t, fs.Parse(args))
		req := &contract.RolloutRequest{}
		return req, f.apply(req)
	}
	req, err := parse("--health-window", "30m", "--health-restarts-ratio", "3", "--health-max", "metrics.errors:p95=10",
		"--health-max", "restarts=2", "--health-criteria", file, "--health-min-sample", "20")
	require.NoError(t, err)
	g := req.Health
	require.Equal(t, 30*time.Minute, g.Window)
	require.Equal(t, time.Minute, g.Interval)
	require.Len(t, g.Criteria, 4)
	require.Equal(t, contract.HealthCriterion{Name: "restarts per device", Metric: "restarts", Statistic: "average", MaxRatio: 3, MinSample: 20}, g.Criteria[0])
	require.Equal(t, "p95", g.Criteria[1].Statistic)
	require.Equal(t, 10.0, *g.Criteria[1].Max)
	require.Equal(t, "average", g.Criteria[2].Statistic)
	require.Equal(t, "queue depth", g.Criteria[3].Name)
	require.Len(t, g.All(), 7, "with the three defaults")

	_, err = parse("--health-restarts-ratio", "3")
	require.ErrorContains(t, err, "need --health-window")
	_, err = parse("--health-window", "1m", "--health-max", "restarts")
	require.ErrorContains(t, err, "METRIC[:STATISTIC]=MAX")
	require.NoError(t, os.WriteFile(file, []byte("- metrik: x\n"), 0o644))
	_, err = parse("--health-window", "1m", "--health-criteria", file)
	require.ErrorContains(t, err, "is not a list of criteria")
	req, err = parse("--health-window", "1m", "--health-max", "restarts:median=2")
	require.NoError(t, err)
	req.RolloutID, req.Targets, req.OperatingSystem, req.Architecture = "r", []string{"d1"}, "ubuntu", "x86_64"
	require.ErrorContains(t, req.Validate(), `statistic "median"`)
}
