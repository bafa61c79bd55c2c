package pdsmuxd_test

import (
	"bytes"
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	comatproto "github.com/bluesky-social/indigo/api/atproto"
	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/ipfs/go-cid"
	"github.com/stretchr/testify/require"

	"github.com/pdsmux/pdsmux/internal/blocks"
	"github.com/pdsmux/pdsmux/internal/cursor"
	"github.com/pdsmux/pdsmux/internal/fakepds"
	"github.com/pdsmux/pdsmux/internal/frame"
	"github.com/pdsmux/pdsmux/internal/pdsmuxd"
	"github.com/pdsmux/pdsmux/internal/testutil"
	"github.com/pdsmux/pdsmux/internal/testutil/consumer"
	"github.com/pdsmux/pdsmux/internal/testutil/redisserver"
)

// doorEnv is pdsmux tailing n ModeOwn replicas, with a strict consumer
// from the start of the log, and a "ghost" replica on the same store that
// pdsmux does not tail: a write through it changes the repo every replica
// serves (getLatestCommit, getBlocks) while its #commit reaches no stream
// pdsmux reads. That is how a test gets a genuine, signed frame of a write
// to tamper with and inject, while the replica's head has really moved.
type doorEnv struct {
	*env
	run    *running
	ghost  *fakepds.Replica
	c      *consumer.Consumer
	strict *consumer.Strict
}

// newDoorEnv starts it. buf > 0 sets the replicas' per-subscriber queue;
// tune adjusts the repair config (ScanInterval is an hour unless tune
// changes it: the refused-event repair is then the only one that can run).
func newDoorEnv(t *testing.T, n, buf int, tune func(*pdsmuxd.Config)) *doorEnv {
	t.Helper()
	e := newEnv(t, fakepds.ModeOwn, 0, redisserver.Options{})
	for i := range n {
		r := e.store.NewReplica(fmt.Sprintf("r%d", i+1))
		if buf > 0 {
			r.SubscriberBuffer = buf
		}
		require.NoError(t, r.Start(testutil.Listen(t)))
		t.Cleanup(r.Stop)
		e.replicas = append(e.replicas, r)
	}
	ghost := e.store.NewReplica("ghost") // never started, not in the config
	cfg := e.repairConfig()
	cfg.ScanInterval = time.Hour
	if tune != nil {
		tune(&cfg)
	}
	run := e.start(cfg, "pdsmux")
	waitConnected(t, run.rt)
	base := "http://" + run.rt.Addr()
	strict := consumer.NewStrict(base, e.store.Directory())
	c, _, err := consumer.Dial(context.Background(), base, 0, strict.Attach)
	require.NoError(t, err)
	t.Cleanup(c.Close)
	return &doorEnv{env: e, run: run, ghost: ghost, c: c, strict: strict}
}

func postOp(rkey string) fakepds.Op {
	return fakepds.Op{Action: "create", Collection: "app.bsky.feed.post", Rkey: rkey, Record: fakepds.Post(rkey, time.Now())}
}

func postRec(did, rkey string) consumer.Record {
	return consumer.Record{DID: did, Collection: "app.bsky.feed.post", Rkey: rkey}
}

// write posts rkey to did through r (its #commit streamed) and returns
// the new rev.
func (d *doorEnv) write(r *fakepds.Replica, did, rkey string) string {
	d.t.Helper()
	rev, emitted, err := r.Write(did, postOp(rkey))
	require.NoError(d.t, err)
	require.True(d.t, emitted)
	return rev
}

// ghostWrite posts rkey to did through the ghost replica and returns the
// genuine #commit it made (which no tailed replica streams).
func (d *doorEnv) ghostWrite(did, rkey string) *comatproto.SyncSubscribeRepos_Commit {
	d.t.Helper()
	rev := d.write(d.ghost, did, rkey)
	return decodeCommit(d.t, d.frameOf(did, rev))
}

// frameOf finds the stored frame of did's #commit or #sync at rev.
func (d *doorEnv) frameOf(did, rev string) []byte {
	d.t.Helper()
	evs := d.store.Events()
	for i := len(evs) - 1; i >= 0; i-- {
		in, err := frame.Parse(evs[i], 0)
		require.NoError(d.t, err)
		if (in.Kind == frame.KindCommit || in.Kind == frame.KindSync) && in.DID == did && in.Rev == rev {
			return evs[i]
		}
	}
	d.t.Fatalf("no stored event of %s at rev %s", did, rev)
	return nil
}

