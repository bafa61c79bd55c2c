package pdsmuxd_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/pdsmux/pdsmux/internal/cursor"
	"github.com/pdsmux/pdsmux/internal/fakepds"
	"github.com/pdsmux/pdsmux/internal/pdsmuxd"
	"github.com/pdsmux/pdsmux/internal/store"
	"github.com/pdsmux/pdsmux/internal/testutil"
	"github.com/pdsmux/pdsmux/internal/testutil/consumer"
	"github.com/pdsmux/pdsmux/internal/testutil/faultproxy"
	"github.com/pdsmux/pdsmux/internal/testutil/libsqlserver"
	"github.com/pdsmux/pdsmux/internal/testutil/redisserver"
)

// lockDB holds the embedded archive's write lock (another process's long
// transaction: a backup, a sqlite3 shell) until the returned func is
// called: the archive's writes wait and fail, its reads still answer
// (WAL).
func lockDB(t *testing.T, path string) (unlock func()) {
	t.Helper()
	ctx := context.Background()
	db, err := sql.Open("sqlite", "file:"+path)
	require.NoError(t, err)
	conn, err := db.Conn(ctx)
	require.NoError(t, err)
	_, err = conn.ExecContext(ctx, "BEGIN IMMEDIATE")
	require.NoError(t, err)
	done := false
	unlock = func() {
		if done {
			return
		}
		done = true
		_, _ = conn.ExecContext(ctx, "ROLLBACK")
		conn.Close()
		db.Close()
	}
	t.Cleanup(unlock)
	return unlock
}

// The archive's database slow (its write lock held elsewhere) while 400
// posts of 8 KB flow, 3 times the log's 1 MiB byte budget; the archive's
// buffer is large enough that it keeps up with reading. The byte budget
// keeps every entry the archive has not written, so:
//   - a relay replaying from cursor 0 meanwhile gets every seq, every
//     (did, rev) and every record once (before the fix, 241 of 400 seqs
//     were skipped without an OutdatedCursor: trimmed from Redis, not yet
//     in the database);
//   - a stop before the database is back reports the unwritten entries
//     (Run's error wraps store.ErrUnwritten, a warning in the log), and the
//     next start archives every one of them from Redis: nothing lost.
func TestArchive_SlowDatabaseLosesNothingToTheByteBudget(t *testing.T) {
	e := newEnv(t, fakepds.ModeOwn, 1, redisserver.Options{})
	cfg := e.mergeConfig()
	cfg.LogMaxBytes = "1MiB"
	big := func(o *pdsmuxd.Options) { o.ArchiveBufferBytes = 16 << 20 }
	run := e.start(cfg, "pdsmux", big)
	waitConnected(t, run.rt)
	e.createAccounts(2)
	e.writeCommits(20, 7)
	_, total := e.expected()
	waitArchived(t, run.rt.MetricsAddr(), total)
	before := testutil.Scrape(t, run.rt.MetricsAddr())["pdsmux_archive_events_total"]
	l := e.reader()
	first := allEntries(t, l)[0].Seq

	unlock := lockDB(t, filepath.Join(e.dir, "pdsmux.db"))
	e.bigPosts(400)
	want, total := e.expected()
	b := waitHead(t, l, first, total)
	m := testutil.Scrape(t, run.rt.MetricsAddr())
	require.Equal(t, before, m["pdsmux_archive_events_total"], "the database is locked: nothing was written meanwhile")
	require.Zero(t, m["pdsmux_archive_behind"], "the archive's buffer held what it read")

	// A relay replaying from the start while the database is locked.
	c, _, err := consumer.Dial(context.Background(), "http://"+run.rt.Addr(), 0)
	require.NoError(t, err)
	defer c.Close()
	require.Eventually(t, func() bool { s := c.Seqs(); return len(s) > 0 && s[len(s)-1] >= b.Last },
		30*time.Second, 20*time.Millisecond, "the replay reaches the head %d", b.Last)
	seqs := c.Seqs()
	require.Len(t, seqs, total, "every seq %d..%d once", first, b.Last)
	for i, s := range seqs {
		require.Equal(t, first+int64(i), s, "seq %d without a gap", first+int64(i))
	}
	got := map[key]int{}
	for _, ev := range c.Events() {
		if ev.Kind == "commit" || ev.Kind == "sync" {
			got[key{ev.DID, ev.Rev}]++
		}
	}
	for k := range want {
		require.Equal(t, 1, got[k], "(did, rev) %v once", k)
	}
	recs := c.Records()
	for i := range 400 {
		r := consumer.Record{DID: e.accounts[i%len(e.accounts)].DID, Collection: "app.bsky.feed.post", Rkey: "big" + pad5(i)}
		require.Equal(t, 1, recs[r], "record %v once", r)
	}
	require.Zero(t, testutil.Scrape(t, run.rt.MetricsAddr())["pdsmux_archive_lost_total"])

	// Stop with the database still locked: the unwritten entries are an
	// error of the stop, not a silent loss.
	run.cancel()
	run.cancel = nil
	err = <-run.done
	require.ErrorIs(t, err, store.ErrUnwritten, "Run reports what the archive could not write")
	_ = run.rt.Close(context.Background())
	require.Contains(t, readLog(t, "pdsmux"), "the entries stay in Redis and the next start archives them")

	unlock()
	run2 := e.start(cfg, "pdsmux2", big)
	st := openArchive(t, e)
	require.Eventually(t, func() bool {
		hw, err := st.HighWater(context.Background())
		return err == nil && hw >= b.Last
	}, 60*time.Second, 50*time.Millisecond, "the restarted archive catches up to %d", b.Last)
	es, err := st.Range(context.Background(), 0, int64(total)+10)
	require.NoError(t, err)
	require.Len(t, es, total, "the archive holds every seq %d..%d", first, b.Last)
	for i, en := range es {
		require.Equal(t, first+int64(i), en.Seq)
	}
	require.Zero(t, testutil.Scrape(t, run2.rt.MetricsAddr())["pdsmux_archive_lost_total"], "nothing recorded as lost")
}

