package tail

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pdsmux/pdsmux/internal/verify"
)

// Metrics of all tailers, labelled by replica name (from config).
type Metrics struct {
	connected     *prometheus.GaugeVec
	reconnects    *prometheus.CounterVec
	frames        *prometheus.CounterVec
	bad           *prometheus.CounterVec
	errorFrames   *prometheus.CounterVec
	infoFrames    *prometheus.CounterVec
	lastSeq       *prometheus.GaugeVec
	lastEventTime *prometheus.GaugeVec
	lagSeconds    *prometheus.GaugeVec
	lagEvents     *prometheus.GaugeVec
	bytes         *prometheus.CounterVec
	queuedBytes   *prometheus.GaugeVec
	doorTime      *prometheus.HistogramVec
}

// NewMetrics registers the tail metrics on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		connected: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "pdsmux_replica_connected",
			Help: "1 while pdsmux has an open firehose connection to the replica. 0 for long means the replica's writes are not being merged.",
		}, []string{"replica"}),
		reconnects: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pdsmux_replica_reconnects_total",
			Help: "Firehose sessions to the replica that ended and were retried, by reason (dial, read, stalled, sink, error_frame, future_cursor, resync, closed).",
		}, []string{"replica", "reason"}),
		frames: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pdsmux_replica_events_total",
			Help: "Frames read from the replica's firehose, by event kind.",
		}, []string{"replica", "kind"}),
		bad: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pdsmux_replica_bad_frames_total",
			Help: "Frames from the replica that were not forwarded as they came, by reason: skipped (malformed, shape, trailing, too_large, unsequenced, text_message, bad_identity), an #identity rebuilt as a relay would pass it on (identity_rebuilt), or refused at the door because a strict relay would refuse them, their repo then repaired from the replica's signed head (too_big, rebase, bad_blocks, bad_commit, did_mismatch, rev_mismatch, future_rev, no_prev_data, bad_inversion, bad_signature, bad_time). See docs/troubleshooting.md.",
		}, []string{"replica", "reason"}),
		errorFrames: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pdsmux_replica_error_frames_total",
			Help: "Error frames the replica sent (FutureCursor, ConsumerTooSlow, other). FutureCursor means the replica's event table was reset.",
		}, []string{"replica", "error"}),
		infoFrames: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pdsmux_replica_info_frames_total",
			Help: "#info frames the replica sent (OutdatedCursor, other). OutdatedCursor means pdsmux was away longer than the replica keeps events; repair covers the gap.",
		}, []string{"replica", "name"}),
		lastSeq: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "pdsmux_replica_last_seq",
			Help: "Upstream seq of the last frame read from the replica.",
		}, []string{"replica"}),
		lastEventTime: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "pdsmux_replica_last_event_timestamp_seconds",
			Help: "The `time` field of the last event appended from the replica, as unix seconds.",
		}, []string{"replica"}),
		lagSeconds: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "pdsmux_replica_lag_seconds",
			Help: "How far behind the replica the merged log is: at each append, the age of the last event appended (append time minus its `time`), whether frames wait for Redis or trickle in over a slow link; 0 once the replica has sent nothing for 2 s and everything read is appended. Growing values mean pdsmux, Redis or the link to the replica cannot keep up.",
		}, []string{"replica"}),
		lagEvents: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "pdsmux_replica_lag_events",
			Help: "Frames read from the replica but not yet appended to the merged log.",
		}, []string{"replica"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pdsmux_replica_bytes_total",
			Help: "Bytes of frames read from the replica.",
		}, []string{"replica"}),
		queuedBytes: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "pdsmux_replica_queued_bytes",
			Help: "Bytes of frames read from the replica and not yet appended to the merged log (the batch being appended included). At its cap (--replica-queue-bytes) pdsmux stops reading the replica until the log catches up.",
		}, []string{"replica"}),
		doorTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "pdsmux_replica_door_seconds",
			Help:    "Time to check one batch of the replica's frames at the door (commit structure, signature, MST inversion; on every core), before the batch is appended. A batch waits for this and for the append (pdsmux_redis_append_seconds) before subscribers can see it.",
			Buckets: prometheus.ExponentialBuckets(50e-6, 2, 14), // 50 µs .. 0.4 s
		}, []string{"replica"}),
	}
	reg.MustRegister(m.connected, m.reconnects, m.frames, m.bad, m.errorFrames, m.infoFrames,
		m.lastSeq, m.lastEventTime, m.lagSeconds, m.lagEvents, m.bytes, m.queuedBytes, m.doorTime)
	return m
}