func decodeCommit(t *testing.T, b []byte) *comatproto.SyncSubscribeRepos_Commit {
	t.Helper()
	in, err := frame.Parse(b, 0)
	require.NoError(t, err)
	require.Equal(t, frame.KindCommit, in.Kind)
	var ev comatproto.SyncSubscribeRepos_Commit
	require.NoError(t, ev.UnmarshalCBOR(bytes.NewReader(b[in.BodyStart:])))
	return &ev
}

func encodeFrame(t *testing.T, typ string, body frame.Marshaler) []byte {
	t.Helper()
	b, err := frame.Encode(typ, body)
	require.NoError(t, err)
	_, err = frame.Parse(b, 0)
	require.NoError(t, err, "a hand-made frame must pass the frame parser to reach the door")
	return b
}

func (d *doorEnv) metrics() map[string]float64 { return testutil.Scrape(d.t, d.run.rt.MetricsAddr()) }

func (d *doorEnv) metric(key string) float64 { return d.metrics()[key] }

// waitMetric waits until the metric is at least min.
func (d *doorEnv) waitMetric(key string, min float64, within time.Duration) {
	d.t.Helper()
	require.Eventually(d.t, func() bool { return d.metric(key) >= min }, within, 50*time.Millisecond,
		"%s never reached %v (repairs %v)", key, min, repairCounts(d.t, d.run.rt.MetricsAddr()))
}

// waitView waits until the strict consumer holds did at rev.
func (d *doorEnv) waitView(did, rev string, within time.Duration) {
	d.t.Helper()
	require.Eventually(d.t, func() bool {
		v, ok := d.strict.View(did)
		return ok && v.Rev == rev
	}, within, 50*time.Millisecond, "strict consumer never saw %s at rev %s (problems %v)", did, rev, d.strict.Problems())
}

// waitNotHeld waits until Redis has no held commit and no repair flag
// left, and the held-repos gauge says so.
func (d *doorEnv) waitNotHeld(within time.Duration) {
	d.t.Helper()
	l := d.reader()
	require.Eventually(d.t, func() bool {
		held, err1 := l.HeldRepos(context.Background())
		flagged, err2 := l.FlaggedRepos(context.Background())
		return err1 == nil && err2 == nil && held == 0 && flagged == 0 && d.metric("pdsmux_held_repos") == 0
	}, within, 50*time.Millisecond, "repos still held or flagged")
}

// requireAtHead checks the strict consumer holds acct exactly as the
// replicas do, and found no problem.
func (d *doorEnv) requireAtHead(acct *fakepds.Account) {
	d.t.Helper()
	require.Empty(d.t, d.strict.Problems(), "a strict consumer found problems")
	v, ok := d.strict.View(acct.DID)
	require.True(d.t, ok)
	require.Equal(d.t, acct.Rev(), v.Rev, "%s at the replica's head rev", acct.Handle)
	want, err := acct.Records()
	require.NoError(d.t, err)
	require.Equal(d.t, want, v.Records, "records of %s", acct.Handle)
}

// logEntry returns the log's entry of did at rev, if any.
func logEntry(t *testing.T, l *cursor.Log, did, rev string) (cursor.Entry, bool) {
	t.Helper()
	for _, en := range allEntries(t, l) {
		if en.DID == did && en.Rev == rev && (en.Kind == "c" || en.Kind == "s") {
			return en, true
		}
	}
	return cursor.Entry{}, false
}

func logLen(t *testing.T, l *cursor.Log) int64 {
	t.Helper()
	b, err := l.Bounds(context.Background())
	require.NoError(t, err)
	return b.Length
}

// consumerCommits returns the #commit events the consumer got for did.
func consumerCommits(c *consumer.Consumer, did string) []consumer.Event {
	var out []consumer.Event
	for _, ev := range c.Events() {
		if ev.Kind == "commit" && ev.DID == did {
			out = append(out, ev)
		}
	}
	return out
}

func kindCount(c *consumer.Consumer, did, kind string) int {
	n := 0
	for _, ev := range c.Events() {
		if ev.Kind == kind && ev.DID == did {
			n++
		}
	}
	return n
}

