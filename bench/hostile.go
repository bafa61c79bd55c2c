package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/redis/go-redis/v9"

	"github.com/pdsmux/pdsmux/internal/fakepds"
	"github.com/pdsmux/pdsmux/internal/loopback"
)

// hostileFrameBytes is about the size of every hostile frame: under the
// relay's (and pdsmux's default) 5,000,000-byte limit, so each is taken.
const hostileFrameBytes = 4_900_000

// hostileRate is the normal replica's rate beside the hostile one.
const hostileRate = 200

// flowingP99 is the normal replica's p99 added latency under which its
// events count as flowing past the hostile replica (the default
// --hold-timeout is 2 s: an event later than 1 s is stuck, not slow).
const flowingP99 = time.Second

// hostileCap stops the hostile replica early when pdsmux and its
// redis-server together hold more than this: the machine is shared.
const hostileCap = 6 << 30

// hostileResult is what the hostile-replica scenario measured.
type hostileResult struct {
	sent, sentBytes int64 // hostile frames written to pdsmux
	delivered       int64 // hostile frames that reached the subscriber
	normal          int   // normal replica's events sent
	normalGot       int64 // of them delivered to the subscriber
	normalDuring    int   // of them delivered before the hostile replica stopped
	normalP99       time.Duration
	normalMax       time.Duration
	flowing         bool  // every normal event delivered, p99 <= flowingP99
	peak            int64 // pdsmux VmHWM
	redisPeak       int64 // redis-server VmHWM
	redisUsedPeak   int64 // redis used_memory_peak
	logBudget       int64 // pdsmux's --log-max-bytes in effect (pdsmux_log_max_bytes)
	dur             time.Duration
	note            string
}

// hostileUpstream is a replica that sends events of a type pdsmux does not
// know (#hostilePadding), padded to hostileFrameBytes (a field of ~4.9 MB,
// different in every frame) as fast as the reader takes them, until stop
// is closed. An unknown type, because pdsmux passes those on unchecked
// (forward compatibility): a #commit cannot carry more than 2 MiB of
// blocks past the door (indigo's decoder refuses it) and an #identity
// over 8 KiB is rebuilt small, so the largest frames that reach the log
// are these.
type hostileUpstream struct {
	ln        net.Listener
	did       string
	filler    []byte // the shared tail of every handle
	connected chan struct{}
	start     chan struct{}
	stop      chan struct{}
	sent      atomic.Int64
	bytes     atomic.Int64
}

func newHostile(p *plc) (*hostileUpstream, error) {
	acct, _, err := fakepds.NewAccount("hostile.test", time.Now())
	if err != nil {
		return nil, err
	}
	pub, err := acct.Key.PublicKey()
	if err != nil {
		return nil, err
	}
	p.add(acct.DID, pub.Multibase())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	h := &hostileUpstream{ln: ln, did: acct.DID, filler: []byte(strings.Repeat("h", hostileFrameBytes-200)),
		connected: make(chan struct{}), start: make(chan struct{}), stop: make(chan struct{})}
	mux := http.NewServeMux()
	mux.HandleFunc("/xrpc/com.atproto.sync.subscribeRepos", h.serve)
	mux.HandleFunc("/xrpc/_health", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte(`{"version":"bench"}`)) })
	go http.Serve(ln, mux)
	return h, nil
}

func (h *hostileUpstream) URL() string { return "http://" + h.ln.Addr().String() }

