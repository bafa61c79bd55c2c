package cursor

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/pdsmux/pdsmux/internal/frame"
)

// DurableState is what the durable archive knows about the log, to put
// back into a Redis that lost it.
type DurableState struct {
	HighWater int64                // highest seq archived
	Repos     map[string]RepoState // did -> last archived rev and commit
	Accounts  map[string]string    // did -> last archived #account status
	Cursors   map[string]int64     // replica -> cursor covered by the archive
	// Hashes are content hashes of #identity/#account/other events still
	// inside the dedup window, with the time each was appended.
	Hashes map[string]time.Time
	// Archive is the archive's ID (store.Store.ID): Reconcile leaves it as
	// the incarnation marker, so a process can tell a Redis another
	// archive restored. Empty: a random marker, set only if none is.
	Archive string
}

// ContentHash is the dedup key of an #identity/#account/unknown frame:
// every byte but its seq.
func ContentHash(b []byte) (string, error) {
	in, err := frame.Parse(b, 0)
	if err != nil {
		return "", err
	}
	if !in.HasSeq {
		return "", fmt.Errorf("%w: frame has no seq", ErrBadEvent)
	}
	pre, suf := frame.SplitSeq(b, &in)
	return contentHash(pre, suf), nil
}

// LostWrites reports whether Redis's seq counter is below a seq this
// process has appended or read (see ErrLostWrites): Redis lost
// acknowledged writes and kept its state marker. The daemon checks it
// beside Incarnation, so a Redis that went back in time is reconciled even
// while no append runs into it. Errors are Redis's.
func (l *Log) LostWrites(ctx context.Context) (bool, error) {
	seen := l.seen.Load()
	c, err := l.rdb.Get(ctx, l.k.seq).Int64()
	if errors.Is(err, redis.Nil) {
		return false, nil // no counter: the next append seeds it above seen
	}
	if err != nil {
		return false, fmt.Errorf("cursor: read seq counter: %w", err)
	}
	return c < seen, nil
}

// Incarnation returns the marker Reconcile leaves in Redis (the archive's
// ID, DurableState.Archive); "" means this Redis has not been reconciled
// since it was created or lost its data.
func (l *Log) Incarnation(ctx context.Context) (string, error) {
	v, err := l.rdb.HGet(ctx, l.k.meta, "incarnation").Result()
	if errors.Is(err, redis.Nil) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("cursor: read incarnation: %w", err)
	}
	return v, nil
}

// mergeScript raises repo revs, fills missing account statuses, raises
// replica cursors and re-adds dedup hashes. Everything is a max or a
// set-if-missing, so concurrent and repeated runs are safe.
//
// KEYS: 1 did state, 2 account status, 3 cursors, then the dedup marker
// of each "h" group, in order
// ARGV: groups: "r" did rev commit | "a" did status |
//
//	"c" replica cursor | "h" hash ttl-seconds
var mergeScript = redis.NewScript(luaRevLess + `
local changed = 0
local i = 1
local hk = 3
while i <= #ARGV do
  local t = ARGV[i]
  if t == 'r' then
    local did, rev, commit = ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
    local cur = redis.call('HGET', KEYS[1], did)
    local curRev = cur and string.match(cur, '^(%S+)')
    if (not curRev) or revLess(curRev, rev) then
      redis.call('HSET', KEYS[1], did, rev .. ' ' .. commit)
      changed = changed + 1
    end
    i = i + 4
  elseif t == 'a' then
    changed = changed + redis.call('HSETNX', KEYS[2], ARGV[i + 1], ARGV[i + 2])
    i = i + 3
  elseif t == 'c' then
    local cur = redis.call('HGET', KEYS[3], ARGV[i + 1])
    if (not cur) or tonumber(cur) < tonumber(ARGV[i + 2]) then
      redis.call('HSET', KEYS[3], ARGV[i + 1], ARGV[i + 2])
      changed = changed + 1
    end
    i = i + 3
  else
    hk = hk + 1
    if redis.call('SET', KEYS[hk], '1', 'NX', 'EX', ARGV[i + 2]) then
      changed = changed + 1
    end
    i = i + 3
  end
end
return changed
`)

// Reconcile merges st into Redis (see mergeScript), makes sure the seq
// counter is above everything archived, and leaves an incarnation marker.
// lost says Redis was caught losing data: the counter then also jumps to
// the clock floor, above any seq another process may have handed out and
// not archived yet. It returns how many values it changed: zero when
// Redis was intact.
func (l *Log) Reconcile(ctx context.Context, st DurableState, lost bool) (int, error) {
	l.RaiseFloor(st.HighWater)
	keys := []string{l.k.did, l.k.acct, l.k.cur}
	changed := 0
	var args []any
	flush := func() error {
		if len(args) == 0 {
			return nil
		}
		n, err := mergeScript.Run(ctx, l.rdb, keys, args...).Int()
		if err != nil {
			return fmt.Errorf("cursor: merge durable state into Redis: %w", err)
		}
		changed += n
		args, keys = args[:0], keys[:3]
		return nil
	}
	add := func(vals ...any) error {
		args = append(args, vals...)
		if vals[0] == "h" {
			keys = append(keys, l.k.dedup(vals[1].(string)))
		}
		if len(args) > 2000 {
			return flush()
		}
		return nil
	}
	for did, rs := range st.Repos {
		if err := add("r", did, rs.Rev, rs.Commit); err != nil {
			return changed, err
		}
	}
	for did, status := range st.Accounts {
		if err := add("a", did, status); err != nil {
			return changed, err
		}
	}
	for r, c := range st.Cursors {
		if err := add("c", r, strconv.FormatInt(c, 10)); err != nil {
			return changed, err
		}
	}
	now := l.now()
	for h, at := range st.Hashes {
		left := l.cfg.DedupTTL - now.Sub(at)
		if left < time.Second {
			continue
		}
		if err := add("h", h, strconv.FormatInt(int64(left/time.Second), 10)); err != nil {
			return changed, err
		}
	}
	if err := flush(); err != nil {
		return changed, err
	}
	// The counter is raised last: until then an append that finds it
	// below what its process has seen fails with ErrLostWrites instead of
	// being judged against repo states not yet merged back.
	floor := max(st.HighWater+1, l.seen.Load()+1)
	if lost {
		floor = max(floor, l.now().UnixMicro())
	}
	if floor > 1 {
		if err := bumpScript.Run(ctx, l.rdb, []string{l.k.seq}, strconv.FormatInt(floor, 10)).Err(); err != nil {
			return changed, fmt.Errorf("cursor: raise seq counter above the archive: %w", err)
		}
	}
	var err error
	if st.Archive != "" {
		err = l.rdb.HSet(ctx, l.k.meta, "incarnation", st.Archive).Err()
	} else {
		var id [8]byte
		_, _ = rand.Read(id[:])
		err = l.rdb.HSetNX(ctx, l.k.meta, "incarnation", hex.EncodeToString(id[:])).Err()
	}
	if err != nil {
		return changed, fmt.Errorf("cursor: set incarnation: %w", err)
	}
	return changed, nil
}
