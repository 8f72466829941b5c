// Package metrics exposes the node's Prometheus metrics. Each node has its
// own registry (no global state); the executor reports through Hooks.
package metrics

import (
	"net/http"
	"strconv"
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
	estimate   prometheus.Histogram
	retries    *prometheus.CounterVec
	dead       *prometheus.CounterVec
	callbacks  *prometheus.CounterVec
}

// Gauges are read when scraped.
type Gauges struct {
	Running func() float64
	Waiting func() float64
	// QueuedByBand returns the executions waiting in the durable queue, by
	// priority band (index 0 the lowest).
	QueuedByBand func() []int64
	// CachedArtifacts returns, by runtime, the artifacts the runtimes that
	// cache them hold now (compiled WASM modules).
	CachedArtifacts func() map[runtime.Type]int
	// StoreBytes and StoreBudgetBytes are the store's size and budget (0:
	// not known).
	// Spares returns, by runtime, what the runtimes that start functions
	// ahead of their invocations hold and did.
	Spares                       func() map[runtime.Type]runtime.SpareCounts
	StoreBytes, StoreBudgetBytes func() float64
	// ClusterNodes returns the live nodes sharing the store (this one
	// included); NodeSlots their run slots, total and busy, by node id.
	ClusterNodes func() float64
	NodeSlots    func() (total, busy map[string]float64)
}

// latency buckets: 100 µs to about 7 minutes.
var latency = prometheus.ExponentialBuckets(0.0001, 4, 12)

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
			Name: "spear_execution_duration_seconds", Help: "Run time of executions, by runtime.", Buckets: latency,
		}, []string{"runtime"}),
		queueWait: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "spear_queue_wait_seconds", Help: "Time from acceptance to start, by runtime.", Buckets: latency,
		}, []string{"runtime"}),
		coldStart: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "spear_cold_start_seconds",
			Help:    "Time the runtime took to get a function running (process spawned, instance created, container started), by runtime.",
			Buckets: latency,
		}, []string{"runtime"}),
		estimate: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "spear_estimate_ratio",
			Help:    "Async executions' actual time to completion divided by the estimate given at acceptance (1 is exact).",
			Buckets: []float64{0.125, 0.25, 0.5, 0.67, 0.8, 0.9, 1, 1.1, 1.25, 1.5, 2, 4, 8},
		}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "spear_retries_total", Help: "Async executions queued again after a failed or timed-out attempt, by task.",
		}, []string{"task"}),
		dead: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "spear_dead_letters_total", Help: "Async executions whose retries ran out (dead-lettered), by task.",
		}, []string{"task"}),
		callbacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "spear_callback_deliveries_total", Help: "Completion callbacks by final state (delivered, failed).",
		}, []string{"state"}),
	}
	reg.MustRegister(m.executions, m.duration, m.queueWait, m.coldStart, m.estimate, m.retries, m.dead, m.callbacks,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "spear_running_executions", Help: "Executions running on this node."}, orZero(g.Running)),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "spear_waiting_executions", Help: "Executions on this node waiting for a run slot."}, orZero(g.Waiting)),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "spear_store_bytes", Help: "Bytes the store holds for Spear."}, orZero(g.StoreBytes)),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "spear_store_budget_bytes", Help: "Bytes the store may hold (0: not known)."}, orZero(g.StoreBudgetBytes)),
		&gaugeVec{get: byBand(g.QueuedByBand), desc: prometheus.NewDesc("spear_queued_executions",
			"Async executions waiting in the durable queue, by priority band (0 lowest, 4 highest).", []string{"band"}, nil)},
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "spear_cluster_nodes", Help: "Live nodes sharing this node's store, this one included."}, orZero(g.ClusterNodes)),
		&gaugeVec{get: slotsOf(g.NodeSlots, false), desc: prometheus.NewDesc("spear_cluster_node_slots",
			"Run slots of each live node sharing the store, by node id.", []string{"node"}, nil)},
		&gaugeVec{get: slotsOf(g.NodeSlots, true), desc: prometheus.NewDesc("spear_cluster_node_slots_busy",
			"Run slots in use on each live node sharing the store, by node id.", []string{"node"}, nil)},
		&gaugeVec{get: byRuntime(g.CachedArtifacts, func(n int) float64 { return float64(n) }), desc: prometheus.NewDesc("spear_runtime_cached_artifacts",
			"Artifacts a runtime holds ready between runs (compiled WASM modules), by runtime.", []string{"runtime"}, nil)},
		&gaugeVec{get: byRuntime(g.Spares, func(c runtime.SpareCounts) float64 { return float64(c.Ready) }),
			desc: prometheus.NewDesc("spear_runtime_spares",
				"Functions started ahead of their invocations and waiting for one (process spares), by runtime.", []string{"runtime"}, nil)},
		&gaugeVec{get: byRuntime(g.Spares, func(c runtime.SpareCounts) float64 { return float64(c.Used) }), kind: prometheus.CounterValue,
			desc: prometheus.NewDesc("spear_runtime_spares_used_total",
				"Invocations that ran in a function started ahead of them, by runtime.", []string{"runtime"}, nil)},
		&gaugeVec{get: byRuntime(g.Spares, func(c runtime.SpareCounts) float64 { return float64(c.Discarded) }), kind: prometheus.CounterValue,
			desc: prometheus.NewDesc("spear_runtime_spares_discarded_total",
				"Functions started ahead of their invocations and killed unused (not taken in time, task changed, node stopping), by runtime.", []string{"runtime"}, nil)},
	)
	return m
}

