package pdsmuxd_test

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/require"

	"github.com/pdsmux/pdsmux/internal/fakepds"
	"github.com/pdsmux/pdsmux/internal/pdsmuxd"
	"github.com/pdsmux/pdsmux/internal/store"
	"github.com/pdsmux/pdsmux/internal/testutil"
	"github.com/pdsmux/pdsmux/internal/testutil/proc"
	"github.com/pdsmux/pdsmux/internal/testutil/redisserver"
)

// startProc runs the pdsmux binary and waits until it tails every replica.
func (e *env) startProc(name string, extra ...string) *proc.Proc {
	p, _ := e.startProcAt(name, extra...)
	return p
}

// startProcAt is startProc that also returns the base URL it serves on.
func (e *env) startProcAt(name string, extra ...string) (*proc.Proc, string) {
	e.t.Helper()
	listen := fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(e.t))
	metrics := fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(e.t))
	return e.startProcOn(name, listen, metrics, extra...)
}

// startProcOn runs pdsmux on the given addresses (a restart keeps its URL).
func (e *env) startProcOn(name, listen, metrics string, extra ...string) (*proc.Proc, string) {
	e.t.Helper()
	p := proc.Start(e.t, name, proc.Pdsmux(e.t), append(e.args(listen, metrics), extra...))
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		h, err := pdsmuxd.FetchHealth(context.Background(), "http://"+listen, time.Second)
		if err == nil {
			all := true
			for _, s := range h.Replicas {
				all = all && s == "connected"
			}
			if all && len(h.Replicas) == len(e.replicas) {
				return p, "http://" + listen
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	e.t.Fatalf("%s did not connect to every replica", name)
	return nil, ""
}

// writeInBackground writes n commits, pausing a little between them so a
// crash lands mid-stream.
func (e *env) writeInBackground(n int, seed uint64) *sync.WaitGroup {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; i < n; i += 50 {
			e.writeCommits(50, seed*1000+uint64(i))
			time.Sleep(5 * time.Millisecond)
		}
	}()
	return &wg
}

// waitWrites waits until the replicas have emitted n more events, or the
// writer wg has finished.
func waitWrites(t *testing.T, e *env, wg *sync.WaitGroup, n int64) {
	t.Helper()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	from := e.store.MaxSeq()
	require.Eventually(t, func() bool {
		select {
		case <-done:
			return true
		default:
			return e.store.MaxSeq() >= from+n
		}
	}, 30*time.Second, 5*time.Millisecond, "%d more events written", n)
}

// kill -9 of pdsmux mid-stream, then a restart: nothing lost, nothing doubled.
func TestCrash_KillNinePdsmuxMidStream(t *testing.T) {
	e := newEnv(t, fakepds.ModeOwn, 2, redisserver.Options{AppendFsync: "everysec"})
	e.store.Overlap = 0.3
	p := e.startProc("pdsmux-1")
	e.createAccounts(10)
	wg := e.writeInBackground(3000, 3)
	l := e.reader()
	waitLog(t, l, 1000, 60*time.Second)
	p.Kill()
	waitWrites(t, e, wg, 100) // writes go on while pdsmux is down
	e.startProc("pdsmux-2")
	wg.Wait()
	want, total := e.expected()
	waitLog(t, l, int64(total), 60*time.Second)
	checkLog(t, allEntries(t, l), want)
}

// Redis killed (AOF everysec) and restarted mid-stream: whatever the AOF
// lost is re-read from the replicas; nothing lost, nothing doubled.
func TestCrash_RedisRestartMidStream(t *testing.T) {
	e := newEnv(t, fakepds.ModeOwn, 2, redisserver.Options{AppendFsync: "everysec"})
	e.store.Overlap = 0.3
	run := e.start(e.config(), "pdsmux")
	waitConnected(t, run.rt)
	e.createAccounts(10)
	wg := e.writeInBackground(3000, 4)
	l := e.reader()
	waitLog(t, l, 1000, 60*time.Second)
	e.redis.Kill()
	waitRedisDown(t, run)
	waitSinkFailure(t, run) // writes go on while Redis is down
	e.redis.Restart()
	wg.Wait()
	want, total := e.expected()
	waitLog(t, l, int64(total), 60*time.Second)
	checkLog(t, allEntries(t, l), want)
}

// Redis loses writes it acknowledged while keeping its state (an AOF that
// missed its last second, a failover to a lagging replica), shown here by
// moving a replica's stored cursor back: the next append from that replica
// fails with cursor.ErrCursorRegressed, its tailer ends the session,
// pdsmuxd restores Redis from the durable checkpoint before the tailer
// reads its cursor again (the lost_writes reconcile), and the log still
// holds every (did, rev) once.
func TestCrash_RedisLosesAcknowledgedWrites(t *testing.T) {
	e := newEnv(t, fakepds.ModeOwn, 2, redisserver.Options{})
	run := e.start(e.mergeConfig(), "pdsmux")
	waitConnected(t, run.rt)
	e.createAccounts(6)
	e.writeCommits(200, 7)
	_, total := e.expected()
	l := e.reader()
	waitLog(t, l, int64(total), 30*time.Second)
	ctx := context.Background()
	before := testutil.Scrape(t, run.rt.MetricsAddr())["pdsmux_redis_reconciles_total{restored=true,trigger=lost_writes}"]
	stored, err := l.Cursor(ctx, e.replicas[0].Name)
	require.NoError(t, err)
	require.True(t, stored.OK)
	require.NoError(t, e.redis.Client().HSet(ctx, "{pdsmux}:cur", e.replicas[0].Name, stored.Stored/2).Err())

	e.writeCommits(100, 8) // replica r1's next append finds its cursor regressed
	want, total := e.expected()
	waitLog(t, l, int64(total), 30*time.Second)
	checkLog(t, allEntries(t, l), want)
	require.Eventually(t, func() bool {
		m := testutil.Scrape(t, run.rt.MetricsAddr())
		return m["pdsmux_redis_reconciles_total{restored=true,trigger=lost_writes}"]+
			m["pdsmux_redis_reconciles_total{restored=false,trigger=lost_writes}"] > before
	}, 10*time.Second, 50*time.Millisecond, "the tailer's regression error led to a reconcile")
	require.Contains(t, readLog(t, "pdsmux"), "restoring it before reconnecting")
}

// SIGTERM: pdsmux stops accepting, tells subscribers it is going away
// (close 1001), flushes the archive and exits 0 well within a compose stop
// grace period.
func TestShutdown_SIGTERMIsGraceful(t *testing.T) {
	t.Parallel()
	e := newEnv(t, fakepds.ModeOwn, 1, redisserver.Options{AppendFsync: "everysec"})
	listen := fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t))
	metrics := fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t))
	p, base := e.startProcOn("pdsmux", listen, metrics)
	e.createAccounts(2)
	e.writeCommits(300, 91)
	_, total := e.expected()
	l := e.reader()
	waitLog(t, l, int64(total), 30*time.Second)
	url := "ws" + strings.TrimPrefix(base, "http") + "/xrpc/com.atproto.sync.subscribeRepos"
	conn, _, err := websocket.DefaultDialer.Dial(url, nil)
	require.NoError(t, err)
	defer conn.Close()
	require.Eventually(t, func() bool { return testutil.Scrape(t, metrics)["pdsmux_subscribers"] == 1 },
		10*time.Second, 10*time.Millisecond, "the subscriber is served")

	start := time.Now()
	p.Signal(syscall.SIGTERM)
	var closeErr *websocket.CloseError
	for {
		_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, _, err := conn.ReadMessage(); err != nil {
			require.ErrorAs(t, err, &closeErr)
			break
		}
	}
	require.Equal(t, websocket.CloseGoingAway, closeErr.Code)
	require.True(t, p.Wait(10*time.Second), "pdsmux exits after SIGTERM")
	require.NoError(t, p.Err(), "exit status 0")
	t.Logf("shut down in %s", time.Since(start).Round(time.Millisecond))

	st, err := store.Open(context.Background(), "file:"+filepath.Join(e.dir, "pdsmux.db"), "")
	require.NoError(t, err)
	defer st.Close()
	hw, err := st.HighWater(context.Background())
	require.NoError(t, err)
	entries := allEntries(t, l)
	require.Equal(t, entries[len(entries)-1].Seq, hw, "the archive was flushed before exit")
	require.Contains(t, p.Output(), "pdsmux starting")
	require.Regexp(t, `level=INFO msg=stopped reason="terminated signal received"`, p.Output(), "says it stopped, and why")
}

