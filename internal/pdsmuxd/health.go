package pdsmuxd

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// Health is the /xrpc/_health body.
type Health struct {
	Status   string            `json:"status"` // ok or unavailable
	Reason   string            `json:"reason,omitempty"`
	Version  string            `json:"version"`
	Redis    string            `json:"redis"`
	Replicas map[string]string `json:"replicas"` // name -> connected or disconnected
}

// CheckHealth reports whether pdsmux can do its job: Redis answers and at
// least one replica is being tailed.
func (rt *Runtime) CheckHealth(ctx context.Context) (Health, bool) {
	h := Health{Status: "ok", Version: Version, Redis: "ok", Replicas: map[string]string{}}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if err := rt.events.Ping(ctx); err != nil {
		h.Redis = err.Error()
		h.Status, h.Reason = "unavailable", "redis does not answer"
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

func (rt *Runtime) handleHealth(w http.ResponseWriter, r *http.Request) {
	h, ok := rt.CheckHealth(r.Context())
	w.Header().Set("Content-Type", "application/json")
	if !ok {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	_ = json.NewEncoder(w).Encode(h)
}

func xrpcError(w http.ResponseWriter, status int, name, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": name, "message": msg})
}

// FetchHealth asks a running pdsmux for its health.
func FetchHealth(ctx context.Context, baseURL string, timeout time.Duration) (Health, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(baseURL, "/")+"/xrpc/_health", nil)
	if err != nil {
		return Health{}, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return Health{}, fmt.Errorf("health check: %w", err)
	}
	defer resp.Body.Close()
	var h Health
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&h); err != nil {
		return Health{}, fmt.Errorf("health check: HTTP %d with an unreadable body: %w", resp.StatusCode, err)
	}
	return h, nil
}
