package cursor

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// DefaultMaxBytes is the default byte budget of the log in Redis.
const DefaultMaxBytes = 128 << 20

// budgetRecheck is how often the stream's size is measured even when this
// process appended little (another process may append to the same log).
const budgetRecheck = 30 * time.Second

// The byte budget M (Config.MaxBytes) bounds what Redis holds for the log:
// the stream, and what is in flight to and from it.
//
// The stream: an append whose frames would take it (as last measured,
// plus what was appended since: see estimate) past high, M/2, first measures
// it (MEMORY USAGE) and drops its oldest entries down to low, 3/8 M (less
// the append's own bytes), never one above RunBudget's delivered(): the
// entries the live stream has not read yet, or the archive has not
// written, stay. They are bounded apart:
//
//   - an append waits while what this process appended that its live
//     stream has not read yet (above RunBudget's read()) would take more
//     than M/16 (unreadCap): a replica sending faster than the log is read
//     is read no faster than that (its read queue fills, then its TCP
//     window), while small appends from the others fit in what each read
//     entry frees. Every unread byte is one the other replicas' next
//     events wait behind on their way to subscribers (one stream, in seq
//     order): with a replica sending 4.9 MB frames as fast as it can
//     (bench H), M/4 held the other replica's events back 1.6 s at p99,
//     M/16 (8 MiB at the default M) 0.5-0.6 s;
//   - what the live stream has read that the archive has not written (a
//     slow database) is bounded by the archive's buffer, M/8 at the
//     default --memory-budget (it stops waiting for the database when
//     the buffer is full).
//
// So the stream stays within M/2 (M/16 + M/8 + one call fit below it) at
// the default sizes. The other half of M is for what Redis holds for a
// moment beside it. With B one append call's frames (at most M/64, see
// callBytes, unless one frame is larger; at the default M of 128 MiB, 2
// MiB or one frame of up to 5 MB):
//
//   - an append call: its arguments in the client's query buffer (B),
//     the copies of the entries its XADDs propagate, held until the call
//     ends (B), then the AOF buffer until it is written (B, more while a
//     slow disk holds writes back); and each other replica's next call,
//     read into its own query buffer meanwhile (B);
//   - replies to the log's readers until they are sent: the broadcaster,
//     the archive and each replay read about their batch bytes at a time
//     (8 MiB each at the default budget, see ReadSizer), or one entry when
//     entries are larger;
//   - a trim's reads of the entries it drops, about B at a time (or one
//     entry);
//   - what another process appended to the same log that this one has
//     not seen yet (its reads lag; each process bounds only its own
//     unread appends).
//
// At the default M that is 64 MiB of stream and about 40 MiB in flight
// with 5 MB frames from one replica (15 of its append, 5 another's, 16 of
// two reads, 5 of a trim step), each replay adding its reads. Lua's own
// copies of a call's arguments live outside Redis's used_memory (in its
// RSS), and Redis's other keys (repo states, dedup markers, held commits)
// are not in M: size them apart (docs/configuration.md, Sizing).
func (c Config) budgetHigh() int64 { return c.MaxBytes / 2 }
func (c Config) budgetLow() int64  { return c.MaxBytes/4 + c.MaxBytes/8 }
func (c Config) unreadCap() int64  { return c.MaxBytes / 16 }

// callBytes bounds the frame bytes of one append call (Append splits a
// batch into calls of at most this much; a larger frame goes alone): a
// 64th of the budget, at least minCallBytes.
func (c Config) callBytes() int64 { return max(c.MaxBytes/64, minCallBytes) }

const minCallBytes = 64 << 10

// entryOverhead is what a stream entry costs Redis beyond its field
// values, about (listpack headers, field names, id delta).
const entryOverhead = 32

// entryCost is what an entry whose values take n bytes costs the stream,
// about: n and entryOverhead, and, for an entry of more than 4 KiB (the
// stream's listpack node size, so it has a node of its own), rounded up
// as Redis's allocator (jemalloc) rounds an allocation: to a quarter of
// the power of two below it (a 4.9 MB frame takes 5 MiB). MEMORY USAGE
// counts the rounded size. trimBytesScript's cost is the same in Lua.
func entryCost(n int64) int64 {
	b := n + entryOverhead
	if b <= 4096 {
		return b
	}
	q := int64(1024)
	for q*8 < b {
		q *= 2
	}
	return (b + q - 1) / q * q
}

// budgetPoll is how often an append waiting for the live stream to read
// checks how far it got (no Redis: RunBudget's read()).
const budgetPoll = 5 * time.Millisecond

