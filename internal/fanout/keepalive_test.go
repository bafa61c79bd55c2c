package fanout_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/require"

	"github.com/pdsmux/pdsmux/internal/fanout"
	"github.com/pdsmux/pdsmux/internal/frame"
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
}
