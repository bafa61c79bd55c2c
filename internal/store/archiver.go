package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pdsmux/pdsmux/internal/cursor"
)

// Defaults for ArchiverConfig.
const (
	DefaultRetention     = 30 * 24 * time.Hour
	DefaultFlushInterval = time.Second
	// DefaultBufferBytes bounds the frames the Archiver has read from the
	// log and not yet written, the batch being written included. When it
	// is full the Archiver stops reading (the entries wait in Redis) and
	// stops holding back delivery to subscribers (see Await).
	DefaultBufferBytes = 64 << 20
	writeChunk         = 1000
	readCount          = 1000
	readBlock          = 2 * time.Second
	writeTimeout       = time.Minute
	trimEvery          = time.Hour
)

// Log is what the Archiver reads: the merged log (*cursor.Log). The
// entries it returns may be shared with the log's other readers:
// read-only.
type Log interface {
	// Tail blocks up to block for entries with seq > after.
	Tail(ctx context.Context, after int64, block time.Duration, count int64) ([]cursor.Entry, error)
	// Bounds gives the trim mark (seqs Redis may no longer hold) and the
	// head.
	Bounds(ctx context.Context) (cursor.Bounds, error)
	// Fence makes its reads from now on share no read issued before it
	// (cursor.Log.Fence).
	Fence()
}

// ArchiverConfig tunes the Archiver. Zero values take the defaults.
type ArchiverConfig struct {
	Retention     time.Duration // archived events older than this are deleted (DefaultRetention)
	BufferBytes   int           // frame bytes read and not yet durable, batch in flight included (DefaultBufferBytes)
	FlushInterval time.Duration // how often what was read is written (DefaultFlushInterval); sooner when half the buffer is used
}

// item is one buffered entry, or a hole: seqs (holeFrom, Seq] that Redis
// trimmed before the Archiver read them.
type item struct {
	cursor.Entry
	hole     bool
	holeFrom int64
}

// Archiver is a reader of the log with its own durable position: the
// store's high-water mark. It reads the Redis stream from there like any
// subscriber, into a buffer bounded in bytes, and writes the buffer to the
// store in batches. A failed write is retried and nothing is dropped:
// while the database is down the buffer fills, the Archiver stops reading,
// and it catches up from Redis when the database is back. Entries Redis
// trimmed before it could read them (the log outgrew its cap meanwhile)
// are recorded as trimmed, so a replay across the hole gets
// OutdatedCursor, and counted.
type Archiver struct {
	st     *Store
	src    Log
	log    *slog.Logger
	m      *Metrics
	cfg    ArchiverConfig
	budget int

	mu       sync.Mutex
	buf      []item // read, not yet durable, oldest first
	bufBytes int
	read     int64 // highest seq read into buf (or durable); -1 until the store answered
	head     int64 // newest seq the log is known to hold
	// behind: the buffer filled before the Archiver caught up with the log
	// (the database is slow or down). Await holds nothing back until it
	// has read up to the log's head again.
	behind bool
	// stalled: the next entry did not fit; reading waits for a write.
	stalled bool
	moved   chan struct{} // closed and replaced when read or behind changes
	space   chan struct{} // closed and replaced when a write frees buffer space
	kick    chan struct{} // asks the writer to write now

	durable atomic.Int64 // the store's high-water mark as last written or read
	flushMu sync.Mutex
	// epoch counts Fences: a read of the log issued in an older epoch is
	// not accepted (changed under mu, read by Epoch without it)
	epoch atomic.Int64
}

// Fence starts a new epoch: what any read of the log issued before it
// returns is never accepted, and readers that gate on this Archiver
// (fanout.Keeper.Epoch) do not send what they read before it. The
// daemon fences before it restores a Redis that lost entries and then
// flushes: the checkpoint it restores from is then everything the
// Archiver accepted, and no entry from the lost Redis that a slow
// in-flight read still returns can be sent or archived after it, to
// come back again under a new seq when the replicas are re-read (seen
// under load after a FLUSHALL: 5 (did, rev) sent twice).
func (a *Archiver) Fence() {
	// the log first: a reader that sees the new epoch then shares no
	// read issued before it (cursor.Log.Tail)
	a.src.Fence()
	a.mu.Lock()
	a.epoch.Add(1)
	a.mu.Unlock()
}

