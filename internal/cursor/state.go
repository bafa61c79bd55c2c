package cursor

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// ReplicaCursor is where a replica's stream should be resumed.
type ReplicaCursor struct {
	// Stored is the highest upstream seq appended or held for the replica:
	// pass it as Append's expect to detect Redis losing writes.
	Stored int64
	// Resume is the cursor to reconnect with (I3): Stored, or just below the
	// oldest still-held event from this replica (a held event is re-read
	// rather than trusted to survive a repair that never comes).
	Resume int64
	// OK is false when Redis has no cursor for the replica.
	OK bool
}

// Cursor reads a replica's stored cursor.
func (l *Log) Cursor(ctx context.Context, replica string) (ReplicaCursor, error) {
	var cur *redis.StringCmd
	var held *redis.ZSliceCmd
	var marker *redis.BoolCmd
	_, err := l.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		marker = p.HExists(ctx, l.k.meta, "incarnation")
		cur = p.HGet(ctx, l.k.cur, replica)
		held = p.ZRangeWithScores(ctx, l.k.holdSrc(replica), 0, 0)
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return ReplicaCursor{}, fmt.Errorf("cursor: read cursor of replica %q: %w", replica, err)
	}
	if !marker.Val() {
		// A missing cursor here would mean "start live" and skip events.
		return ReplicaCursor{}, fmt.Errorf("%w: cursor of replica %q", ErrNotReconciled, replica)
	}
	s, err := cur.Result()
	if errors.Is(err, redis.Nil) {
		return ReplicaCursor{}, nil
	}
	if err != nil {
		return ReplicaCursor{}, fmt.Errorf("cursor: read cursor of replica %q: %w", replica, err)
	}
	stored, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		// Our own corruption: fail loudly, never fall back to "live".
		return ReplicaCursor{}, fmt.Errorf("cursor: stored cursor of replica %q is %q: %w", replica, s, err)
	}
	rc := ReplicaCursor{Stored: stored, Resume: stored, OK: true}
	if z := held.Val(); len(z) == 1 && int64(z[0].Score)-1 < rc.Resume {
		rc.Resume = max(int64(z[0].Score)-1, 0)
	}
	return rc, nil
}

// ResetCursor forgets a replica's cursor, for when the replica's own seq
// went backwards (its database was reset: FutureCursor).
func (l *Log) ResetCursor(ctx context.Context, replica string) error {
	_, err := l.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.HDel(ctx, l.k.cur, replica)
		p.Del(ctx, l.k.holdSrc(replica))
		return nil
	})
	if err != nil {
		return fmt.Errorf("cursor: reset cursor of replica %q: %w", replica, err)
	}
	return nil
}

// RepoState is what the log last appended for a repo.
type RepoState struct {
	Rev    string
	Commit string // commit CID of that rev
	OK     bool   // false: the log has nothing for this repo
}

// RepoStates returns the last appended rev and commit of each DID.
func (l *Log) RepoStates(ctx context.Context, dids ...string) ([]RepoState, error) {
	if len(dids) == 0 {
		return nil, nil
	}
	vals, err := l.rdb.HMGet(ctx, l.k.did, dids...).Result()
	if err != nil {
		return nil, fmt.Errorf("cursor: read repo state: %w", err)
	}
	out := make([]RepoState, len(dids))
	for i, v := range vals {
		s, ok := v.(string)
		if !ok {
			continue
		}
		rev, commit, _ := strings.Cut(s, " ")
		out[i] = RepoState{Rev: rev, Commit: commit, OK: true}
	}
	return out, nil
}

// AccountStatuses returns the last #account status appended for each DID
// ("" when none was).
func (l *Log) AccountStatuses(ctx context.Context, dids ...string) ([]string, error) {
	if len(dids) == 0 {
		return nil, nil
	}
	vals, err := l.rdb.HMGet(ctx, l.k.acct, dids...).Result()
	if err != nil {
		return nil, fmt.Errorf("cursor: read account status: %w", err)
	}
	out := make([]string, len(dids))
	for i, v := range vals {
		out[i], _ = v.(string)
	}
	return out, nil
}

// Hold is one #commit waiting for its predecessor.
type Hold struct {
	Since       string
	Rev         string
	Commit      string
	Replica     string
	UpstreamSeq int64
	Deadline    time.Time
}

