package cursor

import (
	"context"
	_ "embed"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/pdsmux/pdsmux/internal/frame"
)

// Defaults for Config; cmd/pdsmux uses them as flag defaults.
const (
	DefaultHoldTimeout = 2 * time.Second
	DefaultDedupTTL    = 72 * time.Hour
	DefaultRetention   = 72 * time.Hour
	DefaultMaxEntries  = 100_000
	// MaxBatch bounds one script call so Redis is never blocked long.
	MaxBatch = 512
)

// Config tunes the log. Zero values take the defaults above.
type Config struct {
	Prefix      string        // key prefix; keys are {Prefix}:...
	HoldTimeout time.Duration // how long a #commit waits for its predecessor
	DedupTTL    time.Duration // how long #identity/#account hashes are remembered
	Retention   time.Duration // trim entries older than this
	MaxEntries  int64         // cap on stream length, applied by Trim
	// MaxBytes is the log's byte budget in Redis: the stream (MEMORY
	// USAGE), kept within half of it by RunBudget as entries are appended,
	// and what is in flight to and from it (budget.go).
	MaxBytes int64
}

func (c *Config) setDefaults() {
	if c.Prefix == "" {
		c.Prefix = DefaultPrefix
	}
	if c.HoldTimeout <= 0 {
		c.HoldTimeout = DefaultHoldTimeout
	}
	if c.DedupTTL <= 0 {
		c.DedupTTL = DefaultDedupTTL
	}
	if c.Retention <= 0 {
		c.Retention = DefaultRetention
	}
	if c.MaxEntries <= 0 {
		c.MaxEntries = DefaultMaxEntries
	}
	if c.MaxBytes <= 0 {
		c.MaxBytes = DefaultMaxBytes
	}
}

//go:embed append.lua
var appendSrc string

// appendScript is append.lua after revLess (rev.go).
var appendScript = redis.NewScript(luaRevLess + appendSrc)

// Log is the merged event log in one Redis. It is safe for concurrent use
// and for use by several processes at once.
type Log struct {
	rdb redis.UniversalClient
	k   keys
	cfg Config
	log *slog.Logger
	m   *Metrics
	now func() time.Time
	// srcs are the replicas whose held-commit index keys scripts declare.
	srcs sources

	// floor is the lowest seq a recreated counter may start at, besides the
	// clock: the durable checkpoint's high-water mark + 1.
	floor atomic.Int64
	// seen is the highest seq this process has appended or read; the
	// counter is never allowed below it (Redis losing recent writes).
	seen atomic.Int64
	// appended and appendedN count the bytes and entries this process
	// appended; bud keeps the byte budget (budget.go)
	appended  atomic.Int64
	appendedN atomic.Int64
	bud       budget
	// tails share concurrent blocking reads from one position (Tail)
	tails tails
}

// New returns a Log over rdb. It does not talk to Redis.
func New(rdb redis.UniversalClient, cfg Config, m *Metrics, logger *slog.Logger) (*Log, error) {
	cfg.setDefaults()
	k, err := newKeys(cfg.Prefix)
	if err != nil {
		return nil, err
	}
	if m != nil {
		m.retention.Set(cfg.Retention.Seconds())
		m.maxEntries.Set(float64(cfg.MaxEntries))
		m.maxBytes.Set(float64(cfg.MaxBytes))
	}
	return &Log{rdb: rdb, k: k, cfg: cfg, log: logger.With("component", "cursor"), m: m, now: time.Now, tails: tails{flight: map[int64]*tailCall{}}}, nil
}

// Config returns the effective configuration.
func (l *Log) Config() Config { return l.cfg }

// Known is the newest seq the log or its archive already holds: the
// stream's newest (b.Last), what this process has seen, and the durable
// floor (the archive's high water after a reconcile). Unlike Head it is
// never the clock: an entry appended next may be below the clock, never
// at or below Known.
func (l *Log) Known(b Bounds) int64 {
	return max(b.Last, l.seen.Load(), l.floor.Load())
}

// RaiseFloor makes sure a recreated seq counter starts above seq.
func (l *Log) RaiseFloor(seq int64) { raise(&l.floor, seq) }

