package pdsmuxd_test

// The fault, crash, HA-pair and merge suites again, against what pdsmux
// really fronts: stock Cocoon replicas on one database (fakepds.ModeCocoon,
// every replica's seq counter seeded alike, so about half of the events
// and some account creations are lost), with repair on. What is checked
// is what a user of the stream counts: every record of the replicas' final
// trees delivered as a #commit create exactly once, nothing else, no
// (did, rev) twice, seq increasing across reconnects, and a strict
// sync-1.1 consumer ending at every repo's head with no chain break.

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http/httptest"
	"regexp"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pdsmux/pdsmux/internal/fakepds"
	"github.com/pdsmux/pdsmux/internal/frame"
	"github.com/pdsmux/pdsmux/internal/pdsmuxd"
	"github.com/pdsmux/pdsmux/internal/testutil"
	"github.com/pdsmux/pdsmux/internal/testutil/consumer"
	"github.com/pdsmux/pdsmux/internal/testutil/proc"
	"github.com/pdsmux/pdsmux/internal/testutil/redisserver"
)

// Repair acting within a second: a held commit waits 400 ms for its
// predecessor, listRepos is compared with the log every 300 ms and a repo
// ahead of it for 300 ms is repaired.
const (
	cocoonHold  = 400 * time.Millisecond
	cocoonScan  = 300 * time.Millisecond
	cocoonGrace = 300 * time.Millisecond
)

// newCocoonEnv starts n stock-Cocoon-like replicas on one store, with the
// store clock pinned while they start so every seq counter gets the same
// seed (replicas started together on an empty table): their events
// really collide.
func newCocoonEnv(t *testing.T, n int, seed uint64, ro redisserver.Options) *env {
	t.Helper()
	st := fakepds.NewStore(fakepds.ModeCocoon, seed)
	e := &env{t: t, dir: t.TempDir(), redis: redisserver.Start(t, ro), store: st}
	t0 := time.Now()
	restore := st.SetNow(func() time.Time { return t0 })
	for i := range n {
		r := st.NewReplica(fmt.Sprintf("r%d", i+1))
		require.NoError(t, r.Start(testutil.Listen(t)))
		t.Cleanup(r.Stop)
		e.replicas = append(e.replicas, r)
	}
	restore()
	return e
}

// cocoonRun is one pdsmux (in-process, repair on) in front of n Cocoon
// replicas (30% of events also streamed by a second replica), 8 accounts,
// and a strict consumer that follows it from the start of the log.
type cocoonRun struct {
	e      *env
	run    *running
	strict *consumer.Strict
	f      *consumer.Follower
}

func startCocoonRun(t *testing.T, n int, seed uint64) *cocoonRun {
	t.Helper()
	c := &cocoonRun{e: newCocoonEnv(t, n, seed, redisserver.Options{})}
	c.e.store.Overlap = 0.3
	c.run = c.e.start(c.e.cocoonConfig(), "pdsmux")
	waitConnected(t, c.run.rt)
	base := "http://" + c.run.rt.Addr()
	c.strict = consumer.NewStrict(base, c.e.store.Directory())
	c.f = followStrict(t, c.strict, base)
	c.e.createAccounts(8)
	return c
}

// check is checkCocoon over the run, which must have lost minLost events.
func (c *cocoonRun) check(t *testing.T, minLost int) {
	t.Helper()
	m := c.run.rt.MetricsAddr()
	checkCocoon(t, c.e, cocoonCheck{f: c.f, strict: c.strict, metrics: []string{m}, minLost: minLost,
		repairs: func() map[string]float64 { return repairCounts(t, m) }})
}

// cocoonConfig is env.config with repair on.
func (e *env) cocoonConfig() pdsmuxd.Config {
	cfg := e.config()
	cfg.HoldTimeout, cfg.ScanInterval, cfg.RepairGrace = cocoonHold, cocoonScan, cocoonGrace
	return cfg
}

// cocoonProcArgs are the flags a pdsmux process gets on top of env.args:
// repair on, and a did:plc directory for the store's accounts (signing
// keys for the commit checks, creation times to tell new repos from old).
func (e *env) cocoonProcArgs() []string {
	plc := httptest.NewServer(e.store.PLCHandler("http://pds.test"))
	e.t.Cleanup(plc.Close)
	return []string{"--hold-timeout", cocoonHold.String(), "--scan-interval", cocoonScan.String(),
		"--repair-grace", cocoonGrace.String(), "--plc-url", plc.URL, "--verify-commit-signatures=true"}
}

