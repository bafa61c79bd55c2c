package pdsmuxd_test

import (
	"context"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pdsmux/pdsmux/internal/fakepds"
	"github.com/pdsmux/pdsmux/internal/pdsmuxd"
	"github.com/pdsmux/pdsmux/internal/testutil"
	"github.com/pdsmux/pdsmux/internal/testutil/consumer"
	"github.com/pdsmux/pdsmux/internal/testutil/proc"
	"github.com/pdsmux/pdsmux/internal/testutil/redisserver"
)

// The recording of two unpatched Cocoon replicas on one database (58
// commits written, 29 streamed, replica 2's firehose empty), replayed
// through pdsmux: after repair a strict consumer's view of every repo
// equals the recorded final state.
func TestFixture_CocoonRecordingRepairedToFinalState(t *testing.T) {
	t.Parallel()
	fx, err := fakepds.LoadFixture(filepath.Join(proc.ModuleRoot(), "testdata", "cocoon-2replicas"))
	require.NoError(t, err)
	rs := redisserver.Start(t, redisserver.Options{})
	l1, l2 := testutil.Listen(t), testutil.Listen(t)
	s1, err := fx.Serve(l1, "live-replica1.frames", "replay-replica1.frames")
	require.NoError(t, err)
	t.Cleanup(func() { s1.Close() })
	s2, err := fx.Serve(l2, "live-replica2.frames", "replay-replica2.frames")
	require.NoError(t, err)
	t.Cleanup(func() { s2.Close() })

	e := &env{t: t, dir: t.TempDir(), redis: rs, store: fakepds.NewStore(fakepds.ModeCocoon, 1)}
	cfg := pdsmuxd.DefaultConfig()
	cfg.Replicas = []string{"r1=http://" + l1.Addr().String(), "r2=http://" + l2.Addr().String()}
	cfg.RedisURL = rs.URL()
	cfg.HoldTimeout = 500 * time.Millisecond
	cfg.ScanInterval = time.Second
	cfg.RepairGrace = time.Second
	cfg.NoSignatureCheck = true // the recording's DIDs live only in its PLC mock
	// every account of the recording was created in it: announce the
	// repos whose creation events Cocoon lost with their records
	cfg.NewRepos = "all"
	cfg.PLCURL = "http://127.0.0.1:1" // never the real PLC
	cfg.DBURL = "file:" + filepath.Join(e.dir, "pdsmux.db")
	cfg.LogFormat = "text"
	run := e.start(cfg, "pdsmux")
	base := "http://" + run.rt.Addr()
	strict := consumer.NewStrict(base, nil)
	c, _, err := consumer.Dial(context.Background(), base, 0, strict.Attach)
	require.NoError(t, err)
	t.Cleanup(c.Close)

	latest := fx.Latest()
	deadline := time.Now().Add(30 * time.Second)
	for {
		done := true
		for did, rev := range latest {
			v, _ := strict.View(did)
			done = done && v.Rev == rev
		}
		if done || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	require.Empty(t, strict.Problems())
	dids := make([]string, 0, len(latest))
	for did := range latest {
		dids = append(dids, did)
	}
	sort.Strings(dids)
	total := 0
	for _, did := range dids {
		v, ok := strict.View(did)
		require.True(t, ok, "%s never reached the consumer", did)
		require.Equal(t, latest[did], v.Rev, "%s rev", did)
		want, err := fx.Records(did)
		require.NoError(t, err)
		require.Equal(t, want, v.Records, "%s records", did)
		total += len(want)
	}
	require.Equal(t, 47, total, "36 posts, 9 likes, 2 profiles")
	commits, syncs, stale, fetches := strict.Stats()
	repairs := repairCounts(t, run.rt.MetricsAddr())
	t.Logf("consumer: %d commits, %d syncs (%d stale, %d getRepo); repairs %v",
		commits, syncs, stale, fetches, repairs)
	requireCommitRepairs(t, repairs)
}
