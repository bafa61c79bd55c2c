package consumer

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"time"

	comatproto "github.com/bluesky-social/indigo/api/atproto"
	"github.com/bluesky-social/indigo/events"
	"github.com/bluesky-social/indigo/events/schedulers/sequential"
	"github.com/gorilla/websocket"
)

// Event is one received frame.
type Event struct {
	Seq      int64
	Kind     string // commit, sync, identity, account, info, error
	DID      string
	Rev      string
	Name     string // info name or error name
	Message  string // info or error message
	Received time.Time
	Commit   *comatproto.SyncSubscribeRepos_Commit
}

// Consumer is one subscription.
type Consumer struct {
	mu     sync.Mutex
	events []Event
	notify chan struct{}
	done   chan struct{}
	err    error
	conn   *websocket.Conn
	// OnCommit, if set, runs for every #commit after it is recorded (a
	// view it builds, such as Strict's, is never ahead of Events: a test
	// that waits on the view then counts Events finds the commit); an
	// error ends the subscription (a strict consumer).
	OnCommit func(*comatproto.SyncSubscribeRepos_Commit) error
	// OnSync likewise for #sync.
	OnSync func(*comatproto.SyncSubscribeRepos_Sync) error
	// OnEvent, if set, sees every recorded event.
	OnEvent func(Event)
}

// Dial subscribes to base (http://host:port) with cursor (< 0: none).
// The HTTP response is returned when the upgrade fails.
func Dial(ctx context.Context, base string, cursor int64, opts ...func(*Consumer)) (*Consumer, *http.Response, error) {
	u := "ws" + base[len("http"):] + "/xrpc/com.atproto.sync.subscribeRepos"
	if cursor >= 0 {
		u += "?cursor=" + strconv.FormatInt(cursor, 10)
	}
	conn, resp, err := websocket.DefaultDialer.DialContext(ctx, u, nil)
	if err != nil {
		return nil, resp, err
	}
	c := &Consumer{notify: make(chan struct{}, 1), done: make(chan struct{}), conn: conn}
	for _, o := range opts {
		o(c)
	}
	rsc := &events.RepoStreamCallbacks{
		RepoCommit: func(e *comatproto.SyncSubscribeRepos_Commit) error {
			c.add(Event{Seq: e.Seq, Kind: "commit", DID: e.Repo, Rev: e.Rev, Commit: e})
			if c.OnCommit != nil {
				return c.OnCommit(e)
			}
			return nil
		},
		RepoSync: func(e *comatproto.SyncSubscribeRepos_Sync) error {
			c.add(Event{Seq: e.Seq, Kind: "sync", DID: e.Did, Rev: e.Rev})
			if c.OnSync != nil {
				return c.OnSync(e)
			}
			return nil
		},
		RepoIdentity: func(e *comatproto.SyncSubscribeRepos_Identity) error {
			c.add(Event{Seq: e.Seq, Kind: "identity", DID: e.Did})
			return nil
		},
		RepoAccount: func(e *comatproto.SyncSubscribeRepos_Account) error {
			c.add(Event{Seq: e.Seq, Kind: "account", DID: e.Did})
			return nil
		},
		RepoInfo: func(e *comatproto.SyncSubscribeRepos_Info) error {
			var m string
			if e.Message != nil {
				m = *e.Message
			}
			c.add(Event{Kind: "info", Name: e.Name, Message: m})
			return nil
		},
		Error: func(e *events.ErrorFrame) error {
			c.add(Event{Kind: "error", Name: e.Error, Message: e.Message})
			return nil
		},
	}
	sched := sequential.NewScheduler("test-consumer", rsc.EventHandler)
	go func() {
		err := events.HandleRepoStream(ctx, conn, sched, slog.New(slog.NewTextHandler(io.Discard, nil)))
		c.mu.Lock()
		c.err = err
		c.mu.Unlock()
		close(c.done)
	}()
	return c, nil, nil
}

func (c *Consumer) add(e Event) {
	e.Received = time.Now()
	c.mu.Lock()
	c.events = append(c.events, e)
	c.mu.Unlock()
	if c.OnEvent != nil {
		c.OnEvent(e)
	}
	select {
	case c.notify <- struct{}{}:
	default:
	}
}

// Events returns a copy of what was received.
func (c *Consumer) Events() []Event {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Event(nil), c.events...)
}

// Len is the number of received frames.
func (c *Consumer) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.events)
}

// WaitLen waits until at least n frames arrived or d passed.
func (c *Consumer) WaitLen(n int, d time.Duration) error {
	deadline := time.After(d)
	for {
		if got := c.Len(); got >= n {
			return nil
		}
		select {
		case <-c.notify:
		case <-c.done:
			if got := c.Len(); got >= n {
				return nil
			}
			return fmt.Errorf("stream ended after %d of %d frames: %v", c.Len(), n, c.Err())
		case <-deadline:
			return fmt.Errorf("%d of %d frames after %s", c.Len(), n, d)
		}
	}
}

// Done is closed when the stream ends.
func (c *Consumer) Done() <-chan struct{} { return c.done }

// Err is why the stream ended.
func (c *Consumer) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Close closes the connection.
func (c *Consumer) Close() { c.conn.Close() }

// Seqs returns the seqs of sequenced frames, in arrival order.
func (c *Consumer) Seqs() []int64 {
	var out []int64
	for _, e := range c.Events() {
		if e.Seq > 0 {
			out = append(out, e.Seq)
		}
	}
	return out
}