// pacedWriter writes single-record commits (unique rkeys, creates only)
// one at a time, gap apart, through random replicas to random accounts.
type pacedWriter struct {
	wg      sync.WaitGroup
	written atomic.Int64
}

// writePaced writes at least n commits, and on until stop is closed
// (nil: exactly n).
func (e *env) writePaced(n int, gap time.Duration, seed uint64, stop <-chan struct{}) *pacedWriter {
	w := &pacedWriter{}
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		for i := 0; ; i++ {
			if i >= n {
				if stop == nil {
					return
				}
				select {
				case <-stop:
					return
				default:
				}
			}
			e.writeCommits(1, seed*100_000+uint64(i))
			w.written.Add(1)
			time.Sleep(gap)
		}
	}()
	return w
}

// Written is how many commits were written so far.
func (w *pacedWriter) Written() int { return int(w.written.Load()) }

// Wait waits until the writer stops and returns how many it wrote.
func (w *pacedWriter) Wait() int { w.wg.Wait(); return w.Written() }

// followStrict is a strict consumer that stays subscribed like a relay
// (consumer.Follow with the Strict attached), from the start of the log.
func followStrict(t *testing.T, s *consumer.Strict, bases ...string) *consumer.Follower {
	ctx, cancel := context.WithCancel(context.Background())
	f := consumer.Follow(ctx, bases, 0, s.Attach)
	t.Cleanup(func() { cancel(); <-f.Done() })
	return f
}

// cocoonCheck is what checkCocoon needs besides the env.
type cocoonCheck struct {
	f      *consumer.Follower
	strict *consumer.Strict
	// metrics are the metrics addresses of the pdsmux processes still
	// running (to see scans go by once everything arrived).
	metrics []string
	// repairs counts the repairs appended, by {kind=...,reason=...}.
	repairs func() map[string]float64
	// minLost is how many events the replicas must have lost for the run
	// to mean anything.
	minLost int
}

