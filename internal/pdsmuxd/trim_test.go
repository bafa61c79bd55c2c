package pdsmuxd_test

import (
	"context"
	"database/sql"
	"fmt"
	"math"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/pdsmux/pdsmux/internal/cursor"
	"github.com/pdsmux/pdsmux/internal/fakepds"
	"github.com/pdsmux/pdsmux/internal/frame"
	"github.com/pdsmux/pdsmux/internal/store"
	"github.com/pdsmux/pdsmux/internal/testutil"
	"github.com/pdsmux/pdsmux/internal/testutil/consumer"
	"github.com/pdsmux/pdsmux/internal/testutil/redisserver"
)

// A consumer replaying a long backlog while Redis trims under it gets the
// trimmed entries from the archive: no gap, no repeat, counted by seq and
// by (did, rev). It starts in the archive (Redis already aged out the
// first 600 entries), and Redis then ages out up to the 1200th while the
// consumer is at about the 50th: the hand-over from the archive to Redis
// must notice that Redis moved on and go back to the archive. Both trims
// are the log's own age trim, bounded by the archive's durable position
// as pdsmux's trim loop bounds it.
func TestReplay_TrimUnderAReplayLeavesNoGap(t *testing.T) {
	e := newEnv(t, fakepds.ModeOwn, 1, redisserver.Options{})
	run := e.start(e.mergeConfig(), "pdsmux")
	waitConnected(t, run.rt)
	e.createAccounts(3)
	big := strings.Repeat("x", 8000) // ~8 KB a frame: the backlog outgrows the socket buffers
	for i := range 1500 {
		a := e.accounts[i%len(e.accounts)]
		_, _, err := e.replicas[0].Write(a.DID, fakepds.Op{Action: "create", Collection: "app.bsky.feed.post",
			Rkey: fmt.Sprintf("t%05d", i), Record: fakepds.Post(big, time.Now())})
		require.NoError(t, err)
	}
	want, total := e.expected()
	l := e.reader()
	waitLog(t, l, int64(total), 30*time.Second)
	waitArchived(t, run.rt.MetricsAddr(), total)
	all := allEntries(t, l)
	ctx := context.Background()
	ageOutAt := func(i int) {
		require.Positive(t, ageOut(t, e, l, all[i].Seq))
		b, err := l.Bounds(ctx)
		require.NoError(t, err)
		require.Equal(t, all[i].Seq, b.First)
	}
	ageOutAt(600)

	conn, _, err := websocket.DefaultDialer.Dial("ws://"+run.rt.Addr()+"/xrpc/com.atproto.sync.subscribeRepos?cursor=0", nil)
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	var seqs []int64
	got := map[key]int{}
	read := func() {
		require.NoError(t, conn.SetReadDeadline(time.Now().Add(30*time.Second)))
		_, b, err := conn.ReadMessage()
		require.NoError(t, err)
		in, err := frame.Parse(b, 0)
		require.NoError(t, err)
		seqs = append(seqs, in.Seq)
		if in.Kind == frame.KindCommit || in.Kind == frame.KindSync {
			got[key{in.DID, in.Rev}]++
		}
	}
	for range 50 {
		read()
	}
	ageOutAt(1200) // the consumer is at about the 50th, in the archive
	for len(seqs) < len(all) {
		read()
	}
	var wantSeqs []int64
	for _, en := range all {
		wantSeqs = append(wantSeqs, en.Seq)
	}
	require.Equal(t, wantSeqs, seqs, "no gap, no repeat")
	for k := range want {
		require.Equal(t, 1, got[k], "(did, rev) %v delivered once", k)
	}
	m := testutil.Scrape(t, run.rt.MetricsAddr())
	require.EqualValues(t, 1200, m["pdsmux_subscriber_frames_total{phase=archive}"], "the trimmed part came from the archive")
	require.Positive(t, m["pdsmux_subscriber_frames_total{phase=replay}"], "the rest from Redis")
}

// ageOut makes Redis's age trim due for every entry before seq and runs
// it as the trim loop does: never past the archive's durable position
// (read from the database itself). It returns how many entries went.
func ageOut(t *testing.T, e *env, l *cursor.Log, seq int64) int64 {
	t.Helper()
	ctx := context.Background()
	require.NoError(t, e.redis.Client().ZAdd(ctx, "{pdsmux}:tidx", redis.Z{Member: seq, Score: float64(time.Now().Add(-100 * time.Hour).UnixMilli())}).Err())
	n, _, err := l.Trim(ctx, time.Now(), archivedThrough(t, e), math.MaxInt64)
	require.NoError(t, err)
	return n
}