// DueHolds returns up to limit DIDs with a held commit whose hold time
// ended at or before now.
func (l *Log) DueHolds(ctx context.Context, now time.Time, limit int64) ([]string, error) {
	dids, err := l.rdb.ZRangeByScore(ctx, l.k.holdq, &redis.ZRangeBy{
		Min: "-inf", Max: strconv.FormatInt(now.UnixMilli(), 10), Count: limit,
	}).Result()
	if err != nil {
		return nil, fmt.Errorf("cursor: read due holds: %w", err)
	}
	return dids, nil
}

// HeldRepos counts repos with at least one held commit.
func (l *Log) HeldRepos(ctx context.Context) (int64, error) {
	n, err := l.rdb.ZCard(ctx, l.k.holdq).Result()
	if err != nil {
		return 0, fmt.Errorf("cursor: count held repos: %w", err)
	}
	return n, nil
}

// DeferHolds moves a repo's next hold deadline to at.
func (l *Log) DeferHolds(ctx context.Context, did string, at time.Time) error {
	err := l.rdb.ZAddXX(ctx, l.k.holdq, redis.Z{Score: float64(at.UnixMilli()), Member: did}).Err()
	if err != nil {
		return fmt.Errorf("cursor: defer holds of %s: %w", did, err)
	}
	return nil
}

// holdsScript unpacks a repo's held commits (stored msgpack-encoded by the
// append script) into a flat reply: since, rev, commit, replica, useq,
// deadline per hold. It also drops the repo from the hold queue when it
// has none left and no repair flag.
var holdsScript = redis.NewScript(`
local all = redis.call('HGETALL', KEYS[1])
local out = {}
for i = 1, #all, 2 do
  local h = cmsgpack.unpack(all[i + 1])
  out[#out + 1] = all[i]
  out[#out + 1] = h[1]
  out[#out + 1] = h[2]
  out[#out + 1] = h[6]
  out[#out + 1] = tostring(h[5])
  out[#out + 1] = string.format('%.0f', h[7])
end
if #all == 0 and redis.call('HEXISTS', KEYS[3], ARGV[1]) == 0 then redis.call('ZREM', KEYS[2], ARGV[1]) end
return out
`)

// Holds returns a repo's held commits.
func (l *Log) Holds(ctx context.Context, did string) ([]Hold, error) {
	vals, err := holdsScript.Run(ctx, l.rdb, []string{l.k.hold(did), l.k.holdq, l.k.fix}, did).StringSlice()
	if err != nil {
		return nil, fmt.Errorf("cursor: read holds of %s: %w", did, err)
	}
	var out []Hold
	for i := 0; i+5 < len(vals); i += 6 {
		useq, _ := strconv.ParseInt(vals[i+4], 10, 64)
		dl, _ := strconv.ParseInt(vals[i+5], 10, 64)
		out = append(out, Hold{
			Since: vals[i], Rev: vals[i+1], Commit: vals[i+2], Replica: vals[i+3],
			UpstreamSeq: useq, Deadline: time.UnixMilli(dl),
		})
	}
	return out, nil
}

// dropHoldsScript drops held commits that can never be appended: those
// built on a rev the repo has moved past (the losing side of a fork, a
// stale copy), or every one when ARGV[2] is '1' (the repo is gone or its
// account inactive). It returns how many it dropped, or fails with
// UNDECLARED_SOURCES (before writing) like the append script.
//
// KEYS: 1 the repo's holds, 2 did state, 3 hold queue, 4 repair flags,
// then the held-commit index of each replica named in ARGV from 3 on
// ARGV: 1 did, 2 '1' to drop all, then replica names
var dropHoldsScript = redis.NewScript(luaRevLess + `
local srcKeys = {}
for j = 3, #ARGV do srcKeys[ARGV[j]] = KEYS[2 + j] end
local all = redis.call('HGETALL', KEYS[1])
local missing = {}
for i = 2, #all, 2 do
  local r = cmsgpack.unpack(all[i])[6]
  if r ~= '' and not srcKeys[r] then missing[#missing + 1] = r end
end
if #missing > 0 then
  return redis.error_reply('UNDECLARED_SOURCES ' .. table.concat(missing, ' '))
end
local st = redis.call('HGET', KEYS[2], ARGV[1])
local last = st and string.match(st, '^(%S+)')
local n = 0
for i = 1, #all, 2 do
  local since = all[i]
  if ARGV[2] == '1' or (last and revLess(since, last)) then
    local h = cmsgpack.unpack(all[i + 1])
    redis.call('HDEL', KEYS[1], since)
    if h[6] ~= '' then redis.call('ZREM', srcKeys[h[6]], ARGV[1] .. ' ' .. since) end
    n = n + 1
  end
end
if redis.call('EXISTS', KEYS[1]) == 0 and redis.call('HEXISTS', KEYS[4], ARGV[1]) == 0 then
  redis.call('ZREM', KEYS[3], ARGV[1])
end
return n
`)

