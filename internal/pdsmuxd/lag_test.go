package pdsmuxd_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pdsmux/pdsmux/internal/fakepds"
	"github.com/pdsmux/pdsmux/internal/testutil"
	"github.com/pdsmux/pdsmux/internal/testutil/redisserver"
)

// Events written while pdsmux was down are old when it replays them; once
// it has caught up, the lag gauge reads 0 rather than the age of the last
// replayed event for good (which kept the lag alert firing until someone
// posted).
func TestLag_ZeroOnceCaughtUp(t *testing.T) {
	e := newEnv(t, fakepds.ModeOwn, 1, redisserver.Options{})
	cfg := e.mergeConfig()
	run := e.start(cfg, "pdsmux")
	waitConnected(t, run.rt)
	e.createAccounts(2)
	l := e.reader()
	_, total := e.expected()
	waitLog(t, l, int64(total), 10*time.Second)
	run.stop()

	// written "30 s ago" while pdsmux is down
	restore := e.store.SetNow(func() time.Time { return time.Now().Add(-30 * time.Second) })
	e.writeCommits(20, 3)
	restore()
	_, total = e.expected()

	run = e.start(cfg, "pdsmux-again")
	waitLog(t, l, int64(total), 20*time.Second)
	key := "pdsmux_replica_lag_seconds{replica=r1}"
	require.Eventually(t, func() bool { return testutil.Scrape(t, run.rt.MetricsAddr())[key] == 0 },
		10*time.Second, 20*time.Millisecond, "lag is 0 once caught up")
	m := testutil.Scrape(t, run.rt.MetricsAddr())
	require.Zero(t, m["pdsmux_replica_lag_events{replica=r1}"])
	require.Greater(t, m["pdsmux_replica_last_event_timestamp_seconds{replica=r1}"], 0.0)
}
