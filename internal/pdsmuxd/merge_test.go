package pdsmuxd_test

import (
	"testing"
	"time"

	"github.com/pdsmux/pdsmux/internal/fakepds"
	"github.com/pdsmux/pdsmux/internal/testutil/redisserver"
)

// Three replicas, 10,000 commits over 50 repos, 30% of events streamed
// live by two replicas, subscribers of random replicas dropped every
// 20-100 ms: the log holds every (did, rev) exactly once, in order.
func TestMerge_ThreeReplicasOverlapAndDisconnects(t *testing.T) {
	e := newEnv(t, fakepds.ModeOwn, 3, redisserver.Options{})
	e.store.Overlap = 0.3
	run := e.start(e.mergeConfig(), "pdsmux")
	waitConnected(t, run.rt)

	e.createAccounts(50)
	stop := make(chan struct{})
	wg := e.chaos(stop, 7)
	e.writeCommits(10_000, 1)
	close(stop)
	wg.Wait()

	want, total := e.expected()
	l := e.reader()
	waitLog(t, l, int64(total), 90*time.Second)
	checkLog(t, allEntries(t, l), want)
}

// Two pdsmux on one Redis, both tailing every replica, appending at once.
func TestMerge_TwoProcessesOneRedis(t *testing.T) {
	e := newEnv(t, fakepds.ModeOwn, 3, redisserver.Options{})
	e.store.Overlap = 0.3
	a := e.start(e.mergeConfig(), "pdsmux-a")
	b := e.start(e.mergeConfig(), "pdsmux-b")
	waitConnected(t, a.rt)
	waitConnected(t, b.rt)

	e.createAccounts(20)
	stop := make(chan struct{})
	wg := e.chaos(stop, 9)
	e.writeCommits(4_000, 2)
	close(stop)
	wg.Wait()

	want, total := e.expected()
	l := e.reader()
	waitLog(t, l, int64(total), 90*time.Second)
	checkLog(t, allEntries(t, l), want)
}
