package cursor_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pdsmux/pdsmux/internal/cursor"
	"github.com/pdsmux/pdsmux/internal/fakepds"
	"github.com/pdsmux/pdsmux/internal/frame"
	"github.com/pdsmux/pdsmux/internal/testutil/redisserver"
)

// benchEvents makes n commit events (about 1 KB frames) over 20 repos,
// with their creation #sync events first.
func benchEvents(b testing.TB, n int) []cursor.Event {
	var out []cursor.Event
	var accts []*fakepds.Account
	useq := int64(0)
	add := func(t string, body frame.Marshaler) {
		f, err := frame.Encode(t, body)
		require.NoError(b, err)
		in, err := frame.Parse(f, 0)
		require.NoError(b, err)
		ev, err := cursor.NewEvent(f, &in)
		require.NoError(b, err)
		out = append(out, ev)
	}
	for i := range 20 {
		a, sync, err := fakepds.NewAccount(fmt.Sprintf("b%d.test", i), time.Now())
		require.NoError(b, err)
		a.DiscardHistory = true
		accts = append(accts, a)
		useq++
		sync.Seq = useq
		add(frame.TypeSync, sync)
	}
	for i := range n {
		ev, err := accts[i%20].Apply([]fakepds.Op{{Action: "create", Collection: "app.bsky.feed.post", Rkey: fmt.Sprintf("k%07d", i), Record: fakepds.Post("benchmark post text of a usual length, about a tweet or so", time.Now())}}, time.Now())
		require.NoError(b, err)
		useq++
		ev.Seq = useq
		add(frame.TypeCommit, ev)
	}
	return out
}

// BenchmarkAppend measures the append script per event, one event per
// call and in batches, against a real redis-server with AOF everysec.
func BenchmarkAppend(b *testing.B) {
	for _, batch := range []int{1, 16, 128, 512} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			evs := benchEvents(b, b.N)
			srv := redisserver.Start(b, redisserver.Options{AppendFsync: "everysec"})
			l, err := cursor.New(srv.Client(), cursor.Config{}, nil, quiet)
			require.NoError(b, err)
			_, err = l.Reconcile(context.Background(), cursor.DurableState{}, false)
			require.NoError(b, err)
			ctx := context.Background()
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < len(evs); i += batch {
				if _, err := l.Append(ctx, "r1", -1, evs[i:min(i+batch, len(evs))]); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(len(evs))/b.Elapsed().Seconds(), "events/s")
		})
	}
}
