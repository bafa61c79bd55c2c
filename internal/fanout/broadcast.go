package fanout

import (
	"context"
	"errors"
	"log/slog"
	"math"
	"sync"
	"time"

	"github.com/pdsmux/pdsmux/internal/cursor"
)

// Source is the log the fanout reads. *cursor.Log is one. The entries it
// returns may be shared with the log's other readers: read-only.
type Source interface {
	Range(ctx context.Context, after int64, count int64) ([]cursor.Entry, error)
	Tail(ctx context.Context, after int64, block time.Duration, count int64) ([]cursor.Entry, error)
	Bounds(ctx context.Context) (cursor.Bounds, error)
}

const (
	tailBlock = 2 * time.Second
	tailCount = 1000
)

// Keeper is the log's other reader, the durable archive, as the fanout
// needs it; pdsmuxd passes *store.Archiver.
type Keeper interface {
	// Await blocks until every entry up to seq may be sent, or ctx ends,
	// and returns the highest seq that may be sent now (math.MaxInt64 when
	// nothing is held back): an entry reaches a subscriber only once the
	// archive has read it, so what a subscriber saw is never only in Redis
	// (I7), unless the archive is too far behind to wait for. It has no
	// error: the live stream is never held back for a database that is
	// down or slow, so it returns math.MaxInt64 while the archive is
	// behind (store.Archiver: more than its buffer, or before its
	// database first answered). When ctx ends first it returns below
	// seq, and the caller stops (the subscriber left, the server is
	// shutting down).
	Await(ctx context.Context, seq int64) int64
	// Recall returns up to count entries with after < seq < before that
	// the archive has read (written or not), oldest first; fewer (none)
	// when it holds no more of them. When Redis lost entries the
	// broadcaster had not delivered yet, it delivers them from here, and
	// a replay reads archived history from here.
	//
	// Errors: any error means the archive could not answer (see Archive);
	// none is matched. In the broadcaster, an error is retried 4 times
	// over about 1.5 s, then given up: live subscribers skip those
	// entries, counted as pdsmux_subscriber_gaps_total{cause="recall_failed"}
	// and logged (the live stream does not wait for the database). In a
	// replay an error ends it like an error of Archive.Range.
	Recall(ctx context.Context, after, before int64, count int) ([]cursor.Entry, error)
	// Epoch changes when Redis is restored after it lost entries
	// (store.Archiver.Fence): what a read of the log issued before the
	// change returned may be neither in the archive nor in the
	// checkpoint, and is not sent; the reader reads again from what it
	// sent last.
	Epoch() int64
}

// errStale ends gated when the keeper's epoch moved since the entries
// were read: the caller reads again.
var errStale = errors.New("fanout: entries read before Redis was restored")

// Broadcaster tails the log and delivers each new entry, prepared once,
// to every joined subscriber.
type Broadcaster struct {
	src    Source
	log    *slog.Logger
	m      *Metrics
	keeper Keeper // nil: none
	// sizer sets the COUNT of each read; batchBytes bounds a read's bytes
	// (batch.go)
	sizer      cursor.ReadSizer
	batchBytes int64
	// start is where Run starts given the log's bounds (SetStart); nil:
	// bounds.Last
	start func(cursor.Bounds) int64

	mu    sync.Mutex
	last  int64 // highest seq delivered
	subs  map[*subscriber]struct{}
	ready chan struct{}
}

// NewBroadcaster returns a broadcaster; Run starts it. keeper may be nil.
func NewBroadcaster(src Source, keeper Keeper, m *Metrics, logger *slog.Logger) *Broadcaster {
	return &Broadcaster{src: src, keeper: keeper, m: m, log: logger.With("component", "fanout"), subs: map[*subscriber]struct{}{}, ready: make(chan struct{})}
}

// SetStart sets where Run starts: start(bounds) when above bounds.Last.
// pdsmuxd passes the log's Known, so that what the archive held before
// this process ran (a Redis that lost it while pdsmux was stopped) is
// history, served by replays, and not a loss the broadcaster recalls
// for live subscribers. Call it before Run.
func (b *Broadcaster) SetStart(start func(cursor.Bounds) int64) { b.start = start }

// Ready is closed once the broadcaster knows the log head.
func (b *Broadcaster) Ready() <-chan struct{} { return b.ready }

