package crawl_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pdsmux/pdsmux/internal/crawl"
	"github.com/pdsmux/pdsmux/internal/testutil"
)

type relay struct {
	mu     sync.Mutex
	bodies []string
	hosts  []string
	times  []time.Time
	fail   atomic.Int32 // answer 503 this many more times
	url    *url.URL
}

func newRelay(t *testing.T, handler func(w http.ResponseWriter, r *http.Request) bool) *relay {
	rl := &relay{}
	ln := testutil.Listen(t)
	go func() {
		_ = http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			b, _ := io.ReadAll(r.Body)
			rl.mu.Lock()
			rl.bodies = append(rl.bodies, r.Method+" "+r.URL.Path+" "+r.Header.Get("Content-Type")+" "+string(b))
			rl.hosts = append(rl.hosts, r.Host)
			rl.times = append(rl.times, time.Now())
			rl.mu.Unlock()
			if handler != nil && handler(w, r) {
				return
			}
			if rl.fail.Add(-1) >= 0 {
				http.Error(w, `{"error":"Unavailable"}`, http.StatusServiceUnavailable)
				return
			}
			_, _ = io.WriteString(w, "{}")
		}))
	}()
	rl.url, _ = url.Parse("http://" + ln.Addr().String())
	return rl
}

func (rl *relay) requests() ([]string, []time.Time) {
	rl.mu.Lock()
	defer rl.mu.Unlock()
	return append([]string(nil), rl.bodies...), append([]time.Time(nil), rl.times...)
}

func TestRequestCrawl_BodyRetriesAndOnlyConfiguredHosts(t *testing.T) {
	other := newRelay(t, nil) // never configured
	ok := newRelay(t, nil)
	flaky := newRelay(t, nil)
	flaky.fail.Store(3)
	redirect := newRelay(t, func(w http.ResponseWriter, r *http.Request) bool {
		http.Redirect(w, r, other.url.String()+r.URL.Path, http.StatusTemporaryRedirect)
		return true
	})
	subs := atomic.Int32{}
	rq := crawl.New(crawl.Config{
		Relays:     []*url.URL{ok.url, flaky.url, redirect.url},
		Hostname:   "pds.example.test",
		Interval:   time.Hour,
		Idle:       time.Hour,
		BackoffMin: 100 * time.Millisecond,
	}, &http.Client{Timeout: 5 * time.Second}, func() int { return int(subs.Load()) }, nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
	crawl.SetTick(rq, 20*time.Millisecond)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = rq.Run(ctx); close(done) }()

	require.Eventually(t, func() bool {
		b, _ := flaky.requests()
		return len(b) == 4
	}, 10*time.Second, 10*time.Millisecond, "three 503s, then success")
	time.Sleep(300 * time.Millisecond)
	cancel()
	<-done

	b, _ := ok.requests()
	require.Equal(t, []string{`POST /xrpc/com.atproto.sync.requestCrawl application/json {"hostname":"pds.example.test"}`}, b, "one request at start, none again within the interval")
	b, times := flaky.requests()
	require.Len(t, b, 4, "no more after the success")
	for i := 2; i < len(times); i++ {
		require.Greater(t, times[i].Sub(times[i-1]), times[i-1].Sub(times[i-2])*3/2, "backoff grows")
	}
	other.mu.Lock()
	require.Empty(t, other.bodies, "a redirect never takes a request to an unconfigured host")
	other.mu.Unlock()
	var body map[string]string
	rb, _ := redirect.requests()
	require.NotEmpty(t, rb)
	require.NoError(t, json.Unmarshal([]byte(rb[0][len(`POST /xrpc/com.atproto.sync.requestCrawl application/json `):]), &body))
	require.Equal(t, "pds.example.test", body["hostname"])
}

func TestRequestCrawl_AgainWhenNoSubscriber(t *testing.T) {
	rl := newRelay(t, nil)
	subs := atomic.Int32{}
	rq := crawl.New(crawl.Config{
		Relays: []*url.URL{rl.url}, Hostname: "pds.example.test", Interval: time.Hour, Idle: 300 * time.Millisecond,
	}, http.DefaultClient, func() int { return int(subs.Load()) }, nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
	crawl.SetTick(rq, 10*time.Millisecond)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = rq.Run(ctx) }()
	require.Eventually(t, func() bool { b, _ := rl.requests(); return len(b) >= 3 }, 5*time.Second, 10*time.Millisecond,
		"with nobody subscribed it asks again every idle period")
	subs.Store(1) // a relay subscribed: quiet until the interval
	time.Sleep(100 * time.Millisecond)
	b, _ := rl.requests()
	n := len(b)
	time.Sleep(800 * time.Millisecond)
	b, _ = rl.requests()
	require.Equal(t, n, len(b))
}
