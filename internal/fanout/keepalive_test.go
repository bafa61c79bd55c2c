package fanout_test

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/require"

	"github.com/pdsmux/pdsmux/internal/fanout"
	"github.com/pdsmux/pdsmux/internal/frame"
	tu "github.com/pdsmux/pdsmux/internal/testutil"
)

// A subscriber reading a long replay slowly is kept: with a 100 ms ping
// interval, a client taking one frame a millisecond off a 3,000-entry
// backlog (over 15 ping intervals) gets every entry, in order, and then
// live events, without being dropped. Pings go out during the replay,
// the client's own pings are answered during it, and every frame the
// client takes off the socket counts as a sign of life.
func TestSubscribe_SlowReplayIsNotCutOff(t *testing.T) {
	s := newStack(t, fanout.Config{PingInterval: 100 * time.Millisecond})
	backlog := s.append(3000)

	conn, _, err := websocket.DefaultDialer.Dial(strings.Replace(s.url, "http", "ws", 1)+
		"/xrpc/com.atproto.sync.subscribeRepos?cursor="+fmt.Sprint(s.base[len(s.base)-1]), nil)
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	pongs := make(chan struct{}, 16)
	conn.SetPongHandler(func(string) error {
		select {
		case pongs <- struct{}{}:
		default:
		}
		return nil
	})
	pings := 0
	conn.SetPingHandler(func(data string) error {
		pings++
		return conn.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(time.Second))
	})

	pace := time.NewTicker(time.Millisecond) // the client's reading speed
	defer pace.Stop()
	var got []int64
	var live []int64
	for len(got) < len(backlog)+10 {
		if len(got) == len(backlog)/2 {
			// the client pings mid-replay and expects an answer
			require.NoError(t, conn.WriteControl(websocket.PingMessage, []byte("hi"), time.Now().Add(time.Second)))
		}
		if len(got) == len(backlog) {
			live = s.append(10)
		}
		<-pace.C
		require.NoError(t, conn.SetReadDeadline(time.Now().Add(10*time.Second)))
		_, b, err := conn.ReadMessage()
		require.NoError(t, err, "dropped after %d of %d frames", len(got), len(backlog))
		in, err := frame.Parse(b, 0)
		require.NoError(t, err)
		require.Equal(t, frame.KindCommit, in.Kind)
		got = append(got, in.Seq)
	}
	require.Equal(t, append(backlog, live...), got)
	require.Greater(t, pings, 10, "pings went out during the replay")
	select {
	case <-pongs:
	default:
		t.Fatal("the client's ping during the replay was not answered")
	}
}

// A subscriber that answers no ping and sends nothing is still dropped,
// after two ping intervals when nothing it has not read is outstanding.
func TestSubscribe_SilentPeerIsDropped(t *testing.T) {
	s := newStack(t, fanout.Config{PingInterval: 100 * time.Millisecond})
	conn, _, err := websocket.DefaultDialer.Dial(strings.Replace(s.url, "http", "ws", 1)+"/xrpc/com.atproto.sync.subscribeRepos", nil)
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	// never reads: pings are not answered
	require.Eventually(t, func() bool { return s.srv.Subscribers() == 1 }, 5*time.Second, 10*time.Millisecond)
	require.Eventually(t, func() bool { return s.srv.Subscribers() == 0 }, 5*time.Second, 10*time.Millisecond,
		"a peer that never answers must be dropped")
	// counted and logged like a write timing out (before, its read
	// deadline passing ended the session without a word)
	require.EqualValues(t, 1, tu.Value(t, s.reg, "pdsmux_subscriber_write_timeouts_total"))
	require.Contains(t, s.logs.String(), "dropped a subscriber that took nothing off its socket")
}

