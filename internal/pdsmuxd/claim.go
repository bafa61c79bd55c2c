package pdsmuxd

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/pdsmux/pdsmux/internal/cursor"
	"github.com/pdsmux/pdsmux/internal/redact"
)

// The log's claim (cursor.Log.ClaimArchive): every pdsmux on one Redis log
// must archive to one database. A process claims the log for its archive
// at the end of Build when Redis answers, in every reconcile just before
// it restores (so at start-up before anything is appended, and at once
// when Redis lost its data), and on every watchInterval tick; a claim lapses claimTTL after it was last made, so
// a killed process stops counting then, and Close drops it at once. Of
// two processes with different archives the one that claimed the log
// first keeps it; the other stops.
//
// A process that starts on a Redis without this archive's state (no
// incarnation marker, or another archive's) waits claimSettle after its
// first claim and claims again before it restores anything: a running
// pdsmux that had the log (whose claims Redis lost, or whose state another
// archive's process put over) renews its claim within a watchInterval and
// keeps the log, and a newcomer with another database is refused before it
// puts its own checkpoint into the log. A process whose renewals failed
// for claimTTL (paused, cut off) claims as a newcomer again: another
// archive may rightly have taken the log meanwhile.
const (
	claimTTL    = 30 * time.Second
	claimSettle = 4 * watchInterval
)

// newClaim is this process's claim, before it is made: Info tells an
// operator reading another pdsmux's refusal (or `pdsmux status`) which
// process this is.
func newClaim(archive, listen, dbURL string) cursor.Claim {
	var b [8]byte
	_, _ = rand.Read(b[:])
	host, _ := os.Hostname()
	return cursor.Claim{Archive: archive, Process: hex.EncodeToString(b[:]),
		Info: fmt.Sprintf("host %s, pid %d, listen %s, --db-url %s", host, os.Getpid(), listen, redact.URL(dbURL))}
}

func settleOf(d time.Duration) time.Duration {
	switch {
	case d < 0:
		return 0
	case d == 0:
		return claimSettle
	}
	return d
}

// claimLog claims the log for this process's archive. An older claim by
// a process archiving elsewhere is a ConfigError naming --db-url; other
// errors are Redis's (retried by the caller).
func (rt *Runtime) claimLog(ctx context.Context) error {
	rt.claimMu.Lock()
	defer rt.claimMu.Unlock()
	if rt.claim.Since != 0 && time.Since(rt.claimedAt) > claimTTL {
		rt.log.Warn("this pdsmux's claim on the log lapsed (not renewed for longer than its lifetime); claiming it again as a newcomer", "lapsed_after", claimTTL)
		rt.claim.Since = 0
	}
	if rt.claimPaused {
		return errors.New("claim paused (test)")
	}
	at := time.Now() // before the call: the claim lapses claimTTL after it was sent
	o, err := rt.events.ClaimArchive(ctx, &rt.claim, claimTTL)
	if err != nil {
		return err
	}
	if o != nil {
		return bad("db-url", rt.s.DBURL, "another pdsmux uses this Redis log (--redis-url, --redis-prefix %q) with a different database, "+
			"and has had the log since %s (%s; its archive %s, this one's %s). Every pdsmux on one log must use the same --db-url (docs/ha.md), "+
			"or one archive misses what the other's trims drop. If that pdsmux is gone, its claim on the log lapses in %s",
			rt.s.RedisPrefix, time.UnixMilli(o.Since).UTC().Format(time.RFC3339), o.Info, o.Archive, rt.claim.Archive, max(o.Lapses, time.Second).Round(time.Second))
	}
	rt.claimedAt = at
	return nil
}

// releaseLog drops this process's claim, if it made one, on a short
// deadline of its own (Close may run with an expired ctx).
func (rt *Runtime) releaseLog() {
	rt.claimMu.Lock()
	defer rt.claimMu.Unlock()
	if rt.claim.Since == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := rt.events.ReleaseArchive(ctx, rt.claim); err != nil {
		rt.log.Warn("could not drop this process's claim on the log; it lapses by itself", "after", claimTTL, "err", err)
	}
}
