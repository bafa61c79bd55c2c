package repair

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	comatproto "github.com/bluesky-social/indigo/api/atproto"
	"github.com/bluesky-social/indigo/atproto/identity"
	"github.com/bluesky-social/indigo/atproto/repo"
	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/ipfs/go-cid"

	"github.com/pdsmux/pdsmux/internal/blocks"
	"github.com/pdsmux/pdsmux/internal/cursor"
	"github.com/pdsmux/pdsmux/internal/frame"
	"github.com/pdsmux/pdsmux/internal/pool"
	"github.com/pdsmux/pdsmux/internal/verify"
)

// Defaults for Config.
const (
	DefaultScanInterval = 15 * time.Second
	DefaultGrace        = 5 * time.Second
	DefaultPoll         = 250 * time.Millisecond
	repairAttempts      = 3
	dueBatch            = 100
)

// Config tunes repair.
type Config struct {
	ScanInterval time.Duration // how often every healthy replica's listRepos is compared with the log
	Grace        time.Duration // how long a repo may be ahead of the log before repair
	Poll         time.Duration // how often expired holds are looked for
	CacheBytes   int           // block cache size
	UserAgent    string
	// NewRepos decides which repos unknown to the log are announced with
	// their records as a #commit of creates (NewReposAuto, NewReposAll,
	// NewReposNone; "" means auto). See docs/ARCHITECTURE.md.
	NewRepos string
	// Born is when this deployment first started; under NewReposAuto a
	// repo whose DID was created at or after it is new.
	Born time.Time
	// Age dates DIDs for NewReposAuto; nil treats every unknown repo as old.
	Age AccountAge
	// Now is the clock of hold deadlines, back-off and scan grace; nil is
	// time.Now (tests inject one to step through a back-off schedule).
	Now func() time.Time
}

// Log is what repair needs of the merged log. *cursor.Log is one.
type Log interface {
	DueHolds(ctx context.Context, now time.Time, limit int64) ([]string, error)
	Holds(ctx context.Context, did string) ([]cursor.Hold, error)
	HeldRepos(ctx context.Context) (int64, error)
	DeferHolds(ctx context.Context, did string, at time.Time) error
	Flagged(ctx context.Context, did string) (cursor.Flag, bool, error)
	DropDeadHolds(ctx context.Context, did string, all bool) (int, error)
	ClearFlag(ctx context.Context, did string, f cursor.Flag) error
	AppendRollback(ctx context.Context, ev cursor.Event, atRev string) (cursor.Result, error)
	RepoStates(ctx context.Context, dids ...string) ([]cursor.RepoState, error)
	AccountStatuses(ctx context.Context, dids ...string) ([]string, error)
	AppendRepair(ctx context.Context, ev cursor.Event, atRev string) (cursor.Result, error)
	AppendSynthetic(ctx context.Context, ev cursor.Event) (cursor.Result, error)
	Config() cursor.Config
}

// Repairer runs detection and repair.
type Repairer struct {
	cfg   Config
	log   Log
	pool  *pool.Pool
	hc    *http.Client
	dir   identity.Directory // nil: head commit signatures are not checked
	m     *Metrics
	lg    *slog.Logger
	cache *blockCache
	now   func() time.Time

	ahead       map[string]time.Time // did -> first scan that saw it ahead of the log
	statusAhead map[string]time.Time // did -> first scan that saw an unannounced status
	failures    map[string]int       // did -> repairs failed in a row (hold queue)
	logFailures int                  // repairs in a row the log failed (ErrLog), all repos
	idle        map[string]int       // did -> repairs in a row that found nothing to append while holds remained
}

