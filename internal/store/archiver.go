package store

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/pdsmux/pdsmux/internal/cursor"
)

// Defaults for the Archiver.
const (
	DefaultRetention     = 30 * 24 * time.Hour
	DefaultFlushInterval = time.Second
	// MaxBufferBytes bounds the frames waiting for the database. Beyond it
	// the oldest frames are dropped from the archive (counted, logged, and
	// recorded as a trim so replay across the hole gets OutdatedCursor),
	// never held against the live stream; their repo revs and cursors
	// still reach the checkpoint.
	MaxBufferBytes = 64 << 20
	writeChunk     = 1000
	trimEvery      = time.Hour
	backfillMax    = 1000
)

// Archiver writes the log's entries to the store in batches.
type Archiver struct {
	st        *Store
	log       *slog.Logger
	m         *Metrics
	interval  time.Duration
	retention time.Duration

	mu       sync.Mutex
	buf      []cursor.Entry
	bufBytes int
	dropped  []cursor.Entry // metadata only (Frame nil) of entries dropped from buf
	flushMu  sync.Mutex
	lastOK   time.Time
}

// NewArchiver returns an Archiver over st.
func NewArchiver(st *Store, retention time.Duration, m *Metrics, logger *slog.Logger) *Archiver {
	if retention <= 0 {
		retention = DefaultRetention
	}
	return &Archiver{st: st, log: logger.With("component", "store", "db", st.name), m: m,
		interval: DefaultFlushInterval, retention: retention, lastOK: time.Now()}
}

// Add queues entries; the broadcaster calls it before delivering them.
func (a *Archiver) Add(es []cursor.Entry) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.buf = append(a.buf, es...)
	for _, e := range es {
		a.bufBytes += len(e.Frame)
	}
	n := 0
	for a.bufBytes > MaxBufferBytes && n < len(a.buf) {
		a.bufBytes -= len(a.buf[n].Frame)
		meta := a.buf[n]
		meta.Frame = nil
		a.dropped = append(a.dropped, meta)
		n++
	}
	if n > 0 {
		a.buf = append(a.buf[:0:0], a.buf[n:]...)
		a.m.dropped(n)
		a.log.Error("archive buffer full: dropping the oldest frames from the archive (the database is not keeping up or unreachable); the checkpoint keeps their revs and cursors", "dropped", n)
	}
	a.m.setPending(len(a.buf))
}

// Flush writes everything queued. On failure the entries stay queued.
func (a *Archiver) Flush(ctx context.Context) error {
	a.flushMu.Lock()
	defer a.flushMu.Unlock()
	a.mu.Lock()
	pending, dropped := a.buf, a.dropped
	a.buf, a.bufBytes, a.dropped = nil, 0, nil
	a.mu.Unlock()
	if len(dropped) > 0 {
		if err := a.st.WriteGap(ctx, dropped); err != nil {
			a.mu.Lock()
			a.dropped = append(dropped, a.dropped...)
			a.buf = append(pending, a.buf...)
			for _, e := range pending {
				a.bufBytes += len(e.Frame)
			}
			a.mu.Unlock()
			a.m.failed()
			return err
		}
	}
	for len(pending) > 0 {
		n := min(len(pending), writeChunk)
		start := time.Now()
		if err := a.st.Write(ctx, pending[:n]); err != nil {
			a.mu.Lock()
			a.buf = append(pending, a.buf...)
			for _, e := range pending {
				a.bufBytes += len(e.Frame)
			}
			a.m.setPending(len(a.buf))
			a.mu.Unlock()
			a.m.failed()
			return err
		}
		a.m.wrote(n, time.Since(start), pending[n-1])
		pending = pending[n:]
	}
	a.mu.Lock()
	a.m.setPending(len(a.buf))
	a.lastOK = time.Now()
	a.mu.Unlock()
	return nil
}

// Backfill archives what Redis holds beyond the archive's high-water
// mark (after a restart, or a new or lost database file), up to the point
// where the live feed took over.
func (a *Archiver) Backfill(ctx context.Context, src interface {
	Range(ctx context.Context, after int64, count int64) ([]cursor.Entry, error)
}, until int64) (int, error) {
	after, err := a.st.HighWater(ctx)
	if err != nil {
		return 0, err
	}
	total := 0
	for after < until {
		es, err := src.Range(ctx, after, backfillMax)
		if err != nil {
			return total, err
		}
		if len(es) == 0 {
			break
		}
		start := time.Now()
		if err := a.st.Write(ctx, es); err != nil {
			return total, err
		}
		a.m.wrote(len(es), time.Since(start), es[len(es)-1])
		total += len(es)
		after = es[len(es)-1].Seq
	}
	return total, nil
}

// Run flushes every interval and trims by retention until ctx ends, then
// flushes once more.
func (a *Archiver) Run(ctx context.Context) error {
	t := time.NewTicker(a.interval)
	defer t.Stop()
	lastTrim := time.Time{}
	failing := false
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			return a.Flush(fctx)
		case <-t.C:
		}
		if err := a.Flush(ctx); err != nil {
			if !failing {
				a.log.Error("writing the archive failed; retrying (entries stay queued)", "err", err)
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
			if n, err := a.st.Trim(ctx, time.Now().Add(-a.retention)); err != nil {
				a.log.Warn("trimming the archive failed", "err", err)
			} else if n > 0 {
				a.log.Info("trimmed the archive", "events", n)
			}
		}
	}
}