// The same database stall with the derived archive buffer (an eighth of
// the 1 MiB byte budget): the archive goes more than its buffer behind,
// stops reading, and the byte budget trims entries it never read (as
// documented). A relay replaying from cursor 0 meanwhile finds those seqs
// neither in the archive (nor its buffer) nor in Redis, while the hole is
// not yet recorded in the archive (its database is locked): Redis's own
// trim mark covers them, so the relay gets OutdatedCursor right where the
// hole begins, counted once, and every other seq and (did, rev) once.
// Once the database is back the archive records the same hole (before
// the fix the replay crossed 222 seqs silently).
func TestReplay_HoleTrimmedFromRedisWhileTheArchiveIsBehindGivesOutdatedCursor(t *testing.T) {
	e := newEnv(t, fakepds.ModeOwn, 1, redisserver.Options{})
	cfg := e.mergeConfig()
	cfg.LogMaxBytes = "1MiB"
	run := e.start(cfg, "pdsmux")
	waitConnected(t, run.rt)
	e.createAccounts(2)
	e.writeCommits(20, 7)
	_, total := e.expected()
	waitArchived(t, run.rt.MetricsAddr(), total)
	l := e.reader()
	first := allEntries(t, l)[0].Seq

	unlock := lockDB(t, filepath.Join(e.dir, "pdsmux.db"))
	e.bigPosts(400)
	require.Eventually(t, func() bool { return testutil.Scrape(t, run.rt.MetricsAddr())["pdsmux_archive_behind"] == 1 },
		30*time.Second, 50*time.Millisecond, "the archive goes more than its buffer behind")
	e.writeCommits(5, 8) // appends now trim to the byte budget, past what the archive read
	want, total := e.expected()
	b := waitHead(t, l, first, total)
	ctx := context.Background()
	// The seqs run on from first without a jump, so the archive has read
	// through first + (written + buffered) - 1.
	require.Eventually(t, func() bool {
		bb, err := l.Bounds(ctx)
		m := testutil.Scrape(t, run.rt.MetricsAddr())
		read := first + int64(m["pdsmux_archive_events_total"]+m["pdsmux_archive_pending_events"]) - 1
		return err == nil && m["pdsmux_archive_behind"] == 1 && bb.Trimmed > read
	}, 30*time.Second, 50*time.Millisecond, "the archive is behind and the byte budget trimmed Redis past what it read")

	c, _, err := consumer.Dial(ctx, "http://"+run.rt.Addr(), 0)
	require.NoError(t, err)
	defer c.Close()
	require.Eventually(t, func() bool { s := c.Seqs(); return len(s) > 0 && s[len(s)-1] >= b.Last },
		30*time.Second, 20*time.Millisecond, "the replay reaches the head %d", b.Last)
	bb, err := l.Bounds(ctx)
	require.NoError(t, err)

	evs := c.Events()
	infos, lo, hi := 0, int64(0), int64(0) // the hole: seqs lo..hi
	got := map[key]int{}
	var prev int64
	for i, ev := range evs {
		if ev.Kind == "info" {
			infos++
			require.Equal(t, "OutdatedCursor", ev.Name)
			require.Less(t, i+1, len(evs))
			lo, hi = prev+1, evs[i+1].Seq-1
			continue
		}
		if prev != 0 && ev.Seq != prev+1 {
			require.Equal(t, "info", evs[i-1].Kind, "a gap %d -> %d without OutdatedCursor", prev, ev.Seq)
		}
		prev = ev.Seq
		if ev.Kind == "commit" || ev.Kind == "sync" {
			got[key{ev.DID, ev.Rev}]++
		}
	}
	require.Equal(t, 1, infos, "one OutdatedCursor")
	require.LessOrEqual(t, first, lo)
	require.LessOrEqual(t, lo, hi, "it comes where the hole begins")
	require.LessOrEqual(t, hi, bb.Trimmed, "Redis's trim mark covers the hole")
	var wantSeqs []int64
	for q := first; q <= b.Last; q++ {
		if q < lo || q > hi {
			wantSeqs = append(wantSeqs, q)
		}
	}
	require.Equal(t, wantSeqs, c.Seqs(), "every seq outside the hole once, in order")
	for k, n := range got {
		require.True(t, want[k], "(did, rev) %v was written", k)
		require.Equal(t, 1, n, "(did, rev) %v once", k)
	}
	require.Equal(t, int(hi-lo+1), len(want)-len(got), "the (did, rev)s missing are the hole's (posts)")
	require.EqualValues(t, 1, testutil.Scrape(t, run.rt.MetricsAddr())["pdsmux_subscriber_gaps_total{cause=replay_crossed_trim}"])
	t.Logf("hole %d..%d (%d seqs) of %d..%d", lo, hi, hi-lo+1, first, b.Last)

	// The database back: the archive records the hole the relay was told of.
	unlock()
	require.Eventually(t, func() bool {
		return testutil.Scrape(t, run.rt.MetricsAddr())["pdsmux_archive_lost_total"] == float64(hi-lo+1)
	}, 60*time.Second, 50*time.Millisecond, "the archive records the hole of %d seqs", hi-lo+1)
}