// budget is the state of the byte budget of one Log.
type budget struct {
	mu sync.Mutex // one measure-and-trim at a time
	// size is the stream's size as last measured (after that trim); at,
	// nAt and seqAt are l.appended, l.appendedN and l.seen then, and avg
	// the stream's bytes per entry
	size, at, nAt, seqAt, avg int64
	readers                   atomic.Pointer[readers] // set by RunBudget
	unread                    unread
}

// readers are how far the log's readers got (RunBudget).
type readers struct{ delivered, read func() int64 }

// unread is what this process appended that its live stream has not read
// yet: bytes by append call, oldest first. A call is merged into the one
// before while that holds less than a 64th of unreadCap, so there are
// about 64 marks at most.
type unread struct {
	mu    sync.Mutex
	marks []unreadMark
	bytes int64 // the sum of marks' bytes
}

// unreadMark is the bytes of one or more append calls and their highest
// seq.
type unreadMark struct{ seq, bytes int64 }

// noteAppended records n bytes appended by a call whose highest seq is
// seq, while RunBudget runs.
func (l *Log) noteAppended(seq, n int64) {
	if n <= 0 || l.bud.readers.Load() == nil {
		return
	}
	u := &l.bud.unread
	u.mu.Lock()
	defer u.mu.Unlock()
	if k := len(u.marks); k > 0 && u.marks[k-1].bytes < l.cfg.unreadCap()/64 {
		u.marks[k-1].seq = max(u.marks[k-1].seq, seq)
		u.marks[k-1].bytes += n
	} else {
		u.marks = append(u.marks, unreadMark{seq: seq, bytes: n})
	}
	u.bytes += n
}

// unreadBytes forgets the calls the live stream has read (highest seq at
// or below read) and returns the bytes of the others.
func (l *Log) unreadBytes(read int64) int64 {
	u := &l.bud.unread
	u.mu.Lock()
	defer u.mu.Unlock()
	i := 0
	for i < len(u.marks) && u.marks[i].seq <= read {
		u.bytes -= u.marks[i].bytes
		i++
	}
	u.marks = u.marks[:copy(u.marks, u.marks[i:])]
	return u.bytes
}

// nearBudget reports whether the stream may pass its high level with n
// more bytes, by what was measured and appended since. It is cheap (no
// Redis).
func (l *Log) nearBudget(n int64) bool {
	l.bud.mu.Lock()
	defer l.bud.mu.Unlock()
	return l.estimate()+n > l.cfg.budgetHigh()
}

// estimate is the stream's size as last measured plus what was appended
// since: this process's bytes, and for every other seq it has seen since
// (by its appends' seqs and its reads: another pdsmux's appends, held
// commits released) the stream's average entry. Counting only its own
// appends, two pdsmux on one log let the stream reach about 5/8 of the
// budget before one of them trimmed. l.bud.mu is held.
func (l *Log) estimate() int64 {
	b := &l.bud
	n := l.appendedN.Load()
	others := max(l.seen.Load()-b.seqAt-(n-b.nAt), 0)
	avg := b.avg
	if avg == 0 && n > 0 { // measured empty: this process's own entries
		avg = l.appended.Load() / n
	}
	// a jump in seq (the counter raised to the clock after Redis lost
	// its state, or nothing seen at the last measure), or others with no
	// size known, count as the whole budget: the next append measures
	grown := l.cfg.MaxBytes
	switch {
	case others == 0:
		grown = 0
	case avg > 0 && others <= l.cfg.MaxBytes/avg:
		grown = others * avg
	}
	return b.size + l.appended.Load() - b.at + grown
}

// keepBudget measures the stream and trims it if n more bytes would take
// it past its high level (n < 0: always measure); it waits for a trim
// already running. It does nothing until RunBudget runs (nothing tells it
// what was delivered).
func (l *Log) keepBudget(ctx context.Context, n int64) {
	l.bud.mu.Lock()
	defer l.bud.mu.Unlock()
	rd := l.bud.readers.Load()
	if rd == nil || (n >= 0 && l.estimate()+n <= l.cfg.budgetHigh()) {
		return
	}
	// seen first: an entry counted in appendedN is seen already (Append
	// raises seen after counting)
	seq := l.seen.Load()
	a, an := l.appended.Load(), l.appendedN.Load()
	used, left, dropped, held, err := l.trimBytes(ctx, rd.delivered(), max(n, 0))
	if err != nil {
		if ctx.Err() == nil {
			l.log.Warn("keeping the log within its byte budget failed", "err", err)
		}
		return
	}
	l.bud.size, l.bud.at, l.bud.nAt, l.bud.seqAt, l.bud.avg = left, a, an, seq, 0
	if held > 0 {
		l.bud.avg = left / held
	}
	if dropped > 0 {
		l.log.Debug("trimmed the log to its byte budget", "entries", dropped, "bytes_before", used, "bytes_after", left)
	}
}