// After Redis loses its data and is restored from the checkpoint, the
// seq counter jumps to the clock: the seqs in between never existed. A
// replay across the jump crosses no hole: no OutdatedCursor, nothing
// counted, every seq and every (did, rev) once. Both where the jump lies
// at the hand-over from the archive to Redis (Redis's trim mark is empty
// after the loss), and once Redis has trimmed past the jump (its trim
// mark is then above the jump, but the archive read both sides of it, so
// that mark says nothing there).
func TestReplay_SeqJumpAfterARedisRestoreIsNotAHole(t *testing.T) {
	e := newEnv(t, fakepds.ModeOwn, 1, redisserver.Options{})
	run := e.start(e.mergeConfig(), "pdsmux")
	waitConnected(t, run.rt)
	maddr := run.rt.MetricsAddr()
	e.createAccounts(2)
	e.writeCommits(100, 81)
	_, total := e.expected()
	l := e.reader()
	waitLog(t, l, int64(total), 30*time.Second)
	waitArchived(t, maddr, total)
	before := allEntries(t, l)

	ctx := context.Background()
	require.NoError(t, e.redis.Client().FlushAll(ctx).Err())
	require.Eventually(t, func() bool {
		return testutil.Scrape(t, maddr)["pdsmux_redis_reconciles_total{restored=true,trigger=lost_state}"] >= 1
	}, 10*time.Second, 20*time.Millisecond, "Redis restored from the checkpoint")
	e.writeCommits(100, 82)
	want, total := e.expected()
	waitArchived(t, maddr, total)
	after := allEntries(t, l)
	require.Len(t, after, 100, "Redis holds what followed the loss")
	require.Greater(t, after[0].Seq, before[len(before)-1].Seq+1, "the seq counter jumped")
	var wantSeqs []int64
	for _, en := range append(before, after...) {
		wantSeqs = append(wantSeqs, en.Seq)
	}

	replay := func(where string) {
		c, _, err := consumer.Dial(ctx, "http://"+run.rt.Addr(), 0)
		require.NoError(t, err)
		defer c.Close()
		require.Eventually(t, func() bool { s := c.Seqs(); return len(s) > 0 && s[len(s)-1] >= wantSeqs[len(wantSeqs)-1] },
			30*time.Second, 20*time.Millisecond, "%s: the replay reaches the head", where)
		require.Zero(t, c.Kinds()["info"], "%s: no OutdatedCursor", where)
		require.Equal(t, wantSeqs, c.Seqs(), "%s: every seq once, in order", where)
		got := map[key]int{}
		for _, ev := range c.Events() {
			if ev.Kind == "commit" || ev.Kind == "sync" {
				got[key{ev.DID, ev.Rev}]++
			}
		}
		require.Equal(t, len(want), len(got), "%s: every (did, rev), nothing else", where)
		for k := range want {
			require.Equal(t, 1, got[k], "%s: (did, rev) %v once", where, k)
		}
	}
	replay("jump at the hand-over to Redis")

	require.Positive(t, ageOut(t, e, l, after[50].Seq), "Redis ages out half of what followed the jump (the archive has it)")
	b, err := l.Bounds(ctx)
	require.NoError(t, err)
	require.GreaterOrEqual(t, b.Trimmed, after[0].Seq, "Redis's trim mark is above the jump")
	replay("jump inside the archive")
	require.Zero(t, testutil.Scrape(t, maddr)["pdsmux_subscriber_gaps_total{cause=replay_crossed_trim}"])
}

// archivedThrough reads the archive's durable high-water mark from the
// database file.
func archivedThrough(t *testing.T, e *env) int64 {
	t.Helper()
	st, err := store.Open(context.Background(), "file:"+filepath.Join(e.dir, "pdsmux.db"), "")
	require.NoError(t, err)
	defer st.Close()
	hw, err := st.HighWater(context.Background())
	require.NoError(t, err)
	return hw
}

