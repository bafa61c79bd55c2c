//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pdsmux/pdsmux/internal/loopback"
	"github.com/pdsmux/pdsmux/internal/testutil/consumer"
)

// Two reference PDS replicas with their own data, so each firehose carries
// only its own writes (as Cocoon replicas' do). 200 writes across four
// accounts, alternately through both replicas: the strict relay gets every
// one, once, with unbroken chains. Then a restart of pdsmux while writes
// continue.
func TestE2E_SplitReplicas(t *testing.T) {
	s := newStack(t, split)
	c1, c2 := loopback.NewClient(s.replicas[0].URL), loopback.NewClient(s.replicas[1].URL)
	var accs [2][]*loopback.Account
	var all []*loopback.Account
	for i := range 4 {
		c := []*loopback.Client{c1, c2}[i%2]
		a, err := c.CreateAccount(fmt.Sprintf("user%d.test", i))
		require.NoError(t, err)
		accs[i%2] = append(accs[i%2], a)
		all = append(all, a)
	}
	var w writer
	s.workload(&w, []*loopback.Client{c1, c2}, accs[:], 200, "split")
	s.checkRelay(&w, all, 60*time.Second)

	// Restart pdsmux while writes go on: the relay reconnects with its
	// cursor and still has every (did, rev) once, with no chain warning.
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.workload(&w, []*loopback.Client{c1, c2}, accs[:], 100, "restart")
	}()
	time.Sleep(500 * time.Millisecond)
	require.NoError(t, s.pdsmux.Restart())
	<-done
	s.checkRelay(&w, all, 90*time.Second)

	// The control: the same Caddy front with com.atproto.sync.* routed to
	// one replica, as before pdsmux. A fresh strict relay behind it misses
	// every write the other replica took, so this suite cannot pass by
	// accident.
	s.caddy.Stop(10 * time.Second)
	direct, err := s.env.Caddy("caddy-direct", s.caddyPort, s.replicaAddrs()[0], s.replicaAddrs(),
		"PDSMUX_ALIVE_URI=/xrpc/_health") // the replica has no pdsmux liveness path
	require.NoError(t, err)
	defer direct.Stop(5 * time.Second)
	control, err := s.env.Relay("relay-direct", fmt.Sprintf("localhost:%d", s.caddyPort), s.plcURL)
	require.NoError(t, err)
	fh, _, err := consumer.Dial(context.Background(), control.URL, 0)
	require.NoError(t, err)
	defer fh.Close()
	onReplica := map[string]int{}
	for i, as := range accs {
		for _, a := range as {
			onReplica[a.DID] = i
		}
	}
	want := w.all()
	var fromR1 int
	for k := range want {
		if onReplica[k.did] == 0 {
			fromR1++
		}
	}
	got := func() (r1, r2 int) {
		seen := map[key]bool{}
		for _, e := range fh.Events() {
			if e.Kind == "commit" && want[key{e.DID, e.Rev}] && !seen[key{e.DID, e.Rev}] {
				seen[key{e.DID, e.Rev}] = true
				if onReplica[e.DID] == 0 {
					r1++
				} else {
					r2++
				}
			}
		}
		return
	}
	require.Eventually(t, func() bool { r1, _ := got(); return r1 == fromR1 }, 60*time.Second, 200*time.Millisecond,
		"the control relay gets replica 1's writes")
	time.Sleep(2 * time.Second)
	r1, r2 := got()
	t.Logf("without pdsmux the relay saw %d of %d written commits (%d from replica 1, %d from replica 2)", r1+r2, len(want), r1, r2)
	require.Zero(t, r2, "without pdsmux, replica 2's writes never reach the relay")
	require.Less(t, r1+r2, len(want))
}

// Two reference PDS processes on one data directory behind Caddy: every
// firehose carries every event (with the same seqs), writes go through
// Caddy. Then one replica is stopped for 30 s while writes go through the
// other.
func TestE2E_SharedReplicas(t *testing.T) {
	s := newStack(t, shared)
	caddy := loopback.NewClient(s.caddyURL)
	var accs []*loopback.Account
	for i := range 4 {
		a, err := caddy.CreateAccount(fmt.Sprintf("user%d.test", i))
		require.NoError(t, err)
		accs = append(accs, a)
	}
	var w writer
	s.workload(&w, []*loopback.Client{caddy}, [][]*loopback.Account{accs}, 200, "shared")
	s.checkRelay(&w, accs, 60*time.Second)

	s.replicas[1].Stop(10 * time.Second)
	stopped := time.Now()
	for time.Since(stopped) < 30*time.Second {
		s.workload(&w, []*loopback.Client{caddy}, [][]*loopback.Account{accs}, 10, "degraded")
		time.Sleep(500 * time.Millisecond)
	}
	require.NoError(t, s.replicas[1].Restart())
	s.workload(&w, []*loopback.Client{caddy}, [][]*loopback.Account{accs}, 20, "recovered")
	s.checkRelay(&w, accs, 90*time.Second)
}

// The repository's Caddyfile passes the real `caddy validate`, as
// deployed (a public hostname, automatic HTTPS) and as the tests run it.
func TestCaddyfileValidates(t *testing.T) {
	for name, env := range map[string][]string{
		"compose":  {"PDS_SITE=pds.example.com", "PDSMUX_UPSTREAM=pdsmux:2480", "REPLICA_UPSTREAMS=cocoon1:8080 cocoon2:8080"},
		"loopback": {"PDS_SITE=:18443", "CADDY_BIND=127.0.0.1", "PDSMUX_UPSTREAM=127.0.0.1:2480", "REPLICA_UPSTREAMS=127.0.0.1:1 127.0.0.1:2", "HEALTH_INTERVAL=1s"},
	} {
		t.Run(name, func(t *testing.T) {
			cmd := exec.Command(deps.Caddy, "validate", "--adapter", "caddyfile", "--config", filepath.Join(loopback.RepoRoot(), "Caddyfile"))
			cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir(), "XDG_DATA_HOME=" + t.TempDir(), "XDG_CONFIG_HOME=" + t.TempDir()}, env...)
			out, err := cmd.CombinedOutput()
			require.NoError(t, err, "%s", out)
			require.Contains(t, string(out), "Valid configuration")
		})
	}
}