// A relay replays from cursor 0 a backlog Redis has aged out, so it comes
// from the archive: a libsql server behind a slow link (1 MB/s), where
// one archive read of the 300 frames of 8 KB (2.4 MB) takes 2.4 s or
// more. With --ping-interval 500ms (a liveness window of 1 s, under half
// that read) the relay (a client that only answers pings) must not be
// dropped meanwhile: the writer pings while it waits on a read, as from
// the moment of the upgrade. It gets every seq and every (did, rev) once
// (before the fix it was dropped after 0 frames, close 1006). At 100 ms
// the 200 ms window was shorter than the client's pong latency on a
// loaded 2-core machine under -race (dropped 6 runs in 10 there, and
// rightly so: its pongs did come late); the fanout unit test keeps the
// 100 ms interval with a reader that is slow, not starved.
func TestReplay_SlowArchiveReadKeepsTheSubscriberAlive(t *testing.T) {
	e := newEnv(t, fakepds.ModeOwn, 1, redisserver.Options{})
	srv := libsqlserver.Start(t)
	dbp := faultproxy.Start(t, strings.TrimPrefix(srv.URL, "http://"))
	cfg := e.mergeConfig()
	cfg.DBURL = "http://" + dbp.Addr()
	cfg.PingInterval = 500 * time.Millisecond
	run := e.start(cfg, "pdsmux")
	waitConnected(t, run.rt)
	e.createAccounts(2)
	e.bigPosts(300)
	want, total := e.expected()
	l := e.reader()
	waitLog(t, l, int64(total), 60*time.Second)
	waitArchived(t, run.rt.MetricsAddr(), total)
	all := allEntries(t, l)
	ctx := context.Background()
	// Redis ages out all but the last 50 (as the trim loop would: the
	// archive has them all).
	require.NoError(t, e.redis.Client().ZAdd(ctx, "{pdsmux}:tidx", redis.Z{Member: all[len(all)-50].Seq, Score: float64(time.Now().Add(-100 * time.Hour).UnixMilli())}).Err())
	_, _, err := l.Trim(ctx, time.Now(), all[len(all)-1].Seq, math.MaxInt64)
	require.NoError(t, err)

	dbp.SetRate(1_000_000)
	dialed := time.Now()
	c, _, err := consumer.Dial(ctx, "http://"+run.rt.Addr(), 0)
	require.NoError(t, err)
	defer c.Close()
	last := all[len(all)-1].Seq
	require.Eventually(t, func() bool {
		select {
		case <-c.Done():
			return true
		default:
		}
		s := c.Seqs()
		return len(s) > 0 && s[len(s)-1] >= last
	}, 60*time.Second, 20*time.Millisecond)
	t.Logf("the consumer got %d of %d seqs in %s; stream ended: %v", len(c.Seqs()), len(all), time.Since(dialed).Round(time.Millisecond), c.Err())
	var wantSeqs []int64
	for _, en := range all {
		wantSeqs = append(wantSeqs, en.Seq)
	}
	require.Equal(t, wantSeqs, c.Seqs(), "every seq once, in order, without being dropped")
	got := map[key]int{}
	for _, ev := range c.Events() {
		if ev.Kind == "commit" || ev.Kind == "sync" {
			got[key{ev.DID, ev.Rev}]++
		}
	}
	require.Equal(t, len(want), len(got), "every (did, rev), nothing else")
	for k := range want {
		require.Equal(t, 1, got[k], "(did, rev) %v once", k)
	}
	m := testutil.Scrape(t, run.rt.MetricsAddr())
	require.Positive(t, m["pdsmux_subscriber_frames_total{phase=archive}"], "it came from the archive")
	require.Zero(t, m["pdsmux_subscriber_write_timeouts_total"], "never dropped for want of a sign of life")
}

