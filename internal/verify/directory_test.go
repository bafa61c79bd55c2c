package verify_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/bluesky-social/indigo/atproto/identity"
	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/pdsmux/pdsmux/internal/frame"
	"github.com/pdsmux/pdsmux/internal/testutil"
	"github.com/pdsmux/pdsmux/internal/verify"
)

// cachingDir is a directory with a cache in front of the DID documents:
// lookups answer from the cache, Purge refreshes it from the documents
// (in production the cache sits in front of PLC). It counts both.
type cachingDir struct {
	identity.Directory // the cache; only the methods below are used

	mu       sync.Mutex
	cache    *identity.MockDirectory
	docs     *identity.MockDirectory // what PLC says now
	lookups  int
	purges   int
	purgeErr error
}

func newCachingDir() *cachingDir {
	return &cachingDir{cache: identity.NewMockDirectory(), docs: identity.NewMockDirectory()}
}

func (d *cachingDir) LookupDID(ctx context.Context, did syntax.DID) (*identity.Identity, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.lookups++
	if id, err := d.cache.LookupDID(ctx, did); err == nil {
		return id, nil
	}
	id, err := d.docs.LookupDID(ctx, did)
	if err == nil {
		d.cache.Insert(*id)
	}
	return id, err
}

func (d *cachingDir) Purge(ctx context.Context, a syntax.AtIdentifier) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.purges++
	if d.purgeErr != nil {
		return d.purgeErr
	}
	did, err := a.AsDID()
	if err != nil {
		return err
	}
	if id, err := d.docs.LookupDID(ctx, did); err == nil {
		d.cache.Insert(*id) // what a re-resolution after the purge finds
	}
	return nil
}

func (d *cachingDir) counts() (lookups, purges int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.lookups, d.purges
}

// A key rotated since the cache filled: the first check fails against the
// cached key, the verifier purges the DID once, re-resolves, and the
// commit signed with the new key passes. A commit signed with neither key
// is refused after one purge, not looped on.
func TestCheck_KeyRotation(t *testing.T) {
	d := newCachingDir()
	v := verify.New(d, nil, clock)
	a, _ := newAccount(t, d.docs, "alice.test")

	require.NoError(t, check(t, v, encode(t, frame.TypeCommit, apply(t, a, t0.Add(-40*time.Minute), create("p0")))))
	lookups, purges := d.counts()
	require.Equal(t, 1, lookups)
	require.Equal(t, 0, purges, "a good signature purges nothing")

	// The account rotates its key; PLC has the new one, the cache the old.
	a.Key = newKey(t)
	d.docs.Insert(identityOf(t, a.DID, a.Handle, a.Key))
	require.NoError(t, check(t, v, encode(t, frame.TypeCommit, apply(t, a, t0.Add(-30*time.Minute), create("p1")))))
	lookups, purges = d.counts()
	require.Equal(t, 3, lookups, "looked up, purged, looked up again")
	require.Equal(t, 1, purges)

	// Now cached: the next commit needs no purge.
	require.NoError(t, check(t, v, encode(t, frame.TypeCommit, apply(t, a, t0.Add(-25*time.Minute), create("p2")))))
	lookups, purges = d.counts()
	require.Equal(t, 4, lookups)
	require.Equal(t, 1, purges)

	// Signed with a key no document names, within a minute of the last
	// re-resolution of this DID: refused on the cached key, no second
	// purge (a replica streaming forged commits costs PLC one lookup per
	// DID per verify.PurgeEvery, not one per event).
	a.Key = newKey(t)
	err := check(t, v, encode(t, frame.TypeCommit, apply(t, a, t0.Add(-20*time.Minute), create("p3"))))
	require.Equal(t, verify.ReasonBadSignature, verify.ReasonOf(err), "%v", err)
	lookups, purges = d.counts()
	require.Equal(t, 5, lookups)
	require.Equal(t, 1, purges)

	// The same for a #sync.
	b, ev := newAccount(t, d.docs, "bob.test")
	require.NoError(t, check(t, v, encode(t, frame.TypeSync, ev)))
	b.Key = newKey(t)
	d.docs.Insert(identityOf(t, b.DID, b.Handle, b.Key))
	ev = syncOf(t, b, apply(t, b, t0.Add(-30*time.Minute), create("p0")))
	_, purgesBefore := d.counts()
	require.NoError(t, check(t, v, encode(t, frame.TypeSync, ev)))
	_, purges = d.counts()
	require.Equal(t, purgesBefore+1, purges)
}

