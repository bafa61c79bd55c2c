package store

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pdsmux/pdsmux/internal/cursor"
)

// Metrics of the archive. A nil *Metrics records nothing.
type Metrics struct {
	pending      prometheus.Gauge
	pendingBytes prometheus.Gauge
	budget       prometheus.Gauge
	behind       prometheus.Gauge
	lagEvents    prometheus.Gauge
	written      prometheus.Counter
	failures     prometheus.Counter
	lostN        prometheus.Counter
	writeTime    prometheus.Histogram
	lagSec       prometheus.Gauge
	restores     *prometheus.CounterVec
}

// NewMetrics registers the archive metrics on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		pending: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "pdsmux_archive_pending_events",
			Help: "Events the archiver has read from the log and not yet written to the libsql archive (the batch being written included).",
		}),
		pendingBytes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "pdsmux_archive_pending_bytes",
			Help: "Frame bytes of pdsmux_archive_pending_events; never above pdsmux_archive_buffer_bytes (but for one frame larger than it).",
		}),
		budget: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "pdsmux_archive_buffer_bytes",
			Help: "The archiver's buffer budget: when its pending bytes reach it, it stops reading the log and catches up from Redis later.",
		}),
		behind: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "pdsmux_archive_behind",
			Help: "1 while the archive is more than its buffer behind the log (the database is slow or unreachable): the live stream is then not held back for it. 0 when it keeps up.",
		}),
		lagEvents: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "pdsmux_archive_lag_events",
			Help: "Seqs between the archive's durable high-water mark and the newest the archiver knows in the log: how far the checkpoint trails Redis.",
		}),
		written: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pdsmux_archive_events_total",
			Help: "Events written to the libsql archive.",
		}),
		failures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pdsmux_archive_write_errors_total",
			Help: "Failed archive writes (retried; nothing is dropped). Non-zero means the checkpoint trails Redis by more than usual.",
		}),
		lostN: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pdsmux_archive_lost_total",
			Help: "Seqs Redis trimmed (its --max-entries cap) before the archiver read them, recorded in the archive as trimmed: replays across them get OutdatedCursor. Zero unless the database was down for longer than Redis's cap holds.",
		}),
		writeTime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "pdsmux_archive_write_seconds",
			Help:    "Time to write one batch to the archive.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}),
		lagSec: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "pdsmux_archive_lag_seconds",
			Help: "Age of the newest archived event when it was written: how far the durable checkpoint trails the live log.",
		}),
		restores: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pdsmux_redis_reconciles_total",
			Help: "Times the durable checkpoint was merged back into Redis, by trigger (startup, lost_state, lost_writes) and whether anything had to be restored (restored=true means Redis had lost data).",
		}, []string{"trigger", "restored"}),
	}
	reg.MustRegister(m.pending, m.pendingBytes, m.budget, m.behind, m.lagEvents, m.written, m.failures, m.lostN, m.writeTime, m.lagSec, m.restores)
	for _, t := range []string{"startup", "lost_state", "lost_writes"} {
		m.restores.WithLabelValues(t, "false")
		m.restores.WithLabelValues(t, "true")
	}
	return m
}

func (m *Metrics) setPending(n, bytes int) {
	if m != nil {
		m.pending.Set(float64(n))
		m.pendingBytes.Set(float64(bytes))
	}
}

func (m *Metrics) setBudget(bytes int) {
	if m != nil {
		m.budget.Set(float64(bytes))
	}
}

func (m *Metrics) setBehind(b bool) {
	if m != nil {
		v := 0.0
		if b {
			v = 1
		}
		m.behind.Set(v)
	}
}

func (m *Metrics) setLag(seqs int64) {
	if m != nil {
		m.lagEvents.Set(float64(seqs))
	}
}

func (m *Metrics) wrote(n int, d time.Duration, last cursor.Entry) {
	if m != nil {
		m.written.Add(float64(n))
		m.writeTime.Observe(d.Seconds())
		m.lagSec.Set(time.Since(last.Time).Seconds())
	}
}

func (m *Metrics) failed() {
	if m != nil {
		m.failures.Inc()
	}
}

func (m *Metrics) lost(seqs int64) {
	if m != nil {
		m.lostN.Add(float64(seqs))
	}
}

// Reconciled counts one merge of the checkpoint into Redis.
func (m *Metrics) Reconciled(trigger string, restored bool) {
	if m != nil {
		r := "false"
		if restored {
			r = "true"
		}
		m.restores.WithLabelValues(trigger, r).Inc()
	}
}
