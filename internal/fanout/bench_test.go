package fanout

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// BenchmarkFanoutWrite measures delivering one ~1 KB entry to 10 live
// subscribers: framing once, queueing to each, each writer's writev.
func BenchmarkFanoutWrite(b *testing.B) {
	const subs = 10
	bc := NewBroadcaster(nil, nil, nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
	close(bc.ready)
	srv := NewServer(Config{QueueLen: 1 << 20}, nil, nil, bc, nil, nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		conn, err := srv.upg.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		sub := srv.newSubscriber(conn)
		defer sub.ping.Stop()
		bc.joinLive(sub, 0)
		_ = srv.live(context.Background(), sub)
	})
	go http.Serve(ln, mux)
	got := make(chan int, subs)
	for range subs {
		c, _, err := websocket.DefaultDialer.Dial("ws://"+ln.Addr().String()+"/", nil)
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		go func() {
			n := 0
			for {
				_, r, err := c.NextReader()
				if err != nil {
					return
				}
				if _, err := io.Copy(io.Discard, r); err != nil {
					return
				}
				if n++; n == b.N {
					got <- n
				}
			}
		}()
	}
	for bc.subCount() < subs {
		time.Sleep(time.Millisecond)
	}
	payload := bytes.Repeat([]byte(strings.Repeat("x", 100)), 10)
	b.ReportAllocs()
	b.SetBytes(int64(len(payload)))
	b.ResetTimer()
	for i := range b.N {
		bc.deliver(msg{seq: int64(i + 1), wire: wsBinaryFrame(payload)})
	}
	for range subs {
		<-got
	}
}
