package verify_test

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	comatproto "github.com/bluesky-social/indigo/api/atproto"
	"github.com/bluesky-social/indigo/atproto/identity"
	"github.com/bluesky-social/indigo/atproto/repo"
	"github.com/bluesky-social/indigo/atproto/syntax"
	lexutil "github.com/bluesky-social/indigo/lex/util"
	"github.com/ipfs/go-cid"
	"github.com/stretchr/testify/require"

	"github.com/pdsmux/pdsmux/internal/blocks"
	"github.com/pdsmux/pdsmux/internal/fakepds"
	"github.com/pdsmux/pdsmux/internal/frame"
	"github.com/pdsmux/pdsmux/internal/verify"
)

// env is one case's world: a directory holding the accounts' keys and a
// verifier with signatures on and the clock at t0.
type env struct {
	dir *identity.MockDirectory
	v   *verify.Verifier
	// baselines counts the genuine frames mustPass accepted.
	baselines int
}

func newEnv() *env {
	dir := identity.NewMockDirectory()
	return &env{dir: dir, v: verify.New(dir, nil, clock)}
}

// mustPass checks that the genuine frame a case starts from passes the
// door, so that the refusal of its mutation is due to the mutation.
// It uses a verifier of its own: the case's verifier would remember the
// genuine frame as passed (by content) and let an unchanged copy through.
func (e *env) mustPass(t *testing.T, b []byte) {
	t.Helper()
	require.NoError(t, check(t, verify.New(e.dir, nil, clock), b), "the genuine frame this case mutates must pass")
	e.baselines++
}

type vcase struct {
	name string
	want string // the reason, "" when the frame must pass
	// build returns the frame under test. A refusal case first passes
	// the genuine frame it derives from through e.mustPass.
	build func(t *testing.T, e *env) []byte
	// then, when set, looks further at Check's error.
	then func(t *testing.T, err error)
}

// commitMutation changes a copy of a genuine #commit (or the env).
type commitMutation func(t *testing.T, e *env, a *fakepds.Account, ev *comatproto.SyncSubscribeRepos_Commit)

// onCommit is a case on a genuine #commit of ops (default: one post
// created) in a repo that already holds posts p0, p1, p2, with mutate
// applied to a copy after the genuine frame passed.
func onCommit(name, want string, mutate commitMutation, ops ...fakepds.Op) vcase {
	if len(ops) == 0 {
		ops = []fakepds.Op{create("new")}
	}
	return vcase{name: "commit/" + name, want: want, build: func(t *testing.T, e *env) []byte {
		a, _ := newAccount(t, e.dir, "alice.test")
		apply(t, a, t0.Add(-40*time.Minute), posts("p", 3)...)
		ev := apply(t, a, t0.Add(-30*time.Minute), ops...)
		base := encode(t, frame.TypeCommit, ev)
		if mutate == nil {
			return base
		}
		e.mustPass(t, base)
		m := cloneCommit(ev)
		mutate(t, e, a, m)
		return encode(t, frame.TypeCommit, m)
	}}
}

type syncMutation func(t *testing.T, e *env, a *fakepds.Account, ev *comatproto.SyncSubscribeRepos_Sync)

// syncOf is the #sync a PDS emits for a's current head: a CAR of the
// signed commit alone.
func syncOf(t testing.TB, a *fakepds.Account, head *comatproto.SyncSubscribeRepos_Commit) *comatproto.SyncSubscribeRepos_Sync {
	t.Helper()
	root, set := readCAR(t, head.Blocks)
	raw, ok := set.Lookup(root)
	require.True(t, ok)
	one := blocks.NewSet()
	one.Add(root, raw)
	car, err := blocks.CAR(root, one)
	require.NoError(t, err)
	return &comatproto.SyncSubscribeRepos_Sync{Did: a.DID, Rev: head.Rev, Blocks: car, Time: head.Time}
}

