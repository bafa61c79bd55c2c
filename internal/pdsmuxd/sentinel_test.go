package pdsmuxd_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/pdsmux/pdsmux/internal/fakepds"
	"github.com/pdsmux/pdsmux/internal/pdsmuxd"
	"github.com/pdsmux/pdsmux/internal/testutil"
	"github.com/pdsmux/pdsmux/internal/testutil/consumer"
	"github.com/pdsmux/pdsmux/internal/testutil/faultproxy"
	"github.com/pdsmux/pdsmux/internal/testutil/redisserver"
)

// haPair is the two-device topology of docs/ha.md, on loopback: two
// pdsmux (an HA pair, in-process) with --redis-wait-replicas 1 behind a
// Sentinel URL, a primary and a replica redis-server, three
// redis-sentinel, two stock-Cocoon-like replicas with repair on, and a
// strict consumer that stays subscribed like a relay, reconnecting by
// cursor to either pdsmux in turn.
type haPair struct {
	e      *env
	nodes  [2]*redisserver.Server
	link   *faultproxy.Proxy // the replica replicates through it, when asked
	cur    int               // index of the primary in nodes
	sent   *redisserver.Sentinels
	a, b   *running
	bases  []string
	strict *consumer.Strict
	f      *consumer.Follower
}

// newHAPair starts the topology with n accounts. A repair carries at most
// 200 ops in one #commit (past that it is a #sync, which the suites count
// as a failure), so a run writing fast through failovers spreads its
// writes over enough accounts to stay under that per outage.
//
// With o.proxiedLink the replica replicates through a fault proxy
// (h.link), the network between the two devices, which a test can cut;
// the sentinels then get a failover-timeout longer than any test, or they
// would repoint the replica straight at the primary (+fix-slave-config)
// after it. Such a pair is not for failover tests. o.maxEntries, if set,
// is both pdsmux's --max-entries.
func newHAPair(t *testing.T, seed uint64, n int, o haOptions) *haPair {
	proxiedLink := o.proxiedLink
	primary := redisserver.Start(t, redisserver.Options{})
	h := &haPair{}
	upstream := primary.Addr()
	sopts := redisserver.SentinelOptions{Replicas: 1}
	if proxiedLink {
		h.link = faultproxy.Start(t, primary.Addr())
		upstream = h.link.Addr()
		sopts.FailoverTimeout = time.Hour
	}
	replica := redisserver.Start(t, redisserver.Options{ReplicaOf: upstream})
	replica.WaitReplicaOf(upstream, 20*time.Second)
	h.nodes = [2]*redisserver.Server{primary, replica}
	h.sent = redisserver.StartSentinels(t, 3, primary.Addr(), sopts)

	st := fakepds.NewStore(fakepds.ModeCocoon, seed)
	h.e = &env{t: t, dir: t.TempDir(), redis: primary, store: st}
	t0 := time.Now()
	restore := st.SetNow(func() time.Time { return t0 })
	for i := range 2 {
		r := st.NewReplica(fmt.Sprintf("r%d", i+1))
		require.NoError(t, r.Start(testutil.Listen(t)))
		t.Cleanup(r.Stop)
		h.e.replicas = append(h.e.replicas, r)
	}
	restore()
	st.Overlap = 0.3

	cfg := h.e.cocoonConfig()
	cfg.RedisURL = h.sent.URL()
	cfg.RedisWaitReplicas = 1
	cfg.RedisWaitTimeout = 200 * time.Millisecond
	if o.maxEntries > 0 {
		cfg.MaxEntries = o.maxEntries
	}
	h.a = h.e.start(cfg, "pdsmux-a")
	h.b = h.e.start(cfg, "pdsmux-b")
	waitConnected(t, h.a.rt)
	waitConnected(t, h.b.rt)
	h.bases = []string{"http://" + h.a.rt.Addr(), "http://" + h.b.rt.Addr()}
	h.strict = consumer.NewStrict(h.bases[1], st.Directory())
	h.f = followStrict(t, h.strict, h.bases...)
	h.e.createAccounts(n)
	return h
}

// haOptions shape newHAPair.
type haOptions struct {
	proxiedLink bool
	maxEntries  int64
}

