package verify_test

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	comatproto "github.com/bluesky-social/indigo/api/atproto"
	"github.com/bluesky-social/indigo/atproto/atcrypto"
	"github.com/bluesky-social/indigo/atproto/identity"
	"github.com/bluesky-social/indigo/atproto/repo"
	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/ipfs/go-cid"
	"github.com/stretchr/testify/require"

	"github.com/pdsmux/pdsmux/internal/blocks"
	"github.com/pdsmux/pdsmux/internal/fakepds"
	"github.com/pdsmux/pdsmux/internal/frame"
	"github.com/pdsmux/pdsmux/internal/verify"
)

// t0 is the verifiers' clock. Accounts are made an hour before it and
// write half an hour before it, unless a case says otherwise.
var t0 = time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)

func clock() time.Time { return t0 }

// identityOf is the DID document entry a directory serves for did with key.
func identityOf(t testing.TB, did, handle string, key atcrypto.PrivateKey) identity.Identity {
	t.Helper()
	pub, err := key.PublicKey()
	require.NoError(t, err)
	return identity.Identity{
		DID: syntax.DID(did), Handle: syntax.Handle(handle),
		Keys: map[string]identity.VerificationMethod{"atproto": {Type: "Multikey", PublicKeyMultibase: pub.Multibase()}},
	}
}

// newAccount makes an account an hour before t0 and, when dir is not
// nil, publishes its key there. It returns the genuine #sync announcing it.
func newAccount(t testing.TB, dir *identity.MockDirectory, handle string) (*fakepds.Account, *comatproto.SyncSubscribeRepos_Sync) {
	t.Helper()
	a, ev, err := fakepds.NewAccount(handle, t0.Add(-time.Hour))
	require.NoError(t, err)
	if dir != nil {
		dir.Insert(identityOf(t, a.DID, a.Handle, a.Key))
	}
	return a, ev
}

func newKey(t testing.TB) *atcrypto.PrivateKeyK256 {
	t.Helper()
	k, err := atcrypto.GeneratePrivateKeyK256()
	require.NoError(t, err)
	return k
}

func create(rkey string) fakepds.Op {
	return fakepds.Op{Action: "create", Collection: "app.bsky.feed.post", Rkey: rkey, Record: fakepds.Post("post "+rkey, t0)}
}

func update(rkey, text string) fakepds.Op {
	return fakepds.Op{Action: "update", Collection: "app.bsky.feed.post", Rkey: rkey, Record: fakepds.Post(text, t0)}
}

func del(rkey string) fakepds.Op {
	return fakepds.Op{Action: "delete", Collection: "app.bsky.feed.post", Rkey: rkey}
}

// apply makes a genuine signed commit of ops at the given time.
func apply(t testing.TB, a *fakepds.Account, at time.Time, ops ...fakepds.Op) *comatproto.SyncSubscribeRepos_Commit {
	t.Helper()
	ev, err := a.Apply(ops, at)
	require.NoError(t, err)
	return ev
}

// posts returns n create ops p0..p(n-1) with the given prefix.
func posts(prefix string, n int) []fakepds.Op {
	ops := make([]fakepds.Op, n)
	for i := range ops {
		ops[i] = create(fmt.Sprintf("%s%d", prefix, i))
	}
	return ops
}

// encode builds the frame of a body.
func encode(t testing.TB, typ string, body frame.Marshaler) []byte {
	t.Helper()
	b, err := frame.Encode(typ, body)
	require.NoError(t, err)
	return b
}

// check parses b as the firehose reader does and runs the door on it.
func check(t testing.TB, v *verify.Verifier, b []byte) error {
	t.Helper()
	in, err := frame.Parse(b, 0)
	require.NoError(t, err, "the test frame must parse")
	return v.Check(context.Background(), b, &in)
}

// cloneCommit deep-copies the fields the cases mutate, so a baseline and
// its mutation never share state.
func cloneCommit(ev *comatproto.SyncSubscribeRepos_Commit) *comatproto.SyncSubscribeRepos_Commit {
	c := *ev
	c.Blocks = bytes.Clone(ev.Blocks)
	c.Ops = make([]*comatproto.SyncSubscribeRepos_RepoOp, len(ev.Ops))
	for i, op := range ev.Ops {
		o := *op
		c.Ops[i] = &o
	}
	if ev.Since != nil {
		s := *ev.Since
		c.Since = &s
	}
	return &c
}

func cloneSync(ev *comatproto.SyncSubscribeRepos_Sync) *comatproto.SyncSubscribeRepos_Sync {
	c := *ev
	c.Blocks = bytes.Clone(ev.Blocks)
	return &c
}

// readCAR splits a CAR slice into its root and blocks.
func readCAR(t testing.TB, car []byte) (cid.Cid, *blocks.Set) {
	t.Helper()
	root, set, bad, err := blocks.ReadCAR(bytes.NewReader(car))
	require.NoError(t, err)
	require.Empty(t, bad)
	return root, set
}

// without rewrites a CAR slice leaving out the block drop (root unchanged).
func without(t testing.TB, car []byte, drop cid.Cid) []byte {
	t.Helper()
	root, set := readCAR(t, car)
	_, ok := set.Lookup(drop)
	require.True(t, ok, "block %s is in the slice", drop)
	require.NoError(t, set.DeleteBlock(context.Background(), drop))
	out, err := blocks.CAR(root, set)
	require.NoError(t, err)
	return out
}

// recommit rewrites the signed commit at the root of a CAR slice: mutate
// changes it, then it is signed with key (key nil: the signature is kept
// as it was), and the slice gets the new commit as its root.
func recommit(t testing.TB, car []byte, key atcrypto.PrivateKey, mutate func(*repo.Commit)) ([]byte, cid.Cid) {
	t.Helper()
	root, set := readCAR(t, car)
	raw, ok := set.Lookup(root)
	require.True(t, ok)
	var c repo.Commit
	require.NoError(t, c.UnmarshalCBOR(bytes.NewReader(raw)))
	mutate(&c)
	if key != nil {
		require.NoError(t, c.Sign(key))
	}
	var buf bytes.Buffer
	require.NoError(t, c.MarshalCBOR(&buf))
	nc, err := blocks.CBORCID(buf.Bytes())
	require.NoError(t, err)
	out := blocks.NewSet()
	out.Add(nc, buf.Bytes())
	for _, k := range set.CIDs() {
		if k != root {
			b, _ := set.Lookup(k)
			out.Add(k, b)
		}
	}
	b, err := blocks.CAR(nc, out)
	require.NoError(t, err)
	return b, nc
}

// cborText is the CBOR text string s.
func cborText(s string) []byte {
	b := frame.AppendUint(nil, uint64(len(s)))
	b[0] |= 3 << 5
	return append(b, s...)
}

// textItem is one map entry key: "val" in CBOR.
func textItem(key, val string) []byte { return append(cborText(key), cborText(val)...) }

// replaceOnce replaces the one occurrence of old in b.
func replaceOnce(t testing.TB, b, old, new []byte) []byte {
	t.Helper()
	require.Equal(t, 1, bytes.Count(b, old), "%x occurs once", old)
	return bytes.Replace(b, old, new, 1)
}
