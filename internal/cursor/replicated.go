package cursor

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// Replicated reads the log like Log.Range and Log.Tail, but returns only
// entries that Redis holds on at least n of its replicas, so a Sentinel
// failover cannot take back an entry a reader was given.
//
// How: each read is one pipeline on one connection, XRANGE then a tiny
// write (SET {prefix}:ack) then WAIT n timeout. WAIT blocks until the
// replicas have acknowledged the replication offset of the calling
// connection's last write (https://redis.io/docs/latest/commands/wait/,
// "Implementation details": Redis keeps, per client, the replication
// offset of its last write, and WAIT counts the replicas whose
// acknowledged offset is at least that). The replication stream is one ordered byte stream, so a replica that acknowledged the
// ack write holds every write before it, which includes every entry the
// XRANGE just returned (an append is one atomic script). WAIT on its own
// would not do: it counts only the calling connection's own writes, and a
// reader that wrote nothing returns at once. Reading and acknowledging on
// one connection also means the entries and the WAIT come from the same
// server: a connection that broke (a failover) fails the whole read.
//
// When fewer than n replicas acknowledge within timeout the entries are
// not returned: the read is retried (counted in
// pdsmux_redis_wait_timeouts_total, logged once a minute) until enough
// replicas answer or ctx ends. Nothing unreplicated is ever returned.
type Replicated struct {
	l       *Log
	n       int
	timeout time.Duration

	mu       sync.Mutex
	warnedAt time.Time
	// heldSince is when the reads began to be held back (unix ns of the
	// first wait that timed out since the last one that did not), 0 while
	// the last wait was acknowledged.
	heldSince atomic.Int64
}

// HeldBack is how long readers have been held back: 0 while the last
// replication wait was acknowledged, else the time since the first of the
// waits that have timed out since. For /xrpc/_health.
func (r *Replicated) HeldBack() time.Duration {
	since := r.heldSince.Load()
	if since == 0 {
		return 0
	}
	return r.l.now().Sub(time.Unix(0, since))
}

// Replicated returns the view of l that waits for n replicas (n >= 1),
// each WAIT blocking up to timeout (> 0). The Redis client's read timeout
// must exceed timeout, or every wait fails as a network error.
func (l *Log) Replicated(n int, timeout time.Duration) *Replicated {
	return &Replicated{l: l, n: n, timeout: timeout}
}

// Range returns up to count replicated entries with seq > after, oldest
// first. Errors are Redis's (the caller retries).
func (r *Replicated) Range(ctx context.Context, after, count int64) ([]Entry, error) {
	return r.read(ctx, after, count)
}

// Tail blocks up to block for entries with seq > after, then returns up
// to count of them once they are replicated (it may block longer, while
// the replicas lag).
func (r *Replicated) Tail(ctx context.Context, after int64, block time.Duration, count int64) ([]Entry, error) {
	es, err := r.l.Tail(ctx, after, block, count)
	if err != nil || len(es) == 0 {
		return es, err
	}
	// The blocking read only says something arrived: what is returned is
	// the replicated read's own XRANGE.
	return r.read(ctx, after, count)
}

// Fence is the log's (Log.Fence).
func (r *Replicated) Fence() { r.l.Fence() }

// Bounds is the log's (no entry content is given away by it).
func (r *Replicated) Bounds(ctx context.Context) (Bounds, error) { return r.l.Bounds(ctx) }

func (r *Replicated) read(ctx context.Context, after, count int64) ([]Entry, error) {
	for {
		start := time.Now()
		var xr *redis.XMessageSliceCmd
		var w *redis.Cmd
		_, err := r.l.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			xr = p.XRangeN(ctx, r.l.k.log, "("+streamID(after), "+", count)
			p.Set(ctx, r.l.k.ack, strconv.FormatInt(after, 10), 0)
			w = p.Do(ctx, "wait", r.n, r.timeout.Milliseconds())
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("cursor: replicated read after %d: %w", after, err)
		}
		got, err := w.Int64()
		if err != nil {
			return nil, fmt.Errorf("cursor: WAIT: %w", err)
		}
		if got >= int64(r.n) {
			r.heldSince.Store(0)
			r.l.m.observeWait(time.Since(start), true, 0)
			return r.l.toEntries(xr.Val())
		}
		r.heldSince.CompareAndSwap(0, r.l.now().UnixNano())
		r.l.m.observeWait(time.Since(start), false, r.HeldBack())
		r.mu.Lock()
		warn := time.Since(r.warnedAt) > time.Minute
		if warn {
			r.warnedAt = time.Now()
		}
		r.mu.Unlock()
		if warn {
			r.l.log.Warn("Redis replicas did not acknowledge in time; holding entries back from readers and retrying",
				"want_replicas", r.n, "acked", got, "timeout", r.timeout)
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
	}
}