// settle waits until every sentinel names one primary and the other node
// is its synced replica, and takes that primary as current. Usually the
// promoted one; but a new primary that stalls past down-after-milliseconds
// (a loaded machine, the returning node's full sync) is failed over
// again, as in production: the run goes on with whichever won.
func (h *haPair) settle(t *testing.T) {
	t.Helper()
	require.Eventually(t, func() bool {
		m := h.sent.AgreedMaster()
		for i, n := range h.nodes {
			if n.Addr() == m && h.nodes[1-i].IsReplicaOf(m) {
				h.cur = i
				return true
			}
		}
		return false
	}, 60*time.Second, 50*time.Millisecond, "the sentinels agree on a primary and the other node replicates it")
	h.e.redis = h.nodes[h.cur]
}

// check runs checkCocoon over both pdsmux and asserts reads went through
// the replication wait.
func (h *haPair) check(t *testing.T, minLost int) {
	h.e.redis = h.nodes[h.cur] // checkCocoon reads the log from the current primary
	ma, mb := h.a.rt.MetricsAddr(), h.b.rt.MetricsAddr()
	checkCocoon(t, h.e, cocoonCheck{f: h.f, strict: h.strict, metrics: []string{ma, mb}, minLost: minLost,
		repairs: func() map[string]float64 {
			out := repairCounts(t, ma)
			for k, v := range repairCounts(t, mb) {
				out[k] += v
			}
			return out
		}})
	for _, m := range []string{ma, mb} {
		s := testutil.Scrape(t, m)
		t.Logf("%s: %v replicated reads, %v wait timeouts", m, s["pdsmux_redis_wait_seconds_count"], s["pdsmux_redis_wait_timeouts_total"])
		require.Positive(t, s["pdsmux_redis_wait_seconds_count"], "reads went through the replication wait")
	}
}

// The Redis primary is SIGKILLed at 5 random moments while 20,000
// commits are written (issue 16, Must show 1); each time the sentinels
// promote the replica and the killed server comes back as the new
// primary's replica, and the consumer drops its connection and
// reconnects by cursor to the other pdsmux. It gets every record exactly
// once, no (did, rev) twice and seq strictly increasing, across sessions
// on both pdsmux.
//
// Before each kill the primary stops feeding its replica (lostTail), so
// the failover really loses the log's last entries, as an asynchronous
// replica lagging behind does: without --redis-wait-replicas the consumer
// would have been sent entries the new primary lacks, and got their
// (did, rev) again when the replicas' events are re-appended.
func TestHA_SentinelFailover(t *testing.T) {
	if raceEnabled {
		// Under -race on a loaded 2-core machine even a scaled run once
		// did not converge within checkCocoon's 30 s; it runs at full size
		// in make test-unit's plain pass.
		t.Skip("runs without -race in make test-unit's plain pass")
	}
	// A repair carries at most 200 ops in one #commit (newHAPair): a repo
	// further behind gets a #sync, and its records are never delivered
	// as creates. With 64 accounts the largest repair was 59-101 ops on
	// a loaded 2-core machine, and past 200 in every run with the whole
	// test on one core (5,136-12,303 records never delivered); 128
	// accounts halve what a repo gathers around a failover (largest
	// repair 37-55 ops on 2 cores, 121 on one).
	const kills, writes, accounts = 5, 20_000, 128
	h := newHAPair(t, 91, accounts, haOptions{})
	stop := make(chan struct{})
	w := h.e.writePaced(writes, 500*time.Microsecond, 91, stop)
	rnd := rand.New(rand.NewPCG(91, 91))
	span := writes / kills
	for k := range kills {
		// a random moment in the second half of the k-th fifth of the
		// writes, which go on until the last failover is over
		at := k*span + span/2 + rnd.IntN(span/2)
		require.Eventually(t, func() bool { return w.Written() >= at }, 120*time.Second, 5*time.Millisecond)
		old, next := h.nodes[h.cur], h.nodes[1-h.cur]
		// Sentinel promotes no replica cut off for more than ten times
		// down-after-milliseconds (10 s): under -race 20 entries can take
		// longer to come.
		lost := int64(20)
		if raceEnabled {
			lost = 5
		}
		lostTail(t, old, next, lost)
		// What the wait promises, and what a failover would take back
		// without it: the consumer has nothing the replica lacks.
		require.LessOrEqual(t, h.f.Last(), lastSeq(next.Client()), "the consumer got an entry the replica lacks")
		old.Kill()
		killedAt := time.Now()
		promoted := h.sent.WaitFailover(old.Addr(), 60*time.Second)
		require.Equal(t, next.Addr(), promoted, "the replica is promoted")
		h.f.Drop() // the relay reconnects, by cursor, to the other pdsmux
		t.Logf("kill %d after %d writes, %d records at the consumer; failover in %s",
			k+1, w.Written(), len(h.f.Records()), time.Since(killedAt).Round(time.Millisecond))
		old.RestartReplicaOf(promoted)
		h.settle(t)
	}
	close(stop)
	t.Logf("%d writes", w.Wait())
	h.check(t, writes/4)
	at := h.f.SessionsAt()
	require.GreaterOrEqual(t, at[h.bases[0]]+at[h.bases[1]], kills+1, "a session after each kill")
	require.Positive(t, at[h.bases[0]], "sessions through pdsmux-a")
	require.Positive(t, at[h.bases[1]], "sessions through pdsmux-b")
	t.Logf("consumer sessions per pdsmux: %v", at)
}