// cborHead appends a DAG-CBOR head (major type and argument, shortest
// form).
func cborHead(b []byte, major byte, n uint64) []byte {
	m := major << 5
	switch {
	case n < 24:
		return append(b, m|byte(n))
	case n < 1<<8:
		return append(b, m|24, byte(n))
	case n < 1<<16:
		return append(b, m|25, byte(n>>8), byte(n))
	case n < 1<<32:
		return append(b, m|26, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	default:
		return append(b, m|27, byte(n>>56), byte(n>>48), byte(n>>40), byte(n>>32), byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	}
}

func cborText(b []byte, s string) []byte { return append(cborHead(b, 3, uint64(len(s))), s...) }

// head is the i-th frame (seq i+1) up to the shared filler: header
// {t: "#hostilePadding", op: 1}, then the body {did, seq, time, handle} (DAG-CBOR
// key order) whose handle starts with i and goes on with the filler.
func (h *hostileUpstream) head(i int) []byte {
	b := cborText(cborText(cborHead(nil, 5, 2), "t"), "#hostilePadding")
	b = append(cborText(b, "op"), 0x01)
	b = cborHead(b, 5, 4)
	b = cborText(cborText(b, "did"), h.did)
	b = cborHead(cborText(b, "seq"), 0, uint64(i+1))
	b = cborText(cborText(b, "time"), time.Now().UTC().Format("2006-01-02T15:04:05.000Z"))
	unique := fmt.Sprintf("%012d", i)
	b = cborHead(cborText(b, "handle"), 3, uint64(len(unique)+len(h.filler)))
	return append(b, unique...)
}

func (h *hostileUpstream) serve(w http.ResponseWriter, r *http.Request) {
	conn, err := upgrader.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	defer conn.Close()
	go func() {
		for {
			if _, _, err := conn.ReadMessage(); err != nil {
				return
			}
		}
	}()
	select {
	case <-h.connected: // one stream per run
		<-r.Context().Done()
		return
	default:
		close(h.connected)
	}
	<-h.start
	for i := 0; ; i++ {
		select {
		case <-h.stop:
			<-r.Context().Done()
			return
		default:
		}
		head := h.head(i)
		w, err := conn.NextWriter(websocket.BinaryMessage)
		if err != nil {
			return
		}
		_, err1 := w.Write(head)
		_, err2 := w.Write(h.filler)
		if err := errors.Join(err1, err2, w.Close()); err != nil {
			return
		}
		h.sent.Add(1)
		h.bytes.Add(int64(len(head) + len(h.filler)))
	}
}

// runHostile runs pdsmux (defaults) on two replicas: a hostile one
// sending 4.9 MB frames as fast as pdsmux reads them, and a normal one at
// hostileRate events/s for dur, with one subscriber. The hostile replica
// stops when the normal one has sent everything, or after dur and a
// second. It reports pdsmux's
// and redis-server's peak memory and whether the normal replica's events
// kept flowing.
func runHostile(env *loopback.Env, s *stream, p *plc, dur time.Duration) (hostileResult, error) {
	ctx := context.Background()
	n := min(len(s.frames), int(hostileRate*dur.Seconds()))
	idx := make([]int, n)
	for i := range idx {
		idx[i] = i
	}
	normal, err := newUpstream(s, idx, hostileRate)
	if err != nil {
		return hostileResult{}, err
	}
	defer normal.close()
	h, err := newHostile(p)
	if err != nil {
		return hostileResult{}, err
	}
	defer h.ln.Close()
	d, err := startPdsmux(env, "pdsmux", []*upstream{normal}, p.URL(), false, false, "--replica", "hostile="+h.URL())
	if err != nil {
		return hostileResult{}, err
	}
	defer d.stop()
	for _, c := range []chan struct{}{normal.connected, h.connected} {
		select {
		case <-c:
		case <-time.After(30 * time.Second):
			return hostileResult{}, fmt.Errorf("pdsmux did not connect to both replicas")
		}
	}
	keyIndex := make(map[string]int, n)
	for i := range n {
		keyIndex[s.keys[i]] = i
	}
	subs, err := subscribe(ctx, d.base, 1, keyIndex)
	if err != nil {
		return hostileResult{}, err
	}
	defer closeAll(subs)
	time.Sleep(time.Second)
	opt, err := redis.ParseURL(d.redisURL)
	if err != nil {
		return hostileResult{}, err
	}
	opt.ReadTimeout = 30 * time.Second // a redis-server busy with 4.9 MB appends answers late
	rc := redis.NewClient(opt)
	defer rc.Close()
	res := hostileResult{normal: n}
	start := time.Now()
	close(normal.start)
	close(h.start)
	// stop the hostile replica when the normal one is done, or early if
	// the two processes outgrow the safety cap
	stopped := make(chan struct{})
	deadline := time.After(dur + time.Second)
	var stopAt time.Time
	go func() {
		defer close(stopped)
		defer func() { stopAt = time.Now() }()
		tick := time.NewTicker(250 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-normal.done:
				close(h.stop)
				return
			case <-deadline:
				close(h.stop) // the normal replica is held back: the run stays bounded
				return
			case <-tick.C:
				sctx, cancel := context.WithTimeout(ctx, time.Second)
				res.redisUsedPeak = max(res.redisUsedPeak, redisMemory(sctx, rc, "used_memory"))
				cancel()
				if u := d.usage(); u.rss+u.helperRSS > hostileCap {
					res.note = fmt.Sprintf("the hostile replica was stopped after %s: pdsmux + redis-server passed the bench's %s safety cap", time.Since(start).Round(time.Second), mib(hostileCap))
					close(h.stop)
					return
				}
			}
		}
	}()
	_, complete := waitAll(subs, int64(n), dur+30*time.Second)
	<-stopped
	res.dur = time.Since(start)
	u := d.usage()
	res.peak, res.redisPeak = u.peak, u.helperPeak
	res.sent, res.sentBytes = h.sent.Load(), h.bytes.Load()
	res.delivered = subs[0].other.Load()
	res.normalGot = subs[0].count.Load()
	lat := collect(subs, []*upstream{normal})
	res.normalP99, res.normalMax = lat.pct(0.99), lat.pct(1)
	res.flowing = complete && subs[0].dups.Load() == 0 && res.normalP99 <= flowingP99
	for i := range n {
		if t := subs[0].recv[i]; t != 0 && t <= stopAt.UnixNano() {
			res.normalDuring++
		}
	}
	res.redisUsedPeak = max(res.redisUsedPeak, redisMemory(ctx, rc, "used_memory_peak"))
	if res.redisUsedPeak == 0 {
		return res, fmt.Errorf("could not read used_memory_peak from pdsmux's redis-server")
	}
	b, err := budgets(d.metrics)
	if err != nil {
		return res, err
	}
	res.logBudget = b.log
	fmt.Fprintf(os.Stderr, "bench: hostile replica sent %d frames (%.0f MB) in %s\n", res.sent, float64(res.sentBytes)/1e6, res.dur.Round(time.Second))
	return res, nil
}

// redisMemory reads one field of INFO memory (bytes); 0 when it cannot.
func redisMemory(ctx context.Context, c *redis.Client, field string) int64 {
	info, err := c.Info(ctx, "memory").Result()
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(l), field+":"); ok {
			n, _ := strconv.ParseInt(v, 10, 64)
			return n
		}
	}
	return 0
}