// SIGTERM's order in cmd/pdsmux: Run's context ends, then Close. An entry
// that reached Redis after the archiver stopped reading (a replica's
// append in flight at the signal) leaves a replay waiting for the archive
// forever unless the shutdown ends the wait: the subscriber gets a
// going-away close (1001) and Close returns in time.
func TestShutdown_ReplayWaitingForTheArchiveGetsGoingAway(t *testing.T) {
	e := newEnv(t, fakepds.ModeOwn, 1, redisserver.Options{})
	run := e.start(e.mergeConfig(), "pdsmux")
	waitConnected(t, run.rt)
	e.createAccounts(2)
	e.writeCommits(50, 1)
	_, total := e.expected()
	waitArchived(t, run.rt.MetricsAddr(), total)
	l := e.reader()
	b := waitHead(t, l, allEntries(t, l)[0].Seq, total)

	run.cancel()
	run.cancel = nil
	require.NoError(t, <-run.done)

	// The append after the archiver stopped: a copy of the head's fields
	// under the next seq.
	ctx := context.Background()
	rdb := e.redis.Client()
	last, err := rdb.XRevRangeN(ctx, "{pdsmux}:log", "+", "-", 1).Result()
	require.NoError(t, err)
	require.Len(t, last, 1)
	require.NoError(t, rdb.XAdd(ctx, &redis.XAddArgs{Stream: "{pdsmux}:log",
		ID: strconv.FormatInt(b.Last+1, 10) + "-0", Values: last[0].Values}).Err())

	conn, _, err := websocket.DefaultDialer.Dial("ws://"+run.rt.Addr()+"/xrpc/com.atproto.sync.subscribeRepos?cursor="+strconv.FormatInt(b.Last-3, 10), nil)
	require.NoError(t, err)
	defer conn.Close()
	frames := make(chan struct{}, 16)
	ended := make(chan error, 1)
	go func() {
		for {
			_ = conn.SetReadDeadline(time.Now().Add(30 * time.Second))
			if _, _, err := conn.ReadMessage(); err != nil {
				ended <- err
				return
			}
			frames <- struct{}{}
		}
	}()
	for range 3 { // the three the archive read; the fourth waits for it
		select {
		case <-frames:
		case err := <-ended:
			t.Fatalf("the subscriber ended before the replay waited: %v", err)
		}
	}

	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	require.NoError(t, run.rt.Close(cctx), "Close returns before its deadline")
	err = <-ended
	var ce *websocket.CloseError
	require.True(t, errors.As(err, &ce), "a close frame, not a cut connection: %v", err)
	require.Equal(t, websocket.CloseGoingAway, ce.Code)
	require.Empty(t, frames, "nothing the archive had not read was sent")
}

