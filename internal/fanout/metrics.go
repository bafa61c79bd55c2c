package fanout

import "github.com/prometheus/client_golang/prometheus"

// Metrics of the subscribeRepos server. A nil *Metrics records nothing.
type Metrics struct {
	subscribers prometheus.Gauge
	frames      *prometheus.CounterVec
	liveFrames  prometheus.Counter
	bytes       *prometheus.CounterVec
	liveBytes   prometheus.Counter
	tooSlowN    prometheus.Counter
	requests    *prometheus.CounterVec
	head        prometheus.Gauge
	tailErrors  prometheus.Counter
}

// NewMetrics registers the fanout metrics on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		subscribers: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "pdsmux_subscribers",
			Help: "Open subscribeRepos websockets (relays and other consumers).",
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
	}
	m.liveFrames = m.frames.WithLabelValues("live")
	m.liveBytes = m.bytes.WithLabelValues("live")
	for _, p := range []string{"replay", "archive"} {
		m.frames.WithLabelValues(p)
		m.bytes.WithLabelValues(p)
	}
	for _, o := range []string{"live", "replay", "outdated_cursor", "future_cursor", "bad_cursor", "too_many", "not_websocket", "upgrade_failed", "log_unavailable"} {
		m.requests.WithLabelValues(o)
	}
	reg.MustRegister(m.subscribers, m.frames, m.bytes, m.tooSlowN, m.requests, m.head, m.tailErrors)
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

func (m *Metrics) tooSlow() {
	if m != nil {
		m.tooSlowN.Inc()
	}
}

func (m *Metrics) request(outcome string) {
	if m != nil {
		m.requests.WithLabelValues(outcome).Inc()
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
