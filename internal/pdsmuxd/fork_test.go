package pdsmuxd_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pdsmux/pdsmux/internal/fakepds"
	"github.com/pdsmux/pdsmux/internal/testutil"
	"github.com/pdsmux/pdsmux/internal/testutil/consumer"
	"github.com/pdsmux/pdsmux/internal/testutil/redisserver"
)

// Two replicas write to one account at the same moment (two sessions of
// one user routed to two Cocoon replicas): both commits are built on the
// same head and the second wins the database. pdsmux stays consistent: a
// strict consumer ends with exactly the replica's records (the losing
// post is announced, then deleted by the repair), no chain break, and the
// fork is counted and logged.
func TestFork_ConcurrentWritesToOneAccountStayConsistent(t *testing.T) {
	t.Parallel()
	e, run, _, strict := forkEnv(t, 2)

	r1, r2 := e.replicas[0], e.replicas[1]
	a, err := r1.CreateAccount("alice.test")
	require.NoError(t, err)
	for i := range 3 {
		_, _, err := r1.Write(a.DID, postOp(fmt.Sprint("before", i)))
		require.NoError(t, err)
	}
	// both events through r1's stream, so the winner arrives second and is
	// held (from two tailers the loser may arrive second: then it is
	// dropped as older than the log's rev, consistent but not counted)
	_, won, err := r1.ForkWrite(r1, a.DID, postOp("phone"), postOp("web"), false)
	require.NoError(t, err)
	require.Equal(t, won, a.Rev())
	_, _, err = r2.Write(a.DID, postOp("after"))
	require.NoError(t, err)

	want, err := a.Records()
	require.NoError(t, err)
	require.NotContains(t, want, "app.bsky.feed.post/phone", "the losing write is not in the final tree")
	require.Eventually(t, func() bool {
		v, ok := strict.View(a.DID)
		return ok && v.Rev == a.Rev()
	}, 20*time.Second, 20*time.Millisecond, "the consumer reaches the replica's head")
	v, _ := strict.View(a.DID)
	require.Equal(t, want, v.Records, "the consumer's records are exactly the replica's")
	require.Empty(t, strict.Problems())
	m := testutil.Scrape(t, run.rt.MetricsAddr())
	require.Equal(t, 1.0, m["pdsmux_repo_forks_total"], "the fork is counted")
	require.Equal(t, 0.0, repairCounts(t, run.rt.MetricsAddr())["{kind=sync,reason=hold_timeout}"])
}

// The other way round: the first write wins the database and the second,
// with the higher rev, loses but arrives last and is held. Repair finds
// the log already at the replica's head; the dead hold is dropped rather
// than re-polled forever, and the replica's resume cursor is not pinned.
func TestFork_LosingWriteHeldIsDropped(t *testing.T) {
	t.Parallel()
	e, run, _, strict := forkEnv(t, 1)

	r1 := e.replicas[0]
	a, err := r1.CreateAccount("alice.test")
	require.NoError(t, err)
	_, _, err = r1.Write(a.DID, postOp("before"))
	require.NoError(t, err)
	lost, won, err := r1.ForkWrite(r1, a.DID, postOp("phone"), postOp("web"), true)
	require.NoError(t, err)
	require.Equal(t, won, a.Rev())
	require.Greater(t, lost, won, "the losing write has the higher rev")

	l := e.reader()
	require.Eventually(t, func() bool {
		m := testutil.Scrape(t, run.rt.MetricsAddr())
		n, err := l.HeldRepos(context.Background())
		return err == nil && n == 0 && m["pdsmux_repo_forks_total"] == 1
	}, 20*time.Second, 20*time.Millisecond, "the fork is counted and its dead hold dropped")
	rc, err := l.Cursor(context.Background(), "r1")
	require.NoError(t, err)
	require.Equal(t, rc.Stored, rc.Resume, "no hold pins the replica's resume cursor")
	v, ok := strict.View(a.DID)
	require.True(t, ok)
	require.Equal(t, won, v.Rev)
	want, err := a.Records()
	require.NoError(t, err)
	require.Equal(t, want, v.Records)
	require.Empty(t, strict.Problems())
}

// forkEnv runs pdsmux with repair on over n replicas, and a strict
// consumer from the start of the log.
func forkEnv(t *testing.T, n int) (*env, *running, *consumer.Consumer, *consumer.Strict) {
	e := newEnv(t, fakepds.ModeOwn, n, redisserver.Options{})
	cfg := e.config()
	cfg.HoldTimeout = 300 * time.Millisecond
	cfg.ScanInterval = 300 * time.Millisecond
	cfg.RepairGrace = 300 * time.Millisecond
	run := e.start(cfg, "pdsmux")
	waitConnected(t, run.rt)
	base := "http://" + run.rt.Addr()
	strict := consumer.NewStrict(base, e.store.Directory())
	c, _, err := consumer.Dial(context.Background(), base, 0, strict.Attach)
	require.NoError(t, err)
	t.Cleanup(c.Close)
	return e, run, c, strict
}
