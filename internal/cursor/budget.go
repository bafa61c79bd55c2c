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

// DefaultMaxBytes is the default byte budget of the stream in Redis.
const DefaultMaxBytes = 128 << 20

// budgetRecheck is how often the stream's size is measured even when this
// process appended little (another process may append to the same log).
const budgetRecheck = 30 * time.Second

// The byte budget is kept in two levels: when the stream's size (as last
// measured, plus what this process appended since) would reach 7/8 of
// MaxBytes with a batch, the append first measures the stream (MEMORY
// USAGE) and trims the oldest entries down to 3/4, so a replica sending
// large frames waits for its own trims. The 1/8 left above is for what
// other replicas append meanwhile.
func (c Config) budgetHigh() int64 { return c.MaxBytes - c.MaxBytes/8 }
func (c Config) budgetLow() int64  { return c.MaxBytes - c.MaxBytes/4 }

// entryOverhead is what a stream entry costs Redis beyond its field
// values, about (listpack headers, field names, id delta).
const entryOverhead = 32

// budget is the state of the byte budget of one Log.
type budget struct {
	mu sync.Mutex // one measure-and-trim at a time
	// size is the stream's size as last measured (after that trim), at
	// is l.appended then
	size, at  int64
	delivered atomic.Pointer[func() int64] // set by RunBudget
}

// nearBudget reports whether the stream may reach 7/8 of the budget with
// n more bytes, by what was measured and appended since. It is cheap
// (no Redis).
func (l *Log) nearBudget(n int64) bool {
	l.bud.mu.Lock()
	defer l.bud.mu.Unlock()
	return l.bud.size+l.appended.Load()-l.bud.at+n >= l.cfg.budgetHigh()
}

// keepBudget measures the stream and trims it if n more bytes would take
// it near its budget (n < 0: always measure); it waits for a trim already
// running. It does nothing until RunBudget runs (nothing tells it what
// was delivered).
func (l *Log) keepBudget(ctx context.Context, n int64) {
	l.bud.mu.Lock()
	defer l.bud.mu.Unlock()
	d := l.bud.delivered.Load()
	if d == nil || (n >= 0 && l.bud.size+l.appended.Load()-l.bud.at+n < l.cfg.budgetHigh()) {
		return
	}
	a := l.appended.Load()
	used, left, dropped, err := l.trimBytes(ctx, (*d)(), max(n, 0))
	if err != nil {
		if ctx.Err() == nil {
			l.log.Warn("keeping the log within its byte budget failed", "err", err)
		}
		return
	}
	l.bud.size, l.bud.at = left, a
	if dropped > 0 {
		l.log.Debug("trimmed the log to its byte budget", "entries", dropped, "bytes_before", used, "bytes_after", left)
	}
}

// RunBudget keeps the stream within Config.MaxBytes until ctx ends. Once
// it runs, appends that bring the stream near its budget trim the oldest
// entries (TrimBytes) before they return, never one above delivered()
// (the newest seq this process has handed to its live subscribers and its
// archive: those still waiting are kept even over the budget). It also
// measures at start and every 30 s, for appends by other processes.
func (l *Log) RunBudget(ctx context.Context, delivered func() int64) error {
	l.bud.delivered.Store(&delivered)
	defer l.bud.delivered.Store(nil)
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
// bytes are left with the ones to come. Entries are read in small
// steps, so the script holds little more than what it drops. Returns the
// size before, the entries dropped and the bytes they held (estimated).
//
// The trim mark (meta.trimmed) is raised to the last seq dropped in the
// same step, so a reader that finds entries missing finds the mark too.
//
// KEYS: 1 log stream, 2 meta hash. ARGV: 1 high, 2 low, 3 highest seq that may go,
// 4 bytes an entry costs beyond its values, 5 bytes about to be appended.
var trimBytesScript = redis.NewScript(`
local used = redis.call('MEMORY', 'USAGE', KEYS[1], 'SAMPLES', '0')
if not used then return {0, 0, 0} end
local high, low, keep, over, coming = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
if used + coming <= high then return {used, 0, 0} end
local excess = used + coming - low
local len = redis.call('XLEN', KEYS[1])
local avg = math.max(math.floor(used / math.max(len, 1)), 1)
local freed, n, last = 0, 0, nil
local start = '-'
local done = false
while not done and freed < excess do
  local count = math.min(math.max(math.ceil((excess - freed) / avg), 1), 64)
  local es = redis.call('XRANGE', KEYS[1], start, '+', 'COUNT', count)
  if #es == 0 then break end
  for _, e in ipairs(es) do
    local seq = tonumber(string.match(e[1], '^(%d+)'))
    if seq > keep then done = true break end
    local b = over
    for _, f in ipairs(e[2]) do b = b + #f end
    freed, n, last = freed + b, n + 1, seq
    if freed >= excess then break end
  end
  start = '(' .. es[#es][1]
end
if last then
  redis.call('XTRIM', KEYS[1], 'MINID', string.format('%.0f', last + 1) .. '-0')
  local old = tonumber(redis.call('HGET', KEYS[2], 'trimmed') or '0')
  if last > old then redis.call('HSET', KEYS[2], 'trimmed', string.format('%.0f', last)) end
end
return {used, n, freed}
`)

// TrimBytes measures the stream and, when it is above 7/8 of
// Config.MaxBytes, drops its oldest entries (none above seq keepAbove)
// until about 3/4 of the budget is left, recording the trim like Trim
// does (subscribers asking for older history get OutdatedCursor). It
// returns the stream's size in bytes before (Redis's MEMORY USAGE) and
// its size after (estimated) and the entries dropped.
func (l *Log) TrimBytes(ctx context.Context, keepAbove int64) (used, left, dropped int64, err error) {
	return l.trimBytes(ctx, keepAbove, 0)
}

// trimBytes is TrimBytes making room for coming more bytes.
func (l *Log) trimBytes(ctx context.Context, keepAbove, coming int64) (used, left, dropped int64, err error) {
	res, err := trimBytesScript.Run(ctx, l.rdb, []string{l.k.log, l.k.meta},
		l.cfg.budgetHigh(), l.cfg.budgetLow(), strconv.FormatInt(keepAbove, 10), entryOverhead, coming).Int64Slice()
	if err != nil {
		return 0, 0, 0, fmt.Errorf("cursor: trim log to %d bytes: %w", l.cfg.MaxBytes, err)
	}
	if len(res) != 3 {
		return 0, 0, 0, fmt.Errorf("cursor: byte trim returned %d values", len(res))
	}
	used, left, dropped = res[0], max(res[0]-res[2], 0), res[1]
	l.m.setLogBytes(left)
	if dropped == 0 {
		return used, left, 0, nil
	}
	l.m.budgetTrimmed(dropped)
	return used, left, dropped, nil
}
