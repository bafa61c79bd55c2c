package fanout_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"sort"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/pdsmux/pdsmux/internal/cursor"
	"github.com/pdsmux/pdsmux/internal/fanout"
	"github.com/pdsmux/pdsmux/internal/frame"
	"github.com/pdsmux/pdsmux/internal/testutil/consumer"
)

func dial(t *testing.T, s *stack, from int64) *consumer.Consumer {
	t.Helper()
	c, _, err := consumer.Dial(context.Background(), s.url, from)
	require.NoError(t, err)
	t.Cleanup(c.Close)
	return c
}

// Every cursor case, counted with indigo's own stream client.
func TestSubscribe_CursorSemantics(t *testing.T) {
	s := newStack(t, fanout.Config{})
	seqs := append(s.base, s.append(100-len(s.base))...)

	t.Run("no cursor is live only", func(t *testing.T) {
		c := dial(t, s, -1)
		waitSubscribers(t, s, 1)
		more := s.append(10)
		more = append(more, s.append(1)...) // a marker: all sent before it is in once it is
		require.NoError(t, c.WaitLen(11, 10*time.Second))
		require.Equal(t, more, c.Seqs())
		seqs = append(seqs, more...)
	})
	t.Run("cursor replays seq > cursor then goes live", func(t *testing.T) {
		c := dial(t, s, seqs[49])
		require.NoError(t, c.WaitLen(len(seqs)-50, 10*time.Second))
		more := s.append(5)
		more = append(more, s.append(1)...) // a marker: all sent before it is in once it is
		seqs = append(seqs, more...)
		require.NoError(t, c.WaitLen(len(seqs)-50, 10*time.Second))
		require.Equal(t, seqs[50:], c.Seqs())
	})
	t.Run("cursor 0 replays everything kept", func(t *testing.T) {
		c := dial(t, s, 0)
		require.NoError(t, c.WaitLen(len(seqs), 10*time.Second))
		require.Equal(t, seqs, c.Seqs())
		require.NotEqual(t, "info", c.Events()[0].Kind, "nothing was trimmed: no OutdatedCursor")
	})
	t.Run("cursor older than retention gets OutdatedCursor then the oldest kept", func(t *testing.T) {
		// trim everything below seqs[60] through the log's own age trim
		cl := s.redis.Client()
		ctx := context.Background()
		require.NoError(t, cl.ZAdd(ctx, "{pdsmux}:tidx", redis.Z{Member: seqs[60], Score: float64(time.Now().Add(-100 * time.Hour).UnixMilli())}).Err())
		n, _, err := s.log.Trim(ctx, time.Now(), math.MaxInt64, math.MaxInt64)
		require.NoError(t, err)
		require.EqualValues(t, 60, n)
		c := dial(t, s, seqs[10])
		require.NoError(t, c.WaitLen(1+len(seqs)-60, 10*time.Second))
		evs := c.Events()
		require.Equal(t, "info", evs[0].Kind)
		require.Equal(t, "OutdatedCursor", evs[0].Name)
		require.Equal(t, fmt.Sprintf("events after cursor %d up to seq %d are no longer kept (trimmed, or lost before they were archived); replaying what is kept", seqs[10], seqs[59]), evs[0].Message)
		require.Equal(t, seqs[60:], c.Seqs())
	})
	t.Run("cursor above the newest seq gets FutureCursor and is closed", func(t *testing.T) {
		c := dial(t, s, seqs[len(seqs)-1]+1000)
		select {
		case <-c.Done():
		case <-time.After(5 * time.Second):
			t.Fatal("connection not closed")
		}
		evs := c.Events()
		require.Len(t, evs, 1)
		require.Equal(t, "error", evs[0].Kind)
		require.Equal(t, "FutureCursor", evs[0].Name)
	})
	t.Run("cursor at the newest seq is live", func(t *testing.T) {
		c := dial(t, s, seqs[len(seqs)-1])
		waitSubscribers(t, s, 1)
		more := s.append(3)
		require.NoError(t, c.WaitLen(3, 10*time.Second))
		require.Equal(t, more, c.Seqs())
		seqs = append(seqs, more...)
	})
	for bad, says := range map[string]string{"abc": "non-negative integer", "-5": "non-negative integer", "1.5": "non-negative integer", "99999999999999999999": "out of range"} {
		t.Run("bad cursor "+bad+" is HTTP 400", func(t *testing.T) {
			resp, err := http.Get(s.url + "/xrpc/com.atproto.sync.subscribeRepos?cursor=" + bad)
			require.NoError(t, err)
			defer resp.Body.Close()
			require.Equal(t, http.StatusBadRequest, resp.StatusCode)
			var body map[string]string
			require.NoError(t, json.NewDecoder(resp.Body).Decode(&body))
			require.Equal(t, "InvalidRequest", body["error"])
			require.Contains(t, body["message"], "cursor")
			require.Contains(t, body["message"], says)
		})
	}
}

