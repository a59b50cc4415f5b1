package localiot

import (
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/otaflow/otaflow/internal/fleetindex"
	"github.com/otaflow/otaflow/internal/iotjobs"
	"github.com/otaflow/otaflow/internal/localiot/store"
)

// Metrics for Prometheus: what an operator watches a fleet's update system by. The service's
// own figures are read when Prometheus scrapes (API calls by operation, jobs by status, the
// executions of jobs in progress by status), and the store's transactions are timed as they
// run (storeSeconds).

var storeSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{
	Name:    "otaflow_jobs_store_transaction_seconds",
	Help:    "Time of the jobs store's transactions, by kind (view: a read; update: a control-plane write; batch: a device request's write, committed with others).",
	Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14), // 0.5 ms to 4 s
}, []string{"kind"})

func observeStore(kind string, start time.Time) {
	storeSeconds.WithLabelValues(kind).Observe(time.Since(start).Seconds())
}

// serviceCollector reads the service's figures at each scrape (at most every 5 s from the
// store, so that many scrapers cost one read).
type serviceCollector struct {
	s *Service

	calls, jobs, executions, devices *prometheus.Desc

	mu     sync.Mutex
	at     time.Time
	byJob  map[string]float64
	byExec map[string]float64
}

func newServiceCollector(s *Service) *serviceCollector {
	return &serviceCollector{s: s,
		calls:      prometheus.NewDesc("otaflow_jobs_api_calls_total", "Requests served, by operation (REST routes, and device requests over MQTT: \"mqtt get\", \"mqtt update\", ...).", []string{"operation"}, nil),
		jobs:       prometheus.NewDesc("otaflow_jobs", "IoT jobs, by status.", []string{"status"}, nil),
		executions: prometheus.NewDesc("otaflow_job_executions", "Executions of the jobs in progress, by status.", []string{"status"}, nil),
		devices: prometheus.NewDesc("otaflow_devices", "Devices by the version of each software their agent reports (from the fleet index, when it indexes the agents' inventory shadow; the 50 most common versions).",
			[]string{"software", "version"}, nil),
	}
}

func (c *serviceCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.calls
	ch <- c.jobs
	ch <- c.executions
	ch <- c.devices
}

func (c *serviceCollector) Collect(ch chan<- prometheus.Metric) {
	for op, n := range c.s.APICalls() {
		ch <- prometheus.MustNewConstMetric(c.calls, prometheus.CounterValue, float64(n), op)
	}
	byJob, byExec := c.counts()
	for st, n := range byJob {
		ch <- prometheus.MustNewConstMetric(c.jobs, prometheus.GaugeValue, n, st)
	}
	for st, n := range byExec {
		ch <- prometheus.MustNewConstMetric(c.executions, prometheus.GaugeValue, n, st)
	}
	if _, ix := c.s.index.current(); ix != nil {
		all, _ := fleetindex.Parse("*")
		for _, sw := range []string{"core", "ota_agent"} {
			for _, b := range ix.Buckets(all, "shadow.name."+iotjobs.InventoryShadow+".reported.software."+sw, 50) {
				ch <- prometheus.MustNewConstMetric(c.devices, prometheus.GaugeValue, float64(b.Count), sw, b.Key)
			}
		}
	}
}

func (c *serviceCollector) counts() (map[string]float64, map[string]float64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if time.Since(c.at) < 5*time.Second {
		return c.byJob, c.byExec
	}
	byJob := map[string]float64{}
	byExec := map[string]float64{}
	for _, st := range []store.JobStatus{store.JobInProgress, store.JobCompleted, store.JobCanceled, JobScheduled} {
		byJob[string(st)] = 0
	}
	for _, st := range store.ExecStatuses {
		byExec[string(st)] = 0
	}
	err := c.s.st.View(func(t store.Tx) error {
		return t.ForEachJob(func(j *store.Job) error {
			byJob[string(j.Status)]++
			if j.Status == store.JobInProgress {
				for _, st := range store.ExecStatuses {
					byExec[string(st)] += float64(j.Counts.Of(st))
				}
			}
			return nil
		})
	})
	if err != nil {
		c.s.log.Warn().Err(err).Msg("metrics: the jobs store did not answer; serving the last figures")
		return c.byJob, c.byExec
	}
	c.at, c.byJob, c.byExec = time.Now(), byJob, byExec
	return byJob, byExec
}

// MetricsHandler serves the service's metrics, the store's timings, the Go runtime's and the
// process's, and extra collectors (the embedded broker's sessions), in Prometheus's format.
func MetricsHandler(s *Service, extra ...prometheus.Collector) http.Handler {
	reg := MetricsRegistry(s, extra...)
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg})
}

// MetricsRegistry is MetricsHandler's registry, for a process that serves it with others'.
func MetricsRegistry(s *Service, extra ...prometheus.Collector) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(newServiceCollector(s), storeSeconds, collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	for _, c := range extra {
		reg.MustRegister(c)
	}
	return reg
}

// SessionsCollector reports the MQTT clients connected to a broker (sessions() is asked at each
// scrape, so a broker started again is still counted).
func SessionsCollector(sessions func() int64) prometheus.Collector {
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "otaflow_mqtt_sessions", Help: "MQTT clients connected to the embedded broker: every device (and the jobs service when it connects as a client rather than in process)."},
		func() float64 { return float64(sessions()) })
}
