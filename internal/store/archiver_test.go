package store_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/pdsmux/pdsmux/internal/cursor"
	"github.com/pdsmux/pdsmux/internal/frame"
	"github.com/pdsmux/pdsmux/internal/store"
	"github.com/pdsmux/pdsmux/internal/testutil"
	"github.com/pdsmux/pdsmux/internal/testutil/redisserver"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// rig is a real Redis log and a real database of one backend, with an
// Archiver between them; cut takes the database away from the store's
// writes until restore (backend.startFaulty).
type rig struct {
	t            *testing.T
	redis        *redisserver.Server
	log          *cursor.Log
	cut, restore func()
	st           *store.Store
	reg          *prometheus.Registry
	m            *store.Metrics
	arch         *store.Archiver
	n            int
	stop         func()
}

// forEachBackendRig runs f as a subtest for each backend, side by side
// (each has its own Redis and database; the file's outage is mostly
// waiting out its busy timeout).
func forEachBackendRig(t *testing.T, f func(t *testing.T, b backend)) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			f(t, b)
		})
	}
}

func newRig(t *testing.T, b backend, lcfg cursor.Config, acfg store.ArchiverConfig) *rig {
	t.Helper()
	rs := redisserver.Start(t, redisserver.Options{})
	l, err := cursor.New(rs.Client(), lcfg, nil, quiet)
	require.NoError(t, err)
	_, err = l.Reconcile(context.Background(), cursor.DurableState{}, false)
	require.NoError(t, err)
	url, cut, restore := b.startFaulty(t)
	st := open(t, url)
	reg := prometheus.NewRegistry()
	m := store.NewMetrics(reg)
	r := &rig{t: t, redis: rs, log: l, cut: cut, restore: restore, st: st, reg: reg, m: m, arch: store.NewArchiver(st, l, acfg, m, quiet)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = r.arch.Run(ctx); close(done) }()
	r.stop = func() { cancel(); <-done }
	t.Cleanup(r.stop)
	return r
}

// appendN appends n distinct #identity events of about size bytes each
// and returns their seqs.
func (r *rig) appendN(n, size int) []int64 {
	r.t.Helper()
	var seqs []int64
	for n > 0 {
		k := min(n, 200)
		evs := make([]cursor.Event, k)
		for i := range evs {
			r.n++
			handle := fmt.Sprintf("u%06d.%s.test", r.n, strings.Repeat("x", max(size-150, 1)))
			b := identityFrame(r.t, fmt.Sprintf("did:plc:u%06d", r.n), handle, int64(r.n))
			in, err := frame.Parse(b, 0)
			require.NoError(r.t, err)
			evs[i], err = cursor.NewEvent(b, &in)
			require.NoError(r.t, err)
		}
		b, err := r.log.Append(context.Background(), "r1", -1, evs)
		require.NoError(r.t, err)
		for _, res := range b.Results {
			require.Equal(r.t, cursor.Appended, res.Outcome)
			seqs = append(seqs, res.Seq)
		}
		n -= k
	}
	return seqs
}

// archived is every seq in the archive, oldest first.
func (r *rig) archived() []int64 {
	r.t.Helper()
	var out []int64
	after := int64(0)
	for {
		es, err := r.st.Range(context.Background(), after, 5000)
		require.NoError(r.t, err)
		if len(es) == 0 {
			return out
		}
		for _, e := range es {
			out = append(out, e.Seq)
		}
		after = es[len(es)-1].Seq
	}
}

func (r *rig) waitDurable(seq int64, within time.Duration) {
	r.t.Helper()
	require.Eventually(r.t, func() bool {
		hw, err := r.st.HighWater(context.Background())
		return err == nil && hw >= seq
	}, within, 20*time.Millisecond, "archive durable through %d", seq)
}

// watchPending samples the archiver's pending bytes until the returned
// func is called, and returns the largest value seen.
func (r *rig) watchPending() func() float64 {
	stop := make(chan struct{})
	var mu sync.Mutex
	peak := 0.0
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			v := testutil.Value(r.t, r.reg, "pdsmux_archive_pending_bytes")
			mu.Lock()
			peak = max(peak, v)
			mu.Unlock()
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	}()
	return func() float64 {
		close(stop)
		<-done
		mu.Lock()
		defer mu.Unlock()
		return peak
	}
}

// The database down while many times the archiver's buffer flows through
// the log: the archiver keeps its buffer under its byte budget (it stops
// reading), lets delivery go on (Await holds nothing back), drops
// nothing, and once the database is back catches up from Redis until the
// archive holds every seq.
func TestArchiver_DatabaseDownStopsReadingThenCatchesUp(t *testing.T) {
	forEachBackendRig(t, databaseDownStopsReadingThenCatchesUp)
}