// The network between the two Redis nodes cut for 30 s while writes go on
// (issue 16, Must show 2): the replica replicates through a fault proxy,
// which closes its connection and refuses new ones for the cut. With
// --redis-wait-replicas 1 nothing the replica lacks reaches a subscriber
// (the waits time out and are retried) and the replicas' events pile up
// in the primary's log; once the link is back the replica resyncs and
// everything flows. The consumer gets every record once, no (did, rev)
// twice, seq strictly increasing.
//
// The cut is the fault under test, so it lasts a set time (the issue's
// 30 s, the length of a Tailscale or Wi-Fi outage, and longer than the
// 30 s between trims), and also until both pdsmux have seen replication
// waits time out and the primary holds entries the replica lacks, so it
// always covers the case it is for. --max-entries is 100: the trims
// during the cut find the log far over it with nothing delivered past the
// replica's last entry, and must keep all of it (before they were kept,
// a tester's run with the cap at 300 lost 7,978 records, silently).
func TestHA_ReplicationLinkCut(t *testing.T) {
	if raceEnabled {
		t.Skip("runs without -race in make test-unit's plain pass (a 30 s outage; the failover and merge suites cover the race detector)")
	}
	const cut = 30 * time.Second
	// A small --max-entries: the log passes it within the cut, and a
	// trim runs during it (every 30 s); nothing held back may be trimmed.
	h := newHAPair(t, 92, 8, haOptions{proxiedLink: true, maxEntries: 100})
	stop := make(chan struct{})
	w := h.e.writePaced(0, 2*time.Millisecond, 92, stop)
	require.Eventually(t, func() bool { return len(h.f.Records()) >= 200 }, 60*time.Second, 10*time.Millisecond)
	primary, replica := h.nodes[0], h.nodes[1]
	timeouts := func() (float64, float64) {
		return testutil.Scrape(t, h.a.rt.MetricsAddr())["pdsmux_redis_wait_timeouts_total"],
			testutil.Scrape(t, h.b.rt.MetricsAddr())["pdsmux_redis_wait_timeouts_total"]
	}
	ta, tb := timeouts()
	h.link.Cut()
	cutAt := time.Now()
	before := len(h.f.Records())
	require.Eventually(t, func() bool {
		a, b := timeouts()
		return time.Since(cutAt) >= cut && a >= ta+20 && b >= tb+20 && logAhead(t, primary, replica) >= 50
	}, cut+60*time.Second, 20*time.Millisecond, "both pdsmux wait for the replica while the link is cut")
	during := len(h.f.Records())
	ahead := logAhead(t, primary, replica)
	require.LessOrEqual(t, h.f.Last(), lastSeq(replica.Client()), "the consumer got nothing the cut-off replica lacks")
	hc, ok := h.a.rt.CheckHealth(context.Background())
	require.True(t, ok, "held back is not unavailable: the other pdsmux is held back alike")
	require.Contains(t, hc.Replication, "held back for", "health says why nothing is delivered")
	require.Greater(t, testutil.Scrape(t, h.a.rt.MetricsAddr())["pdsmux_redis_wait_held_back_seconds"], 20.0,
		"the held-back gauge (what the alert follows) counts the cut")
	h.link.Restore()
	replica.WaitReplicaOf(h.link.Addr(), 30*time.Second)
	t.Logf("link cut for %s: %d records at the consumer before, %d when healed; %d entries in the primary's log the replica lacked",
		time.Since(cutAt).Round(time.Millisecond), before, during, ahead)
	require.Eventually(t, func() bool { return len(h.f.Records()) >= during+200 }, 60*time.Second, 10*time.Millisecond, "records flow again")
	hc, _ = h.b.rt.CheckHealth(context.Background())
	require.Equal(t, "ok", hc.Replication)
	close(stop)
	t.Logf("%d writes", w.Wait())
	h.check(t, 100)
}

