//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pdsmux/pdsmux/internal/fakepds"
	"github.com/pdsmux/pdsmux/internal/loopback"
	"github.com/pdsmux/pdsmux/internal/testutil"
	"github.com/pdsmux/pdsmux/internal/testutil/consumer"
)

// Stock Cocoon cannot run here (its module is not installable offline), so
// its measured behaviour runs as the fake replica: two replicas on one
// database whose seq counters collide, losing about half of all events,
// account creations (#identity, #sync) included, while every write
// succeeds. Through pdsmux and Caddy, the strict indigo relay's own
// firehose carries every post as a #commit create (counted by did,
// collection, rkey), every repo ends at the replicas' rev, with no chain
// warning, and no repair falls back to #sync.
func TestE2E_CocoonModelEveryPostReachesRelay(t *testing.T) {
	cocoonModelToRelay(t, false)
}

// The same with pdsmux SIGKILLed halfway through the writes and started
// again: every post still reaches the relay as a record.
func TestE2E_CocoonModelEveryPostReachesRelayAcrossSIGKILL(t *testing.T) {
	cocoonModelToRelay(t, true)
}

func cocoonModelToRelay(t *testing.T, kill bool) {
	env, caddyPort := newEnv(t)
	st := fakepds.NewStore(fakepds.ModeCocoon, 11)
	st.OmitUpdatePrev = true
	reps, addrs, plcURL := fakeReplicas(t, st, "cocoon", caddyPort)

	_, redisURL, err := env.Redis("redis")
	require.NoError(t, err)
	mux, err := env.Pdsmux("pdsmux", "--redis-url", redisURL, "--plc-url", plcURL,
		"--replica", "cocoon1=http://"+addrs[0], "--replica", "cocoon2=http://"+addrs[1],
		"--hold-timeout", "1s", "--scan-interval", "2s", "--repair-grace", "2s")
	require.NoError(t, err)
	_, err = env.Caddy("caddy", caddyPort, mux.Addr, addrs)
	require.NoError(t, err)
	relay, err := env.Relay("relay", fmt.Sprintf("localhost:%d", caddyPort), plcURL)
	require.NoError(t, err)
	fh, _, err := consumer.Dial(context.Background(), relay.URL, 0)
	require.NoError(t, err)
	t.Cleanup(fh.Close)

	// accounts created through both replicas: the colliding one loses
	// their creation events
	const nAccounts, nPosts = 6, 200
	rnd := rand.New(rand.NewPCG(1, 2))
	var accounts []*fakepds.Account
	for i := range nAccounts {
		a, err := reps[i%2].CreateAccount(fmt.Sprintf("user%d.test", i))
		require.NoError(t, err)
		accounts = append(accounts, a)
	}
	want := map[consumer.Record]bool{}
	for i := range nPosts {
		if kill && i == nPosts/2 {
			mux.Kill()
			require.NoError(t, mux.Restart())
			require.NoError(t, loopback.WaitHTTP("http://"+mux.Addr+"/xrpc/_health", 30*time.Second, mux.Proc))
		}
		a := accounts[rnd.IntN(len(accounts))]
		rkey := fmt.Sprintf("p%04d", i)
		_, _, err := reps[i%2].Write(a.DID, fakepds.Op{Action: "create", Collection: "app.bsky.feed.post",
			Rkey: rkey, Record: fakepds.Post(fmt.Sprint("post ", i), time.Now())})
		require.NoError(t, err)
		want[consumer.Record{DID: a.DID, Collection: "app.bsky.feed.post", Rkey: rkey}] = true
		time.Sleep(5 * time.Millisecond) // paces the writes like a person posting; nothing waits on it
	}
	t.Logf("the replicas lost %d of %d events", st.Lost, st.Lost+st.Emitted)
	require.Greater(t, st.Lost, nPosts/4, "the Cocoon model must lose events")
	lostCreations := 0
	for _, a := range accounts {
		if !st.Streamed(a.DID, "#sync") {
			lostCreations++
		}
	}
	t.Logf("accounts whose creation #sync was lost: %d of %d", lostCreations, nAccounts)
	require.Positive(t, lostCreations, "the model must lose account creations too")

	missing := func() []consumer.Record {
		got := fh.Records()
		var out []consumer.Record
		for r := range want {
			if got[r] == 0 {
				out = append(out, r)
			}
		}
		sort.Slice(out, func(i, j int) bool { return out[i].Rkey < out[j].Rkey })
		return out
	}
	require.Eventually(t, func() bool { return len(missing()) == 0 }, 90*time.Second, 200*time.Millisecond,
		"posts never delivered to the relay's firehose as #commit creates")
	rc := loopback.NewClient(relay.URL)
	for _, a := range accounts {
		require.Eventually(t, func() bool {
			_, rev, err := rc.LatestCommit(a.DID)
			return err == nil && rev == a.Rev()
		}, 60*time.Second, 200*time.Millisecond, "relay rev of %s", a.Handle)
	}
	pd, since, lines, err := relay.ChainWarnings()
	require.NoError(t, err)
	require.Zero(t, pd+since, "relay chain warnings:\n%s", strings.Join(lines, "\n"))

	m := testutil.Scrape(t, mux.MetricsAddr)
	byKind := map[string]float64{}
	for k, v := range m {
		if strings.HasPrefix(k, "pdsmux_repairs_total{") && v > 0 {
			byKind[k[len("pdsmux_repairs_total"):]] = v
		}
	}
	t.Logf("%d/%d posts on the relay's firehose as #commit creates; repairs by reason and kind (this process): %v; relay firehose: %v",
		len(want)-len(missing()), len(want), byKind, fh.Kinds())
	syncs := 0.0
	for k, v := range byKind {
		if strings.Contains(k, "kind=sync") {
			syncs += v
		}
	}
	require.Zero(t, syncs, "no repo here is over one commit's limits: no repair may fall back to #sync")
	// The subscribes to the restarted pdsmux so far: the relay's (the
	// test's own comes next).
	cursors := subscribeCursors(t, mux.Log)
	// pdsmux's own firehose, read from the start: every #commit and #sync
	// (did, rev) once, whatever the relay does with them.
	own, _, err := consumer.Dial(context.Background(), "http://"+mux.Addr, 0)
	require.NoError(t, err)
	t.Cleanup(own.Close)
	head := int64(testutil.Scrape(t, mux.MetricsAddr)["pdsmux_fanout_head_seq"])
	require.Eventually(t, func() bool {
		s := own.Seqs()
		return len(s) > 0 && s[len(s)-1] >= head
	}, 30*time.Second, 50*time.Millisecond, "pdsmux's firehose read up to its head %d", head)
	seqOf := map[string]int64{}
	for _, e := range own.Events() {
		if e.Kind == "commit" || e.Kind == "sync" {
			k := e.DID + " " + e.Rev
			_, twice := seqOf[k]
			require.False(t, twice, "pdsmux sent (did, rev) %s twice", k)
			seqOf[k] = e.Seq
		}
	}
	// The relay's #sync events: the account creations the replicas
	// streamed (a repair that fell back to #sync would carry a rev of its
	// own). The indigo relay may process one a second time after the
	// SIGKILL: it reconnects with its parallel scheduler's cursor, the
	// lowest seq all of whose predecessors it finished, so an event still
	// in flight at the disconnect (a creation waits on a DID lookup) is
	// asked for again, and the relay re-emits a #sync at the rev it has
	// (and any #identity) where it drops a #commit at that rev. Such a
	// repeat is allowed only when pdsmux was asked for it: a subscribe to
	// the restarted pdsmux has a cursor below its seq.
	relaySyncs := map[string]int{}
	for _, e := range fh.Events() {
		if e.Kind == "sync" {
			relaySyncs[e.DID+" "+e.Rev]++
		}
	}
	repeats := 0
	for k, n := range relaySyncs {
		if n == 1 {
			continue
		}
		require.True(t, kill, "(did, rev) %s: %d #sync on the relay without a disconnect", k, n)
		require.Equal(t, 2, n, "(did, rev) %s: %d #sync on the relay", k, n)
		seq, ok := seqOf[k]
		require.True(t, ok, "the relay's #sync %s is not in pdsmux's firehose", k)
		require.True(t, slices.ContainsFunc(cursors, func(c int64) bool { return c < seq }),
			"the relay had #sync %s (pdsmux seq %d) twice, but after the restart it asked only from cursors %v", k, seq, cursors)
		repeats++
	}
	t.Logf("relay firehose #sync: %d distinct (did, rev), %d of them twice (asked again after the restart, cursors %v)", len(relaySyncs), repeats, cursors)
	require.Equal(t, nAccounts-lostCreations, len(relaySyncs),
		"the only #sync events are the account creations the replicas streamed; another one is a repair that fell back")
	// Last, so a copy that came late is counted too. Every record once on
	// the relay, but for the same reconnect: a #commit still in flight in
	// the relay at the disconnect, asked for again, can pass its rev check
	// twice. Allowed only when every relay #commit carrying the record has
	// its (did, rev) in pdsmux's firehose above a cursor the relay asked
	// from after the restart.
	commitsOf := map[consumer.Record][]string{}
	for _, e := range fh.Events() {
		if e.Kind != "commit" {
			continue
		}
		for r, n := range consumer.CountRecords([]consumer.Event{e}) {
			for range n {
				commitsOf[r] = append(commitsOf[r], e.DID+" "+e.Rev)
			}
		}
	}
	askedAgain := 0
	for r, n := range fh.Records() {
		if n == 1 {
			continue
		}
		require.True(t, kill, "record %v delivered to the relay's firehose %d times without a disconnect", r, n)
		require.Equal(t, 2, n, "record %v delivered to the relay's firehose %d times", r, n)
		for _, k := range commitsOf[r] {
			seq, ok := seqOf[k]
			require.True(t, ok, "record %v: the relay's #commit %s is not in pdsmux's firehose", r, k)
			require.True(t, slices.ContainsFunc(cursors, func(c int64) bool { return c < seq }),
				"record %v twice on the relay (its #commit %s, pdsmux seq %d), but after the restart the relay asked only from cursors %v", r, k, seq, cursors)
		}
		askedAgain++
	}
	t.Logf("relay firehose records: %d, %d of them twice (asked again after the restart)", len(fh.Records()), askedAgain)
}

// subscribeCursors are the cursors of the subscribeRepos requests pdsmux
// logged since it last started (its log file spans restarts); a request
// without a cursor is left out.
func subscribeCursors(t *testing.T, logPath string) []int64 {
	t.Helper()
	b, err := os.ReadFile(logPath)
	require.NoError(t, err)
	text := string(b)
	if i := strings.LastIndex(text, "msg=\"pdsmux starting\""); i >= 0 {
		text = text[i:]
	}
	var out []int64
	for _, line := range strings.Split(text, "\n") {
		if !strings.Contains(line, "msg=\"subscriber connected\"") {
			continue
		}
		_, after, ok := strings.Cut(line, " cursor=")
		if !ok {
			continue
		}
		v, _, _ := strings.Cut(after, " ")
		if c, err := strconv.ParseInt(v, 10, 64); err == nil {
			out = append(out, c)
		}
	}
	return out
}
