package pdsmuxd_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pdsmux/pdsmux/internal/fakepds"
	"github.com/pdsmux/pdsmux/internal/frame"
	"github.com/pdsmux/pdsmux/internal/pdsmuxd"
	"github.com/pdsmux/pdsmux/internal/repair"
	"github.com/pdsmux/pdsmux/internal/testutil"
	"github.com/pdsmux/pdsmux/internal/testutil/consumer"
	"github.com/pdsmux/pdsmux/internal/testutil/redisserver"
)

// A replica streams a commit of a write its repo then loses (two writes
// through another process, then the repo put back to the earlier head, as
// a restore from backup does): the commit chains onto a rev that neither
// the log nor any replica's head has, so every repair finds the log at the
// replica's head and nothing to append. The hold is looked at again after
// 1, 2, 4 and 8 hold times (stepped on the repairer's clock, read back from
// the hold queue), given up on the 5th repair with the dropped commit
// counted and one warning logged, and then never polled again; the
// replica's cursor is no longer pinned, and a consumer gets every streamed
// (did, rev) exactly once, the lost write's never.
func TestHolds_NeverChainingHoldBacksOffAndIsAbandoned(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t, fakepds.ModeOwn, 1, redisserver.Options{})
	r1 := e.replicas[0]
	ghost := e.store.NewReplica("ghost") // same store, never tailed
	cfg := e.config()                    // hold time a minute, scan hourly: only the hold queue repairs
	hold := cfg.HoldTimeout
	var clock atomic.Int64 // the repairer's clock, unix ms
	clock.Store(time.Now().UnixMilli())
	run := e.start(cfg, "pdsmux", func(o *pdsmuxd.Options) {
		o.RepairClock = func() time.Time { return time.UnixMilli(clock.Load()) }
	})
	waitConnected(t, run.rt)
	base := "http://" + run.rt.Addr()
	strict := consumer.NewStrict(base, e.store.Directory())
	c, _, err := consumer.Dial(ctx, base, 0, strict.Attach)
	require.NoError(t, err)
	t.Cleanup(c.Close)
	l := e.reader()

	write := func(r *fakepds.Replica, did, rkey string) string {
		rev, emitted, err := r.Write(did, postOp(rkey))
		require.NoError(t, err)
		require.True(t, emitted)
		return rev
	}
	waitAt := func(did, rev string) {
		require.Eventually(t, func() bool {
			v, ok := strict.View(did)
			return ok && v.Rev == rev
		}, 10*time.Second, 20*time.Millisecond, "consumer never saw %s at %s (problems %v)", did, rev, strict.Problems())
	}

	a, err := r1.CreateAccount("alice.test")
	require.NoError(t, err)
	b, err := r1.CreateAccount("bob.test")
	require.NoError(t, err)
	rev1 := write(r1, a.DID, "p1")
	waitAt(a.DID, rev1)
	head1, err := e.store.HeadOf(a.DID)
	require.NoError(t, err)
	rev2 := write(ghost, a.DID, "p2")
	rev3 := write(ghost, a.DID, "p3")
	require.NoError(t, r1.Restore(a.DID, head1, true))
	var lost []byte
	for _, f := range e.store.Events() {
		in, err := frame.Parse(f, 0)
		require.NoError(t, err)
		if in.Kind == frame.KindCommit && in.DID == a.DID && in.Rev == rev3 {
			lost = f
		}
	}
	require.NotNil(t, lost)
	r1.InjectRaw(lost) // since rev2: the log and the replica's head are at rev1

	require.Eventually(t, func() bool {
		n, err := l.HeldRepos(ctx)
		return err == nil && n == 1
	}, 10*time.Second, 20*time.Millisecond, "the lost write's commit is held")
	rc, err := l.Cursor(ctx, "r1")
	require.NoError(t, err)
	require.Less(t, rc.Resume, rc.Stored, "the hold pins r1's resume cursor")

	due := func(at time.Time) (bool, error) {
		dids, err := l.DueHolds(ctx, at, 10)
		return slices.Contains(dids, a.DID), err
	}
	dueFrom := func(at time.Time) bool { // due at at, not a millisecond before
		before, err1 := due(at.Add(-time.Millisecond))
		then, err2 := due(at)
		return err1 == nil && err2 == nil && !before && then
	}
	none := func() float64 {
		return testutil.Scrape(t, run.rt.MetricsAddr())["pdsmux_repairs_total{kind=none,reason=hold_timeout}"]
	}
	// the hold time doubled per repair, at most MaxBackoff
	require.Equal(t, time.Minute, hold)
	waits := []time.Duration{time.Minute, 2 * time.Minute, 4 * time.Minute, repair.MaxBackoff}
	require.Len(t, waits, repair.AbandonAfter-1)
	now := time.UnixMilli(time.Now().Add(hold + time.Second).UnixMilli()) // past the first deadline
	for i, wait := range waits {
		clock.Store(now.UnixMilli())
		require.Eventually(t, func() bool { return none() == float64(i+1) }, 10*time.Second, 20*time.Millisecond,
			"repair %d of the held commit", i+1)
		next := now.Add(wait)
		require.Eventually(t, func() bool { return dueFrom(next) }, 10*time.Second, 20*time.Millisecond,
			"after repair %d the hold is due again %s later", i+1, wait)
		write(r1, b.DID, fmt.Sprint("b", i)) // other repos flow meanwhile
		now = next
	}
	clock.Store(now.UnixMilli())
	require.Eventually(t, func() bool {
		m := testutil.Scrape(t, run.rt.MetricsAddr())
		n, err := l.HeldRepos(ctx)
		return err == nil && n == 0 && m["pdsmux_repair_holds_abandoned_total"] == 1
	}, 10*time.Second, 20*time.Millisecond, "given up on the %dth repair", repair.AbandonAfter)
	require.Equal(t, float64(repair.AbandonAfter), none(), "one repair per poll, none after giving up")
	later, err := due(now.Add(24 * time.Hour))
	require.NoError(t, err)
	require.False(t, later, "never polled again")
	rc, err = l.Cursor(ctx, "r1")
	require.NoError(t, err)
	require.Equal(t, rc.Stored, rc.Resume, "r1's resume cursor no longer pinned")

	logged := strings.Count(readLog(t, "pdsmux"), "dropped held commits that never chained")
	require.Equal(t, 1, logged, "one warning")
	for _, line := range strings.Split(readLog(t, "pdsmux"), "\n") {
		if strings.Contains(line, "dropped held commits that never chained") {
			for _, want := range []string{"did=" + a.DID, "dropped=1", rev3, "log_rev=" + rev1, "replica_head_rev=" + rev1, "held_from=[r1]"} {
				require.Contains(t, line, want)
			}
		}
	}

	rev4 := write(r1, a.DID, "p4") // the repo goes on from rev1
	waitAt(a.DID, rev4)
	waitAt(b.DID, b.Rev())
	require.Empty(t, strict.Problems())
	v, _ := strict.View(a.DID)
	want, err := a.Records()
	require.NoError(t, err)
	require.Equal(t, want, v.Records, "the consumer's records are the replica's (p1, p4)")

	genuine := map[key]int{}
	for _, f := range e.store.Events() {
		in, err := frame.Parse(f, 0)
		require.NoError(t, err)
		k := key{in.DID, in.Rev}
		if (in.Kind == frame.KindCommit || in.Kind == frame.KindSync) && k != (key{a.DID, rev2}) && k != (key{a.DID, rev3}) {
			genuine[k] = 1
		}
	}
	got := map[key]int{}
	for _, ev := range c.Events() {
		if ev.Kind == "commit" || ev.Kind == "sync" {
			got[key{ev.DID, ev.Rev}]++
		}
	}
	require.Equal(t, genuine, got, "every streamed (did, rev) once; the lost write's never")
	t.Logf("%d (did, rev) each once; repairs %v", len(got), repairCounts(t, run.rt.MetricsAddr()))
}
