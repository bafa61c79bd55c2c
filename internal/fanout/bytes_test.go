package fanout_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	comatproto "github.com/bluesky-social/indigo/api/atproto"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/pdsmux/pdsmux/internal/cursor"
	"github.com/pdsmux/pdsmux/internal/fanout"
	"github.com/pdsmux/pdsmux/internal/frame"
	tu "github.com/pdsmux/pdsmux/internal/testutil"
	"github.com/pdsmux/pdsmux/internal/testutil/redisserver"
)

// bigIdentity is a distinct #identity frame of about size bytes (its
// handle padded), like a hostile replica's.
func bigIdentity(t *testing.T, did string, i, size int) []byte {
	h := fmt.Sprintf("%08d", i) + strings.Repeat("h", size-200)
	b, err := frame.Encode(frame.TypeIdentity, &comatproto.SyncSubscribeRepos_Identity{
		Did: did, Seq: int64(i + 1), Time: time.Now().UTC().Format(time.RFC3339Nano), Handle: &h,
	})
	require.NoError(t, err)
	return b
}

// A subscriber that stops reading is cut off with ConsumerTooSlow once its
// backlog passes QueueBytes, even far below QueueLen frames; the
// subscriber queue gauge never passes the byte cap, the broadcaster's
// reads stay within theirs, and a reading subscriber beside it gets every
// frame.
func TestSubscribe_SlowConsumerOverByteBudget(t *testing.T) {
	const queueBytes, frameBytes, frames = 1 << 20, 200 << 10, 80 // 16 MB: past the kernel's buffers
	reg := prometheus.NewRegistry()
	m := fanout.NewMetrics(reg)
	rs := redisserver.Start(t, redisserver.Options{})
	l, err := cursor.New(rs.Client(), cursor.Config{}, nil, quiet)
	require.NoError(t, err)
	_, err = l.Reconcile(context.Background(), cursor.DurableState{}, false)
	require.NoError(t, err)
	bc := fanout.NewBroadcaster(l, nil, m, quiet)
	bc.SetMaxBatchBytes(queueBytes / 4)
	srv := fanout.NewServer(fanout.Config{QueueLen: 1_000_000, QueueBytes: queueBytes}, l, nil, bc, nil, m, quiet)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = bc.Run(ctx) }()
	ln := tu.Listen(t)
	hs := &http.Server{Handler: srv}
	go func() { _ = hs.Serve(ln) }()
	defer hs.Close()
	s := &stack{t: t, redis: rs, log: l, srv: srv, url: "http://" + ln.Addr().String(), gen: newGen(t, 1)}
	<-bc.Ready()

	slow := dialTinyBuffer(t, s.url, "")
	defer slow.Close()
	fast := dial(t, s, -1)
	defer fast.Close()
	waitSubscribers(t, s, 2)

	// gauges sampled all along
	stop := make(chan struct{})
	peaks := make(chan [2]float64, 1)
	go func() {
		var q, b float64
		for {
			q = max(q, tu.Value(t, reg, "pdsmux_subscriber_queued_bytes"))
			b = max(b, tu.Value(t, reg, "pdsmux_fanout_batch_bytes"))
			select {
			case <-stop:
				peaks <- [2]float64{q, b}
				return
			case <-time.After(2 * time.Millisecond):
			}
		}
	}()
	did := s.gen.accounts[0].DID
	for i := range frames {
		s.appendFrames([][]byte{bigIdentity(t, did, i, frameBytes)})
	}
	require.NoError(t, fast.WaitLen(frames, 60*time.Second), "the reading subscriber gets every frame")
	require.Eventually(t, func() bool {
		return tu.Value(t, reg, "pdsmux_subscriber_too_slow_total") == 1
	}, 10*time.Second, 10*time.Millisecond)
	close(stop)
	p := <-peaks
	t.Logf("peak subscriber queue %.0f bytes (cap %d), peak broadcaster read %.0f bytes", p[0], queueBytes, p[1])
	require.LessOrEqual(t, p[0], float64(queueBytes), "a subscriber queue never passes its byte cap")
	require.LessOrEqual(t, p[1], float64(queueBytes/4+frameBytes+1024), "a broadcaster read is within its cap (plus one frame)")

	// The stalled subscriber reads what the kernel held, then ConsumerTooSlow.
	require.NoError(t, slow.UnderlyingConn().(*net.TCPConn).SetReadBuffer(4<<20))
	var last frame.Info
	n := 0
	for {
		_ = slow.SetReadDeadline(time.Now().Add(15 * time.Second))
		_, b, err := slow.ReadMessage()
		if err != nil {
			break
		}
		n++
		last, err = frame.Parse(b, 0)
		require.NoError(t, err)
	}
	require.Less(t, n, frames, "the stalled subscriber was cut off before the end")
	require.Equal(t, frame.KindError, last.Kind)
	require.Equal(t, frame.ErrNameConsumerTooSlow, last.Name)
}
