package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	comatproto "github.com/bluesky-social/indigo/api/atproto"
	"github.com/gorilla/websocket"
	"github.com/redis/go-redis/v9"

	"github.com/pdsmux/pdsmux/internal/cursor"
	"github.com/pdsmux/pdsmux/internal/frame"
	"github.com/pdsmux/pdsmux/internal/loopback"
)

func main() {
	flag.Usage = func() {
		fmt.Fprint(flag.CommandLine.Output(), `Usage: pdsmux-demo

Runs two reference PDS replicas, Redis, pdsmux and Caddy on loopback,
posts through both replicas and prints the merged stream until Ctrl-C.
It takes no arguments; `+"`make demo`"+` builds and runs it.
`)
	}
	flag.Parse()
	if flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "demo: unexpected argument %q\n", flag.Arg(0))
		flag.Usage()
		os.Exit(2)
	}
	// SIGPIPE too: a reader of the stream that goes away (| head) stops
	// the demo cleanly instead of killing it with its directory left over
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGPIPE)
	defer stop()
	dir, err := os.MkdirTemp("", "pdsmux-demo-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
	if err := run(ctx, dir); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		fmt.Fprintln(os.Stderr, "demo: logs kept in", dir)
		os.Exit(1)
	}
	if err := os.RemoveAll(dir); err != nil {
		fmt.Fprintln(os.Stderr, "demo: removing", dir+":", err)
	}
}

// names maps DIDs to handles. The stream reader learns them from #identity
// frames; run adds the accounts it creates. Both goroutines use it.
type names struct {
	mu sync.Mutex
	m  map[string]string
}

func (n *names) set(did, handle string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.m[did] = handle
}

// get returns the handle of did, or did itself when none is known.
func (n *names) get(did string) string {
	n.mu.Lock()
	defer n.mu.Unlock()
	if h := n.m[did]; h != "" {
		return h
	}
	return did
}

