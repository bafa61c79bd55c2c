package pdsmuxd_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/require"

	"github.com/pdsmux/pdsmux/internal/fakepds"
	"github.com/pdsmux/pdsmux/internal/frame"
	"github.com/pdsmux/pdsmux/internal/testutil"
	"github.com/pdsmux/pdsmux/internal/testutil/proc"
	"github.com/pdsmux/pdsmux/internal/testutil/redisserver"
)

// 1,000 concurrent idle subscribers: pdsmux stays under 200 MiB RSS and
// every one of them receives the next event.
func TestServe_ThousandIdleSubscribers(t *testing.T) {
	t.Parallel()
	e := newEnv(t, fakepds.ModeOwn, 1, redisserver.Options{})
	p, base := e.startProcAt("pdsmux")
	e.createAccounts(1)
	l := e.reader()
	waitLog(t, l, 2, 10*time.Second) // #identity and #sync are in before anyone subscribes
	b, err := l.Bounds(context.Background())
	require.NoError(t, err)
	idleRSS, _ := p.Memory()

	// Each subscribes with the newest seq as its cursor, as a relay that is
	// up to date does: it gets the next event whether or not it has joined
	// the broadcaster by the time that event is appended.
	const n = 1000
	url := "ws" + strings.TrimPrefix(base, "http") + "/xrpc/com.atproto.sync.subscribeRepos?cursor=" + strconv.FormatInt(b.Last, 10)
	conns := make([]*websocket.Conn, n)
	for i := range conns {
		c, _, err := websocket.DefaultDialer.Dial(url, nil)
		require.NoError(t, err)
		conns[i] = c
		defer c.Close()
	}
	require.Eventually(t, func() bool {
		m := testutil.Scrape(t, metricsAddr(t, p.Output()))
		return m["pdsmux_subscribers"] == n
	}, 30*time.Second, 100*time.Millisecond)
	rss, _ := p.Memory()
	t.Logf("pdsmux RSS: %.1f MiB idle, %.1f MiB with %d idle subscribers", float64(idleRSS)/(1<<20), float64(rss)/(1<<20), n)
	require.Less(t, rss, int64(200<<20))

	e.writeCommits(1, 1)
	var wg sync.WaitGroup
	var mu sync.Mutex
	got := 0
	var errs []string
	for _, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
			_, b, err := c.ReadMessage()
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err.Error())
				return
			}
			in, err := frame.Parse(b, 0)
			if err == nil && in.Kind == frame.KindCommit {
				got++
				return
			}
			errs = append(errs, fmt.Sprintf("%s %v", in.Kind, err))
		}()
	}
	wg.Wait()
	require.Empty(t, errs)
	require.Equal(t, n, got, "every idle subscriber received the next event")
}

// metricsAddr finds the metrics listener in a pdsmux log.
func metricsAddr(t *testing.T, log string) string {
	t.Helper()
	i := strings.Index(log, "metrics=")
	require.GreaterOrEqual(t, i, 0, "no metrics address in the log")
	rest := log[i+len("metrics="):]
	return strings.Fields(rest)[0]
}

// sink is a replica stand-in for proxy tests: health, a 20 MB getRepo
// streamed in chunks, and a 404 for a repo it lacks.
func bigReplica(t *testing.T, name string, hasRepo bool) string {
	ln := testutil.Listen(t)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /xrpc/_health", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, `{"version":"x"}`) })
	mux.HandleFunc("GET /xrpc/com.atproto.sync.getRepo", func(w http.ResponseWriter, r *http.Request) {
		if !hasRepo {
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("X-Replica", name)
			w.WriteHeader(http.StatusBadRequest)
			_, _ = io.WriteString(w, `{"error":"RepoNotFound","message":"Could not find repo for DID: `+r.URL.Query().Get("did")+`"}`)
			return
		}
		w.Header().Set("Content-Type", "application/vnd.ipld.car")
		w.Header().Set("X-Replica", name)
		chunk := make([]byte, 64<<10)
		for i := range 320 { // 20 MiB
			chunk[0] = byte(i)
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	})
	mux.HandleFunc("GET /xrpc/com.atproto.sync.getRecord", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Replica", name)
		w.WriteHeader(http.StatusNotFound)
		_, _ = io.WriteString(w, `{"error":"NotFound","message":"no such record `+r.URL.RawQuery+`"}`)
	})
	go func() { _ = http.Serve(ln, mux) }()
	return "http://" + ln.Addr().String()
}

// The proxy against real HTTP upstreams: a down replica is skipped, a
// 20 MB body streams through without being held whole, a replica that
// lacks the repo is skipped, and a 404 every replica gives passes through
// as it is.
func TestProxy_SkipsDownReplicasAndStreams(t *testing.T) {
	t.Parallel()
	e := newEnv(t, fakepds.ModeOwn, 0, redisserver.Options{})
	down := fmt.Sprintf("http://127.0.0.1:%d", testutil.FreePort(t)) // nothing listens
	lacks := bigReplica(t, "lacks", false)
	has := bigReplica(t, "has", true)
	listen := fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t))
	metrics := fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t))
	args := append(e.args(listen, metrics), "--replica", "down="+down, "--replica", "lacks="+lacks, "--replica", "has="+has, "--health-interval", "500ms")
	p := proc.Start(t, "pdsmux", proc.Pdsmux(t), args)
	base := "http://" + listen
	waitHTTP(t, base+"/xrpc/_health")
	_, peakBefore := p.Memory()

	for i := range 3 { // every rotation order
		resp, err := http.Get(base + "/xrpc/com.atproto.sync.getRepo?did=did:plc:abc")
		require.NoError(t, err)
		require.Equal(t, http.StatusOK, resp.StatusCode, "try %d", i)
		require.Equal(t, "has", resp.Header.Get("X-Replica"))
		require.Equal(t, "application/vnd.ipld.car", resp.Header.Get("Content-Type"))
		n, err := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		require.NoError(t, err)
		require.EqualValues(t, 20<<20, n)
	}
	_, peakAfter := p.Memory()
	t.Logf("pdsmux peak RSS %.1f MiB before, %.1f MiB after three 20 MiB getRepo", float64(peakBefore)/(1<<20), float64(peakAfter)/(1<<20))
	require.Less(t, peakAfter-peakBefore, int64(10<<20), "the body streamed, it was not buffered whole")

	resp, err := http.Get(base + "/xrpc/com.atproto.sync.getRecord?did=did:plc:abc&collection=x&rkey=y")
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Equal(t, http.StatusNotFound, resp.StatusCode)
	require.Equal(t, "application/json", resp.Header.Get("Content-Type"))
	require.Contains(t, []string{"lacks", "has"}, resp.Header.Get("X-Replica"))
	require.JSONEq(t, `{"error":"NotFound","message":"no such record did=did:plc:abc&collection=x&rkey=y"}`, string(body))

	m := testutil.Scrape(t, metrics)
	require.Equal(t, 0.0, m["pdsmux_replica_healthy{replica=down}"])
	require.Equal(t, 1.0, m["pdsmux_replica_healthy{replica=has}"])
}

func waitHTTP(t *testing.T, url string) {
	t.Helper()
	require.Eventually(t, func() bool {
		resp, err := http.Get(url)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return true
	}, 20*time.Second, 50*time.Millisecond)
}
