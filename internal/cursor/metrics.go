package cursor

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pdsmux/pdsmux/internal/frame"
)

// Metrics of the merged log. A nil *Metrics records nothing.
type Metrics struct {
	events       *prometheus.CounterVec
	released     prometheus.Counter
	scriptTime   prometheus.Histogram
	scriptErrors prometheus.Counter
	readTime     prometheus.Histogram
	retention    prometheus.Gauge
	maxEntries   prometheus.Gauge
	maxBytes     prometheus.Gauge
	logBytes     prometheus.Gauge
	budgetTrims  prometheus.Counter
	budgetWait   prometheus.Counter
	waitTime     prometheus.Histogram
	waitTimeouts prometheus.Counter
	heldBack     prometheus.Gauge
	sharedTails  prometheus.Counter
}

// NewMetrics registers the log's metrics on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pdsmux_log_events_total",
			Help: "Events offered to the merged log, by kind and outcome (appended, duplicate, held, hold_conflict, repair_race). A steady held rate means replicas lose or reorder commits; repair covers them.",
		}, []string{"kind", "outcome"}),
		released: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pdsmux_log_released_total",
			Help: "Held commits appended once their missing predecessor arrived.",
		}),
		scriptTime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "pdsmux_redis_append_seconds",
			Help:    "Latency of one append script call (one batch) in Redis. Rising values mean Redis is slow or far away.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
		}),
		scriptErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pdsmux_redis_append_errors_total",
			Help: "Append script calls that failed (Redis unreachable, lost writes detected). Non-zero means replicas are re-read from their stored cursors.",
		}),
		readTime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "pdsmux_redis_read_seconds",
			Help:    "Latency of one log range read from Redis (replay for subscribers).",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
		}),
	}
	m.waitTime = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "pdsmux_redis_wait_seconds",
		Help:    "Latency of one replicated read (XRANGE, ack write, WAIT) with --redis-wait-replicas set: what waiting for the Redis replicas adds before delivery.",
		Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
	})
	m.waitTimeouts = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "pdsmux_redis_wait_timeouts_total",
		Help: "Replicated reads whose WAIT saw fewer than --redis-wait-replicas acknowledgements within --redis-wait-timeout; the entries were held back and the read retried. Steady growth means a Redis replica is down or cut off and delivery is paused.",
	})
	m.heldBack = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "pdsmux_redis_wait_held_back_seconds",
		Help: "How long reads have been held back because fewer than --redis-wait-replicas Redis replicas acknowledge (0 while they do); updated at each wait, whatever --redis-wait-timeout is.",
	})
	m.retention = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "pdsmux_log_retention_seconds",
		Help: "How long the merged log keeps events in Redis (--retention).",
	})
	m.maxEntries = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "pdsmux_log_max_entries",
		Help: "Cap on events kept in Redis (--max-entries).",
	})
	m.maxBytes = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "pdsmux_log_max_bytes",
		Help: "Byte budget of the merged log in Redis (--log-max-bytes).",
	})
	m.logBytes = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "pdsmux_log_bytes",
		Help: "Bytes the merged log's stream takes in Redis (MEMORY USAGE), as last measured, after any trim then. Measured every 30 s and as appends bring it to half of --log-max-bytes.",
	})
	m.budgetTrims = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "pdsmux_log_budget_trimmed_total",
		Help: "Entries trimmed from Redis to keep the log within --log-max-bytes (before --retention or --max-entries would have). Subscribers asking for them replay from the archive.",
	})
	m.budgetWait = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "pdsmux_log_budget_wait_seconds_total",
		Help: "Time appends waited because what this process appended and its live stream has not read yet took a sixteenth of --log-max-bytes. Growth means a replica sends faster than the log is read; that replica is read more slowly.",
	})
	m.sharedTails = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "pdsmux_log_shared_reads_total",
		Help: "Blocking reads of the log's head answered by another reader's read from the same position (the live stream and the archive share one XREAD while both keep up), counting those that ended with nothing new (an idle log adds one every 2 s). Flat while the archive lags or catches up.",
	})
	reg.MustRegister(m.events, m.released, m.scriptTime, m.scriptErrors, m.readTime, m.retention, m.maxEntries,
		m.maxBytes, m.logBytes, m.budgetTrims, m.budgetWait, m.waitTime, m.waitTimeouts, m.heldBack, m.sharedTails)
	for _, k := range []frame.Kind{frame.KindCommit, frame.KindSync, frame.KindIdentity, frame.KindAccount, frame.KindUnknown} {
		for _, o := range outcomeNames {
			m.events.WithLabelValues(k.String(), o)
		}
	}
	return m
}

func (m *Metrics) countOutcome(k frame.Kind, o Outcome) {
	if m == nil {
		return
	}
	m.events.WithLabelValues(k.String(), o.String()).Inc()
}

func (m *Metrics) addReleased(n int) {
	if m == nil || n == 0 {
		return
	}
	m.released.Add(float64(n))
}

func (m *Metrics) observeScript(d time.Duration, err error) {
	if m == nil {
		return
	}
	m.scriptTime.Observe(d.Seconds())
	if err != nil {
		m.scriptErrors.Inc()
	}
}

func (m *Metrics) observeRead(d time.Duration) {
	if m == nil {
		return
	}
	m.readTime.Observe(d.Seconds())
}

func (m *Metrics) setLogBytes(n int64) {
	if m != nil {
		m.logBytes.Set(float64(n))
	}
}

func (m *Metrics) budgetTrimmed(n int64) {
	if m != nil {
		m.budgetTrims.Add(float64(n))
	}
}

// budgetWaited adds d to the wait counter; a d <= 0 adds nothing (a
// counter's Add panics on a negative value, and the panic would end the
// tailer that waited).
func (m *Metrics) budgetWaited(d time.Duration) {
	if m != nil && d > 0 {
		m.budgetWait.Add(d.Seconds())
	}
}

// observeWait records one replicated read's wait d, whether it was
// acknowledged, and for how long reads have been held back (0 if so).
func (m *Metrics) observeWait(d time.Duration, ok bool, held time.Duration) {
	if m == nil {
		return
	}
	m.waitTime.Observe(d.Seconds())
	if !ok {
		m.waitTimeouts.Inc()
	}
	m.heldBack.Set(held.Seconds())
}

func (m *Metrics) sharedTail() {
	if m != nil {
		m.sharedTails.Inc()
	}
}