// a. A #commit with since but no prevData (a replica on the old sync
// protocol) never reaches the consumer: it is refused, and the repo is
// repaired from the replica's signed head with a #commit that creates the
// record. Without the door the consumer gets it as it is (its chain check
// finds no prevData) and no refused repair is counted.
func TestDoor_CommitWithoutPrevDataIsRepaired(t *testing.T) {
	t.Parallel()
	d := newDoorEnv(t, 1, 0, nil)
	r1 := d.replicas[0]
	a, err := r1.CreateAccount("alice.test")
	require.NoError(t, err)
	rev1 := d.write(r1, a.DID, "p1")
	d.waitView(a.DID, rev1, 10*time.Second)

	genuine := d.ghostWrite(a.DID, "p2")
	bad := *genuine
	bad.PrevData = nil
	require.NotNil(t, bad.Since)
	r1.InjectRaw(encodeFrame(t, frame.TypeCommit, &bad))

	d.waitMetric("pdsmux_repairs_total{kind=commit,reason=refused}", 1, 15*time.Second)
	d.waitView(a.DID, genuine.Rev, 10*time.Second)
	d.requireAtHead(a)
	require.Equal(t, 1.0, d.metric("pdsmux_replica_bad_frames_total{reason=no_prev_data,replica=r1}"))

	for _, ev := range consumerCommits(d.c, a.DID) {
		require.NotNil(t, ev.Commit.PrevData, "the prevData-less frame reached the consumer (rev %s)", ev.Rev)
	}
	recs := d.c.Records()
	require.Equal(t, 1, recs[postRec(a.DID, "p1")])
	require.Equal(t, 1, recs[postRec(a.DID, "p2")], "the refused write's record, delivered once as a create")
	en, ok := logEntry(t, d.reader(), a.DID, genuine.Rev)
	require.True(t, ok)
	require.Equal(t, "", en.Source, "the log holds pdsmux's repair at that rev, not the upstream frame")
	d.waitNotHeld(5 * time.Second)
	t.Logf("repairs %v", repairCounts(t, d.run.rt.MetricsAddr()))
}

// b. An event for repo A carrying a commit signed for B (a replica mixing
// up repos) is refused as did_mismatch. B's commit is dated two minutes
// ahead, so A's next genuine commit has a lower rev: had the forged event
// been appended as A at B's rev (the copy whose since chains onto A's rev
// would be), A's next commit would be dropped as already seen. With the
// door it flows, and both repos end at their heads.
func TestDoor_CommitOfAnotherRepoIsRefused(t *testing.T) {
	t.Parallel()
	d := newDoorEnv(t, 1, 0, nil)
	r1 := d.replicas[0]
	a, err := r1.CreateAccount("alice.test")
	require.NoError(t, err)
	b, err := r1.CreateAccount("bob.test")
	require.NoError(t, err)
	revA1 := d.write(r1, a.DID, "a1")

	restore := d.store.SetNow(func() time.Time { return time.Now().Add(2 * time.Minute) })
	revB := d.write(r1, b.DID, "b1")
	restore()
	d.waitView(a.DID, revA1, 10*time.Second)
	d.waitView(b.DID, revB, 10*time.Second)
	gen := decodeCommit(t, d.frameOf(b.DID, revB))

	relabelled := *gen
	relabelled.Repo = a.DID
	chained := relabelled
	since := revA1
	chained.Since = &since // as if it followed A's last commit
	r1.InjectRaw(encodeFrame(t, frame.TypeCommit, &relabelled))
	r1.InjectRaw(encodeFrame(t, frame.TypeCommit, &chained))

	d.waitMetric("pdsmux_replica_bad_frames_total{reason=did_mismatch,replica=r1}", 2, 10*time.Second)
	d.waitMetric("pdsmux_repairs_total{kind=none,reason=refused}", 1, 10*time.Second)
	d.waitNotHeld(10 * time.Second)

	revA2 := d.write(r1, a.DID, "a2")
	require.Less(t, revA2, revB, "A's next commit is below the forged rev: the case where it was dropped")
	d.waitView(a.DID, revA2, 10*time.Second)
	d.requireAtHead(a)
	d.requireAtHead(b)

	for _, ev := range consumerCommits(d.c, a.DID) {
		require.NotEqual(t, revB, ev.Rev, "the forged event reached the consumer")
	}
	_, ok := logEntry(t, d.reader(), a.DID, revB)
	require.False(t, ok, "nothing appended for A at B's rev")
	en, ok := logEntry(t, d.reader(), a.DID, revA2)
	require.True(t, ok)
	require.Equal(t, "r1", en.Source, "A's next commit appended as the replica streamed it")
	recs := d.c.Records()
	require.Equal(t, 1, recs[postRec(a.DID, "a2")])
	require.Equal(t, 1, recs[postRec(b.DID, "b1")])
	require.Equal(t, 0, recs[postRec(a.DID, "b1")], "B's record never delivered under A")
	require.Equal(t, map[string]float64{"{kind=none,reason=refused}": d.metric("pdsmux_repairs_total{kind=none,reason=refused}")},
		repairCounts(t, d.run.rt.MetricsAddr()), "no repair appended anything")
}

