package pdsmuxd_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pdsmux/pdsmux/internal/fakepds"
	"github.com/pdsmux/pdsmux/internal/pdsmuxd"
	"github.com/pdsmux/pdsmux/internal/testutil"
	"github.com/pdsmux/pdsmux/internal/testutil/consumer"
	"github.com/pdsmux/pdsmux/internal/testutil/redisserver"
)

// repairConfig makes repair act within a couple of seconds.
func (e *env) repairConfig() pdsmuxd.Config {
	cfg := e.config()
	cfg.HoldTimeout = 500 * time.Millisecond
	cfg.ScanInterval = time.Second
	cfg.RepairGrace = time.Second
	return cfg
}

// strictConsumer subscribes a sync-1.1 verifying consumer to run, from the
// start of the log.
func (e *env) strictConsumer(run *running) *consumer.Strict {
	e.t.Helper()
	base := "http://" + run.rt.Addr()
	s := consumer.NewStrict(base, e.store.Directory())
	c, _, err := consumer.Dial(context.Background(), base, 0, s.Attach)
	require.NoError(e.t, err)
	e.t.Cleanup(c.Close)
	return s
}

// waitConverged waits until the strict consumer holds every account at its
// replica head with the same records, then checks there was no problem.
func (e *env) waitConverged(s *consumer.Strict, within time.Duration) {
	e.t.Helper()
	deadline := time.Now().Add(within)
	var lagging []string
	for {
		lagging = lagging[:0]
		for _, a := range e.store.Accounts() {
			v, ok := s.View(a.DID)
			if !ok || v.Rev != a.Rev() {
				lagging = append(lagging, fmt.Sprintf("%s at %q, replica at %s", a.Handle, v.Rev, a.Rev()))
			}
		}
		if len(lagging) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	require.Empty(e.t, s.Problems(), "a strict consumer found problems")
	require.Empty(e.t, lagging, "repos not at the replicas' head after %s", within)
	for _, a := range e.store.Accounts() {
		want, err := a.Records()
		require.NoError(e.t, err)
		v, _ := s.View(a.DID)
		require.Equal(e.t, want, v.Records, "records of %s", a.Handle)
	}
}

func repairCounts(t *testing.T, metricsAddr string) map[string]float64 {
	out := map[string]float64{}
	for k, v := range testutil.Scrape(t, metricsAddr) {
		if strings.HasPrefix(k, "pdsmux_repairs_total{") && v > 0 {
			out[strings.TrimPrefix(k, "pdsmux_repairs_total")] = v
		}
	}
	return out
}

// Two stock-Cocoon-like replicas on one database lose about half of their
// events to seq collisions. With repair, a strict sync-1.1 consumer still
// ends with every repo at the replicas' head, every record, and no chain
// break.
func TestRepair_CocoonLosesHalfStrictConsumerSeesEverything(t *testing.T) {
	t.Parallel()
	e := newEnv(t, fakepds.ModeCocoon, 2, redisserver.Options{})
	e.store.OmitUpdatePrev = true // as Cocoon's update ops
	run := e.start(e.repairConfig(), "pdsmux")
	waitConnected(t, run.rt)
	strict := e.strictConsumer(run)

	rnd := rand.New(rand.NewPCG(5, 5))
	e.createAccounts(10)
	live := map[string][]string{} // did -> rkeys that exist
	writes := 0
	for writes < 500 {
		a := e.accounts[rnd.IntN(len(e.accounts))]
		r := e.replicas[writes%2] // sequential writes, alternating replicas
		op := fakepds.Op{Action: "create", Collection: "app.bsky.feed.post", Rkey: fmt.Sprintf("p%04d", writes), Record: fakepds.Post("hello", time.Now())}
		if ks := live[a.DID]; len(ks) > 3 && rnd.IntN(4) == 0 {
			k := ks[rnd.IntN(len(ks))]
			if rnd.IntN(2) == 0 {
				op = fakepds.Op{Action: "delete", Collection: "app.bsky.feed.post", Rkey: k}
			} else {
				op = fakepds.Op{Action: "update", Collection: "app.bsky.feed.post", Rkey: k, Record: fakepds.Post("edited", time.Now())}
			}
		}
		_, _, err := r.Write(a.DID, op)
		require.NoError(t, err)
		switch op.Action {
		case "create":
			live[a.DID] = append(live[a.DID], op.Rkey)
		case "delete":
			ks := live[a.DID]
			for i, k := range ks {
				if k == op.Rkey {
					live[a.DID] = append(ks[:i], ks[i+1:]...)
					break
				}
			}
		}
		writes++
		time.Sleep(5 * time.Millisecond) // one user's pace, not a bulk import

	}
	e.waitConverged(strict, 60*time.Second)
	commits, syncs, stale, fetches := strict.Stats()
	t.Logf("writes %d, events lost by the replicas %d of %d; consumer saw %d commits, %d syncs (%d stale, %d getRepo); repairs %v",
		writes, e.store.Lost, e.store.Lost+e.store.Emitted, commits, syncs, stale, fetches, repairCounts(t, run.rt.MetricsAddr()))
	require.Greater(t, e.store.Lost, 100, "the model must actually lose events")
	requireCommitRepairs(t, repairCounts(t, run.rt.MetricsAddr()))
}

// requireCommitRepairs asserts that lost events were repaired, and with
// #commit only: at least one #commit repair and no #sync repair (a repo
// under the commit limits never needs one; a regression of every repair
// to #sync would still converge).
func requireCommitRepairs(t *testing.T, repairs map[string]float64) {
	t.Helper()
	commits := 0.0
	for k, n := range repairs {
		require.NotContains(t, k, "kind=sync", "a #sync repair (%v x%v) where one commit carries every change", k, n)
		if strings.Contains(k, "kind=commit") {
			commits += n
		}
	}
	require.Positive(t, commits, "no #commit repair of the lost events: %v", repairs)
}

// Two replicas racing on one repo deliver its commits out of order: the log
// appends them in chain order and nothing needs repair.
func TestRepair_OutOfOrderCommitsAreReorderedNotRepaired(t *testing.T) {
	t.Parallel()
	e := newEnv(t, fakepds.ModeOwn, 2, redisserver.Options{})
	cfg := e.repairConfig()
	cfg.HoldTimeout = 10 * time.Second // the slow replica comes back well within this
	run := e.start(cfg, "pdsmux")
	waitConnected(t, run.rt)
	strict := e.strictConsumer(run)
	e.createAccounts(1)
	a := e.accounts[0]
	r1, r2 := e.replicas[0], e.replicas[1]
	waitLog(t, e.reader(), 2, 10*time.Second)

	// r1's firehose is down while it takes c1; r2 streams c2 and c3 first.
	r1.Stop()
	post := func(r *fakepds.Replica, k string) {
		_, _, err := r.Write(a.DID, fakepds.Op{Action: "create", Collection: "app.bsky.feed.post", Rkey: k, Record: fakepds.Post(k, time.Now())})
		require.NoError(t, err)
	}
	post(r1, "c1")
	post(r2, "c2")
	post(r2, "c3")
	require.Eventually(t, func() bool {
		hs, err := e.reader().Holds(context.Background(), a.DID)
		return err == nil && len(hs) == 2
	}, 10*time.Second, 20*time.Millisecond, "c2 and c3 are held")
	require.NoError(t, r1.Start(nil))
	e.waitConverged(strict, 20*time.Second)

	want, total := e.expected()
	l := e.reader()
	waitLog(t, l, int64(total), 10*time.Second)
	checkLog(t, allEntries(t, l), want)
	m := testutil.Scrape(t, run.rt.MetricsAddr())
	require.Equal(t, 2.0, m["pdsmux_log_released_total"], "c2 and c3 were held, then released in order")
	require.Empty(t, repairCounts(t, run.rt.MetricsAddr()), "no repair needed")
}

// A repo that moved with no event at all is repaired within the grace
// period plus one scan interval.
func TestRepair_SilentWriteFoundByScan(t *testing.T) {
	t.Parallel()
	e := newEnv(t, fakepds.ModeCocoon, 2, redisserver.Options{})
	cfg := e.repairConfig()
	cfg.ScanInterval = 2 * time.Second
	cfg.RepairGrace = 2 * time.Second
	run := e.start(cfg, "pdsmux")
	waitConnected(t, run.rt)
	strict := e.strictConsumer(run)
	e.createAccounts(1)
	a := e.accounts[0]
	_, _, err := e.replicas[0].Write(a.DID, fakepds.Op{Action: "create", Collection: "app.bsky.feed.post", Rkey: "one", Record: fakepds.Post("1", time.Now())})
	require.NoError(t, err)
	e.waitConverged(strict, 10*time.Second)

	start := time.Now()
	for i := range 3 {
		_, err := e.replicas[1].WriteSilently(a.DID, fakepds.Op{Action: "create", Collection: "app.bsky.feed.post", Rkey: fmt.Sprintf("silent%d", i), Record: fakepds.Post("s", time.Now())})
		require.NoError(t, err)
	}
	// grace + one scan interval, plus the scan that first sees it
	e.waitConverged(strict, cfg.RepairGrace+2*cfg.ScanInterval+2*time.Second)
	t.Logf("silent writes reached the consumer after %s", time.Since(start).Round(10*time.Millisecond))
	require.Equal(t, map[string]float64{"{kind=commit,reason=scan}": 1}, repairCounts(t, run.rt.MetricsAddr()))
}
