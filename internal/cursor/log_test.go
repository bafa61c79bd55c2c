package cursor_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pdsmux/pdsmux/internal/cursor"
	"github.com/pdsmux/pdsmux/internal/frame"
)

const (
	A = cursor.Appended
	D = cursor.Duplicate
	H = cursor.Held
)

func TestAppend_StoresUpstreamBytesWithNewSeq(t *testing.T) {
	ctx := context.Background()
	l, _ := newLog(t, cursor.Config{})
	u, syncFrame := newUpstream(t, "alice.test")
	frames := [][]byte{syncFrame, u.commit(), u.commit(), u.commit()}
	b, err := l.Append(ctx, "r1", -1, events(t, frames...))
	require.NoError(t, err)
	require.Equal(t, []cursor.Outcome{A, A, A, A}, outcomes(b))

	entries := allEntries(t, l)
	require.Len(t, entries, 4)
	floor := time.Now().Add(-time.Minute).UnixMicro()
	for i, e := range entries {
		require.Greater(t, e.Seq, floor, "seq starts at the unix-microsecond floor")
		if i > 0 {
			require.Equal(t, entries[i-1].Seq+1, e.Seq)
		}
		require.Equal(t, b.Results[i].Seq, e.Seq)
		up, err := frame.Parse(frames[i], 0)
		require.NoError(t, err)
		require.Equal(t, frame.Patch(frames[i], &up, uint64(e.Seq)), e.Frame, "every byte but seq kept")
		require.Equal(t, "r1", e.Source)
	}
	rc, err := l.Cursor(ctx, "r1")
	require.NoError(t, err)
	require.Equal(t, cursor.ReplicaCursor{Stored: u.seq, Resume: u.seq, OK: true}, rc)
}

func TestAppend_DuplicatesAcrossReplicasDropped(t *testing.T) {
	ctx := context.Background()
	l, _ := newLog(t, cursor.Config{})
	u, syncFrame := newUpstream(t, "alice.test")
	frames := [][]byte{syncFrame, identity(t, u.a.DID, "alice.test", 50), u.commit(), u.commit()}
	b, err := l.Append(ctx, "r1", -1, events(t, frames...))
	require.NoError(t, err)
	require.Equal(t, []cursor.Outcome{A, A, A, A}, outcomes(b))
	// the same events from another replica, with other upstream seqs for
	// the identity event: content hash excludes seq
	frames[1] = identity(t, u.a.DID, "alice.test", 77)
	b, err = l.Append(ctx, "r2", -1, events(t, frames...))
	require.NoError(t, err)
	require.Equal(t, []cursor.Outcome{D, D, D, D}, outcomes(b))
	require.Len(t, allEntries(t, l), 4)
}

func TestAppend_HoldsOutOfOrderCommitUntilPredecessorArrives(t *testing.T) {
	ctx := context.Background()
	l, _ := newLog(t, cursor.Config{})
	u, syncFrame := newUpstream(t, "alice.test")
	c1, c2, c3, c4 := u.commit(), u.commit(), u.commit(), u.commit()
	b, err := l.Append(ctx, "r1", -1, events(t, syncFrame, c1, c3, c4))
	require.NoError(t, err)
	require.Equal(t, []cursor.Outcome{A, A, H, H}, outcomes(b))
	// r1's cursor may not pass its held events
	rc, err := l.Cursor(ctx, "r1")
	require.NoError(t, err)
	require.Equal(t, event(t, c3).UpstreamSeq-1, rc.Resume)
	require.Equal(t, event(t, c4).UpstreamSeq, rc.Stored)

	b, err = l.Append(ctx, "r2", -1, events(t, c2))
	require.NoError(t, err)
	require.Equal(t, []cursor.Outcome{A}, outcomes(b))
	require.Equal(t, 2, b.Released)

	var revs []string
	for _, e := range allEntries(t, l) {
		revs = append(revs, e.Rev)
	}
	require.Equal(t, []string{event(t, syncFrame).Rev, event(t, c1).Rev, event(t, c2).Rev, event(t, c3).Rev, event(t, c4).Rev}, revs)
	rc, err = l.Cursor(ctx, "r1")
	require.NoError(t, err)
	require.Equal(t, rc.Stored, rc.Resume, "released holds no longer pin the cursor")
	n, err := l.HeldRepos(ctx)
	require.NoError(t, err)
	require.Zero(t, n)
}