// lostTail cuts replication from primary to replica (the replica's
// PSYNC/SYNC/REPLCONF are refused by ACL and its link is killed) and
// waits until the primary's log holds at least n entries the replica
// lacks. The cut is for good: the primary is killed next (a replica whose
// handshake was half refused does not always stream again once the ACL
// is back; TestHA_ReplicationLinkCut cuts the network instead).
func lostTail(t *testing.T, primary, replica *redisserver.Server, n int64) {
	t.Helper()
	ctx := context.Background()
	pc := primary.Client()
	require.NoError(t, pc.Do(ctx, "ACL", "SETUSER", "default", "-psync", "-sync", "-replconf").Err())
	require.NoError(t, pc.Do(ctx, "CLIENT", "KILL", "TYPE", "replica").Err())
	require.Eventually(t, func() bool { return logAhead(t, primary, replica) >= n },
		30*time.Second, 10*time.Millisecond, "the primary's log gets %d entries ahead of its cut-off replica", n)
}

// logAhead is how many entries the primary's log holds past the replica's
// newest (0 while either is empty or unreadable).
func logAhead(t *testing.T, primary, replica *redisserver.Server) int64 {
	p, r := lastSeq(primary.Client()), lastSeq(replica.Client())
	if p == 0 || r == 0 {
		return 0
	}
	return countBetween(t, primary.Client(), r, p)
}

// lastSeq is the newest seq in c's log (0 while empty or unreadable).
func lastSeq(c *redis.Client) int64 {
	l, err := c.XRevRangeN(context.Background(), "{pdsmux}:log", "+", "-", 1).Result()
	if err != nil || len(l) == 0 {
		return 0
	}
	seq, _ := strconv.ParseInt(strings.TrimSuffix(l[0].ID, "-0"), 10, 64)
	return seq
}

func countBetween(t *testing.T, c *redis.Client, after, upto int64) int64 {
	l, err := c.XRange(context.Background(), "{pdsmux}:log", "("+strconv.FormatInt(after, 10)+"-0", strconv.FormatInt(upto, 10)+"-0").Result()
	require.NoError(t, err)
	return int64(len(l))
}

// A Sentinel URL whose master_name the sentinels do not monitor stops
// start-up with an error naming the setting and the name (go-redis only
// says every sentinel is "unreachable"); the right name starts.
func TestStart_SentinelURLWithAnUnknownMasterName(t *testing.T) {
	primary := redisserver.Start(t, redisserver.Options{})
	sent := redisserver.StartSentinels(t, 3, primary.Addr(), redisserver.SentinelOptions{})
	build := func(url string) error {
		cfg := pdsmuxd.DefaultConfig()
		cfg.Replicas, cfg.DBURL, cfg.RedisURL = []string{"r1=http://127.0.0.1:1"}, "file:"+t.TempDir()+"/x.db", url
		rt, err := pdsmuxd.Build(context.Background(), cfg, pdsmuxd.Options{Listener: testutil.Listen(t), MetricsListener: testutil.Listen(t)})
		if err == nil {
			require.NoError(t, rt.Close(context.Background()))
		}
		return err
	}
	err := build(strings.Replace(sent.URL(), "master_name="+redisserver.Master, "master_name=nosuch", 1))
	var ce *pdsmuxd.ConfigError
	require.True(t, errors.As(err, &ce), "a ConfigError: %v", err)
	require.Equal(t, "redis-url", ce.Setting)
	require.Contains(t, err.Error(), `monitors no master named "nosuch"`)
	require.NoError(t, build(sent.URL()))
}
