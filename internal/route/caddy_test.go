package route_test

import (
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/pdsmux/pdsmux/internal/loopback"
	"github.com/pdsmux/pdsmux/internal/pdsmuxd"
	"github.com/pdsmux/pdsmux/internal/route"
	"github.com/pdsmux/pdsmux/internal/testutil"
)

// replica stands in for one Cocoon process behind Caddy: it answers
// /xrpc/_health and records, for every other request, which account it
// served (by the token it received, mapped back by the test) and which
// Pdsmux-Did header Caddy added.
type replica struct {
	name string
	addr string
	srv  *http.Server

	mu     sync.Mutex
	served map[string]int // account (or "anonymous") -> requests
	bad    []string
}

// routing says whether pdsmux is up: then Caddy must add the token's DID;
// while it is down, no Pdsmux-Did at all (never the client's).
func startReplica(t *testing.T, name string, accountOf map[string]string, routing *atomic.Bool) *replica {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	r := &replica{name: name, addr: ln.Addr().String(), served: map[string]int{}}
	r.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.URL.Path == "/xrpc/_health" {
			fmt.Fprint(w, `{"version":"test"}`)
			return
		}
		body, _ := io.ReadAll(req.Body)
		acct := "anonymous"
		if a := req.Header.Get("Authorization"); a != "" {
			acct = accountOf[a]
			if acct == "" {
				acct = "unknown"
			}
		}
		r.mu.Lock()
		defer r.mu.Unlock()
		r.served[acct]++
		switch {
		case routing.Load() && acct != "anonymous" && acct != "unknown" && req.Header.Get(route.Header) != acct,
			(!routing.Load() || acct == "anonymous" || acct == "unknown") && req.Header.Get(route.Header) != "":
			r.bad = append(r.bad, fmt.Sprintf("%s: %s=%q for %s", req.URL.Path, route.Header, req.Header.Get(route.Header), acct))
		case req.Header.Get("X-Real-Ip") != "" || req.Header.Get("X-Forwarded-For") != "127.0.0.1":
			r.bad = append(r.bad, fmt.Sprintf("%s: X-Real-IP %q, X-Forwarded-For %q", req.URL.Path, req.Header.Get("X-Real-Ip"), req.Header.Get("X-Forwarded-For")))
		case req.Method == http.MethodPost && string(body) != `{"for":"`+acct+`"}`:
			r.bad = append(r.bad, fmt.Sprintf("%s: body %q for %s", req.URL.Path, body, acct))
		}
		w.Header().Set("X-Replica", name)
		fmt.Fprint(w, `{}`)
	})}
	go func() { _ = r.srv.Serve(ln) }()
	t.Cleanup(func() { r.srv.Close() })
	return r
}

func (r *replica) snapshot() (map[string]int, []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]int, len(r.served))
	for k, v := range r.served {
		out[k] = v
	}
	r.served = map[string]int{}
	return out, append([]string(nil), r.bad...)
}

// router serves the route handler where pdsmux mounts it.
func startRouter(t *testing.T, addr string, h http.Handler) *http.Server {
	ln, err := net.Listen("tcp", addr)
	require.NoError(t, err)
	mux := http.NewServeMux()
	mux.Handle(route.Path, h)
	// Caddy's liveness check of pdsmux (the Caddyfile's health_uri)
	mux.HandleFunc("GET "+pdsmuxd.AlivePath, func(http.ResponseWriter, *http.Request) {})
	srv := &http.Server{Handler: mux}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close() })
	return srv
}