// Epoch is the number of Fences so far.
func (a *Archiver) Epoch() int64 { return a.epoch.Load() }

// NewArchiver returns an Archiver that reads src into st. Run starts it.
func NewArchiver(st *Store, src Log, cfg ArchiverConfig, m *Metrics, logger *slog.Logger) *Archiver {
	if cfg.Retention <= 0 {
		cfg.Retention = DefaultRetention
	}
	if cfg.BufferBytes <= 0 {
		cfg.BufferBytes = DefaultBufferBytes
	}
	if cfg.FlushInterval <= 0 {
		cfg.FlushInterval = DefaultFlushInterval
	}
	m.setBudget(cfg.BufferBytes)
	return &Archiver{st: st, src: src, log: logger.With("component", "store", "db", st.name), m: m, cfg: cfg,
		budget: cfg.BufferBytes, read: -1, moved: make(chan struct{}), space: make(chan struct{}), kick: make(chan struct{}, 1)}
}

// Durable is the archive's durable position: every seq up to it is in the
// store or recorded there as trimmed. 0 until the store has answered. The
// log's age trim must not pass it.
func (a *Archiver) Durable() int64 { return a.durable.Load() }

// TrimBound is the highest seq the log's byte budget may drop: Durable,
// so Redis keeps every entry the archive has not written (a replay finds
// each seq in the store or in Redis, and a stop loses nothing: the next
// start reads the rest again); math.MaxInt64 while the Archiver is more
// than its buffer behind (the database is down or slow: the budget wins,
// and what it drops before the Archiver reads it is recorded as a hole).
// A caller at its budget asks for a write now (Kick).
func (a *Archiver) TrimBound() int64 {
	a.mu.Lock()
	behind := a.behind
	a.mu.Unlock()
	if behind {
		return math.MaxInt64
	}
	return a.durable.Load()
}

// Kick asks the Archiver to write what it has read now, not at its next
// interval.
func (a *Archiver) Kick() {
	select {
	case a.kick <- struct{}{}:
	default:
	}
}

// Await blocks until the Archiver has read every entry up to seq into
// memory (so a reconcile's Flush makes it durable), or ctx ends, and
// returns the highest seq that may be delivered to subscribers now: what
// it has read, or math.MaxInt64 while it is more than its buffer behind
// the log (the database is down or slow: the live stream is never held
// back by the database). The fanout calls it before sending.
func (a *Archiver) Await(ctx context.Context, seq int64) int64 {
	for {
		a.mu.Lock()
		if a.behind {
			a.mu.Unlock()
			return math.MaxInt64
		}
		r, moved := a.read, a.moved
		a.mu.Unlock()
		if r >= seq {
			return r
		}
		select {
		case <-ctx.Done():
			return r
		case <-moved:
		}
	}
}

// Recall returns up to count entries with after < seq < before that the
// Archiver has read, written or still buffered, oldest first. After Redis
// lost entries, the broadcaster delivers from here those it had not
// delivered yet. Its errors are Store.Range's (the buffer cannot fail).
func (a *Archiver) Recall(ctx context.Context, after, before int64, count int) ([]cursor.Entry, error) {
	// The buffer first: what a write moves out of it meanwhile is then in
	// the store.
	a.mu.Lock()
	var buffered []cursor.Entry
	for _, it := range a.buf {
		if !it.hole && it.Seq > after && it.Seq < before && len(buffered) < count {
			buffered = append(buffered, it.Entry)
		}
	}
	a.mu.Unlock()
	stored, err := a.st.Range(ctx, after, int64(count))
	if err != nil {
		return nil, err
	}
	out := make([]cursor.Entry, 0, count)
	i, j := 0, 0
	for len(out) < count && (i < len(stored) || j < len(buffered)) {
		var e cursor.Entry
		switch {
		case j == len(buffered) || (i < len(stored) && stored[i].Seq <= buffered[j].Seq):
			e = stored[i]
			if j < len(buffered) && buffered[j].Seq == e.Seq {
				j++
			}
			i++
		default:
			e = buffered[j]
			j++
		}
		if e.Seq >= before {
			break
		}
		out = append(out, e)
	}
	return out, nil
}

