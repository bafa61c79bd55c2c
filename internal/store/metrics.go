package store

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pdsmux/pdsmux/internal/cursor"
)

// Metrics of the archive. A nil *Metrics records nothing.
type Metrics struct {
	pending   prometheus.Gauge
	written   prometheus.Counter
	failures  prometheus.Counter
	droppedN  prometheus.Counter
	writeTime prometheus.Histogram
	lagSec    prometheus.Gauge
	restores  *prometheus.CounterVec
}

// NewMetrics registers the archive metrics on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		pending: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "pdsmux_archive_pending_events",
			Help: "Events delivered from the log but not yet written to the libsql archive. Growing means the database is slow or unreachable.",
		}),
		written: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pdsmux_archive_events_total",
			Help: "Events written to the libsql archive.",
		}),
		failures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pdsmux_archive_write_errors_total",
			Help: "Failed archive writes (retried). Non-zero means the checkpoint trails Redis by more than usual.",
		}),
		droppedN: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pdsmux_archive_dropped_total",
			Help: "Event frames dropped from the archive because its buffer (64 MiB) overflowed while the database was slow or unreachable. The live stream and the checkpoint are not affected; subscribers replaying across the hole get OutdatedCursor.",
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
	reg.MustRegister(m.pending, m.written, m.failures, m.droppedN, m.writeTime, m.lagSec, m.restores)
	for _, t := range []string{"startup", "lost_state", "lost_writes"} {
		m.restores.WithLabelValues(t, "false")
		m.restores.WithLabelValues(t, "true")
	}
	return m
}

func (m *Metrics) setPending(n int) {
	if m != nil {
		m.pending.Set(float64(n))
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

func (m *Metrics) dropped(n int) {
	if m != nil {
		m.droppedN.Add(float64(n))
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