// room makes room for an append call of n bytes (see budgetHigh): it
// waits while what this process appended that its live stream has not
// read, with n more, would pass unreadCap (a call alone goes whatever its
// size), then trims the stream if n would take it past its high level. It
// fails only when ctx ends.
func (l *Log) room(ctx context.Context, n int64) error {
	var t *time.Ticker
	last := time.Time{}
	for {
		rd := l.bud.readers.Load()
		if rd == nil {
			break
		}
		if u := l.unreadBytes(rd.read()); u == 0 || u+n <= l.cfg.unreadCap() {
			break
		}
		if t == nil {
			t = time.NewTicker(budgetPoll)
			defer t.Stop()
			last = time.Now()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("cursor: waiting for the live stream to read the log: %w", ctx.Err())
		case <-t.C:
			// the clock, not the tick's time: a tick due before last was
			// read (this goroutine descheduled longer than budgetPoll
			// between the ticker's start and last) made the wait negative
			now := time.Now()
			l.m.budgetWaited(now.Sub(last))
			last = now
		}
	}
	if l.nearBudget(n) {
		l.keepBudget(ctx, n)
	}
	return nil
}

// RunBudget keeps the log within Config.MaxBytes until ctx ends (see
// budgetHigh). Once it runs, an append that would take the stream past
// its high level trims the oldest entries first (TrimBytes), never one
// above delivered() (the newest seq this process has handed to its live
// subscribers and its archive), and an append waits while what this
// process appended above read() (the newest seq its live stream has read
// from the log) takes a sixteenth of the budget. It also measures at start
// and every 30 s, for appends by other processes.
func (l *Log) RunBudget(ctx context.Context, delivered, read func() int64) error {
	l.bud.readers.Store(&readers{delivered: delivered, read: read})
	defer func() {
		l.bud.readers.Store(nil)
		u := &l.bud.unread
		u.mu.Lock()
		u.marks, u.bytes = nil, 0
		u.mu.Unlock()
	}()
	t := time.NewTicker(budgetRecheck)
	defer t.Stop()
	for {
		l.keepBudget(ctx, -1)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// trimBytesScript measures the stream (MEMORY USAGE, exact) and, when it
// and ARGV[5] bytes about to be appended are above ARGV[1] bytes, drops
// its oldest entries, up to seq ARGV[3] at most, until about ARGV[2]
// bytes are left with the ones to come. One call stops once it has
// dropped ARGV[7] bytes or more (the entry that passes it included), or
// at seq ARGV[3]: a script blocks Redis while it runs, and this one reads
// what it drops to size it, so the caller goes on in further calls,
// between which Redis serves everyone else. A call given ARGV[8], the
// bytes a previous call left to drop, goes on from there without
// measuring, unless the trim mark is no longer ARGV[10], the mark that
// call returned (another trim, of this process or another, ran in
// between: it measures again). Entries are read in steps of about ARGV[6]
// bytes (by the larger of the stream's average entry and the largest read
// so far; one entry at least, 64 at most). Returns the size measured (-1
// when not measured, 0 for no stream), the entries dropped, the bytes they
// held (estimated: values, ARGV[4] per entry, and an entry of more than 4
// KiB rounded up as entryCost says), the bytes left to drop before this
// call (0: nothing to do), the entry size its reads went by (ARGV[9] of
// the next call), the trim mark after it (ARGV[10]) and the entries the
// stream holds after it.
//
// The trim mark (meta.trimmed) is raised to the last seq dropped in the
// same step, so a reader that finds entries missing finds the mark too.
//
// KEYS: 1 log stream, 2 meta hash. ARGV: 1 high, 2 low, 3 highest seq that
// may go, 4 bytes an entry costs beyond its values, 5 bytes about to be
// appended, 6 bytes to read in one step, 7 bytes to drop in this call, 8
// bytes left to drop from a previous call (empty: measure), 9 and 10 that
// call's entry size and trim mark.
var trimBytesScript = redis.NewScript(`
local high, low, keep, over, coming, step = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local function mark() return tonumber(redis.call('HGET', KEYS[2], 'trimmed') or '0') end
local used, total, est = -1, 0, 1
if ARGV[8] == '' or mark() ~= tonumber(ARGV[10]) then
  used = redis.call('MEMORY', 'USAGE', KEYS[1], 'SAMPLES', '0')
  if not used then return {0, 0, 0, 0, 1, mark(), 0} end
  if used + coming <= high then return {used, 0, 0, 0, 1, mark(), redis.call('XLEN', KEYS[1])} end
  total = used + coming - low
  est = math.max(math.floor(used / math.max(redis.call('XLEN', KEYS[1]), 1)), 1)
else
  total, est = tonumber(ARGV[8]), math.max(tonumber(ARGV[9]), 1)
end
local excess = math.min(total, tonumber(ARGV[7]))
local function cost(b)
  if b <= 4096 then return b end
  local q = 1024
  while q * 8 < b do q = q * 2 end
  return math.ceil(b / q) * q
end
local freed, n, last = 0, 0, nil
local start = '-'
local done = false
while not done and freed < excess do
  local count = math.min(math.max(math.floor(math.min(excess - freed, step) / est), 1), 64)
  local es = redis.call('XRANGE', KEYS[1], start, '+', 'COUNT', count)
  if #es == 0 then break end
  for _, e in ipairs(es) do
    local seq = tonumber(string.match(e[1], '^(%d+)'))
    if seq > keep then done = true break end
    local b = over
    for _, f in ipairs(e[2]) do b = b + #f end
    b = cost(b)
    if b > est then est = b end
    freed, n, last = freed + b, n + 1, seq
    if freed >= excess then break end
  end
  start = '(' .. es[#es][1]
end
if last then
  redis.call('XTRIM', KEYS[1], 'MINID', string.format('%.0f', last + 1) .. '-0')
  if last > mark() then redis.call('HSET', KEYS[2], 'trimmed', string.format('%.0f', last)) end
end
return {used, n, freed, total, est, mark(), redis.call('XLEN', KEYS[1])}
`)

// TrimBytes measures the stream and, when it is above its high level
// (half of Config.MaxBytes), drops its oldest entries (none above seq
// keepAbove) until about 3/8 of the budget is left, recording the trim
// like Trim does (subscribers asking for older history get
// OutdatedCursor). It drops about one append call's bytes (callBytes) per
// script call, so Redis is never held for long. It returns the stream's
// size in bytes before (Redis's MEMORY USAGE) and its size after
// (estimated) and the entries dropped; on a Redis error, the error with
// what the calls before it dropped (zeros if the first call failed).
func (l *Log) TrimBytes(ctx context.Context, keepAbove int64) (used, left, dropped int64, err error) {
	used, left, dropped, _, err = l.trimBytes(ctx, keepAbove, 0)
	return used, left, dropped, err
}

// trimCall runs trimBytesScript once; next is a previous call's ARGV 8-10
// (nil: measure). It returns the script's seven values.
func (l *Log) trimCall(ctx context.Context, keepAbove, coming int64, next []int64) ([]int64, error) {
	step := l.cfg.callBytes()
	args := []any{l.cfg.budgetHigh(), l.cfg.budgetLow(), keepAbove, entryOverhead, coming, step, step, "", "", ""}
	for i, v := range next {
		args[7+i] = v
	}
	res, err := trimBytesScript.Run(ctx, l.rdb, []string{l.k.log, l.k.meta}, args...).Int64Slice()
	if err == nil && len(res) != 7 {
		err = fmt.Errorf("returned %d values", len(res))
	}
	return res, err
}

// trimBytes is TrimBytes making room for coming more bytes; it also
// returns the entries the stream holds after it (held). On an error after some
// calls, what they dropped is counted and returned with it.
func (l *Log) trimBytes(ctx context.Context, keepAbove, coming int64) (used, left, dropped, held int64, err error) {
	step := l.cfg.callBytes()
	var measured, freed, rest int64 // freed since measured
	var next []int64                // a continuation's ARGV 8-10; nil: measure
	for {
		res, cerr := l.trimCall(ctx, keepAbove, coming, next)
		if cerr != nil {
			err = fmt.Errorf("cursor: trim log to %d bytes: %w", l.cfg.MaxBytes, cerr)
			if next == nil {
				return 0, 0, 0, 0, err
			}
			break
		}
		if res[0] >= 0 {
			// measured (again, when another trim ran in between)
			measured, freed, rest = res[0], 0, res[3]
			if next == nil {
				used = res[0]
			}
		}
		dropped, freed, rest, held = dropped+res[1], freed+res[2], rest-res[2], res[6]
		// a call that freed less than its step met keepAbove or the end
		if res[2] < step || rest <= 0 {
			break
		}
		next = []int64{rest, res[4], res[5]}
	}
	left = max(measured-freed, 0)
	l.m.setLogBytes(left)
	if dropped > 0 {
		l.m.budgetTrimmed(dropped)
	}
	return used, left, dropped, held, err
}