// waitHead waits until the log has taken n entries from seq first on
// (whether Redis still holds them or not) and returns its bounds.
func waitHead(t *testing.T, l *cursor.Log, first int64, n int) cursor.Bounds {
	t.Helper()
	var b cursor.Bounds
	require.Eventually(t, func() bool {
		var err error
		b, err = l.Bounds(context.Background())
		return err == nil && b.Last-first+1 >= int64(n)
	}, 30*time.Second, 20*time.Millisecond, "the log reaches %d entries from seq %d", n, first)
	return b
}

// openArchive opens the embedded archive for reading.
func openArchive(t *testing.T, e *env) *store.Store {
	t.Helper()
	st, err := store.Open(context.Background(), "file:"+filepath.Join(e.dir, "pdsmux.db"), "")
	require.NoError(t, err)
	t.Cleanup(func() { st.Close() })
	return st
}

func pad5(i int) string {
	s := strconv.Itoa(i)
	return strings.Repeat("0", 5-len(s)) + s
}

// The binary with --log-max-bytes 1MiB (the archive's buffer is then
// 1 MiB too), the embedded archive's write lock held elsewhere while 300
// posts of 8 KB flow, so the archive goes more than its buffer behind and
// the byte budget may pass what it has read; then SIGTERM. The stop is
// honest about it: an error naming how many of the unwritten entries
// Redis no longer holds (not "they stay in Redis"), a non-zero exit; the
// next start records exactly those as trimmed (pdsmux_archive_lost_total)
// and archives every other seq.
func TestStop_ArchiveBehindSaysWhatRedisNoLongerHolds(t *testing.T) {
	e := newEnv(t, fakepds.ModeOwn, 1, redisserver.Options{AppendFsync: "everysec"})
	metrics := fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t))
	p, _ := e.startProcOn("pdsmux", fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t)), metrics, "--log-max-bytes", "1MiB")
	e.createAccounts(2)
	e.writeCommits(20, 3)
	_, total := e.expected()
	waitArchived(t, metrics, total)
	l := e.reader()
	first := allEntries(t, l)[0].Seq

	unlock := lockDB(t, filepath.Join(e.dir, "pdsmux.db"))
	// Posts until the archive is behind and the byte budget has passed
	// its durable position (the budget trims as appends come).
	var b cursor.Bounds
	for i := 0; ; i++ {
		require.Less(t, i, 20, "the byte budget passes the archive's durable position")
		e.bigPosts(100)
		_, total = e.expected()
		b = waitHead(t, l, first, total)
		if testutil.Scrape(t, metrics)["pdsmux_archive_behind"] == 1 && b.Trimmed > archivedThrough(t, e) {
			break
		}
	}
	p.Signal(syscall.SIGTERM)
	require.True(t, p.Wait(60*time.Second), "exits")
	require.Error(t, p.Err(), "non-zero exit: the archive could not write")
	mm := regexp.MustCompile(`Redis no longer holds seqs after the archive's durable position.* entries=(\d+) from=(\d+) through=(\d+) durable=(\d+) gone_through=(\d+) gone=(\d+)`).FindStringSubmatch(p.Output())
	require.NotNil(t, mm, "the stop says Redis no longer holds some of what was not written")
	from, _ := strconv.ParseInt(mm[2], 10, 64)
	goneThrough, _ := strconv.ParseInt(mm[5], 10, 64)
	gone, _ := strconv.Atoi(mm[6])
	rb, err := l.Bounds(context.Background())
	require.NoError(t, err)
	require.Equal(t, goneThrough+1, rb.First, "Redis holds everything after what the stop called gone")
	require.Positive(t, gone)

	unlock()
	e.startProcOn("pdsmux2", fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t)), metrics)
	st := openArchive(t, e)
	require.Eventually(t, func() bool {
		hw, err := st.HighWater(context.Background())
		return err == nil && hw >= b.Last
	}, 60*time.Second, 50*time.Millisecond, "the restarted archive catches up to %d", b.Last)
	require.EqualValues(t, gone, testutil.Scrape(t, metrics)["pdsmux_archive_lost_total"], "the next start counts exactly what the stop called gone")
	es, err := st.Range(context.Background(), 0, int64(total)+10)
	require.NoError(t, err)
	require.Len(t, es, total-gone, "every other seq archived")
	tr, err := st.Trimmed(context.Background())
	require.NoError(t, err)
	require.Equal(t, goneThrough, tr, "the trim mark ends the hole")
	t.Logf("stop: %s read and unwritten from seq %d, %d seqs gone from Redis; next start: %d archived, %d recorded as trimmed", mm[1], from, gone, len(es), gone)
}

