package verify

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"sync"
	"time"

	comatproto "github.com/bluesky-social/indigo/api/atproto"
	"github.com/bluesky-social/indigo/atproto/atcrypto"
	"github.com/bluesky-social/indigo/atproto/identity"
	"github.com/bluesky-social/indigo/atproto/repo"
	"github.com/bluesky-social/indigo/atproto/syntax"
	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/ipfs/go-cid"

	"github.com/pdsmux/pdsmux/internal/frame"
)

// Limits a relay applies to one event (indigo cmd/relay/relay/verify.go).
const (
	MaxOps         = 200
	MaxBlockBytes  = 2_000_000
	FutureRevSlack = 5 * time.Minute
)

// Reasons of refusal; see the package doc.
const (
	ReasonTooBig       = "too_big"
	ReasonRebase       = "rebase"
	ReasonBadBlocks    = "bad_blocks"
	ReasonBadCommit    = "bad_commit"
	ReasonDIDMismatch  = "did_mismatch"
	ReasonRevMismatch  = "rev_mismatch"
	ReasonFutureRev    = "future_rev"
	ReasonNoPrevData   = "no_prev_data"
	ReasonBadInversion = "bad_inversion"
	ReasonBadSignature = "bad_signature"
	ReasonBadTime      = "bad_time"
)

// Reasons lists every reason, for pre-registering metric labels.
var Reasons = []string{ReasonTooBig, ReasonRebase, ReasonBadBlocks, ReasonBadCommit, ReasonDIDMismatch,
	ReasonRevMismatch, ReasonFutureRev, ReasonNoPrevData, ReasonBadInversion, ReasonBadSignature, ReasonBadTime}

// Rejection is the error Check returns for an event a strict relay would
// refuse.
type Rejection struct {
	Reason string // one of the Reason* constants
	Err    error
}

func (r *Rejection) Error() string { return "refused (" + r.Reason + "): " + r.Err.Error() }
func (r *Rejection) Unwrap() error { return r.Err }

func reject(reason, format string, args ...any) error {
	return &Rejection{Reason: reason, Err: fmt.Errorf(format, args...)}
}

// Verifier checks events. Its zero value is not usable; see New. It is
// safe for concurrent use if dir is.
type Verifier struct {
	dir identity.Directory // nil: signatures are not checked
	now func() time.Time
	m   *Metrics

	mu     sync.Mutex
	purged map[string]time.Time // DID -> last re-resolution after a bad signature

	// passed remembers events that passed, by content (every byte but
	// the seq): replicas replay each other's events (Cocoon's cursor
	// playback reads the shared table), and a copy is not checked again.
	passed *lru.Cache[[sha256.Size]byte, struct{}]
	// keys holds signing keys parsed, by their type and multibase text
	// (a rotated key is a new entry): parsing a compressed secp256k1 key
	// takes a square root, 18 µs here, a tenth of the door's time for a
	// commit
	keys *lru.Cache[string, atcrypto.PublicKey]
}

// KeyCache is how many parsed signing keys are kept.
const KeyCache = 10_000

// PassedCache is how many passed events are remembered by content.
const PassedCache = 100_000

// LookupTimeout bounds one DID resolution at the door: a PLC that hangs
// lets events through unchecked (counted) rather than stalling a replica.
const LookupTimeout = 2 * time.Second

// PurgeEvery bounds re-resolving a DID after a bad signature: a replica
// streaming forged commits costs one PLC lookup per DID per PurgeEvery,
// not one per event.
const PurgeEvery = time.Minute

// mayPurge reports whether did may be re-resolved now, and records it.
func (v *Verifier) mayPurge(did string) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	now := v.now()
	if last, ok := v.purged[did]; ok && now.Sub(last) < PurgeEvery {
		return false
	}
	if len(v.purged) >= 10_000 { // bounded: forget old entries wholesale
		clear(v.purged)
	}
	v.purged[did] = now
	return true
}

// New returns a Verifier. dir resolves DIDs to their current signing key;
// nil turns the signature check off. now is the clock future revs are
// judged by (nil: time.Now). m may be nil.
func New(dir identity.Directory, m *Metrics, now func() time.Time) *Verifier {
	if now == nil {
		now = time.Now
	}
	passed, _ := lru.New[[sha256.Size]byte, struct{}](PassedCache) // only fails for a size <= 0
	keys, _ := lru.New[string, atcrypto.PublicKey](KeyCache)
	return &Verifier{dir: dir, now: now, m: m, purged: map[string]time.Time{}, passed: passed, keys: keys}
}