// stopWrite bounds the last write when Run stops.
const stopWrite = 5 * time.Second

// ErrUnwritten is returned by Run when what it had read could not be
// written at the stop. Nothing is lost while Redis keeps the entries
// (TrimBound): the next start archives them.
var ErrUnwritten = errors.New("archive: entries read but not written at the stop")

// Run reads the log from the store's high-water mark and writes what it
// reads, until ctx ends; then it writes what it has read, for up to 5 s,
// and returns ErrUnwritten (wrapping the write's error) if that failed.
func (a *Archiver) Run(ctx context.Context) error {
	if !a.start(ctx) {
		return nil
	}
	rctx, stop := context.WithCancel(ctx)
	readDone := make(chan struct{})
	go func() { defer close(readDone); a.readLoop(rctx) }()
	defer func() { stop(); <-readDone }()

	t := time.NewTicker(a.cfg.FlushInterval)
	defer t.Stop()
	var lastTrim time.Time
	failing := false
	for {
		select {
		case <-ctx.Done():
			stop()
			<-readDone
			return a.stop()
		case <-t.C:
		case <-a.kick:
		}
		if err := a.Flush(ctx); err != nil {
			if ctx.Err() != nil {
				continue
			}
			if !failing {
				a.log.Error("writing the archive failed; retrying, nothing is dropped (the archive catches up from Redis)", "err", err)
			}
			failing = true
			continue
		}
		if failing {
			a.log.Info("archive writes recovered")
			failing = false
		}
		if time.Since(lastTrim) > trimEvery {
			lastTrim = time.Now()
			if n, err := a.st.Trim(ctx, time.Now().Add(-a.cfg.Retention)); err != nil {
				a.log.Warn("trimming the archive failed", "err", err)
			} else if n > 0 {
				a.log.Info("trimmed the archive", "events", n)
			}
		}
	}
}

// stop writes what was read, for up to stopWrite.
func (a *Archiver) stop() error {
	ctx, cancel := context.WithTimeout(context.Background(), stopWrite)
	defer cancel()
	err := a.Flush(ctx)
	if err == nil {
		return nil
	}
	a.mu.Lock()
	n, from, to := 0, int64(0), int64(0)
	for _, it := range a.buf {
		if it.hole {
			continue
		}
		if n == 0 {
			from = it.Seq
		}
		n, to = n+1, it.Seq
	}
	a.mu.Unlock()
	// Redis keeps what the archive has not written (TrimBound) unless the
	// archive was more than its buffer behind: then the byte budget may
	// have passed them, and they are lost from the archive.
	bctx, bcancel := context.WithTimeout(context.Background(), time.Second)
	b, berr := a.src.Bounds(bctx)
	bcancel()
	durable := a.durable.Load()
	switch {
	case berr == nil && b.Trimmed > durable:
		a.log.Error("stopping: the archive could not write what it had read, and Redis no longer holds seqs after the archive's durable position (the log's cap passed them while the archive was more than its buffer behind); the next start records those as trimmed (pdsmux_archive_lost_total), replays across them get OutdatedCursor",
			"entries", n, "from", from, "through", to, "durable", durable, "gone_through", b.Trimmed, "gone", b.Trimmed-durable, "err", err)
	case berr != nil:
		a.log.Warn("stopping: the archive could not write what it had read; the next start archives what Redis still holds of it (Redis did not answer to say how much)",
			"entries", n, "from", from, "through", to, "durable", a.durable.Load(), "err", err, "redis_err", berr)
	default:
		a.log.Warn("stopping: the archive could not write what it had read; the entries stay in Redis and the next start archives them (unless Redis loses them too)",
			"entries", n, "from", from, "through", to, "durable", a.durable.Load(), "err", err)
	}
	return fmt.Errorf("%w (%d entries, seqs %d-%d): %w", ErrUnwritten, n, from, to, err)
}

