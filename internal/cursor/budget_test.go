package cursor_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
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

	xtrims := commandCalls(t, srv, "xtrim")
	_, _, n, err = l.TrimBytes(ctx, math.MaxInt64)
	require.NoError(t, err)
	require.Positive(t, n)
	// one entry is more than a call's step (a 64th of the budget): each
	// script call drops one, and Redis serves others between them (one
	// call dropping all 26 held Redis 60-114 ms per 16 MiB at 2,000
	// events/s in bench U)
	require.Equal(t, xtrims+n, commandCalls(t, srv, "xtrim"), "one trim call per step")
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

// A trim that Redis fails says so (a budget kept by a size never measured
// would let the stream grow unseen).
func TestTrimBytes_ReportsRedisErrors(t *testing.T) {
	const budget, size = 8 << 20, 512 << 10
	l, srv := newLog(t, cursor.Config{MaxBytes: budget})
	bigIdentities(t, l, 0, 20, size)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, _, _, err := l.TrimBytes(ctx, math.MaxInt64)
	require.ErrorIs(t, err, context.Canceled)

	// failing after a first call: what it dropped is counted and returned
	// with the error
	c := srv.Client()
	h := &failEvalsAfter{}
	h.ok.Store(1)
	c.AddHook(h)
	m, err := cursor.New(c, cursor.Config{MaxBytes: budget}, nil, quiet)
	require.NoError(t, err)
	_, _, n, err := m.TrimBytes(context.Background(), math.MaxInt64)
	require.ErrorContains(t, err, "injected")
	require.EqualValues(t, 1, n, "one call, one entry larger than a step")
}

// failEvalsAfter fails every EVALSHA after its first ok ones.
type failEvalsAfter struct{ ok atomic.Int32 }

func (h *failEvalsAfter) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *failEvalsAfter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}
func (h *failEvalsAfter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if cmd.Name() == "evalsha" && h.ok.Add(-1) < 0 {
			err := errors.New("injected")
			cmd.SetErr(err)
			return err
		}
		return next(ctx, cmd)
	}
}

// Two pdsmux on one log both pass the high level as they append the same
// events, and their trims' calls interleave: the one going on after the
// other's whole trim measures again instead of dropping what it measured
// before, so the stream ends near 3/8 of the budget, not twice as far
// below. Entries smaller than a step: each call drops several.
func TestTrimBytes_TwoTrimmersDropOnce(t *testing.T) {
	const budget, size = 8 << 20, 40 << 10
	a, srv := newLog(t, cursor.Config{MaxBytes: budget})
	b, err := cursor.New(srv.Client(), cursor.Config{MaxBytes: budget}, nil, quiet)
	require.NoError(t, err)
	ctx := context.Background()
	bigIdentities(t, a, 0, 100, size)
	before := streamBytes(t, srv)
	require.Greater(t, before, int64(budget/2))

	res, err := cursor.TrimCall(ctx, a, math.MaxInt64, nil) // a measures, drops a step
	require.NoError(t, err)
	require.Greater(t, res[1], int64(1), "several entries to a step")
	rest := res[3] - res[2]
	_, _, nb, err := b.TrimBytes(ctx, math.MaxInt64) // b trims in full meanwhile
	require.NoError(t, err)
	require.Positive(t, nb)
	for res[2] >= cursor.TrimStep(a) && rest > 0 { // a goes on as TrimBytes does
		res, err = cursor.TrimCall(ctx, a, math.MaxInt64, []int64{rest, res[4], res[5]})
		require.NoError(t, err)
		if res[0] >= 0 {
			rest = res[3]
		}
		rest -= res[2]
	}
	after := streamBytes(t, srv)
	t.Logf("stream %d bytes before, %d after (3/8 of the budget: %d)", before, after, budget*3/8)
	require.Greater(t, after, int64(budget*5/16), "trimmed to about 3/8 of the budget once, not twice")
	require.LessOrEqual(t, after, int64(budget/2))

	// and alone, in steps of several entries, it ends near 3/8 too
	bigIdentities(t, a, 100, 60, size)
	xtrims := commandCalls(t, srv, "xtrim")
	_, _, n, err := a.TrimBytes(ctx, math.MaxInt64)
	require.NoError(t, err)
	after = streamBytes(t, srv)
	steps := commandCalls(t, srv, "xtrim") - xtrims
	t.Logf("%d entries dropped in %d calls; %d bytes left", n, steps, after)
	require.Greater(t, steps, int64(1))
	require.Less(t, steps, n, "several entries a call")
	require.InDelta(t, budget*3/8, after, budget/16)
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
	all := func() int64 { return math.MaxInt64 }
	go func() { _ = l.RunBudget(ctx, all, all); close(done) }()
	defer func() { cancel(); <-done }()
	require.Eventually(t, func() bool { return testutil.Value(t, reg, "pdsmux_log_bytes") > 0 }, 10*time.Second, 10*time.Millisecond)

	var peak int64
	for i := 0; i < 120; i += 4 {
		bigIdentities(t, l, i, 4, size)
		peak = max(peak, streamBytes(t, srv))
	}
	require.LessOrEqual(t, streamBytes(t, srv), int64(budget))
	t.Logf("30 MB appended; stream peak %d bytes (budget %d)", peak, budget)
	require.LessOrEqual(t, peak, int64(budget), "appends near the budget trim before they return")
	require.LessOrEqual(t, testutil.Value(t, reg, "pdsmux_log_bytes"), float64(budget))
	require.Equal(t, float64(budget), testutil.Value(t, reg, "pdsmux_log_max_bytes"))
	require.Positive(t, testutil.Value(t, reg, "pdsmux_log_budget_trimmed_total"))
}

