package cursor_test

import (
	"bytes"
	"context"
	"math"
	"testing"
	"time"

	comatproto "github.com/bluesky-social/indigo/api/atproto"
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

// Redis back in time with its state marker (an older RDB promoted, a
// lagging replica after a failover): its counter is below a seq this
// process has seen, and its repo states are older than what was sent.
// Every append fails with ErrLostWrites, writing nothing, until Reconcile
// has merged the checkpoint and raised the counter; then the repo's
// commit already sent is a duplicate and seq continues above everything
// seen.
func TestAppend_RedisBehindWhatWasSeenRefusesAppendsUntilReconciled(t *testing.T) {
	ctx := context.Background()
	l, srv := newLog(t, cursor.Config{})
	u, syncFrame := newUpstream(t, "alice.test")
	b, err := l.Append(ctx, "r1", -1, events(t, syncFrame))
	require.NoError(t, err)
	snapSeq := b.Results[0].Seq
	snapState, err := srv.Client().HGet(ctx, "{pdsmux}:did", u.a.DID).Result()
	require.NoError(t, err)
	sent := u.commit()
	b, err = l.Append(ctx, "r1", -1, events(t, sent))
	require.NoError(t, err)
	last := b.Results[0].Seq
	lost, err := l.LostWrites(ctx)
	require.NoError(t, err)
	require.False(t, lost)

	// Redis goes back to before the commit: counter and repo state.
	require.NoError(t, srv.Client().Set(ctx, "{pdsmux}:seq", snapSeq, 0).Err())
	require.NoError(t, srv.Client().HSet(ctx, "{pdsmux}:did", u.a.DID, snapState).Err())
	lost, err = l.LostWrites(ctx)
	require.NoError(t, err)
	require.True(t, lost, "the counter is below a seq this process appended")
	n, err := srv.Client().XLen(ctx, "{pdsmux}:log").Result()
	require.NoError(t, err)
	_, err = l.Append(ctx, "r1", -1, events(t, sent))
	require.ErrorIs(t, err, cursor.ErrLostWrites, "judged against the old repo state the commit would be sent again")
	_, err = l.Append(ctx, "", -1, events(t, identity(t, u.a.DID, "alice2.test", 999)))
	require.ErrorIs(t, err, cursor.ErrLostWrites, "every append, not only a replica's")
	after, err := srv.Client().XLen(ctx, "{pdsmux}:log").Result()
	require.NoError(t, err)
	require.Equal(t, n, after, "nothing written")

	_, err = l.Reconcile(ctx, cursor.DurableState{HighWater: last, Repos: map[string]cursor.RepoState{
		u.a.DID: {Rev: event(t, sent).Rev, Commit: event(t, sent).Commit}}}, true)
	require.NoError(t, err)
	lost, err = l.LostWrites(ctx)
	require.NoError(t, err)
	require.False(t, lost)
	b, err = l.Append(ctx, "r1", -1, events(t, sent, u.commit()))
	require.NoError(t, err)
	require.Equal(t, []cursor.Outcome{cursor.Duplicate, cursor.Appended}, outcomes(b))
	require.Greater(t, b.Results[1].Seq, last)
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
	n, _, err := l.Trim(ctx, time.Now(), math.MaxInt64, math.MaxInt64)
	require.NoError(t, err)
	require.Zero(t, n, "the newest point is younger than retention")
	n, _, err = l.Trim(ctx, time.Now().Add(time.Hour+time.Minute), math.MaxInt64, math.MaxInt64)
	require.NoError(t, err)
	require.EqualValues(t, 3, n)
	bounds, err := l.Bounds(ctx)
	require.NoError(t, err)
	require.Equal(t, b.Results[0].Seq, bounds.First)
	require.Equal(t, b.Results[0].Seq-1, bounds.Trimmed)
}

// The age trim never takes what the archive has not written or live
// subscribers have not had; the cap takes what the archive has not
// written (never what subscribers have not had), and raises the trim mark
// over it in the same step.
func TestTrim_KeepsUnarchivedEntriesUpToTheCap(t *testing.T) {
	ctx := context.Background()
	l, srv := newLog(t, cursor.Config{Retention: time.Hour, MaxEntries: 5})
	u, syncFrame := newUpstream(t, "alice.test")
	b, err := l.Append(ctx, "r1", -1, events(t, syncFrame, u.commit(), u.commit(), u.commit()))
	require.NoError(t, err)
	seqs := []int64{}
	for _, r := range b.Results {
		seqs = append(seqs, r.Seq)
	}
	// every entry is old: each in its own bucket, two hours ago
	cl := srv.Client()
	require.NoError(t, cl.Del(ctx, "{pdsmux}:tidx").Err())
	for i, s := range seqs {
		require.NoError(t, cl.ZAdd(ctx, "{pdsmux}:tidx", redisZ(s, time.Now().Add(-2*time.Hour+time.Duration(i)*time.Minute))).Err())
	}
	n, _, err := l.Trim(ctx, time.Now(), 0, math.MaxInt64)
	require.NoError(t, err)
	require.Zero(t, n, "nothing archived: nothing trimmed by age")
	n, _, err = l.Trim(ctx, time.Now(), seqs[2], seqs[1])
	require.NoError(t, err)
	require.EqualValues(t, 2, n, "delivered up to the second: the first two go")
	n, _, err = l.Trim(ctx, time.Now(), seqs[1], math.MaxInt64)
	require.NoError(t, err)
	require.Zero(t, n, "archived up to the second: nothing more")
	bounds, err := l.Bounds(ctx)
	require.NoError(t, err)
	require.Equal(t, seqs[2], bounds.First)
	require.Equal(t, seqs[1], bounds.Trimmed)

	// The cap is exact enough here to test: XTRIM MAXLEN ~ trims whole
	// nodes only, so push far past it.
	for range 300 {
		_, err := l.Append(ctx, "r1", -1, events(t, u.commit()))
		require.NoError(t, err)
	}
	// The cap never takes what live subscribers have not had (entries
	// held back for a Redis replica that is away): with only the first
	// four delivered, at most those go, and the log stays over the cap.
	n, over, err := l.Trim(ctx, time.Now(), seqs[1], seqs[3])
	require.NoError(t, err)
	require.LessOrEqual(t, n, int64(2), "only the delivered seqs[2] and seqs[3] may go")
	require.Greater(t, over, int64(250), "the log is over its cap by what was not delivered")
	bounds, err = l.Bounds(ctx)
	require.NoError(t, err)
	require.LessOrEqual(t, bounds.First, seqs[3]+1, "nothing undelivered trimmed")
	require.Equal(t, bounds.First-1, bounds.Trimmed)
	n, _, err = l.Trim(ctx, time.Now(), seqs[1], math.MaxInt64)
	require.NoError(t, err)
	require.Positive(t, n, "the cap trims unarchived entries")
	bounds, err = l.Bounds(ctx)
	require.NoError(t, err)
	require.Greater(t, bounds.First, seqs[3])
	require.Equal(t, bounds.First-1, bounds.Trimmed, "the mark covers what the cap took")
}

func TestRefusedEvent_FlagsRepoAndMovesCursor(t *testing.T) {
	ctx := context.Background()
	l, _ := newLog(t, cursor.Config{})
	u, s0 := newUpstream(t, "alice.test")
	c1 := u.commit()
	refused := event(t, c1)
	refused.Refused = "bad_signature"
	b, err := l.Append(ctx, "r1", -1, append(events(t, s0), refused))
	require.NoError(t, err)
	require.Equal(t, []cursor.Outcome{A, cursor.Flagged}, outcomes(b))
	require.Len(t, allEntries(t, l), 1, "a refused event is never appended")
	rc, err := l.Cursor(ctx, "r1")
	require.NoError(t, err)
	require.Equal(t, refused.UpstreamSeq, rc.Stored, "the flag is durable, so the cursor moves past the event")

	due, err := l.DueHolds(ctx, time.Now(), 10)
	require.NoError(t, err)
	require.Equal(t, []string{u.a.DID}, due, "a flagged repo is due for repair at once")
	holds, err := l.Holds(ctx, u.a.DID)
	require.NoError(t, err)
	require.Empty(t, holds)
	due, err = l.DueHolds(ctx, time.Now(), 10)
	require.NoError(t, err)
	require.Equal(t, []string{u.a.DID}, due, "reading holds must not drop a flagged repo from the queue")

	f, ok, err := l.Flagged(ctx, u.a.DID)
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, cursor.Flag{Reason: "bad_signature", Rev: refused.Rev}, f)
	// a second refusal with another rev replaces the flag; clearing the
	// old one leaves it
	c2 := event(t, u.commit())
	c2.Refused = "future_rev"
	_, err = l.Append(ctx, "r1", -1, []cursor.Event{c2})
	require.NoError(t, err)
	require.NoError(t, l.ClearFlag(ctx, u.a.DID, f))
	_, ok, err = l.Flagged(ctx, u.a.DID)
	require.NoError(t, err)
	require.True(t, ok, "a newer flag survives clearing an older one")
	require.NoError(t, l.ClearFlag(ctx, u.a.DID, cursor.Flag{Reason: "future_rev", Rev: c2.Rev}))
	n, err := l.HeldRepos(ctx)
	require.NoError(t, err)
	require.Zero(t, n, "nothing keeps the repo queued")
}

