package cursor

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/pdsmux/pdsmux/internal/frame"
)

// Entry is one appended event as stored.
type Entry struct {
	Seq         int64
	Frame       []byte // the upstream frame with its seq replaced by Seq
	Kind        string // c, s, i, a or o
	DID         string
	Rev         string
	Commit      string // commit CID (#commit, #sync)
	Status      string // account status (#account)
	Source      string // replica name, "" for events pdsmux made
	UpstreamSeq int64  // the source replica's seq, -1 if none
	// Held is the upstream seq of the oldest event from Source still held
	// (in Redis only) when this one was appended, 0 if none: the durable
	// checkpoint keeps Source's cursor below it (I3), so a restore after
	// Redis lost its holds re-reads the held event. See CheckpointCursor.
	Held int64
	Time time.Time
}

// CheckpointCursor is the cursor of e.Source the durable checkpoint may
// keep once e is archived: e.UpstreamSeq, or just below e.Held. -1 when e
// has no source seq.
func (e Entry) CheckpointCursor() int64 {
	if e.Source == "" || e.UpstreamSeq < 0 {
		return -1
	}
	if e.Held > 0 && e.Held <= e.UpstreamSeq {
		return e.Held - 1
	}
	return e.UpstreamSeq
}

func streamID(seq int64) string { return strconv.FormatInt(seq, 10) + "-0" }

func parseID(id string) (int64, error) {
	ms, _, _ := strings.Cut(id, "-")
	return strconv.ParseInt(ms, 10, 64)
}

func toEntry(m redis.XMessage) (Entry, error) {
	seq, err := parseID(m.ID)
	if err != nil {
		return Entry{}, fmt.Errorf("cursor: stream id %q: %w", m.ID, err)
	}
	pre, ok1 := m.Values["p"].(string)
	suf, ok2 := m.Values["q"].(string)
	if !ok1 || !ok2 {
		return Entry{}, fmt.Errorf("cursor: stream entry %s has no frame", m.ID)
	}
	f := make([]byte, 0, len(pre)+9+len(suf))
	f = append(f, pre...)
	f = frame.AppendUint(f, uint64(seq))
	f = append(f, suf...)
	meta, _ := m.Values["m"].(string)
	// kind did rev commit source useq status time [held]; empty fields
	// are empty between the spaces
	p := strings.Split(meta, " ")
	if len(p) != 8 && len(p) != 9 {
		return Entry{}, fmt.Errorf("cursor: stream entry %s has malformed metadata %q", m.ID, meta)
	}
	ms, _ := strconv.ParseInt(p[7], 10, 64)
	useq := int64(-1)
	if p[5] != "" {
		useq, _ = strconv.ParseInt(p[5], 10, 64)
	}
	var held int64
	if len(p) == 9 {
		if held, err = strconv.ParseInt(p[8], 10, 64); err != nil {
			return Entry{}, fmt.Errorf("cursor: stream entry %s has malformed metadata %q", m.ID, meta)
		}
	}
	return Entry{
		Seq: seq, Frame: f,
		Kind: p[0], DID: p[1], Rev: p[2], Commit: p[3], Source: p[4], UpstreamSeq: useq, Held: held, Status: p[6],
		Time: time.UnixMilli(ms),
	}, nil
}

func (l *Log) toEntries(msgs []redis.XMessage) ([]Entry, error) {
	out := make([]Entry, 0, len(msgs))
	for _, m := range msgs {
		e, err := toEntry(m)
		if err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	if len(out) > 0 {
		raise(&l.seen, out[len(out)-1].Seq)
	}
	return out, nil
}

// Range returns up to count entries with seq > after, oldest first.
func (l *Log) Range(ctx context.Context, after int64, count int64) ([]Entry, error) {
	start := time.Now()
	msgs, err := l.rdb.XRangeN(ctx, l.k.log, "("+streamID(after), "+", count).Result()
	l.m.observeRead(time.Since(start))
	if err != nil {
		return nil, fmt.Errorf("cursor: read log after %d: %w", after, err)
	}
	return l.toEntries(msgs)
}

// Tail blocks up to block for entries with seq > after and returns up to
// count of them (count <= 0: no limit); it returns no entries and no error
// when none arrived.
//
// Concurrent Tails from the same after share one blocking XREAD (the
// broadcaster and the archive both wait at the log's head): the later
// caller gets the first one's entries, at most count of them, and Redis
// sends each frame once (Replicated's readers then still read what they
// return with their own XRANGE). A Tail joins only a read that blocks no
// longer than its own block would, and never one issued before the last
// Fence. Entries are shared between callers and must not be modified.
// When the caller whose read is shared leaves before Redis answered (its
// ctx ends), the others read again themselves.
func (l *Log) Tail(ctx context.Context, after int64, block time.Duration, count int64) ([]Entry, error) {
	for {
		gen := l.tails.gen.Load()
		until := time.Now().Add(block)
		if block == 0 { // XREAD BLOCK 0: until something arrives
			until = time.Unix(1<<62, 0)
		}
		l.tails.mu.Lock()
		c := l.tails.flight[after]
		if c == nil || c.gen != gen || c.until.After(until) {
			c = &tailCall{gen: gen, until: until, done: make(chan struct{})}
			l.tails.flight[after] = c
			l.tails.mu.Unlock()
			c.es, c.err = l.tail(ctx, after, block, count)
			l.tails.mu.Lock()
			if l.tails.flight[after] == c {
				delete(l.tails.flight, after)
			}
			l.tails.mu.Unlock()
			close(c.done)
			return clip(c.es, count), c.err
		}
		c.sharers++
		l.tails.mu.Unlock()
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("cursor: tail log after %d: %w", after, ctx.Err())
		case <-c.done:
		}
		if c.err != nil && ctx.Err() == nil && (errors.Is(c.err, context.Canceled) || errors.Is(c.err, context.DeadlineExceeded)) {
			continue // the caller whose read this was left; read again
		}
		if c.err == nil {
			l.m.sharedTail()
		}
		return clip(c.es, count), c.err
	}
}