// start reads the store's high-water mark, retrying until the store
// answers; meanwhile delivery is not held back. It reports false if ctx
// ended first.
func (a *Archiver) start(ctx context.Context) bool {
	backoff := 100 * time.Millisecond
	for {
		hw, err := a.st.HighWater(ctx)
		if err == nil {
			a.durable.Store(hw)
			a.mu.Lock()
			a.read, a.behind = hw, false
			a.signalMoved()
			a.mu.Unlock()
			a.m.setBehind(false)
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		a.mu.Lock()
		if !a.behind {
			a.log.Warn("cannot read the archive's high-water mark; retrying, the live stream is not held back meanwhile", "err", err)
			a.behind = true
			a.signalMoved()
			a.m.setBehind(true)
		}
		a.mu.Unlock()
		if !sleep(ctx, backoff) {
			return false
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

// readLoop tails the log into the buffer while it has room.
func (a *Archiver) readLoop(ctx context.Context) {
	a.mu.Lock()
	after := a.read
	a.mu.Unlock()
	backoff := 100 * time.Millisecond
	var failedAt time.Time
	// a read holds about half the buffer at most, in Redis's reply and
	// here (a count of large frames would otherwise be hundreds of MB)
	z := cursor.ReadSizer{MaxBytes: int64(a.budget / 2), Max: readCount}
	for {
		a.mu.Lock()
		full := a.stalled || a.bufBytes >= a.budget
		space := a.space
		if full && !a.behind {
			a.behind = true
			a.signalMoved()
			a.m.setBehind(true)
			a.log.Warn("the archive is more than its buffer behind the log (the database is slow or unreachable); it stops reading and catches up from Redis later, and the live stream is no longer held back for it",
				"buffer_bytes", a.budget, "read", a.read, "durable", a.durable.Load())
		}
		a.mu.Unlock()
		if full {
			select {
			case <-ctx.Done():
				return
			case <-space:
			case <-time.After(time.Second):
				if b, err := a.src.Bounds(ctx); err == nil {
					a.setHead(b.Last)
				}
			}
			continue
		}
		count := z.Next()
		ep := a.Epoch()
		es, err := a.src.Tail(ctx, after, readBlock, count)
		z.Observe(es)
		if ctx.Err() != nil {
			return
		}
		if err == nil && (len(es) == 0 || es[0].Seq > after+1) {
			// A jump in seq: Redis may have trimmed entries not read yet.
			var b cursor.Bounds
			if b, err = a.src.Bounds(ctx); err == nil {
				a.setHead(b.Last)
				top := b.Trimmed
				if len(es) > 0 {
					top = min(top, es[0].Seq-1)
				}
				if top > after {
					a.mu.Lock()
					a.buf = append(a.buf, item{Entry: cursor.Entry{Seq: top, UpstreamSeq: -1}, hole: true, holeFrom: after})
					a.mu.Unlock()
					after = top
				}
			}
		}
		if err != nil {
			if failedAt.IsZero() || time.Since(failedAt) > time.Minute {
				a.log.Warn("archive: reading the log failed; retrying", "err", err)
				failedAt = time.Now()
			}
			if !sleep(ctx, backoff) {
				return
			}
			backoff = min(backoff*2, 5*time.Second)
			continue
		}
		backoff = 100 * time.Millisecond
		after = a.accept(es, after, count, ep)
	}
}

// accept buffers the leading entries of es (a read of count) that fit (at
// least one into an empty buffer, however large) and returns the new read
// position. The rest is read again later.
func (a *Archiver) accept(es []cursor.Entry, after, count, ep int64) int64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	if ep != a.epoch.Load() {
		return after // read before a Fence: read again
	}
	k := 0
	for k < len(es) && (a.bufBytes == 0 || a.bufBytes+len(es[k].Frame) <= a.budget) {
		a.buf = append(a.buf, item{Entry: es[k]})
		a.bufBytes += len(es[k].Frame)
		after = es[k].Seq
		k++
	}
	if after > a.read {
		a.read = after
		a.signalMoved()
	}
	a.head = max(a.head, after)
	switch {
	case k < len(es):
		a.stalled = true // the loop marks the Archiver behind
	case int64(len(es)) < count && a.behind:
		// caught up with the log's head
		a.behind = false
		a.signalMoved()
		a.m.setBehind(false)
		a.log.Info("the archive caught up with the log; the live stream waits for it again", "read", a.read, "durable", a.durable.Load())
	}
	a.m.setPending(len(a.buf), a.bufBytes)
	a.m.setLag(max(a.head-a.durable.Load(), 0))
	if a.bufBytes >= a.budget/2 || len(a.buf) >= writeChunk {
		a.Kick()
	}
	return after
}

func (a *Archiver) setHead(h int64) {
	a.mu.Lock()
	a.head = max(a.head, h)
	a.m.setLag(max(a.head-a.durable.Load(), 0))
	a.mu.Unlock()
}

// signalMoved wakes Await callers; a.mu is held.
func (a *Archiver) signalMoved() {
	close(a.moved)
	a.moved = make(chan struct{})
}

// Flush writes everything read so far. On failure what is left stays
// buffered; a later Flush retries it. The reconciler calls it before
// restoring Redis from the checkpoint, so whatever a subscriber has been
// sent is durable first.
func (a *Archiver) Flush(ctx context.Context) error {
	a.flushMu.Lock()
	defer a.flushMu.Unlock()
	a.mu.Lock()
	target := a.read
	a.mu.Unlock()
	for {
		a.mu.Lock()
		var chunk []item
		bytes := 0
		for _, it := range a.buf {
			if it.Seq > target || len(chunk) == writeChunk || (len(chunk) > 0 && (it.hole || chunk[0].hole)) {
				break
			}
			chunk = append(chunk, it)
			bytes += len(it.Frame)
		}
		a.mu.Unlock()
		if len(chunk) == 0 {
			return nil
		}
		last := chunk[len(chunk)-1]
		wctx, cancel := context.WithTimeout(ctx, writeTimeout)
		start := time.Now()
		var err error
		if chunk[0].hole {
			err = a.writeHole(wctx, chunk[0])
		} else {
			es := make([]cursor.Entry, len(chunk))
			for i := range chunk {
				es[i] = chunk[i].Entry
			}
			err = a.st.Write(wctx, es)
		}
		cancel()
		if err != nil {
			a.m.failed()
			return err
		}
		if !chunk[0].hole {
			a.m.wrote(len(chunk), time.Since(start), last.Entry)
		}
		a.durable.Store(max(a.durable.Load(), last.Seq))
		a.mu.Lock()
		clear(a.buf[:len(chunk)])
		a.buf = a.buf[len(chunk):]
		if len(a.buf) == 0 {
			a.buf = nil
		}
		a.bufBytes -= bytes
		a.stalled = false
		close(a.space)
		a.space = make(chan struct{})
		a.m.setPending(len(a.buf), a.bufBytes)
		a.m.setLag(max(a.head-a.durable.Load(), 0))
		a.mu.Unlock()
	}
}

// writeHole records seqs (h.holeFrom, h.Seq], which Redis trimmed before
// they were read, as trimmed in the store, unless another writer (an HA
// pair on one database) archived them.
func (a *Archiver) writeHole(ctx context.Context, h item) error {
	hw, err := a.st.HighWater(ctx)
	if err != nil {
		return err
	}
	if hw >= h.Seq {
		return nil
	}
	if err := a.st.WriteGap(ctx, []cursor.Entry{{Seq: h.Seq, UpstreamSeq: -1}}); err != nil {
		return err
	}
	from := max(h.holeFrom, hw)
	if from == 0 {
		a.log.Warn("the archive starts after what Redis still holds: older events were trimmed from Redis before this database archived them; replays from before get OutdatedCursor",
			"first", h.Seq+1)
		return nil
	}
	a.m.lost(h.Seq - from)
	a.log.Error("Redis trimmed log entries before the archive wrote them (the log passed its cap, --max-entries or --log-max-bytes, while the archive was more than its buffer behind: the database slow or unreachable, or stopped before it could write them); recorded as trimmed, replays across them get OutdatedCursor",
		"after", from, "through", h.Seq, "seqs", h.Seq-from)
	return nil
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
