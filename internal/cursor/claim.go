package cursor

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Every pdsmux on one log must archive to one database (docs/ha.md): the
// byte budget and the age trim drop entries once the archive a process
// knows has them, so a second archive would miss what the other process
// trimmed. The processes using the log say so in {prefix}:users, a sorted
// set of "archive process" members scored by when the claim lapses (Redis
// TIME, unix ms), so a process that was killed is forgotten once its
// claim lapses and one that closes is forgotten at once.

// claimScript drops lapsed claims, then either returns the archive of a
// live claim that names another archive (and writes nothing) or records
// this process's claim.
//
// KEYS: 1 users
// ARGV: 1 archive, 2 process, 3 ttl ms
// Returns "" when claimed, else the other archive.
var claimScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
for _, m in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local a = string.match(m, '^(%S+) ')
  if a ~= ARGV[1] then
    return a
  end
end
local ttl = tonumber(ARGV[3])
redis.call('ZADD', KEYS[1], now + ttl, ARGV[1] .. ' ' .. ARGV[2])
redis.call('PEXPIRE', KEYS[1], ttl)
return ''
`)

// ClaimArchive records that process (any token unique to one running
// pdsmux) uses the log and archives to archive (store.Store.ID), for ttl
// from now on Redis's clock; calling it again before then extends the
// claim. If another process's claim that has not lapsed names a different
// archive, it records nothing and returns that archive. archive and
// process must be non-empty and free of spaces. Errors are Redis's.
func (l *Log) ClaimArchive(ctx context.Context, archive, process string, ttl time.Duration) (other string, err error) {
	if archive == "" || process == "" || strings.ContainsAny(archive+process, " \t\r\n") {
		return "", fmt.Errorf("cursor: claim: archive %q and process %q must be non-empty and free of spaces", archive, process)
	}
	ms := max(ttl.Milliseconds(), 1)
	other, err = claimScript.Run(ctx, l.rdb, []string{l.k.users}, archive, process, strconv.FormatInt(ms, 10)).Text()
	if err != nil {
		return "", fmt.Errorf("cursor: claim the log for archive %s: %w", archive, err)
	}
	return other, nil
}

// ReleaseArchive drops the claim ClaimArchive recorded for archive and
// process, for a process that stops. Errors are Redis's.
func (l *Log) ReleaseArchive(ctx context.Context, archive, process string) error {
	if err := l.rdb.ZRem(ctx, l.k.users, archive+" "+process).Err(); err != nil {
		return fmt.Errorf("cursor: release the log's claim for archive %s: %w", archive, err)
	}
	return nil
}
