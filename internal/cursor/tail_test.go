package cursor_test

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/pdsmux/pdsmux/internal/cursor"
	"github.com/pdsmux/pdsmux/internal/testutil"
	"github.com/pdsmux/pdsmux/internal/testutil/redisserver"
)

// appendHead appends frames and returns the log's head seq.
func appendHead(t *testing.T, l *cursor.Log, frames ...[]byte) int64 {
	t.Helper()
	_, err := l.Append(context.Background(), "r1", -1, events(t, frames...))
	require.NoError(t, err)
	b, err := l.Bounds(context.Background())
	require.NoError(t, err)
	return b.Last
}

// blockedAtHead is a log holding one account's #sync (head is its seq)
// and a Tail from head, blocking up to block, that Redis holds blocked;
// the log's metrics are on reg.
func blockedAtHead(t *testing.T, block time.Duration) (l *cursor.Log, srv *redisserver.Server, u *upstream, head int64, first <-chan tailResult, reg *prometheus.Registry) {
	t.Helper()
	l, srv, reg = newLogMetrics(t, cursor.Config{})
	u, sync := newUpstream(t, "alice.test")
	head = appendHead(t, l, sync)
	first = goTailFor(context.Background(), l, head, 10, block)
	require.Eventually(t, func() bool { return srv.Blocked("xread") == 1 }, 10*time.Second, 5*time.Millisecond)
	return l, srv, u, head, first, reg
}

// tailResult is one Tail call's answer.
type tailResult struct {
	es  []cursor.Entry
	err error
}

// goTail runs l.Tail from after in a goroutine, blocking up to 10 s.
func goTail(ctx context.Context, l *cursor.Log, after, count int64) <-chan tailResult {
	return goTailFor(ctx, l, after, count, 10*time.Second)
}

// goTailFor is goTail blocking up to block.
func goTailFor(ctx context.Context, l *cursor.Log, after, count int64, block time.Duration) <-chan tailResult {
	ch := make(chan tailResult, 1)
	go func() {
		es, err := l.Tail(ctx, after, block, count)
		ch <- tailResult{es, err}
	}()
	return ch
}

// The live stream and the archive both wait at the log's head: their
// Tails share one XREAD, so Redis sends each frame once, and each gets at
// most its count.
func TestTail_ReadersAtTheHeadShareOneRead(t *testing.T) {
	ctx := context.Background()
	l, srv, u, head, first, reg := blockedAtHead(t, 10*time.Second)
	xreads := commandCalls(t, srv, "xread") // Redis counts a blocked XREAD once, as it blocks
	second := goTail(ctx, l, head, 2)
	require.Eventually(t, func() bool { return cursor.TailSharers(l, head) == 1 }, 10*time.Second, 5*time.Millisecond)
	require.Equal(t, 1, srv.Blocked("xread"), "the second reader issued a read of its own")

	_, err := l.Append(ctx, "r1", -1, events(t, u.commit(), u.commit(), u.commit()))
	require.NoError(t, err)
	a, b := <-first, <-second
	require.NoError(t, a.err)
	require.NoError(t, b.err)
	require.Len(t, a.es, 3)
	require.Len(t, b.es, 2, "the second reader's count")
	for i := range b.es {
		require.Equal(t, a.es[i].Seq, b.es[i].Seq)
		require.Equal(t, a.es[i].Frame, b.es[i].Frame)
	}
	require.Equal(t, xreads, commandCalls(t, srv, "xread"), "the second reader issued an XREAD of its own")
	require.Equal(t, 1.0, testutil.Value(t, reg, "pdsmux_log_shared_reads_total"))

	// what a reader appends to its answer never lands in another's
	b.es = append(b.es, cursor.Entry{Seq: -7})
	require.Equal(t, head+3, a.es[2].Seq)
}

// After a Fence (Redis is being restored after it lost entries), a Tail
// does not take the answer of a read issued before it, which may carry
// entries of the Redis that lost them.
func TestTail_FenceStopsSharingAReadInFlight(t *testing.T) {
	ctx := context.Background()
	l, srv, u, head, first, reg := blockedAtHead(t, 10*time.Second)
	l.Fence()
	second := goTail(ctx, l, head, 10)
	require.Eventually(t, func() bool { return srv.Blocked("xread") == 2 }, 10*time.Second, 5*time.Millisecond,
		"the Tail after the Fence must read Redis itself")
	require.Zero(t, cursor.TailSharers(l, head))

	_, err := l.Append(ctx, "r1", -1, events(t, u.commit()))
	require.NoError(t, err)
	for _, ch := range []<-chan tailResult{first, second} {
		r := <-ch
		require.NoError(t, r.err)
		require.Len(t, r.es, 1)
	}
	require.Zero(t, testutil.Value(t, reg, "pdsmux_log_shared_reads_total"))
}

// A reader that joined another's read and leaves (shutdown) returns at
// once; the reader whose read it was still gets what comes.
func TestTail_SharerLeavingReturnsAtOnce(t *testing.T) {
	ctx := context.Background()
	l, _, u, head, first, _ := blockedAtHead(t, 10*time.Second)
	sctx, leave := context.WithCancel(ctx)
	second := goTail(sctx, l, head, 10)
	require.Eventually(t, func() bool { return cursor.TailSharers(l, head) == 1 }, 10*time.Second, 5*time.Millisecond)
	leave()
	r := <-second // within the test's timeout, not the read's 10 s block
	require.ErrorIs(t, r.err, context.Canceled)
	require.Empty(t, r.es)

	_, err := l.Append(ctx, "r1", -1, events(t, u.commit()))
	require.NoError(t, err)
	r = <-first
	require.NoError(t, r.err)
	require.Len(t, r.es, 1)
	require.Equal(t, head+1, r.es[0].Seq)
}

// A Tail does not join a read that would block longer than its own block
// (a minute, or BLOCK 0: until something arrives): it reads Redis itself
// and returns empty-handed when its own block ends.
func TestTail_NoSharingAReadThatBlocksLonger(t *testing.T) {
	for name, block := range map[string]time.Duration{"a minute": time.Minute, "until something arrives": 0} {
		t.Run(name, func(t *testing.T) {
			// a short Tail that joined the long read would wait for it: the
			// ctx ends that wait (and fails the test) instead of a hang
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			l, _, _, head, long, _ := blockedAtHead(t, block)
			short := goTailFor(ctx, l, head, 10, 50*time.Millisecond)
			r := <-short
			require.NoError(t, r.err)
			require.Empty(t, r.es)
			require.Zero(t, cursor.TailSharers(l, head), "the short Tail joined the long one's read")
			select {
			case <-long:
				t.Fatal("the long Tail returned with nothing appended")
			default:
			}
		})
	}
}