func TestOlderSync_FlaggedThenRolledBack(t *testing.T) {
	ctx := context.Background()
	l, _ := newLog(t, cursor.Config{})
	u, s0 := newUpstream(t, "alice.test")
	c1, c2 := u.commit(), u.commit()
	_, c4 := u.commit(), u.commit() // c3 lost: c4 is held
	b, err := l.Append(ctx, "r1", -1, events(t, s0, c1, c2, c4))
	require.NoError(t, err)
	require.Equal(t, []cursor.Outcome{A, A, A, H}, outcomes(b))

	// a copy of the creation #sync replayed by another replica: duplicate
	b, err = l.Append(ctx, "r2", -1, events(t, s0))
	require.NoError(t, err)
	require.Equal(t, D, b.Results[0].Outcome)
	// a new #sync at that old rev (a restore from backup): flagged
	restored := resend(t, s0, "2026-11-30T00:00:00.000Z")
	old := event(t, restored)
	b, err = l.Append(ctx, "r1", -1, []cursor.Event{old})
	require.NoError(t, err)
	require.Equal(t, cursor.Flagged, b.Results[0].Outcome)
	f, ok, err := l.Flagged(ctx, u.a.DID)
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, cursor.Flag{Reason: cursor.ReasonSyncRollback, Rev: old.Rev}, f)
	// the same rev as the log's is a plain duplicate
	b, err = l.Append(ctx, "r1", -1, events(t, c2))
	require.NoError(t, err)
	require.Equal(t, D, b.Results[0].Outcome)

	// repair checked the replica's head: roll back
	_, err = l.AppendRollback(ctx, event(t, restored), event(t, c1).Rev)
	require.ErrorIs(t, err, cursor.ErrRepairRace, "only from the rev the log is at")
	res, err := l.AppendRollback(ctx, event(t, restored), event(t, c2).Rev)
	require.NoError(t, err)
	require.Equal(t, A, res.Outcome)
	st, err := l.RepoStates(ctx, u.a.DID)
	require.NoError(t, err)
	require.Equal(t, old.Rev, st[0].Rev)
	holds, err := l.Holds(ctx, u.a.DID)
	require.NoError(t, err)
	require.Empty(t, holds, "held commits of the replaced history are dropped")
	// a replica replaying the replaced history (c1 chains onto the
	// restored rev) appends nothing: I2 holds across the rollback
	b, err = l.Append(ctx, "r2", -1, events(t, c1, c2, c4))
	require.NoError(t, err)
	require.Equal(t, []cursor.Outcome{D, D, D}, outcomes(b))
	st, err = l.RepoStates(ctx, u.a.DID)
	require.NoError(t, err)
	require.Equal(t, old.Rev, st[0].Rev)
	require.NoError(t, l.ClearFlag(ctx, u.a.DID, f))
	n, err := l.HeldRepos(ctx)
	require.NoError(t, err)
	require.Zero(t, n)
}