// A hole the archive records while a replay is under way (Redis trimmed
// entries before the archive read them: the database was down for
// longer than the log's cap holds) is not crossed silently: the consumer,
// which started above the trim mark and got no OutdatedCursor then, gets
// one when its replay reaches the hole, and every seq outside the hole
// exactly once. The hole is made as the archiver makes one (the rows
// absent, store.WriteGap raising the trim mark), far enough ahead of the
// consumer that the server cannot have read past it yet (the kernel's
// socket buffers hold at most about 10 MB: 1,250 of these frames).
//
// A second consumer, whose cursor is below an older hole (the first ten
// entries, recorded before it came), is told at the start, not again
// when its replay steps over that older hole, and told again at the new
// one: once per hole.
func TestReplay_HoleRecordedDuringAReplayGivesOutdatedCursor(t *testing.T) {
	e := newEnv(t, fakepds.ModeOwn, 1, redisserver.Options{})
	run := e.start(e.mergeConfig(), "pdsmux")
	waitConnected(t, run.rt)
	e.createAccounts(3)
	e.bigPosts(2500)
	_, total := e.expected()
	l := e.reader()
	waitLog(t, l, int64(total), 60*time.Second)
	waitArchived(t, run.rt.MetricsAddr(), total)
	all := allEntries(t, l)
	ctx := context.Background()
	ageOut(t, e, l, all[len(all)-100].Seq) // all but the last 100
	// hole removes seqs lo..hi from the archive as the archiver records a
	// hole.
	hole := func(lo, hi int64) {
		db, err := sql.Open("sqlite", "file:"+filepath.Join(e.dir, "pdsmux.db"))
		require.NoError(t, err)
		_, err = db.ExecContext(ctx, `DELETE FROM events WHERE seq BETWEEN ? AND ?`, lo, hi)
		require.NoError(t, err)
		db.Close()
		st := openArchive(t, e)
		require.NoError(t, st.WriteGap(ctx, []cursor.Entry{{Seq: hi, UpstreamSeq: -1}}))
	}

	type got struct {
		seq  int64
		info string
	}
	type subscriber struct {
		conn   *websocket.Conn
		frames []got
	}
	dial := func() *subscriber {
		conn, _, err := websocket.DefaultDialer.Dial("ws://"+run.rt.Addr()+"/xrpc/com.atproto.sync.subscribeRepos?cursor=0", nil)
		require.NoError(t, err)
		t.Cleanup(func() { conn.Close() })
		return &subscriber{conn: conn}
	}
	read := func(c *subscriber) {
		require.NoError(t, c.conn.SetReadDeadline(time.Now().Add(30*time.Second)))
		_, b, err := c.conn.ReadMessage()
		require.NoError(t, err)
		in, err := frame.Parse(b, 0)
		if err != nil || in.Seq == 0 {
			c.frames = append(c.frames, got{info: string(b)})
			return
		}
		c.frames = append(c.frames, got{seq: in.Seq})
	}
	readAll := func(c *subscriber) {
		for c.frames[len(c.frames)-1].seq < all[len(all)-1].Seq {
			read(c)
		}
	}
	// check asserts c got every seq of all outside the holes once, in
	// order, and an OutdatedCursor where each hole begins (at the start
	// for those before its cursor), and nowhere else.
	check := func(c *subscriber, atStart bool, holes ...[2]int64) {
		var want []int64
		for _, en := range all {
			in := false
			for _, h := range holes {
				in = in || (en.Seq >= h[0] && en.Seq <= h[1])
			}
			if !in {
				want = append(want, en.Seq)
			}
		}
		var seqs []int64
		infos := 0
		for i, f := range c.frames {
			if f.seq != 0 {
				seqs = append(seqs, f.seq)
				continue
			}
			infos++
			require.Contains(t, f.info, "OutdatedCursor")
			if i == 0 {
				continue
			}
			found := false
			for _, h := range holes {
				found = found || (c.frames[i-1].seq == h[0]-1 && c.frames[i+1].seq == h[1]+1)
			}
			require.True(t, found, "an OutdatedCursor between %d and %d, where no hole begins", c.frames[i-1].seq, c.frames[i+1].seq)
		}
		require.Equal(t, atStart, c.frames[0].seq == 0, "OutdatedCursor at the start")
		require.Equal(t, len(holes), infos, "one OutdatedCursor per hole")
		require.Equal(t, want, seqs, "every seq outside the holes once, in order")
	}

	first := dial()
	read(first)
	require.NotZero(t, first.frames[0].seq, "no OutdatedCursor at the start: the cursor is above the trim mark")

	older := [2]int64{all[0].Seq, all[9].Seq}
	hole(older[0], older[1])
	second := dial()
	read(second)
	read(second)
	require.Contains(t, second.frames[0].info, "OutdatedCursor", "told at the start: its cursor is below the older hole")
	require.Equal(t, all[10].Seq, second.frames[1].seq)

	lo, hi := all[2000].Seq, all[2099].Seq
	hole(lo, hi)

	readAll(first)
	check(first, false, [2]int64{lo, hi})
	require.EqualValues(t, 1, testutil.Scrape(t, run.rt.MetricsAddr())["pdsmux_subscriber_gaps_total{cause=replay_crossed_trim}"])

	readAll(second)
	check(second, true, older, [2]int64{lo, hi})
	require.EqualValues(t, 2, testutil.Scrape(t, run.rt.MetricsAddr())["pdsmux_subscriber_gaps_total{cause=replay_crossed_trim}"],
		"the second consumer's crossing of the new hole counted too")
}