// run starts the peers under dir and prints the merged stream until ctx
// ends (nil) or something fails (the error). Every peer is stopped when it
// returns.
func run(ctx context.Context, dir string) error {
	fmt.Println("pdsmux demo: preparing peers (the first run installs Node 22, @atproto/pds and Caddy into ~/.cache/pdsmux: 10 to 15 minutes, most of it compiling better-sqlite3; later runs start in seconds)")
	deps, err := loopback.LoadDeps(filepath.Join(dir, "bin"), os.Stderr, "node", "pds", "caddy")
	if err != nil {
		return err
	}
	env, err := loopback.New(dir, deps)
	if err != nil {
		return err
	}
	defer env.Close()

	_, plcURL, err := env.PLC()
	if err != nil {
		return err
	}
	_, redisURL, err := env.Redis("redis")
	if err != nil {
		return err
	}
	caddyPort, err := loopback.FreePort()
	if err != nil {
		return err
	}
	front := fmt.Sprintf("http://localhost:%d", caddyPort)
	sec, err := loopback.NewPDSSecrets()
	if err != nil {
		return err
	}
	var reps []*loopback.PDS
	var addrs []string
	args := []string{"--redis-url", redisURL, "--plc-url", plcURL, "--scan-interval", "3s", "--repair-grace", "3s"}
	for i := range 2 {
		p, err := env.PDS(fmt.Sprintf("pds%d", i+1), filepath.Join(dir, fmt.Sprintf("data-%d", i+1)), plcURL, front, sec)
		if err != nil {
			return err
		}
		reps = append(reps, p)
		addrs = append(addrs, fmt.Sprintf("127.0.0.1:%d", p.Port))
		args = append(args, "--replica", fmt.Sprintf("pds%d=http://127.0.0.1:%d", i+1, p.Port))
	}
	mux, err := env.Pdsmux("pdsmux", args...)
	if err != nil {
		return err
	}
	if _, err := env.Caddy("caddy", caddyPort, mux.Addr, addrs); err != nil {
		return err
	}

	// Watch the merged firehose through Caddy, as a relay would.
	handles := &names{m: map[string]string{}}
	wsURL := fmt.Sprintf("ws://localhost:%d/xrpc/com.atproto.sync.subscribeRepos?cursor=0", caddyPort)
	conn, _, err := websocket.DefaultDialer.DialContext(ctx, wsURL, nil)
	if err != nil {
		return fmt.Errorf("subscribe through caddy: %w", err)
	}
	defer conn.Close()
	opts, err := redis.ParseURL(redisURL)
	if err != nil {
		return err
	}
	rdb := redis.NewClient(opts)
	defer rdb.Close()
	events, err := cursor.New(rdb, cursor.Config{}, nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		return err
	}
	lines := make(chan string, 64)
	go printStream(conn, events, handles, lines)

	clients := []*loopback.Client{loopback.NewClient(reps[0].URL), loopback.NewClient(reps[1].URL)}
	alice, err := clients[0].CreateAccount("alice.test")
	if err != nil {
		return err
	}
	bob, err := clients[1].CreateAccount("bob.test")
	if err != nil {
		return err
	}
	handles.set(alice.DID, "alice.test")
	handles.set(bob.DID, "bob.test")
	accounts := []*loopback.Account{alice, bob}
	post := func(i int) error {
		_, err := clients[i%2].CreateRecord(accounts[i%2], "app.bsky.feed.post", loopback.Post(fmt.Sprintf("hello #%d from %s via pds%d", i, accounts[i%2].Handle, i%2+1)))
		return err
	}
	for i := range 6 {
		if err := post(i); err != nil {
			return err
		}
	}

	fmt.Printf(`
Two replicas, one merged firehose. alice.test lives on pds1, bob.test on pds2;
each replica streams only its own writes, pdsmux merges both.

  merged firehose (through Caddy): %s
  pdsmux health:                   http://%s/xrpc/_health
  pdsmux metrics:                  http://%s/metrics
  Redis (the merged log):          %s
  replicas:                        %s and %s
  logs (removed on Ctrl-C):        %s

In another terminal, from the repository:

  go run ./cmd/pdsmux status --redis-url %s --metrics-url http://%s

A new post every 5 s, alternating replicas. Ctrl-C to stop.

`, wsURL, mux.Addr, mux.MetricsAddr, redisURL, reps[0].URL, reps[1].URL, dir, redisURL, mux.MetricsAddr)

	tick := time.NewTicker(5 * time.Second)
	defer tick.Stop()
	for i := 6; ; {
		select {
		case <-ctx.Done():
			fmt.Println("\nstopping")
			return nil
		case l, ok := <-lines:
			if !ok {
				if ctx.Err() != nil {
					return nil
				}
				return fmt.Errorf("the merged firehose closed")
			}
			fmt.Println(l)
		case <-tick.C:
			if err := post(i); err != nil {
				fmt.Println("post failed:", err)
			}
			i++
		}
	}
}

// printStream turns each frame into one line: seq, type, account, path,
// and the replica the event came from (looked up in the log).
func printStream(conn *websocket.Conn, events *cursor.Log, handles *names, out chan<- string) {
	defer close(out)
	for {
		_, b, err := conn.ReadMessage()
		if err != nil {
			return
		}
		in, err := frame.Parse(b, 0)
		if err != nil {
			out <- "unreadable frame: " + err.Error()
			continue
		}
		what := ""
		switch in.Kind {
		case frame.KindCommit:
			var c comatproto.SyncSubscribeRepos_Commit
			if err := c.UnmarshalCBOR(bytes.NewReader(b[in.BodyStart:])); err == nil {
				var ops []string
				for _, op := range c.Ops {
					ops = append(ops, op.Action+" "+op.Path)
				}
				what = strings.Join(ops, ", ")
				if what == "" {
					what = "(no record ops: a new repo)"
				}
			}
		case frame.KindIdentity:
			var id comatproto.SyncSubscribeRepos_Identity
			if err := id.UnmarshalCBOR(bytes.NewReader(b[in.BodyStart:])); err == nil && id.Handle != nil {
				what = "handle " + *id.Handle
				handles.set(in.DID, *id.Handle)
			}
		case frame.KindAccount:
			what = "status " + map[bool]string{true: "active", false: in.Status}[in.Active]
		case frame.KindSync:
			what = "rev " + in.Rev
		}
		via := "?"
		if es, err := events.Range(context.Background(), in.Seq-1, 1); err == nil && len(es) == 1 && es[0].Seq == in.Seq {
			via = es[0].Source
			if via == "" {
				via = "pdsmux repair"
			}
		}
		out <- fmt.Sprintf("seq %d  %-9s %-11s %-60s via %s", in.Seq, in.Type, handles.get(in.DID), what, via)
	}
}
