package cursor

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// DefaultMaxBytes is the default byte budget of the stream in Redis.
const DefaultMaxBytes = 128 << 20

// budgetRecheck is how often the stream's size is measured even when this
// process appended little (another process may append to the same log).
const budgetRecheck = 30 * time.Second

// The byte budget is kept in three levels: appends wake the trimmer every
// MaxBytes/16 appended bytes; it measures the stream (MEMORY USAGE) when
// its estimate reaches 7/8 of MaxBytes, and then trims the oldest entries
// down to 3/4. The 1/8 left above is for what replicas append while the
// trimmer runs.
func (c Config) budgetStep() int64 { return max(c.MaxBytes/16, 1) }
func (c Config) budgetHigh() int64 { return c.MaxBytes - c.MaxBytes/8 }
func (c Config) budgetLow() int64  { return c.MaxBytes - c.MaxBytes/4 }

// entryOverhead is what a stream entry costs Redis beyond its field
// values, about (listpack headers, field names, id delta).
const entryOverhead = 32

// noteAppended counts bytes this process appended and wakes the budget
// trimmer every budgetStep of them.
func (l *Log) noteAppended(n int64) {
	if n <= 0 {
		return
	}
	step := l.cfg.budgetStep()
	now := l.appended.Add(n)
	if (now-n)/step != now/step {
		select {
		case l.budgetWake <- struct{}{}:
		default:
		}
	}
}

// RunBudget keeps the stream within Config.MaxBytes until ctx ends: when
// appends bring it near the budget, the oldest entries go (TrimBytes),
// but never one above delivered() (the newest seq this process has handed
// to its live subscribers and its archive: those still waiting are kept
// even over the budget). It also measures every 30 s, for appends by other
// processes. Errors are logged and retried at the next wake.
func (l *Log) RunBudget(ctx context.Context, delivered func() int64) error {
	t := time.NewTicker(budgetRecheck)
	defer t.Stop()
	var measured, at int64 // last measured size, and l.appended then
	measure := true
	for {
		if measure || measured+l.appended.Load()-at >= l.cfg.budgetHigh() {
			a := l.appended.Load()
			used, n, err := l.TrimBytes(ctx, delivered())
			switch {
			case ctx.Err() != nil:
				return nil
			case err != nil:
				l.log.Warn("keeping the log within its byte budget failed", "err", err)
			default:
				measured, at = used, a
				if n > 0 {
					l.log.Debug("trimmed the log to its byte budget", "entries", n, "bytes_before", used)
				}
			}
		}
		measure = false
		select {
		case <-ctx.Done():
			return nil
		case <-l.budgetWake:
		case <-t.C:
			measure = true
		}
	}
}

// trimBytesScript measures the stream (MEMORY USAGE, exact) and, when it
// is above ARGV[1] bytes, drops its oldest entries, up to seq ARGV[3] at
// most, until about ARGV[2] bytes are left. Entries are read in small
// steps, so the script holds little more than what it drops. Returns the
// size before, the entries dropped and the bytes they held (estimated).
//
// KEYS: 1 log stream. ARGV: 1 high, 2 low, 3 highest seq that may go,
// 4 bytes an entry costs beyond its values.
var trimBytesScript = redis.NewScript(`
local used = redis.call('MEMORY', 'USAGE', KEYS[1], 'SAMPLES', '0')
if not used then return {0, 0, 0} end
local high, low, keep, over = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
if used <= high then return {used, 0, 0} end
local excess = used - low
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
end
return {used, n, freed}
`)

// TrimBytes measures the stream and, when it is above 7/8 of
// Config.MaxBytes, drops its oldest entries (none above seq keepAbove)
// until about 3/4 of the budget is left, recording the trim like Trim
// does (subscribers asking for older history get OutdatedCursor). It
// returns the stream's size in bytes before (Redis's MEMORY USAGE) and
// the entries dropped.
func (l *Log) TrimBytes(ctx context.Context, keepAbove int64) (used, dropped int64, err error) {
	res, err := trimBytesScript.Run(ctx, l.rdb, []string{l.k.log},
		l.cfg.budgetHigh(), l.cfg.budgetLow(), strconv.FormatInt(keepAbove, 10), entryOverhead).Int64Slice()
	if err != nil {
		return 0, 0, fmt.Errorf("cursor: trim log to %d bytes: %w", l.cfg.MaxBytes, err)
	}
	if len(res) != 3 {
		return 0, 0, fmt.Errorf("cursor: byte trim returned %d values", len(res))
	}
	used, dropped = res[0], res[1]
	l.m.setLogBytes(used - res[2])
	if dropped == 0 {
		return used, 0, nil
	}
	l.m.budgetTrimmed(dropped)
	if err := trimMarkScript.Run(ctx, l.rdb, []string{l.k.log, l.k.meta}).Err(); err != nil {
		return used, dropped, fmt.Errorf("cursor: record trim mark: %w", err)
	}
	return used, dropped, nil
}
