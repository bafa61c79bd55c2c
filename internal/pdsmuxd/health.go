package pdsmuxd

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"time"

	"github.com/pdsmux/pdsmux/internal/redact"
)

// Health is the /xrpc/_health body.
type Health struct {
	Status   string            `json:"status"` // ok or unavailable
	Reason   string            `json:"reason,omitempty"`
	Version  string            `json:"version"`
	Redis    string            `json:"redis"`
	Replicas map[string]string `json:"replicas"` // name -> connected or disconnected
	// Replication, with --redis-wait-replicas: "ok", or how long delivery
	// has been held back because too few Redis replicas acknowledge. It
	// does not make the status unavailable: the other pdsmux of an HA pair
	// shares the Redis and is held back alike, so routing away would not
	// help; the alert PdsmuxReplicationWaitStalled pages for it.
	Replication string `json:"replication,omitempty"`
}

// heldBackAfter is how long the replication wait may hold delivery back
// before /xrpc/_health says so (a full resync of a returning replica
// alone takes repl-diskless-sync-delay, 5 s).
const heldBackAfter = 10 * time.Second

// CheckHealth reports whether pdsmux can do its job: Redis answers and at
// least one replica is being tailed.
func (rt *Runtime) CheckHealth(ctx context.Context) (Health, bool) {
	h := Health{Status: "ok", Version: Version, Redis: "ok", Replicas: map[string]string{}}
	if rt.waited != nil {
		h.Replication = "ok"
		if d := rt.waited.HeldBack(); d >= heldBackAfter {
			h.Replication = fmt.Sprintf("held back for %s: fewer than --redis-wait-replicas=%d Redis replicas acknowledge; subscribers get nothing new until enough do",
				d.Round(time.Second), rt.s.RedisWaitReplicas)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if err := rt.events.Ping(ctx); err != nil {
		h.Redis = err.Error()
		h.Status, h.Reason = "unavailable", "redis does not answer"
		if isRedisAuth(err) {
			h.Reason = "redis refused the credentials of --redis-url"
		}
	}
	tailed := 0
	for _, t := range rt.tailers {
		state := "disconnected"
		if t.Connected() {
			state = "connected"
			tailed++
		}
		h.Replicas[t.Name()] = state
	}
	if tailed == 0 && h.Status == "ok" {
		h.Status, h.Reason = "unavailable", "no replica firehose is connected"
	}
	return h, h.Status == "ok"
}

// AlivePath answers 200 whenever the process serves HTTP, whatever the
// state of Redis or the replicas: Caddy's active check on it takes a
// frozen or unreachable pdsmux (a device off the tailnet: no refusal,
// only timeouts) out of rotation, which /xrpc/_health cannot do without
// also refusing every sync call while Redis is down (docs/ha.md).
const AlivePath = "/_pdsmux/alive"

func handleAlive(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = io.WriteString(w, "ok\n")
}

func (rt *Runtime) handleHealth(w http.ResponseWriter, r *http.Request) {
	h, ok := rt.CheckHealth(r.Context())
	w.Header().Set("Content-Type", "application/json")
	if !ok {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	_ = json.NewEncoder(w).Encode(h)
}

// ReplicaStates lists the replicas in name order with their state, for
// people: "r1 disconnected, r2 connected" ("none" without replicas).
func (h Health) ReplicaStates() string {
	names := make([]string, 0, len(h.Replicas))
	for n := range h.Replicas {
		names = append(names, n)
	}
	if len(names) == 0 {
		return "none"
	}
	sort.Strings(names)
	for i, n := range names {
		names[i] = n + " " + h.Replicas[n]
	}
	return strings.Join(names, ", ")
}

// FetchHealth asks a running pdsmux for its health. An answer that is not
// pdsmux's (a replica's own /xrpc/_health, a proxy's error page) is an
// error saying what answered; an unhealthy pdsmux's Health always has a
// Reason.
//
// A baseURL that is not http(s)://host[:port] is a ConfigError for url, a
// timeout that is not positive one for timeout: nothing is asked.
func FetchHealth(ctx context.Context, baseURL string, timeout time.Duration) (Health, error) {
	if err := checkBaseURL("url", baseURL, "pdsmux's base URL, e.g. http://127.0.0.1:2480"); err != nil {
		return Health{}, err
	}
	if timeout <= 0 {
		return Health{}, BadSetting("timeout", timeout.String(), "must be above 0")
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	shown := redact.URL(baseURL)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(baseURL, "/")+"/xrpc/_health", nil)
	if err != nil {
		return Health{}, BadSetting("url", baseURL, "want %s", "pdsmux's base URL, e.g. http://127.0.0.1:2480")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return Health{}, fmt.Errorf("health check of %s: %w", shown, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return Health{}, fmt.Errorf("health check of %s: HTTP %d, reading the body: %w", shown, resp.StatusCode, err)
	}
	var h Health
	if err := json.Unmarshal(body, &h); err != nil || h.Status == "" || h.Redis == "" {
		return Health{}, fmt.Errorf("health check of %s: HTTP %d %s is not pdsmux's health answer (a replica or a proxy answered? --url must be pdsmux's --listen address)",
			shown, resp.StatusCode, quoteBody(body))
	}
	if h.Status != "ok" && h.Reason == "" {
		h.Reason = fmt.Sprintf("status %q, HTTP %d", h.Status, resp.StatusCode)
	}
	return h, nil
}

// checkBaseURL is the ConfigError for setting when raw is not an
// http(s)://host[:port] URL (a path is allowed; a query or fragment is
// not); want says what is expected.
func checkBaseURL(setting, raw, want string) error {
	u, err := url.Parse(raw)
	if err != nil || redact.Misparsed(u) || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return BadSetting(setting, raw, "want %s", want)
	}
	return nil
}

// quoteBody shows the start of an answer's body.
func quoteBody(b []byte) string {
	const n = 120
	s := strings.TrimSpace(string(b))
	if len(s) > n {
		s = s[:n] + "..."
	}
	if s == "" {
		return "with an empty body"
	}
	return fmt.Sprintf("%q", s)
}