// Head is the newest seq the log stands behind, for FutureCursor checks:
// the stream's newest, what this process has seen, and the durable floor.
// An empty log will start above the clock, so every cursor up to now is
// in its past (relays coming over from a replica's own seq space, or from
// a log that was lost, must not be told their cursor is in the future).
func (l *Log) Head(b Bounds) int64 {
	h := l.Known(b)
	if b.Last == 0 {
		h = max(h, l.now().UnixMicro())
	}
	return h
}

func raise(v *atomic.Int64, to int64) {
	for {
		cur := v.Load()
		if to <= cur || v.CompareAndSwap(cur, to) {
			return
		}
	}
}

// bumpScript moves the seq counter up to ARGV[1] if it is below.
var bumpScript = redis.NewScript(`
local c = tonumber(redis.call('GET', KEYS[1]) or '0')
if c < tonumber(ARGV[1]) then redis.call('SET', KEYS[1], ARGV[1]) end
return 0
`)

// bumpAfterLoss moves the counter to the clock floor once Redis has been
// caught losing acknowledged writes: subscribers may have seen seqs the
// counter no longer remembers, and the clock is above all of them.
func (l *Log) bumpAfterLoss(ctx context.Context) error {
	floor := max(l.now().UnixMicro(), l.floor.Load()+1, l.seen.Load()+1)
	if err := bumpScript.Run(ctx, l.rdb, []string{l.k.seq}, strconv.FormatInt(floor, 10)).Err(); err != nil {
		return fmt.Errorf("cursor: raise seq counter after Redis lost writes: %w", err)
	}
	l.log.Warn("Redis lost acknowledged writes; seq counter raised to the clock floor, replicas will be re-read", "seq_floor", floor)
	return nil
}

// Outcome is what the log did with one offered event.
type Outcome int8

const (
	Appended     Outcome = iota // got a seq and is in the stream
	Duplicate                   // already appended (same or older rev, or same content)
	Held                        // waits in Redis for its missing predecessor
	HoldConflict                // another held commit claims the same predecessor with a higher rev
	RepairRace                  // repair only: the repo moved since the event was built
	Flagged                     // not appended; the repo is queued for repair (refused at the door, or a rollback #sync)
)

var outcomeNames = [...]string{"appended", "duplicate", "held", "hold_conflict", "repair_race", "flagged"}

func (o Outcome) String() string { return outcomeNames[o] }

// Result of one event.
type Result struct {
	Outcome Outcome
	Seq     int64 // set when Appended
}

// Batch is the result of one Append.
type Batch struct {
	Results  []Result
	Released int // held commits appended because this batch completed their chain
}

// Append offers evs (at most MaxBatch), all from replica, in order. They
// go to Redis in script calls of at most callBytes of frames each (a
// 64th of Config.MaxBytes; a larger frame goes alone), so Redis never
// holds a large batch in flight; each call is one atomic step that moves
// the replica's stored cursor past its own events only (I3). If expect >=
// 0 it is the cursor this process last stored for replica; a lower
// stored cursor means Redis lost writes and Append fails with
// ErrCursorRegressed (the call that found it changed nothing). An error
// may leave the calls before the failing one appended, the stored cursor
// past their events and no further. A call waits first while the log has
// no room in its byte budget for it (RunBudget). After success the
// replica's stored cursor is at least the highest UpstreamSeq in evs.
// Results are in the order of evs.
func (l *Log) Append(ctx context.Context, replica string, expect int64, evs []Event) (Batch, error) {
	if len(evs) > MaxBatch {
		return Batch{}, fmt.Errorf("cursor: batch of %d events exceeds %d", len(evs), MaxBatch)
	}
	codes := make([]string, len(evs))
	for i := range evs {
		codes[i] = kindCode(evs[i].Kind)
		if evs[i].Refused != "" {
			codes[i] = "F"
		}
	}
	var out Batch
	for len(evs) > 0 {
		n := l.callLen(evs)
		exp := ""
		if expect >= 0 {
			exp = strconv.FormatInt(expect, 10)
		}
		b, err := l.run(ctx, replica, exp, evs[:n], codes[:n])
		if err != nil {
			return Batch{}, err
		}
		if out.Results == nil {
			out = b
		} else {
			out.Results = append(out.Results, b.Results...)
			out.Released += b.Released
		}
		if expect >= 0 { // the stored cursor is now at least the call's highest seq
			for i := range evs[:n] {
				expect = max(expect, evs[i].UpstreamSeq)
			}
		}
		evs, codes = evs[n:], codes[n:]
	}
	return out, nil
}

