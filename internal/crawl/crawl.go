package crawl

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strings"
	"time"

	comatproto "github.com/bluesky-social/indigo/api/atproto"
	"github.com/prometheus/client_golang/prometheus"
)

// Defaults for Config.
const (
	DefaultInterval   = 20 * time.Minute
	DefaultIdle       = 5 * time.Minute
	DefaultBackoffMin = 10 * time.Second
	tick              = time.Second
)

// Config of the crawl requester.
type Config struct {
	Relays   []*url.URL // base URLs, e.g. https://bsky.network
	Hostname string     // the PDS's public hostname, e.g. pds.example.com
	// Interval is the least time between two requests to one relay while
	// things look fine.
	Interval time.Duration
	// Idle: with no subscriber connected for this long, ask again (still
	// no more often than every Idle).
	Idle       time.Duration
	BackoffMin time.Duration
	UserAgent  string
}

// Requester sends the requests.
type Requester struct {
	cfg         Config
	hc          *http.Client
	subscribers func() int
	log         *slog.Logger
	m           *metrics
	now         func() time.Time
	tick        time.Duration
	relays      []*relayState
}

type relayState struct {
	url     *url.URL
	next    time.Time // earliest next request
	backoff time.Duration
	lastOK  time.Time
}

// New returns a Requester. subscribers reports how many subscribeRepos
// sockets are open. reg may be nil.
func New(cfg Config, hc *http.Client, subscribers func() int, reg prometheus.Registerer, logger *slog.Logger) *Requester {
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.Idle <= 0 {
		cfg.Idle = DefaultIdle
	}
	if cfg.BackoffMin <= 0 {
		cfg.BackoffMin = DefaultBackoffMin
	}
	// Never follow a redirect to another host: requests go to configured
	// relays only (I9).
	own := *hc
	own.CheckRedirect = func(req *http.Request, via []*http.Request) error {
		if len(via) > 0 && req.URL.Host != via[0].URL.Host {
			return http.ErrUseLastResponse
		}
		if len(via) >= 5 {
			return http.ErrUseLastResponse
		}
		return nil
	}
	r := &Requester{cfg: cfg, hc: &own, subscribers: subscribers, log: logger.With("component", "crawl"), now: time.Now, tick: tick}
	r.m = newMetrics(reg, cfg.Relays)
	for _, u := range cfg.Relays {
		r.relays = append(r.relays, &relayState{url: u})
	}
	return r
}

// Run sends requests until ctx ends: one per relay right away, then as
// described in the package doc.
func (r *Requester) Run(ctx context.Context) error {
	if len(r.relays) == 0 {
		return nil
	}
	t := time.NewTicker(r.tick)
	defer t.Stop()
	lastSubscribed := r.now()
	for {
		now := r.now()
		if r.subscribers() > 0 {
			lastSubscribed = now
		}
		idle := now.Sub(lastSubscribed) >= r.cfg.Idle
		for _, rs := range r.relays {
			if now.Before(rs.next) {
				continue
			}
			due := rs.lastOK.IsZero() || now.Sub(rs.lastOK) >= r.cfg.Interval || (idle && now.Sub(rs.lastOK) >= r.cfg.Idle)
			if !due {
				continue
			}
			if err := r.request(ctx, rs.url); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				rs.backoff = min(max(rs.backoff*2, r.cfg.BackoffMin), r.cfg.Interval)
				jitter := rand.N(rs.backoff/4 + 1)
				rs.next = now.Add(rs.backoff + jitter)
				r.log.Warn("requestCrawl failed; backing off", "relay", rs.url.String(), "err", err, "retry_in", rs.backoff+jitter)
				continue
			}
			rs.backoff = 0
			rs.lastOK = now
			rs.next = now.Add(min(r.cfg.Idle, r.cfg.Interval))
			r.log.Info("asked relay to crawl", "relay", rs.url.String(), "hostname", r.cfg.Hostname, "idle", idle)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

func (r *Requester) request(ctx context.Context, base *url.URL) error {
	body, err := json.Marshal(comatproto.SyncRequestCrawl_Input{Hostname: r.cfg.Hostname})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	u := strings.TrimRight(base.String(), "/") + "/xrpc/com.atproto.sync.requestCrawl"
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	if r.cfg.UserAgent != "" {
		req.Header.Set("User-Agent", r.cfg.UserAgent)
	}
	resp, err := r.hc.Do(req)
	if err != nil {
		r.m.request(base, "error")
		return err
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	if resp.StatusCode/100 != 2 {
		r.m.request(base, fmt.Sprintf("http_%dxx", resp.StatusCode/100))
		return fmt.Errorf("HTTP %d: %s", resp.StatusCode, bytes.TrimSpace(msg))
	}
	r.m.request(base, "ok")
	return nil
}
