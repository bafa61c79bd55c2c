package repair_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/bluesky-social/indigo/atproto/repo"
	"github.com/ipfs/go-cid"
	"github.com/stretchr/testify/require"

	"github.com/pdsmux/pdsmux/internal/fakepds"
	"github.com/pdsmux/pdsmux/internal/pool"
	"github.com/pdsmux/pdsmux/internal/repair"
	"github.com/pdsmux/pdsmux/internal/testutil"
)

// replica serves a Cocoon-model store and returns it with its pool entry.
func replica(t *testing.T) (*fakepds.Replica, *pool.Replica) {
	t.Helper()
	st := fakepds.NewStore(fakepds.ModeCocoon, 9)
	r := st.NewReplica("r1")
	require.NoError(t, r.Start(testutil.Listen(t)))
	t.Cleanup(r.Stop)
	u, err := url.Parse(r.URL())
	require.NoError(t, err)
	p := pool.New(pool.Config{}, []pool.Endpoint{{Name: "r1", URL: u}}, http.DefaultClient, nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
	return r, p.All()[0]
}

// Random repos with random gaps of 1-40 lost writes (creates, updates,
// deletes): every synthesized #commit carries the proof nodes that let
// indigo invert it to the old root, its signature checks out, and its ops
// turn the old records into the new ones.
func TestBuildCommit_RandomGapsInvert(t *testing.T) {
	ctx := context.Background()
	r, rep := replica(t)
	rnd := rand.New(rand.NewPCG(3, 4))
	dir := r.Store().Directory()

	for i := range 60 {
		a, err := r.CreateAccount(fmt.Sprintf("user%d.test", i))
		require.NoError(t, err)
		var keys []string
		write := func(n int) {
			for range n {
				op := fakepds.Op{Collection: "app.bsky.feed.post", Rkey: fmt.Sprintf("k%06d", rnd.IntN(1_000_000)), Record: fakepds.Post(fmt.Sprint(rnd.Int()), time.Now())}
				switch {
				case len(keys) > 0 && rnd.IntN(4) == 0:
					j := rnd.IntN(len(keys))
					op.Action, op.Rkey, op.Record = "delete", keys[j], nil
					keys = append(keys[:j], keys[j+1:]...)
				case len(keys) > 0 && rnd.IntN(4) == 0:
					op.Action, op.Rkey = "update", keys[rnd.IntN(len(keys))]
				default:
					op.Action = "create"
					keys = append(keys, op.Rkey)
				}
				_, err := r.WriteSilently(a.DID, op)
				require.NoError(t, err)
			}
		}
		write(rnd.IntN(300))
		oldRev, oldCommit := a.Rev(), a.Commit()
		oldRecs, err := a.Records()
		require.NoError(t, err)
		write(1 + rnd.IntN(40))

		ev, nops, err := repair.BuildCommitForTest(ctx, rep, a.DID, oldRev, oldCommit, a.Commit())
		require.NoError(t, err, "repo %d", i)
		require.Equal(t, a.Rev(), ev.Rev)
		require.Equal(t, oldRev, *ev.Since)
		require.NoError(t, repo.VerifyCommitSignature(ctx, dir, ev))
		_, err = repo.VerifyCommitMessage(ctx, ev)
		require.NoError(t, err)
		for _, op := range ev.Ops {
			switch op.Action {
			case "create", "update":
				oldRecs[op.Path] = cid.Cid(*op.Cid)
			case "delete":
				delete(oldRecs, op.Path)
			}
		}
		newRecs, err := a.Records()
		require.NoError(t, err)
		require.Equal(t, newRecs, oldRecs, "repo %d: ops turn the old records into the new", i)
		require.Equal(t, nops, len(ev.Ops))
	}
}

// A gap of more than 200 ops cannot be one #commit.
func TestBuildCommit_TooManyOps(t *testing.T) {
	ctx := context.Background()
	r, rep := replica(t)
	a, err := r.CreateAccount("big.test")
	require.NoError(t, err)
	oldRev, oldCommit := a.Rev(), a.Commit()
	for i := range 201 {
		_, err := r.WriteSilently(a.DID, fakepds.Op{Action: "create", Collection: "app.bsky.feed.post", Rkey: fmt.Sprintf("k%04d", i), Record: fakepds.Post("x", time.Now())})
		require.NoError(t, err)
	}
	_, _, err = repair.BuildCommitForTest(ctx, rep, a.DID, oldRev, oldCommit, a.Commit())
	require.ErrorIs(t, err, repair.ErrTooBig)
}
