package crawl

import (
	"net/url"

	"github.com/prometheus/client_golang/prometheus"
)

// outcomes of one requestCrawl call, the values of the outcome label.
var outcomes = []string{"ok", "http_4xx", "http_5xx", "error"}

// metrics of a Requester.
type metrics struct {
	requests *prometheus.CounterVec
}

// newMetrics makes the crawl metrics, every relay's outcomes at zero, and
// registers them on reg (nil: they are kept but not exported).
func newMetrics(reg prometheus.Registerer, relays []*url.URL) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pdsmux_crawl_requests_total",
			Help: "requestCrawl calls to each configured relay, by outcome (ok, http_4xx, http_5xx, error). Failures back off and retry.",
		}, []string{"relay", "outcome"}),
	}
	if reg != nil {
		reg.MustRegister(m.requests)
	}
	for _, u := range relays {
		for _, o := range outcomes {
			m.requests.WithLabelValues(u.String(), o)
		}
	}
	return m
}

// request counts one call to relay; outcome is one of outcomes.
func (m *metrics) request(relay *url.URL, outcome string) {
	m.requests.WithLabelValues(relay.String(), outcome).Inc()
}
