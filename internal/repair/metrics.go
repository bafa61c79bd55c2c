package repair

import "github.com/prometheus/client_golang/prometheus"

// Metrics of the repair loop. A nil *Metrics records nothing.
type Metrics struct {
	repairs   *prometheus.CounterVec
	errors    *prometheus.CounterVec
	heldRepos prometheus.Gauge
	behind    prometheus.Gauge
	scans     prometheus.Counter
	forks     prometheus.Counter
	abandons  prometheus.Counter
}

// NewMetrics registers the repair metrics on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		repairs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pdsmux_repairs_total",
			Help: "Repairs of writes the replicas made but did not stream, by reason (hold_timeout, scan, status, refused: an event refused at the door, sync_rollback) and outcome (commit, sync, rollback, account; none: the log was not behind; inactive: account not active, nothing synthesized; gone: no replica hosts the repo). With stock Cocoon replicas on one database commit repairs rise with every lost event; that is pdsmux doing its job. sync repairs of repos under the commit limits should stay at zero.",
		}, []string{"reason", "kind"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pdsmux_repair_errors_total",
			Help: "Repair attempts that failed, by stage (head, fetch, append, scan, identity, signature: retried; future_rev: the replica's head is dated ahead of the clock, retried when relays would take it; unrepairable: the replica's own signed head fails verification, left to the operator). A steady rate means replicas are unreachable or returning bad data.",
		}, []string{"stage"}),
		heldRepos: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "pdsmux_held_repos",
			Help: "Repos with at least one #commit held for its missing predecessor.",
		}),
		behind: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "pdsmux_repos_behind",
			Help: "Repos the last listRepos scan found ahead of the merged log (waiting out the grace period or being repaired).",
		}),
		scans: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pdsmux_repair_scans_total",
			Help: "Completed listRepos scans of the replicas.",
		}),
		forks: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pdsmux_repo_forks_total",
			Help: "Repos found forked: two commits built on the same predecessor, i.e. two replicas wrote to one account at once (Cocoon's repo lock is per process). Each is repaired to the replica's head; a non-zero rate means the proxy does not keep each account on one replica.",
		}),
		abandons: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pdsmux_repair_holds_abandoned_total",
			Help: "Held #commits dropped after AbandonAfter (5) repairs in a row found nothing to append: their predecessor was neither in the log nor at any replica's head (a replica streamed a write its repo does not have). Each is logged once as a warning. Should stay at 0; a rise means a replica serves a different or restored database.",
		}),
	}
	reg.MustRegister(m.repairs, m.errors, m.heldRepos, m.behind, m.scans, m.forks, m.abandons)
	for _, reason := range []string{"hold_timeout", "scan", "refused", "sync_rollback"} {
		for _, kind := range []string{"commit", "sync", "rollback", "none", "inactive", "gone"} {
			m.repairs.WithLabelValues(reason, kind)
		}
	}
	m.repairs.WithLabelValues("status", "account")
	for _, stage := range []string{"head", "fetch", "append", "scan", "identity", "signature", "future_rev", "unrepairable"} {
		m.errors.WithLabelValues(stage)
	}
	return m
}

func (m *Metrics) repaired(reason, kind string) {
	if m != nil {
		m.repairs.WithLabelValues(reason, kind).Inc()
	}
}

func (m *Metrics) failed(stage string) {
	if m != nil {
		m.errors.WithLabelValues(stage).Inc()
	}
}

func (m *Metrics) setHeld(n int64) {
	if m != nil {
		m.heldRepos.Set(float64(n))
	}
}

func (m *Metrics) setBehind(n int) {
	if m != nil {
		m.behind.Set(float64(n))
	}
}

func (m *Metrics) forked() {
	if m != nil {
		m.forks.Inc()
	}
}

func (m *Metrics) abandoned(n int) {
	if m != nil {
		m.abandons.Add(float64(n))
	}
}

func (m *Metrics) scanned() {
	if m != nil {
		m.scans.Inc()
	}
}