func TestAppend_SyncCoversHeldCommits(t *testing.T) {
	ctx := context.Background()
	l, _ := newLog(t, cursor.Config{})
	u, syncFrame := newUpstream(t, "alice.test")
	c1, _, c3 := u.commit(), u.commit(), u.commit()
	_, err := l.Append(ctx, "r1", -1, events(t, syncFrame, c1, c3))
	require.NoError(t, err)
	holds, err := l.Holds(ctx, u.a.DID)
	require.NoError(t, err)
	require.Len(t, holds, 1)
	require.Equal(t, event(t, c3).Rev, holds[0].Rev)
	require.Equal(t, "r1", holds[0].Replica)

	// a repair #sync at c3's rev drops the held c3
	syncEv := event(t, c3)
	syncEv.Kind = frame.KindSync
	res, err := l.AppendRepair(ctx, syncEv, event(t, c1).Rev)
	require.NoError(t, err)
	require.Equal(t, A, res.Outcome)
	holds, err = l.Holds(ctx, u.a.DID)
	require.NoError(t, err)
	require.Empty(t, holds)

	// a repair built against an old rev loses its race
	_, err = l.AppendRepair(ctx, syncEv, event(t, c1).Rev)
	require.ErrorIs(t, err, cursor.ErrRepairRace)
	st, err := l.RepoStates(ctx, u.a.DID, "did:plc:nobody")
	require.NoError(t, err)
	require.Equal(t, []cursor.RepoState{{Rev: syncEv.Rev, Commit: syncEv.Commit, OK: true}, {}}, st)
}

func TestAppend_DetectsRedisLosingWrites(t *testing.T) {
	ctx := context.Background()
	l, srv := newLog(t, cursor.Config{})
	u, syncFrame := newUpstream(t, "alice.test")
	_, err := l.Append(ctx, "r1", -1, events(t, syncFrame, u.commit()))
	require.NoError(t, err)
	rc, err := l.Cursor(ctx, "r1")
	require.NoError(t, err)
	_, err = l.Append(ctx, "r1", rc.Stored, events(t, u.commit()))
	require.NoError(t, err)
	// Redis "forgets" the last append
	require.NoError(t, srv.Client().HSet(ctx, "{pdsmux}:cur", "r1", rc.Stored-1).Err())
	_, err = l.Append(ctx, "r1", rc.Stored+1, events(t, u.commit()))
	require.ErrorIs(t, err, cursor.ErrCursorRegressed)
}

