package testutil_test

import (
	"fmt"
	"runtime"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/pdsmux/pdsmux/internal/testutil"
)

// fatalTB records the first Fatalf and ends its goroutine there, as
// testing.T does; nothing else of testing.TB is used by Value.
type fatalTB struct {
	testing.TB
	msg string
}

func (f *fatalTB) Helper() {}

func (f *fatalTB) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// value runs testutil.Value with a fatalTB: the value, or the message
// it failed with ("" if it did not).
func value(g prometheus.Gatherer, name string, labels ...string) (float64, string) {
	tb := &fatalTB{}
	var v float64
	done := make(chan struct{})
	go func() {
		defer close(done)
		v = testutil.Value(tb, g, name, labels...)
	}()
	<-done
	return v, tb.msg
}

func TestValue(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "c_total", Help: "c"})
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "g", Help: "g"})
	v := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "v_total", Help: "v"}, []string{"phase", "kind"})
	h := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "h_seconds", Help: "h"})
	unused := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "unused_total", Help: "u"}, []string{"x"})
	reg.MustRegister(c, g, v, h, unused)
	c.Add(2)
	g.Set(-1.5)
	v.WithLabelValues("live", "a").Add(3)
	v.WithLabelValues("live", "b").Add(4)
	v.WithLabelValues("replay", "a")
	for _, d := range []float64{0.1, 0.2, 0.3} {
		h.Observe(d)
	}

	for _, tc := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"c_total", nil, 2},
		{"g", nil, -1.5},
		{"v_total", []string{"phase", "live", "kind", "b"}, 4},
		{"v_total", []string{"kind", "b", "phase", "live"}, 4},
		{"v_total", []string{"phase", "replay"}, 0},
		{"v_total", []string{"kind", "b"}, 4},
		{"h_seconds", nil, 3},
	} {
		got, msg := value(reg, tc.name, tc.labels...)
		require.Empty(t, msg, "%s %q", tc.name, tc.labels)
		require.Equal(t, tc.want, got, "%s %q", tc.name, tc.labels)
	}

	// what is missing or ambiguous fails the test, naming what was asked
	for _, tc := range []struct {
		name   string
		labels []string
		msg    string
	}{
		{"nope_total", nil, "no metric nope_total{}"},
		{"unused_total", []string{"x", "y"}, `no metric unused_total{x="y"}`},
		{"v_total", []string{"phase", "archive"}, `metric v_total{phase="archive"}: no such series (the family has 3)`},
		{"v_total", []string{"phase", "live", "kind", "c"}, `metric v_total{phase="live",kind="c"}: no such series`},
		{"v_total", []string{"outcome", "live"}, `metric v_total{outcome="live"}: no such series`},
		{"c_total", []string{"phase", "live"}, `metric c_total{phase="live"}: no such series`},
		{"v_total", nil, `metric v_total{}: more than one series matches ({kind="a",phase="live"} and {kind="a",phase="replay"})`},
		{"v_total", []string{"phase", "live"}, `metric v_total{phase="live"}: more than one series matches`},
		{"v_total", []string{"phase"}, `metric v_total: labels ["phase"] are not name, value pairs`},
	} {
		_, msg := value(reg, tc.name, tc.labels...)
		require.Contains(t, msg, tc.msg, "%s %q", tc.name, tc.labels)
	}
}