// Two pdsmux appending to one log (an HA pair) each count the other's
// appends, by the seqs they see, between measures: the stream stays near
// half the budget. Counting only its own, each let it reach about 5/8
// before trimming.
func TestRunBudget_TwoProcessesKeepTheStreamNearHalf(t *testing.T) {
	const budget, size = 8 << 20, 128 << 10
	a, srv := newLog(t, cursor.Config{MaxBytes: budget})
	b, err := cursor.New(srv.Client(), cursor.Config{MaxBytes: budget}, nil, quiet)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	all := func() int64 { return math.MaxInt64 }
	for _, l := range []*cursor.Log{a, b} {
		wg.Add(1)
		go func() { defer wg.Done(); _ = l.RunBudget(ctx, all, all) }()
	}
	defer func() { cancel(); wg.Wait() }()

	var peak int64
	read := map[*cursor.Log]int64{}
	for i := 0; i < 240; i += 2 {
		bigIdentities(t, a, i, 1, size)
		bigIdentities(t, b, i+1, 1, size)
		// each reads the log as its live stream does (its next append's
		// seq also tells it what the other appended before)
		for _, l := range []*cursor.Log{a, b} {
			es, err := l.Tail(context.Background(), read[l], -1, 1<<20)
			require.NoError(t, err)
			if len(es) > 0 {
				read[l] = es[len(es)-1].Seq
			}
		}
		peak = max(peak, streamBytes(t, srv))
	}
	t.Logf("30 MB appended by two; stream peak %d bytes (half the budget %d)", peak, budget/2)
	require.LessOrEqual(t, peak, int64(budget/2+budget/16))
}

// A jump in seq (the counter raised to the clock after Redis lost
// writes, as after a failover) counts as the whole budget until the
// stream is measured: the next append measures it once, and the appends
// after it go by that measure, neither measuring again nor waiting. So a
// failover costs each process one MEMORY USAGE, not one per append.
func TestRunBudget_SeqJumpMeasuresOnce(t *testing.T) {
	const budget, size = 8 << 20, 1 << 10
	l, srv, reg := newLogMetrics(t, cursor.Config{MaxBytes: budget})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	all := func() int64 { return math.MaxInt64 }
	go func() { defer close(done); _ = l.RunBudget(ctx, all, all) }()
	defer func() { cancel(); <-done }()
	measures := func() int64 { return commandCalls(t, srv, "memory|usage") }
	// RunBudget measures at its start (the stream is empty, nothing seen)
	require.Eventually(t, func() bool { return measures() == 1 }, 10*time.Second, 5*time.Millisecond)

	// the first append's seq is a jump from nothing seen: the second
	// append measures, the rest go by it
	bigIdentities(t, l, 0, 5, size)
	require.EqualValues(t, 2, measures(), "one measure for the first seqs seen")

	require.NoError(t, srv.Client().IncrBy(ctx, "{pdsmux}:seq", 1_000_000_000).Err())
	jumped := bigIdentities(t, l, 5, 1, size)[0] // learns of the jump from its own seq
	require.EqualValues(t, 2, measures())
	bigIdentities(t, l, 6, 1, size)
	require.EqualValues(t, 3, measures(), "the append after the jump measures")
	seqs := bigIdentities(t, l, 7, 20, size)
	require.EqualValues(t, 3, measures(), "and the appends after it go by that measure")
	require.Greater(t, seqs[0], jumped)
	require.Zero(t, testutil.Value(t, reg, "pdsmux_log_budget_wait_seconds_total"), "no append waited")
	require.Zero(t, testutil.Value(t, reg, "pdsmux_log_budget_trimmed_total"))
}

