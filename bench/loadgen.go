package main

import (
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/pdsmux/pdsmux/internal/frame"
)

// upstream is one fake replica serving frames over subscribeRepos.
type upstream struct {
	frames [][]byte // seq patched: 1..n for this replica
	index  []int    // position of each frame in the whole stream
	sendAt []int64  // unix ns when each frame was handed to the socket
	rate   float64  // frames per second; 0: as fast as the reader takes them
	ln     net.Listener

	once      sync.Once
	connected chan struct{}
	start     chan struct{}
	done      chan struct{}
}

func newUpstream(s *stream, idx []int, rate float64) (*upstream, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	u := &upstream{index: idx, sendAt: make([]int64, len(idx)), rate: rate, ln: ln,
		connected: make(chan struct{}), start: make(chan struct{}), done: make(chan struct{})}
	for i, g := range idx {
		in, err := frame.Parse(s.frames[g], 0)
		if err != nil {
			return nil, err
		}
		u.frames = append(u.frames, frame.Patch(s.frames[g], &in, uint64(i+1)))
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/xrpc/com.atproto.sync.subscribeRepos", u.serve)
	mux.HandleFunc("/xrpc/_health", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte(`{"version":"bench"}`)) })
	go http.Serve(ln, mux)
	return u, nil
}

func (u *upstream) URL() string { return "http://" + u.ln.Addr().String() }

// close stops accepting connections.
func (u *upstream) close() { u.ln.Close() }

var upgrader = websocket.Upgrader{WriteBufferSize: 256 << 10}

func (u *upstream) serve(w http.ResponseWriter, r *http.Request) {
	conn, err := upgrader.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	defer conn.Close()
	go func() { // answer pings, notice the close
		for {
			if _, _, err := conn.ReadMessage(); err != nil {
				return
			}
		}
	}()
	first := false
	u.once.Do(func() { first = true; close(u.connected) })
	if !first {
		<-r.Context().Done() // one stream per run; a reconnect gets nothing new
		return
	}
	<-u.start
	begin := time.Now()
	for i, f := range u.frames {
		if u.rate > 0 {
			due := begin.Add(time.Duration(float64(i) / u.rate * float64(time.Second)))
			if d := time.Until(due); d > 0 {
				time.Sleep(d)
			}
		}
		u.sendAt[i] = time.Now().UnixNano()
		if err := conn.WriteMessage(websocket.BinaryMessage, f); err != nil {
			return
		}
	}
	close(u.done)
	<-r.Context().Done()
}
