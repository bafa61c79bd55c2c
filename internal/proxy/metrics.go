package proxy

import "github.com/prometheus/client_golang/prometheus"

// codes are the values of the code label: a response's status class, or
// error when no response came.
var codes = []string{"2xx", "3xx", "4xx", "5xx", "error"}

// metrics of a Proxy.
type metrics struct {
	requests *prometheus.CounterVec // by replica name ("none": no replica answered) and code
	retries  prometheus.Counter
}

// newMetrics makes the proxy metrics, every replica's codes and
// replica="none" at zero, and registers them on reg (nil: they are kept
// but not exported).
func newMetrics(reg prometheus.Registerer, replicas []string) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pdsmux_proxy_requests_total",
			Help: "Proxied sync requests by replica and response status class (2xx, 3xx, 4xx, 5xx, error). replica=\"none\" means no replica could answer.",
		}, []string{"replica", "code"}),
		retries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pdsmux_proxy_retries_total",
			Help: "Proxied requests retried on another replica after a failure or a not-found answer.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.requests, m.retries)
	}
	for _, name := range replicas {
		for _, c := range codes {
			m.requests.WithLabelValues(name, c)
		}
	}
	m.requests.WithLabelValues("none", "error")
	return m
}
