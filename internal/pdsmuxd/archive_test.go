package pdsmuxd_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pdsmux/pdsmux/internal/fakepds"
	"github.com/pdsmux/pdsmux/internal/pdsmuxd"
	"github.com/pdsmux/pdsmux/internal/store"
	"github.com/pdsmux/pdsmux/internal/testutil"
	"github.com/pdsmux/pdsmux/internal/testutil/faultproxy"
	"github.com/pdsmux/pdsmux/internal/testutil/libsqlserver"
	"github.com/pdsmux/pdsmux/internal/testutil/redisserver"
)

// The database (a libsql server) unreachable while 20,000 events flow,
// then back: subscribers get every event meanwhile (the live stream is
// never held back by the database), the archiver's memory stays within
// its byte budget (it stops reading and leaves the rest in Redis), and
// once the database is back the archive catches up from Redis until it
// holds every seq from the first to the head, each once.
func TestFault_DatabaseDownWhileTwentyThousandEventsFlow(t *testing.T) {
	const budget = 1 << 20 // far below what the outage carries (~20 MB)
	e := newEnv(t, fakepds.ModeOwn, 2, redisserver.Options{AppendFsync: "everysec"})
	e.store.Overlap = 0.3
	srv := libsqlserver.Start(t)
	dbp := faultproxy.Start(t, strings.TrimPrefix(srv.URL, "http://"))
	cfg := e.mergeConfig()
	cfg.DBURL = "http://" + dbp.Addr()
	run := e.start(cfg, "pdsmux", func(o *pdsmuxd.Options) { o.ArchiveBufferBytes = budget })
	waitConnected(t, run.rt)
	maddr := run.rt.MetricsAddr()
	f := follow(t, "http://"+run.rt.Addr())
	e.createAccounts(20)
	_, total := e.expected()
	waitArchived(t, maddr, total)

	// Sample the archiver's buffer for the whole outage.
	var mu sync.Mutex
	var peak, behind float64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			m := testutil.Scrape(t, maddr)
			mu.Lock()
			peak = max(peak, m["pdsmux_archive_pending_bytes"])
			behind = max(behind, m["pdsmux_archive_behind"])
			mu.Unlock()
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()

	dbp.Cut()
	start := time.Now()
	wg := e.writeInBackground(20_000, 81)
	wg.Wait()
	want, total := e.expected()
	// While the database is still down, the consumer gets everything.
	checkConsumer(t, e.reader(), f, want, 120*time.Second)
	m := testutil.Scrape(t, maddr)
	require.Positive(t, m["pdsmux_archive_write_errors_total"], "the outage shows")
	require.Equal(t, 1.0, m["pdsmux_archive_behind"], "the archive reports it is behind")
	require.Greater(t, m["pdsmux_archive_lag_events"], 10_000.0, "the lag shows in events")
	outage := time.Since(start)
	dbp.Restore()
	back := time.Now()

	l := e.reader()
	waitLog(t, l, int64(total), 30*time.Second)
	entries := allEntries(t, l)
	require.Len(t, entries, total, "Redis holds the whole log")
	head := entries[len(entries)-1].Seq
	st, err := store.Open(context.Background(), srv.URL, "")
	require.NoError(t, err)
	t.Cleanup(func() { st.Close() })
	require.Eventually(t, func() bool {
		hw, err := st.HighWater(context.Background())
		return err == nil && hw >= head
	}, 120*time.Second, 100*time.Millisecond, "the archive catches up from Redis")
	catchUp := time.Since(back)
	close(stop)
	<-sampled

	var archived []int64
	after := int64(0)
	for {
		es, err := st.Range(context.Background(), after, 5000)
		require.NoError(t, err)
		if len(es) == 0 {
			break
		}
		for _, en := range es {
			archived = append(archived, en.Seq)
		}
		after = es[len(es)-1].Seq
	}
	var logSeqs []int64
	for _, en := range entries {
		logSeqs = append(logSeqs, en.Seq)
	}
	require.Equal(t, logSeqs, archived, "every seq from the first to the head archived, once")
	tr, err := st.Trimmed(context.Background())
	require.NoError(t, err)
	require.Zero(t, tr, "no hole recorded")
	m = testutil.Scrape(t, maddr)
	require.Zero(t, m["pdsmux_archive_lost_total"])
	mu.Lock()
	defer mu.Unlock()
	require.LessOrEqual(t, peak, float64(budget), "the archiver's buffer stayed within its byte budget")
	require.Greater(t, peak, float64(budget)/2, "the buffer was under pressure (the bound was exercised)")
	require.Equal(t, 1.0, behind)
	require.Eventually(t, func() bool { return testutil.Scrape(t, maddr)["pdsmux_archive_behind"] == 0 }, 30*time.Second, 50*time.Millisecond,
		"caught up: the live stream waits for the archive again")
	t.Logf("database down %s while %d events flowed; archive complete %s after it came back (%d seqs); peak buffer %.0f of %d bytes",
		outage.Round(time.Millisecond), len(entries), catchUp.Round(time.Millisecond), len(archived), peak, budget)
}
