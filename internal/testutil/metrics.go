package testutil

import (
	"io"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Scrape reads a Prometheus /metrics endpoint at addr (host:port) and
// returns name{label=value,...} -> value for counters and gauges (labels
// sorted by name), and name_count / name_sum for histograms.
func Scrape(t testing.TB, addr string) map[string]float64 {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatalf("scrape %s: %v", addr, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("scrape %s: %v", addr, err)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(string(b)))
	if err != nil {
		t.Fatalf("parse metrics of %s: %v", addr, err)
	}
	out := map[string]float64{}
	for name, f := range fams {
		for _, m := range f.Metric {
			var labels []string
			for _, l := range m.Label {
				labels = append(labels, l.GetName()+"="+l.GetValue())
			}
			sort.Strings(labels)
			k := name
			if len(labels) > 0 {
				k += "{" + strings.Join(labels, ",") + "}"
			}
			switch {
			case m.Counter != nil:
				out[k] = m.Counter.GetValue()
			case m.Gauge != nil:
				out[k] = m.Gauge.GetValue()
			case m.Histogram != nil:
				out[strings.Replace(k, name, name+"_count", 1)] = float64(m.Histogram.GetSampleCount())
				out[strings.Replace(k, name, name+"_sum", 1)] = m.Histogram.GetSampleSum()
			}
		}
	}
	return out
}

// Value gathers g and returns one series of the metric family name: the
// series carrying every label given in labels, which are name, value
// pairs ("phase", "replay"); with no labels the family must have exactly
// one series. It returns a counter's, gauge's or untyped metric's value,
// and a histogram's or summary's sample count (the number of
// observations; not their sum).
//
// It fails the test (t.Fatalf, naming the metric and the labels) when
// gathering fails, when labels is not pairs, when no family is called
// name, when no series has all the labels, or when more than one does: a
// missing metric never reads as 0.
func Value(t testing.TB, g prometheus.Gatherer, name string, labels ...string) float64 {
	t.Helper()
	if len(labels)%2 != 0 {
		t.Fatalf("metric %s: labels %q are not name, value pairs", name, labels)
	}
	want := series(name, labels)
	fams, err := g.Gather()
	if err != nil {
		t.Fatalf("gather metrics for %s: %v", want, err)
	}
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
		var found *dto.Metric
		for _, m := range f.GetMetric() {
			if !hasLabels(m, labels) {
				continue
			}
			if found != nil {
				t.Fatalf("metric %s: more than one series matches (%s and %s)", want, series("", pairs(found)), series("", pairs(m)))
			}
			found = m
		}
		if found == nil {
			t.Fatalf("metric %s: no such series (the family has %d)", want, len(f.GetMetric()))
		}
		switch {
		case found.Counter != nil:
			return found.GetCounter().GetValue()
		case found.Gauge != nil:
			return found.GetGauge().GetValue()
		case found.Untyped != nil:
			return found.GetUntyped().GetValue()
		case found.Histogram != nil:
			return float64(found.GetHistogram().GetSampleCount())
		case found.Summary != nil:
			return float64(found.GetSummary().GetSampleCount())
		}
		t.Fatalf("metric %s: series of type %s has no value", want, f.GetType())
	}
	t.Fatalf("no metric %s", want)
	return 0
}

// hasLabels reports whether m carries every name, value pair of labels.
func hasLabels(m *dto.Metric, labels []string) bool {
	for i := 0; i < len(labels); i += 2 {
		ok := false
		for _, l := range m.GetLabel() {
			if l.GetName() == labels[i] && l.GetValue() == labels[i+1] {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	return true
}

// series is name{label="value",...} for labels in name, value pairs.
func series(name string, labels []string) string {
	var b strings.Builder
	b.WriteString(name + "{")
	for i := 0; i+1 < len(labels); i += 2 {
		if i > 0 {
			b.WriteString(",")
		}
		b.WriteString(labels[i] + "=" + strconv.Quote(labels[i+1]))
	}
	b.WriteString("}")
	return b.String()
}

// pairs is m's labels as name, value pairs.
func pairs(m *dto.Metric) []string {
	var out []string
	for _, l := range m.GetLabel() {
		out = append(out, l.GetName(), l.GetValue())
	}
	return out
}