// A read the session needs failing mid-replay (Redis gone) ends it with
// an InternalError frame, a metric and a log line naming the error: the
// subscriber knows to reconnect with its cursor, and what it was sent
// before is a prefix of the log (before, the socket was closed without a
// word, like a crash).
func TestSubscribe_ReadFailingMidReplayIsSaid(t *testing.T) {
	s := newStack(t, fanout.Config{})
	backlog := s.append(1500) // three replay reads of 500
	conn, _, err := websocket.DefaultDialer.Dial(strings.Replace(s.url, "http", "ws", 1)+
		"/xrpc/com.atproto.sync.subscribeRepos?cursor="+fmt.Sprint(s.base[len(s.base)-1]), nil)
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	var got []int64
	for {
		require.NoError(t, conn.SetReadDeadline(time.Now().Add(30*time.Second)))
		_, b, err := conn.ReadMessage()
		require.NoError(t, err, "the session ends with an error frame, after %d frames", len(got))
		in, err := frame.Parse(b, 0)
		require.NoError(t, err)
		if in.Kind == frame.KindError {
			require.Equal(t, "InternalError", in.Name)
			break
		}
		got = append(got, in.Seq)
		if len(got) == 1 {
			s.redis.Kill() // the replay's next read of the log fails
		}
	}
	require.Less(t, len(got), len(backlog), "the replay did not finish")
	require.Equal(t, backlog[:len(got)], got, "what was sent is the log's prefix, in order")
	require.EqualValues(t, 1, tu.Value(t, s.reg, "pdsmux_subscriber_read_errors_total"))
	require.Contains(t, s.logs.String(), "a read it needed failed")
}

// stream reads frames off a subscriber's socket, counting seqs and
// (did, rev). Reading, it answers pdsmux's pings.
type stream struct {
	t     *testing.T
	conn  *websocket.Conn
	rate  int       // bytes/s the reader takes from its first frame on; 0: as fast as it can
	start time.Time // the first frame's arrival
	bytes int
	seqs  []int64
	revs  map[[2]string]int
}

func newStream(t *testing.T, conn *websocket.Conn, rate int) *stream {
	return &stream{t: t, conn: conn, rate: rate, revs: map[[2]string]int{}}
}

// read takes n commit frames, at r.rate when set. It may run on a
// goroutine of its own (it does not fail the test itself).
func (r *stream) read(n int) error {
	for range n {
		if err := r.conn.SetReadDeadline(time.Now().Add(30 * time.Second)); err != nil {
			return err
		}
		_, b, err := r.conn.ReadMessage()
		if err != nil {
			return fmt.Errorf("cut after %d frames (%d bytes in %s): %w", len(r.seqs), r.bytes, time.Since(r.start).Round(time.Millisecond), err)
		}
		if r.start.IsZero() {
			r.start = time.Now()
		}
		in, err := frame.Parse(b, 0)
		if err != nil || in.Kind != frame.KindCommit {
			return fmt.Errorf("frame %d: kind %v, %v", len(r.seqs), in.Kind, err)
		}
		r.seqs = append(r.seqs, in.Seq)
		r.revs[[2]string{in.DID, in.Rev}]++
		r.bytes += len(b)
		if r.rate > 0 {
			if ahead := time.Duration(r.bytes)*time.Second/time.Duration(r.rate) - time.Since(r.start); ahead > 0 {
				time.Sleep(ahead) // the reader's speed
			}
		}
	}
	return nil
}

// check asserts the stream was want: every seq once, in order, and every
// (did, rev) once.
func (r *stream) check(want []int64) {
	r.t.Helper()
	require.Equal(r.t, want, r.seqs, "every seq once, in order")
	require.Len(r.t, r.revs, len(want), "a (did, rev) per seq")
	for k, n := range r.revs {
		require.Equal(r.t, 1, n, "(did, rev) %v once", k)
	}
}