// bigPosts writes n posts of about 8 KB through the replicas: a log whose
// replay outlasts the kernel's socket buffers. The i-th post of the env
// (from 0, across calls) goes to account i mod the accounts, rkey
// big%05d.
func (e *env) bigPosts(n int) {
	e.t.Helper()
	text := strings.Repeat("a long post to make the replay outlast the socket buffers. ", 140)
	for range n {
		i := e.bigN
		e.bigN++
		a := e.accounts[i%len(e.accounts)]
		_, _, err := e.replicas[i%len(e.replicas)].Write(a.DID, fakepds.Op{Action: "create", Collection: "app.bsky.feed.post",
			Rkey: fmt.Sprintf("big%05d", i), Record: fakepds.Post(text, time.Now())})
		require.NoError(e.t, err)
	}
}

// SIGTERM while a subscriber is in the middle of a replay: the replay
// stops, the subscriber gets a going-away close frame (1001) after fewer
// frames than the log holds, and the process exits 0.
func TestShutdown_SIGTERMDuringReplay(t *testing.T) {
	e := newEnv(t, fakepds.ModeOwn, 1, redisserver.Options{})
	p, base := e.startProcAt("pdsmux")
	e.createAccounts(2)
	e.bigPosts(3000) // about 25 MB of frames
	_, total := e.expected()
	waitLog(t, e.reader(), int64(total), 60*time.Second)
	url := "ws" + strings.TrimPrefix(base, "http") + "/xrpc/com.atproto.sync.subscribeRepos?cursor=0"
	conn, _, err := websocket.DefaultDialer.Dial(url, nil)
	require.NoError(t, err)
	defer conn.Close()
	read := func() error {
		_ = conn.SetReadDeadline(time.Now().Add(15 * time.Second))
		_, _, err := conn.ReadMessage()
		return err
	}
	for range 20 {
		require.NoError(t, read())
	}
	p.Signal(syscall.SIGTERM)
	frames := 20
	var closeErr *websocket.CloseError
	for {
		err := read()
		if err != nil {
			require.ErrorAs(t, err, &closeErr)
			break
		}
		frames++
		time.Sleep(time.Millisecond) // a reader slower than the replay
	}
	require.Equal(t, websocket.CloseGoingAway, closeErr.Code)
	require.Less(t, frames, total, "the close came mid-replay")
	require.True(t, p.Wait(15*time.Second), "pdsmux exits after SIGTERM")
	require.NoError(t, p.Err(), "exit status 0")
	t.Logf("%d of %d frames replayed before the going-away close", frames, total)
}

