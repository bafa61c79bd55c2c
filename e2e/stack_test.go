//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pdsmux/pdsmux/internal/fakepds"
	"github.com/pdsmux/pdsmux/internal/loopback"
	"github.com/pdsmux/pdsmux/internal/testutil/consumer"
)

// newEnv is a loopback environment (its processes' logs printed if the
// test fails, all stopped at its end) and a free port for Caddy.
func newEnv(t *testing.T) (*loopback.Env, int) {
	t.Helper()
	env, err := loopback.New(t.TempDir(), deps)
	require.NoError(t, err)
	t.Cleanup(func() {
		if t.Failed() {
			t.Log(env.Logs(60))
		}
		env.Close()
	})
	port, err := loopback.FreePort()
	require.NoError(t, err)
	return env, port
}

// stack is PLC, replicas, Redis, pdsmux, Caddy and a relay on loopback.
type stack struct {
	t         *testing.T
	env       *loopback.Env
	plcURL    string
	redisURL  string
	caddyPort int
	caddyURL  string
	secrets   loopback.PDSSecrets
	replicas  []*loopback.PDS
	pdsmux    *loopback.Pdsmux
	caddy     *loopback.Proc
	relay     *loopback.Relay
	firehose  *consumer.Consumer
}

const (
	split  = "split"  // a data directory per replica: each stream has its own writes only
	shared = "shared" // two processes on one data directory: each stream has every event
)

func newStack(t *testing.T, topology string) *stack {
	t.Helper()
	env, err := loopback.New(t.TempDir(), deps)
	require.NoError(t, err)
	s := &stack{t: t, env: env}
	t.Cleanup(func() {
		if t.Failed() {
			t.Log(env.Logs(60))
		}
		env.Close()
	})
	_, s.plcURL, err = env.PLC()
	require.NoError(t, err)
	_, s.redisURL, err = env.Redis("redis")
	require.NoError(t, err)
	s.caddyPort, err = loopback.FreePort()
	require.NoError(t, err)
	s.caddyURL = fmt.Sprintf("http://localhost:%d", s.caddyPort)
	s.secrets, err = loopback.NewPDSSecrets()
	require.NoError(t, err)
	for i := range 2 {
		dir := filepath.Join(env.Dir, "data-shared")
		if topology == split {
			dir = filepath.Join(env.Dir, fmt.Sprintf("data-%d", i+1))
		}
		// one after another: two starting at once on a fresh directory can
		// race on migrations
		p, err := env.PDS(fmt.Sprintf("pds%d", i+1), dir, s.plcURL, s.caddyURL, s.secrets)
		require.NoError(t, err)
		s.replicas = append(s.replicas, p)
	}
	s.startPdsmux("pdsmux")
	addrs := s.replicaAddrs()
	s.caddy, err = env.Caddy("caddy", s.caddyPort, s.pdsmux.Addr, addrs)
	require.NoError(t, err)
	s.relay, err = env.Relay("relay", fmt.Sprintf("localhost:%d", s.caddyPort), s.plcURL)
	require.NoError(t, err)
	s.firehose, _, err = consumer.Dial(context.Background(), s.relay.URL, 0)
	require.NoError(t, err)
	t.Cleanup(s.firehose.Close)
	return s
}

func (s *stack) replicaAddrs() []string {
	var addrs []string
	for _, r := range s.replicas {
		addrs = append(addrs, fmt.Sprintf("127.0.0.1:%d", r.Port))
	}
	return addrs
}

func (s *stack) startPdsmux(name string) {
	s.t.Helper()
	args := []string{"--redis-url", s.redisURL, "--plc-url", s.plcURL,
		"--hold-timeout", "2s", "--scan-interval", "3s", "--repair-grace", "3s", "--health-interval", "1s"}
	for i, r := range s.replicas {
		args = append(args, "--replica", fmt.Sprintf("pds%d=http://127.0.0.1:%d", i+1, r.Port))
	}
	var err error
	s.pdsmux, err = s.env.Pdsmux(name, args...)
	require.NoError(s.t, err)
}

// writer records every commit rev the replicas acknowledged.
type writer struct {
	mu   sync.Mutex
	revs map[key]bool
}

type key struct{ did, rev string }

func (w *writer) add(did, rev string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.revs == nil {
		w.revs = map[key]bool{}
	}
	w.revs[key{did, rev}] = true
}

func (w *writer) all() map[key]bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make(map[key]bool, len(w.revs))
	for k := range w.revs {
		out[k] = true
	}
	return out
}

