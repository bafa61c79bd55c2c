package pool

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Defaults for Config.
const (
	DefaultInterval = 5 * time.Second
	DefaultTimeout  = 3 * time.Second
	// HealthPath is what replicas answer health checks on.
	HealthPath = "/xrpc/_health"
)

// Replica is one replica's HTTP endpoint.
type Replica struct {
	Name    string
	URL     *url.URL // http(s) base, no path
	healthy atomic.Bool
	gauge   prometheus.Gauge
}

// Healthy reports the last health verdict.
func (r *Replica) Healthy() bool { return r.healthy.Load() }

func (r *Replica) set(ok bool) bool {
	was := r.healthy.Swap(ok)
	if r.gauge != nil {
		v := 0.0
		if ok {
			v = 1
		}
		r.gauge.Set(v)
	}
	return was != ok
}

// Config of the pool.
type Config struct {
	Interval time.Duration
	Timeout  time.Duration
}

// Pool is the set of replicas.
type Pool struct {
	cfg      Config
	replicas []*Replica
	client   *http.Client
	log      *slog.Logger
	next     atomic.Uint32
}

// Endpoint names a replica's base URL.
type Endpoint struct {
	Name string
	URL  *url.URL
}

// New returns a pool. Replicas start healthy until the first check says
// otherwise. reg may be nil.
func New(cfg Config, eps []Endpoint, client *http.Client, reg prometheus.Registerer, logger *slog.Logger) *Pool {
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	gv := newHealthyGauge(reg)
	p := &Pool{cfg: cfg, client: client, log: logger.With("component", "pool")}
	for _, ep := range eps {
		r := &Replica{Name: ep.Name, URL: ep.URL}
		if gv != nil {
			r.gauge = gv.WithLabelValues(ep.Name)
		}
		r.set(true)
		p.replicas = append(p.replicas, r)
	}
	return p
}

// All returns every replica in configuration order.
func (p *Pool) All() []*Replica { return p.replicas }

// Ordered returns the healthy replicas in rotating order (spreading load),
// followed by the unhealthy ones as a last resort.
func (p *Pool) Ordered() []*Replica {
	n := len(p.replicas)
	start := int(p.next.Add(1)) % max(n, 1)
	out := make([]*Replica, 0, n)
	var sick []*Replica
	for i := range n {
		r := p.replicas[(start+i)%n]
		if r.Healthy() {
			out = append(out, r)
		} else {
			sick = append(sick, r)
		}
	}
	return append(out, sick...)
}

// AnyHealthy reports whether at least one replica is healthy.
func (p *Pool) AnyHealthy() bool {
	for _, r := range p.replicas {
		if r.Healthy() {
			return true
		}
	}
	return false
}

// ReportFailure marks a replica unhealthy after a failed request; the next
// health check may restore it.
func (p *Pool) ReportFailure(r *Replica, err error) {
	if r.set(false) {
		p.log.Warn("replica marked unhealthy after a failed request", "replica", r.Name, "err", err)
	}
}

// Run checks every replica each interval until ctx ends.
func (p *Pool) Run(ctx context.Context) error {
	t := time.NewTicker(p.cfg.Interval)
	defer t.Stop()
	for {
		var wg sync.WaitGroup
		for _, r := range p.replicas {
			wg.Add(1)
			go func() {
				defer wg.Done()
				err := p.check(ctx, r)
				if ctx.Err() != nil {
					return
				}
				if r.set(err == nil) {
					if err == nil {
						p.log.Info("replica healthy again", "replica", r.Name)
					} else {
						p.log.Warn("replica failed its health check", "replica", r.Name, "err", err)
					}
				}
			}()
		}
		wg.Wait()
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

func (p *Pool) check(ctx context.Context, r *Replica) error {
	ctx, cancel := context.WithTimeout(ctx, p.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.URL.String()+HealthPath, nil)
	if err != nil {
		return err
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("health check answered HTTP %d", resp.StatusCode)
	}
	return nil
}