// A replaying subscriber that stops reading for one ping interval (half
// its liveness window: its own database stalls) while pdsmux's writes to
// it wait is kept: it then gets every seq and every (did, rev) once, and
// no write timed out. A write waits as long as the peer may show no sign
// of life, not a fixed time.
func TestSubscribe_ReaderPausingWithinItsLivenessWindowIsKept(t *testing.T) {
	const ping = time.Second
	s := newStackOn(t, fanout.Config{PingInterval: ping}, nil, tinySendBuffers{tu.Listen(t)})
	backlog := s.append(2000) // far more than the kernels' socket buffers hold
	conn := dialTinyBuffer(t, s.url, "?cursor="+fmt.Sprint(s.base[len(s.base)-1]))
	t.Cleanup(func() { conn.Close() })
	r := newStream(t, conn, 0)
	require.NoError(t, r.read(100))
	time.Sleep(ping) // the pause is the subject
	require.Less(t, tu.Value(t, s.reg, "pdsmux_subscriber_frames_total", "phase", "replay"), float64(len(backlog)),
		"pdsmux's writes waited during the pause")
	require.NoError(t, r.read(len(backlog)-100))
	r.check(backlog)
	require.Zero(t, tu.Value(t, s.reg, "pdsmux_subscriber_write_timeouts_total"))
}

// A subscriber that stops reading is cut once a write to it has waited
// for its liveness window (two ping intervals, plus the time a reader at
// 64 KiB/s needs for the write), in replay and live alike, however much
// is queued for it: a live backlog is written in bounded chunks, each
// with its own deadline. Its process stays alive (it pings every 50 ms,
// a sign of life that keeps its read deadline away), so only the writes
// can tell. The cut is counted and logged; it is not a queue overflow
// (ConsumerTooSlow).
func TestSubscribe_StalledReaderIsCutAfterItsLivenessWindow(t *testing.T) {
	const ping = 200 * time.Millisecond
	for _, phase := range []string{"replay", "live"} {
		t.Run(phase, func(t *testing.T) {
			t.Parallel()
			s := newStackOn(t, fanout.Config{PingInterval: ping, QueueLen: 100_000, QueueBytes: 1 << 30}, nil, tinySendBuffers{tu.Listen(t)})
			frames := s.gen.frames(2000) // far more than the kernels' socket buffers hold
			query := ""
			if phase == "replay" {
				query = "?cursor=" + fmt.Sprint(s.base[len(s.base)-1])
				s.appendFrames(frames)
			}
			conn := dialTinyBuffer(t, s.url, query)
			t.Cleanup(func() { conn.Close() })
			stop := make(chan struct{})
			defer close(stop)
			go func() {
				tick := time.NewTicker(50 * time.Millisecond)
				defer tick.Stop()
				for {
					select {
					case <-stop:
						return
					case <-tick.C:
						if conn.WriteControl(websocket.PingMessage, nil, time.Now().Add(time.Second)) != nil {
							return
						}
					}
				}
			}()
			if phase == "live" {
				waitSubscribers(t, s, 1)
				s.appendFrames(frames)
			}
			start := time.Now()
			require.Eventually(t, func() bool { return s.srv.Subscribers() == 0 }, 15*time.Second, 10*time.Millisecond,
				"the stalled subscriber is cut")
			t.Logf("%s: cut %s after the backlog was in the log", phase, time.Since(start).Round(time.Millisecond))
			require.EqualValues(t, 1, tu.Value(t, s.reg, "pdsmux_subscriber_write_timeouts_total"))
			require.Zero(t, tu.Value(t, s.reg, "pdsmux_subscriber_too_slow_total"))
			require.Contains(t, s.logs.String(), "dropped a subscriber that took nothing off its socket for its liveness window")
		})
	}
}