// SIGTERM with a subscriber that stopped reading mid-replay, and a short
// shutdown timeout: Close cannot finish the subscribers' goodbye in time,
// and the exit status says so (Close's error is not lost behind Run's
// nil).
func TestShutdown_CloseErrorSetsExitStatus(t *testing.T) {
	e := newEnv(t, fakepds.ModeOwn, 1, redisserver.Options{})
	metrics := fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t))
	p, base := e.startProcOn("pdsmux", fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t)), metrics, "--shutdown-timeout", "1s")
	e.createAccounts(2)
	e.bigPosts(3000)
	_, total := e.expected()
	waitLog(t, e.reader(), int64(total), 60*time.Second)
	url := "ws" + strings.TrimPrefix(base, "http") + "/xrpc/com.atproto.sync.subscribeRepos?cursor=0"
	conn, _, err := websocket.DefaultDialer.Dial(url, nil)
	require.NoError(t, err)
	defer conn.Close()
	_, _, err = conn.ReadMessage() // then reads nothing more
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		return testutil.Scrape(t, metrics)["pdsmux_subscriber_frames_total{phase=replay}"] > 0
	}, 10*time.Second, 20*time.Millisecond)
	p.Signal(syscall.SIGTERM)
	require.True(t, p.Wait(15*time.Second), "pdsmux exits after SIGTERM")
	require.Error(t, p.Err(), "a non-zero exit status")
	require.Contains(t, p.Output(), "closing subscribers")
}