// c. A #commit for A signed with another key (same DID, an impostor's
// repo whose empty tree matches A's, so its prevData and a since set to
// A's rev chain onto what the log holds) is refused as bad_signature; the
// genuine write the replica made instead is repaired with a #commit, and
// A's later commits flow as #commit. Without the door the forged commit is
// appended (the consumer's signature check fails) and the next genuine
// commit no longer chains, so repair can only send #sync.
func TestDoor_WrongSignatureIsRefusedAndRepairedAsCommit(t *testing.T) {
	t.Parallel()
	d := newDoorEnv(t, 1, 0, nil)
	r1 := d.replicas[0]
	a, err := r1.CreateAccount("alice.test")
	require.NoError(t, err)
	rev0, data0 := a.Rev(), a.Data()
	d.waitView(a.DID, rev0, 10*time.Second)

	real1 := d.ghostWrite(a.DID, "real1")

	impostor, _, err := fakepds.NewAccount(a.Handle, time.Now())
	require.NoError(t, err)
	require.Equal(t, a.DID, impostor.DID, "same handle, same DID, another key")
	forged, err := impostor.Apply([]fakepds.Op{postOp("forged")}, time.Now())
	require.NoError(t, err)
	require.Equal(t, data0, cid.Cid(*forged.PrevData), "the forged commit inverts to A's last data")
	since := rev0
	forged.Since = &since
	forged.Seq = d.store.MaxSeq()
	r1.InjectRaw(encodeFrame(t, frame.TypeCommit, forged))

	d.waitMetric("pdsmux_repairs_total{kind=commit,reason=refused}", 1, 15*time.Second)
	require.Equal(t, 1.0, d.metric("pdsmux_replica_bad_frames_total{reason=bad_signature,replica=r1}"))
	d.waitView(a.DID, real1.Rev, 10*time.Second)

	rev2 := d.write(r1, a.DID, "real2")
	d.waitView(a.DID, rev2, 10*time.Second)
	d.requireAtHead(a)
	d.waitNotHeld(5 * time.Second)

	require.Equal(t, map[string]float64{"{kind=commit,reason=refused}": 1}, repairCounts(t, d.run.rt.MetricsAddr()))
	require.Equal(t, 1, kindCount(d.c, a.DID, "sync"), "only the account's creation #sync")
	recs := d.c.Records()
	require.Equal(t, 0, recs[postRec(a.DID, "forged")])
	require.Equal(t, 1, recs[postRec(a.DID, "real1")])
	require.Equal(t, 1, recs[postRec(a.DID, "real2")])
	for _, ev := range consumerCommits(d.c, a.DID) {
		require.NotEqual(t, forged.Rev, ev.Rev)
	}
	en, ok := logEntry(t, d.reader(), a.DID, rev2)
	require.True(t, ok)
	require.Equal(t, "r1", en.Source, "the later commit is the replica's own #commit")
}

