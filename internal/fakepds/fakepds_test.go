package fakepds_test

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	comatproto "github.com/bluesky-social/indigo/api/atproto"
	"github.com/bluesky-social/indigo/atproto/repo"
	"github.com/stretchr/testify/require"

	"github.com/pdsmux/pdsmux/internal/fakepds"
	"github.com/pdsmux/pdsmux/internal/frame"
	"github.com/pdsmux/pdsmux/internal/testutil"
)

func body(t *testing.T, b []byte) (frame.Info, []byte) {
	t.Helper()
	in, err := frame.Parse(b, 0)
	require.NoError(t, err)
	return in, b[in.BodyStart:]
}

func TestFakePDS_CommitsVerifyWithIndigo(t *testing.T) {
	ctx := context.Background()
	st := fakepds.NewStore(fakepds.ModeOwn, 1)
	r := st.NewReplica("r1")
	require.NoError(t, r.Start(testutil.Listen(t)))
	t.Cleanup(r.Stop)
	a, err := r.CreateAccount("alice.test")
	require.NoError(t, err)
	for i := range 30 {
		ops := []fakepds.Op{{Action: "create", Collection: "app.bsky.feed.post", Rkey: fmt.Sprintf("p%03d", i), Record: fakepds.Post("hi", st.Now())}}
		if i%5 == 4 {
			ops = append(ops, fakepds.Op{Action: "delete", Collection: "app.bsky.feed.post", Rkey: fmt.Sprintf("p%03d", i-2)})
		}
		if i%7 == 6 {
			ops = append(ops, fakepds.Op{Action: "update", Collection: "app.bsky.feed.post", Rkey: fmt.Sprintf("p%03d", i-1), Record: fakepds.Post("edited", st.Now())})
		}
		_, emitted, err := r.Write(a.DID, ops...)
		require.NoError(t, err)
		require.True(t, emitted)
	}
	dir := st.Directory()
	var lastRev string
	var lastData *repo.Repo
	for _, b := range st.Events() {
		in, bb := body(t, b)
		switch in.Kind {
		case frame.KindSync:
			var ev comatproto.SyncSubscribeRepos_Sync
			require.NoError(t, ev.UnmarshalCBOR(bytes.NewReader(bb)))
			c, err := repo.VerifySyncMessage(ctx, dir, &ev)
			require.NoError(t, err)
			lastRev = c.Rev
		case frame.KindCommit:
			var ev comatproto.SyncSubscribeRepos_Commit
			require.NoError(t, ev.UnmarshalCBOR(bytes.NewReader(bb)))
			require.NoError(t, repo.VerifyCommitSignature(ctx, dir, &ev))
			rp, err := repo.VerifyCommitMessage(ctx, &ev)
			require.NoError(t, err)
			require.NotNil(t, ev.Since)
			require.Equal(t, lastRev, *ev.Since)
			lastRev = ev.Rev
			lastData = rp
		}
	}
	require.Equal(t, a.Rev(), lastRev)
	recs, err := a.Records()
	require.NoError(t, err)
	root, err := lastData.MST.RootCID()
	require.NoError(t, err)
	require.Equal(t, a.Data(), *root)
	require.Len(t, recs, 30-6)
}

func TestFakePDS_CocoonLosesCollidingEvents(t *testing.T) {
	st := fakepds.NewStore(fakepds.ModeCocoon, 1)
	r1, r2 := st.NewReplica("r1"), st.NewReplica("r2")
	startPinned(t, st, time.Now(), r1, r2) // one seed for both, whatever the second
	a, err := r1.CreateAccount("alice.test")
	require.NoError(t, err)
	require.Equal(t, 0, st.Lost, "the creation events take the first seqs")
	lost := 0
	for i := range 20 {
		r := r1
		if i%2 == 1 {
			r = r2
		}
		_, emitted, err := r.Write(a.DID, fakepds.Op{Action: "create", Collection: "app.bsky.feed.post", Rkey: fmt.Sprintf("p%03d", i), Record: fakepds.Post("x", st.Now())})
		require.NoError(t, err)
		if !emitted {
			lost++
		}
	}
	require.Equal(t, 10, lost, "every replica-2 write collides, as in the recording")
	require.Equal(t, lost, st.Lost)
	require.Equal(t, 2+10, st.Emitted, "alice's #identity and #sync, and replica 1's writes")
	require.Equal(t, st.Emitted, len(st.Events()))
}