// resend re-encodes a #sync frame with another time (another event at the
// same rev).
func resend(t *testing.T, b []byte, at string) []byte {
	t.Helper()
	in, err := frame.Parse(b, 0)
	require.NoError(t, err)
	var ev comatproto.SyncSubscribeRepos_Sync
	require.NoError(t, ev.UnmarshalCBOR(bytes.NewReader(b[in.BodyStart:])))
	ev.Time = at
	out, err := frame.Encode(frame.TypeSync, &ev)
	require.NoError(t, err)
	return out
}

// A process that never saw a replica releases and drops that replica's
// held commits: the scripts name the replica's undeclared index key, the
// call is retried with it, and nothing is written twice.
func TestAppend_ReleasesHoldsOfReplicaThisProcessNeverSaw(t *testing.T) {
	ctx := context.Background()
	l1, srv := newLog(t, cursor.Config{})
	l2, err := cursor.New(srv.Client(), cursor.Config{}, nil, quiet)
	require.NoError(t, err)
	u, s0 := newUpstream(t, "alice.test")
	c1, c2, c3 := u.commit(), u.commit(), u.commit()
	b, err := l1.Append(ctx, "r2", -1, events(t, s0, c2, c3))
	require.NoError(t, err)
	require.Equal(t, []cursor.Outcome{A, H, H}, outcomes(b))
	rc, err := l1.Cursor(ctx, "r2")
	require.NoError(t, err)
	require.Equal(t, event(t, c2).UpstreamSeq-1, rc.Resume, "r2's holds pin its cursor")

	b, err = l2.Append(ctx, "r1", -1, events(t, c1))
	require.NoError(t, err)
	require.Equal(t, []cursor.Outcome{A}, outcomes(b))
	require.Equal(t, 2, b.Released)
	rc, err = l2.Cursor(ctx, "r2")
	require.NoError(t, err)
	require.Equal(t, cursor.ReplicaCursor{Stored: event(t, c3).UpstreamSeq, Resume: event(t, c3).UpstreamSeq, OK: true}, rc,
		"the released holds left r2's index")
	require.Len(t, allEntries(t, l2), 4, "each event appended once")

	// the same for DropDeadHolds in a third process
	l3, err := cursor.New(srv.Client(), cursor.Config{}, nil, quiet)
	require.NoError(t, err)
	_, _ = u.commit(), u.commit() // lost: the next commit is held
	b, err = l1.Append(ctx, "r3", -1, events(t, u.commit()))
	require.NoError(t, err)
	require.Equal(t, []cursor.Outcome{H}, outcomes(b))
	n, err := l3.DropDeadHolds(ctx, u.a.DID, true)
	require.NoError(t, err)
	require.Equal(t, 1, n)
	rc, err = l3.Cursor(ctx, "r3")
	require.NoError(t, err)
	require.Equal(t, rc.Stored, rc.Resume, "the dropped hold left r3's index")
	keys, err := srv.Client().Keys(ctx, "{pdsmux}:hsrc:*").Result()
	require.NoError(t, err)
	require.Empty(t, keys, "no index entry outlives its held commit")
}

func TestReconcile_PutsBackDedupHashes(t *testing.T) {
	ctx := context.Background()
	l, srv := newLog(t, cursor.Config{})
	u, _ := newUpstream(t, "alice.test")
	id := identity(t, u.a.DID, "alice.test", 50)
	b, err := l.Append(ctx, "r1", -1, events(t, id))
	require.NoError(t, err)
	require.Equal(t, A, b.Results[0].Outcome)
	require.NoError(t, srv.Client().FlushAll(ctx).Err())
	h, err := cursor.ContentHash(id)
	require.NoError(t, err)
	n, err := l.Reconcile(ctx, cursor.DurableState{HighWater: b.Results[0].Seq, Hashes: map[string]time.Time{h: time.Now()}}, true)
	require.NoError(t, err)
	require.Equal(t, 1, n)
	b, err = l.Append(ctx, "r2", -1, events(t, identity(t, u.a.DID, "alice.test", 77)))
	require.NoError(t, err)
	require.Equal(t, D, b.Results[0].Outcome, "the archived hash still dedups the copy")
}