// d. An account deactivated with its last write lost: no #commit or #sync
// for it after its #account deactivated, neither from the scan (the
// replica's head is ahead of the log) nor from a refused event's repair
// (kind inactive). Reactivated, its repo is brought up to date.
func TestDoor_DeactivatedAccountIsNotRepairedUntilActive(t *testing.T) {
	t.Parallel()
	d := newDoorEnv(t, 1, 0, func(c *pdsmuxd.Config) { c.ScanInterval = time.Second })
	r1 := d.replicas[0]
	a, err := r1.CreateAccount("alice.test")
	require.NoError(t, err)
	rev1 := d.write(r1, a.DID, "p1")
	d.waitView(a.DID, rev1, 10*time.Second)
	p1 := decodeCommit(t, d.frameOf(a.DID, rev1))

	lost, err := r1.WriteSilently(a.DID, postOp("p2"))
	require.NoError(t, err)
	require.NoError(t, r1.SetStatus(a.DID, false, "deactivated", false))
	require.Eventually(t, func() bool { return kindCount(d.c, a.DID, "account") == 1 }, 10*time.Second, 20*time.Millisecond)

	// a refused event for the deactivated repo: flagged, but not repaired
	bad := *p1
	bad.PrevData = nil
	bad.Seq = d.store.MaxSeq()
	r1.InjectRaw(encodeFrame(t, frame.TypeCommit, &bad))
	d.waitMetric("pdsmux_repairs_total{kind=inactive,reason=refused}", 1, 10*time.Second)
	// scans past the grace period see the repo ahead of the log
	scans := d.metric("pdsmux_repair_scans_total")
	d.waitMetric("pdsmux_repair_scans_total", scans+3, 20*time.Second)
	d.waitNotHeld(5 * time.Second)

	after := false
	for _, ev := range d.c.Events() {
		if ev.DID != a.DID {
			continue
		}
		if ev.Kind == "account" {
			after = true
			continue
		}
		require.False(t, after && (ev.Kind == "commit" || ev.Kind == "sync"), "%s rev %s after #account deactivated", ev.Kind, ev.Rev)
	}
	v, _ := d.strict.View(a.DID)
	require.Equal(t, rev1, v.Rev)
	require.Equal(t, 0, d.c.Records()[postRec(a.DID, "p2")])

	require.NoError(t, r1.SetStatus(a.DID, true, "", false))
	d.waitView(a.DID, lost, 15*time.Second)
	d.requireAtHead(a)
	require.Equal(t, 1, d.c.Records()[postRec(a.DID, "p2")], "the lost write delivered once reactivated")
	rc := repairCounts(t, d.run.rt.MetricsAddr())
	require.Equal(t, 1.0, rc["{kind=commit,reason=scan}"])
	t.Logf("repairs %v", rc)
}

// e. An upstream #commit with the deprecated tooBig flag is refused and
// replaced by a repair #commit carrying its record.
func TestDoor_TooBigCommitIsRefusedAndRepaired(t *testing.T) {
	t.Parallel()
	d := newDoorEnv(t, 1, 0, nil)
	r1 := d.replicas[0]
	a, err := r1.CreateAccount("alice.test")
	require.NoError(t, err)
	rev1 := d.write(r1, a.DID, "p1")
	d.waitView(a.DID, rev1, 10*time.Second)

	genuine := d.ghostWrite(a.DID, "big")
	tooBig := *genuine
	tooBig.TooBig = true
	r1.InjectRaw(encodeFrame(t, frame.TypeCommit, &tooBig))

	d.waitMetric("pdsmux_repairs_total{kind=commit,reason=refused}", 1, 15*time.Second)
	d.waitView(a.DID, genuine.Rev, 10*time.Second)
	d.requireAtHead(a)
	require.Equal(t, 1.0, d.metric("pdsmux_replica_bad_frames_total{reason=too_big,replica=r1}"))
	for _, ev := range consumerCommits(d.c, a.DID) {
		require.False(t, ev.Commit.TooBig, "a tooBig commit reached the consumer (rev %s)", ev.Rev)
	}
	require.Equal(t, 1, d.c.Records()[postRec(a.DID, "big")])
	en, ok := logEntry(t, d.reader(), a.DID, genuine.Rev)
	require.True(t, ok)
	require.Equal(t, "", en.Source, "pdsmux's repair, not the upstream frame")
	d.waitNotHeld(5 * time.Second)
}