// A second signal aborts a stop that waits on a slow archive write (the
// database locked): the process exits at once with status 1 and says so,
// without the stop's 5 s write attempt (whose warning never comes). The
// two signals differ (SIGINT, SIGTERM) so the kernel cannot merge them.
func TestStop_SecondSignalExitsAtOnce(t *testing.T) {
	e := newEnv(t, fakepds.ModeOwn, 1, redisserver.Options{})
	metrics := fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t))
	p, _ := e.startProcOn("pdsmux", fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t)), metrics)
	e.createAccounts(2)
	_, total := e.expected()
	waitArchived(t, metrics, total)
	lockDB(t, filepath.Join(e.dir, "pdsmux.db"))
	e.writeCommits(20, 5)
	require.Eventually(t, func() bool { return testutil.Scrape(t, metrics)["pdsmux_archive_pending_events"] > 0 },
		10*time.Second, 20*time.Millisecond, "the archive holds entries it cannot write")
	p.Signal(syscall.SIGINT)
	p.Signal(syscall.SIGTERM)
	require.True(t, p.Wait(30*time.Second), "exits")
	require.Error(t, p.Err(), "status 1")
	out := p.Output()
	require.Contains(t, out, "second signal: exiting now without finishing the stop")
	require.NotContains(t, out, "stopping: the archive could not write", "the stop's write attempt was cut short")
}
