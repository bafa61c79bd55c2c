//go:build e2e

package e2e

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pdsmux/pdsmux/internal/fakepds"
	"github.com/pdsmux/pdsmux/internal/loopback"
	"github.com/pdsmux/pdsmux/internal/testutil"
	"github.com/pdsmux/pdsmux/internal/testutil/consumer"
)

// Two pdsmux on one Redis and one libsql file (an HA pair, docs/ha.md)
// behind the repository's Caddyfile with PDSMUX_UPSTREAM="a b", the strict
// indigo relay subscribed through Caddy. The pdsmux the relay is connected
// to is SIGKILLed while posts go on through two replicas; the relay
// reconnects through Caddy, with its cursor, to the survivor at its first
// dial (Caddy retries a refused dial on the other pdsmux and then skips
// the dead one), and its own firehose ends with every post once as a
// #commit create and every (did, rev) once, with no chain or validation
// warning. While one pdsmux stays dead, every sync call through Caddy
// (subscribeRepos and a proxied call) still answers.
func TestE2E_HAPairBehindCaddyOneKilled(t *testing.T) {
	const (
		nAccounts   = 8
		beforeKill  = 150 // posts on the relay's firehose before the kill
		afterKill   = 300 // posts written after it
		probes      = 20  // sync calls of each kind through Caddy with one pdsmux dead
		pacePerPost = 2 * time.Millisecond
	)
	start := time.Now()
	env, caddyPort := newEnv(t)
	st := fakepds.NewStore(fakepds.ModeOwn, 16)
	st.Overlap = 0.3 // some events reach the pair from both replicas: the log keeps them once
	reps, addrs, plcURL := fakeReplicas(t, st, "pds", caddyPort)

	_, redisURL, err := env.Redis("redis")
	require.NoError(t, err)
	args := []string{"--redis-url", redisURL, "--plc-url", plcURL,
		// the embedded database, shared: both run on one host here
		"--db-url", "file:" + filepath.Join(env.Dir, "pdsmux.db"),
		"--replica", "pds1=http://" + addrs[0], "--replica", "pds2=http://" + addrs[1]}
	// one after another: the first creates the schema
	muxA, err := env.Pdsmux("pdsmux-a", args...)
	require.NoError(t, err)
	muxB, err := env.Pdsmux("pdsmux-b", args...)
	require.NoError(t, err)
	_, err = env.Caddy("caddy", caddyPort, muxA.Addr+" "+muxB.Addr, addrs)
	require.NoError(t, err)
	relay, err := env.Relay("relay", fmt.Sprintf("localhost:%d", caddyPort), plcURL)
	require.NoError(t, err)
	fh, _, err := consumer.Dial(context.Background(), relay.URL, 0)
	require.NoError(t, err)
	t.Cleanup(fh.Close)

	var accounts []*fakepds.Account
	for i := range nAccounts {
		a, err := reps[i%2].CreateAccount(fmt.Sprintf("user%d.test", i))
		require.NoError(t, err)
		accounts = append(accounts, a)
	}

	// The writer posts until stopped, each replica to the accounts it
	// created (one account on one replica, as Caddy routes them).
	var (
		mu       sync.Mutex
		wantRevs = map[key]bool{}
		wantRecs = map[consumer.Record]bool{}
		written  atomic.Int64
		stop     = make(chan struct{})
		wrote    = make(chan error, 1)
	)
	go func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				wrote <- nil
				return
			default:
			}
			w := i % 2
			a := accounts[(i/2*2+w)%nAccounts]
			rkey := fmt.Sprintf("p%05d", i)
			rev, emitted, err := reps[w].Write(a.DID, fakepds.Op{Action: "create", Collection: "app.bsky.feed.post",
				Rkey: rkey, Record: fakepds.Post(fmt.Sprint("post ", i), time.Now())})
			if err == nil && !emitted {
				err = errors.New("a ModeOwn replica lost an event")
			}
			if err != nil {
				wrote <- fmt.Errorf("post %d: %w", i, err)
				return
			}
			mu.Lock()
			wantRevs[key{a.DID, rev}] = true
			wantRecs[consumer.Record{DID: a.DID, Collection: "app.bsky.feed.post", Rkey: rkey}] = true
			mu.Unlock()
			written.Add(1)
			time.Sleep(pacePerPost) // paces the writes like a busy PDS; nothing waits on it
		}
	}()
	stopWriter := func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
	}
	t.Cleanup(stopWriter)

	scrape := func(m *loopback.Pdsmux) map[string]float64 { return testutil.Scrape(t, m.MetricsAddr) }
	requests := func(m map[string]float64) float64 {
		n := 0.0
		for k, v := range m {
			if strings.HasPrefix(k, "pdsmux_subscribe_requests_total{") {
				n += v
			}
		}
		return n
	}

	// Mid-stream: the relay has taken posts through one of the pair.
	require.Eventually(t, func() bool { return len(fh.Records()) >= beforeKill }, 60*time.Second, 50*time.Millisecond,
		"posts never reached the relay's firehose")
	var victim, survivor *loopback.Pdsmux
	require.Eventually(t, func() bool {
		a, b := scrape(muxA)["pdsmux_subscribers"], scrape(muxB)["pdsmux_subscribers"]
		switch {
		case a == 1 && b == 0:
			victim, survivor = muxA, muxB
		case a == 0 && b == 1:
			victim, survivor = muxB, muxA
		default:
			return false
		}
		return true
	}, 10*time.Second, 50*time.Millisecond, "the relay holds one subscribeRepos on one pdsmux")
	// The other pdsmux frozen (SIGSTOP: its sockets stay open but nothing
	// answers, as a hung process or a device off the tailnet looks to
	// Caddy): Caddy's liveness check takes it out of rotation, and then
	// every sync call through Caddy answers, none hangs on it.
	base := fmt.Sprintf("http://127.0.0.1:%d", caddyPort)
	quick := &http.Client{Timeout: 3 * time.Second}
	answered := func(n int) bool {
		for i := range n {
			resp, err := quick.Get(fmt.Sprintf("%s/xrpc/com.atproto.sync.getLatestCommit?did=%s", base, accounts[i%nAccounts].DID))
			if err != nil {
				return false
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return false
			}
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			c, _, err := consumer.Dial(ctx, base, -1)
			cancel()
			if err != nil {
				return false
			}
			c.Close()
		}
		return true
	}
	survivor.Freeze()
	frozen := time.Now()
	require.Eventually(t, func() bool { return answered(probes) }, 30*time.Second, 10*time.Millisecond,
		"with %s frozen, %d sync calls in a row through Caddy answer within 3 s", survivor.Name, probes)
	outAfter := time.Since(frozen)
	survivor.Thaw()
	back := requests(scrape(survivor))
	require.Eventually(t, func() bool { return answered(1) && requests(scrape(survivor)) > back }, 30*time.Second, 10*time.Millisecond,
		"%s back in rotation after it was thawed", survivor.Name)
	t.Logf("%s frozen: out of rotation (%d+%d sync calls in a row answered) %s after; back after it was thawed",
		survivor.Name, probes, probes, outAfter.Round(time.Millisecond))

	victimReqs := requests(scrape(victim))
	m0 := scrape(survivor)
	dials0, drops0 := relayLines(t, relay, "dialing failed"), relayLines(t, relay, "host connection failed")
	onRelay := len(fh.Records())
	atKill := written.Load()
	killed := time.Now()
	victim.Kill()

	require.Eventually(t, func() bool {
		m := scrape(survivor)
		return requests(m) > requests(m0) && m["pdsmux_subscribers"] == 1
	}, 30*time.Second, 20*time.Millisecond, "the relay never reconnected to the survivor")
	reconnect := time.Since(killed)
	require.Eventually(t, func() bool { return written.Load() >= atKill+afterKill }, 60*time.Second, 20*time.Millisecond,
		"the writer stalled")
	stopWriter()
	require.NoError(t, <-wrote)
	t.Logf("%s SIGKILLed with the relay on it (%d posts on the relay's firehose, %d written); the relay was on %s %s later; %d posts written in all",
		victim.Name, onRelay, atKill, survivor.Name, reconnect.Round(time.Millisecond), written.Load())

	// every post on the relay's firehose, and every repo at its head
	missing := func() int {
		got := fh.Records()
		n := 0
		for r := range wantRecs {
			if got[r] == 0 {
				n++
			}
		}
		return n
	}
	require.Eventually(t, func() bool { return missing() == 0 }, 60*time.Second, 100*time.Millisecond,
		"posts never delivered to the relay's firehose as #commit creates")
	rc := loopback.NewClient(relay.URL)
	for _, a := range accounts {
		require.Eventually(t, func() bool {
			_, rev, err := rc.LatestCommit(a.DID)
			return err == nil && rev == a.Rev()
		}, 30*time.Second, 100*time.Millisecond, "relay rev of %s", a.Handle)
	}
	m1 := scrape(survivor)

	// exactly once, by record and by (did, rev); nothing else as a commit
	for r, n := range fh.Records() {
		require.True(t, wantRecs[r], "record %v was never written", r)
		require.Equal(t, 1, n, "record %v on the relay's firehose", r)
	}
	seqs := map[key][]int64{}
	for _, e := range fh.Events() {
		if e.Kind == "commit" {
			seqs[key{e.DID, e.Rev}] = append(seqs[key{e.DID, e.Rev}], e.Seq)
		}
	}
	for k, s := range seqs {
		require.True(t, wantRevs[k], "commit %s %s was never written (a repair?)", k.did, k.rev)
		require.Len(t, s, 1, "%s %s on the relay's firehose at seqs %v", k.did, k.rev, s)
	}
	require.Len(t, seqs, len(wantRevs), "written (did, rev) missing on the relay's firehose")
	require.Equal(t, nAccounts, fh.Kinds()["sync"], "one #sync per account creation, nothing more")

	// no chain or validation warning, no event the relay refused
	pd, since, lines, err := relay.ChainWarnings()
	require.NoError(t, err)
	require.Zero(t, pd+since, "relay chain warnings:\n%s", strings.Join(lines, "\n"))
	for _, w := range []string{"failed verification", "failed strict validation", "failed to invert commit MST",
		"failed handling event", "skipping commit signature validation", "error event from upstream"} {
		require.Zero(t, relayLines(t, relay, w), "relay log: %q", w)
	}

	// One drop, then the first dial through Caddy reached the survivor
	// (the relay backs off from its second failed dial on and gives the
	// host up after 16); it asked with its cursor (a replay).
	drops, dials := relayLines(t, relay, "host connection failed")-drops0, relayLines(t, relay, "dialing failed")-dials0
	require.Equal(t, 1, drops, "the relay lost its connection once")
	require.Zero(t, dials, "the relay's first dial after the kill reached the survivor")
	require.Equal(t, 1.0, requests(m1)-requests(m0), "one subscribeRepos on the survivor after the kill: the relay's")
	require.Equal(t, 1.0, m1["pdsmux_subscribe_requests_total{outcome=replay}"]-m0["pdsmux_subscribe_requests_total{outcome=replay}"],
		"the relay reconnected with its cursor")

	// With one pdsmux dead, every sync call through Caddy answers: Caddy
	// never hands one to the dead upstream.
	for i := range probes {
		c, resp, err := consumer.Dial(context.Background(), fmt.Sprintf("http://127.0.0.1:%d", caddyPort), -1)
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		require.NoError(t, err, "subscribeRepos %d through Caddy (HTTP %d)", i, status)
		c.Close()
		resp, err = http.Get(fmt.Sprintf("http://127.0.0.1:%d/xrpc/com.atproto.sync.getLatestCommit?did=%s", caddyPort, accounts[i%nAccounts].DID))
		require.NoError(t, err)
		resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode, "getLatestCommit %d through Caddy", i)
	}
	m2 := scrape(survivor)
	require.Equal(t, float64(probes), m2["pdsmux_subscribe_requests_total{outcome=live}"]-m1["pdsmux_subscribe_requests_total{outcome=live}"],
		"every probe reached the survivor")

	// "old revs": the relay's cursor is the newest seq below which it has
	// handled everything, so it asked again for a few commits it had
	// handled out of order and refused them; none reached its firehose
	// twice (checked above).
	t.Logf("relay firehose: %d posts once as #commit creates, %d (did, rev) once, %d #sync; relay sessions: %.0f on %s, 1 on %s "+
		"(dials failed after the kill: %d, drops: %d, old revs re-sent and refused: %d); 0 chain/validation warnings; %d+%d sync calls through Caddy all answered; test wall time %s",
		len(wantRecs), len(seqs), fh.Kinds()["sync"], victimReqs, victim.Name, survivor.Name,
		dials, drops, relayLines(t, relay, "dropping commit with old rev"), probes, probes, time.Since(start).Round(time.Second))
}