func TestAppend_SeqNeverGoesBackAfterStateLoss(t *testing.T) {
	ctx := context.Background()
	l, srv := newLog(t, cursor.Config{})
	u, syncFrame := newUpstream(t, "alice.test")
	b, err := l.Append(ctx, "r1", -1, events(t, syncFrame, u.commit()))
	require.NoError(t, err)
	last := b.Results[1].Seq

	// Counter lost but stream kept: continue above the stream's top even
	// with a clock far in the past (a Pi without RTC before NTP).
	cursor.SetClock(l, func() time.Time { return time.Unix(86400, 0) })
	require.NoError(t, srv.Client().Del(ctx, "{pdsmux}:seq").Err())
	b, err = l.Append(ctx, "r1", -1, events(t, u.commit()))
	require.NoError(t, err)
	require.Equal(t, last+1, b.Results[0].Seq)
	last = b.Results[0].Seq

	// Everything lost: nothing is appended until the durable checkpoint is
	// back, and seq then continues above it.
	require.NoError(t, srv.Client().FlushAll(ctx).Err())
	_, err = l.Append(ctx, "r1", -1, events(t, identity(t, u.a.DID, "alice2.test", 999)))
	require.ErrorIs(t, err, cursor.ErrNotReconciled)
	_, err = l.Cursor(ctx, "r1")
	require.ErrorIs(t, err, cursor.ErrNotReconciled, "a lost cursor must not read as 'start live'")
	_, err = l.Reconcile(ctx, cursor.DurableState{HighWater: last + 1000}, true)
	require.NoError(t, err)
	b, err = l.Append(ctx, "r1", -1, events(t, identity(t, u.a.DID, "alice2.test", 999)))
	require.NoError(t, err)
	require.Greater(t, b.Results[0].Seq, last+1000)
}

func TestTrim_DropsEntriesOlderThanRetention(t *testing.T) {
	ctx := context.Background()
	l, srv := newLog(t, cursor.Config{Retention: time.Hour})
	u, syncFrame := newUpstream(t, "alice.test")
	_, err := l.Append(ctx, "r1", -1, events(t, syncFrame, u.commit(), u.commit()))
	require.NoError(t, err)
	// pretend those were appended two hours ago, then append one more now
	pts, err := srv.Client().ZRangeWithScores(ctx, "{pdsmux}:tidx", 0, -1).Result()
	require.NoError(t, err)
	require.Len(t, pts, 1)
	require.NoError(t, srv.Client().ZAdd(ctx, "{pdsmux}:tidx", redisZ(pts[0].Member, time.Now().Add(-2*time.Hour))).Err())
	require.NoError(t, srv.Client().HSet(ctx, "{pdsmux}:meta", "bucket", "0").Err())
	b, err := l.Append(ctx, "r1", -1, events(t, u.commit()))
	require.NoError(t, err)
	n, err := l.Trim(ctx, time.Now())
	require.NoError(t, err)
	require.Zero(t, n, "the newest point is younger than retention")
	n, err = l.Trim(ctx, time.Now().Add(time.Hour+time.Minute))
	require.NoError(t, err)
	require.EqualValues(t, 3, n)
	bounds, err := l.Bounds(ctx)
	require.NoError(t, err)
	require.Equal(t, b.Results[0].Seq, bounds.First)
	require.Equal(t, b.Results[0].Seq-1, bounds.Trimmed)
}

func TestAdoptHeld_TakesOldestHeldCommitOfUnknownRepoAsIs(t *testing.T) {
	ctx := context.Background()
	l, _ := newLog(t, cursor.Config{})
	u, _ := newUpstream(t, "alice.test")
	_, c2, c3 := u.commit(), u.commit(), u.commit()
	// a fresh log meets a repo mid-chain: nothing to chain onto yet
	b, err := l.Append(ctx, "r1", -1, events(t, c3, c2))
	require.NoError(t, err)
	require.Equal(t, []cursor.Outcome{H, H}, outcomes(b))
	due, err := l.DueHolds(ctx, time.Now().Add(time.Minute), 10)
	require.NoError(t, err)
	require.Equal(t, []string{u.a.DID}, due)

	res, err := l.AdoptHeld(ctx, u.a.DID)
	require.NoError(t, err)
	require.Equal(t, A, res.Outcome)
	var revs []string
	for _, e := range allEntries(t, l) {
		revs = append(revs, e.Rev)
	}
	require.Equal(t, []string{event(t, c2).Rev, event(t, c3).Rev}, revs)
	_, err = l.AdoptHeld(ctx, u.a.DID)
	require.ErrorIs(t, err, cursor.ErrRepairRace, "the repo has state now")
	n, err := l.HeldRepos(ctx)
	require.NoError(t, err)
	require.Zero(t, n)
}
