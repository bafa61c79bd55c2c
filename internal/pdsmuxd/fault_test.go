package pdsmuxd_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pdsmux/pdsmux/internal/cursor"
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

// checkConsumer waits until the consumer has every wanted (did, rev) and
// the newest seq of the log l, then asserts each arrived exactly once and
// seq strictly increased across every session and every loss.
func checkConsumer(t *testing.T, l *cursor.Log, f *consumer.Follower, want map[key]bool, within time.Duration) {
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
	// The stream is in seq order, so once the consumer has the log's newest
	// seq it has had everything the log holds: a (did, rev) doubled in the
	// log or in a replay has arrived by then.
	b, err := l.Bounds(context.Background())
	require.NoError(t, err)
	require.Eventually(t, func() bool { return f.Last() >= b.Last }, within, 20*time.Millisecond,
		"the consumer reaches the log's newest seq %d", b.Last)
	seen := map[key][]int64{}
	var prev int64
	var doubled []string
	for _, e := range f.Events() {
		if e.Seq == 0 {
			continue
		}
		require.Greater(t, e.Seq, prev, "seq strictly increasing at the consumer")
		prev = e.Seq
		if e.Kind == "commit" || e.Kind == "sync" {
			k := key{e.DID, e.Rev}
			if seen[k] = append(seen[k], e.Seq); len(seen[k]) == 2 {
				doubled = append(doubled, fmt.Sprintf("%s %s", k.did, k.rev))
			}
		}
	}
	for i, d := range doubled {
		f := strings.Fields(d)
		doubled[i] = fmt.Sprintf("%s at seqs %v", d, seen[key{f[0], f[1]}])
	}
	require.Empty(t, doubled, "(did, rev) doubled at the consumer")
	t.Logf("consumer: %d distinct (did, rev), each once, seq increasing, over %d sessions", len(seen), f.Sessions())
}

// redisLossMidStream runs writes through pdsmux, lets lose() take Redis's
// data away mid-stream, and checks that a consumer that stays subscribed
// sees every event exactly once, with seq increasing across the loss, and
// that pdsmux restored from the libsql checkpoint (in dbURL when set, else
// the embedded file).
func redisLossMidStream(t *testing.T, ro redisserver.Options, seed uint64, dbURL string, lose func(e *env, run *running)) {
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
	lose(e, run)
	wg.Wait()
	want, _ := e.expected()
	checkConsumer(t, e.reader(), f, want, 60*time.Second)
	require.Contains(t, readLog(t, "pdsmux"), "restored Redis from the durable checkpoint")
}

// Redis FLUSHALL mid-stream.
func TestFault_RedisFlushAllMidStream(t *testing.T) {
	redisLossMidStream(t, redisserver.Options{}, 21, "", func(e *env, _ *running) {
		require.NoError(t, e.redis.Client().FlushAll(context.Background()).Err())
	})
}

// The same with the checkpoint and archive on a libsql server (the
// Turso/sqld deployment) instead of the embedded file.
func TestFault_RedisFlushAllWithRemoteLibsql(t *testing.T) {
	srv := libsqlserver.Start(t)
	redisLossMidStream(t, redisserver.Options{}, 23, srv.URL, func(e *env, _ *running) {
		require.NoError(t, e.redis.Client().FlushAll(context.Background()).Err())
	})
}

// Redis killed and restarted with appendfsync no and its AOF deleted:
// everything in Redis is gone at once.
func TestFault_RedisRestartedEmptyMidStream(t *testing.T) {
	redisLossMidStream(t, redisserver.Options{AppendFsync: "no"}, 22, "", func(e *env, run *running) {
		e.redis.Kill()
		e.redis.RemoveAOF()
		waitRedisDown(t, run)
		waitSinkFailure(t, run)
		e.redis.Restart()
	})
}

// waitRedisDown waits until run's health reports that Redis does not
// answer (pdsmux has seen the outage).
func waitRedisDown(t *testing.T, run *running) {
	t.Helper()
	require.Eventually(t, func() bool {
		h, ok := run.rt.CheckHealth(context.Background())
		return !ok && h.Reason == "redis does not answer"
	}, 10*time.Second, 20*time.Millisecond, "health reports the Redis outage")
	resp, err := http.Get("http://" + run.rt.Addr() + pdsmuxd.AlivePath)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode, "alive while Redis is down: Caddy's liveness check keeps sync calls coming")
}