// replicaMetrics are one replica's children, resolved once.
type replicaMetrics struct {
	m             *Metrics
	name          string
	connected     prometheus.Gauge
	lastSeq       prometheus.Gauge
	lastEventTime prometheus.Gauge
	lagSeconds    prometheus.Gauge
	lagEvents     prometheus.Gauge
	bytes         prometheus.Counter
	queuedBytes   prometheus.Gauge
	doorTime      prometheus.Observer
}

// Label values each per-replica series is created with, so dashboards and
// alerts see zeros rather than nothing.
var (
	reconnectReasons = []string{"dial", "read", "stalled", "sink", "error_frame", "future_cursor", "resync", "closed"}
	badReasons       = append([]string{"malformed", "shape", "trailing", "too_large", "unsequenced", "text_message", verify.ReasonBadIdentity, reasonIdentityRebuilt}, verify.Reasons...)
	frameKinds       = []string{"commit", "sync", "identity", "account", "info", "error", "unknown"}
)

func (m *Metrics) forReplica(name string) *replicaMetrics {
	if m == nil {
		return nil
	}
	for _, r := range reconnectReasons {
		m.reconnects.WithLabelValues(name, r)
	}
	for _, r := range badReasons {
		m.bad.WithLabelValues(name, r)
	}
	for _, k := range frameKinds {
		m.frames.WithLabelValues(name, k)
	}
	for _, e := range []string{"FutureCursor", "ConsumerTooSlow", "other"} {
		m.errorFrames.WithLabelValues(name, e)
	}
	for _, n := range []string{"OutdatedCursor", "other"} {
		m.infoFrames.WithLabelValues(name, n)
	}
	return &replicaMetrics{
		m: m, name: name,
		connected:     m.connected.WithLabelValues(name),
		lastSeq:       m.lastSeq.WithLabelValues(name),
		lastEventTime: m.lastEventTime.WithLabelValues(name),
		lagSeconds:    m.lagSeconds.WithLabelValues(name),
		lagEvents:     m.lagEvents.WithLabelValues(name),
		bytes:         m.bytes.WithLabelValues(name),
		queuedBytes:   m.queuedBytes.WithLabelValues(name),
		doorTime:      m.doorTime.WithLabelValues(name),
	}
}

func (r *replicaMetrics) setConnected(up bool) {
	if r == nil {
		return
	}
	v := 0.0
	if up {
		v = 1
	}
	r.connected.Set(v)
}

func (r *replicaMetrics) setQueuedBytes(n int64) {
	if r != nil {
		r.queuedBytes.Set(float64(n))
	}
}

func (r *replicaMetrics) door(d time.Duration) {
	if r != nil {
		r.doorTime.Observe(d.Seconds())
	}
}

func (r *replicaMetrics) reconnect(reason string) {
	if r != nil {
		r.m.reconnects.WithLabelValues(r.name, reason).Inc()
	}
}

func (r *replicaMetrics) frame(kind string, size int) {
	if r != nil {
		r.m.frames.WithLabelValues(r.name, kind).Inc()
		r.bytes.Add(float64(size))
	}
}

func (r *replicaMetrics) badFrame(reason string) {
	if r != nil {
		r.m.bad.WithLabelValues(r.name, reason).Inc()
	}
}

var knownErrors = map[string]bool{"FutureCursor": true, "ConsumerTooSlow": true}

func (r *replicaMetrics) errorFrame(name string) {
	if r == nil {
		return
	}
	if !knownErrors[name] {
		name = "other"
	}
	r.m.errorFrames.WithLabelValues(r.name, name).Inc()
}

func (r *replicaMetrics) infoFrame(name string) {
	if r == nil {
		return
	}
	if name != "OutdatedCursor" {
		name = "other"
	}
	r.m.infoFrames.WithLabelValues(r.name, name).Inc()
}
