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
	looks := atomic.Int64{} // the requester asks for subscribers once a look at its schedule
	rq := crawl.New(crawl.Config{
		Relays:     []*url.URL{ok.url, flaky.url, redirect.url},
		Hostname:   "pds.example.test",
		Interval:   time.Hour,
		Idle:       time.Hour,
		BackoffMin: 100 * time.Millisecond,
	}, &http.Client{Timeout: 5 * time.Second}, func() int { looks.Add(1); return int(subs.Load()) }, nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
	crawl.SetTick(rq, 20*time.Millisecond)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = rq.Run(ctx); close(done) }()

	require.Eventually(t, func() bool {
		b, _ := flaky.requests()
		return len(b) == 4
	}, 10*time.Second, 10*time.Millisecond, "three 503s, then success")
	waitLooks(t, &looks, 10) // ten more looks at the schedule send nothing more
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

// waitLooks waits until the requester has looked at its schedule n more
// times (and so finished n-1 whole passes over its relays).
func waitLooks(t *testing.T, looks *atomic.Int64, n int64) {
	t.Helper()
	from := looks.Load()
	require.Eventually(t, func() bool { return looks.Load() >= from+n }, 10*time.Second, time.Millisecond,
		"the requester looks at its schedule %d more times", n)
}

// clock is a test clock that moves only when told.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// With nobody subscribed the requester asks again every idle period; with
// a subscriber it stays quiet until the interval; once the subscriber is
// gone for an idle period it asks again. Time is the test's clock: the
// production idle period (5 min) passes in a few loop passes.
func TestRequestCrawl_AgainWhenNoSubscriber(t *testing.T) {
	rl := newRelay(t, nil)
	subs := atomic.Int32{}
	looks := atomic.Int64{}
	const idle = crawl.DefaultIdle
	rq := crawl.New(crawl.Config{
		Relays: []*url.URL{rl.url}, Hostname: "pds.example.test", Interval: time.Hour, Idle: idle,
	}, http.DefaultClient, func() int { looks.Add(1); return int(subs.Load()) }, nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
	c := &clock{now: time.Now()}
	crawl.SetNow(rq, c.Now)
	crawl.SetTick(rq, time.Millisecond)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = rq.Run(ctx) }()
	requests := func() int { b, _ := rl.requests(); return len(b) }
	waitRequests := func(n int) {
		t.Helper()
		require.Eventually(t, func() bool { return requests() >= n }, 10*time.Second, time.Millisecond, "%d requests", n)
	}

	waitRequests(1) // one at start
	for n := 2; n <= 3; n++ {
		waitLooks(t, &looks, 2)
		require.Equal(t, n-1, requests(), "none again within the idle period")
		c.Advance(idle)
		waitRequests(n) // with nobody subscribed it asks again every idle period
	}

	subs.Store(1) // a relay subscribed: quiet until the interval
	waitLooks(t, &looks, 2)
	for range 5 {
		c.Advance(idle)
		waitLooks(t, &looks, 2)
	}
	require.Equal(t, 3, requests(), "quiet for five idle periods while subscribed")

	subs.Store(0) // the relay left: asks again once idle for an idle period
	waitLooks(t, &looks, 2)
	require.Equal(t, 3, requests())
	c.Advance(idle)
	waitRequests(4)
}