// A live subscriber reading steadily at 256 KiB/s (four times the
// slowest reader presumed alive) takes a burst that fits its queue but
// takes far longer to write than its liveness window (two 100 ms ping
// intervals): it gets every seq and every (did, rev) once, never cut.
func TestSubscribe_SteadyReaderTakesALiveBurst(t *testing.T) {
	s := newStackOn(t, fanout.Config{PingInterval: 100 * time.Millisecond}, nil, tinySendBuffers{tu.Listen(t)})
	var frames [][]byte
	size := 0
	for size < 768<<10 { // three times what the kernels' buffers hold here
		for _, b := range s.gen.frames(100) {
			frames = append(frames, b)
			size += len(b)
		}
	}
	conn := dialTinyBuffer(t, s.url, "")
	t.Cleanup(func() { conn.Close() })
	r := newStream(t, conn, 256<<10)
	read := make(chan error, 1)
	go func() { read <- r.read(len(frames)) }() // from the upgrade on: it answers pings
	waitSubscribers(t, s, 1)
	want := s.appendFrames(frames)
	require.NoError(t, <-read)
	t.Logf("burst: %d frames, %d bytes, read in %s", len(frames), size, time.Since(r.start).Round(time.Millisecond))
	r.check(want)
	require.Zero(t, tu.Value(t, s.reg, "pdsmux_subscriber_write_timeouts_total"))
	require.Zero(t, tu.Value(t, s.reg, "pdsmux_subscriber_too_slow_total"))
}

// A subscriber that goes away mid-replay (a relay killed: its kernel
// resets the connection) is no read error: nothing is counted or logged
// as one (before, a write failing on the reset socket was reported as a
// failed read of the log, at warn).
func TestSubscribe_PeerResettingMidReplayIsNoReadError(t *testing.T) {
	// small socket buffers both ways: the writer is in the middle of a
	// write when the reset comes
	s := newStackOn(t, fanout.Config{}, nil, tinySendBuffers{tu.Listen(t)})
	s.append(3000)
	for range 5 {
		conn := dialTinyBuffer(t, s.url, "?cursor="+fmt.Sprint(s.base[len(s.base)-1]))
		for range 100 {
			_, _, err := conn.ReadMessage()
			require.NoError(t, err)
		}
		require.NoError(t, conn.UnderlyingConn().(*net.TCPConn).SetLinger(0)) // close with a reset
		require.NoError(t, conn.Close())
		require.Eventually(t, func() bool { return s.srv.Subscribers() == 0 }, 10*time.Second, 10*time.Millisecond)
	}
	require.Zero(t, tu.Value(t, s.reg, "pdsmux_subscriber_read_errors_total"))
	require.NotContains(t, s.logs.String(), "a read it needed failed")
}

// A server shutting down while a slow reader replays a backlog that
// fills the socket buffers gives it the going-away close (1001) once it
// has read what was sent before: the close frame waits its turn, and the
// socket is not closed under the peer's own close (before, the client
// got a connection reset after a 1 s close deadline: the reset discarded
// the frames it had not read, the close frame with them).
func TestSubscribe_ShutdownGivesASlowReaderGoingAway(t *testing.T) {
	// frequent pings: the reader's pongs keep coming after the close
	s := newStack(t, fanout.Config{PingInterval: 100 * time.Millisecond})
	s.append(4000)
	conn, _, err := websocket.DefaultDialer.Dial(strings.Replace(s.url, "http", "ws", 1)+
		"/xrpc/com.atproto.sync.subscribeRepos?cursor="+fmt.Sprint(s.base[len(s.base)-1]), nil)
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	closed := make(chan error, 1)
	pace := time.NewTicker(time.Millisecond)
	defer pace.Stop()
	frames := 0
	for {
		<-pace.C
		require.NoError(t, conn.SetReadDeadline(time.Now().Add(30*time.Second)))
		_, _, err := conn.ReadMessage()
		if err != nil {
			var ce *websocket.CloseError
			require.ErrorAs(t, err, &ce, "after %d frames", frames)
			require.Equal(t, websocket.CloseGoingAway, ce.Code)
			break
		}
		frames++
		if frames == 200 {
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
				defer cancel()
				closed <- s.srv.Close(ctx)
			}()
		}
	}
	require.NoError(t, <-closed, "the server closed within its context")
	t.Logf("going-away close after %d frames", frames)
}