// The repository's Caddyfile on real Caddy, in front of three replicas and
// the router: 20 tokens (legacy Bearer and OAuth DPoP shapes) of 5
// accounts always land on their account's replica, POST bodies intact; a
// stopped replica's accounts move to the others and no other account
// moves; requests without a token, or with one pdsmux cannot read, are
// served; with the router down every request is still served, each token
// on one replica.
func TestCaddyfile_AccountAffineRouting(t *testing.T) {
	peers, err := loopback.Peers(os.Stderr, "caddy")
	require.NoError(t, err, "install caddy")
	env, err := loopback.New(t.TempDir(), loopback.Deps{Caddy: peers["CADDY"]})
	require.NoError(t, err)
	t.Cleanup(env.Close)
	t.Cleanup(func() {
		if t.Failed() {
			t.Log(env.Logs(40))
		}
	})

	reg := prometheus.NewRegistry()
	routerAddr, err := loopback.FreeAddrs(1)
	require.NoError(t, err)
	router := startRouter(t, routerAddr[0], route.New(route.NewMetrics(reg)))

	accountOf := map[string]string{} // Authorization value -> account
	var routing atomic.Bool
	routing.Store(true)
	var reps []*replica
	var addrs []string
	for i := range 3 {
		r := startReplica(t, fmt.Sprintf("r%d", i+1), accountOf, &routing)
		reps = append(reps, r)
		addrs = append(addrs, r.addr)
	}
	port, err := loopback.FreePort()
	require.NoError(t, err)
	_, err = env.Caddy("caddy", port, routerAddr[0], addrs)
	require.NoError(t, err)
	front := fmt.Sprintf("http://127.0.0.1:%d", port)
	for _, r := range reps { // the health probe through Caddy is not an account's
		r.snapshot()
	}

	client := &http.Client{Timeout: 10 * time.Second}
	send := func(authz, acct string) string {
		t.Helper()
		var req *http.Request
		if acct == "" {
			req, err = http.NewRequest(http.MethodGet, front+"/xrpc/com.atproto.server.describeServer", nil)
		} else {
			req, err = http.NewRequest(http.MethodPost, front+"/xrpc/com.atproto.repo.createRecord", strings.NewReader(`{"for":"`+acct+`"}`))
		}
		require.NoError(t, err)
		if authz != "" {
			req.Header.Set("Authorization", authz)
		}
		// a client cannot choose its replica
		req.Header.Set(route.Header, "did:plc:chosenbytheclient")
		// nor claim its address
		req.Header.Set("X-Real-IP", "6.6.6.6")
		req.Header.Set("X-Forwarded-For", "6.6.6.6")
		resp, err := client.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		_, _ = io.Copy(io.Discard, resp.Body)
		require.Equal(t, http.StatusOK, resp.StatusCode, "%s %s", req.Method, req.URL.Path)
		return resp.Header.Get("X-Replica")
	}
	// where collects, per account, the replicas that served it; every
	// request is counted exactly once across the replicas.
	where := func(sent map[string]int) map[string]map[string]bool {
		t.Helper()
		out := map[string]map[string]bool{}
		got := map[string]int{}
		for _, r := range reps {
			served, bad := r.snapshot()
			require.Empty(t, bad, r.name)
			for acct, n := range served {
				got[acct] += n
				if out[acct] == nil {
					out[acct] = map[string]bool{}
				}
				out[acct][r.name] = true
			}
		}
		require.Equal(t, sent, got, "every request served exactly once")
		return out
	}

	// 5 accounts, 4 tokens each. The hash depends on the replicas' random
	// ports, so draw accounts until they use at least two replicas: then
	// stopping one shows that the others' accounts stay.
	var accts []string
	var tokens []string
	for try := 0; ; try++ {
		require.Less(t, try, 20, "5 accounts never spread over two replicas")
		clear(accountOf)
		accts, tokens = nil, nil
		for a := range 5 {
			did := fmt.Sprintf("did:plc:acct%d%020d", a, rand.Int64N(1e18))
			accts = append(accts, did)
			for k := range 4 {
				var authz string
				if k%2 == 0 {
					authz = "Bearer " + token(t, jwt.MapClaims{"scope": "com.atproto.access", "sub": did, "jti": fmt.Sprint(k), "iat": time.Now().Unix()})
				} else {
					authz = "DPoP " + token(t, jwt.MapClaims{"scope": "atproto", "sub": did, "jti": fmt.Sprint(k), "client_id": "https://app.example/c.json"})
				}
				accountOf[authz] = did
				tokens = append(tokens, authz)
			}
		}
		sent := map[string]int{}
		for _, a := range accts {
			for authz, acct := range accountOf {
				if acct == a {
					send(authz, a)
					sent[a]++
					break
				}
			}
		}
		used := map[string]bool{}
		for _, rs := range where(sent) {
			for r := range rs {
				used[r] = true
			}
		}
		if len(used) >= 2 {
			break
		}
	}

	round := func(rounds int) map[string]string {
		t.Helper()
		sent := map[string]int{}
		for range rounds {
			for _, i := range rand.Perm(len(tokens)) {
				send(tokens[i], accountOf[tokens[i]])
				sent[accountOf[tokens[i]]]++
			}
		}
		home := map[string]string{}
		for acct, rs := range where(sent) {
			require.Len(t, rs, 1, "account %s served by %v", acct, rs)
			for r := range rs {
				home[acct] = r
			}
		}
		require.Len(t, home, len(accts))
		return home
	}
	before := round(3)
	t.Logf("accounts per replica: %v", before)

	// No token, and a token pdsmux cannot read: served, on any replica.
	for range 10 {
		send("", "")
		send("Bearer not-a-jwt", "")
	}
	require.Equal(t, map[string]int{"anonymous": 10, "unknown": 10}, func() map[string]int {
		sum := map[string]int{}
		for _, r := range reps {
			s, bad := r.snapshot()
			require.Empty(t, bad)
			for k, v := range s {
				sum[k] += v
			}
		}
		return sum
	}())

	// Stop the replica holding the first account: its accounts move, and
	// only them.
	down := before[accts[0]]
	var live []*replica
	for _, r := range reps {
		if r.name == down {
			require.NoError(t, r.srv.Close())
		} else {
			live = append(live, r)
		}
	}
	reps = live
	after := round(3)
	t.Logf("after stopping %s: %v", down, after)
	for _, a := range accts {
		if before[a] == down {
			require.NotEqual(t, down, after[a], a)
		} else {
			require.Equal(t, before[a], after[a], "%s did not live on the stopped replica and must not move", a)
		}
	}

	require.GreaterOrEqual(t, testutil.Value(t, reg, "pdsmux_route_decisions_total", "outcome", "routed"), float64(6*len(tokens)), "every token request was routed by pdsmux")
	require.Equal(t, float64(10), testutil.Value(t, reg, "pdsmux_route_decisions_total", "outcome", "malformed"))

	// pdsmux answers an error (an older pdsmux without the route: 404),
	// then goes down: the PDS stays up; each token stays on one replica
	// (the fallback hashes Authorization).
	fallback := func() {
		t.Helper()
		sent := map[string]int{}
		perToken := map[string]map[string]bool{}
		for range 2 {
			for _, authz := range tokens {
				r := send(authz, accountOf[authz])
				sent[accountOf[authz]]++
				if perToken[authz] == nil {
					perToken[authz] = map[string]bool{}
				}
				perToken[authz][r] = true
			}
		}
		where(sent)
		for authz, rs := range perToken {
			require.Len(t, rs, 1, "token of %s", accountOf[authz])
		}
		send("", "")
		where(map[string]int{"anonymous": 1})
	}
	require.NoError(t, router.Close())
	routing.Store(false)
	old := startRouter(t, routerAddr[0], http.NotFoundHandler())
	fallback()
	require.NoError(t, old.Close())
	fallback()
}
