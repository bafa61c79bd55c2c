package pdsmuxd_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pdsmux/pdsmux/internal/fakepds"
	"github.com/pdsmux/pdsmux/internal/pdsmuxd"
	"github.com/pdsmux/pdsmux/internal/store"
	"github.com/pdsmux/pdsmux/internal/testutil"
	"github.com/pdsmux/pdsmux/internal/testutil/consumer"
	"github.com/pdsmux/pdsmux/internal/testutil/redisserver"
)

// Two pdsmux on one Redis log with different --db-url (docs/ha.md forbids
// it: one archive would miss what the other's trims drop): the later one
// is refused with an error naming --db-url and the other process, at
// Build when Redis answers and at the start-up reconcile when it did not.
// The one that claimed the log first keeps it, also when Redis lost the
// claims and the newcomer claimed in the gap. An HA pair on one database
// is not refused, and a pdsmux that closed leaves the log at once.
func TestStart_TwoDatabasesOnOneLog(t *testing.T) {
	t.Parallel()
	// AOF "always": the Redis restarted below keeps the claims
	e := newEnv(t, fakepds.ModeOwn, 1, redisserver.Options{AppendFsync: "always"})
	cfg := e.mergeConfig()
	other := cfg
	other.DBURL = "file:" + filepath.Join(t.TempDir(), "other.db")
	build := func(c pdsmuxd.Config) (*pdsmuxd.Runtime, error) {
		return pdsmuxd.Build(context.Background(), c, pdsmuxd.Options{Listener: testutil.Listen(t), MetricsListener: testutil.Listen(t),
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	}
	refused := func(err error, url string, by *running) {
		t.Helper()
		var ce *pdsmuxd.ConfigError
		require.True(t, errors.As(err, &ce), "a ConfigError: %v", err)
		require.Equal(t, "db-url", ce.Setting)
		require.Equal(t, url, ce.Value, "the refused pdsmux's own setting")
		require.Contains(t, ce.Reason, "another pdsmux uses this Redis log")
		require.Contains(t, ce.Reason, "listen "+by.rt.Addr(), "names the other process")
		require.Contains(t, ce.Reason, "must use the same --db-url")
		require.Contains(t, ce.Reason, "lapses in")
	}
	// newcomer builds and runs a pdsmux with the other database, with the
	// claim's start-up wait as in production, and expects it refused at
	// Build or in Run.
	newcomer := func(url string, by *running) {
		t.Helper()
		b, err := build(other)
		if err != nil {
			refused(err, url, by)
			return
		}
		done := make(chan error, 1)
		go func() { done <- b.Run(context.Background()) }()
		select {
		case err := <-done:
			refused(err, url, by)
		case <-time.After(60 * time.Second):
			t.Fatal("the newcomer was not refused")
		}
		require.NoError(t, b.Close(context.Background()))
	}
	alive := func(r *running) {
		t.Helper()
		select {
		case err := <-r.done:
			r.cancel = nil
			t.Fatalf("the pdsmux that had the log first stopped: %v", err)
		default:
		}
	}

	a := e.start(cfg, "pdsmux-a")
	waitConnected(t, a.rt)
	_, err := build(other)
	refused(err, other.DBURL, a)

	pair, err := build(cfg)
	require.NoError(t, err, "the other half of an HA pair, on the same database")
	require.NoError(t, pair.Close(context.Background()))

	// Redis lost everything: the restore claims the log first, before it
	// puts back the incarnation marker.
	ctx := context.Background()
	rc := e.redis.Client()
	require.NoError(t, rc.FlushAll(ctx).Err())
	require.Eventually(t, func() bool { return rc.HExists(ctx, "{pdsmux}:meta", "incarnation").Val() }, 30*time.Second, 5*time.Millisecond)
	require.EqualValues(t, 1, rc.ZCard(ctx, "{pdsmux}:users").Val(), "the claim is back with the restore")

	st, err := store.Open(ctx, other.DBURL, "")
	require.NoError(t, err)
	otherID, err := st.ID(ctx)
	require.NoError(t, err)
	require.NoError(t, st.Close())
	// untouched runs newcomer and reports whether the log's incarnation
	// marker stayed clear of the newcomer's archive meanwhile (it never
	// restored its checkpoint into the log).
	untouched := func() bool {
		stop, took := make(chan struct{}), make(chan bool, 1)
		go func() {
			seen := false
			for {
				select {
				case <-stop:
					took <- !seen
					return
				default:
				}
				seen = seen || rc.HGet(ctx, "{pdsmux}:meta", "incarnation").Val() == otherID
				time.Sleep(time.Millisecond)
			}
		}()
		newcomer(other.DBURL, a)
		close(stop)
		return <-took
	}

	// Redis lost the claims alone (a's marker is there): a newcomer with
	// the other database waits, finds a's renewed claim and is refused
	// before it restores anything; a keeps the log.
	require.NoError(t, rc.Del(ctx, "{pdsmux}:users").Err())
	require.True(t, untouched(), "the newcomer restored its own checkpoint into the log")
	alive(a)

	// Redis lost everything and a newcomer with the other database starts
	// at once: likewise.
	require.NoError(t, rc.FlushAll(ctx).Err())
	require.True(t, untouched(), "the newcomer restored its own checkpoint into the emptied log")
	alive(a)

	// Another archive's incarnation marker in Redis (its process restored
	// Redis): a restores its own checkpoint.
	require.NoError(t, rc.HSet(ctx, "{pdsmux}:meta", "incarnation", otherID).Err())
	require.Eventually(t, func() bool { return rc.HGet(ctx, "{pdsmux}:meta", "incarnation").Val() != otherID }, 30*time.Second, 5*time.Millisecond)
	require.Contains(t, readLog(t, "pdsmux-a"), "Redis holds another archive's state")

	// An older pdsmux's marker (16 random hex digits, a rolling upgrade)
	// is no other archive's: a restores nothing over it.
	restores := strings.Count(readLog(t, "pdsmux-a"), "restored Redis from the durable checkpoint")
	require.NoError(t, rc.HSet(ctx, "{pdsmux}:meta", "incarnation", "0123456789abcdef").Err())
	renewed := func() float64 {
		zs := rc.ZRangeWithScores(ctx, "{pdsmux}:users", 0, -1).Val()
		require.Len(t, zs, 1)
		return zs[0].Score
	}
	for range 3 { // a whole watch tick after the marker was set: each renews the claim, then reads the marker
		last := renewed()
		require.Eventually(t, func() bool { return renewed() > last }, 10*time.Second, 5*time.Millisecond)
	}
	require.Equal(t, restores, strings.Count(readLog(t, "pdsmux-a"), "restored Redis from the durable checkpoint"))

	// a is paused past its claim's lifetime, and the other database's
	// pdsmux rightly takes the log meanwhile: a, back, is the newcomer
	// and stops; b keeps the log.
	a.rt.PauseClaim(time.Minute)
	require.NoError(t, rc.Del(ctx, "{pdsmux}:users").Err()) // a's claim lapsed
	b := e.start(other, "pdsmux-b")
	a.rt.ResumeClaim()
	refused(a.stopped(t, 60*time.Second, "the paused pdsmux kept its age and pushed out the one that took the log"), cfg.DBURL, b)
	alive(b)
	b.stop()

	// a closes and drops its claim: the other database's pdsmux starts at
	// once, though a's claim would not have lapsed yet.
	a = e.start(cfg, "pdsmux-a2")
	waitConnected(t, a.rt)
	a.stop()
	c := e.start(other, "pdsmux-c")
	waitConnected(t, c.rt)

	// Redis does not answer at Build: the start-up reconcile claims.
	e.redis.Kill()
	d := e.start(cfg, "pdsmux-d")
	e.redis.Restart()
	refused(d.stopped(t, 60*time.Second, "the pdsmux built while Redis was down did not stop at its start-up claim"), cfg.DBURL, c)
	require.Contains(t, readLog(t, "pdsmux-d"), "redis does not answer at start-up")
	alive(c)
}

// A subscriber that connects while pdsmux starts on a Redis that lost
// its state (the claim's 2 s wait, then the restore from the archive) is
// held until the start is over: before it, the process may yet be refused
// (another database's pdsmux has the log) and the log is not restored.
// Without a cursor it then gets live events only: the archive's history
// is not recalled as entries Redis lost before they were sent (a tester's
// subscriber got 3,004 old frames so, this test's 100 old records).
func TestStart_SubscriberWaitsForTheStartup(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t, fakepds.ModeOwn, 1, redisserver.Options{})
	cfg := e.mergeConfig()
	a := e.start(cfg, "pdsmux-a")
	waitConnected(t, a.rt)
	e.createAccounts(2)
	e.writeCommits(100, 7)
	_, total := e.expected()
	waitArchived(t, a.rt.MetricsAddr(), total)
	a.stop()
	require.NoError(t, e.redis.Client().FlushAll(ctx).Err())

	b := e.start(cfg, "pdsmux-b", func(o *pdsmuxd.Options) { o.ClaimSettle = 0 }) // the production wait
	c, _, err := consumer.Dial(ctx, "http://"+b.rt.Addr(), -1)
	require.NoError(t, err)
	defer c.Close()
	require.Contains(t, readLog(t, "pdsmux-b"), "restored Redis from the durable checkpoint", "the subscriber was held until the restore")
	waitConnected(t, b.rt)
	e.writeCommits(20, 8)
	require.Eventually(t, func() bool {
		n := 0
		for r := range consumer.CountRecords(c.Events()) {
			if strings.HasPrefix(r.Rkey, "s8-") {
				n++
			}
		}
		return n == 20
	}, 30*time.Second, 10*time.Millisecond, "the 20 live commits")
	old := 0
	for r, n := range consumer.CountRecords(c.Events()) {
		if strings.HasPrefix(r.Rkey, "s7-") {
			old += n
		}
	}
	require.Zero(t, old, "a subscriber without a cursor gets live events only, none of the archive's history")
	require.NotContains(t, readLog(t, "pdsmux-b"), "delivered them from the archive",
		"the archive's history is not taken for entries Redis lost before the broadcaster sent them")
}
