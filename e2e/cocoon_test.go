//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pdsmux/pdsmux/internal/fakepds"
	"github.com/pdsmux/pdsmux/internal/testenv"
	"github.com/pdsmux/pdsmux/internal/testutil/consumer"
)

// Stock Cocoon cannot run here (its module is not installable offline), so
// its measured behaviour runs as the fake replica: two replicas on one
// database whose seq counters collide, losing about half the events while
// every write succeeds. Through pdsmux, the strict relay still ends with
// every repo at the replicas' rev and no chain warning: repair at work.
func TestE2E_CocoonModelRepairedForStrictRelay(t *testing.T) {
	env, err := testenv.New(t.TempDir(), deps)
	require.NoError(t, err)
	t.Cleanup(func() {
		if t.Failed() {
			t.Log(env.Logs(60))
		}
		env.Close()
	})
	caddyPort, err := testenv.FreePort()
	require.NoError(t, err)
	st := fakepds.NewStore(fakepds.ModeCocoon, 11)
	st.OmitUpdatePrev = true
	var reps []*fakepds.Replica
	var addrs []string
	for i := range 2 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		r := st.NewReplica(fmt.Sprintf("cocoon%d", i+1))
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
	plcURL := "http://localhost:" + strings.Split(pl.Addr().String(), ":")[1]

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

	rnd := rand.New(rand.NewPCG(1, 2))
	var accounts []*fakepds.Account
	for i := range 10 {
		a, err := reps[i%2].CreateAccount(fmt.Sprintf("user%d.test", i))
		require.NoError(t, err)
		accounts = append(accounts, a)
	}
	for i := range 500 {
		a := accounts[rnd.IntN(len(accounts))]
		_, _, err := reps[i%2].Write(a.DID, fakepds.Op{Action: "create", Collection: "app.bsky.feed.post",
			Rkey: fmt.Sprintf("p%04d", i), Record: fakepds.Post(fmt.Sprint("post ", i), time.Now())})
		require.NoError(t, err)
		time.Sleep(5 * time.Millisecond)
	}
	t.Logf("the replicas lost %d of %d events", st.Lost, st.Lost+st.Emitted)
	require.Greater(t, st.Lost, 100)

	rc := testenv.NewClient(relay.URL)
	for _, a := range accounts {
		require.Eventually(t, func() bool {
			_, rev, err := rc.LatestCommit(a.DID)
			return err == nil && rev == a.Rev()
		}, 60*time.Second, 200*time.Millisecond, "relay rev of %s", a.Handle)
	}
	pd, since, lines, err := relay.ChainWarnings()
	require.NoError(t, err)
	require.Zero(t, pd+since, "relay chain warnings:\n%s", strings.Join(lines, "\n"))
	kinds := map[string]int{}
	for _, e := range fh.Events() {
		kinds[e.Kind]++
	}
	t.Logf("every repo at the replicas' rev on the strict relay, no chain warning; relay firehose: %v", kinds)
}
