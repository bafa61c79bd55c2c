package pdsmuxd

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"time"
)

// The log's claim (cursor.Log.ClaimArchive): every pdsmux on one Redis log
// must archive to one database. A process claims the log for its archive
// at start-up, before it reconciles or appends, and again every
// claimEvery; a claim lapses claimTTL after it was last made, so a
// killed process stops counting then, and Close drops it at once.
const (
	claimTTL   = 30 * time.Second
	claimEvery = 5 * time.Second
)

func newProcessID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// claimLog claims the log for this process's archive. Another live
// process archiving elsewhere is a ConfigError naming --db-url; other
// errors are Redis's (retried by the caller).
func (rt *Runtime) claimLog(ctx context.Context) error {
	other, err := rt.events.ClaimArchive(ctx, rt.archiveID, rt.processID, claimTTL)
	if err != nil {
		return err
	}
	if other != "" {
		return bad("db-url", rt.s.DBURL, "another pdsmux on this Redis log (--redis-url, --redis-prefix %q) archives to a different database "+
			"(archive %s; this one is %s): every pdsmux on one log must use the same --db-url (docs/ha.md), or one archive misses what the other's trims drop. "+
			"A pdsmux that stopped without closing is forgotten %s after it last ran",
			rt.s.RedisPrefix, other, rt.archiveID, claimTTL)
	}
	rt.claimed.Store(true)
	return nil
}

// releaseLog drops this process's claim, if it made one, on a short
// deadline of its own (Close may run with an expired ctx).
func (rt *Runtime) releaseLog() {
	if !rt.claimed.Load() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := rt.events.ReleaseArchive(ctx, rt.archiveID, rt.processID); err != nil {
		rt.log.Warn("could not drop this process's claim on the log; it lapses by itself", "after", claimTTL, "err", err)
	}
}
