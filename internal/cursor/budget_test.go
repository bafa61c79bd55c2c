package cursor_test

import (
	"context"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/pdsmux/pdsmux/internal/cursor"
	"github.com/pdsmux/pdsmux/internal/testutil"
	"github.com/pdsmux/pdsmux/internal/testutil/redisserver"
)

// bigIdentities appends n distinct #identity events of about size bytes
// each and returns their seqs.
func bigIdentities(t *testing.T, l *cursor.Log, from, n, size int) []int64 {
	t.Helper()
	var seqs []int64
	for i := from; i < from+n; i++ {
		h := fmt.Sprintf("%08d", i) + strings.Repeat("h", size)
		b, err := l.Append(context.Background(), "r1", -1, events(t, identity(t, "did:plc:big", h, int64(i+1))))
		require.NoError(t, err)
		require.Equal(t, cursor.Appended, b.Results[0].Outcome)
		seqs = append(seqs, b.Results[0].Seq)
	}
	return seqs
}

func streamBytes(t *testing.T, srv *redisserver.Server) int64 {
	t.Helper()
	n, err := srv.Client().MemoryUsage(context.Background(), "{pdsmux}:log", 0).Result()
	require.NoError(t, err)
	return n
}

// Over its byte budget the stream loses its oldest entries, down to 3/4 of
// the budget, never one above keepAbove; the trim is recorded like an
// age or length trim (Bounds.Trimmed), so replay says OutdatedCursor.
func TestTrimBytes_DropsOldestDownToBudget(t *testing.T) {
	const budget, size = 8 << 20, 512 << 10
	l, srv := newLog(t, cursor.Config{MaxBytes: budget})
	ctx := context.Background()
	seqs := bigIdentities(t, l, 0, 40, size)
	before := streamBytes(t, srv)
	require.Greater(t, before, int64(2*budget))

	used, _, n, err := l.TrimBytes(ctx, 0)
	require.NoError(t, err)
	require.Zero(t, n, "nothing at or below keepAbove=0 may go")
	require.Equal(t, before, used)

	_, _, n, err = l.TrimBytes(ctx, seqs[9])
	require.NoError(t, err)
	require.EqualValues(t, 10, n, "only up to keepAbove, though still over budget")
	b, err := l.Bounds(ctx)
	require.NoError(t, err)
	require.Equal(t, seqs[10], b.First)
	require.Equal(t, seqs[9], b.Trimmed)

	_, _, n, err = l.TrimBytes(ctx, math.MaxInt64)
	require.NoError(t, err)
	require.Positive(t, n)
	after := streamBytes(t, srv)
	t.Logf("stream %d bytes, then %d after trimming %d more entries (budget %d)", before, after, n, budget)
	require.LessOrEqual(t, after, int64(budget*3/4))
	// Redis's allocator rounds each entry up (a 512 KiB one takes 640), so
	// the estimate of what goes is low and a little more than needed goes
	require.Greater(t, after, int64(budget/4), "not everything went")
	b, err = l.Bounds(ctx)
	require.NoError(t, err)
	require.Equal(t, b.First-1, b.Trimmed)
	require.Equal(t, seqs[len(seqs)-1], b.Last)

	_, _, n, err = l.TrimBytes(ctx, math.MaxInt64)
	require.NoError(t, err)
	require.Zero(t, n, "under the budget nothing goes")
}

// RunBudget trims as entries are appended: the stream ends within its
// budget, and the metrics say so.
func TestRunBudget_KeepsStreamWithinBudgetAsItAppends(t *testing.T) {
	const budget, size = 8 << 20, 256 << 10
	srv := redisserver.Start(t, redisserver.Options{})
	reg := prometheus.NewRegistry()
	l, err := cursor.New(srv.Client(), cursor.Config{MaxBytes: budget}, cursor.NewMetrics(reg), quiet)
	require.NoError(t, err)
	_, err = l.Reconcile(context.Background(), cursor.DurableState{}, false)
	require.NoError(t, err)
	// RunBudget is running once it has measured what is there
	bigIdentities(t, l, 1000, 1, 1000)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = l.RunBudget(ctx, func() int64 { return math.MaxInt64 }); close(done) }()
	defer func() { cancel(); <-done }()
	require.Eventually(t, func() bool { return testutil.Gauge(t, reg, "pdsmux_log_bytes") > 0 }, 10*time.Second, 10*time.Millisecond)

	var peak int64
	for i := 0; i < 120; i += 4 {
		bigIdentities(t, l, i, 4, size)
		peak = max(peak, streamBytes(t, srv))
	}
	require.LessOrEqual(t, streamBytes(t, srv), int64(budget))
	t.Logf("30 MB appended; stream peak %d bytes (budget %d)", peak, budget)
	require.LessOrEqual(t, peak, int64(budget), "appends near the budget trim before they return")
	require.LessOrEqual(t, testutil.Gauge(t, reg, "pdsmux_log_bytes"), float64(budget))
	require.Equal(t, float64(budget), testutil.Gauge(t, reg, "pdsmux_log_max_bytes"))
	require.Positive(t, counter(t, reg, "pdsmux_log_budget_trimmed_total"))
}

func counter(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	fams, err := reg.Gather()
	require.NoError(t, err)
	for _, f := range fams {
		if f.GetName() == name {
			return f.Metric[0].GetCounter().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}