// onSync is a case on the genuine #sync of a repo holding three posts.
func onSync(name, want string, mutate syncMutation) vcase {
	return vcase{name: "sync/" + name, want: want, build: func(t *testing.T, e *env) []byte {
		a, _ := newAccount(t, e.dir, "alice.test")
		ev := syncOf(t, a, apply(t, a, t0.Add(-30*time.Minute), posts("p", 3)...))
		base := encode(t, frame.TypeSync, ev)
		if mutate == nil {
			return base
		}
		e.mustPass(t, base)
		m := cloneSync(ev)
		mutate(t, e, a, m)
		return encode(t, frame.TypeSync, m)
	}}
}

// padTo adds one filler block to a CAR slice so that it is exactly size
// bytes long (a valid CAR still).
func padTo(t testing.TB, car []byte, size int) []byte {
	t.Helper()
	root, set := readCAR(t, car)
	// A section is uvarint(len(cid)+n), the 36-byte CIDv1 sha256, n bytes.
	n := size - len(car) - 36 - 3
	filler := make([]byte, n)
	filler[0] = 0x40 // something CBOR-looking; the content does not matter
	_, err := set.AddRaw(filler)
	require.NoError(t, err)
	out, err := blocks.CAR(root, set)
	require.NoError(t, err)
	require.Len(t, out, size)
	return out
}

// withRaw turns a passing case into one on the bytes of its frame: the
// genuine frame must pass, then f rewrites it (rev is its event rev).
func (c vcase) withRaw(f func(t *testing.T, b []byte, rev string) []byte) vcase {
	build := c.build
	c.build = func(t *testing.T, e *env) []byte {
		b := build(t, e)
		e.mustPass(t, b)
		in, err := frame.Parse(b, 0)
		require.NoError(t, err)
		return f(t, b, in.Rev)
	}
	return c
}

// replaceRev rewrites the event's rev (not the signed commit's) in a
// frame's bytes.
func replaceRev(t testing.TB, b []byte, rev, to string) []byte {
	t.Helper()
	old := textItem("rev", rev)
	i := bytes.Index(b, old)
	require.GreaterOrEqual(t, i, 0)
	out := append(append(append([]byte(nil), b[:i]...), textItem("rev", to)...), b[i+len(old):]...)
	in, err := frame.Parse(out, 0)
	require.NoError(t, err)
	require.Equal(t, to, in.Rev, "the body's rev was rewritten")
	return out
}

func tidAt(at time.Time) string { return syntax.NewTID(at.UnixMicro(), 0).String() }

func recordCID(t testing.TB, a *fakepds.Account, rkey string) cid.Cid {
	t.Helper()
	recs, err := a.Records()
	require.NoError(t, err)
	c, ok := recs["app.bsky.feed.post/"+rkey]
	require.True(t, ok)
	return c
}

