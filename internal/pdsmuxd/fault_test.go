package pdsmuxd_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/pdsmux/pdsmux/internal/fakepds"
	"github.com/pdsmux/pdsmux/internal/pdsmuxd"
	"github.com/pdsmux/pdsmux/internal/testutil"
	"github.com/pdsmux/pdsmux/internal/testutil/consumer"
	"github.com/pdsmux/pdsmux/internal/testutil/faultproxy"
	"github.com/pdsmux/pdsmux/internal/testutil/libsqlserver"
	"github.com/pdsmux/pdsmux/internal/testutil/redisserver"
)

// follow subscribes a reconnecting consumer (like a relay) from the start.
func follow(t *testing.T, bases ...string) *consumer.Follower {
	ctx, cancel := context.WithCancel(context.Background())
	f := consumer.Follow(ctx, bases, 0)
	t.Cleanup(func() { cancel(); <-f.Done() })
	return f
}

// checkConsumer waits until the consumer has every wanted (did, rev), then
// asserts each arrived exactly once and seq strictly increased across
// every session and every loss.
func checkConsumer(t *testing.T, f *consumer.Follower, want map[key]bool, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	var missing []key
	for {
		got := map[key]bool{}
		for _, e := range f.Events() {
			if e.Kind == "commit" || e.Kind == "sync" {
				got[key{e.DID, e.Rev}] = true
			}
		}
		missing = missing[:0]
		for k := range want {
			if !got[k] {
				missing = append(missing, k)
			}
		}
		if len(missing) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	sort.Slice(missing, func(i, j int) bool { return missing[i].rev < missing[j].rev })
	require.Empty(t, missing, "(did, rev) never reached the consumer")
	time.Sleep(300 * time.Millisecond) // anything doubled would arrive now
	seen := map[key]int{}
	var prev int64
	var doubled []key
	for _, e := range f.Events() {
		if e.Seq == 0 {
			continue
		}
		require.Greater(t, e.Seq, prev, "seq strictly increasing at the consumer")
		prev = e.Seq
		if e.Kind == "commit" || e.Kind == "sync" {
			k := key{e.DID, e.Rev}
			if seen[k]++; seen[k] == 2 {
				doubled = append(doubled, k)
			}
		}
	}
	require.Empty(t, doubled, "(did, rev) doubled at the consumer")
	t.Logf("consumer: %d distinct (did, rev), each once, seq increasing, over %d sessions", len(seen), f.Sessions())
}

// redisLossMidStream runs writes through pdsmux, lets lose() take Redis's
// data away mid-stream, and checks that a consumer that stays subscribed
// sees every event exactly once, with seq increasing across the loss, and
// that pdsmux restored from the libsql checkpoint (in dbURL when set, else
// the embedded file).
func redisLossMidStream(t *testing.T, ro redisserver.Options, seed uint64, dbURL string, lose func(e *env)) {
	e := newEnv(t, fakepds.ModeOwn, 2, ro)
	e.store.Overlap = 0.3
	cfg := e.mergeConfig()
	if dbURL != "" {
		cfg.DBURL = dbURL
	}
	run := e.start(cfg, "pdsmux")
	waitConnected(t, run.rt)
	f := follow(t, "http://"+run.rt.Addr())
	e.createAccounts(10)
	wg := e.writeInBackground(3000, seed)
	waitLog(t, e.reader(), 1000, 60*time.Second)
	lose(e)
	wg.Wait()
	want, _ := e.expected()
	checkConsumer(t, f, want, 60*time.Second)
	require.Contains(t, readLog(t, "pdsmux"), "restored Redis from the durable checkpoint")
}

// Redis FLUSHALL mid-stream.
func TestFault_RedisFlushAllMidStream(t *testing.T) {
	redisLossMidStream(t, redisserver.Options{}, 21, "", func(e *env) {
		require.NoError(t, e.redis.Client().FlushAll(context.Background()).Err())
	})
}

// The same with the checkpoint and archive on a libsql server (the
// Turso/sqld deployment) instead of the embedded file.
func TestFault_RedisFlushAllWithRemoteLibsql(t *testing.T) {
	srv := libsqlserver.Start(t)
	redisLossMidStream(t, redisserver.Options{}, 23, srv.URL, func(e *env) {
		require.NoError(t, e.redis.Client().FlushAll(context.Background()).Err())
	})
}

// Redis killed and restarted with appendfsync no and its AOF deleted:
// everything in Redis is gone at once.
func TestFault_RedisRestartedEmptyMidStream(t *testing.T) {
	redisLossMidStream(t, redisserver.Options{AppendFsync: "no"}, 22, "", func(e *env) {
		e.redis.Kill()
		e.redis.RemoveAOF()
		time.Sleep(300 * time.Millisecond)
		e.redis.Restart()
	})
}

// writeUntil writes n commits every interval until stop is closed.
func (e *env) writeUntil(stop <-chan struct{}, n int, every time.Duration, seed uint64) *sync.WaitGroup {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := uint64(0); ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(every):
			}
			e.writeCommits(n, seed*100000+i)
		}
	}()
	return &wg
}