// New returns a Repairer. dir verifies the replicas' head commit
// signatures; pass nil to trust the replicas.
func New(cfg Config, log Log, p *pool.Pool, hc *http.Client, dir identity.Directory, m *Metrics, logger *slog.Logger) *Repairer {
	if cfg.ScanInterval <= 0 {
		cfg.ScanInterval = DefaultScanInterval
	}
	if cfg.Grace <= 0 {
		cfg.Grace = DefaultGrace
	}
	if cfg.Poll <= 0 {
		cfg.Poll = DefaultPoll
	}
	if cfg.CacheBytes <= 0 {
		cfg.CacheBytes = DefaultCacheBytes
	}
	if cfg.NewRepos == "" {
		cfg.NewRepos = NewReposAuto
	}
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	return &Repairer{
		cfg: cfg, log: log, pool: p, hc: hc, dir: dir, m: m,
		lg: logger.With("component", "repair"), cache: newBlockCache(cfg.CacheBytes), now: now,
		ahead: map[string]time.Time{}, statusAhead: map[string]time.Time{}, failures: map[string]int{}, idle: map[string]int{},
	}
}

// Run repairs until ctx ends.
func (r *Repairer) Run(ctx context.Context) error {
	poll := time.NewTicker(r.cfg.Poll)
	defer poll.Stop()
	scan := time.NewTicker(r.cfg.ScanInterval)
	defer scan.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-poll.C:
			r.expireHolds(ctx)
		case <-scan.C:
			if err := r.Scan(ctx); err != nil && ctx.Err() == nil {
				r.m.failed("scan")
				r.lg.Warn("listRepos scan failed", "err", err)
			}
		}
	}
}

// expireHolds repairs every repo whose held commit waited too long, and
// every repo flagged at the door (due at once).
func (r *Repairer) expireHolds(ctx context.Context) {
	if n, err := r.log.HeldRepos(ctx); err == nil {
		r.m.setHeld(n)
	}
	dids, err := r.log.DueHolds(ctx, r.now(), dueBatch)
	if err != nil {
		return // Redis trouble; the tailers report it
	}
	for _, did := range dids {
		if ctx.Err() != nil {
			return
		}
		holds, err := r.log.Holds(ctx, did)
		if err != nil {
			continue
		}
		flag, flagged, err := r.log.Flagged(ctx, did)
		if err != nil {
			continue
		}
		reason := "hold_timeout"
		var fp *cursor.Flag
		if flagged {
			reason, fp = "refused", &flag
			if flag.Reason == cursor.ReasonSyncRollback {
				reason = "sync_rollback"
			}
		} else {
			if len(holds) == 0 {
				continue
			}
			earliest := holds[0].Deadline
			for _, h := range holds[1:] {
				if h.Deadline.Before(earliest) {
					earliest = h.Deadline
				}
			}
			if earliest.After(r.now()) { // an earlier hold was released meanwhile
				_ = r.log.DeferHolds(ctx, did, earliest)
				continue
			}
		}
		kind, err := r.repair(ctx, did, reason, fp)
		var future *verify.FutureRevError
		switch {
		case err == nil:
			if flagged {
				_ = r.log.ClearFlag(ctx, did, flag)
			}
			if kind != "commit" && kind != "sync" && kind != "rollback" {
				// Nothing to append: holds built on a rev the repo moved
				// past (a fork's losing side) can never chain, and for a
				// repo gone or inactive none will; drop them. What is left
				// waits with back-off, then is given up.
				if n, err := r.log.DropDeadHolds(ctx, did, kind != "none"); err == nil && n > 0 {
					r.lg.Info("dropped held commits that can never be appended", "did", did, "held", n, "outcome", kind)
				}
				r.waitOrAbandon(ctx, did)
			} else {
				delete(r.idle, did)
			}
		case errors.As(err, &future):
			r.m.failed("future_rev")
			r.lg.Warn("the replica's head rev is ahead of the clock; repair waits until relays would take it",
				"did", did, "rev", future.Rev, "retry_at", future.AcceptableAt())
			_ = r.log.DeferHolds(ctx, did, future.AcceptableAt())
		case errors.Is(err, ErrBadCommit):
			// The replica's own signed head fails the checks: nothing pdsmux
			// may append would pass a relay. Left to the operator.
			if flagged {
				_ = r.log.ClearFlag(ctx, did, flag)
			}
			r.m.failed("unrepairable")
			at, loud := r.backOff(did)
			if loud {
				r.lg.Error("cannot repair the repo: the replica's head commit fails verification; the repo stays at its last good rev until the account writes a valid commit",
					"did", did, "reason", reason, "err", err, "failures", r.failures[did], "retry_at", at)
			}
			_ = r.log.DeferHolds(ctx, did, at)
		case errors.Is(err, ErrLog):
			// Redis failing over or unreachable is not the repo's fault:
			// no per-repo back-off (after a few failovers it would leave
			// a busy repo unrepaired long enough to outgrow one #commit).
			r.logFailures++
			if n := r.logFailures; n&(n-1) == 0 {
				r.lg.Warn("repair could not use the log (Redis); will retry after the hold time", "did", did, "reason", reason, "err", err, "failures", n)
			}
			_ = r.log.DeferHolds(ctx, did, r.now().Add(r.log.Config().HoldTimeout))
		default:
			at, loud := r.backOff(did)
			if loud {
				r.lg.Warn("repair failed; will retry", "did", did, "reason", reason, "err", err, "failures", r.failures[did], "retry_at", at)
			}
			_ = r.log.DeferHolds(ctx, did, at)
		}
		if err == nil {
			delete(r.failures, did)
			r.logFailures = 0
		}
	}
}