func cases() []vcase {
	link := func(c cid.Cid) *lexutil.LexLink { return (*lexutil.LexLink)(&c) }
	return []vcase{
		// Passing.
		onCommit("genuine with prevData", "", nil),
		onCommit("genuine create, update and delete", "", nil, create("new"), update("p1", "edited"), del("p2")),
		onCommit("first commit: no since, no prevData", "", func(t *testing.T, e *env, a *fakepds.Account, ev *comatproto.SyncSubscribeRepos_Commit) {
			ev.Since, ev.PrevData = nil, nil
		}),
		{name: "commit/200 ops", build: func(t *testing.T, e *env) []byte {
			a, _ := newAccount(t, e.dir, "alice.test")
			return encode(t, frame.TypeCommit, apply(t, a, t0.Add(-30*time.Minute), posts("p", verify.MaxOps)...))
		}},
		{name: "commit/exactly 2,000,000 bytes of blocks", build: func(t *testing.T, e *env) []byte {
			a, _ := newAccount(t, e.dir, "alice.test")
			ev := apply(t, a, t0.Add(-30*time.Minute), create("p0"))
			ev.Blocks = padTo(t, ev.Blocks, verify.MaxBlockBytes)
			return encode(t, frame.TypeCommit, ev)
		}},
		{name: "commit/legacy update without prev (Cocoon): no inversion", build: func(t *testing.T, e *env) []byte {
			a, _ := newAccount(t, e.dir, "alice.test")
			a.OmitUpdatePrev = true
			e.mustPass(t, encode(t, frame.TypeCommit, apply(t, a, t0.Add(-40*time.Minute), create("p0"))))
			ev := apply(t, a, t0.Add(-30*time.Minute), update("p0", "edited"))
			require.Nil(t, ev.Ops[0].Prev, "the fixture writes Cocoon's prev-less update")
			return encode(t, frame.TypeCommit, ev)
		}},
		{name: "commit/legacy update without prev: a wrong prevData is not noticed either", build: func(t *testing.T, e *env) []byte {
			// indigo's VerifyCommitMessage stops before inverting when an
			// update or delete has no prev, so the relay accepts this.
			a, _ := newAccount(t, e.dir, "alice.test")
			a.OmitUpdatePrev = true
			apply(t, a, t0.Add(-40*time.Minute), create("p0"))
			ev := apply(t, a, t0.Add(-30*time.Minute), update("p0", "edited"))
			ev.PrevData = link(a.Data())
			return encode(t, frame.TypeCommit, ev)
		}},
		{name: "commit/rev 1 minute ahead", build: func(t *testing.T, e *env) []byte {
			a, _ := newAccount(t, e.dir, "alice.test")
			return encode(t, frame.TypeCommit, apply(t, a, t0.Add(time.Minute), create("p0")))
		}},
		{name: "commit/rev exactly 5 minutes ahead", build: func(t *testing.T, e *env) []byte {
			a, _ := newAccount(t, e.dir, "alice.test")
			return encode(t, frame.TypeCommit, apply(t, a, t0.Add(verify.FutureRevSlack), create("p0")))
		}},
		onSync("genuine, of a later head", "", nil),
		{name: "sync/genuine, of account creation", build: func(t *testing.T, e *env) []byte {
			_, ev := newAccount(t, e.dir, "alice.test")
			return encode(t, frame.TypeSync, ev)
		}},
		{name: "identity passes unchecked", build: func(t *testing.T, e *env) []byte {
			h := "alice.test"
			return encode(t, frame.TypeIdentity, &comatproto.SyncSubscribeRepos_Identity{Did: fakepds.DIDFor("nobody"), Seq: 7, Time: "not a time", Handle: &h})
		}},
		{name: "account passes unchecked", build: func(t *testing.T, e *env) []byte {
			s := "takendown"
			return encode(t, frame.TypeAccount, &comatproto.SyncSubscribeRepos_Account{Did: fakepds.DIDFor("nobody"), Seq: 8, Time: "not a time", Status: &s})
		}},
		{name: "unknown type passes unchecked", build: func(t *testing.T, e *env) []byte {
			// a refused #commit body under a type pdsmux does not know
			a, _ := newAccount(t, e.dir, "alice.test")
			ev := apply(t, a, t0.Add(-30*time.Minute), create("p0"))
			ev.Rebase = true
			return encode(t, "#labels", ev)
		}},
		{name: "info passes unchecked", build: func(t *testing.T, e *env) []byte {
			return frame.InfoFrame(frame.InfoOutdatedCursor, "x")
		}},

		// too_big
		onCommit("tooBig flag", verify.ReasonTooBig, func(t *testing.T, e *env, a *fakepds.Account, ev *comatproto.SyncSubscribeRepos_Commit) {
			ev.TooBig = true
		}),
		{name: "commit/201 ops", want: verify.ReasonTooBig, build: func(t *testing.T, e *env) []byte {
			a, _ := newAccount(t, e.dir, "alice.test")
			e.mustPass(t, encode(t, frame.TypeCommit, apply(t, a, t0.Add(-40*time.Minute), posts("a", verify.MaxOps)...)))
			return encode(t, frame.TypeCommit, apply(t, a, t0.Add(-30*time.Minute), posts("b", verify.MaxOps+1)...))
		}},
		onCommit("2,000,001 bytes of blocks", verify.ReasonTooBig, func(t *testing.T, e *env, a *fakepds.Account, ev *comatproto.SyncSubscribeRepos_Commit) {
			ev.Blocks = padTo(t, ev.Blocks, verify.MaxBlockBytes+1)
		}),
		onSync("2,000,001 bytes of blocks", verify.ReasonTooBig, func(t *testing.T, e *env, a *fakepds.Account, ev *comatproto.SyncSubscribeRepos_Sync) {
			ev.Blocks = padTo(t, ev.Blocks, verify.MaxBlockBytes+1)
		}),

		// rebase
		onCommit("rebase flag", verify.ReasonRebase, func(t *testing.T, e *env, a *fakepds.Account, ev *comatproto.SyncSubscribeRepos_Commit) {
			ev.Rebase = true
		}),

		// bad_blocks
		onCommit("no blocks", verify.ReasonBadBlocks, func(t *testing.T, e *env, a *fakepds.Account, ev *comatproto.SyncSubscribeRepos_Commit) {
			ev.Blocks = nil
		}),
		onCommit("blocks not a CAR", verify.ReasonBadBlocks, func(t *testing.T, e *env, a *fakepds.Account, ev *comatproto.SyncSubscribeRepos_Commit) {
			ev.Blocks = []byte("not a CAR at all")
		}),
		onCommit("CAR without the signed commit", verify.ReasonBadBlocks, func(t *testing.T, e *env, a *fakepds.Account, ev *comatproto.SyncSubscribeRepos_Commit) {
			ev.Blocks = without(t, ev.Blocks, cid.Cid(ev.Commit))
		}),
		onCommit("commit block not CBOR", verify.ReasonBadBlocks, func(t *testing.T, e *env, a *fakepds.Account, ev *comatproto.SyncSubscribeRepos_Commit) {
			_, set := readCAR(t, ev.Blocks)
			junk, err := set.AddRaw([]byte{0xff, 0xff})
			require.NoError(t, err)
			ev.Blocks, err = blocks.CAR(junk, set)
			require.NoError(t, err)
			ev.Commit = lexutil.LexLink(junk)
		}),
		onSync("CAR without the signed commit", verify.ReasonBadBlocks, func(t *testing.T, e *env, a *fakepds.Account, ev *comatproto.SyncSubscribeRepos_Sync) {
			root, _ := readCAR(t, ev.Blocks)
			ev.Blocks = without(t, ev.Blocks, root)
		}),

		// bad_commit
		onCommit("commit object of repo version 2", verify.ReasonBadBlocks, func(t *testing.T, e *env, a *fakepds.Account, ev *comatproto.SyncSubscribeRepos_Commit) {
			var c cid.Cid
			ev.Blocks, c = recommit(t, ev.Blocks, a.Key, func(c *repo.Commit) { c.Version = 2 })
			ev.Commit = lexutil.LexLink(c)
		}),
		onCommit("commit object without a signature", verify.ReasonBadBlocks, func(t *testing.T, e *env, a *fakepds.Account, ev *comatproto.SyncSubscribeRepos_Commit) {
			var c cid.Cid
			ev.Blocks, c = recommit(t, ev.Blocks, nil, func(c *repo.Commit) { c.Sig = nil })
			ev.Commit = lexutil.LexLink(c)
		}),
		onSync("commit object of repo version 2", verify.ReasonBadBlocks, func(t *testing.T, e *env, a *fakepds.Account, ev *comatproto.SyncSubscribeRepos_Sync) {
			ev.Blocks, _ = recommit(t, ev.Blocks, a.Key, func(c *repo.Commit) { c.Version = 2 })
		}),
		onCommit("blobs not an array", verify.ReasonBadCommit, nil).withRaw(func(t *testing.T, b []byte, _ string) []byte {
			// "blobs": [] made "blobs": 5. The frame reader skips blobs;
			// the decoder wants an array.
			return replaceOnce(t, b, append(cborText("blobs"), 0x80), append(cborText("blobs"), 0x05))
		}),
		onCommit("rev too long to decode", verify.ReasonBadCommit, nil).withRaw(func(t *testing.T, b []byte, rev string) []byte {
			return replaceRev(t, b, rev, strings.Repeat("2", 1_000_001))
		}),
		onSync("rev too long to decode", verify.ReasonBadCommit, nil).withRaw(func(t *testing.T, b []byte, rev string) []byte {
			// text to the frame reader, over the decoder's 1,000,000-byte limit
			return replaceRev(t, b, rev, strings.Repeat("2", 1_000_001))
		}),

		// did_mismatch: the event says bob, the signed commit is alice's.
		onCommit("event repo of another account", verify.ReasonDIDMismatch, func(t *testing.T, e *env, a *fakepds.Account, ev *comatproto.SyncSubscribeRepos_Commit) {
			b, _ := newAccount(t, e.dir, "bob.test")
			ev.Repo = b.DID
		}),
		onSync("event did of another account", verify.ReasonDIDMismatch, func(t *testing.T, e *env, a *fakepds.Account, ev *comatproto.SyncSubscribeRepos_Sync) {
			b, _ := newAccount(t, e.dir, "bob.test")
			ev.Did = b.DID
		}),

		// rev_mismatch
		onCommit("event rev other than the commit's", verify.ReasonRevMismatch, func(t *testing.T, e *env, a *fakepds.Account, ev *comatproto.SyncSubscribeRepos_Commit) {
			ev.Rev = tidAt(t0.Add(-20 * time.Minute))
		}),
		onSync("event rev other than the commit's", verify.ReasonRevMismatch, func(t *testing.T, e *env, a *fakepds.Account, ev *comatproto.SyncSubscribeRepos_Sync) {
			ev.Rev = tidAt(t0.Add(-20 * time.Minute))
		}),

		// future_rev
		{name: "commit/rev 10 minutes ahead", want: verify.ReasonFutureRev, build: func(t *testing.T, e *env) []byte {
			a, _ := newAccount(t, e.dir, "alice.test")
			e.mustPass(t, encode(t, frame.TypeCommit, apply(t, a, t0.Add(time.Minute), create("p0"))))
			return encode(t, frame.TypeCommit, apply(t, a, t0.Add(10*time.Minute), create("p1")))
		}, then: func(t *testing.T, err error) {
			var fe *verify.FutureRevError
			require.ErrorAs(t, err, &fe)
			require.True(t, fe.At.Equal(t0.Add(10*time.Minute)), "At %s", fe.At)
			require.True(t, fe.AcceptableAt().Equal(t0.Add(5*time.Minute)), "AcceptableAt %s", fe.AcceptableAt())
		}},
		onSync("rev 10 minutes ahead", verify.ReasonFutureRev, func(t *testing.T, e *env, a *fakepds.Account, ev *comatproto.SyncSubscribeRepos_Sync) {
			ev.Rev = tidAt(t0.Add(10 * time.Minute))
			ev.Blocks, _ = recommit(t, ev.Blocks, a.Key, func(c *repo.Commit) { c.Rev = ev.Rev })
		}),

		// no_prev_data
		onCommit("since without prevData", verify.ReasonNoPrevData, func(t *testing.T, e *env, a *fakepds.Account, ev *comatproto.SyncSubscribeRepos_Commit) {
			require.NotNil(t, ev.Since)
			ev.PrevData = nil
		}),

		// bad_inversion
		onCommit("prevData of another tree", verify.ReasonBadInversion, func(t *testing.T, e *env, a *fakepds.Account, ev *comatproto.SyncSubscribeRepos_Commit) {
			ev.PrevData = link(a.Data()) // the new tree's root, not the previous one
		}),
		onCommit("an op left out", verify.ReasonBadInversion, func(t *testing.T, e *env, a *fakepds.Account, ev *comatproto.SyncSubscribeRepos_Commit) {
			ev.Ops = ev.Ops[:1]
		}, create("new"), create("new2")),
		onCommit("op CID other than the tree's", verify.ReasonBadInversion, func(t *testing.T, e *env, a *fakepds.Account, ev *comatproto.SyncSubscribeRepos_Commit) {
			ev.Ops[0].Cid = link(recordCID(t, a, "p0"))
		}),
		onCommit("op for a record not in the tree", verify.ReasonBadInversion, func(t *testing.T, e *env, a *fakepds.Account, ev *comatproto.SyncSubscribeRepos_Commit) {
			op := *ev.Ops[0]
			op.Path = "app.bsky.feed.post/ghost"
			ev.Ops = append(ev.Ops, &op)
		}),
		onCommit("record missing from blocks", verify.ReasonBadInversion, func(t *testing.T, e *env, a *fakepds.Account, ev *comatproto.SyncSubscribeRepos_Commit) {
			ev.Blocks = without(t, ev.Blocks, cid.Cid(*ev.Ops[0].Cid))
		}),
		onCommit("delete with a wrong prev", verify.ReasonBadInversion, func(t *testing.T, e *env, a *fakepds.Account, ev *comatproto.SyncSubscribeRepos_Commit) {
			require.Equal(t, "delete", ev.Ops[0].Action)
			ev.Ops[0].Prev = link(recordCID(t, a, "p0"))
		}, del("p2")),
		{name: "commit/legacy update without prev, record missing from blocks", want: verify.ReasonBadInversion, build: func(t *testing.T, e *env) []byte {
			a, _ := newAccount(t, e.dir, "alice.test")
			a.OmitUpdatePrev = true
			apply(t, a, t0.Add(-40*time.Minute), create("p0"))
			ev := apply(t, a, t0.Add(-30*time.Minute), update("p0", "edited"))
			e.mustPass(t, encode(t, frame.TypeCommit, ev))
			ev.Blocks = without(t, ev.Blocks, cid.Cid(*ev.Ops[0].Cid))
			return encode(t, frame.TypeCommit, ev)
		}},

		// bad_signature
		{name: "commit/signed with another key than the DID document's", want: verify.ReasonBadSignature, build: func(t *testing.T, e *env) []byte {
			a, _ := newAccount(t, e.dir, "alice.test")
			e.mustPass(t, encode(t, frame.TypeCommit, apply(t, a, t0.Add(-40*time.Minute), create("p0"))))
			a.Key = newKey(t) // the DID document keeps the old key
			return encode(t, frame.TypeCommit, apply(t, a, t0.Add(-30*time.Minute), create("p1")))
		}},
		onCommit("DID document names another key", verify.ReasonBadSignature, func(t *testing.T, e *env, a *fakepds.Account, ev *comatproto.SyncSubscribeRepos_Commit) {
			e.dir.Insert(identityOf(t, a.DID, a.Handle, newKey(t)))
		}),
		onCommit("signature of other bytes", verify.ReasonBadSignature, func(t *testing.T, e *env, a *fakepds.Account, ev *comatproto.SyncSubscribeRepos_Commit) {
			// re-pointing the commit at another tree keeps the old signature
			var c cid.Cid
			ev.Blocks, c = recommit(t, ev.Blocks, nil, func(c *repo.Commit) { c.Data = cid.Cid(*ev.PrevData) })
			ev.Commit = lexutil.LexLink(c)
		}),
		onSync("signed with another key", verify.ReasonBadSignature, func(t *testing.T, e *env, a *fakepds.Account, ev *comatproto.SyncSubscribeRepos_Sync) {
			ev.Blocks, _ = recommit(t, ev.Blocks, newKey(t), func(*repo.Commit) {})
		}),

		// bad_time
		onCommit("commit field is not the signed commit", verify.ReasonBadCommit, func(t *testing.T, e *env, a *fakepds.Account, ev *comatproto.SyncSubscribeRepos_Commit) {
			ev.Commit = lexutil.LexLink(cid.Cid(*ev.PrevData)) // a real CID, but not the CAR's root
		}),
		onCommit("time not an atproto datetime", verify.ReasonBadTime, func(t *testing.T, e *env, a *fakepds.Account, ev *comatproto.SyncSubscribeRepos_Commit) {
			ev.Time = "2026-06-01 12:00:00"
		}),
		onSync("empty time", verify.ReasonBadTime, func(t *testing.T, e *env, a *fakepds.Account, ev *comatproto.SyncSubscribeRepos_Sync) {
			ev.Time = ""
		}),
	}
}