// Fence makes every Tail from now on read Redis itself or share a read
// issued after this call, never one already in flight: a read issued
// before Redis was found to have lost entries may still return them.
// store.Archiver.Fence calls it before its own epoch moves (the daemon
// fences before it restores Redis), so a reader that sees the archive's
// new epoch sees this too.
func (l *Log) Fence() { l.tails.gen.Add(1) }

// tails are a Log's blocking reads in flight, by after (Log.Tail).
type tails struct {
	mu     sync.Mutex
	flight map[int64]*tailCall
	gen    atomic.Int64 // Fences so far
}

// tailCall is one blocking read that Tails from the same after share.
type tailCall struct {
	gen     int64
	until   time.Time     // when its XREAD's block ends
	sharers int           // Tails that joined it (under tails.mu)
	done    chan struct{} // closed once es and err are set
	es      []Entry
	err     error
}

// clip returns at most count of es (count <= 0: all), with no room to
// append into: the slice is shared by every caller of one read.
func clip(es []Entry, count int64) []Entry {
	n := len(es)
	if count > 0 && int64(n) > count {
		n = int(count)
	}
	return es[:n:n]
}

// tail is one blocking XREAD (Tail).
func (l *Log) tail(ctx context.Context, after int64, block time.Duration, count int64) ([]Entry, error) {
	res, err := l.rdb.XRead(ctx, &redis.XReadArgs{
		Streams: []string{l.k.log, streamID(after)},
		Count:   count,
		Block:   block,
	}).Result()
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("cursor: tail log after %d: %w", after, err)
	}
	if len(res) == 0 {
		return nil, nil
	}
	return l.toEntries(res[0].Messages)
}

// Bounds describes what the stream holds.
type Bounds struct {
	First   int64 // oldest kept seq, 0 if empty
	Last    int64 // newest seq ever appended (kept or not), 0 if none
	Trimmed int64 // every seq <= Trimmed may have been trimmed away; 0 if nothing was
	Length  int64
}

// Bounds reads the stream's extent. A missing stream is all zeros.
func (l *Log) Bounds(ctx context.Context) (Bounds, error) {
	var info *redis.XInfoStreamCmd
	var trimmed *redis.StringCmd
	_, err := l.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		info = p.XInfoStream(ctx, l.k.log)
		trimmed = p.HGet(ctx, l.k.meta, "trimmed")
		return nil
	})
	// A pipeline that never ran (Redis refused the connection or the
	// password) leaves its commands without a value and without an error:
	// its own error comes first, or it reads as an empty trim mark.
	// Only redis.Nil itself is a missing trim mark: errors.Is would also
	// take go-redis errors that wrap it, such as a Sentinel client's "all
	// sentinels specified in configuration are unreachable: redis: nil".
	noStream := err != nil && strings.Contains(err.Error(), "no such key")
	if err != nil && err != redis.Nil && !noStream {
		return Bounds{}, fmt.Errorf("cursor: stream info: %w", err)
	}
	var b Bounds
	if s, terr := trimmed.Result(); terr == nil {
		if b.Trimmed, terr = strconv.ParseInt(s, 10, 64); terr != nil {
			return Bounds{}, fmt.Errorf("cursor: stored trim mark %q: %w", s, terr)
		}
	} else if !errors.Is(terr, redis.Nil) {
		return Bounds{}, fmt.Errorf("cursor: trim mark: %w", terr)
	}
	if noStream {
		return b, nil
	}
	xi := info.Val()
	b.Length = xi.Length
	if xi.FirstEntry.ID != "" {
		if b.First, err = parseID(xi.FirstEntry.ID); err != nil {
			return Bounds{}, err
		}
	}
	if b.Last, err = parseID(xi.LastGeneratedID); err != nil {
		return Bounds{}, fmt.Errorf("cursor: stream last id %q: %w", xi.LastGeneratedID, err)
	}
	return b, nil
}

// Ping checks that Redis answers.
func (l *Log) Ping(ctx context.Context) error {
	return l.rdb.Ping(ctx).Err()
}