// Check verifies the frame b, parsed as in. It returns nil for an event
// that may be appended, a *Rejection for one a strict relay would refuse,
// and never panics on any input.
func (v *Verifier) Check(ctx context.Context, b []byte, in *frame.Info) error {
	if in.Kind != frame.KindCommit && in.Kind != frame.KindSync {
		return nil
	}
	var key [sha256.Size]byte
	if in.HasSeq {
		pre, suf := frame.SplitSeq(b, in)
		h := sha256.New()
		h.Write(pre)
		h.Write(suf)
		h.Sum(key[:0])
		if v.passed.Contains(key) {
			return nil
		}
	}
	ctx, unchecked := withUnverified(ctx)
	var err error
	switch in.Kind {
	case frame.KindCommit:
		var ev comatproto.SyncSubscribeRepos_Commit
		if err := ev.UnmarshalCBOR(bytes.NewReader(b[in.BodyStart:])); err != nil {
			return reject(ReasonBadCommit, "decode #commit body: %v", err)
		}
		if err := sameAsParsed(in, ev.Repo, ev.Rev, ev.Since, ev.Commit.String()); err != nil {
			return err
		}
		err = v.CheckCommit(ctx, &ev)
	case frame.KindSync:
		var ev comatproto.SyncSubscribeRepos_Sync
		if err := ev.UnmarshalCBOR(bytes.NewReader(b[in.BodyStart:])); err != nil {
			return reject(ReasonBadCommit, "decode #sync body: %v", err)
		}
		if err := sameAsParsed(in, ev.Did, ev.Rev, nil, in.Commit); err != nil {
			return err
		}
		err = v.CheckSync(ctx, &ev)
	}
	// Only what was checked in full is remembered: an event let through
	// unsigned-checked (PLC down) is checked again when it comes back.
	if err == nil && in.HasSeq && !*unchecked {
		v.passed.Add(key, struct{}{})
	}
	return err
}

// sameAsParsed refuses a body whose fields differ from what frame.Parse
// read (and the log keys the event by). frame.Parse reads the account
// from the kind's own key (`repo` for #commit) and refuses duplicate keys,
// so this is a second line: any disagreement on did, rev, since or commit.
func sameAsParsed(in *frame.Info, did, rev string, since *string, commit string) error {
	switch {
	case did != in.DID:
		return reject(ReasonDIDMismatch, "body %q, frame read as %q", did, in.DID)
	case rev != in.Rev:
		return reject(ReasonRevMismatch, "body %q, frame read as %q", rev, in.Rev)
	case (since != nil) != in.HasSince || (since != nil && *since != in.Since):
		return reject(ReasonBadCommit, "since differs from what the frame was read as")
	case commit != in.Commit:
		return reject(ReasonBadCommit, "commit %s, frame read as %s", commit, in.Commit)
	}
	return nil
}

type unverifiedKey struct{}

// withUnverified lets checkSignature report an event it let through
// without a signature check.
func withUnverified(ctx context.Context) (context.Context, *bool) {
	b := new(bool)
	return context.WithValue(ctx, unverifiedKey{}, b), b
}

// CheckCommit applies the relay's #commit checks to ev.
func (v *Verifier) CheckCommit(ctx context.Context, ev *comatproto.SyncSubscribeRepos_Commit) error {
	switch {
	case ev.TooBig:
		return reject(ReasonTooBig, "deprecated tooBig flag set")
	case len(ev.Ops) > MaxOps:
		return reject(ReasonTooBig, "%d ops (limit %d)", len(ev.Ops), MaxOps)
	case len(ev.Blocks) > MaxBlockBytes:
		return reject(ReasonTooBig, "%d bytes of blocks (limit %d)", len(ev.Blocks), MaxBlockBytes)
	case ev.Rebase:
		return reject(ReasonRebase, "deprecated rebase flag set")
	case len(ev.Blocks) == 0:
		return reject(ReasonBadBlocks, "no blocks")
	}
	if _, err := syntax.ParseDatetime(ev.Time); err != nil {
		return reject(ReasonBadTime, "time %q: %v", ev.Time, err)
	}
	root, err := v.commitObject(ctx, ev.Blocks, ev.Repo, ev.Rev)
	if err != nil {
		return err
	}
	if root.String() != ev.Commit.String() {
		return reject(ReasonBadCommit, "commit field %s is not the signed commit %s", ev.Commit, root)
	}
	if ev.PrevData == nil {
		if ev.Since != nil {
			return reject(ReasonNoPrevData, "#commit with since %s but no prevData", *ev.Since)
		}
		// A repo's first commit: the relay checks no inversion either.
		return nil
	}
	if _, err := repo.VerifyCommitMessage(ctx, ev); err != nil {
		return reject(ReasonBadInversion, "%v", err)
	}
	return nil
}

