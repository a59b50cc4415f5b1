package stack_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/iot"
	"github.com/otaflow/otaflow/internal/rolloutclient"
	"github.com/otaflow/otaflow/internal/stack"
	"github.com/otaflow/otaflow/workflows/contract"
	"github.com/stretchr/testify/require"
)

// promQuery asks Prometheus's HTTP API for an instant query's first value ("" when none).
func promQuery(t *testing.T, promURL, q string) string {
	resp, err := http.Get(promURL + "/api/v1/query?query=" + url.QueryEscape(q))
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	var out struct {
		Data struct {
			Result []struct {
				Value [2]any `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if json.NewDecoder(resp.Body).Decode(&out) != nil || len(out.Data.Result) == 0 {
		return ""
	}
	v, _ := out.Data.Result[0].Value[1].(string)
	return v
}

// Debian's Prometheus scrapes the stack's /metrics: the jobs service's API calls by operation,
// its jobs and executions by status, its store's timings and the broker's sessions arrive, as
// they would in production.
func TestPrometheusScrapesTheJobsService(t *testing.T) {
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		t.Fatalf("Prometheus is not installed: run `make deps` (apt-get install prometheus)")
	}
	ctx := context.Background()
	s := startStack(t)
	_, err = s.StartDevices(ctx, 3, "1.0.0", 0)
	require.NoError(t, err)

	dir := t.TempDir()
	target := strings.TrimPrefix(s.JobsURL, "http://")
	conf := filepath.Join(dir, "prometheus.yml")
	alerts, err := filepath.Abs("../../deploy/prometheus/alerts.yml")
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(conf, []byte(fmt.Sprintf(`global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files: [%q]
scrape_configs:
  - job_name: otaflow-jobs
    static_configs:
      - targets: [%q]
`, alerts, target)), 0o644))
	listen := freeAddr(t)
	cmd := exec.Command(bin, "--config.file="+conf, "--storage.tsdb.path="+filepath.Join(dir, "data"), "--web.listen-address="+listen)
	logs := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	require.NoError(t, cmd.Start())
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	prom := "http://" + listen

	require.Eventually(t, func() bool { return promQuery(t, prom, `up{job="otaflow-jobs"}`) == "1" }, 60*time.Second, 250*time.Millisecond,
		"Prometheus scrapes the jobs service: %s", lazyString(logs.String))
	require.Eventually(t, func() bool {
		return promQuery(t, prom, `sum(otaflow_jobs_api_calls_total{operation="mqtt get"})`) != "" &&
			promQuery(t, prom, `otaflow_mqtt_sessions == 3`) != "" && // 3 devices (the jobs service works in process)
			promQuery(t, prom, `sum(otaflow_jobs_store_transaction_seconds_count)`) != ""
	}, 60*time.Second, 250*time.Millisecond, "the service's figures arrive")
	require.Equal(t, "0", promQuery(t, prom, `otaflow_jobs{status="IN_PROGRESS"}`), "no job yet")

	// A job the devices never take (its document is not theirs): counted in progress, its three
	// executions queued.
	_, err = s.IoT.CreateJob(ctx, &iot.CreateJobInput{JobId: aws.String("metrics-job"), Document: aws.String(`{"operation":"not-otaflow"}`),
		Targets: []string{"arn:aws:iot:us-east-1:000000000000:thing/device-0001"}})
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		return promQuery(t, prom, `otaflow_jobs{status="IN_PROGRESS"}`) == "1" && promQuery(t, prom, `otaflow_job_executions{status="QUEUED"}`) == "1"
	}, 60*time.Second, 250*time.Millisecond, "the job and its execution are counted")

	// The worker's figures arrive too (starter dev serves them at the same /metrics): one
	// rollout that succeeds, one that aborts.
	arns, err := s.StartDevices(ctx, 2, "1.0.0", 0)
	require.NoError(t, err)
	run, err := rolloutclient.Start(ctx, s.Client, contract.TaskQueue, request("metrics-ok", arns))
	require.NoError(t, err)
	res, err := rolloutclient.Result(ctx, run)
	require.NoError(t, err, res.Message)
	s.SetDeviceFaults([]string{stack.Device(5)}, nil)
	bad := request("metrics-bad", arns)
	setVersion(&bad, "1.12.0")
	run, err = rolloutclient.Start(ctx, s.Client, contract.TaskQueue, bad)
	require.NoError(t, err)
	res, _ = rolloutclient.Result(ctx, run)
	require.NotEqual(t, contract.StateSucceeded, res.State)
	require.Eventually(t, func() bool {
		return promQuery(t, prom, `sum(otaflow_rollout_events_total{event="rollout.succeeded"})`) == "1" &&
			promQuery(t, prom, `sum(temporal_workflow_failed_total)`) != ""
	}, 60*time.Second, 250*time.Millisecond, "the worker's figures arrive")
	// Devices by version (the fleet index of their inventory shadows), rollouts by state.
	require.Eventually(t, func() bool {
		return promQuery(t, prom, `otaflow_devices{software="core",version="1.11.6"}`) != "" &&
			promQuery(t, prom, `otaflow_devices{software="core",version="1.0.0"}`) == "3" &&
			promQuery(t, prom, `sum(otaflow_rollouts)`) == "0" && promQuery(t, prom, `otaflow_rollouts{state="RUNNING"}`) == "0"
	}, 60*time.Second, 250*time.Millisecond, "devices by version, rollouts in progress by state")

	// The shipped alert rules load and evaluate; the one for a stopped rollout fires.
	require.Eventually(t, func() bool {
		var rules struct {
			Data struct {
				Groups []struct {
					Rules []struct {
						Name, Health, LastError, State string
					}
				}
			}
		}
		if err := getJSON(prom+"/api/v1/rules", &rules); err != nil || len(rules.Data.Groups) != 2 {
			return false
		}
		firing := false
		for _, g := range rules.Data.Groups {
			for _, r := range g.Rules {
				if r.Health != "ok" {
					return false
				}
				firing = firing || (r.Name == "OtaflowRolloutStopped" && r.State != "inactive")
			}
		}
		return firing
	}, 60*time.Second, 250*time.Millisecond, "alert rules healthy, OtaflowRolloutStopped pending or firing")
	out, err := exec.Command("promtool", "check", "rules", alerts).CombinedOutput()
	require.NoError(t, err, "promtool: %s", out)

	// Every query of the Grafana dashboard runs, and every metric the dashboard and the rules
	// name is one otaflow exports.
	var names struct{ Data []string }
	require.NoError(t, getJSON(prom+"/api/v1/label/__name__/values", &names))
	dashboard, err := os.ReadFile("../../deploy/grafana/otaflow.json")
	require.NoError(t, err)
	var d struct {
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
	}
	require.NoError(t, json.Unmarshal(dashboard, &d))
	require.NotEmpty(t, d.Panels)
	rulesRaw, err := os.ReadFile(alerts)
	require.NoError(t, err)
	exprs := []string{string(rulesRaw)}
	for _, p := range d.Panels {
		require.NotEmpty(t, p.Targets, p.Title)
		for _, tg := range p.Targets {
			q := strings.ReplaceAll(tg.Expr, "$__rate_interval", "1m")
			var r struct{ Status, Error string }
			require.NoError(t, getJSON(prom+"/api/v1/query?query="+url.QueryEscape(q), &r))
			require.Equal(t, "success", r.Status, "panel %q: %s: %s", p.Title, q, r.Error)
			exprs = append(exprs, tg.Expr)
		}
	}
	// Counters made only once what they count happened: the SDK's failed requests
	// (go.temporal.io/sdk's metric name), health gate evaluations (no rollout here has a gate;
	// workflows.TestHealthBreachAbortsAndRollsBack reads it).
	onlyAfterFailure := []string{"temporal_request_failure_total", "otaflow_health_gate_evaluations_total"}
	for _, m := range regexp.MustCompile(`\b(?:otaflow|temporal)_[a-z_]+`).FindAllString(strings.Join(exprs, "\n"), -1) {
		if !slices.Contains(onlyAfterFailure, m) {
			require.Contains(t, names.Data, m, "the dashboard or the rules name %s, which is not exported", m)
		}
	}
}

// getJSON decodes a GET's JSON answer into out (errors answered with a JSON body included).
func getJSON(u string, out any) error {
	resp, err := http.Get(u)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return json.NewDecoder(resp.Body).Decode(out)
}