// checkCocoon waits until the consumer holds every account at its
// replica head and every record, then until pdsmux is quiet (no held
// commit, two more scans, the consumer at the end of the log), and then
// asserts, over everything the consumer received across its sessions:
// each record of the final trees delivered as a #commit create exactly
// once and no other record, no (did, rev) twice, seq strictly increasing,
// the strict view of each repo equal to the account's rev and records
// with no problem, and the loss repaired with #commit, never #sync.
func checkCocoon(t *testing.T, e *env, c cocoonCheck) {
	t.Helper()
	st := e.store
	accounts := st.Accounts()

	// The model must really have lost events, account creations among them.
	var lostCreations []string
	for _, a := range accounts {
		if !st.Streamed(a.DID, "#sync") {
			lostCreations = append(lostCreations, a.Handle)
		}
	}
	t.Logf("replicas: %d accounts, %d events stored, %d lost to seq collisions; creation lost for %v",
		len(accounts), st.Emitted, st.Lost, lostCreations)
	require.Greater(t, st.Lost, c.minLost, "the model must actually lose events")
	require.NotEmpty(t, lostCreations, "at least one account creation must be lost")

	want := map[consumer.Record]bool{}
	upstream := map[key]bool{} // (did, rev) of every #commit and #sync the replicas streamed
	for _, a := range accounts {
		recs, err := a.Records()
		require.NoError(t, err)
		for p := range recs {
			coll, rkey, _ := strings.Cut(p, "/")
			want[consumer.Record{DID: a.DID, Collection: coll, Rkey: rkey}] = true
		}
	}
	for _, b := range st.Events() {
		in, err := frame.Parse(b, 0)
		require.NoError(t, err)
		if in.Kind == frame.KindSync || in.Kind == frame.KindCommit {
			upstream[key{in.DID, in.Rev}] = true
		}
	}

	// 1. Every repo at its head, every record delivered.
	start := time.Now()
	require.EventuallyWithT(t, func(ct *assert.CollectT) {
		got := c.f.Records()
		var missing []string
		for r := range want {
			if got[r] == 0 {
				missing = append(missing, r.DID+"/"+r.Collection+"/"+r.Rkey)
			}
		}
		sort.Strings(missing)
		assert.Empty(ct, head(missing, 10), "%d records never delivered", len(missing))
		for _, a := range accounts {
			v, ok := c.strict.View(a.DID)
			assert.True(ct, ok && v.Rev == a.Rev(), "%s: consumer at %q, replicas at %s", a.Handle, v.Rev, a.Rev())
		}
	}, 30*time.Second, 50*time.Millisecond, "the consumer reaches the replicas' state")
	converged := time.Since(start)

	// 2. Quiet: nothing held, two more scans (which would repair anything
	// still behind), and the consumer has the end of the log.
	l := e.reader()
	scans := func() (out []float64) {
		for _, m := range c.metrics {
			out = append(out, testutil.Scrape(t, m)["pdsmux_repair_scans_total"])
		}
		return out
	}
	base := scans()
	require.EventuallyWithT(t, func(ct *assert.CollectT) {
		held, err := l.HeldRepos(context.Background())
		assert.NoError(ct, err)
		assert.Zero(ct, held, "repos with held commits")
		for i, n := range scans() {
			assert.GreaterOrEqual(ct, n, base[i]+2, "scans of %s", c.metrics[i])
		}
		b, err := l.Bounds(context.Background())
		assert.NoError(ct, err)
		assert.Equal(ct, b.Last, c.f.Last(), "the consumer has the end of the log")
	}, 20*time.Second, 50*time.Millisecond, "pdsmux goes quiet")

	// 3. What the user counts.
	evs := c.f.Events()
	var prev int64
	seen := map[key]int{}
	var doubledRevs []key
	kinds := map[string]int{}
	synthSyncs := 0
	for _, ev := range evs {
		kinds[ev.Kind]++
		if ev.Seq == 0 {
			continue
		}
		require.Greater(t, ev.Seq, prev, "seq strictly increasing at the consumer (%s %s %s)", ev.Kind, ev.DID, ev.Rev)
		prev = ev.Seq
		if ev.Kind == "commit" || ev.Kind == "sync" {
			k := key{ev.DID, ev.Rev}
			if seen[k]++; seen[k] == 2 {
				doubledRevs = append(doubledRevs, k)
			}
			if ev.Kind == "sync" && !upstream[k] {
				synthSyncs++
			}
		}
	}
	got := consumer.CountRecords(evs)
	var missing, doubled, extra []string
	for r := range want {
		switch n := got[r]; {
		case n == 0:
			missing = append(missing, fmt.Sprintf("%s/%s/%s", r.DID, r.Collection, r.Rkey))
		case n > 1:
			doubled = append(doubled, fmt.Sprintf("%s/%s/%s x%d", r.DID, r.Collection, r.Rkey, n))
		}
	}
	for r, n := range got {
		if !want[r] {
			extra = append(extra, fmt.Sprintf("%s/%s/%s x%d", r.DID, r.Collection, r.Rkey, n))
		}
	}
	sort.Strings(missing)
	sort.Strings(doubled)
	sort.Strings(extra)
	commits, syncs, stale, fetches := c.strict.Stats()
	repairs := c.repairs()
	t.Logf("consumer: %d sessions, frames %v, %d distinct (did, rev), %d records; strict: %d commits, %d syncs, %d stale, %d getRepo; converged %s after the writes",
		c.f.Sessions(), kinds, len(seen), len(got), commits, syncs, stale, fetches, converged.Round(time.Millisecond))
	t.Logf("repairs %v", repairs)
	require.Empty(t, head(missing, 20), "%d of %d records never delivered as a create", len(missing), len(want))
	require.Empty(t, head(doubled, 20), "%d of %d records delivered as a create more than once", len(doubled), len(want))
	require.Empty(t, head(extra, 20), "%d records delivered that the replicas do not have", len(extra))
	require.Empty(t, doubledRevs, "(did, rev) delivered twice")
	require.Empty(t, head(c.strict.Problems(), 20), "the strict consumer found %d problems", len(c.strict.Problems()))
	for _, a := range accounts {
		wantRecs, err := a.Records()
		require.NoError(t, err)
		v, _ := c.strict.View(a.DID)
		require.Equal(t, a.Rev(), v.Rev, "rev of %s", a.Handle)
		require.Equal(t, wantRecs, v.Records, "records of %s", a.Handle)
	}
	requireCommitRepairs(t, repairs)
	require.Zero(t, synthSyncs, "#sync frames pdsmux made up reached the consumer")
}