// MaxBackoff bounds the wait before a failing repair is tried again, and
// before held commits are looked at again after a repair found nothing to
// append.
const MaxBackoff = 5 * time.Minute

// AbandonAfter is how many repairs in a row may find nothing to append
// while a repo still has held commits before those are dropped. Such a
// commit chains onto a rev that neither the log nor any replica's head
// has (a write a replica streamed and then lost or undid, or a replica
// lagging): none would pass a relay's chain check. They are looked at
// again after the hold time, then 2, 4 and 8 times it (16 hold times in
// all: 32 s with the default 2 s), so a replica that catches up meanwhile
// gets them appended or repaired. Dropping them counts
// pdsmux_repair_holds_abandoned_total and logs one warning; the replica's
// resume cursor is no longer pinned below them, and if a replica's head
// later passes the log, the listRepos scan repairs the repo.
const AbandonAfter = 5

// maxTracked bounds the per-repo counts (failures, idle): past it they
// are forgotten wholesale.
const maxTracked = 100_000

// backOffWait is the hold time doubled n-1 times, at most MaxBackoff.
func (r *Repairer) backOffWait(n int) time.Duration {
	return min(r.log.Config().HoldTimeout<<min(n-1, 16), MaxBackoff)
}

// backOff records one more failed repair of did and returns when to try
// again (the hold time, doubled per failure, at most MaxBackoff) and
// whether to log it (the 1st, 2nd, 4th, 8th, ... failure), so a PLC or
// replica outage neither hammers them nor floods the log.
func (r *Repairer) backOff(did string) (time.Time, bool) {
	if len(r.failures) >= maxTracked {
		clear(r.failures)
	}
	n := r.failures[did] + 1
	r.failures[did] = n
	return r.now().Add(r.backOffWait(n)), n&(n-1) == 0
}

// waitOrAbandon follows a repair of did that found nothing to append. If
// held commits remain it counts one more such repair and looks at them
// again after backOffWait of that count; on the AbandonAfter-th it drops
// them (see AbandonAfter).
func (r *Repairer) waitOrAbandon(ctx context.Context, did string) {
	holds, err := r.log.Holds(ctx, did)
	if err != nil { // Redis trouble; the tailers report it
		_ = r.log.DeferHolds(ctx, did, r.now().Add(r.log.Config().HoldTimeout))
		return
	}
	if len(holds) == 0 {
		delete(r.idle, did)
		return
	}
	if len(r.idle) >= maxTracked {
		clear(r.idle)
	}
	n := r.idle[did] + 1
	r.idle[did] = n
	if n < AbandonAfter {
		_ = r.log.DeferHolds(ctx, did, r.now().Add(r.backOffWait(n)))
		return
	}
	if err := r.abandon(ctx, did, holds); err != nil {
		r.lg.Warn("dropping held commits that never chained failed; will retry", "did", did, "err", err)
		_ = r.log.DeferHolds(ctx, did, r.now().Add(r.log.Config().HoldTimeout))
		return
	}
	delete(r.idle, did)
}