// CheckSync applies the relay's #sync checks to ev.
func (v *Verifier) CheckSync(ctx context.Context, ev *comatproto.SyncSubscribeRepos_Sync) error {
	if len(ev.Blocks) > MaxBlockBytes {
		return reject(ReasonTooBig, "%d bytes of blocks (limit %d)", len(ev.Blocks), MaxBlockBytes)
	}
	if _, err := syntax.ParseDatetime(ev.Time); err != nil {
		return reject(ReasonBadTime, "time %q: %v", ev.Time, err)
	}
	_, err := v.commitObject(ctx, ev.Blocks, ev.Did, ev.Rev)
	return err
}

// commitObject loads the signed commit from car and checks it against the
// event's did and rev, the clock and the DID's key.
func (v *Verifier) commitObject(ctx context.Context, car []byte, did, rev string) (cid.Cid, error) {
	// LoadCommitFromCAR also runs the commit's structure check.
	c, root, err := repo.LoadCommitFromCAR(ctx, bytes.NewReader(car))
	if err != nil {
		return cid.Undef, reject(ReasonBadBlocks, "load signed commit: %v", err)
	}
	if c.DID != did {
		return cid.Undef, reject(ReasonDIDMismatch, "event for %s carries a commit signed for %s", did, c.DID)
	}
	if c.Rev != rev {
		return cid.Undef, reject(ReasonRevMismatch, "event rev %s, signed commit rev %s", rev, c.Rev)
	}
	if err := v.CheckRev(rev); err != nil {
		return cid.Undef, err
	}
	if err := v.checkSignature(ctx, c); err != nil {
		return cid.Undef, err
	}
	return *root, nil
}

// CheckRev refuses a rev more than FutureRevSlack ahead of the clock, the
// rule relays apply.
func (v *Verifier) CheckRev(rev string) error {
	t, err := syntax.ParseTID(rev)
	if err != nil {
		return reject(ReasonBadCommit, "rev %q: %v", rev, err)
	}
	if at := t.Time(); at.After(v.now().Add(FutureRevSlack)) {
		return &Rejection{Reason: ReasonFutureRev, Err: &FutureRevError{Rev: rev, At: at}}
	}
	return nil
}

// FutureRevError says a rev is ahead of the clock; At is when it stops
// being refused minus FutureRevSlack.
type FutureRevError struct {
	Rev string
	At  time.Time
}

func (e *FutureRevError) Error() string {
	return fmt.Sprintf("rev %s is dated %s, more than %s ahead of the clock", e.Rev, e.At.UTC().Format(time.RFC3339), FutureRevSlack)
}

// AcceptableAt is the earliest time at which the rev stops being refused.
func (e *FutureRevError) AcceptableAt() time.Time { return e.At.Add(-FutureRevSlack) }

func (v *Verifier) checkSignature(ctx context.Context, c *repo.Commit) error {
	if v.dir == nil {
		return nil
	}
	did, err := syntax.ParseDID(c.DID)
	if err != nil {
		return reject(ReasonBadCommit, "did %q: %v", c.DID, err)
	}
	for attempt := 0; ; attempt++ {
		lctx, cancel := context.WithTimeout(ctx, LookupTimeout)
		ident, err := v.dir.LookupDID(lctx, did)
		cancel()
		if err != nil {
			if ctx.Err() == nil {
				v.m.countUnverified()
			}
			if u, ok := ctx.Value(unverifiedKey{}).(*bool); ok {
				*u = true
			}
			return nil // the relay also lets it through unchecked
		}
		pub, err := v.publicKey(ident)
		if err == nil {
			err = c.VerifySignature(pub)
		}
		if err == nil {
			return nil
		}
		if attempt == 0 && v.mayPurge(c.DID) {
			// The key may have rotated since it was cached.
			if perr := v.dir.Purge(ctx, did.AtIdentifier()); perr == nil {
				continue
			}
		}
		return reject(ReasonBadSignature, "commit %s rev %s: %v", c.DID, c.Rev, err)
	}
}

// publicKey is ident's atproto signing key (ident.PublicKey), parsed once
// per distinct key.
func (v *Verifier) publicKey(ident *identity.Identity) (atcrypto.PublicKey, error) {
	k, ok := ident.Keys["atproto"]
	if !ok {
		return ident.PublicKey() // its error
	}
	id := k.Type + " " + k.PublicKeyMultibase
	if pub, ok := v.keys.Get(id); ok {
		return pub, nil
	}
	pub, err := ident.PublicKey()
	if err == nil {
		v.keys.Add(id, pub)
	}
	return pub, err
}

// ReasonOf returns the reason of a *Rejection in err's chain, or "".
func ReasonOf(err error) string {
	var r *Rejection
	if errors.As(err, &r) {
		return r.Reason
	}
	return ""
}
