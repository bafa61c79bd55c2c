package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/pdsmux/pdsmux/internal/frame"
)

// subscriber reads a daemon's subscribeRepos and records arrival times.
type subscriber struct {
	conn  *websocket.Conn
	recv  []int64 // unix ns per stream position, 0 = not (yet) received
	count atomic.Int64
	bytes atomic.Int64
	dups  atomic.Int64
	other atomic.Int64 // frames of events not in the stream (the hostile replica's)
	done  chan struct{}
}

// subscribe connects n subscribers (live) to base.
func subscribe(ctx context.Context, base string, n int, keyIndex map[string]int) ([]*subscriber, error) {
	url := "ws" + strings.TrimPrefix(base, "http") + "/xrpc/com.atproto.sync.subscribeRepos"
	d := websocket.Dialer{ReadBufferSize: 64 << 10}
	subs := make([]*subscriber, 0, n)
	for range n {
		c, _, err := d.DialContext(ctx, url, nil)
		if err != nil {
			for _, s := range subs {
				s.conn.Close()
			}
			return nil, fmt.Errorf("subscribe to %s: %w", url, err)
		}
		s := &subscriber{conn: c, recv: make([]int64, len(keyIndex)), done: make(chan struct{})}
		subs = append(subs, s)
		go s.read(keyIndex)
	}
	return subs, nil
}

// read records each frame's arrival. It reuses one buffer and one key
// buffer so the measuring client costs as little CPU as it can: on a
// two-core machine it competes with the daemon under test.
func (s *subscriber) read(keyIndex map[string]int) {
	defer close(s.done)
	var buf bytes.Buffer
	var key []byte
	for {
		_, r, err := s.conn.NextReader()
		if err != nil {
			return
		}
		buf.Reset()
		if _, err := buf.ReadFrom(r); err != nil {
			return
		}
		now := time.Now().UnixNano()
		b := buf.Bytes()
		in, err := frame.Parse(b, 0)
		if err != nil {
			continue
		}
		key = append(append(append(key[:0], in.DID...), '|'), in.Rev...)
		i, ok := keyIndex[string(key)]
		if !ok {
			s.other.Add(1)
			continue
		}
		if s.recv[i] != 0 {
			s.dups.Add(1)
			continue
		}
		s.recv[i] = now
		s.bytes.Add(int64(len(b)))
		s.count.Add(1)
	}
}

func closeAll(subs []*subscriber) {
	for _, s := range subs {
		s.conn.Close()
	}
	for _, s := range subs {
		<-s.done
	}
}

// waitAll waits until every subscriber has n frames or timeout passes; it
// returns the time the last one completed.
func waitAll(subs []*subscriber, n int64, timeout time.Duration) (time.Time, bool) {
	deadline := time.Now().Add(timeout)
	for {
		all := true
		for _, s := range subs {
			if s.count.Load() < n {
				all = false
				break
			}
		}
		if all {
			var last int64
			for _, s := range subs {
				for _, t := range s.recv {
					last = max(last, t)
				}
			}
			return time.Unix(0, last), true
		}
		if time.Now().After(deadline) {
			return time.Now(), false
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// latencies are receive minus send for every delivered frame.
type latencies []time.Duration

func collect(subs []*subscriber, ups []*upstream) latencies {
	var out latencies
	var mu sync.Mutex
	for _, s := range subs {
		var l latencies
		for _, u := range ups {
			for i, g := range u.index {
				if s.recv[g] != 0 && u.sendAt[i] != 0 {
					l = append(l, time.Duration(s.recv[g]-u.sendAt[i]))
				}
			}
		}
		mu.Lock()
		out = append(out, l...)
		mu.Unlock()
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// dumpLatencies writes one line per frame delivered to a subscriber:
// stream position, send time (ms after start), latency (ms) and frame
// size (bytes), tab separated, in send order per replica.
func dumpLatencies(path string, s *stream, subs []*subscriber, ups []*upstream, start time.Time) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	var b bytes.Buffer
	b.WriteString("subscriber\tposition\tsent_ms\tlatency_ms\tbytes\n")
	for n, sb := range subs {
		for _, u := range ups {
			for i, g := range u.index {
				if sb.recv[g] == 0 || u.sendAt[i] == 0 {
					continue
				}
				fmt.Fprintf(&b, "%d\t%d\t%.3f\t%.3f\t%d\n", n, g,
					float64(u.sendAt[i]-start.UnixNano())/1e6, float64(sb.recv[g]-u.sendAt[i])/1e6, len(s.frames[g]))
			}
		}
	}
	return os.WriteFile(path, b.Bytes(), 0o644)
}

func (l latencies) pct(p float64) time.Duration {
	if len(l) == 0 {
		return 0
	}
	return l[min(len(l)-1, int(float64(len(l))*p))]
}