// workload makes n writes across accounts, alternating the clients (which
// may be the replicas or Caddy): posts, likes of earlier posts, deletes.
func (s *stack) workload(w *writer, clients []*loopback.Client, accounts [][]*loopback.Account, n int, tag string) {
	s.t.Helper()
	type post struct {
		c   *loopback.Client
		a   *loopback.Account
		com loopback.Commit
	}
	var posts []post
	for i := range n {
		ci := i % len(clients)
		c := clients[ci]
		a := accounts[ci][(i/len(clients))%len(accounts[ci])]
		switch {
		case i%10 == 7 && len(posts) > 0: // delete one of this account's posts
			for j := len(posts) - 1; j >= 0; j-- {
				if posts[j].a == a {
					rkey := posts[j].com.URI[strings.LastIndex(posts[j].com.URI, "/")+1:]
					rev, err := c.DeleteRecord(a, "app.bsky.feed.post", rkey)
					require.NoError(s.t, err)
					w.add(a.DID, rev)
					posts = append(posts[:j], posts[j+1:]...)
					break
				}
			}
		case i%5 == 3 && len(posts) > 0: // like someone's post
			p := posts[len(posts)/2]
			com, err := c.CreateRecord(a, "app.bsky.feed.like", loopback.Like(p.com.URI, p.com.CID))
			require.NoError(s.t, err)
			w.add(a.DID, com.Rev)
		default:
			com, err := c.CreateRecord(a, "app.bsky.feed.post", loopback.Post(fmt.Sprintf("%s post %d", tag, i)))
			require.NoError(s.t, err)
			w.add(a.DID, com.Rev)
			posts = append(posts, post{c: c, a: a, com: com})
		}
	}
}

// relayRevs counts (did, rev) of #commit events on the relay's firehose.
func (s *stack) relayRevs() map[key]int {
	out := map[key]int{}
	for _, e := range s.firehose.Events() {
		if e.Kind == "commit" {
			out[key{e.DID, e.Rev}]++
		}
	}
	return out
}

// checkRelay waits until the relay has every written (did, rev), then
// asserts each exactly once, every repo at the replica's rev, and no chain
// warning in the relay's log.
func (s *stack) checkRelay(w *writer, accounts []*loopback.Account, within time.Duration) {
	s.t.Helper()
	want := w.all()
	deadline := time.Now().Add(within)
	var missing []key
	for {
		got := s.relayRevs()
		missing = missing[:0]
		for k := range want {
			if got[k] == 0 {
				missing = append(missing, k)
			}
		}
		if len(missing) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	sort.Slice(missing, func(i, j int) bool { return missing[i].rev < missing[j].rev })
	require.Empty(s.t, missing, "written (did, rev) missing at the relay")
	var doubled []key
	for k, n := range s.relayRevs() {
		if n > 1 {
			doubled = append(doubled, k)
		}
	}
	require.Empty(s.t, doubled, "(did, rev) doubled at the relay")
	relay := loopback.NewClient(s.relay.URL)
	for _, a := range accounts {
		_, want, err := loopback.NewClient(s.caddyURL).LatestCommit(a.DID)
		require.NoError(s.t, err)
		require.Eventually(s.t, func() bool {
			_, got, err := relay.LatestCommit(a.DID)
			return err == nil && got == want
		}, 20*time.Second, 100*time.Millisecond, "relay rev of %s", a.Handle)
	}
	pd, since, lines, err := s.relay.ChainWarnings()
	require.NoError(s.t, err)
	require.Zero(s.t, pd+since, "relay chain warnings:\n%s", strings.Join(lines, "\n"))
	s.t.Logf("relay: %d written (did, rev) each seen once, %d repos at the replicas' rev, no chain warning", len(want), len(accounts))
}

// fakeReplicas starts two fake replicas of st (name1, name2) on loopback
// and a PLC directory serving st's accounts, whose DID documents point at
// Caddy on caddyPort. It returns the replicas, their addresses and the
// PLC's URL (by "localhost", as the relay resolves it).
func fakeReplicas(t *testing.T, st *fakepds.Store, name string, caddyPort int) ([]*fakepds.Replica, []string, string) {
	var reps []*fakepds.Replica
	var addrs []string
	for i := range 2 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		r := st.NewReplica(fmt.Sprintf("%s%d", name, i+1))
		require.NoError(t, r.Start(l))
		t.Cleanup(r.Stop)
		reps = append(reps, r)
		addrs = append(addrs, l.Addr().String())
	}
	pl, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	plcSrv := &http.Server{Handler: st.PLCHandler(fmt.Sprintf("http://localhost:%d", caddyPort))}
	go func() { _ = plcSrv.Serve(pl) }()
	t.Cleanup(func() { plcSrv.Close() })
	return reps, addrs, "http://localhost:" + strings.Split(pl.Addr().String(), ":")[1]
}