// waitSinkFailure waits until a tailer of run has ended a session on a
// failed Redis call: events went on arriving while Redis was down.
func waitSinkFailure(t *testing.T, run *running) {
	t.Helper()
	require.Eventually(t, func() bool {
		for k, v := range testutil.Scrape(t, run.rt.MetricsAddr()) {
			if strings.HasPrefix(k, "pdsmux_replica_reconnects_total{reason=sink,") && v > 0 {
				return true
			}
		}
		return false
	}, 10*time.Second, 20*time.Millisecond, "a tailer's append fails while Redis is down")
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

// The network to Redis cut, then to one replica, then 200 ms of latency
// on both, all while writes go on: nothing is lost, the lag recovers, and
// the metrics show each outage.
//
// Each phase lasts until what makes it an outage has happened, not for a
// fixed time: reconnects back off to at most 1 s here (30 s in
// production), so the Redis cut ends once both tailers have retried
// against it three times, the replica cut once commits chained on r1's
// wait in the log and r1 has redialled five times at the capped backoff,
// and the latency once r1 has replayed its outage and 200 more events have
// crossed the slow links.
func TestFault_NetworkCutsAndLatency(t *testing.T) {
	e := newEnv(t, fakepds.ModeOwn, 2, redisserver.Options{AppendFsync: "everysec"})
	rp := faultproxy.Start(t, e.redis.Addr())
	r1p := faultproxy.Start(t, strings.TrimPrefix(e.replicas[0].URL(), "http://"))
	cfg := e.mergeConfig()
	cfg.RedisURL = "redis://" + rp.Addr() + "/0"
	cfg.Replicas[0] = "r1=http://" + r1p.Addr()
	cfg.HoldTimeout = 5 * time.Minute // commits chained on r1's wait out its outage
	cfg.ReplicaReadTimeout = 3 * time.Second
	run := e.start(cfg, "pdsmux", func(o *pdsmuxd.Options) { o.ReplicaBackoffMax = time.Second })
	waitConnected(t, run.rt)
	maddr := run.rt.MetricsAddr()
	f := follow(t, "http://"+run.rt.Addr())
	l := e.reader()
	ctx := context.Background()
	length := func() int64 {
		b, err := l.Bounds(ctx)
		require.NoError(t, err)
		return b.Length
	}
	e.createAccounts(10)
	stop := make(chan struct{})
	wg := e.writeUntil(stop, 5, 100*time.Millisecond, 31)
	waitLog(t, l, length()+100, 30*time.Second) // writes flow through pdsmux

	rp.Cut()
	waitRedisDown(t, run)
	require.Eventually(t, func() bool {
		m := testutil.Scrape(t, maddr)
		return m["pdsmux_replica_reconnects_total{reason=sink,replica=r1}"] >= 3 && m["pdsmux_replica_reconnects_total{reason=sink,replica=r2}"] >= 3
	}, 30*time.Second, 100*time.Millisecond, "both tailers retry through the Redis outage")
	rp.Restore()
	require.Eventually(t, func() bool { _, ok := run.rt.CheckHealth(ctx); return ok }, 30*time.Second, 100*time.Millisecond)
	waitLog(t, l, length()+50, 30*time.Second) // writes flow again

	r1p.Cut()
	require.Eventually(t, func() bool {
		m := testutil.Scrape(t, maddr)
		return m["pdsmux_replica_connected{replica=r1}"] == 0 && m["pdsmux_replica_connected{replica=r2}"] == 1
	}, 20*time.Second, 100*time.Millisecond, "the metrics show r1 down, r2 up")
	dials := testutil.Scrape(t, maddr)["pdsmux_replica_reconnects_total{reason=dial,replica=r1}"]
	require.Eventually(t, func() bool {
		held, err := l.HeldRepos(ctx)
		return err == nil && held > 0 &&
			testutil.Scrape(t, maddr)["pdsmux_replica_reconnects_total{reason=dial,replica=r1}"] >= dials+5
	}, 60*time.Second, 100*time.Millisecond, "r2's commits chained on r1's are held while r1 redials")
	r1Backlog := e.replicas[0].LastLive()
	r1p.Restore()

	rp.SetLatency(200 * time.Millisecond)
	r1p.SetLatency(200 * time.Millisecond)
	slowFrom := length()
	require.Eventually(t, func() bool {
		cs, err := l.Cursors(ctx)
		return err == nil && cs["r1"] >= r1Backlog && length() >= slowFrom+200
	}, 60*time.Second, 100*time.Millisecond, "r1 replays its outage and writes go on through the slow links")
	rp.SetLatency(0)
	r1p.SetLatency(0)
	waitLog(t, l, length()+50, 30*time.Second) // and on once the links are fast again
	close(stop)
	wg.Wait()

	want, _ := e.expected()
	checkConsumer(t, l, f, want, 90*time.Second)
	e.writeCommits(5, 99) // fresh events measure the lag now
	want, _ = e.expected()
	checkConsumer(t, l, f, want, 30*time.Second)
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
	checkConsumer(t, l, f, want, 60*time.Second)
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
	t.Parallel()
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
	require.EqualValues(t, 400, ageOut(t, e, l, all[400].Seq))

	c, _, err := consumer.Dial(ctx, "http://"+run.rt.Addr(), 0)
	require.NoError(t, err)
	t.Cleanup(c.Close)
	require.NoError(t, c.WaitLen(len(all), 30*time.Second))
	e.writeCommits(50, 52)
	e.writeCommits(1, 53) // a marker: all sent before it is in once it is
	_, total = e.expected()
	require.NoError(t, c.WaitLen(total, 30*time.Second))
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
	t.Parallel()
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
	checkConsumer(t, l, f, want, 60*time.Second)
}

// Redis FLUSHALL while a #commit is held for its missing predecessor: the
// replica that sent it has moved on (later events of another repo were
// appended and archived), but the durable checkpoint keeps that replica's
// cursor below the held event, so after the restore it is read again,
// held again, and released when the predecessor arrives. A consumer that
// replays everything from the start gets the held commit once, by (did,
// rev) and by record, and no repair had to cover it.
func TestFault_RedisFlushAllWhileACommitIsHeld(t *testing.T) {
	e := newEnv(t, fakepds.ModeOwn, 2, redisserver.Options{})
	cfg := e.config()
	cfg.HoldTimeout = time.Minute // the hold waits for the predecessor, not for repair
	run := e.start(cfg, "pdsmux")
	waitConnected(t, run.rt)
	e.createAccounts(2)
	a, b := e.accounts[0], e.accounts[1]
	r1, r2 := e.replicas[0], e.replicas[1]
	l := e.reader()
	_, total := e.expected()
	waitLog(t, l, int64(total), 10*time.Second)
	post := func(r *fakepds.Replica, acc *fakepds.Account, k string) string {
		rev, _, err := r.Write(acc.DID, fakepds.Op{Action: "create", Collection: "app.bsky.feed.post", Rkey: k, Record: fakepds.Post(k, time.Now())})
		require.NoError(t, err)
		return rev
	}
	// r1's firehose is down while it takes c1; r2 streams c2 (held: its
	// predecessor is c1), then five posts of another repo (appended).
	r1.Stop()
	post(r1, a, "c1")
	heldRev := post(r2, a, "c2")
	for i := range 5 {
		post(r2, b, fmt.Sprintf("b%d", i))
	}
	ctx := context.Background()
	require.Eventually(t, func() bool {
		n, err := l.HeldRepos(ctx)
		bd, berr := l.Bounds(ctx)
		return err == nil && berr == nil && n == 1 && bd.Length == int64(total+5)
	}, 10*time.Second, 20*time.Millisecond, "c2 held, b's posts appended")
	rc, err := l.Cursor(ctx, r2.Name)
	require.NoError(t, err)
	require.Less(t, rc.Resume, rc.Stored, "in Redis, r2 resumes below its held commit")
	// everything appended is in the checkpoint before Redis loses it
	require.Eventually(t, func() bool {
		m := testutil.Scrape(t, run.rt.MetricsAddr())
		return m["pdsmux_archive_events_total"] >= float64(total+5) && m["pdsmux_archive_pending_events"] == 0
	}, 10*time.Second, 20*time.Millisecond, "archived")

	require.NoError(t, e.redis.Client().FlushAll(ctx).Err())
	require.Eventually(t, func() bool {
		return testutil.Scrape(t, run.rt.MetricsAddr())["pdsmux_redis_reconciles_total{restored=true,trigger=lost_state}"] >= 1
	}, 10*time.Second, 20*time.Millisecond, "Redis restored from the checkpoint")
	require.Eventually(t, func() bool {
		n, err := l.HeldRepos(ctx)
		return err == nil && n == 1
	}, 10*time.Second, 20*time.Millisecond, "r2 re-sent c2 after the restore and it is held again")

	require.NoError(t, r1.Start(nil)) // c1 arrives and releases c2
	f := follow(t, "http://"+run.rt.Addr())
	want, _ := e.expected()
	checkConsumer(t, l, f, want, 20*time.Second)
	n := 0
	for _, ev := range f.Events() {
		if ev.Kind == "commit" && ev.DID == a.DID && ev.Rev == heldRev {
			n++
		}
	}
	require.Equal(t, 1, n, "the held commit reached the consumer once, as itself")
	require.Equal(t, 1, f.Records()[consumer.Record{DID: a.DID, Collection: "app.bsky.feed.post", Rkey: "c2"}], "its record once")
	require.Empty(t, repairCounts(t, run.rt.MetricsAddr()), "no repair covered it")
}
