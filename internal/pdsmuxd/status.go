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
	"github.com/pdsmux/pdsmux/internal/redact"
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
	// Processes are the pdsmux using the log, by their live claims on it
	// (docs/ha.md), oldest first.
	Processes []ProcessStatus `json:"processes"`
}

// ProcessStatus is one pdsmux using the log.
type ProcessStatus struct {
	Archive string    `json:"archive"` // its database's archive ID
	Since   time.Time `json:"since"`   // when it first claimed the log
	Info    string    `json:"info"`    // host, pid, listen address, database
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

// ReplicaStatus describes one replica. Connected, Healthy, LagSeconds
// and LagEvents come from the metrics listener: null (unknown) when it
// does not answer, with Status.MetricsError saying why.
type ReplicaStatus struct {
	Name       string     `json:"name"`
	Connected  *bool      `json:"connected"`
	Healthy    *bool      `json:"healthy"`
	Cursor     int64      `json:"cursor"`
	HasCursor  bool       `json:"has_cursor"`
	LagSeconds *float64   `json:"lag_seconds"`
	LagEvents  *float64   `json:"lag_events"`
	LastEvent  *time.Time `json:"last_event"` // null: no event yet, or unknown
}

// ReadStatus gathers the status. A metrics endpoint that does not answer
// is reported (MetricsError; the figures only it knows are unknown), not
// fatal. Redis that does not answer is an error saying so; Redis refusing
// the credentials is a ConfigError for redis-url (wrapping ErrRedisAuth).
// Every replica pdsmux was started with is listed, with or without a
// cursor.
func ReadStatus(ctx context.Context, redisURL, prefix, metricsURL string) (Status, error) {
	newRedis, redacted, err := redisClient(redisURL, 0)
	if err != nil {
		return Status{}, err
	}
	if err := checkBaseURL("metrics-url", metricsURL, "pdsmux's metrics listener, e.g. http://127.0.0.1:2481"); err != nil {
		return Status{}, err
	}
	rdb := newRedis()
	defer rdb.Close()
	st := Status{Redis: redacted, MetricsURL: redact.URL(metricsURL), Processes: []ProcessStatus{}}
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	err = rdb.Ping(pctx).Err()
	cancel()
	if err != nil {
		return st, explainRedis(err, redacted)
	}
	l, err := cursor.New(rdb, cursor.Config{Prefix: prefix}, nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		return st, err
	}
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
	names, err := l.Replicas(ctx)
	if err != nil {
		return st, err
	}
	claims, err := l.Claims(ctx)
	if err != nil {
		return st, err
	}
	for _, c := range claims {
		st.Processes = append(st.Processes, ProcessStatus{Archive: c.Archive, Since: time.UnixMilli(c.Since).UTC(), Info: c.Info})
	}
	reps := map[string]*ReplicaStatus{}
	rep := func(name string) *ReplicaStatus {
		if reps[name] == nil {
			reps[name] = &ReplicaStatus{Name: name}
		}
		return reps[name]
	}
	for _, name := range names {
		rep(name)
	}
	for name, c := range cursors {
		r := rep(name)
		r.Cursor, r.HasCursor = c, true
	}
	if fams, err := scrapeMetrics(ctx, metricsURL); err != nil {
		st.MetricsError = redact.Strip(err.Error(), redact.Secrets(metricsURL)...)
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
		known := func(v bool) *bool { return &v }
		num := func(v float64) *float64 { return &v }
		for _, r := range reps { // a replica the metrics do not mention is not connected
			r.Connected, r.Healthy = known(false), known(false)
		}
		get("pdsmux_subscribers", func(_ map[string]string, v float64) { st.Subscribers = int(v) })
		get("pdsmux_log_retention_seconds", func(_ map[string]string, v float64) { st.Log.RetentionSeconds = v })
		get("pdsmux_log_max_entries", func(_ map[string]string, v float64) { st.Log.MaxEntries = int64(v) })
		get("pdsmux_replica_connected", func(l map[string]string, v float64) { rep(l["replica"]).Connected = known(v == 1) })
		get("pdsmux_replica_healthy", func(l map[string]string, v float64) { rep(l["replica"]).Healthy = known(v == 1) })
		get("pdsmux_replica_lag_seconds", func(l map[string]string, v float64) { rep(l["replica"]).LagSeconds = num(v) })
		get("pdsmux_replica_lag_events", func(l map[string]string, v float64) { rep(l["replica"]).LagEvents = num(v) })
		get("pdsmux_replica_last_event_timestamp_seconds", func(l map[string]string, v float64) {
			if v > 0 {
				at := time.UnixMilli(int64(v * 1000)).UTC()
				rep(l["replica"]).LastEvent = &at
			}
		})
	}
	for _, r := range reps {
		st.Replicas = append(st.Replicas, *r)
	}
	sort.Slice(st.Replicas, func(i, j int) bool { return st.Replicas[i].Name < st.Replicas[j].Name })
	return st, nil
}

// publishReplicas records the configured replica names in Redis for
// `pdsmux status`, retrying while Redis does not answer.
func (rt *Runtime) publishReplicas(ctx context.Context) error {
	names := make([]string, len(rt.s.replicas))
	for i, r := range rt.s.replicas {
		names[i] = r.Name
	}
	wait := 500 * time.Millisecond
	for {
		err := rt.events.SetReplicas(ctx, names)
		if err == nil || ctx.Err() != nil {
			return nil
		}
		rt.log.Debug("cannot record the replica names in redis yet; retrying", "err", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
		wait = min(2*wait, 30*time.Second)
	}
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
		fmt.Fprintf(w, "metrics:     %s does not answer (%s): connection, health, lag and subscribers unknown\n", st.MetricsURL, st.MetricsError)
	} else {
		fmt.Fprintf(w, "subscribers: %d\n", st.Subscribers)
	}
	for i, p := range st.Processes {
		label := ""
		if i == 0 {
			label = "pdsmux:"
		}
		fmt.Fprintf(w, "%-12s %s, archive %s, since %s\n", label, p.Info, p.Archive, p.Since.Format(time.RFC3339))
	}
	if len(st.Processes) == 0 {
		fmt.Fprintf(w, "pdsmux:      none running (no live claim on the log)\n")
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "REPLICA\tCONNECTED\tHEALTHY\tCURSOR\tLAG\tBEHIND (EVENTS)\tLAST EVENT")
	yesNo := func(b *bool) string {
		switch {
		case b == nil:
			return "unknown"
		case *b:
			return "yes"
		}
		return "no"
	}
	figure := func(v *float64, format string) string {
		if v == nil {
			return "unknown"
		}
		return fmt.Sprintf(format, *v)
	}
	for _, r := range st.Replicas {
		cur := "none yet"
		if r.HasCursor {
			cur = fmt.Sprint(r.Cursor)
		}
		last := "-"
		if r.LastEvent != nil {
			last = time.Since(*r.LastEvent).Round(time.Second).String() + " ago"
		} else if st.MetricsError != "" {
			last = "unknown"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Name, yesNo(r.Connected), yesNo(r.Healthy), cur,
			figure(r.LagSeconds, "%.2fs"), figure(r.LagEvents, "%.0f"), last)
	}
	return tw.Flush()
}

// WriteJSON prints the status for scripts.
func (st Status) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(st)
}