func head(s []string, n int) []string {
	if len(s) > n {
		return append(s[:n:n], fmt.Sprintf("... %d more", len(s)-n))
	}
	return s
}

// repairMsgs maps the log message of each appended repair to its kind.
var repairMsgs = map[string]string{
	"repaired missed writes with a synthesized #commit":                                             "commit",
	"announced a new repo whose creation events the replicas lost, with its records as one #commit": "commit",
	"repaired missed writes with #sync":                                                             "sync",
	"the replica's repo went back to an older rev (restored from backup?); announced it with #sync": "rollback",
}

var reasonRE = regexp.MustCompile(`\breason=(\S+)`)

// repairsLogged counts the repairs that pdsmux processes appended, from
// their logs (a killed process's metrics die with it), by
// {kind=...,reason=...} as pdsmux_repairs_total labels them.
func repairsLogged(ps ...*proc.Proc) map[string]float64 {
	out := map[string]float64{}
	for _, p := range ps {
		for _, line := range strings.Split(p.Output(), "\n") {
			for msg, kind := range repairMsgs {
				if !strings.Contains(line, `msg="`+msg+`"`) {
					continue
				}
				reason := "?"
				if m := reasonRE.FindStringSubmatch(line); m != nil {
					reason = m[1]
				}
				out["{kind="+kind+",reason="+reason+"}"]++
			}
		}
	}
	return out
}

// kill -9 of pdsmux five times at random moments while Cocoon replicas
// lose half their events, each time restarted on the same address: a
// strict consumer that reconnects with its cursor gets every record
// exactly once.
func TestCocoon_KillNinePdsmuxFiveTimes(t *testing.T) {
	e := newCocoonEnv(t, 2, 81, redisserver.Options{AppendFsync: "everysec"})
	e.store.Overlap = 0.3
	extra := e.cocoonProcArgs()
	listen := fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t))
	metrics := fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t))
	p, base := e.startProcOn("pdsmux-0", listen, metrics, extra...)
	procs := []*proc.Proc{p}
	// getRepo (on #sync) goes to a replica: pdsmux may be dead at that moment
	strict := consumer.NewStrict(e.replicas[0].URL(), e.store.Directory())
	f := followStrict(t, strict, base)
	e.createAccounts(8)

	stop := make(chan struct{})
	w := e.writePaced(300, 5*time.Millisecond, 81, stop)
	rnd := rand.New(rand.NewPCG(81, 81))
	for i := 1; i <= 5; i++ {
		time.Sleep(time.Duration(150+rnd.IntN(350)) * time.Millisecond) // a random moment, not a wait
		p.Kill()
		t.Logf("pdsmux-%d killed after %d writes", i-1, w.Written())
		p, _ = e.startProcOn(fmt.Sprintf("pdsmux-%d", i), listen, metrics, extra...)
		procs = append(procs, p)
	}
	close(stop)
	t.Logf("%d writes", w.Wait())
	checkCocoon(t, e, cocoonCheck{f: f, strict: strict, metrics: []string{metrics}, minLost: 60,
		repairs: func() map[string]float64 { return repairsLogged(procs...) }})
}

// Two pdsmux on one Redis and one libsql file (an HA pair) in front of
// three Cocoon replicas, both repairing; one is killed mid-stream and the
// other goes on. A strict consumer that reconnects to whichever answers
// gets every record exactly once.
func TestCocoon_HAPairOneKilled(t *testing.T) {
	e := newCocoonEnv(t, 3, 82, redisserver.Options{AppendFsync: "everysec"})
	e.store.Overlap = 0.3
	extra := e.cocoonProcArgs()
	addr := func() string { return fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t)) }
	mA, mB := addr(), addr()
	a, baseA := e.startProcOn("pdsmux-a", addr(), mA, extra...)
	b, baseB := e.startProcOn("pdsmux-b", addr(), mB, extra...)
	strict := consumer.NewStrict(baseB, e.store.Directory()) // getRepo from the survivor
	f := followStrict(t, strict, baseA, baseB)
	e.createAccounts(8)
	w := e.writePaced(400, 5*time.Millisecond, 82, nil)
	rnd := rand.New(rand.NewPCG(82, 82))
	at := 80 + rnd.IntN(120)
	require.Eventually(t, func() bool { return len(f.Records()) >= at }, 20*time.Second, 10*time.Millisecond,
		"the consumer gets %d records", at)
	a.Kill()
	t.Logf("pdsmux-a killed after %d writes, %d records at the consumer", w.Written(), at)
	t.Logf("%d writes", w.Wait())
	checkCocoon(t, e, cocoonCheck{f: f, strict: strict, metrics: []string{mB}, minLost: 80,
		repairs: func() map[string]float64 { return repairsLogged(a, b) }})
}

