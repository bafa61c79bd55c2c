package fanout_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/pdsmux/pdsmux/internal/cursor"
	"github.com/pdsmux/pdsmux/internal/fakepds"
	"github.com/pdsmux/pdsmux/internal/fanout"
	"github.com/pdsmux/pdsmux/internal/frame"
	"github.com/pdsmux/pdsmux/internal/testutil"
	"github.com/pdsmux/pdsmux/internal/testutil/redisserver"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// stack is a real Redis log with a broadcaster and server in front.
type stack struct {
	t     *testing.T
	redis *redisserver.Server
	log   *cursor.Log
	srv   *fanout.Server
	url   string
	gen   *gen
	base  []int64              // seqs of the accounts' creation #sync events
	reg   *prometheus.Registry // the fanout's metrics (newStack only)
	logs  *logBuffer           // the fanout's log, debug and up (newStack only)
}

// logBuffer is a log output tests can read while it is written.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func newStack(t *testing.T, cfg fanout.Config) *stack {
	return newStackOn(t, cfg, nil, testutil.Listen(t))
}

// newGatedStack is a stack whose broadcaster waits for keeper.
func newGatedStack(t *testing.T, cfg fanout.Config, keeper fanout.Keeper) *stack {
	return newStackOn(t, cfg, keeper, testutil.Listen(t))
}

// newStackOn is a stack serving on ln; keeper may be nil.
func newStackOn(t *testing.T, cfg fanout.Config, keeper fanout.Keeper, ln net.Listener) *stack {
	t.Helper()
	rs := redisserver.Start(t, redisserver.Options{})
	l, err := cursor.New(rs.Client(), cursor.Config{}, nil, quiet)
	require.NoError(t, err)
	_, err = l.Reconcile(context.Background(), cursor.DurableState{}, false)
	require.NoError(t, err)
	reg := prometheus.NewRegistry()
	m := fanout.NewMetrics(reg)
	logs := &logBuffer{}
	logger := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	bc := fanout.NewBroadcaster(l, keeper, m, logger)
	srv := fanout.NewServer(cfg, l, nil, bc, nil, m, logger)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = bc.Run(ctx); close(done) }()
	hs := &http.Server{Handler: srv}
	go func() { _ = hs.Serve(ln) }()
	t.Cleanup(func() {
		cctx, ccancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer ccancel()
		_ = srv.Close(cctx)
		_ = hs.Close()
		cancel()
		<-done
	})
	st := &stack{t: t, redis: rs, log: l, srv: srv, url: "http://" + ln.Addr().String(), gen: newGen(t, 20), reg: reg, logs: logs}
	st.base = st.appendFrames(st.gen.syncs)
	return st
}

// gen makes real signed commit frames for a few accounts.
type gen struct {
	t        *testing.T
	accounts []*fakepds.Account
	syncs    [][]byte
	n        int
	useq     int64
	mu       sync.Mutex
}

func newGen(t *testing.T, accounts int) *gen {
	g := &gen{t: t}
	for i := range accounts {
		a, sync, err := fakepds.NewAccount(fmt.Sprintf("u%d.test", i), time.Now())
		require.NoError(t, err)
		g.accounts = append(g.accounts, a)
		g.useq++
		sync.Seq = g.useq
		b, err := frame.Encode(frame.TypeSync, sync)
		require.NoError(t, err)
		g.syncs = append(g.syncs, b)
	}
	return g
}

// frames makes n commit frames, round-robin over the accounts.
func (g *gen) frames(n int) [][]byte {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make([][]byte, 0, n)
	for range n {
		a := g.accounts[g.n%len(g.accounts)]
		g.n++
		ev, err := a.Apply([]fakepds.Op{{Action: "create", Collection: "app.bsky.feed.post", Rkey: fmt.Sprintf("r%07d", g.n), Record: fakepds.Post("x", time.Now())}}, time.Now())
		require.NoError(g.t, err)
		g.useq++
		ev.Seq = g.useq
		b, err := frame.Encode(frame.TypeCommit, ev)
		require.NoError(g.t, err)
		out = append(out, b)
	}
	return out
}

// appendFrames appends frames in batches and returns their seqs.
func (s *stack) appendFrames(frames [][]byte) []int64 {
	s.t.Helper()
	var seqs []int64
	for len(frames) > 0 {
		n := min(len(frames), 200)
		evs := make([]cursor.Event, n)
		for i, b := range frames[:n] {
			in, err := frame.Parse(b, 0)
			require.NoError(s.t, err)
			evs[i], err = cursor.NewEvent(b, &in)
			require.NoError(s.t, err)
		}
		res, err := s.log.Append(context.Background(), "gen", -1, evs)
		require.NoError(s.t, err)
		for _, r := range res.Results {
			require.Equal(s.t, cursor.Appended, r.Outcome)
			seqs = append(seqs, r.Seq)
		}
		frames = frames[n:]
	}
	return seqs
}

func (s *stack) append(n int) []int64 { return s.appendFrames(s.gen.frames(n)) }

// tinySendBuffers makes every connection its listener accepts send
// through a 64 KiB kernel buffer: a subscriber's backlog then waits in
// pdsmux's writes, not in the kernel (which would take megabytes).
type tinySendBuffers struct{ net.Listener }

func (l tinySendBuffers) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		_ = c.(*net.TCPConn).SetWriteBuffer(64 << 10)
	}
	return c, err
}

// dialTinyBuffer subscribes at url (http://host:port), with query
// ("?cursor=N" or ""), on a socket with a 64 KiB receive buffer, for a
// consumer that stops reading: the kernel then holds little of what
// pdsmux sends it.
func dialTinyBuffer(t *testing.T, url, query string) *websocket.Conn {
	t.Helper()
	d := websocket.Dialer{NetDialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if err == nil {
			_ = c.(*net.TCPConn).SetReadBuffer(64 << 10)
		}
		return c, err
	}}
	c, _, err := d.Dial("ws"+strings.TrimPrefix(url, "http")+"/xrpc/com.atproto.sync.subscribeRepos"+query, nil)
	require.NoError(t, err)
	return c
}