// TestCheck runs every case through a fresh verifier: refusals must carry
// their reason as a *verify.Rejection, everything else must pass.
func TestCheck(t *testing.T) {
	covered := map[string]bool{}
	for _, tc := range cases() {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv()
			b := tc.build(t, e)
			err := check(t, e.v, b)
			if tc.want == "" {
				require.NoError(t, err)
				return
			}
			require.Positive(t, e.baselines, "a refusal case must show its genuine frame passing first")
			var r *verify.Rejection
			require.True(t, errors.As(err, &r), "want a *verify.Rejection (%s), got %v", tc.want, err)
			require.Equal(t, tc.want, verify.ReasonOf(err), "err: %v", err)
			require.True(t, strings.HasPrefix(err.Error(), "refused ("+tc.want+"): "), "%v", err)
			if tc.then != nil {
				tc.then(t, err)
			}
		})
		covered[tc.want] = true
	}
	for _, reason := range verify.Reasons {
		require.True(t, covered[reason], "no case for reason %s", reason)
	}
}

// Without a directory the signature is not checked; everything else is.
func TestCheck_NoDirectory(t *testing.T) {
	a, _ := newAccount(t, nil, "alice.test")
	a.Key = newKey(t) // no directory knows it anyway
	ev := apply(t, a, t0.Add(-30*time.Minute), create("p0"))
	v := verify.New(nil, nil, clock)
	require.NoError(t, check(t, v, encode(t, frame.TypeCommit, ev)))

	ev.Rebase = true
	require.Equal(t, verify.ReasonRebase, verify.ReasonOf(check(t, v, encode(t, frame.TypeCommit, ev))))
}

