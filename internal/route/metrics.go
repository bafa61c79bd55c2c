package route

import "github.com/prometheus/client_golang/prometheus"

// Outcome is what one routing decision found in the request.
type Outcome string

// The outcomes, a label of pdsmux_route_decisions_total.
const (
	Routed      Outcome = "routed"       // a DID from the token: the header is set
	NoToken     Outcome = "no_token"     // no Authorization header
	OtherScheme Outcome = "other_scheme" // Authorization is not Bearer or DPoP (e.g. Basic)
	Malformed   Outcome = "malformed"    // Bearer/DPoP, but no JWT naming a DID
)

var outcomes = []Outcome{Routed, NoToken, OtherScheme, Malformed}

// Metrics of the router. A nil *Metrics records nothing.
type Metrics struct {
	decisions *prometheus.CounterVec
}

// NewMetrics registers the router's metrics on reg; every outcome exists
// from the start at 0.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "pdsmux_route_decisions_total",
		Help: "Caddy forward_auth routing sub-requests by outcome (routed, no_token, other_scheme, malformed). Only routed requests are pinned to one replica per account; a rising malformed rate means clients send tokens pdsmux cannot read.",
	}, []string{"outcome"})}
	reg.MustRegister(m.decisions)
	for _, o := range outcomes {
		m.decisions.WithLabelValues(string(o))
	}
	return m
}

func (m *Metrics) observe(o Outcome) {
	if m == nil {
		return
	}
	m.decisions.WithLabelValues(string(o)).Inc()
}