// abandon drops every held commit of did (cursor.Log.DropDeadHolds with
// all, one atomic step that also unpins the replicas' resume cursors),
// counts them, and logs one warning naming what was dropped, the log's
// rev and a replica's head rev.
func (r *Repairer) abandon(ctx context.Context, did string, holds []cursor.Hold) error {
	n, err := r.log.DropDeadHolds(ctx, did, true)
	if err != nil {
		return err
	}
	r.m.abandoned(n)
	if n == 0 {
		return nil
	}
	var revs, since, from []string
	for _, h := range holds[:min(len(holds), 10)] {
		revs, since, from = append(revs, h.Rev), append(since, h.Since), append(from, h.Replica)
	}
	logRev, headRev := "", ""
	if sts, err := r.log.RepoStates(ctx, did); err == nil && sts[0].OK {
		logRev = sts[0].Rev
	}
	if _, _, rev, err := r.findHead(ctx, did); err == nil {
		headRev = rev
	}
	r.lg.Warn("dropped held commits that never chained: their predecessor is neither in the log nor at any replica's head. "+
		"Check that the replicas named in held_from serve the same database as the others (a replica restored from backup or pointed at another database streams writes the repo does not have). "+
		"Nothing more is needed if the write was undone; if a replica's head later passes the log's rev, the listRepos scan repairs the repo",
		"did", did, "dropped", n, "held_revs", revs, "held_since", since, "held_from", from,
		"log_rev", logRev, "replica_head_rev", headRev, "repairs", AbandonAfter)
	return nil
}

// noticeFork reports a held commit built on a rev the log has already
// moved past: a second child of one commit, so two replicas wrote to the
// repo at once. The repair that follows brings the log to the replica's
// head (whichever write won the database) with one consistent commit.
// When the losing write arrives last it is dropped as older than the
// log's rev: consistent too, but not counted.
func (r *Repairer) noticeFork(ctx context.Context, did string, holds []cursor.Hold) {
	sts, err := r.log.RepoStates(ctx, did)
	if err != nil || !sts[0].OK {
		return
	}
	for _, h := range holds {
		if h.Since != "" && cursor.RevLess(h.Since, sts[0].Rev) && cursor.RevLess(sts[0].Rev, h.Rev) {
			r.m.forked()
			r.lg.Warn("repo forked: two replicas wrote to one account at once (Cocoon's repo lock is per process); repairing to the replica's head. Route each account to one replica (docs/deploy.md)",
				"did", did, "log_rev", sts[0].Rev, "held_rev", h.Rev, "held_since", h.Since, "held_from", h.Replica)
			return
		}
	}
}

// findHead asks healthy replicas, in order, for the repo's head.
func (r *Repairer) findHead(ctx context.Context, did string) (*replicaAPI, cid.Cid, string, error) {
	var lastErr error = ErrRepoNotFound
	for _, rep := range r.pool.Ordered() {
		api := newReplicaAPI(rep, r.hc, r.cfg.UserAgent)
		c, rev, err := api.head(ctx, did)
		if err == nil {
			return api, c, rev, nil
		}
		if !errors.Is(err, ErrRepoNotFound) {
			lastErr = err
		}
	}
	return nil, cid.Undef, "", lastErr
}

// Repair brings the log's view of did up to a replica's head and returns
// what it appended: "commit", "sync", "rollback", or "none" (the log is
// not behind), "inactive" (the account is not active: relays drop its
// events), "gone" (no replica hosts the repo). A head rev ahead of the
// clock returns a *verify.FutureRevError; a head that fails verification
// an error wrapping ErrBadCommit.
func (r *Repairer) Repair(ctx context.Context, did, reason string) (string, error) {
	return r.repair(ctx, did, reason, nil)
}

func (r *Repairer) repair(ctx context.Context, did, reason string, flag *cursor.Flag) (string, error) {
	if holds, err := r.log.Holds(ctx, did); err == nil && len(holds) > 0 {
		r.noticeFork(ctx, did, holds)
	}
	for range repairAttempts {
		kind, err := r.repairOnce(ctx, did, reason, flag)
		if errors.Is(err, cursor.ErrRepairRace) {
			continue // the repo moved while we built; look again
		}
		if err != nil {
			return "", err
		}
		r.m.repaired(reason, kind)
		return kind, nil
	}
	return "", fmt.Errorf("repair %s: repo kept moving", did)
}