// Redis FLUSHALL mid-stream in front of Cocoon replicas with repair on:
// pdsmux restores Redis from the libsql checkpoint and a strict consumer
// that stays subscribed gets every record exactly once.
func TestCocoon_RedisFlushAllMidStream(t *testing.T) {
	c := startCocoonRun(t, 2, 83)
	w := c.e.writePaced(400, 5*time.Millisecond, 83, nil)
	require.Eventually(t, func() bool { return len(c.f.Records()) >= 150 }, 20*time.Second, 10*time.Millisecond,
		"the consumer gets 150 records")
	require.NoError(t, c.e.redis.Client().FlushAll(context.Background()).Err())
	t.Logf("FLUSHALL after %d writes", w.Written())
	t.Logf("%d writes", w.Wait())
	c.check(t, 60)
	require.Contains(t, readLog(t, "pdsmux"), "restored Redis from the durable checkpoint")
}

// Redis comes back from an older snapshot that still carries pdsmux's
// state marker: a node restarted from an RDB (or AOF) behind what it had
// acknowledged, as Sentinel may promote after two failovers in a row
// (seen in the HA suite: the old primary back with a 30 s old RDB, and
// promoted again before it synced). Its seq counter and repo states are
// older than what the consumer was sent. pdsmux must not judge a repair
// or an upstream event against them (the repair would send records again
// from the old rev): appends fail until Redis is restored from the durable
// checkpoint, and the consumer gets every record exactly once.
func TestCocoon_RedisBackFromAnOlderSnapshot(t *testing.T) {
	c := startCocoonRun(t, 2, 85)
	w := c.e.writePaced(300, 5*time.Millisecond, 85, nil)
	require.Eventually(t, func() bool { return len(c.f.Records()) >= 100 }, 20*time.Second, 10*time.Millisecond,
		"the consumer gets 100 records")
	require.NoError(t, c.e.redis.Client().Save(context.Background()).Err())
	saved := len(c.f.Records())
	t.Logf("%d writes", w.Wait())
	require.Eventually(t, func() bool { return len(c.f.Records()) >= 300 }, 30*time.Second, 10*time.Millisecond,
		"the consumer gets all 300 records")
	// The replicas are quiet now: no upstream event runs into the old
	// replica cursors, and the scan finds every repo behind its replica.
	metrics := c.run.rt.MetricsAddr()
	scans := testutil.Scrape(t, metrics)["pdsmux_repair_scans_total"]
	c.e.redis.Kill()
	c.e.redis.Restart()
	t.Logf("Redis back from a snapshot taken at %d records, %d records at the consumer", saved, len(c.f.Records()))
	require.Eventually(t, func() bool {
		return testutil.Scrape(t, metrics)["pdsmux_repair_scans_total"] >= scans+3
	}, 30*time.Second, 20*time.Millisecond, "three repair scans over the restored Redis")
	t.Logf("%d more writes", c.e.writePaced(200, 5*time.Millisecond, 86, nil).Wait())
	c.check(t, 100)
	require.Contains(t, readLog(t, "pdsmux"), "restored Redis from the durable checkpoint")
}

// Three Cocoon replicas, 30% of events also streamed live by a second
// replica, subscribers of random replicas dropped every 20-100 ms, repair
// on: a strict consumer gets every record exactly once.
func TestCocoon_ThreeReplicasOverlapAndDisconnects(t *testing.T) {
	c := startCocoonRun(t, 3, 84)
	stop := make(chan struct{})
	wg := c.e.chaos(stop, 84)
	n := c.e.writePaced(400, 5*time.Millisecond, 84, nil).Wait()
	close(stop)
	wg.Wait()
	t.Logf("%d writes", n)
	c.check(t, 80)
}