// The default clock is the wall clock: a rev dated now passes, one an
// hour ahead does not.
func TestCheckRev_WallClock(t *testing.T) {
	v := verify.New(nil, nil, nil)
	require.NoError(t, v.CheckRev(tidAt(time.Now())))
	require.Equal(t, verify.ReasonFutureRev, verify.ReasonOf(v.CheckRev(tidAt(time.Now().Add(time.Hour)))))
	require.Equal(t, verify.ReasonBadCommit, verify.ReasonOf(v.CheckRev("not-a-tid")))
}

func TestReasonOf(t *testing.T) {
	require.Equal(t, "", verify.ReasonOf(nil))
	require.Equal(t, "", verify.ReasonOf(errors.New("plain")))
	inner := errors.New("inner")
	r := &verify.Rejection{Reason: verify.ReasonRebase, Err: inner}
	wrapped := errors.Join(errors.New("context"), r)
	require.Equal(t, verify.ReasonRebase, verify.ReasonOf(wrapped))
	require.ErrorIs(t, r, inner)
}

// A context already done does not change a verdict that needs no lookup.
func TestCheck_ContextDoneBeforeLookup(t *testing.T) {
	e := newEnv()
	a, _ := newAccount(t, e.dir, "alice.test")
	ev := apply(t, a, t0.Add(-30*time.Minute), create("p0"))
	ev.Time = "yesterday"
	b := encode(t, frame.TypeCommit, ev)
	in, err := frame.Parse(b, 0)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	require.Equal(t, verify.ReasonBadTime, verify.ReasonOf(e.v.Check(ctx, b, &in)))
}

// A copy of an event that passed (replicas replay each other's events) is
// not checked again: the directory is not asked a second time.
func TestCheck_PassedCopyIsNotCheckedAgain(t *testing.T) {
	d := newCachingDir()
	v := verify.New(d, nil, clock)
	a, _ := newAccount(t, d.docs, "alice.test")
	ev := apply(t, a, t0.Add(-40*time.Minute), create("p0"))
	require.NoError(t, check(t, v, encode(t, frame.TypeCommit, ev)))
	lookups, _ := d.counts()
	ev.Seq += 1000 // the same event under another replica's seq
	require.NoError(t, check(t, v, encode(t, frame.TypeCommit, ev)))
	again, _ := d.counts()
	require.Equal(t, lookups, again, "a passed copy is not verified again")
	ev.Time = "2026-06-01T11:00:00.000Z" // different content: checked
	require.NoError(t, check(t, v, encode(t, frame.TypeCommit, ev)))
	third, _ := d.counts()
	require.Greater(t, third, again)
}
