//go:build e2e

package e2e

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	_ "modernc.org/sqlite" // the relay's database, to read its persisted cursor

	"github.com/pdsmux/pdsmux/internal/fakepds"
	"github.com/pdsmux/pdsmux/internal/loopback"
	"github.com/pdsmux/pdsmux/internal/testutil"
	"github.com/pdsmux/pdsmux/internal/testutil/consumer"
)

// The strict indigo relay is stopped (it persists its cursor for pdsmux's
// host on the way down) while 50,000 commits of about 3 KB each are
// written through two replicas, then started again. It reconnects with
// its cursor and replays the backlog for many of pdsmux's ping intervals
// (1 s here) without being disconnected: pdsmux sees exactly one
// subscribeRepos request from it after the restart, and the relay logs no
// failed connection. Its own firehose ends with every written (did, rev)
// once and every record as a #commit create.
func TestE2E_RelayCatchesUpAfterOutage(t *testing.T) {
	const (
		nAccounts = 50
		nEvents   = 50_000
		textBytes = 1_000 // a long post: frames of about 3 KB (MST nodes and commit besides), as a real backlog
		ping      = time.Second
	)
	start := time.Now()
	env, caddyPort := newEnv(t)
	st := fakepds.NewStore(fakepds.ModeOwn, 7)
	reps, addrs, plcURL := fakeReplicas(t, st, "pds", caddyPort)

	_, redisURL, err := env.Redis("redis")
	require.NoError(t, err)
	mux, err := env.Pdsmux("pdsmux", "--redis-url", redisURL, "--plc-url", plcURL,
		"--replica", "pds1=http://"+addrs[0], "--replica", "pds2=http://"+addrs[1],
		"--ping-interval", ping.String(),
		// the door is not the subject here (the Cocoon suites keep it on):
		// 50,000 signature checks would only lengthen the run; and the
		// replicas stream every write, so nothing needs repair while
		// pdsmux works through the burst
		"--verify-commit-signatures=false", "--repair-grace", "10m")
	require.NoError(t, err)
	_, err = env.Caddy("caddy", caddyPort, mux.Addr, addrs)
	require.NoError(t, err)
	relay, err := env.Relay("relay", fmt.Sprintf("localhost:%d", caddyPort), plcURL)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	fh := consumer.Follow(ctx, []string{relay.URL}, 0)
	t.Cleanup(func() { cancel(); <-fh.Done() })

	var mu sync.Mutex
	wantRevs := map[key]bool{}
	wantRecs := map[consumer.Record]bool{}
	write := func(r *fakepds.Replica, a *fakepds.Account, i int, text string) {
		rkey := fmt.Sprintf("p%06d", i)
		rev, emitted, err := r.Write(a.DID, fakepds.Op{Action: "create", Collection: "app.bsky.feed.post",
			Rkey: rkey, Record: fakepds.Post(text, time.Now())})
		require.NoError(t, err)
		require.True(t, emitted)
		mu.Lock()
		wantRevs[key{a.DID, rev}] = true
		wantRecs[consumer.Record{DID: a.DID, Collection: "app.bsky.feed.post", Rkey: rkey}] = true
		mu.Unlock()
	}
	// the accounts, each with a first post, reach the relay live
	var accounts []*fakepds.Account
	for i := range nAccounts {
		a, err := reps[i%2].CreateAccount(fmt.Sprintf("user%d.test", i))
		require.NoError(t, err)
		accounts = append(accounts, a)
		write(reps[i%2], a, i, "hello")
	}
	waitRecords := func(within time.Duration) {
		t.Helper()
		require.Eventually(t, func() bool {
			got := fh.Records()
			for r := range wantRecs {
				if got[r] == 0 {
					return false
				}
			}
			return true
		}, within, 200*time.Millisecond, "records never reached the relay's firehose")
	}
	waitRecords(60 * time.Second)
	// One more post, alone in flight: the relay's parallel scheduler
	// records as its cursor the seq of an event that completes while the
	// lowest in flight, so after a burst it can stand below events it
	// handled (and re-request them after a restart, as at-least-once).
	write(reps[0], accounts[0], nAccounts+nEvents, "last before the outage")
	waitRecords(30 * time.Second)

	// the outage: a graceful stop, so the relay writes its host cursor
	relay.Stop(30 * time.Second)
	m0 := testutil.Scrape(t, mux.MetricsAddr)
	head0 := m0["pdsmux_fanout_head_seq"]
	relayCursor := relayHostCursor(t, filepath.Join(env.Dir, "relay", "relay.sqlite"))
	require.Equal(t, int64(head0), relayCursor, "the relay persisted pdsmux's newest seq as its cursor")
	text := strings.Repeat("the relay was away while this was written. ", textBytes/43+1)[:textBytes]
	wrote := time.Now()
	for i := range nEvents {
		// each replica writes the repos it created
		w := i % 2
		write(reps[w], accounts[(i/2*2+w)%nAccounts], nAccounts+i, text)
	}
	require.Eventually(t, func() bool {
		return testutil.Scrape(t, mux.MetricsAddr)["pdsmux_fanout_head_seq"] >= head0+nEvents
	}, 120*time.Second, 200*time.Millisecond, "pdsmux never logged the backlog")
	t.Logf("%d commits written and logged by pdsmux in %s", nEvents, time.Since(wrote).Round(time.Millisecond))

	relayLog0 := relayLines(t, relay, "host connection failed")
	m1 := testutil.Scrape(t, mux.MetricsAddr)
	restarted := time.Now()
	require.NoError(t, relay.Restart())
	waitRecords(300 * time.Second)
	caughtUp := time.Since(restarted)
	m2 := testutil.Scrape(t, mux.MetricsAddr)

	delta := func(k string) float64 { return m2[k] - m1[k] }
	replayFrames := delta(`pdsmux_subscriber_frames_total{phase=replay}`) + delta(`pdsmux_subscriber_frames_total{phase=archive}`)
	replayBytes := delta(`pdsmux_subscriber_bytes_total{phase=replay}`) + delta(`pdsmux_subscriber_bytes_total{phase=archive}`)
	t.Logf("relay restarted with its cursor and caught up in %s (%.0f ping intervals): %.0f frames, %.1f MB replayed",
		caughtUp.Round(time.Millisecond), caughtUp.Seconds()/ping.Seconds(), replayFrames, replayBytes/1e6)
	require.GreaterOrEqual(t, replayFrames, float64(nEvents), "the relay resumed from its cursor: the backlog was replayed")
	require.Greater(t, caughtUp, 5*ping, "the replay must last well over the ping interval to show anything")

	// never disconnected: one request after the restart, none failed
	reqs := 0.0
	for k := range m2 {
		if strings.HasPrefix(k, "pdsmux_subscribe_requests_total{") {
			reqs += delta(k)
		}
	}
	require.Equal(t, 1.0, reqs, "the relay connected once after its restart; another request is a reconnect")
	require.Equal(t, 1.0, delta(`pdsmux_subscribe_requests_total{outcome=replay}`), "the relay reconnected with its cursor")
	require.Zero(t, delta("pdsmux_subscriber_too_slow_total"))
	require.Equal(t, 1.0, m2["pdsmux_subscribers"], "the relay is still subscribed")
	require.Equal(t, relayLog0, relayLines(t, relay, "host connection failed"), "the relay's connection to pdsmux never failed")

	// every (did, rev) once, every record as a #commit op
	got := map[key][]int64{}
	for _, e := range fh.Events() {
		if e.Kind == "commit" {
			got[key{e.DID, e.Rev}] = append(got[key{e.DID, e.Rev}], e.Seq)
		}
	}
	var missing int
	var doubled []string
	for k := range wantRevs {
		switch {
		case len(got[k]) == 0:
			missing++
		case len(got[k]) > 1:
			doubled = append(doubled, fmt.Sprintf("%s %s at relay seqs %v", k.did, k.rev, got[k]))
		}
	}
	require.Zero(t, missing, "written (did, rev) missing on the relay's firehose")
	require.Empty(t, doubled, "(did, rev) twice on the relay's firehose (relay sessions: %d)", fh.Sessions())
	recs := fh.Records()
	for r := range wantRecs {
		require.Equal(t, 1, recs[r], "record %v", r)
	}
	pd, since, lines, err := relay.ChainWarnings()
	require.NoError(t, err)
	require.Zero(t, pd+since, "relay chain warnings:\n%s", strings.Join(lines, "\n"))
	t.Logf("relay firehose: %d (did, rev) each once, %d records; %d relay sessions; test wall time %s",
		len(wantRevs), len(wantRecs), fh.Sessions(), time.Since(start).Round(time.Second))
}

// relayHostCursor reads the cursor the stopped relay persisted for its
// one upstream host.
func relayHostCursor(t *testing.T, dbPath string) int64 {
	t.Helper()
	db, err := sql.Open("sqlite", dbPath)
	require.NoError(t, err)
	defer db.Close()
	var seq int64
	require.NoError(t, db.QueryRow(`SELECT last_seq FROM host`).Scan(&seq))
	return seq
}

// relayLines counts the relay's log lines containing s.
func relayLines(t *testing.T, r *loopback.Relay, s string) int {
	t.Helper()
	b, err := os.ReadFile(r.Log)
	require.NoError(t, err)
	return strings.Count(string(b), s)
}