// f. An upstream #sync of an older rev while the replica's head is newer
// (a stale copy, not a restore): it is flagged, repair finds the head
// ahead of that rev and appends nothing (kind none), and the flag is
// cleared. A byte-identical replay of a #sync already appended is a plain
// duplicate and flags nothing.
//
// The rollback half (the replica's head really back at the older rev,
// answered with a rollback #sync) needs a fakepds helper that restores an
// account to an earlier signed head; fakepds has none.
func TestDoor_StaleOlderSyncAppendsNothing(t *testing.T) {
	t.Parallel()
	d := newDoorEnv(t, 1, 0, nil)
	r1 := d.replicas[0]
	a, err := r1.CreateAccount("alice.test")
	require.NoError(t, err)
	rev0 := a.Rev()
	rev1 := d.write(r1, a.DID, "p1")
	d.write(r1, a.DID, "p2")
	rev3 := d.write(r1, a.DID, "p3")
	d.waitView(a.DID, rev3, 10*time.Second)
	l := d.reader()
	before := logLen(t, l)

	// the creation #sync again, as streamed: a duplicate
	r1.InjectRaw(d.frameOf(a.DID, rev0))
	// a #sync of rev1, from its genuine signed commit, never seen before
	c1 := decodeCommit(t, d.frameOf(a.DID, rev1))
	_, set, _, err := blocks.ReadCAR(bytes.NewReader(c1.Blocks))
	require.NoError(t, err)
	head := cid.Cid(c1.Commit)
	commitBytes, ok := set.Lookup(head)
	require.True(t, ok)
	one := blocks.NewSet()
	one.Add(head, commitBytes)
	car, err := blocks.CAR(head, one)
	require.NoError(t, err)
	r1.InjectRaw(encodeFrame(t, frame.TypeSync, &comatproto.SyncSubscribeRepos_Sync{
		Did: a.DID, Rev: rev1, Blocks: car, Seq: d.store.MaxSeq(), Time: time.Now().UTC().Format(syntax.AtprotoDatetimeLayout),
	}))

	d.waitMetric("pdsmux_repairs_total{kind=none,reason=sync_rollback}", 1, 10*time.Second)
	d.waitNotHeld(5 * time.Second)
	m := d.metrics()
	require.Equal(t, 1.0, m["pdsmux_log_events_total{kind=sync,outcome=duplicate}"], "the byte-identical replay")
	require.Equal(t, 1.0, m["pdsmux_log_events_total{kind=sync,outcome=flagged}"], "the older #sync")
	for k, v := range m {
		if strings.HasPrefix(k, "pdsmux_replica_bad_frames_total{") {
			require.Zero(t, v, "%s: a genuine #sync passes the door", k)
		}
	}
	require.Equal(t, before, logLen(t, l), "nothing appended")
	require.Equal(t, map[string]float64{"{kind=none,reason=sync_rollback}": 1}, repairCounts(t, d.run.rt.MetricsAddr()))
	require.Equal(t, 1, kindCount(d.c, a.DID, "sync"), "only the creation #sync reached the consumer")
	d.requireAtHead(a)
}

// g. A #commit whose rev is dated an hour ahead is refused (future_rev);
// repair waits (pdsmux_repair_errors_total{stage="future_rev"}) until
// relays would take the head, so nothing is appended and the repo stays
// at its last good rev; other repos keep flowing.
func TestDoor_FutureRevWaits(t *testing.T) {
	t.Parallel()
	d := newDoorEnv(t, 1, 0, nil)
	r1 := d.replicas[0]
	a, err := r1.CreateAccount("alice.test")
	require.NoError(t, err)
	b, err := r1.CreateAccount("bob.test")
	require.NoError(t, err)
	rev1 := d.write(r1, a.DID, "p1")
	d.waitView(a.DID, rev1, 10*time.Second)
	l := d.reader()
	before := logLen(t, l)

	restore := d.store.SetNow(func() time.Time { return time.Now().Add(time.Hour) })
	revF := d.write(r1, a.DID, "future")
	restore()
	d.waitMetric("pdsmux_repair_errors_total{stage=future_rev}", 1, 10*time.Second)
	require.Equal(t, 1.0, d.metric("pdsmux_replica_bad_frames_total{reason=future_rev,replica=r1}"))

	// the stream goes on for other repos
	revB := d.write(r1, b.DID, "b1")
	d.waitView(b.DID, revB, 10*time.Second)

	require.Equal(t, before+1, logLen(t, l), "only bob's commit appended")
	_, ok := logEntry(t, l, a.DID, revF)
	require.False(t, ok, "nothing appended at the future rev")
	v, _ := d.strict.View(a.DID)
	require.Equal(t, rev1, v.Rev, "the repo stays at its last good rev")
	for _, ev := range consumerCommits(d.c, a.DID) {
		require.NotEqual(t, revF, ev.Rev)
	}
	require.Equal(t, 0, d.c.Records()[postRec(a.DID, "future")])
	require.Empty(t, d.strict.Problems())

	// The repair waits for the time relays would take the head (an hour
	// less the 5-minute slack), not the next poll.
	flagged, err := l.FlaggedRepos(context.Background())
	require.NoError(t, err)
	require.EqualValues(t, 1, flagged, "the flag stays until the head is acceptable")
	due, err := l.DueHolds(context.Background(), time.Now().Add(50*time.Minute), 10)
	require.NoError(t, err)
	require.Empty(t, due, "not retried before the head is acceptable")
	due, err = l.DueHolds(context.Background(), time.Now().Add(56*time.Minute), 10)
	require.NoError(t, err)
	require.Equal(t, []string{a.DID}, due, "retried once acceptable")
	require.LessOrEqual(t, d.metric("pdsmux_repair_errors_total{stage=future_rev}"), 2.0,
		"one attempt from the flag and at most one from the listRepos scan, then it waits")
	require.Empty(t, repairCounts(t, d.run.rt.MetricsAddr()))
}

