package proxy_test

import (
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/pdsmux/pdsmux/internal/pool"
	"github.com/pdsmux/pdsmux/internal/proxy"
	"github.com/pdsmux/pdsmux/internal/testutil"
)

// replica records what reached it and answers with h.
type replica struct {
	name string
	srv  *httptest.Server
	mu   sync.Mutex
	hits int
	last http.Header
}

func newReplica(t *testing.T, name string, h http.HandlerFunc) *replica {
	r := &replica{name: name}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.mu.Lock()
		r.hits++
		r.last = req.Header.Clone()
		r.mu.Unlock()
		h(w, req)
	}))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *replica) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.hits
}

func (r *replica) headers() http.Header {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.last
}

func ok(name string) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "from "+name) }
}

// front runs the proxy over reps, in that order in the pool.
func front(t *testing.T, reps ...*replica) (string, *pool.Pool, *prometheus.Registry) {
	var eps []pool.Endpoint
	for _, r := range reps {
		u, err := url.Parse(r.srv.URL)
		require.NoError(t, err)
		eps = append(eps, pool.Endpoint{Name: r.name, URL: u})
	}
	reg := prometheus.NewRegistry()
	lg := slog.New(slog.NewTextHandler(io.Discard, nil))
	p := pool.New(pool.Config{}, eps, http.DefaultClient, reg, lg)
	srv := httptest.NewServer(proxy.New(p, http.DefaultTransport, reg, lg))
	t.Cleanup(srv.Close)
	return srv.URL, p, reg
}

func do(t *testing.T, method, u string, hdr map[string]string) (int, string, error) {
	t.Helper()
	req, err := http.NewRequest(method, u, nil)
	require.NoError(t, err)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	// a fresh connection each time: Go's client would resend a GET whose
	// reused connection closed before any byte came back
	resp, err := (&http.Client{Transport: &http.Transport{DisableKeepAlives: true}}).Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// The chain from Caddy reaches the replica: X-Forwarded-For appended to,
// X-Forwarded-Proto/-Host and Forwarded kept; a client's X-Real-IP dropped.
// Without a chain, pdsmux starts one from what it saw.
func TestProxy_KeepsTheForwardingChain(t *testing.T) {
	r := newReplica(t, "r1", ok("r1"))
	base, _, _ := front(t, r)
	code, _, err := do(t, http.MethodGet, base+"/xrpc/com.atproto.sync.getLatestCommit?did=did:plc:x", map[string]string{
		"X-Forwarded-For":   "203.0.113.7",
		"X-Forwarded-Proto": "https",
		"X-Forwarded-Host":  "pds.example.com",
		"Forwarded":         "for=203.0.113.7;proto=https",
		"X-Real-IP":         "6.6.6.6",
	})
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, code)
	h := r.headers()
	require.Equal(t, []string{"203.0.113.7, 127.0.0.1"}, h.Values("X-Forwarded-For"))
	require.Equal(t, []string{"https"}, h.Values("X-Forwarded-Proto"))
	require.Equal(t, []string{"pds.example.com"}, h.Values("X-Forwarded-Host"))
	require.Equal(t, []string{"for=203.0.113.7;proto=https"}, h.Values("Forwarded"))
	require.Empty(t, h.Values("X-Real-Ip"))

	_, _, err = do(t, http.MethodGet, base+"/xrpc/com.atproto.sync.getLatestCommit?did=did:plc:x", nil)
	require.NoError(t, err)
	h = r.headers()
	require.Equal(t, []string{"127.0.0.1"}, h.Values("X-Forwarded-For"))
	require.Equal(t, []string{"http"}, h.Values("X-Forwarded-Proto"))
	require.Equal(t, []string{strings.TrimPrefix(base, "http://")}, h.Values("X-Forwarded-Host"))
	require.Empty(t, h.Values("Forwarded"))
}

// A 500 from one replica is retried on the other for a GET (the client
// never sees it) without marking the replica down; a POST is not retried.
func TestProxy_RetriesA5xxForGETOnly(t *testing.T) {
	bad := newReplica(t, "bad", func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, `{"error":"InternalServerError"}`, http.StatusInternalServerError)
	})
	good := newReplica(t, "good", ok("good"))
	base, p, reg := front(t, bad, good)
	const n = 6 // the pool rotates: bad is asked first for half of them
	for range n {
		code, body, err := do(t, http.MethodGet, base+"/xrpc/com.atproto.sync.getRepo?did=did:plc:x", nil)
		require.NoError(t, err)
		require.Equal(t, http.StatusOK, code)
		require.Equal(t, "from good", body)
	}
	require.Equal(t, n/2, bad.count())
	require.Equal(t, n, good.count())
	require.Equal(t, float64(n/2), testutil.Value(t, reg, "pdsmux_proxy_retries_total"))
	require.True(t, p.All()[0].Healthy(), "a 500 is the request's failure, not the replica's")

	codes := map[int]int{}
	for range 2 {
		code, _, err := do(t, http.MethodPost, base+"/xrpc/com.atproto.sync.notifyOfUpdate", nil)
		require.NoError(t, err)
		codes[code]++
	}
	require.Equal(t, map[int]int{500: 1, 200: 1}, codes, "a POST goes to one replica, its 500 passes through")
	require.Equal(t, n/2+1, bad.count())
	require.Equal(t, n+1, good.count())

	// Every replica fails: the last answer passes through as it is.
	only, _, _ := front(t, bad)
	code, body, err := do(t, http.MethodGet, only+"/xrpc/com.atproto.sync.getRepo?did=did:plc:x", nil)
	require.NoError(t, err)
	require.Equal(t, http.StatusInternalServerError, code)
	require.Contains(t, body, "InternalServerError")
}

// A body that started streaming is not retried: the client's response is
// cut, and the other replica is not asked.
func TestProxy_NoRetryOnceTheBodyStreams(t *testing.T) {
	cut := newReplica(t, "cut", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Length", "1000000")
		w.WriteHeader(http.StatusOK)
		io.WriteString(w, "partial"+strings.Repeat(".", 64<<10)) // past every buffer: the client has bytes
		w.(http.Flusher).Flush()
		c, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			c.(*net.TCPConn).SetLinger(0)
			c.Close()
		}
	})
	good := newReplica(t, "good", ok("good"))
	base, _, reg := front(t, cut, good)
	var errs, oks int
	for range 2 { // one of them asks cut first
		code, body, err := do(t, http.MethodGet, base+"/xrpc/com.atproto.sync.getRepo?did=did:plc:x", nil)
		require.Equal(t, http.StatusOK, code)
		if err != nil {
			require.True(t, strings.HasPrefix(body, "partial"), "%q", body)
			errs++
		} else {
			require.Equal(t, "from good", body)
			oks++
		}
	}
	require.Equal(t, 1, errs, "the cut body reaches the client as an error")
	require.Equal(t, 1, oks)
	require.Equal(t, 1, cut.count())
	require.Equal(t, 1, good.count(), "not asked again after cut started streaming")
	require.Equal(t, 0.0, testutil.Value(t, reg, "pdsmux_proxy_retries_total"))
}