func (r *Repairer) repairOnce(ctx context.Context, did, reason string, flag *cursor.Flag) (string, error) {
	sts, err := r.log.RepoStates(ctx, did)
	if err != nil {
		return "", logErr(err)
	}
	st := sts[0]
	statuses, err := r.log.AccountStatuses(ctx, did)
	if err != nil {
		return "", logErr(err)
	}
	if s := statuses[0]; s != "" && s != "active" {
		// Relays drop events of inactive accounts; when the account is
		// active again the scan announces it and brings the repo up.
		return "inactive", nil
	}
	api, head, rev, err := r.findHead(ctx, did)
	if errors.Is(err, ErrRepoNotFound) {
		return "gone", nil
	}
	if err != nil {
		r.m.failed("head")
		return "", err
	}
	rollback := flag != nil && flag.Reason == cursor.ReasonSyncRollback
	if st.OK && !cursor.RevLess(st.Rev, rev) && !(rollback && rev == flag.Rev && cursor.RevLess(rev, st.Rev)) {
		// The replica is not ahead of the log. Held commits above it, if
		// any, wait for the replica (a lagging replica, or a fork that the
		// next write will settle); an older #sync whose rev is not the
		// replica's head was a stale copy.
		return "none", nil
	}
	if err := r.checkRev(rev); err != nil {
		return "", err
	}
	src := &source{api: api, cache: r.cache, did: did}
	store := blocks.NewSet()
	hc, headBytes, err := src.commit(ctx, store, head)
	if err != nil {
		r.m.failed("fetch")
		return "", err
	}
	if hc.Rev != rev {
		return "", fmt.Errorf("%w: head %s has rev %s, getLatestCommit said %s", ErrBadCommit, head, hc.Rev, rev)
	}
	if err := r.verifySignature(ctx, did, hc); err != nil {
		return "", err
	}
	now := r.now()

	if st.OK && cursor.RevLess(rev, st.Rev) {
		// A replica restored from backup announced an older rev, and its
		// signed head is at that rev: relays take a #sync rollback.
		return r.appendRollback(ctx, did, head, headBytes, rev, st.Rev, now)
	}
	if !st.OK {
		return r.announceNew(ctx, src, head, hc, headBytes, now, reason)
	}

	prev, err := cid.Decode(st.Commit)
	if err != nil {
		return r.appendSync(ctx, did, head, headBytes, rev, st.Rev, now, reason, "stored commit cid unreadable")
	}
	kind, nops, err := r.appendCommitOrSync(ctx, src, st.Rev, prev, head, hc, headBytes, now, reason)
	if err == nil && kind == "commit" {
		r.lg.Info("repaired missed writes with a synthesized #commit", "did", did, "reason", reason,
			"from_rev", st.Rev, "to_rev", rev, "ops", nops, "replica", api.rep.Name)
	}
	return kind, err
}

// appendCommitOrSync builds the #commit from prev at rev atRev (cid.Undef
// and "": from the empty tree) to the signed head, and appends it if the
// repo is still at atRev; where one commit cannot carry the change it
// appends a #sync instead. It returns the kind appended and the ops.
func (r *Repairer) appendCommitOrSync(ctx context.Context, src *source, atRev string, prev, head cid.Cid, hc *repo.Commit, headBytes []byte, now time.Time, reason string) (string, int, error) {
	ev, nops, err := src.buildCommit(ctx, atRev, prev, head, hc, headBytes, now)
	switch {
	case errors.Is(err, ErrMissingBlocks) || errors.Is(err, ErrTooBig) || errors.Is(err, ErrBadCommit):
		kind, err := r.appendSync(ctx, src.did, head, headBytes, hc.Rev, atRev, now, reason, err.Error())
		return kind, 0, err
	case err != nil:
		r.m.failed("fetch")
		return "", 0, err
	}
	b, err := frame.Encode(frame.TypeCommit, ev)
	if err != nil {
		return "", 0, err
	}
	if err := r.appendRepair(ctx, b, atRev); err != nil {
		return "", 0, err
	}
	return "commit", nops, nil
}

