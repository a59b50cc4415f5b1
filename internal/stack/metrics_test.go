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
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/iot"
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
	require.NoError(t, os.WriteFile(conf, []byte(fmt.Sprintf(`global:
  scrape_interval: 1s
scrape_configs:
  - job_name: otaflow-jobs
    static_configs:
      - targets: [%q]
`, target)), 0o644))
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
			promQuery(t, prom, `otaflow_mqtt_sessions >= 4`) != "" && // the jobs service and 3 devices
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
}
