package consumer

import (
	"context"
	"sync"
	"time"
)

// Follower is a consumer that stays subscribed like a relay does: when
// the stream ends it reconnects with the last seq it saw as its cursor,
// trying each base URL in turn (an HA pair).
type Follower struct {
	mu       sync.Mutex
	events   []Event
	last     int64
	sessions int
	bases    map[string]int // sessions per base URL
	cur      *Consumer      // the open session, if any
	done     chan struct{}
}

// Follow subscribes to bases from cursor (< 0: live) until ctx ends.
// opts apply to every session's Consumer (e.g. a Strict's Attach).
func Follow(ctx context.Context, bases []string, cursor int64, opts ...func(*Consumer)) *Follower {
	f := &Follower{last: cursor, bases: map[string]int{}, done: make(chan struct{})}
	go func() {
		defer close(f.done)
		for i := 0; ctx.Err() == nil; i++ {
			f.mu.Lock()
			cur := f.last
			f.mu.Unlock()
			base := bases[i%len(bases)]
			c, _, err := Dial(ctx, base, cur, append(opts[:len(opts):len(opts)], func(c *Consumer) { c.OnEvent = f.add })...)
			if err == nil {
				f.mu.Lock()
				f.sessions++
				f.bases[base]++
				f.cur = c
				f.mu.Unlock()
				select {
				case <-c.Done():
				case <-ctx.Done():
					c.Close()
					<-c.Done()
				}
				f.mu.Lock()
				f.cur = nil
				f.mu.Unlock()
			}
			select {
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	return f
}

func (f *Follower) add(e Event) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.events = append(f.events, e)
	if e.Seq > 0 {
		f.last = e.Seq
	}
}

// Events returns everything received, across sessions.
func (f *Follower) Events() []Event {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]Event(nil), f.events...)
}

// Sessions is how many connections were made.
func (f *Follower) Sessions() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.sessions
}

// SessionsAt is how many connections were made to each base URL.
func (f *Follower) SessionsAt() map[string]int {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make(map[string]int, len(f.bases))
	for b, n := range f.bases {
		out[b] = n
	}
	return out
}

// Drop closes the open session, as a relay restarting or losing its link
// would: the Follower reconnects with its cursor to the next base URL.
func (f *Follower) Drop() {
	f.mu.Lock()
	c := f.cur
	f.mu.Unlock()
	if c != nil {
		c.Close()
	}
}

// Done is closed after ctx ended and the last session closed.
func (f *Follower) Done() <-chan struct{} { return f.done }

// Last is the highest seq seen (the cursor the next session resumes from).
func (f *Follower) Last() int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.last
}
