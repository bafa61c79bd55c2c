package pdsmuxd_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pdsmux/pdsmux/internal/fakepds"
	"github.com/pdsmux/pdsmux/internal/testutil"
	"github.com/pdsmux/pdsmux/internal/testutil/faultproxy"
	"github.com/pdsmux/pdsmux/internal/testutil/redisserver"
)

// Events written while pdsmux was down are old when it replays them; once
// it has caught up, the lag gauge reads 0 rather than the age of the last
// replayed event for good (which kept the lag alert firing until someone
// posted).
func TestLag_ZeroOnceCaughtUp(t *testing.T) {
	t.Parallel()
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

// When the replica's link is the bottleneck (a long replay over a slow
// link), frames never queue up in pdsmux, yet every event appended is old:
// the lag gauge says how old while they keep coming, and falls to 0 once
// the replica has sent everything.
func TestLag_SlowLinkShowsTheAgeOfWhatArrives(t *testing.T) {
	e := newEnv(t, fakepds.ModeOwn, 1, redisserver.Options{})
	link := faultproxy.Start(t, strings.TrimPrefix(e.replicas[0].URL(), "http://"))
	cfg := e.mergeConfig()
	cfg.Replicas[0] = "r1=http://" + link.Addr()
	run := e.start(cfg, "pdsmux")
	waitConnected(t, run.rt)
	e.createAccounts(2)
	l := e.reader()
	_, total := e.expected()
	waitLog(t, l, int64(total), 10*time.Second)
	run.stop()

	// written "60 s ago" while pdsmux is down, replayed over a 16 KB/s
	// link: the 60 commits (about 1.4 KB each) take about 5 s
	restore := e.store.SetNow(func() time.Time { return time.Now().Add(-60 * time.Second) })
	const commits = 60
	e.writeCommits(commits, 5)
	restore()
	_, total = e.expected()
	link.SetRate(16 << 10)

	t0 := time.Now()
	run = e.start(cfg, "pdsmux-again")
	key := "pdsmux_replica_lag_seconds{replica=r1}"
	behind := false
	require.Eventually(t, func() bool {
		m := testutil.Scrape(t, run.rt.MetricsAddr())
		b, err := l.Bounds(context.Background())
		require.NoError(t, err)
		// read after the scrape: if the log was still short then, it was
		// short when the gauge was read
		behind = m[key] >= 50 && m["pdsmux_replica_lag_events{replica=r1}"] == 0 && b.Length < int64(total)
		return behind
	}, 30*time.Second, 50*time.Millisecond, "while old events trickle in, the lag is their age")
	waitLog(t, l, int64(total), 60*time.Second)
	t.Logf("caught up after %s", time.Since(t0))
	require.Eventually(t, func() bool { return testutil.Scrape(t, run.rt.MetricsAddr())[key] == 0 },
		10*time.Second, 20*time.Millisecond, "lag is 0 once caught up")
}
