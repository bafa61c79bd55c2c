package fanout

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics of the subscribeRepos server. A nil *Metrics records nothing.
type Metrics struct {
	subscribers prometheus.Gauge
	frames      *prometheus.CounterVec
	liveFrames  prometheus.Counter
	bytes       *prometheus.CounterVec
	liveBytes   prometheus.Counter
	tooSlowN    prometheus.Counter
	stalledN    prometheus.Counter
	readFailedN prometheus.Counter
	requests    *prometheus.CounterVec
	head        prometheus.Gauge
	tailErrors  prometheus.Counter
	batchBytes  prometheus.Gauge
	gaps        *prometheus.CounterVec
	// queued reports the largest subscriber backlog in bytes (set by the
	// Server; the gauge reads it at scrape time)
	queued atomic.Pointer[func() int64]
}

// NewMetrics registers the fanout metrics on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		subscribers: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "pdsmux_subscribers",
			Help: "subscribeRepos sessions (relays and other consumers) holding a --max-subscribers slot: open websockets, but for those only waiting for the peer to answer their close.",
		}),
		frames: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pdsmux_subscriber_frames_total",
			Help: "Frames sent to subscribers, by phase (archive: replay from libsql; replay: from Redis; live).",
		}, []string{"phase"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pdsmux_subscriber_bytes_total",
			Help: "Bytes sent to subscribers (websocket frames), by phase (archive, replay, live).",
		}, []string{"phase"}),
		tooSlowN: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pdsmux_subscriber_too_slow_total",
			Help: "Subscribers closed with ConsumerTooSlow because their queue overflowed. They reconnect with their cursor; a steady rate means a consumer or its link is too slow.",
		}),
		stalledN: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pdsmux_subscriber_write_timeouts_total",
			Help: "Subscribers closed because they showed no sign of life (a write to them timed out, or no pong or message came) for two ping intervals plus the time a reader at 64 KiB/s needs for what they had not shown they read (no close frame). They reconnect with their cursor. A queue overflow is ConsumerTooSlow instead.",
		}),
		readFailedN: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pdsmux_subscriber_read_errors_total",
			Help: "Subscriber sessions ended because a read of the log (Redis) or the archive they needed failed mid-session (logged with the error). They get an InternalError frame and reconnect with their cursor; nothing they were sent is lost.",
		}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pdsmux_subscribe_requests_total",
			Help: "subscribeRepos requests by outcome (live, replay, outdated_cursor, future_cursor, bad_cursor, too_many, not_websocket, upgrade_failed, log_unavailable).",
		}, []string{"outcome"}),
		head: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "pdsmux_fanout_head_seq",
			Help: "Seq of the newest event delivered to live subscribers.",
		}),
		tailErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pdsmux_fanout_tail_errors_total",
			Help: "Failed reads of new log entries from Redis by the broadcaster. Live subscribers stall while this rises.",
		}),
		batchBytes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "pdsmux_fanout_batch_bytes",
			Help: "Bytes of the broadcaster's last read of new entries from Redis. Each read asks for as many entries as fit the batch cap (a quarter of --subscriber-queue-bytes) at the size of the largest entry of the read before.",
		}),
		gaps: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pdsmux_subscriber_gaps_total",
			Help: "Times subscribers were sent a stream that skips events, by cause: recall_failed (Redis lost entries live subscribers had not had and the archive could not give them back), replay_crossed_trim (a replay crossed seqs trimmed before they were archived, recorded after it began or not recorded yet; the subscriber got OutdatedCursor, once per hole).",
		}, []string{"cause"}),
	}
	subQueued := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "pdsmux_subscriber_queued_bytes",
		Help: "Bytes queued for the live subscriber furthest behind (websocket frames not yet handed to its socket). The frames are shared, so this is also about what all subscriber queues hold together. A subscriber past --subscriber-queue-bytes gets ConsumerTooSlow.",
	}, func() float64 {
		if f := m.queued.Load(); f != nil {
			return float64((*f)())
		}
		return 0
	})
	m.liveFrames = m.frames.WithLabelValues("live")
	m.liveBytes = m.bytes.WithLabelValues("live")
	for _, p := range []string{"replay", "archive"} {
		m.frames.WithLabelValues(p)
		m.bytes.WithLabelValues(p)
	}
	for _, o := range []string{"live", "replay", "outdated_cursor", "future_cursor", "bad_cursor", "too_many", "not_websocket", "upgrade_failed", "log_unavailable"} {
		m.requests.WithLabelValues(o)
	}
	for _, c := range []string{"recall_failed", "replay_crossed_trim"} {
		m.gaps.WithLabelValues(c)
	}
	reg.MustRegister(m.subscribers, m.frames, m.bytes, m.tooSlowN, m.stalledN, m.readFailedN, m.requests, m.head, m.tailErrors, m.batchBytes, m.gaps, subQueued)
	return m
}

func (m *Metrics) subscribed(d int) {
	if m != nil {
		m.subscribers.Add(float64(d))
	}
}

func (m *Metrics) sent(phase string, n int) {
	if m != nil {
		m.frames.WithLabelValues(phase).Inc()
		m.bytes.WithLabelValues(phase).Add(float64(n))
	}
}

func (m *Metrics) sentLive(frames int, bytes int64) {
	if m != nil {
		m.liveFrames.Add(float64(frames))
		m.liveBytes.Add(float64(bytes))
	}
}

func (m *Metrics) readFailed() {
	if m != nil {
		m.readFailedN.Inc()
	}
}

func (m *Metrics) tooSlow() {
	if m != nil {
		m.tooSlowN.Inc()
	}
}

func (m *Metrics) stalled() {
	if m != nil {
		m.stalledN.Inc()
	}
}

func (m *Metrics) request(outcome string) {
	if m != nil {
		m.requests.WithLabelValues(outcome).Inc()
	}
}

func (m *Metrics) gap(cause string) {
	if m != nil {
		m.gaps.WithLabelValues(cause).Inc()
	}
}

func (m *Metrics) setHead(seq int64) {
	if m != nil {
		m.head.Set(float64(seq))
	}
}

func (m *Metrics) tailError() {
	if m != nil {
		m.tailErrors.Inc()
	}
}

func (m *Metrics) setBatchBytes(n int64) {
	if m != nil {
		m.batchBytes.Set(float64(n))
	}
}

// watchQueues makes f the source of pdsmux_subscriber_queued_bytes.
func (m *Metrics) watchQueues(f func() int64) {
	if m != nil {
		m.queued.Store(&f)
	}
}