// commandCalls is how many times srv ran cmd (INFO commandstats; none
// yet: no line).
func commandCalls(t *testing.T, srv *redisserver.Server, cmd string) int64 {
	t.Helper()
	v, ok := infoValue(t, srv, "commandstats", "cmdstat_"+cmd)
	if !ok {
		return 0
	}
	c, _, _ := strings.Cut(strings.TrimPrefix(v, "calls="), ",")
	n, err := strconv.ParseInt(c, 10, 64)
	require.NoError(t, err, "INFO commandstats: cmdstat_%s:%s", cmd, v)
	return n
}

// redisMemory reads one field of INFO memory, bytes.
func redisMemory(t *testing.T, srv *redisserver.Server, field string) int64 {
	t.Helper()
	v, ok := infoValue(t, srv, "memory", field)
	require.True(t, ok, "no %s in INFO memory", field)
	n, err := strconv.ParseInt(v, 10, 64)
	require.NoError(t, err)
	return n
}

// infoValue is field's value in srv's INFO section, and whether it is
// there.
func infoValue(t *testing.T, srv *redisserver.Server, section, field string) (string, bool) {
	t.Helper()
	info, err := srv.Client().Info(context.Background(), section).Result()
	require.NoError(t, err)
	for _, l := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(l), field+":"); ok {
			return v, true
		}
	}
	return "", false
}

// A batch goes to Redis in calls of at most a 64th of the byte budget
// (512 KiB of 32 MiB here), a larger frame alone: a held commit and the
// one that releases it in a later call behave as in one call, results
// come in the batch's order, and the stored cursor ends at the batch's
// highest upstream seq.
func TestAppend_SplitsABatchIntoCallsWithinItsBytes(t *testing.T) {
	ctx := context.Background()
	srv := redisserver.Start(t, redisserver.Options{})
	reg := prometheus.NewRegistry()
	l, err := cursor.New(srv.Client(), cursor.Config{MaxBytes: 32 << 20}, cursor.NewMetrics(reg), quiet)
	require.NoError(t, err)
	_, err = l.Reconcile(ctx, cursor.DurableState{}, false)
	require.NoError(t, err)
	u, syncFrame := newUpstream(t, "alice.test")
	c1, c2, c3, c4 := u.commit(), u.commit(), u.commit(), u.commit()
	big := func(i int) []byte {
		return identity(t, "did:plc:big", fmt.Sprintf("%08d", i)+strings.Repeat("h", 990_000), int64(200+i))
	}
	first, err := l.Append(ctx, "r1", -1, events(t, syncFrame))
	require.NoError(t, err)
	require.Equal(t, []cursor.Outcome{A}, outcomes(first))
	rc, err := l.Cursor(ctx, "r1")
	require.NoError(t, err)

	// c3 comes before c2: held in its own call, released by c2's
	evs := events(t, c1, big(0), c3, big(1), c2, big(2), c4)
	// append script calls: one observation of pdsmux_redis_append_seconds each
	calls := testutil.Value(t, reg, "pdsmux_redis_append_seconds")
	b, err := l.Append(ctx, "r1", rc.Stored, evs)
	require.NoError(t, err)
	require.Equal(t, []cursor.Outcome{A, A, H, A, A, A, A}, outcomes(b))
	require.Equal(t, 1, b.Released)
	// calls: [c1] (big(0) would pass 512 KiB), [big(0)], [c3], [big(1)], [c2], [big(2)], [c4]
	require.EqualValues(t, 7, testutil.Value(t, reg, "pdsmux_redis_append_seconds")-calls, "one call per 512 KiB of frames, a larger frame alone")
	for i := 1; i < len(b.Results); i++ {
		if b.Results[i].Outcome == A && b.Results[i-1].Outcome == A {
			require.Greater(t, b.Results[i].Seq, b.Results[i-1].Seq, "results in the batch's order")
		}
	}

	var top int64
	for _, ev := range evs {
		top = max(top, ev.UpstreamSeq)
	}
	rc, err = l.Cursor(ctx, "r1")
	require.NoError(t, err)
	require.Equal(t, top, rc.Stored)
	require.Equal(t, top, rc.Resume, "nothing held any more")
	var got []string
	for _, e := range allEntries(t, l) {
		if e.Kind == "i" {
			got = append(got, "big")
		} else {
			got = append(got, e.Rev)
		}
	}
	rev := func(b []byte) string { return event(t, b).Rev }
	require.Equal(t, []string{rev(syncFrame), rev(c1), "big", "big", rev(c2), rev(c3), "big", rev(c4)}, got)

	// small frames still go 512 at a time
	calls = testutil.Value(t, reg, "pdsmux_redis_append_seconds")
	var small [][]byte
	for i := range cursor.MaxBatch {
		small = append(small, identity(t, "did:plc:small", fmt.Sprintf("h%04d.test", i), int64(1000+i)))
	}
	_, err = l.Append(ctx, "r1", top, events(t, small...))
	require.NoError(t, err)
	require.EqualValues(t, 1, testutil.Value(t, reg, "pdsmux_redis_append_seconds")-calls)
}

