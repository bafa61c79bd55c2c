package verify

import "github.com/prometheus/client_golang/prometheus"

// Metrics of the door. A nil *Metrics records nothing. Refusals are
// counted by the caller per replica (pdsmux_replica_bad_frames_total).
type Metrics struct {
	unverified prometheus.Counter
}

// NewMetrics registers the door's metrics on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		unverified: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pdsmux_signature_unverified_total",
			Help: "Upstream #commit/#sync events passed without a signature check because the DID could not be resolved (PLC unreachable or slow). Relays do the same; a steady rate means pdsmux cannot reach --plc-url.",
		}),
	}
	reg.MustRegister(m.unverified)
	return m
}

func (m *Metrics) countUnverified() {
	if m != nil {
		m.unverified.Inc()
	}
}