// The network to Redis cut for 10 s, to one replica for 60 s, then 200 ms
// of latency on both for a minute, all while writes go on: nothing is
// lost, the lag recovers, and the metrics show each outage.
func TestFault_NetworkCutsAndLatency(t *testing.T) {
	e := newEnv(t, fakepds.ModeOwn, 2, redisserver.Options{AppendFsync: "everysec"})
	rp := faultproxy.Start(t, e.redis.Addr())
	r1p := faultproxy.Start(t, strings.TrimPrefix(e.replicas[0].URL(), "http://"))
	cfg := e.mergeConfig()
	cfg.RedisURL = "redis://" + rp.Addr() + "/0"
	cfg.Replicas[0] = "r1=http://" + r1p.Addr()
	cfg.HoldTimeout = 5 * time.Minute // commits chained on r1's wait out its outage
	cfg.ReplicaReadTimeout = 3 * time.Second
	run := e.start(cfg, "pdsmux")
	waitConnected(t, run.rt)
	maddr := run.rt.MetricsAddr()
	f := follow(t, "http://"+run.rt.Addr())
	e.createAccounts(10)
	stop := make(chan struct{})
	wg := e.writeUntil(stop, 5, 100*time.Millisecond, 31)

	time.Sleep(2 * time.Second)
	rp.Cut()
	require.Eventually(t, func() bool {
		h, ok := run.rt.CheckHealth(context.Background())
		return !ok && h.Reason == "redis does not answer"
	}, 10*time.Second, 100*time.Millisecond, "health reports the Redis outage")
	time.Sleep(10 * time.Second)
	rp.Restore()
	require.Eventually(t, func() bool { _, ok := run.rt.CheckHealth(context.Background()); return ok }, 30*time.Second, 100*time.Millisecond)

	r1p.Cut()
	require.Eventually(t, func() bool {
		m := testutil.Scrape(t, maddr)
		return m["pdsmux_replica_connected{replica=r1}"] == 0 && m["pdsmux_replica_connected{replica=r2}"] == 1
	}, 20*time.Second, 100*time.Millisecond, "the metrics show r1 down, r2 up")
	time.Sleep(60 * time.Second)
	r1p.Restore()

	rp.SetLatency(200 * time.Millisecond)
	r1p.SetLatency(200 * time.Millisecond)
	time.Sleep(60 * time.Second)
	rp.SetLatency(0)
	r1p.SetLatency(0)
	time.Sleep(2 * time.Second)
	close(stop)
	wg.Wait()

	want, _ := e.expected()
	checkConsumer(t, f, want, 90*time.Second)
	e.writeCommits(5, 99) // fresh events measure the lag now
	want, _ = e.expected()
	checkConsumer(t, f, want, 30*time.Second)
	m := testutil.Scrape(t, maddr)
	for _, r := range []string{"r1", "r2"} {
		require.Less(t, m["pdsmux_replica_lag_seconds{replica="+r+"}"], 1.0, "lag of %s recovered", r)
	}
	require.Greater(t, m["pdsmux_redis_append_errors_total"]+m["pdsmux_replica_reconnects_total{reason=sink,replica=r2}"], 0.0, "the Redis outage shows")
	require.Greater(t, m["pdsmux_replica_reconnects_total{reason=dial,replica=r1}"], 0.0, "the replica outage shows")
}

// kill -9 of pdsmux at 20 random moments of a 20,000-event run, each time
// restarted on the same address: the log and a consumer that reconnects
// with its cursor hold every (did, rev) exactly once.
func TestFault_KillNineTwentyTimes(t *testing.T) {
	e := newEnv(t, fakepds.ModeOwn, 2, redisserver.Options{AppendFsync: "everysec"})
	e.store.Overlap = 0.3
	listen := fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t))
	metrics := fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t))
	p, base := e.startProcOn("pdsmux-0", listen, metrics)
	f := follow(t, base)
	e.createAccounts(20)
	wg := e.writeInBackground(20_000, 41)
	rnd := rand.New(rand.NewPCG(41, 41))
	for i := 1; i <= 20; i++ {
		time.Sleep(time.Duration(100+rnd.IntN(300)) * time.Millisecond)
		p.Kill()
		p, _ = e.startProcOn(fmt.Sprintf("pdsmux-%d", i), listen, metrics)
	}
	wg.Wait()
	want, total := e.expected()
	l := e.reader()
	waitLog(t, l, int64(total), 120*time.Second)
	checkLog(t, allEntries(t, l), want)
	checkConsumer(t, f, want, 60*time.Second)
}

// waitArchived waits until the runtime has archived n events.
func waitArchived(t *testing.T, maddr string, n int) {
	t.Helper()
	require.Eventually(t, func() bool {
		return testutil.Scrape(t, maddr)["pdsmux_archive_events_total"] >= float64(n)
	}, 30*time.Second, 100*time.Millisecond, "archive holds %d events", n)
}

