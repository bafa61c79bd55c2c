package pdsmuxd_test

import (
	"context"
	"database/sql"
	"fmt"
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
	n, err := l.Trim(ctx, time.Now(), archivedThrough(t, e))
	require.NoError(t, err)
	return n
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

	conn, _, err := websocket.DefaultDialer.Dial("ws://"+run.rt.Addr()+"/xrpc/com.atproto.sync.subscribeRepos?cursor=0", nil)
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	type got struct {
		seq  int64
		info string
	}
	var frames []got
	read := func() {
		require.NoError(t, conn.SetReadDeadline(time.Now().Add(30*time.Second)))
		_, b, err := conn.ReadMessage()
		require.NoError(t, err)
		in, err := frame.Parse(b, 0)
		if err != nil || in.Seq == 0 {
			frames = append(frames, got{info: string(b)})
			return
		}
		frames = append(frames, got{seq: in.Seq})
	}
	read()
	require.NotZero(t, frames[0].seq, "no OutdatedCursor at the start: the cursor is above the trim mark")

	lo, hi := all[2000].Seq, all[2099].Seq
	db, err := sql.Open("sqlite", "file:"+filepath.Join(e.dir, "pdsmux.db"))
	require.NoError(t, err)
	_, err = db.ExecContext(ctx, `DELETE FROM events WHERE seq BETWEEN ? AND ?`, lo, hi)
	require.NoError(t, err)
	db.Close()
	st := openArchive(t, e)
	require.NoError(t, st.WriteGap(ctx, []cursor.Entry{{Seq: hi, UpstreamSeq: -1}}))

	for frames[len(frames)-1].seq < all[len(all)-1].Seq {
		read()
	}
	var seqs []int64
	infos := 0
	for i, f := range frames {
		if f.seq != 0 {
			seqs = append(seqs, f.seq)
			continue
		}
		infos++
		require.Contains(t, f.info, "OutdatedCursor")
		require.Equal(t, lo-1, frames[i-1].seq, "the info comes where the hole begins")
		require.Equal(t, hi+1, frames[i+1].seq, "and the replay goes on after it")
	}
	require.Equal(t, 1, infos, "one OutdatedCursor")
	var want []int64
	for _, en := range all {
		if en.Seq < lo || en.Seq > hi {
			want = append(want, en.Seq)
		}
	}
	require.Equal(t, want, seqs, "every seq outside the hole once, in order")
	require.EqualValues(t, 1, testutil.Scrape(t, run.rt.MetricsAddr())["pdsmux_subscriber_gaps_total{cause=replay_crossed_trim}"])
}