// DropDeadHolds drops did's held commits that can never be appended (built
// on a rev the repo has moved past), or all of them, and returns how many.
// Repair calls it when the replica's head shows nothing left to repair.
func (l *Log) DropDeadHolds(ctx context.Context, did string, all bool) (int, error) {
	flag := "0"
	if all {
		flag = "1"
	}
	var n int
	err := l.withSources(func(srcKeys, srcNames []string) error {
		keys := append([]string{l.k.hold(did), l.k.did, l.k.holdq, l.k.fix}, srcKeys...)
		args := []any{did, flag}
		for _, s := range srcNames {
			args = append(args, s)
		}
		var err error
		n, err = dropHoldsScript.Run(ctx, l.rdb, keys, args...).Int()
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("cursor: drop dead holds of %s: %w", did, err)
	}
	return n, nil
}

// Flag is a durable request to repair a repo from the replica's signed
// head: an upstream event was refused at the door (Reason is the door's
// reason), or a #sync announced an older rev (Reason "sync_rollback").
// Rev is the refused event's rev.
type Flag struct {
	Reason string
	Rev    string
}

// ReasonSyncRollback is the Flag reason of an upstream #sync whose rev is
// below the log's.
const ReasonSyncRollback = "sync_rollback"

// Flagged returns the repair flag of did, if any.
func (l *Log) Flagged(ctx context.Context, did string) (Flag, bool, error) {
	v, err := l.rdb.HGet(ctx, l.k.fix, did).Result()
	if errors.Is(err, redis.Nil) {
		return Flag{}, false, nil
	}
	if err != nil {
		return Flag{}, false, fmt.Errorf("cursor: read repair flag of %s: %w", did, err)
	}
	reason, rev, _ := strings.Cut(v, " ")
	return Flag{Reason: reason, Rev: rev}, true, nil
}

// clearFlagScript deletes a repair flag if it is still the one that was
// read, and drops the repo from the hold queue when nothing else keeps it.
var clearFlagScript = redis.NewScript(`
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  redis.call('HDEL', KEYS[1], ARGV[1])
end
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 and redis.call('EXISTS', KEYS[3]) == 0 then
  redis.call('ZREM', KEYS[2], ARGV[1])
end
return 0
`)

// ClearFlag removes f from did once its repair is done (or found
// impossible). A newer flag set meanwhile stays.
func (l *Log) ClearFlag(ctx context.Context, did string, f Flag) error {
	err := clearFlagScript.Run(ctx, l.rdb, []string{l.k.fix, l.k.holdq, l.k.hold(did)}, did, f.Reason+" "+f.Rev).Err()
	if err != nil {
		return fmt.Errorf("cursor: clear repair flag of %s: %w", did, err)
	}
	return nil
}

// FlaggedRepos counts repos waiting for a repair flagged at the door.
func (l *Log) FlaggedRepos(ctx context.Context) (int64, error) {
	n, err := l.rdb.HLen(ctx, l.k.fix).Result()
	if err != nil {
		return 0, fmt.Errorf("cursor: count flagged repos: %w", err)
	}
	return n, nil
}

// Trim drops entries appended before now - Retention (at the one-minute
// granularity of the time index the append script keeps) that are also at
// or below archived, the durable archive's high-water mark (pass
// math.MaxInt64 when no archive reads the log), and at or below
// delivered, the newest seq live subscribers have had (math.MaxInt64: no
// bound): the age trim never takes what the archive has not written or
// subscribers have not had. Then it drops the oldest entries beyond
// MaxEntries that are at or below delivered: the cap bounds Redis
// whatever the archive does (the archive records what it missed as
// trimmed), but never takes an entry subscribers have not had, such as
// entries held back for --redis-wait-replicas while the Redis replica is
// away (the log then stays over the cap until they are delivered; the
// byte budget keeps the same rule). The cap is approximate (whole stream
// nodes). The trim mark, the highest seq that may be gone, is raised in
// the same atomic step as each XTRIM, so a reader that finds entries
// missing also finds the mark covering them; subscribers asking for older
// history get OutdatedCursor. It returns how many entries it dropped and
// how many the log still holds over the cap (entries not delivered yet,
// and what the approximation left).
func (l *Log) Trim(ctx context.Context, now time.Time, archived, delivered int64) (dropped, overCap int64, err error) {
	cutoff := now.Add(-l.cfg.Retention).UnixMilli()
	pts, err := l.rdb.ZRangeByScoreWithScores(ctx, l.k.tidx, &redis.ZRangeBy{
		Min: "-inf", Max: strconv.FormatInt(cutoff, 10),
	}).Result()
	if err != nil {
		return 0, 0, fmt.Errorf("cursor: read time index: %w", err)
	}
	// The newest old bucket whose first seq leaves everything trimmed at
	// or below both bounds (buckets are in seq order too).
	bound := min(archived, delivered)
	var n int64
	last := -1
	for i, p := range pts {
		m, _ := p.Member.(string)
		if s, err := strconv.ParseInt(m, 10, 64); err == nil && (bound == math.MaxInt64 || s <= bound+1) {
			last = i
		}
	}
	if last >= 0 {
		minID, _ := pts[last].Member.(string)
		res, err := trimScript.Run(ctx, l.rdb, []string{l.k.log, l.k.meta}, "MINID", minID+"-0").Int64Slice()
		if err != nil || len(res) != 2 {
			return 0, 0, fmt.Errorf("cursor: trim log below %s: %w", minID, err)
		}
		n = res[0]
		if err := l.rdb.ZRemRangeByScore(ctx, l.k.tidx, "-inf", "("+strconv.FormatInt(int64(pts[last].Score), 10)).Err(); err != nil {
			return n, 0, fmt.Errorf("cursor: trim time index: %w", err)
		}
	}
	keep := "+" // no delivery bound
	if delivered < math.MaxInt64 {
		keep = streamID(delivered + 1)
	}
	res, err := trimScript.Run(ctx, l.rdb, []string{l.k.log, l.k.meta}, "CAP", strconv.FormatInt(l.cfg.MaxEntries, 10), keep).Int64Slice()
	if err != nil || len(res) != 2 {
		return n, 0, fmt.Errorf("cursor: trim log to %d entries: %w", l.cfg.MaxEntries, err)
	}
	return n + res[0], res[1], nil
}

// trimScript trims the stream and, if it dropped anything, sets
// meta.trimmed to just below the oldest kept entry (or to the newest ever
// appended when none is kept), never lowering it: both in one atomic step.
// ARGV: MINID id (drop every entry below id), or CAP n keep (drop the
// oldest entries beyond n, approximately, but none at or above id keep;
// "+" for no bound). Returns the number dropped, and for CAP how many
// entries are still over n.
var trimScript = redis.NewScript(`
local n, over = 0, 0
if ARGV[1] == 'MINID' then
  n = redis.call('XTRIM', KEYS[1], 'MINID', ARGV[2])
else
  local excess = redis.call('XLEN', KEYS[1]) - tonumber(ARGV[2])
  if excess > 0 then
    if ARGV[3] == '+' then
      n = redis.call('XTRIM', KEYS[1], 'MAXLEN', '~', ARGV[2])
    else
      n = redis.call('XTRIM', KEYS[1], 'MINID', '~', ARGV[3], 'LIMIT', excess)
    end
    over = math.max(redis.call('XLEN', KEYS[1]) - tonumber(ARGV[2]), 0)
  end
end
if n == 0 then return {0, over} end
local first = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)
local mark
if #first == 1 then
  mark = tonumber(string.match(first[1][1], '^(%d+)')) - 1
else
  local info = redis.call('XINFO', 'STREAM', KEYS[1])
  for i = 1, #info, 2 do
    if info[i] == 'last-generated-id' then mark = tonumber(string.match(info[i + 1], '^(%d+)')) end
  end
end
local old = tonumber(redis.call('HGET', KEYS[2], 'trimmed') or '0')
if mark and mark > old then
  redis.call('HSET', KEYS[2], 'trimmed', string.format('%.0f', mark))
end
return {n, over}
`)

// Cursors returns every replica's stored cursor.
func (l *Log) Cursors(ctx context.Context) (map[string]int64, error) {
	vals, err := l.rdb.HGetAll(ctx, l.k.cur).Result()
	if err != nil {
		return nil, fmt.Errorf("cursor: read replica cursors: %w", err)
	}
	out := make(map[string]int64, len(vals))
	for r, v := range vals {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("cursor: stored cursor of replica %q is %q: %w", r, v, err)
		}
		out[r] = n
	}
	return out, nil
}