// h. The bad frames of a-c, 10,000 of them in one burst on r1, while r2
// streams 200 good posts: every good post arrives, nothing refused is
// appended (the log holds exactly the replicas' streamed events plus the
// repairs), and no repo stays held or flagged.
func TestDoor_BurstOfBadFrames(t *testing.T) {
	const burst, posts = 10_000, 200
	d := newDoorEnv(t, 2, 2*burst, nil)
	r1, r2 := d.replicas[0], d.replicas[1]
	var accts []*fakepds.Account
	for _, h := range []string{"alice.test", "bob.test", "carol.test"} {
		acct, err := r1.CreateAccount(h)
		require.NoError(t, err)
		accts = append(accts, acct)
	}
	a, b, c := accts[0], accts[1], accts[2]
	g, err := r2.CreateAccount("good.test")
	require.NoError(t, err)
	revB := d.write(r1, b.DID, "b1")
	revC0, dataC0 := c.Rev(), c.Data()
	d.waitView(b.DID, revB, 10*time.Second)
	d.waitView(g.DID, g.Rev(), 10*time.Second)

	ghostSeqs := map[int64]bool{}
	seqOf := func(ev *comatproto.SyncSubscribeRepos_Commit) *comatproto.SyncSubscribeRepos_Commit {
		ghostSeqs[ev.Seq] = true
		return ev
	}
	// a: A's lost write, streamed without prevData
	noPrev := *seqOf(d.ghostWrite(a.DID, "a1"))
	noPrev.PrevData = nil
	// b: B's commit streamed as A's
	relabelled := *decodeCommit(t, d.frameOf(b.DID, revB))
	relabelled.Repo = a.DID
	// c: C's lost write, streamed as an impostor's commit
	seqOf(d.ghostWrite(c.DID, "c1"))
	impostor, _, err := fakepds.NewAccount(c.Handle, time.Now())
	require.NoError(t, err)
	forged, err := impostor.Apply([]fakepds.Op{postOp("forged")}, time.Now())
	require.NoError(t, err)
	require.Equal(t, dataC0, cid.Cid(*forged.PrevData))
	forged.Since = &revC0
	forged.Seq = d.store.MaxSeq()
	bad := [][]byte{
		encodeFrame(t, frame.TypeCommit, &noPrev),
		encodeFrame(t, frame.TypeCommit, &relabelled),
		encodeFrame(t, frame.TypeCommit, forged),
	}

	var wg sync.WaitGroup
	wg.Add(1)
	var writeErr error
	go func() {
		defer wg.Done()
		for i := range posts {
			if _, _, err := r2.Write(g.DID, postOp(fmt.Sprintf("g%03d", i))); err != nil {
				writeErr = err
				return
			}
		}
	}()
	start := time.Now()
	for i := range burst {
		r1.InjectRaw(bad[i%len(bad)])
	}
	wg.Wait()
	require.NoError(t, writeErr)

	d.waitView(g.DID, g.Rev(), 60*time.Second)
	goodIn := time.Since(start)
	refusedKey := func(reason string) string {
		return "pdsmux_replica_bad_frames_total{reason=" + reason + ",replica=r1}"
	}
	require.Eventually(t, func() bool {
		m := d.metrics()
		return m[refusedKey("no_prev_data")]+m[refusedKey("did_mismatch")]+m[refusedKey("bad_signature")] >= burst
	}, 120*time.Second, 100*time.Millisecond, "the door never saw the whole burst")
	t.Logf("burst of %d refused in %s; the %d good posts were all delivered after %s",
		burst, time.Since(start).Round(time.Millisecond), posts, goodIn.Round(time.Millisecond))
	d.waitView(a.DID, a.Rev(), 30*time.Second)
	d.waitView(c.DID, c.Rev(), 30*time.Second)
	d.waitNotHeld(30 * time.Second)

	for _, acct := range []*fakepds.Account{a, b, c, g} {
		d.requireAtHead(acct)
	}
	recs := d.c.Records()
	got := 0
	for i := range posts {
		if recs[postRec(g.DID, fmt.Sprintf("g%03d", i))] == 1 {
			got++
		}
	}
	require.Equal(t, posts, got, "good posts delivered exactly once")
	require.Equal(t, 1, recs[postRec(a.DID, "a1")])
	require.Equal(t, 1, recs[postRec(c.DID, "c1")])
	require.Equal(t, 0, recs[postRec(c.DID, "forged")])
	require.Equal(t, 0, recs[postRec(a.DID, "b1")])

	m := d.metrics()
	rc := repairCounts(t, d.run.rt.MetricsAddr())
	appendedRepairs := 0.0
	for k, v := range rc {
		if strings.Contains(k, "kind=commit") || strings.Contains(k, "kind=sync") || strings.Contains(k, "kind=rollback") {
			appendedRepairs += v
		}
	}
	streamed := 0
	for _, fb := range d.store.Events() {
		in, err := frame.Parse(fb, 0)
		require.NoError(t, err)
		if !ghostSeqs[in.Seq] {
			streamed++
		}
	}
	l := d.reader()
	entries := allEntries(t, l)
	require.EqualValues(t, streamed+int(appendedRepairs), logLen(t, l),
		"log = streamed events + repairs (repairs %v)", rc)
	require.Len(t, entries, streamed+int(appendedRepairs))
	bySource := map[string]int{}
	for _, en := range entries {
		bySource[en.Source]++
	}
	var kinds []string
	for k, v := range rc {
		kinds = append(kinds, fmt.Sprintf("%s=%v", k, v))
	}
	sort.Strings(kinds)
	t.Logf("refused: no_prev_data %v, did_mismatch %v, bad_signature %v; log %d entries (by source %v); repairs %s; consumer %v",
		m[refusedKey("no_prev_data")], m[refusedKey("did_mismatch")], m[refusedKey("bad_signature")],
		len(entries), bySource, strings.Join(kinds, " "), d.c.Kinds())
}