// When the purge itself fails the verifier does not retry: the commit is
// refused on the key it has.
func TestCheck_PurgeFails(t *testing.T) {
	d := newCachingDir()
	d.purgeErr = errors.New("cache unavailable")
	v := verify.New(d, nil, clock)
	a, _ := newAccount(t, d.docs, "alice.test")
	require.NoError(t, check(t, v, encode(t, frame.TypeCommit, apply(t, a, t0.Add(-40*time.Minute), create("p0")))))

	a.Key = newKey(t)
	d.docs.Insert(identityOf(t, a.DID, a.Handle, a.Key))
	err := check(t, v, encode(t, frame.TypeCommit, apply(t, a, t0.Add(-30*time.Minute), create("p1"))))
	require.Equal(t, verify.ReasonBadSignature, verify.ReasonOf(err), "%v", err)
	lookups, purges := d.counts()
	require.Equal(t, 2, lookups, "no second lookup after a failed purge")
	require.Equal(t, 1, purges)
}

// unreachableDir answers no lookup, as when PLC is down.
type unreachableDir struct {
	identity.Directory
	mu      sync.Mutex
	lookups int
	purges  int
}

var errPLCDown = errors.New("plc.directory: connection refused")

func (d *unreachableDir) LookupDID(ctx context.Context, did syntax.DID) (*identity.Identity, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.lookups++
	return nil, errPLCDown
}

func (d *unreachableDir) Purge(context.Context, syntax.AtIdentifier) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.purges++
	return nil
}

// With the directory unreachable a commit passes without its signature
// checked, as on a relay, and is counted; the other checks still apply,
// and a lookup abandoned because the caller gave up is not counted.
func TestCheck_DirectoryUnreachable(t *testing.T) {
	reg := prometheus.NewRegistry()
	d := &unreachableDir{}
	v := verify.New(d, verify.NewMetrics(reg), clock)
	unverified := func() float64 { return testutil.Value(t, reg, "pdsmux_signature_unverified_total") }
	require.Equal(t, 0.0, unverified())

	a, created := newAccount(t, nil, "alice.test")
	a.Key = newKey(t) // would be a bad signature, were it checked
	ev := apply(t, a, t0.Add(-30*time.Minute), create("p0"))
	require.NoError(t, check(t, v, encode(t, frame.TypeCommit, ev)))
	require.Equal(t, 1.0, unverified())
	require.Equal(t, 1, d.lookups)
	require.Equal(t, 0, d.purges, "nothing to purge when nothing answered")

	require.NoError(t, check(t, v, encode(t, frame.TypeSync, created)))
	require.Equal(t, 2.0, unverified())

	// Refused before any lookup: not counted.
	ev.Rebase = true
	require.Equal(t, verify.ReasonRebase, verify.ReasonOf(check(t, v, encode(t, frame.TypeCommit, ev))))
	require.Equal(t, 2.0, unverified())
	ev.Rebase = false

	// The caller's context is done: the lookup fails for that reason,
	// which says nothing about PLC.
	b := encode(t, frame.TypeCommit, ev)
	in, err := frame.Parse(b, 0)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	require.NoError(t, v.Check(ctx, b, &in))
	require.Equal(t, 2.0, unverified())

	// Without metrics the same event passes too.
	require.NoError(t, check(t, verify.New(d, nil, clock), b))
}