// Run tails the log until ctx ends. It starts at the log's current head:
// history is served by each subscriber's own replay.
func (b *Broadcaster) Run(ctx context.Context) error {
	b.sizer = b.newSizer(tailCount)
	backoff := 100 * time.Millisecond
	for {
		bounds, err := b.src.Bounds(ctx)
		if err == nil {
			b.mu.Lock()
			b.last = bounds.Last
			if b.start != nil {
				b.last = max(b.last, b.start(bounds))
			}
			b.mu.Unlock()
			close(b.ready)
			break
		}
		b.log.Warn("cannot read the log head; retrying", "err", err)
		if !sleep(ctx, backoff) {
			return nil
		}
		backoff = min(backoff*2, 5*time.Second)
	}
	backoff = 100 * time.Millisecond
	var failedAt time.Time
	for {
		b.mu.Lock()
		after := b.last
		b.mu.Unlock()
		ep := b.epoch()
		entries, err := b.src.Tail(ctx, after, tailBlock, b.sizer.Next())
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			b.m.tailError()
			if failedAt.IsZero() || time.Since(failedAt) > time.Minute {
				b.log.Warn("tailing the log failed; retrying", "err", err)
				failedAt = time.Now()
			}
			if !sleep(ctx, backoff) {
				return nil
			}
			backoff = min(backoff*2, 5*time.Second)
			continue
		}
		backoff = 100 * time.Millisecond
		if n := b.sizer.Observe(entries); len(entries) > 0 {
			b.m.setBatchBytes(n)
		}
		if b.keeper != nil && len(entries) > 0 && entries[0].Seq > after+1 {
			b.recall(ctx, after, entries[0].Seq)
		}
		if err := b.gated(ctx, entries, ep, b.await, func(e cursor.Entry) error {
			b.deliver(msg{seq: e.Seq, wire: wsBinaryFrame(e.Frame)})
			return nil
		}); errors.Is(err, errStale) {
			continue
		} else if err != nil {
			return nil // ctx ended
		}
	}
}

// recall delivers what the keeper read between after and before: a jump
// in seq means Redis lost entries (its data, or its last second), and
// those the broadcaster had not delivered yet are in the archive or its
// buffer. A keeper that cannot answer after a few tries is given up on,
// logged: the live stream does not wait for the database.
func (b *Broadcaster) recall(ctx context.Context, after, before int64) {
	backoff := 100 * time.Millisecond
	n := 0
	for tries := 0; ; {
		es, err := b.keeper.Recall(ctx, after, before, tailCount)
		if err != nil {
			if tries++; tries == 5 || !sleep(ctx, backoff) {
				b.m.gap("recall_failed")
				b.log.Error("cannot recall entries Redis lost from the archive; live subscribers miss them (replays get them from the archive)",
					"after", after, "before", before, "err", err)
				return
			}
			backoff *= 2
			continue
		}
		for _, e := range es {
			b.deliver(msg{seq: e.Seq, wire: wsBinaryFrame(e.Frame)})
			after = e.Seq
		}
		n += len(es)
		if len(es) < tailCount {
			if n > 0 {
				b.log.Warn("Redis lost entries not yet delivered; delivered them from the archive", "entries", n)
			}
			return
		}
	}
}

// gated calls send for each entry in order, each once the keeper lets it
// through: await is the keeper's Await (b.await) or a wrapper of it. ep
// is the keeper's epoch when the entries were read (b.epoch): once it
// moved, gated stops with errStale before sending another. It stops at
// the first error of await or send, or when ctx ends (ctx.Err()).
func (b *Broadcaster) gated(ctx context.Context, entries []cursor.Entry, ep int64, await func(context.Context, int64) (int64, error), send func(cursor.Entry) error) error {
	w := int64(math.MinInt64)
	for _, e := range entries {
		for b.keeper != nil && e.Seq > w {
			if err := ctx.Err(); err != nil {
				return err
			}
			var err error
			if w, err = await(ctx, e.Seq); err != nil {
				return err
			}
		}
		if b.epoch() != ep {
			return errStale
		}
		if err := send(e); err != nil {
			return err
		}
	}
	return nil
}

// epoch is the keeper's Epoch (0 without one).
func (b *Broadcaster) epoch() int64 {
	if b.keeper == nil {
		return 0
	}
	return b.keeper.Epoch()
}

// await is the keeper's Await, for gated.
func (b *Broadcaster) await(ctx context.Context, seq int64) (int64, error) {
	return b.keeper.Await(ctx, seq), nil
}

func (b *Broadcaster) deliver(m msg) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for s := range b.subs {
		if m.seq <= s.after {
			continue // already replayed
		}
		if !s.q.push(m) {
			delete(b.subs, s)
			b.m.tooSlow()
		}
	}
	b.last = m.seq
	b.m.setHead(m.seq)
}

// join adds s if the broadcaster has not delivered anything past what s
// replayed (s.after); otherwise the caller must replay more first. With
// deliver skipping seq <= s.after, the hand-over has no gap and no
// duplicate (I8).
func (b *Broadcaster) join(s *subscriber) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.last > s.after {
		return false
	}
	b.subs[s] = struct{}{}
	return true
}

// joinLive adds s for entries after head (no cursor: live only). The
// broadcaster may still be delivering entries at or below head; s skips
// them.
func (b *Broadcaster) joinLive(s *subscriber, head int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	s.after = max(b.last, head)
	b.subs[s] = struct{}{}
}

func (b *Broadcaster) leave(s *subscriber) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.subs, s)
}

func (b *Broadcaster) subCount() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.subs)
}

// Head is the highest seq delivered to live subscribers.
func (b *Broadcaster) Head() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.last
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