// callLen is how many of evs (one at least) the next append call carries:
// as many as fit in callBytes of frames.
func (l *Log) callLen(evs []Event) int {
	limit := l.cfg.callBytes()
	size := frameBytes(&evs[0])
	n := 1
	for n < len(evs) {
		size += frameBytes(&evs[n])
		if size > limit {
			break
		}
		n++
	}
	return n
}

// frameBytes is what ev costs the stream, about (entryCost of its frame).
func frameBytes(ev *Event) int64 { return entryCost(int64(len(ev.Pre) + len(ev.Suf))) }

// AppendRollback appends a #sync pdsmux built from a replica's signed head
// whose rev is below the log's (a repo restored from backup), if the repo
// is still at atRev. Held commits of the repo are dropped: the history
// they chain onto was replaced. It returns ErrRepairRace if the repo moved.
func (l *Log) AppendRollback(ctx context.Context, ev Event, atRev string) (Result, error) {
	if ev.Kind != frame.KindSync {
		return Result{}, fmt.Errorf("%w: rollback of kind %s", ErrBadEvent, ev.Kind)
	}
	ev.Since = atRev
	ev.UpstreamSeq = -1
	b, err := l.run(ctx, "", "", []Event{ev}, []string{"B"})
	if err != nil {
		return Result{}, err
	}
	if b.Results[0].Outcome == RepairRace {
		return b.Results[0], ErrRepairRace
	}
	return b.Results[0], nil
}

// AppendRepair appends a #commit or #sync pdsmux built to cover missed
// writes, but only if the repo is still at rev atRev (I4: a repair always
// chains onto what the log last appended) ("" = no state). It
// returns ErrRepairRace if the repo moved meanwhile.
func (l *Log) AppendRepair(ctx context.Context, ev Event, atRev string) (Result, error) {
	code := "R"
	switch ev.Kind {
	case frame.KindCommit:
	case frame.KindSync:
		code = "Y"
	default:
		return Result{}, fmt.Errorf("%w: repair of kind %s", ErrBadEvent, ev.Kind)
	}
	ev.Since = atRev
	ev.UpstreamSeq = -1
	b, err := l.run(ctx, "", "", []Event{ev}, []string{code})
	if err != nil {
		return Result{}, err
	}
	if b.Results[0].Outcome == RepairRace {
		return b.Results[0], ErrRepairRace
	}
	return b.Results[0], nil
}

// AppendSynthetic appends an #identity or #account event pdsmux built
// (deduplicated by content like upstream ones).
func (l *Log) AppendSynthetic(ctx context.Context, ev Event) (Result, error) {
	ev.UpstreamSeq = -1
	b, err := l.Append(ctx, "", -1, []Event{ev})
	if err != nil {
		return Result{}, err
	}
	return b.Results[0], nil
}