// A consumer whose cursor is older than Redis keeps (a relay back after
// days away) gets the libsql archive, then Redis, then live, without a gap.
func TestFault_OldCursorReplaysArchiveThenRedisThenLive(t *testing.T) {
	e := newEnv(t, fakepds.ModeOwn, 1, redisserver.Options{})
	run := e.start(e.mergeConfig(), "pdsmux")
	waitConnected(t, run.rt)
	e.createAccounts(5)
	e.writeCommits(500, 51)
	_, total := e.expected()
	l := e.reader()
	waitLog(t, l, int64(total), 30*time.Second)
	waitArchived(t, run.rt.MetricsAddr(), total)
	all := allEntries(t, l)

	// Redis ages out everything before the 400th entry.
	ctx := context.Background()
	require.NoError(t, e.redis.Client().ZAdd(ctx, "{pdsmux}:tidx", redis.Z{Member: all[400].Seq, Score: float64(time.Now().Add(-100 * time.Hour).UnixMilli())}).Err())
	n, err := l.Trim(ctx, time.Now(), archivedThrough(t, e))
	require.NoError(t, err)
	require.EqualValues(t, 400, n)

	c, _, err := consumer.Dial(ctx, "http://"+run.rt.Addr(), 0)
	require.NoError(t, err)
	t.Cleanup(c.Close)
	require.NoError(t, c.WaitLen(len(all), 30*time.Second))
	e.writeCommits(50, 52)
	_, total = e.expected()
	require.NoError(t, c.WaitLen(total, 30*time.Second))
	time.Sleep(200 * time.Millisecond)
	var want []int64
	for _, en := range all {
		want = append(want, en.Seq)
	}
	for _, en := range allEntries(t, l)[len(all)-400:] {
		want = append(want, en.Seq)
	}
	require.Equal(t, want, c.Seqs(), "archive, then Redis, then live, no gap, no repeat")
	require.NotEqual(t, "info", c.Events()[0].Kind, "the archive has it all: no OutdatedCursor")
	m := testutil.Scrape(t, run.rt.MetricsAddr())
	require.EqualValues(t, 400, m["pdsmux_subscriber_frames_total{phase=archive}"])
}

// The libsql file corrupt at start is a clear error naming the file; a
// deleted file is rebuilt from Redis, and seq never goes back.
func TestFault_LibsqlFileCorruptOrDeleted(t *testing.T) {
	e := newEnv(t, fakepds.ModeOwn, 1, redisserver.Options{})
	cfg := e.mergeConfig()
	path := strings.TrimPrefix(cfg.DBURL, "file:")

	run := e.start(cfg, "pdsmux-a")
	waitConnected(t, run.rt)
	e.createAccounts(3)
	e.writeCommits(300, 61)
	_, total := e.expected()
	l := e.reader()
	waitLog(t, l, int64(total), 30*time.Second)
	waitArchived(t, run.rt.MetricsAddr(), total)
	run.stop()
	before := allEntries(t, l)

	require.NoError(t, os.WriteFile(path, []byte("not a database at all, just some text"), 0o644))
	for _, suffix := range []string{"-wal", "-shm"} {
		_ = os.Remove(path + suffix)
	}
	_, err := pdsmuxd.Build(context.Background(), cfg, pdsmuxd.Options{Listener: testutil.Listen(t), MetricsListener: testutil.Listen(t)})
	require.Error(t, err)
	require.Contains(t, err.Error(), path, "the error names the file")
	require.ErrorIs(t, err, pdsmuxd.ErrConfig)

	require.NoError(t, os.Remove(path))
	run = e.start(cfg, "pdsmux-b")
	waitConnected(t, run.rt)
	waitArchived(t, run.rt.MetricsAddr(), total) // rebuilt from what Redis holds
	e.writeCommits(50, 62)
	want, total := e.expected()
	waitLog(t, l, int64(total), 30*time.Second)
	entries := allEntries(t, l)
	checkLog(t, entries, want)
	require.Greater(t, entries[len(entries)-1].Seq, before[len(before)-1].Seq)
}

// Two pdsmux on one Redis and one libsql file (an HA pair); one is killed
// at random mid-stream and the other goes on. A consumer that reconnects
// to whichever answers sees every (did, rev) exactly once.
func TestFault_HAPairOneKilled(t *testing.T) {
	e := newEnv(t, fakepds.ModeOwn, 2, redisserver.Options{AppendFsync: "everysec"})
	e.store.Overlap = 0.3
	a, baseA := e.startProcAt("pdsmux-a")
	_, baseB := e.startProcAt("pdsmux-b")
	f := follow(t, baseA, baseB)
	e.createAccounts(10)
	wg := e.writeInBackground(6000, 71)
	rnd := rand.New(rand.NewPCG(71, 71))
	time.Sleep(time.Duration(500+rnd.IntN(1500)) * time.Millisecond)
	a.Kill()
	wg.Wait()
	want, total := e.expected()
	l := e.reader()
	waitLog(t, l, int64(total), 60*time.Second)
	checkLog(t, allEntries(t, l), want)
	checkConsumer(t, f, want, 60*time.Second)
}