func databaseDownStopsReadingThenCatchesUp(t *testing.T, b backend) {
	const budget = 256 << 10
	r := newRig(t, b, cursor.Config{}, store.ArchiverConfig{BufferBytes: budget})
	ctx := context.Background()
	before := r.appendN(100, 1000)
	r.waitDurable(before[len(before)-1], 30*time.Second)
	require.EqualValues(t, before[len(before)-1], r.arch.Await(ctx, before[len(before)-1]), "caught up: the gate is at what was read")

	r.cut()
	peak := r.watchPending()
	during := r.appendN(3000, 1000) // ~3 MB: twelve times the budget
	require.Eventually(t, func() bool { return testutil.Value(r.t, r.reg, "pdsmux_archive_behind") == 1 }, 30*time.Second, 10*time.Millisecond,
		"the archive reports it is behind")
	actx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	require.EqualValues(t, int64(math.MaxInt64), r.arch.Await(actx, during[len(during)-1]),
		"behind by more than its budget: delivery is not held back for the database")
	// a cut connection fails at once; a locked file after its busy timeout
	require.Eventually(t, func() bool { return testutil.Value(r.t, r.reg, "pdsmux_archive_write_errors_total") > 0 }, 30*time.Second, 10*time.Millisecond,
		"the outage shows")
	require.Eventually(t, func() bool { return testutil.Value(r.t, r.reg, "pdsmux_archive_lag_events") > float64(len(during)/2) }, 10*time.Second, 10*time.Millisecond,
		"the lag shows")

	r.restore()
	after := r.appendN(100, 1000)
	r.waitDurable(after[len(after)-1], 60*time.Second)
	p := peak()
	require.LessOrEqual(t, p, float64(budget), "pending bytes stayed within the budget")
	require.Greater(t, p, float64(budget)/2, "the buffer was used (the test exercised the bound)")

	want := append(append(append([]int64{}, before...), during...), after...)
	require.Equal(t, want, r.archived(), "every seq archived once, in order")
	tr, err := r.st.Trimmed(ctx)
	require.NoError(t, err)
	require.Zero(t, tr, "no hole")
	require.Zero(t, testutil.Value(r.t, r.reg, "pdsmux_archive_lost_total"))
	require.Eventually(t, func() bool { return testutil.Value(r.t, r.reg, "pdsmux_archive_behind") == 0 }, 10*time.Second, 10*time.Millisecond,
		"caught up: delivery waits for the archive again")
}

// Redis's cap passing the archive's position while the database is down:
// the hole is recorded as trimmed (a replay across it gets
// OutdatedCursor) and counted; everything Redis still held is archived.
func TestArchiver_CapPassingTheArchiveIsRecordedAsTrimmed(t *testing.T) {
	forEachBackendRig(t, capPassingTheArchiveIsRecordedAsTrimmed)
}

func capPassingTheArchiveIsRecordedAsTrimmed(t *testing.T, be backend) {
	const budget = 64 << 10
	r := newRig(t, be, cursor.Config{MaxEntries: 300}, store.ArchiverConfig{BufferBytes: budget})
	ctx := context.Background()
	first := r.appendN(10, 1000)
	r.waitDurable(first[len(first)-1], 30*time.Second)

	r.cut()
	during := r.appendN(2000, 1000)
	require.Eventually(t, func() bool { return testutil.Value(r.t, r.reg, "pdsmux_archive_behind") == 1 }, 30*time.Second, 10*time.Millisecond)
	// the age trim would take nothing (all young); the cap takes most
	n, _, err := r.log.Trim(ctx, time.Now(), r.arch.Durable(), math.MaxInt64)
	require.NoError(t, err)
	require.Positive(t, n)
	b, err := r.log.Bounds(ctx)
	require.NoError(t, err)
	r.restore()
	r.waitDurable(during[len(during)-1], 60*time.Second)

	tr, err := r.st.Trimmed(ctx)
	require.NoError(t, err)
	require.Equal(t, b.First-1, tr, "the hole is recorded up to what Redis still holds")
	got := r.archived()
	inArchive := map[int64]bool{}
	for _, s := range got {
		inArchive[s] = true
	}
	missing := 0
	for _, s := range append(first, during...) {
		switch {
		case s > tr:
			require.True(t, inArchive[s], "seq %d after the hole is archived", s)
		case !inArchive[s]:
			missing++
		}
	}
	require.Positive(t, missing)
	require.EqualValues(t, missing, testutil.Value(r.t, r.reg, "pdsmux_archive_lost_total"), "the hole is counted, seq for seq")
}

// What the archiver has read is durable after Flush (what the reconciler
// does before restoring Redis), even when its own writes are far apart;
// and Await holds an entry back until it is read.
func TestArchiver_AwaitThenFlushMakesDeliveredDurable(t *testing.T) {
	forEachBackendRig(t, awaitThenFlushMakesDeliveredDurable)
}