// checkRev refuses a head rev relays would refuse as ahead of the clock.
func (r *Repairer) checkRev(rev string) error {
	t, err := syntax.ParseTID(rev)
	if err != nil {
		return fmt.Errorf("%w: rev %q: %v", ErrBadCommit, rev, err)
	}
	if at := t.Time(); at.After(r.now().Add(verify.FutureRevSlack)) {
		return &verify.FutureRevError{Rev: rev, At: at}
	}
	return nil
}

// announceNew appends a repo the log has never seen. A new repo (see
// isNew) gets what its creation would have produced: #identity, #account
// (unless the log has its status) and one #commit carrying every record as
// a create, from the empty tree to the signed head; where one commit
// cannot carry it, or for an old repo, #identity and a #sync.
func (r *Repairer) announceNew(ctx context.Context, src *source, head cid.Cid, hc *repo.Commit, headBytes []byte, now time.Time, reason string) (string, error) {
	did := src.did
	isNew, why, err := r.isNew(ctx, did, hc.Rev)
	if err != nil {
		r.m.failed("identity")
		return "", err
	}
	if err := r.appendIdentity(ctx, did, now); err != nil {
		return "", err
	}
	if !isNew {
		return r.appendSync(ctx, did, head, headBytes, hc.Rev, "", now, reason, why)
	}
	statuses, err := r.log.AccountStatuses(ctx, did)
	if err != nil {
		return "", logErr(err)
	}
	if statuses[0] == "" {
		if err := r.appendSynthetic(ctx, frame.TypeAccount, &comatproto.SyncSubscribeRepos_Account{
			Did: did, Active: true, Time: now.UTC().Format(syntax.AtprotoDatetimeLayout),
		}); err != nil {
			return "", err
		}
	}
	kind, nops, err := r.appendCommitOrSync(ctx, src, "", cid.Undef, head, hc, headBytes, now, reason)
	if err == nil && kind == "commit" {
		r.lg.Info("announced a new repo whose creation events the replicas lost, with its records as one #commit",
			"did", did, "reason", reason, "rev", hc.Rev, "records", nops, "replica", src.api.rep.Name)
	}
	return kind, err
}

// isNew tells a repo created since this deployment first started (whose
// records no consumer has seen) from an old one the log simply never saw
// (a first start beside an existing PDS, an account migrated in), which
// must not have years of records re-announced. An error means "ask again
// later" (PLC unreachable).
func (r *Repairer) isNew(ctx context.Context, did, headRev string) (bool, string, error) {
	switch r.cfg.NewRepos {
	case NewReposAll:
		return true, "", nil
	case NewReposNone:
		return false, "repo unknown to the log (new-repos policy none)", nil
	}
	if r.cfg.Age == nil || r.cfg.Born.IsZero() {
		return false, "repo unknown to the log (no way to date it)", nil
	}
	if t, err := syntax.ParseTID(headRev); err == nil && t.Time().Before(r.cfg.Born) {
		// its last write is older than this deployment: no need to ask PLC
		return false, "repo unknown to the log, last written before pdsmux first started", nil
	}
	created, err := r.cfg.Age.Created(ctx, did)
	if errors.Is(err, ErrAgeUnknown) {
		return false, "repo unknown to the log; its DID has no creation time", nil
	}
	if err != nil {
		return false, "", fmt.Errorf("date %s to tell a new repo from an old one: %w", did, err)
	}
	if created.Before(r.cfg.Born) {
		return false, "repo unknown to the log, created before pdsmux first started", nil
	}
	return true, "", nil
}

// verifySignature checks the head commit against the DID's signing key.
// A replica serving a commit that is not signed by the account's key gets
// no event appended at all.
func (r *Repairer) verifySignature(ctx context.Context, did string, hc *repo.Commit) error {
	if r.dir == nil {
		return nil
	}
	ident, err := r.dir.LookupDID(ctx, syntax.DID(did))
	if err != nil {
		r.m.failed("identity")
		return fmt.Errorf("resolve %s to check its commit signature: %w", did, err)
	}
	err = verifyWith(ident, hc)
	if err != nil && r.dir.Purge(ctx, syntax.DID(did).AtIdentifier()) == nil {
		// the key may have rotated since it was cached: resolve again once
		if ident, lerr := r.dir.LookupDID(ctx, syntax.DID(did)); lerr == nil {
			err = verifyWith(ident, hc)
		}
	}
	if err != nil {
		r.m.failed("signature")
		return fmt.Errorf("%w: head commit of %s rev %s: %v", ErrBadCommit, did, hc.Rev, err)
	}
	return nil
}

