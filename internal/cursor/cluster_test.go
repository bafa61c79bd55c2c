package cursor_test

import (
	"context"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/pdsmux/pdsmux/internal/cursor"
	"github.com/pdsmux/pdsmux/internal/frame"
	"github.com/pdsmux/pdsmux/internal/testutil/redisserver"
)

// The log's scripts and reads on a real three-node Redis Cluster, through
// go-redis's cluster client. Each subtest has its own key prefix; the
// prefixes are chosen so their hash slots live on three different nodes.
// Every node is watched for script keys that were not declared.
func TestCluster(t *testing.T) {
	cl := redisserver.StartCluster(t, 3)
	for _, a := range cl.Addrs() {
		checkDeclaredKeys(t, a)
	}
	rdb := cl.Client()
	ctx := context.Background()

	prefixes := []string{"merge", "pdsmux", "trim"}
	owners := map[string]bool{}
	for _, p := range prefixes {
		owners[nodeOf(t, rdb, "{"+p+"}:log")] = true
	}
	require.Len(t, owners, 3, "the subtests' keys spread over every node")

	newClusterLog := func(t *testing.T, prefix string, cfg cursor.Config) *cursor.Log {
		cfg.Prefix = prefix
		l, err := cursor.New(rdb, cfg, nil, quiet)
		require.NoError(t, err)
		_, err = l.Reconcile(ctx, cursor.DurableState{}, false)
		require.NoError(t, err)
		return l
	}

	t.Run("MergeThreeReplicas", func(t *testing.T) {
		l := newClusterLog(t, "merge", cursor.Config{})
		// three accounts, a #sync and 20 commits each, interleaved, one
		// upstream seq space
		type ev struct {
			b []byte
			n int // commit number within its account, 0 for the #sync
		}
		var all []ev
		var us []*upstream
		for i := range 3 {
			u, s := newUpstream(t, fmt.Sprintf("u%d.test", i))
			us = append(us, u)
			all = append(all, ev{b: s})
		}
		for n := 1; n <= 20; n++ {
			for _, u := range us {
				all = append(all, ev{b: u.commit(), n: n})
			}
		}
		want := map[string][]byte{} // did rev -> upstream frame
		for i := range all {
			in, err := frame.Parse(all[i].b, 0)
			require.NoError(t, err)
			all[i].b = frame.Patch(all[i].b, &in, uint64(1000+i))
			want[in.DID+" "+in.Rev] = all[i].b
		}
		// each replica misses some: r1 every 5th commit, r2 every 7th,
		// r3 the first half (its commits wait for their predecessors);
		// together they hold everything
		views := map[string][]cursor.Event{}
		for i, e := range all {
			if e.n == 0 || e.n%5 != 0 {
				views["r1"] = append(views["r1"], event(t, e.b))
			}
			if e.n == 0 || e.n%7 != 0 {
				views["r2"] = append(views["r2"], event(t, e.b))
			}
			if i >= len(all)/2 {
				views["r3"] = append(views["r3"], event(t, e.b))
			}
		}
		batch := map[string]int{"r1": 4, "r2": 7, "r3": 5}
		expect := map[string]int64{"r1": -1, "r2": -1, "r3": -1}
		counts := map[cursor.Outcome]int{}
		for len(views["r1"])+len(views["r2"])+len(views["r3"]) > 0 {
			for _, r := range []string{"r1", "r2", "r3"} {
				v := views[r]
				n := min(batch[r], len(v))
				if n == 0 {
					continue
				}
				b, err := l.Append(ctx, r, expect[r], v[:n])
				require.NoError(t, err)
				for _, res := range b.Results {
					counts[res.Outcome]++
				}
				views[r] = v[n:]
				rc, err := l.Cursor(ctx, r)
				require.NoError(t, err)
				require.Equal(t, v[n-1].UpstreamSeq, rc.Stored)
				expect[r] = rc.Stored
			}
		}
		require.Positive(t, counts[cursor.Held], "gaps were held")
		require.Positive(t, counts[cursor.Duplicate], "overlap was deduplicated")

		entries := allEntries(t, l)
		seen := map[string]int{}
		for i, e := range entries {
			if i > 0 {
				require.Greater(t, e.Seq, entries[i-1].Seq, "seq strictly increases")
			}
			key := e.DID + " " + e.Rev
			seen[key]++
			up, ok := want[key]
			require.True(t, ok, "appended %s was never streamed", key)
			in, err := frame.Parse(up, 0)
			require.NoError(t, err)
			require.Equal(t, frame.Patch(up, &in, uint64(e.Seq)), e.Frame, "every byte but seq kept")
		}
		require.Len(t, seen, len(want), "every (did, rev) appended")
		for k, n := range seen {
			require.Equal(t, 1, n, "(did, rev) %s appended once", k)
		}
		held, err := l.HeldRepos(ctx)
		require.NoError(t, err)
		require.Zero(t, held)
		for _, r := range []string{"r1", "r2", "r3"} {
			rc, err := l.Cursor(ctx, r)
			require.NoError(t, err)
			require.Equal(t, rc.Stored, rc.Resume, "no hold pins %s", r)
		}
	})

	t.Run("ReadRangeTail", func(t *testing.T) {
		l := newClusterLog(t, "pdsmux", cursor.Config{})
		u, s0 := newUpstream(t, "alice.test")
		frames := [][]byte{s0}
		for range 10 {
			frames = append(frames, u.commit())
		}
		b, err := l.Append(ctx, "r1", -1, events(t, frames...))
		require.NoError(t, err)
		var seqs []int64
		for _, r := range b.Results {
			require.Equal(t, A, r.Outcome)
			seqs = append(seqs, r.Seq)
		}
		var got []int64
		after := int64(0)
		for {
			es, err := l.Range(ctx, after, 3)
			require.NoError(t, err)
			if len(es) == 0 {
				break
			}
			require.LessOrEqual(t, len(es), 3)
			for _, e := range es {
				got = append(got, e.Seq)
			}
			after = es[len(es)-1].Seq
		}
		require.Equal(t, seqs, got)
		bounds, err := l.Bounds(ctx)
		require.NoError(t, err)
		require.Equal(t, cursor.Bounds{First: seqs[0], Last: seqs[10], Length: 11}, bounds)

		es, err := l.Tail(ctx, seqs[5], -1, 100)
		require.NoError(t, err)
		require.Len(t, es, 5)
		require.Equal(t, seqs[6], es[0].Seq)

		type tailed struct {
			es  []cursor.Entry
			err error
		}
		ch := make(chan tailed, 1)
		go func() {
			es, err := l.Tail(ctx, seqs[10], 10*time.Second, 100)
			ch <- tailed{es, err}
		}()
		// the tail blocks in the log's node until an append wakes it
		// (Redis answers a blocked XREAD as soon as the entry lands)
		waitBlocked(t, rdb, "{pdsmux}:log")
		b, err = l.Append(ctx, "r1", -1, events(t, u.commit()))
		require.NoError(t, err)
		select {
		case r := <-ch:
			require.NoError(t, r.err)
			require.Len(t, r.es, 1)
			require.Equal(t, b.Results[0].Seq, r.es[0].Seq)
		case <-time.After(10 * time.Second):
			t.Fatal("a blocked tail was not woken by an append")
		}
	})

	t.Run("Trim", func(t *testing.T) {
		l := newClusterLog(t, "trim", cursor.Config{Retention: time.Hour})
		u, s0 := newUpstream(t, "alice.test")
		_, err := l.Append(ctx, "r1", -1, events(t, s0, u.commit(), u.commit()))
		require.NoError(t, err)
		pts, err := rdb.ZRangeWithScores(ctx, "{trim}:tidx", 0, -1).Result()
		require.NoError(t, err)
		require.Len(t, pts, 1)
		require.NoError(t, rdb.ZAdd(ctx, "{trim}:tidx", redisZ(pts[0].Member, time.Now().Add(-2*time.Hour))).Err())
		require.NoError(t, rdb.HSet(ctx, "{trim}:meta", "bucket", "0").Err())
		b, err := l.Append(ctx, "r1", -1, events(t, u.commit()))
		require.NoError(t, err)
		n, _, err := l.Trim(ctx, time.Now(), math.MaxInt64, math.MaxInt64)
		require.NoError(t, err)
		require.Zero(t, n)
		n, _, err = l.Trim(ctx, time.Now().Add(time.Hour+time.Minute), math.MaxInt64, math.MaxInt64)
		require.NoError(t, err)
		require.EqualValues(t, 3, n)
		bounds, err := l.Bounds(ctx)
		require.NoError(t, err)
		require.Equal(t, b.Results[0].Seq, bounds.First)
		require.Equal(t, b.Results[0].Seq-1, bounds.Trimmed)
	})

	t.Run("HoldsFlagsReconcile", func(t *testing.T) {
		l := newClusterLog(t, "holds", cursor.Config{})
		other, err := cursor.New(rdb, cursor.Config{Prefix: "holds"}, nil, quiet)
		require.NoError(t, err)
		u, s0 := newUpstream(t, "bob.test")
		_, _ = u.commit(), u.commit() // lost: the next two are held
		c3, c4 := u.commit(), u.commit()
		b, err := l.Append(ctx, "r1", -1, events(t, s0, c3, c4))
		require.NoError(t, err)
		require.Equal(t, []cursor.Outcome{A, H, H}, outcomes(b))
		holds, err := l.Holds(ctx, u.a.DID)
		require.NoError(t, err)
		require.Len(t, holds, 2)
		// another process, which never saw r1, drops them
		n, err := other.DropDeadHolds(ctx, u.a.DID, true)
		require.NoError(t, err)
		require.Equal(t, 2, n)
		rc, err := l.Cursor(ctx, "r1")
		require.NoError(t, err)
		require.Equal(t, rc.Stored, rc.Resume)

		refused := event(t, u.commit())
		refused.Refused = "bad_signature"
		b, err = l.Append(ctx, "r1", -1, []cursor.Event{refused})
		require.NoError(t, err)
		require.Equal(t, cursor.Flagged, b.Results[0].Outcome)
		f, ok, err := l.Flagged(ctx, u.a.DID)
		require.NoError(t, err)
		require.True(t, ok)
		require.NoError(t, l.ClearFlag(ctx, u.a.DID, f))
		q, err := l.HeldRepos(ctx)
		require.NoError(t, err)
		require.Zero(t, q)
		require.NoError(t, l.ResetCursor(ctx, "r1"))

		// the node holding the log loses everything: nothing appends until
		// the durable state is back; dedup hashes and seq survive it
		id := identity(t, u.a.DID, "bob.test", 900)
		b, err = l.Append(ctx, "r1", -1, events(t, id))
		require.NoError(t, err)
		last := b.Results[0].Seq
		require.NoError(t, rdb.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error {
			return c.FlushAll(ctx).Err()
		}))
		_, err = l.Append(ctx, "r1", -1, events(t, id))
		require.ErrorIs(t, err, cursor.ErrNotReconciled)
		h, err := cursor.ContentHash(id)
		require.NoError(t, err)
		_, err = l.Reconcile(ctx, cursor.DurableState{HighWater: last, Hashes: map[string]time.Time{h: time.Now()}}, true)
		require.NoError(t, err)
		b, err = l.Append(ctx, "r2", -1, events(t, identity(t, u.a.DID, "bob.test", 901), identity(t, u.a.DID, "bob2.test", 902)))
		require.NoError(t, err)
		require.Equal(t, D, b.Results[0].Outcome)
		require.Greater(t, b.Results[1].Seq, last)
	})
}

// nodeOf is the id of the node serving key's slot.
func nodeOf(t *testing.T, rdb *redis.ClusterClient, key string) string {
	t.Helper()
	slot, err := rdb.ClusterKeySlot(context.Background(), key).Result()
	require.NoError(t, err)
	shards, err := rdb.ClusterShards(context.Background()).Result()
	require.NoError(t, err)
	for _, sh := range shards {
		for _, r := range sh.Slots {
			if r.Start <= slot && slot <= r.End && len(sh.Nodes) > 0 {
				return sh.Nodes[0].ID
			}
		}
	}
	t.Fatalf("no node serves slot %d", slot)
	return ""
}

// waitBlocked waits until a client is blocked on the node serving key.
func waitBlocked(t *testing.T, rdb *redis.ClusterClient, key string) {
	t.Helper()
	c, err := rdb.MasterForKey(context.Background(), key)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		info, err := c.Info(context.Background(), "clients").Result()
		return err == nil && !strings.Contains(info, "blocked_clients:0\r")
	}, 10*time.Second, 10*time.Millisecond)
}