func awaitThenFlushMakesDeliveredDurable(t *testing.T, b backend) {
	r := newRig(t, b, cursor.Config{}, store.ArchiverConfig{FlushInterval: time.Hour})
	ctx := context.Background()
	require.Zero(t, r.arch.Await(ctx, 0), "started on an empty archive")

	got := make(chan int64, 1)
	go func() { got <- r.arch.Await(ctx, 1) }()
	select {
	case w := <-got:
		t.Fatalf("Await returned %d before anything was appended", w)
	case <-time.After(200 * time.Millisecond):
	}
	seqs := r.appendN(50, 200)
	select {
	case w := <-got:
		require.GreaterOrEqual(t, w, int64(1))
	case <-time.After(10 * time.Second):
		t.Fatal("Await did not return once the entry was read")
	}
	last := seqs[len(seqs)-1]
	require.Equal(t, last, r.arch.Await(ctx, last))
	hw, err := r.st.HighWater(ctx)
	require.NoError(t, err)
	require.Zero(t, hw, "not written yet (flush interval 1h)")
	recall := func(after, before int64) []int64 {
		es, err := r.arch.Recall(ctx, after, before, 1000)
		require.NoError(t, err)
		var out []int64
		for _, e := range es {
			out = append(out, e.Seq)
		}
		return out
	}
	require.Equal(t, seqs[10:20], recall(seqs[9], seqs[20]), "recalled from the buffer")
	require.NoError(t, r.arch.Flush(ctx))
	require.Equal(t, seqs, r.archived())
	require.Equal(t, last, r.arch.Durable())
	require.Equal(t, seqs[10:20], recall(seqs[9], seqs[20]), "recalled from the store")
}

// heldTail passes the log's reads on, but while hold is set it hands
// each non-empty one to got and returns it only once release is closed:
// a read in flight while Redis is restored.
type heldTail struct {
	store.Log
	hold    atomic.Bool
	got     chan []cursor.Entry
	release chan struct{}
}

func (h *heldTail) Tail(ctx context.Context, after int64, block time.Duration, count int64) ([]cursor.Entry, error) {
	es, err := h.Log.Tail(ctx, after, block, count)
	if len(es) > 0 && h.hold.Load() {
		h.got <- es
		<-h.release
	}
	return es, err
}

// A read that returns entries from a Redis that is then lost and restored
// (the daemon fences before it flushes and restores) is not accepted: the
// entries are neither archived nor let through Await, so they cannot be
// sent after the checkpoint was taken without them and then come back
// under new seqs. Without the fence they were accepted.
func TestArchiver_ReadInFlightAcrossAFenceIsDropped(t *testing.T) {
	r := newRig(t, backends[0], cursor.Config{}, store.ArchiverConfig{FlushInterval: time.Hour})
	r.stop() // the rig's archiver reads the log directly; this one is held
	ctx := context.Background()
	src := &heldTail{Log: r.log, got: make(chan []cursor.Entry, 1), release: make(chan struct{})}
	src.hold.Store(true)
	arch := store.NewArchiver(r.st, src, store.ArchiverConfig{FlushInterval: time.Hour}, r.m, quiet)
	actx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { _ = arch.Run(actx); close(done) }()
	var once sync.Once
	release := func() { once.Do(func() { src.hold.Store(false); close(src.release) }) }
	t.Cleanup(func() { release(); cancel(); <-done })

	r.appendN(5, 200)
	in := <-src.got
	require.NotEmpty(t, in, "the read is in flight")
	before := arch.Epoch()
	arch.Fence()
	require.Equal(t, before+1, arch.Epoch())
	require.NoError(t, r.redis.Client().FlushAll(ctx).Err()) // Redis loses them
	release()

	wctx, wcancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer wcancel()
	require.Less(t, arch.Await(wctx, in[0].Seq), in[0].Seq, "nothing of the stale read let through")
	require.NoError(t, arch.Flush(ctx))
	hw, err := r.st.HighWater(ctx)
	require.NoError(t, err)
	require.Zero(t, hw, "nothing of the stale read archived")
	es, err := arch.Recall(ctx, 0, math.MaxInt64, 100)
	require.NoError(t, err)
	require.Empty(t, es)
}

// The Archiver's Fence fences its log first: a read of the log's head
// issued after it (the broadcaster's, under the new epoch) never shares
// the answer of one issued before it, which may carry entries of a Redis
// that lost them. Without the log's fence the second Tail joined the
// first one's XREAD.
func TestArchiver_FenceFencesTheLog(t *testing.T) {
	r := newRig(t, backends[0], cursor.Config{}, store.ArchiverConfig{FlushInterval: time.Hour})
	r.stop() // only the reads below wait at the head
	ctx := context.Background()
	b, err := r.log.Bounds(ctx)
	require.NoError(t, err)
	tail := func() <-chan error {
		ch := make(chan error, 1)
		go func() {
			_, err := r.log.Tail(ctx, b.Last, 10*time.Second, 10)
			ch <- err
		}()
		return ch
	}
	first := tail()
	require.Eventually(t, func() bool { return r.redis.Blocked("xread") == 1 }, 10*time.Second, 5*time.Millisecond)
	r.arch.Fence()
	second := tail()
	require.Eventually(t, func() bool { return r.redis.Blocked("xread") == 2 }, 10*time.Second, 5*time.Millisecond,
		"the read after the Fence must be its own")
	r.appendN(1, 200)
	require.NoError(t, <-first)
	require.NoError(t, <-second)
}