// f (second half). A replica restored from a backup announces its older
// head with #sync: pdsmux checks the replica's signed head is at that rev
// and passes the rollback on (relays accept a #sync rollback); the repo's
// later writes chain onto the restored head.
func TestDoor_SyncRollbackIsPassedOn(t *testing.T) {
	t.Parallel()
	d := newDoorEnv(t, 1, 0, nil)
	r1 := d.replicas[0]
	a, err := r1.CreateAccount("alice.test")
	require.NoError(t, err)
	rev1 := d.write(r1, a.DID, "p1")
	backup, err := d.store.HeadOf(a.DID)
	require.NoError(t, err)
	require.Equal(t, rev1, backup.Rev())
	d.write(r1, a.DID, "p2")
	rev3 := d.write(r1, a.DID, "p3")
	d.waitView(a.DID, rev3, 10*time.Second)

	require.NoError(t, r1.Restore(a.DID, backup, false))
	d.waitMetric("pdsmux_repairs_total{kind=rollback,reason=sync_rollback}", 1, 10*time.Second)
	syncs := func() (n int) {
		for _, ev := range d.c.Events() {
			if ev.DID == a.DID && ev.Kind == "sync" && ev.Rev == rev1 {
				n++
			}
		}
		return n
	}
	// appended is not yet delivered: wait for it, count it at the end
	require.Eventually(t, func() bool { return syncs() > 0 }, 10*time.Second, 20*time.Millisecond, "the rollback #sync reaches the consumer")
	l := d.reader()
	st, err := l.RepoStates(context.Background(), a.DID)
	require.NoError(t, err)
	require.Equal(t, rev1, st[0].Rev, "the log is back at the restored rev")

	// the account writes again on top of the restored head
	rev4 := d.write(r1, a.DID, "p4")
	require.Eventually(t, func() bool {
		st, err := l.RepoStates(context.Background(), a.DID)
		return err == nil && st[0].Rev == rev4
	}, 10*time.Second, 20*time.Millisecond)
	require.Eventually(t, func() bool { return d.c.Records()[postRec(a.DID, "p4")] == 1 }, 10*time.Second, 20*time.Millisecond,
		"the next post is delivered as a record")
	d.waitNotHeld(5 * time.Second)
	d.waitView(a.DID, rev4, 10*time.Second)
	d.requireAtHead(a)
	require.Equal(t, 1, syncs(), "the rollback #sync reached the consumer once")
}
