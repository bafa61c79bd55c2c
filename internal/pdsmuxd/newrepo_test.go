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

// pdsmux started for the first time beside Cocoon replicas that already
// host 50 accounts with history: each old repo is announced once with
// #identity and #sync, and none of their records is re-announced. An
// account created afterwards through the replica whose seq collides (its
// creation events lost, like its first posts) reaches the consumer with
// every record as a #commit create, after #identity and #account.
func TestNewRepos_FirstStartBesideExistingPDS(t *testing.T) {
	t.Parallel()
	st := fakepds.NewStore(fakepds.ModeCocoon, 42)
	e := &env{t: t, dir: t.TempDir(), redis: redisserver.Start(t, redisserver.Options{}), store: st}
	r1, r2 := st.NewReplica("r1"), st.NewReplica("r2")
	// Both counters start from the same seed, as Cocoon replicas started
	// together on one table do: r2's first events collide with r1's.
	t0 := time.Now()
	restore := st.SetNow(func() time.Time { return t0 })
	for _, r := range []*fakepds.Replica{r1, r2} {
		require.NoError(t, r.Start(testutil.Listen(t)))
		t.Cleanup(r.Stop)
	}
	restore()
	e.replicas = []*fakepds.Replica{r1, r2}

	// an hour of history through r1 before pdsmux exists
	restore = st.SetNow(func() time.Time { return time.Now().Add(-time.Hour) })
	var old []*fakepds.Account
	for i := range 50 {
		a, err := r1.CreateAccount(fmt.Sprintf("old%02d.test", i))
		require.NoError(t, err)
		for j := range 3 {
			_, _, err := r1.Write(a.DID, fakepds.Op{Action: "create", Collection: "app.bsky.feed.post",
				Rkey: fmt.Sprintf("old%d", j), Record: fakepds.Post("history", st.Now())})
			require.NoError(t, err)
		}
		old = append(old, a)
	}
	restore()

	cfg := e.config()
	cfg.HoldTimeout = 500 * time.Millisecond
	cfg.ScanInterval = 300 * time.Millisecond
	cfg.RepairGrace = 300 * time.Millisecond
	run := e.start(cfg, "pdsmux")
	waitConnected(t, run.rt)
	base := "http://" + run.rt.Addr()
	strict := consumer.NewStrict(base, st.Directory())
	c, _, err := consumer.Dial(context.Background(), base, 0, strict.Attach)
	require.NoError(t, err)
	t.Cleanup(c.Close)

	// old repos: announced by the scan, with #sync
	require.Eventually(t, func() bool { return c.Kinds()["sync"] >= len(old) }, 30*time.Second, 50*time.Millisecond,
		"every old repo announced; got %v", c.Kinds())

	lost := st.Lost
	carol, err := r2.CreateAccount("carol.test")
	require.NoError(t, err)
	require.Equal(t, lost+2, st.Lost, "carol's #identity and #sync must be lost for this test to mean anything")
	want := map[consumer.Record]bool{}
	for j := range 3 {
		rkey := fmt.Sprintf("new%d", j)
		_, _, err := r1.Write(carol.DID, fakepds.Op{Action: "create", Collection: "app.bsky.feed.post",
			Rkey: rkey, Record: fakepds.Post("hello", time.Now())})
		require.NoError(t, err)
		want[consumer.Record{DID: carol.DID, Collection: "app.bsky.feed.post", Rkey: rkey}] = true
	}
	require.Eventually(t, func() bool {
		got := c.Records()
		for r := range want {
			if got[r] == 0 {
				return false
			}
		}
		return true
	}, 30*time.Second, 50*time.Millisecond, "carol's posts as #commit creates")
	v, ok := strict.View(carol.DID)
	require.True(t, ok)
	require.Equal(t, carol.Rev(), v.Rev)
	require.Len(t, v.Records, 3)

	// carol's announcement came in creation order: #identity, #account, #commit
	var kinds []string
	for _, ev := range c.Events() {
		if ev.DID == carol.DID {
			kinds = append(kinds, ev.Kind)
		}
	}
	require.GreaterOrEqual(t, len(kinds), 3)
	require.Equal(t, []string{"identity", "account", "commit"}, kinds[:3])

	for r := range c.Records() {
		require.Equal(t, carol.DID, r.DID, "an old repo's record was re-announced: %v", r)
	}
	require.Empty(t, strict.Problems())
	counts := repairCounts(t, run.rt.MetricsAddr())
	t.Logf("consumer saw %v; repairs %v", c.Kinds(), counts)
	require.Equal(t, float64(len(old)), counts["{kind=sync,reason=scan}"], "one #sync per old repo, none for the new one")
}