func (l *Log) run(ctx context.Context, replica, expect string, evs []Event, codes []string) (Batch, error) {
	if len(evs) == 0 {
		return Batch{}, nil
	}
	if len(evs) > MaxBatch {
		return Batch{}, fmt.Errorf("cursor: batch of %d events exceeds %d", len(evs), MaxBatch)
	}
	now := l.now()
	floor := max(now.UnixMicro(), l.floor.Load()+1)
	keys := make([]string, 0, 10+2*len(evs))
	keys = append(keys, l.k.script()...)
	args := make([]any, 0, 8+10*len(evs))
	args = append(args, replica, expect,
		strconv.FormatInt(now.UnixMilli(), 10),
		strconv.FormatInt(floor-1, 10),
		strconv.FormatInt(l.cfg.HoldTimeout.Milliseconds(), 10),
		strconv.FormatInt(int64(l.cfg.DedupTTL/time.Second), 10),
		strconv.FormatInt(l.seen.Load()+1, 10),
		strconv.Itoa(len(evs)))
	for i := range evs {
		ev := &evs[i]
		if ev.DID == "" && (ev.Kind == frame.KindCommit || ev.Kind == frame.KindSync) {
			return Batch{}, fmt.Errorf("%w: %s without did", ErrBadEvent, ev.Kind)
		}
		useq := ""
		if ev.UpstreamSeq >= 0 {
			useq = strconv.FormatInt(ev.UpstreamSeq, 10)
		}
		status := ev.Status
		if codes[i] == "F" {
			status = ev.Refused
		}
		args = append(args, codes[i], ev.DID, ev.Rev, ev.Since, ev.Commit, ev.Hash, ev.Pre, ev.Suf, useq, status)
		keys = append(keys, l.k.hold(ev.DID), l.k.dedup(ev.Hash))
	}
	// a call waits for room in the byte budget first (budget.go)
	var size int64
	for i := range evs {
		size += frameBytes(&evs[i])
	}
	if err := l.room(ctx, size); err != nil {
		return Batch{}, err
	}
	l.srcs.add(replica)
	var res []int64
	err := l.withSources(func(srcKeys, srcNames []string) error {
		a := slices.Grow(args[:len(args):len(args)], len(srcNames))
		for _, n := range srcNames {
			a = append(a, n)
		}
		start := time.Now()
		var err error
		res, err = appendScript.Run(ctx, l.rdb, append(keys[:len(keys):len(keys)], srcKeys...), a...).Int64Slice()
		counted := err
		if _, retry := undeclaredSources(err); retry {
			counted = nil // a retry with more keys, not a failure
		}
		l.m.observeScript(time.Since(start), counted)
		return err
	})
	if err != nil {
		if strings.HasPrefix(err.Error(), "NOT_RECONCILED") {
			return Batch{}, fmt.Errorf("%w: append from %q", ErrNotReconciled, replica)
		}
		if strings.HasPrefix(err.Error(), "LOST_WRITES") {
			return Batch{}, fmt.Errorf("%w: append from %q: %v", ErrLostWrites, replica, err)
		}
		if strings.HasPrefix(err.Error(), "CURSOR_REGRESSED") {
			if berr := l.bumpAfterLoss(ctx); berr != nil {
				return Batch{}, berr
			}
			return Batch{}, fmt.Errorf("%w: replica %s: %v", ErrCursorRegressed, replica, err)
		}
		return Batch{}, fmt.Errorf("cursor: append script for replica %q: %w", replica, err)
	}
	if len(res) != len(evs)+1 {
		return Batch{}, fmt.Errorf("cursor: append script returned %d values for %d events", len(res), len(evs))
	}
	b := Batch{Results: make([]Result, len(evs)), Released: int(res[len(evs)])}
	var added, top, n int64
	for i, code := range res[:len(evs)] {
		var r Result
		switch {
		case code > 0:
			r = Result{Outcome: Appended, Seq: code}
		case code == 0:
			r.Outcome = Duplicate
		case code == -1:
			r.Outcome = Held
		case code == -2:
			r.Outcome = HoldConflict
		case code == -3:
			r.Outcome = RepairRace
		case code == -4:
			r.Outcome = Flagged
		default:
			raise(&l.seen, top)
			return Batch{}, fmt.Errorf("cursor: append script returned unknown code %d", code)
		}
		b.Results[i] = r
		if r.Outcome == Appended {
			added += frameBytes(&evs[i])
			top = max(top, r.Seq)
			n++
		}
		l.m.countOutcome(evs[i].Kind, r.Outcome)
	}
	l.m.addReleased(b.Released)
	l.appended.Add(added)
	l.appendedN.Add(n)
	// after counting: the byte budget counts what it has seen and not
	// counted as another's (estimate)
	raise(&l.seen, top)
	// held commits this call released are appended too; their bytes are
	// not known here, and the live stream reads past them with the rest
	l.noteAppended(top, added)
	return b, nil
}