// The estimate of an entry's cost follows what MEMORY USAGE counts, the
// allocator's rounding of large entries included.
func TestEntryCost_FollowsMemoryUsage(t *testing.T) {
	l, srv := newLog(t, cursor.Config{})
	bigIdentities(t, l, 100, 1, 50_000) // the stream exists, its last node full
	for i, size := range []int{100 << 10, 300_000, 512 << 10, 990_000} {
		before := streamBytes(t, srv)
		ev := events(t, identity(t, "did:plc:big", fmt.Sprintf("%08d", i)+strings.Repeat("h", size), int64(i+1)))
		_, err := l.Append(context.Background(), "r1", -1, ev)
		require.NoError(t, err)
		grew := streamBytes(t, srv) - before
		est := cursor.EntryCost(int64(len(ev[0].Pre) + len(ev[0].Suf)))
		t.Logf("%d-byte frame: the stream grew %d bytes, estimated %d", len(ev[0].Pre)+len(ev[0].Suf), grew, est)
		require.InDelta(t, grew, est, float64(grew)/50, "within 2%")
	}
}

// A replica appending 1 MB frames (near the largest the encoder takes)
// much faster than the log is read, beside
// one appending commits: Redis as a whole (used_memory_peak: the stream,
// the appends and reads in flight, the AOF buffer) stays within the log's
// byte budget, beyond what an empty Redis holds (used_memory_startup),
// because appends wait while what the reader has not read takes a
// sixteenth of the budget; they go on once it reads, and every event is
// read once.
func TestRunBudget_RedisWithinBudgetWhileTheReaderLags(t *testing.T) {
	const budget, frames, frameSize, commits = 32 << 20, 48, 990_000, 120
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	srv := redisserver.Start(t, redisserver.Options{AppendFsync: "everysec"})
	reg := prometheus.NewRegistry()
	l, err := cursor.New(srv.Client(), cursor.Config{MaxBytes: budget}, cursor.NewMetrics(reg), quiet)
	require.NoError(t, err)
	_, err = l.Reconcile(ctx, cursor.DurableState{}, false)
	require.NoError(t, err)

	// the reader: delivers what it read, only while resumed; one entry a
	// read, so its replies hold one frame (a ReadSizer's first read after
	// small entries may meet many large ones: see ReadSizer)
	var delivered atomic.Int64
	resume := make(chan struct{})
	type read struct {
		commits map[string]int // by rev
		hostile map[string]int // by the handle's first 8 bytes
	}
	got := read{commits: map[string]int{}, hostile: map[string]int{}}
	var readMu sync.Mutex
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		select {
		case <-resume:
		case <-ctx.Done():
			return
		}
		for ctx.Err() == nil {
			es, err := l.Tail(ctx, delivered.Load(), 100*time.Millisecond, 1)
			if err != nil {
				continue
			}
			readMu.Lock()
			for _, e := range es {
				switch {
				case e.Kind == "c" || e.Kind == "s":
					got.commits[e.Rev]++
				case e.DID == "did:plc:hostile":
					got.hostile[string(e.Frame[len(e.Frame)-frameSize-8:][:8])]++
				}
			}
			readMu.Unlock()
			if len(es) > 0 {
				delivered.Store(es[len(es)-1].Seq)
			}
		}
	}()
	bigIdentities(t, l, 1000, 1, 1000) // RunBudget is running once it has measured what is there
	budgetDone := make(chan struct{})
	go func() { _ = l.RunBudget(ctx, delivered.Load, delivered.Load); close(budgetDone) }()
	defer func() { cancel(); <-budgetDone; <-readDone }()
	require.Eventually(t, func() bool { return testutil.Value(t, reg, "pdsmux_log_bytes") > 0 }, 10*time.Second, 10*time.Millisecond)

	// the hostile replica: 8 frames per Append, as a tailer's read queue
	// would hand them over
	var hostile [][]cursor.Event
	for i := 0; i < frames; i += 8 {
		var fs [][]byte
		for j := i; j < i+8; j++ {
			fs = append(fs, identity(t, "did:plc:hostile", fmt.Sprintf("%08d", j)+strings.Repeat("h", frameSize), int64(j+1)))
		}
		hostile = append(hostile, events(t, fs...))
	}
	var hostileDone atomic.Bool
	hostileErr := make(chan error, 1)
	go func() {
		defer hostileDone.Store(true)
		for _, evs := range hostile {
			if _, err := l.Append(ctx, "hostile", -1, evs); err != nil {
				hostileErr <- err
				return
			}
		}
		hostileErr <- nil
	}()
	// the normal replica: a sync, then commits 4 at a time
	u, syncFrame := newUpstream(t, "alice.test")
	want := []string{event(t, syncFrame).Rev}
	normalErr := make(chan error, 1)
	normal := [][]cursor.Event{events(t, syncFrame)}
	for range commits / 4 {
		var b [][]byte
		for range 4 {
			c := u.commit()
			want = append(want, event(t, c).Rev)
			b = append(b, c)
		}
		normal = append(normal, events(t, b...))
	}
	go func() {
		for _, evs := range normal {
			if _, err := l.Append(ctx, "r1", -1, evs); err != nil {
				normalErr <- err
				return
			}
		}
		normalErr <- nil
	}()

	// with nothing delivered, the hostile replica waits for room
	require.Eventually(t, func() bool {
		return hostileDone.Load() || testutil.Value(t, reg, "pdsmux_log_budget_wait_seconds_total") > 0
	}, time.Minute, 10*time.Millisecond)
	require.False(t, hostileDone.Load(), "48 MB cannot be appended into a 32 MiB budget while nothing is delivered")
	stream := streamBytes(t, srv)
	t.Logf("waiting: stream %d bytes, used_memory %d", stream, redisMemory(t, srv, "used_memory"))
	require.LessOrEqual(t, stream, int64(budget/16+budget/64), "what the reader has not read: a sixteenth of the budget (and Redis's overhead)")

	close(resume)
	require.NoError(t, <-hostileErr)
	require.NoError(t, <-normalErr)
	require.Eventually(t, func() bool {
		readMu.Lock()
		defer readMu.Unlock()
		return len(got.hostile) == frames && len(got.commits) == len(want)
	}, time.Minute, 10*time.Millisecond, "the reader gets every event")
	readMu.Lock()
	for _, rev := range want {
		require.Equal(t, 1, got.commits[rev], "rev %s read once", rev)
	}
	for h, n := range got.hostile {
		require.Equal(t, 1, n, "hostile frame %s read once", h)
	}
	readMu.Unlock()

	peak, startup := redisMemory(t, srv, "used_memory_peak"), redisMemory(t, srv, "used_memory_startup")
	t.Logf("Redis used_memory_peak %d bytes (startup %d) for a %d-byte budget; appends waited %.2f s",
		peak, startup, budget, testutil.Value(t, reg, "pdsmux_log_budget_wait_seconds_total"))
	require.LessOrEqual(t, peak, int64(budget)+startup, "Redis within the log's byte budget")
}