func verifyWith(ident *identity.Identity, hc *repo.Commit) error {
	pub, err := ident.PublicKey()
	if err != nil {
		return fmt.Errorf("no usable signing key: %v", err)
	}
	if err := hc.VerifySignature(pub); err != nil {
		return fmt.Errorf("bad signature: %v", err)
	}
	return nil
}

func (r *Repairer) appendRollback(ctx context.Context, did string, head cid.Cid, headBytes []byte, rev, atRev string, now time.Time) (string, error) {
	ev, err := syncEvent(did, head, headBytes, rev, now)
	if err != nil {
		return "", err
	}
	cev, err := toEvent(frame.TypeSync, ev)
	if err != nil {
		return "", err
	}
	if _, err := r.log.AppendRollback(ctx, cev, atRev); err != nil {
		if !errors.Is(err, cursor.ErrRepairRace) {
			r.m.failed("append")
		}
		return "", logErr(err)
	}
	r.lg.Warn("the replica's repo went back to an older rev (restored from backup?); announced it with #sync", "did", did, "from_rev", atRev, "to_rev", rev)
	return "rollback", nil
}

func (r *Repairer) appendSync(ctx context.Context, did string, head cid.Cid, headBytes []byte, rev, atRev string, now time.Time, reason, why string) (string, error) {
	ev, err := syncEvent(did, head, headBytes, rev, now)
	if err != nil {
		return "", err
	}
	b, err := frame.Encode(frame.TypeSync, ev)
	if err != nil {
		return "", err
	}
	if err := r.appendRepair(ctx, b, atRev); err != nil {
		return "", err
	}
	r.lg.Info("repaired missed writes with #sync", "did", did, "reason", reason, "from_rev", atRev, "to_rev", rev, "why", why)
	return "sync", nil
}

// appendRepair appends a synthesized frame (seq 0) if the repo is still
// at atRev.
func (r *Repairer) appendRepair(ctx context.Context, b []byte, atRev string) error {
	ev, err := eventOf(b)
	if err != nil {
		return err
	}
	if _, err := r.log.AppendRepair(ctx, ev, atRev); err != nil {
		if !errors.Is(err, cursor.ErrRepairRace) {
			r.m.failed("append")
		}
		return logErr(err)
	}
	return nil
}

func (r *Repairer) appendSynthetic(ctx context.Context, t string, body frame.Marshaler) error {
	ev, err := toEvent(t, body)
	if err != nil {
		return err
	}
	_, err = r.log.AppendSynthetic(ctx, ev)
	return logErr(err)
}

// toEvent encodes a frame pdsmux built and makes it a log event.
func toEvent(t string, body frame.Marshaler) (cursor.Event, error) {
	b, err := frame.Encode(t, body)
	if err != nil {
		return cursor.Event{}, err
	}
	return eventOf(b)
}

// eventOf makes a frame pdsmux built (seq 0) a log event.
func eventOf(b []byte) (cursor.Event, error) {
	in, err := frame.Parse(b, 0)
	if err != nil {
		return cursor.Event{}, fmt.Errorf("repair: built an unparseable frame: %w", err)
	}
	ev, err := cursor.NewEvent(b, &in)
	if err != nil {
		return cursor.Event{}, fmt.Errorf("repair: built an unsequenceable frame: %w", err)
	}
	return ev, nil
}

func (r *Repairer) appendIdentity(ctx context.Context, did string, now time.Time) error {
	return r.appendSynthetic(ctx, frame.TypeIdentity, &comatproto.SyncSubscribeRepos_Identity{
		Did: did, Time: now.UTC().Format(syntax.AtprotoDatetimeLayout),
	})
}
