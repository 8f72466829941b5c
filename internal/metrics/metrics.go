// Package metrics exposes the node's Prometheus metrics. Each node has its
// own registry (no global state); the executor reports through Hooks.
package metrics

import (
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/spear-go/spear/internal/execution"
	"github.com/spear-go/spear/internal/runtime"
)

// Metrics are the node's metrics.
type Metrics struct {
	reg        *prometheus.Registry
	executions *prometheus.CounterVec
	duration   *prometheus.HistogramVec
	queueWait  *prometheus.HistogramVec
	coldStart  *prometheus.HistogramVec
	callbacks  *prometheus.CounterVec
}

// Gauges are read when scraped.
type Gauges struct {
	Running func() float64
	Waiting func() float64
	Queued  func() float64
}

// New registers the metrics.
func New(g Gauges) *Metrics {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m := &Metrics{
		reg: reg,
		executions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "spear_executions_total",
			Help: "Executions that reached a terminal state, by task, mode, runtime and status.",
		}, []string{"task", "mode", "runtime", "status"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "spear_execution_duration_seconds",
			Help:    "Run time of executions, by runtime.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 12),
		}, []string{"runtime"}),
		queueWait: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "spear_queue_wait_seconds",
			Help:    "Time from acceptance to start, by runtime.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 12),
		}, []string{"runtime"}),
		coldStart: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "spear_cold_start_seconds",
			Help:    "Time from a run's start to the function running (container created and started), by runtime.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 14),
		}, []string{"runtime"}),
	}
	m.callbacks = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "spear_callback_deliveries_total",
		Help: "Completion callbacks by final state (delivered, failed).",
	}, []string{"state"})
	reg.MustRegister(m.executions, m.duration, m.queueWait, m.coldStart, m.callbacks,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "spear_running_executions", Help: "Executions running on this node."}, g.Running),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "spear_waiting_executions", Help: "Executions on this node waiting for a run slot."}, g.Waiting),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "spear_queued_executions", Help: "Async executions waiting in the durable queue."}, g.Queued),
	)
	return m
}

// Handler serves the metrics.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// Finished implements executor.Hooks.
func (m *Metrics) Finished(r *execution.Record, rt runtime.Type, queueWait time.Duration) {
	m.executions.WithLabelValues(r.TaskID, r.Mode.String(), string(rt), r.Status.String()).Inc()
	if !r.StartedAt.IsZero() {
		m.duration.WithLabelValues(string(rt)).Observe(r.CompletedAt.Sub(r.StartedAt).Seconds())
		if queueWait > 0 {
			m.queueWait.WithLabelValues(string(rt)).Observe(queueWait.Seconds())
		}
	}
}

// ColdStart records the time a runtime took to get a function running.
func (m *Metrics) ColdStart(rt runtime.Type, d time.Duration) {
	m.coldStart.WithLabelValues(string(rt)).Observe(d.Seconds())
}

// CallbackDelivered implements executor.Hooks.
func (m *Metrics) CallbackDelivered(state string) { m.callbacks.WithLabelValues(state).Inc() }
