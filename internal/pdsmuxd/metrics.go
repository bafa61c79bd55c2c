package pdsmuxd

import (
	"runtime"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// newRegistry returns the daemon's private registry (never the global
// one) holding the Go runtime and process collectors and
// pdsmux_build_info; Build registers each package's metrics on it.
func newRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	buildInfo := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "pdsmux_build_info",
		Help: "Always 1; labels carry the pdsmux and Go versions.",
	}, []string{"version", "goversion"})
	reg.MustRegister(buildInfo)
	buildInfo.WithLabelValues(Version, runtime.Version()).Set(1)
	return reg
}