// A consumer connecting with a cursor while 2,000 events/s are appended
// gets every seq after its cursor exactly once, in order.
func TestSubscribe_HandOverUnderLoad(t *testing.T) {
	s := newStack(t, fanout.Config{})
	frames := s.gen.frames(6000)
	all := make(chan []int64, 1)
	go func() {
		var seqs []int64
		tick := time.NewTicker(10 * time.Millisecond) // 20 frames per tick = 2,000/s
		defer tick.Stop()
		for i := 0; i < len(frames); i += 20 {
			<-tick.C
			seqs = append(seqs, s.appendFrames(frames[i:i+20])...)
		}
		all <- seqs
	}()
	// connect once the log holds well over 500 appended events
	var b cursor.Bounds
	require.Eventually(t, func() bool {
		var err error
		b, err = s.log.Bounds(context.Background())
		return err == nil && b.Length >= int64(len(s.base))+1000
	}, 30*time.Second, 5*time.Millisecond)
	from := b.Last - 500 // replay ~500, then hand over while appends go on
	c := dial(t, s, from)
	seqs := <-all
	seqs = append(seqs, s.append(1)...) // a marker: all sent before it is in once it is
	var want []int64
	for _, q := range seqs {
		if q > from {
			want = append(want, q)
		}
	}
	require.NoError(t, c.WaitLen(len(want), 30*time.Second))
	got := c.Seqs()
	require.Equal(t, len(want), len(got), "no gap, no duplicate")
	require.Equal(t, want, got)
}

func p99(d []time.Duration) time.Duration {
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	return d[len(d)*99/100]
}

// waitSubscribers waits until n subscribers are open and the broadcaster
// delivers to all of them.
func waitSubscribers(t *testing.T, s *stack, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for s.srv.Subscribers() != n || s.srv.Joined() != n {
		if time.Now().After(deadline) {
			t.Fatalf("%d subscribers, %d of them live; want %d", s.srv.Subscribers(), s.srv.Joined(), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A session that is over but for its close (here a FutureCursor whose
// client reads the error and never answers the close) holds no
// --max-subscribers slot while it waits for the peer: with one slot, the
// next subscriber gets in at once instead of HTTP 503 for up to 4 s.
func TestSubscribe_ClosingSessionHoldsNoSlot(t *testing.T) {
	s := newStack(t, fanout.Config{MaxSubscribers: 1})
	c := dialTinyBuffer(t, s.url, fmt.Sprintf("?cursor=%d", s.base[len(s.base)-1]+1000))
	defer c.Close()
	_, b, err := c.ReadMessage()
	require.NoError(t, err)
	ev, err := frame.Parse(b, 0)
	require.NoError(t, err)
	require.Equal(t, frame.ErrNameFutureCursor, ev.Name)
	// c reads no further: pdsmux's close frame waits unanswered

	// the slot was given back before the error frame was written
	require.Zero(t, s.srv.Subscribers(), "the closing session still holds its slot")
	live := dial(t, s, -1)
	waitSubscribers(t, s, 1)
	more := s.append(2)
	require.NoError(t, live.WaitLen(2, 10*time.Second))
	require.Equal(t, more, live.Seqs())
}

// Sessions that wait for their peer's close are bounded too: beyond
// --max-subscribers of them, a session's socket is closed as soon as its
// close frame is written. Without the bound, clients that never answer a
// close could hold any number of sockets open for up to 8 s each.
func TestSubscribe_LingeringSessionsAreBounded(t *testing.T) {
	s := newStack(t, fanout.Config{MaxSubscribers: 1})
	future := fmt.Sprintf("?cursor=%d", s.base[len(s.base)-1]+1000)
	a := dialTinyBuffer(t, s.url, future)
	defer a.Close()
	_, _, err := a.ReadMessage() // its FutureCursor; a reads no further
	require.NoError(t, err)
	require.Eventually(t, func() bool { return s.srv.Lingering() == 1 }, 10*time.Second, 5*time.Millisecond)

	b := dialTinyBuffer(t, s.url, future)
	defer b.Close()
	b.SetCloseHandler(func(int, string) error { return nil }) // b never answers either
	_, _, err = b.ReadMessage()
	require.NoError(t, err)
	var ce *websocket.CloseError
	_, _, err = b.ReadMessage()
	require.ErrorAs(t, err, &ce)
	require.Equal(t, websocket.ClosePolicyViolation, ce.Code)
	// the server closes b's socket (gorilla keeps answering the close
	// error itself, so read the socket under it)
	raw := b.UnderlyingConn()
	require.NoError(t, raw.SetReadDeadline(time.Now().Add(30*time.Second)))
	_, err = raw.Read(make([]byte, 1))
	require.ErrorIs(t, err, io.EOF)
	// b's socket was closed while a still waits (4 s from its close): b
	// did not linger (had it, a's wait would have ended before b's)
	require.EqualValues(t, 1, s.srv.Lingering())
}