// slotsOf reads f's busy (or total) slots by node.
func slotsOf(f func() (total, busy map[string]float64), busy bool) func() map[string]float64 {
	return func() map[string]float64 {
		if f == nil {
			return nil
		}
		t, b := f()
		if busy {
			return b
		}
		return t
	}
}

// orZero is f, or a gauge of 0 when the source is missing.
func orZero(f func() float64) func() float64 {
	if f == nil {
		return func() float64 { return 0 }
	}
	return f
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
	if r.StartupUs > 0 {
		m.coldStart.WithLabelValues(string(rt)).Observe(float64(r.StartupUs) / 1e6)
	}
	if r.EstimatedMs > 0 && r.Status == execution.StatusCompleted {
		actual := r.CompletedAt.Sub(r.CreatedAt)
		m.estimate.Observe(actual.Seconds() * 1000 / float64(r.EstimatedMs))
	}
	if r.DeadLettered {
		m.dead.WithLabelValues(r.TaskID).Inc()
	}
}

// Retried implements executor.Hooks.
func (m *Metrics) Retried(r *execution.Record) { m.retries.WithLabelValues(r.TaskID).Inc() }

// CallbackDelivered implements executor.Hooks.
func (m *Metrics) CallbackDelivered(state string) { m.callbacks.WithLabelValues(state).Inc() }

// gaugeVec reads a gauge's values, by its one label, once per scrape.
type gaugeVec struct {
	get  func() map[string]float64
	desc *prometheus.Desc
	// kind is the series' type; zero means a gauge.
	kind prometheus.ValueType
}

func (c *gaugeVec) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *gaugeVec) Collect(ch chan<- prometheus.Metric) {
	kind := c.kind
	if kind == 0 {
		kind = prometheus.GaugeValue
	}
	for label, v := range c.get() {
		ch <- prometheus.MustNewConstMetric(c.desc, kind, v, label)
	}
}

// byBand labels queue depths by their band's index.
func byBand(get func() []int64) func() map[string]float64 {
	return func() map[string]float64 {
		out := map[string]float64{}
		if get == nil {
			return out
		}
		for band, n := range get() {
			out[strconv.Itoa(band)] = float64(n)
		}
		return out
	}
}

// byRuntime labels a figure of each runtime's value by runtime type.
func byRuntime[V any](get func() map[runtime.Type]V, figure func(V) float64) func() map[string]float64 {
	return func() map[string]float64 {
		out := map[string]float64{}
		if get == nil {
			return out
		}
		for t, v := range get() {
			out[string(t)] = figure(v)
		}
		return out
	}
}
