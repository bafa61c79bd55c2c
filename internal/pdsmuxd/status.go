package pdsmuxd

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/pdsmux/pdsmux/internal/cursor"
)

// Status is what `pdsmux status` reports, from Redis and from the
// metrics endpoint of a running pdsmux.
type Status struct {
	Redis        string          `json:"redis"`
	MetricsURL   string          `json:"metrics_url"`
	MetricsError string          `json:"metrics_error,omitempty"`
	Log          LogStatus       `json:"log"`
	Subscribers  int             `json:"subscribers"`
	Replicas     []ReplicaStatus `json:"replicas"`
}

// LogStatus describes the merged log.
type LogStatus struct {
	Events           int64   `json:"events"`
	OldestSeq        int64   `json:"oldest_seq"`
	HeadSeq          int64   `json:"head_seq"`
	TrimmedThrough   int64   `json:"trimmed_through"`
	HeldRepos        int64   `json:"held_repos"`
	RetentionSeconds float64 `json:"retention_seconds,omitempty"`
	MaxEntries       int64   `json:"max_entries,omitempty"`
}

// ReplicaStatus describes one replica.
type ReplicaStatus struct {
	Name       string    `json:"name"`
	Connected  bool      `json:"connected"`
	Healthy    bool      `json:"healthy"`
	Cursor     int64     `json:"cursor"`
	HasCursor  bool      `json:"has_cursor"`
	LagSeconds float64   `json:"lag_seconds"`
	LagEvents  float64   `json:"lag_events"`
	LastEvent  time.Time `json:"last_event,omitempty"`
}

// ReadStatus gathers the status. A metrics endpoint that does not answer
// is reported, not fatal; Redis that does not answer is an error.
func ReadStatus(ctx context.Context, redisURL, prefix, metricsURL string) (Status, error) {
	newRedis, redacted, err := redisClient(redisURL, 0)
	if err != nil {
		return Status{}, err
	}
	rdb := newRedis()
	defer rdb.Close()
	l, err := cursor.New(rdb, cursor.Config{Prefix: prefix}, nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		return Status{}, err
	}
	st := Status{Redis: redacted, MetricsURL: metricsURL}
	b, err := l.Bounds(ctx)
	if err != nil {
		return st, err
	}
	st.Log = LogStatus{Events: b.Length, OldestSeq: b.First, HeadSeq: b.Last, TrimmedThrough: b.Trimmed}
	if st.Log.HeldRepos, err = l.HeldRepos(ctx); err != nil {
		return st, err
	}
	cursors, err := l.Cursors(ctx)
	if err != nil {
		return st, err
	}
	reps := map[string]*ReplicaStatus{}
	rep := func(name string) *ReplicaStatus {
		if reps[name] == nil {
			reps[name] = &ReplicaStatus{Name: name}
		}
		return reps[name]
	}
	for name, c := range cursors {
		r := rep(name)
		r.Cursor, r.HasCursor = c, true
	}
	if fams, err := scrapeMetrics(ctx, metricsURL); err != nil {
		st.MetricsError = err.Error()
	} else {
		get := func(name string, each func(labels map[string]string, v float64)) {
			f := fams[name]
			if f == nil {
				return
			}
			for _, m := range f.Metric {
				labels := map[string]string{}
				for _, lp := range m.Label {
					labels[lp.GetName()] = lp.GetValue()
				}
				v := m.GetGauge().GetValue()
				if m.Counter != nil {
					v = m.GetCounter().GetValue()
				}
				each(labels, v)
			}
		}
		get("pdsmux_subscribers", func(_ map[string]string, v float64) { st.Subscribers = int(v) })
		get("pdsmux_log_retention_seconds", func(_ map[string]string, v float64) { st.Log.RetentionSeconds = v })
		get("pdsmux_log_max_entries", func(_ map[string]string, v float64) { st.Log.MaxEntries = int64(v) })
		get("pdsmux_replica_connected", func(l map[string]string, v float64) { rep(l["replica"]).Connected = v == 1 })
		get("pdsmux_replica_healthy", func(l map[string]string, v float64) { rep(l["replica"]).Healthy = v == 1 })
		get("pdsmux_replica_lag_seconds", func(l map[string]string, v float64) { rep(l["replica"]).LagSeconds = v })
		get("pdsmux_replica_lag_events", func(l map[string]string, v float64) { rep(l["replica"]).LagEvents = v })
		get("pdsmux_replica_last_event_timestamp_seconds", func(l map[string]string, v float64) {
			if v > 0 {
				rep(l["replica"]).LastEvent = time.UnixMilli(int64(v * 1000)).UTC()
			}
		})
	}
	for _, r := range reps {
		st.Replicas = append(st.Replicas, *r)
	}
	sort.Slice(st.Replicas, func(i, j int) bool { return st.Replicas[i].Name < st.Replicas[j].Name })
	return st, nil
}

func scrapeMetrics(ctx context.Context, url string) (map[string]*dto.MetricFamily, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(url, "/")+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("metrics endpoint: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("metrics endpoint answered HTTP %d", resp.StatusCode)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	return p.TextToMetricFamilies(resp.Body)
}

// WriteText prints the status as a table.
func (st Status) WriteText(w io.Writer) error {
	fmt.Fprintf(w, "redis:       %s\n", st.Redis)
	fmt.Fprintf(w, "log:         %d events kept, seq %d .. %d", st.Log.Events, st.Log.OldestSeq, st.Log.HeadSeq)
	if st.Log.TrimmedThrough > 0 {
		fmt.Fprintf(w, " (trimmed through %d)", st.Log.TrimmedThrough)
	}
	fmt.Fprintln(w)
	if st.Log.RetentionSeconds > 0 {
		fmt.Fprintf(w, "retention:   %s or %d events\n", time.Duration(st.Log.RetentionSeconds*float64(time.Second)), st.Log.MaxEntries)
	}
	fmt.Fprintf(w, "held repos:  %d\n", st.Log.HeldRepos)
	if st.MetricsError != "" {
		fmt.Fprintf(w, "metrics:     unavailable (%s): connection and lag unknown\n", st.MetricsError)
	} else {
		fmt.Fprintf(w, "subscribers: %d\n", st.Subscribers)
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "REPLICA\tCONNECTED\tHEALTHY\tCURSOR\tLAG\tBEHIND (EVENTS)\tLAST EVENT")
	yes := map[bool]string{true: "yes", false: "no"}
	for _, r := range st.Replicas {
		cur := "-"
		if r.HasCursor {
			cur = fmt.Sprint(r.Cursor)
		}
		last := "-"
		if !r.LastEvent.IsZero() {
			last = time.Since(r.LastEvent).Round(time.Second).String() + " ago"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%.2fs\t%.0f\t%s\n", r.Name, yes[r.Connected], yes[r.Healthy], cur, r.LagSeconds, r.LagEvents, last)
	}
	return tw.Flush()
}

// WriteJSON prints the status for scripts.
func (st Status) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(st)
}
