package pdsmuxd

import (
	"runtime"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// newRegistry returns the daemon's private registry (never the global
// one) holding the Go runtime and process collectors, pdsmux_build_info
// and pdsmux_memory_budget_bytes (budget, bytes); Build registers each
// package's metrics on it.
func newRegistry(budget int64) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	buildInfo := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "pdsmux_build_info",
		Help: "Always 1; labels carry the pdsmux and Go versions.",
	}, []string{"version", "goversion"})
	reg.MustRegister(buildInfo)
	buildInfo.WithLabelValues(Version, runtime.Version()).Set(1)
	memoryBudget := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "pdsmux_memory_budget_bytes",
		Help: "--memory-budget: what pdsmux (process_resident_memory_bytes) and its Redis log together are sized to use.",
	})
	reg.MustRegister(memoryBudget)
	memoryBudget.Set(float64(budget))
	return reg
}
