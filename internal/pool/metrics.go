package pool

import "github.com/prometheus/client_golang/prometheus"

// newHealthyGauge registers pdsmux_replica_healthy (1 healthy, 0 not, one
// series per replica name) on reg and returns it; nil when reg is nil.
func newHealthyGauge(reg prometheus.Registerer) *prometheus.GaugeVec {
	if reg == nil {
		return nil
	}
	gv := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "pdsmux_replica_healthy",
		Help: "1 when the replica answers its HTTP health check. Proxied sync requests and repair use healthy replicas only.",
	}, []string{"replica"})
	reg.MustRegister(gv)
	return gv
}
