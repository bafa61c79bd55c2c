package cursor

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Every pdsmux on one log must archive to one database (docs/ha.md): the
// byte budget and the age trim drop entries once the archive a process
// knows has them, so a second archive would miss what the other process
// trimmed. The processes using the log say so in {prefix}:users, a sorted
// set of "archive process since info" members scored by when each claim
// lapses (Redis TIME, unix ms): a process that was killed is forgotten
// once its claim lapses, one that closes at once. Where two live claims
// name different archives, the older claim (the smaller since; the
// smaller archive ID on a tie) keeps the log, so a process that has
// served it since before Redis lost its data (FLUSHALL, a restart without
// its AOF) is not pushed out by one that started in the gap.

// Claim is one process's claim on the log.
type Claim struct {
	Archive string // the archive's ID (store.Store.ID): non-empty, no spaces
	Process string // a token unique to one running pdsmux: non-empty, no spaces
	// Since is when the process first claimed the log, unix ms on Redis's
	// clock: 0 before its first claim, set by ClaimArchive, and kept from
	// then on so that a claim made again after Redis lost it keeps its age.
	Since int64
	Info  string // who the process is, for operators (host, listen address, database): one line
	// Lapses is, in a claim read back (ClaimArchive's conflict, Claims),
	// how long until it lapses unless renewed.
	Lapses time.Duration
}

func (c Claim) member() string {
	return c.Archive + " " + c.Process + " " + strconv.FormatInt(c.Since, 10) + " " + c.Info
}

// claimScript drops lapsed claims, then either returns the oldest of the
// live claims older than this one that name another archive (and writes
// nothing) or records this claim.
//
// KEYS: 1 users
// ARGV: 1 archive, 2 process, 3 ttl ms, 4 since ms (0: now), 5 info
// Returns {since} when claimed, else {since, archive, process, since,
// info, ms left} of the older claim.
var claimScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local since = tonumber(ARGV[4])
if since == 0 then since = now end
local mine = string.format('%.0f', since)
local r = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
local old
for i = 1, #r, 2 do
  local a, p, s, info = string.match(r[i], '^(%S+) (%S+) (%d+) (.*)$')
  if a and a ~= ARGV[1] then
    local sn = tonumber(s)
    if (sn < since or (sn == since and a < ARGV[1])) and ((not old) or sn < old[1]) then
      old = {sn, a, p, s, info, string.format('%.0f', tonumber(r[i + 1]) - now)}
    end
  end
end
if old then
  return {mine, old[2], old[3], old[4], old[5], old[6]}
end
local ttl = tonumber(ARGV[3])
redis.call('ZADD', KEYS[1], now + ttl, ARGV[1] .. ' ' .. ARGV[2] .. ' ' .. mine .. ' ' .. ARGV[5])
redis.call('PEXPIRE', KEYS[1], ttl)
return {mine}
`)

// ClaimArchive claims the log for c (see Claim) for ttl from now on
// Redis's clock; calling it again before then renews the claim. On its
// first success it sets c.Since. If an older live claim names another
// archive it records nothing and returns that claim (conflict non-nil):
// the caller must not use the log. Errors are Redis's, or c malformed.
func (l *Log) ClaimArchive(ctx context.Context, c *Claim, ttl time.Duration) (conflict *Claim, err error) {
	if c.Archive == "" || c.Process == "" || strings.ContainsAny(c.Archive+c.Process, " \t\r\n") || strings.ContainsAny(c.Info, "\r\n") {
		return nil, fmt.Errorf("cursor: claim: archive %q and process %q must be non-empty and free of spaces, info one line", c.Archive, c.Process)
	}
	ms := max(ttl.Milliseconds(), 1)
	res, err := claimScript.Run(ctx, l.rdb, []string{l.k.users}, c.Archive, c.Process, strconv.FormatInt(ms, 10),
		strconv.FormatInt(c.Since, 10), c.Info).StringSlice()
	if err != nil {
		return nil, fmt.Errorf("cursor: claim the log for archive %s: %w", c.Archive, err)
	}
	since, err := strconv.ParseInt(res[0], 10, 64)
	if err != nil {
		return nil, fmt.Errorf("cursor: claim the log: since %q: %w", res[0], err)
	}
	switch len(res) {
	case 1:
		c.Since = since
		return nil, nil
	case 6:
	default:
		return nil, fmt.Errorf("cursor: claim the log: %d values back, want 1 or 6", len(res))
	}
	o := &Claim{Archive: res[1], Process: res[2], Info: res[4]}
	o.Since, _ = strconv.ParseInt(res[3], 10, 64)
	left, _ := strconv.ParseInt(res[5], 10, 64)
	o.Lapses = time.Duration(left) * time.Millisecond
	return o, nil
}

// ReleaseArchive drops c's claim (as ClaimArchive last recorded it), for
// a process that stops. Errors are Redis's.
func (l *Log) ReleaseArchive(ctx context.Context, c Claim) error {
	if err := l.rdb.ZRem(ctx, l.k.users, c.member()).Err(); err != nil {
		return fmt.Errorf("cursor: release the log's claim for archive %s: %w", c.Archive, err)
	}
	return nil
}

// Claims returns the live claims on the log, oldest first, for `pdsmux
// status`. Errors are Redis's.
func (l *Log) Claims(ctx context.Context) ([]Claim, error) {
	now, err := l.rdb.Time(ctx).Result()
	if err != nil {
		return nil, fmt.Errorf("cursor: read Redis's clock: %w", err)
	}
	zs, err := l.rdb.ZRangeByScoreWithScores(ctx, l.k.users, &redis.ZRangeBy{Min: "(" + strconv.FormatInt(now.UnixMilli(), 10), Max: "+inf"}).Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("cursor: read the log's claims: %w", err)
	}
	var out []Claim
	for _, z := range zs {
		f := strings.SplitN(z.Member.(string), " ", 4)
		if len(f) != 4 {
			continue
		}
		c := Claim{Archive: f[0], Process: f[1], Info: f[3], Lapses: time.Duration(int64(z.Score)-now.UnixMilli()) * time.Millisecond}
		c.Since, _ = strconv.ParseInt(f[2], 10, 64)
		out = append(out, c)
	}
	slices.SortFunc(out, func(a, b Claim) int { return cmp.Compare(a.Since, b.Since) })
	return out, nil
}
