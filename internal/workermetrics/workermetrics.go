// Package workermetrics is the rollout worker's Prometheus metrics: the Temporal SDK's own
// (workflow and activity tasks, latencies, failures, poll and cache figures), through its
// OpenTelemetry handler, and the rollouts' events (otaflow_rollout_events_total by event:
// started, wave passed, health gate breached, succeeded, aborted...), which the workflows count
// through the SDK, so a replay never counts twice.
package workermetrics

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/otaflow/otaflow/workflows/contract"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/contrib/opentelemetry"
)

// Metrics is the worker's registry and the handler the Temporal client reports to.
type Metrics struct {
	Registry *prometheus.Registry
	// Temporal is the Temporal client's MetricsHandler (client.Options.MetricsHandler).
	Temporal client.MetricsHandler
}

// New makes the registry; with runtime, the Go runtime's and the process's metrics too (a
// worker process of its own; in `starter dev` the jobs service's registry has them).
func New(runtime bool) (*Metrics, error) {
	reg := prometheus.NewRegistry()
	exp, err := otelprom.New(otelprom.WithRegisterer(reg), otelprom.WithoutScopeInfo())
	if err != nil {
		return nil, fmt.Errorf("worker metrics: %w", err)
	}
	// The SDK's timers are in seconds: OpenTelemetry's default buckets (0 to 10,000) are for
	// milliseconds.
	seconds := sdkmetric.NewView(sdkmetric.Instrument{Kind: sdkmetric.InstrumentKindHistogram},
		sdkmetric.Stream{Aggregation: sdkmetric.AggregationExplicitBucketHistogram{Boundaries: []float64{0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300}}})
	provider := sdkmetric.NewMeterProvider(sdkmetric.WithReader(exp), sdkmetric.WithView(seconds))
	m := &Metrics{Registry: reg, Temporal: opentelemetry.NewMetricsHandler(opentelemetry.MetricsHandlerOptions{
		Meter: provider.Meter("otaflow-worker"), UseMonotonicCounters: true,
		// A metric that cannot be made is no reason to stop rollouts.
		OnError: func(err error) { otel.Handle(err) },
	})}
	if runtime {
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	return m, nil
}

// Handler serves the metrics in Prometheus's format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{Registry: m.Registry})
}

// inProgress are the states of a rollout that has not ended.
var inProgress = []string{contract.StateValidating, contract.StateRunning, contract.StatePaused, contract.StateAwaiting, contract.StateWaitingWindow,
	contract.StateObserving, contract.StateRollingBack, contract.StateCanceling}

// rollouts reports the rollouts in progress by state, asked of Temporal's visibility (its
// OtaflowState search attribute) at most every 10 s, however often Prometheus scrapes.
type rollouts struct {
	c    client.Client
	desc *prometheus.Desc
	mu   sync.Mutex
	at   time.Time
	last map[string]int64
}

// RolloutsCollector is otaflow_rollouts{state}: the rollouts in progress, by state.
func RolloutsCollector(c client.Client) prometheus.Collector {
	return &rollouts{c: c, desc: prometheus.NewDesc("otaflow_rollouts", "Rollouts in progress, by state (RUNNING, PAUSED, AWAITING_APPROVAL, OBSERVING_HEALTH, ROLLING_BACK...).", []string{"state"}, nil)}
}

func (r *rollouts) Describe(ch chan<- *prometheus.Desc) { ch <- r.desc }

func (r *rollouts) Collect(ch chan<- prometheus.Metric) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if time.Since(r.at) > 10*time.Second {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		counts := map[string]int64{}
		for _, st := range inProgress {
			resp, err := r.c.CountWorkflow(ctx, &workflowservice.CountWorkflowExecutionsRequest{
				Query: fmt.Sprintf("WorkflowType = '%s' AND ExecutionStatus = 'Running' AND %s = '%s'", contract.WorkflowRollout, contract.SearchState.GetName(), st)})
			if err != nil {
				counts = nil // Temporal does not answer: the last figures stand
				break
			}
			counts[st] = resp.GetCount()
		}
		if counts != nil {
			r.at, r.last = time.Now(), counts
		}
	}
	for st, n := range r.last {
		ch <- prometheus.MustNewConstMetric(r.desc, prometheus.GaugeValue, float64(n), st)
	}
}
