package consumer_test

import (
	"context"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pdsmux/pdsmux/internal/fakepds"
	"github.com/pdsmux/pdsmux/internal/testutil"
	"github.com/pdsmux/pdsmux/internal/testutil/consumer"
)

// Records and Kinds over a real subscribeRepos stream, read while it runs.
func TestConsumer_CountsLiveStream(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st := fakepds.NewStore(fakepds.ModeOwn, 1)
	r := st.NewReplica("r1")
	require.NoError(t, r.Start(testutil.Listen(t)))
	t.Cleanup(r.Stop)

	c, _, err := consumer.Dial(ctx, r.URL(), -1)
	require.NoError(t, err)
	defer c.Close()

	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // concurrent readers, for the race detector
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
				_ = c.Records()
				_ = c.Kinds()
				runtime.Gosched()
			}
		}
	}()

	a, err := r.CreateAccount("alice.test")
	require.NoError(t, err)
	post := func(action, rkey string) fakepds.Op {
		return fakepds.Op{Action: action, Collection: "app.bsky.feed.post", Rkey: rkey, Record: fakepds.Post(rkey, st.Now())}
	}
	_, _, err = r.Write(a.DID, post("create", "p1"), post("create", "p2"))
	require.NoError(t, err)
	_, _, err = r.Write(a.DID, post("update", "p1"), post("create", "p3"))
	require.NoError(t, err)
	_, _, err = r.Write(a.DID, fakepds.Op{Action: "delete", Collection: "app.bsky.feed.post", Rkey: "p2"})
	require.NoError(t, err)

	require.NoError(t, c.WaitLen(5, 10*time.Second))
	close(stop)
	wg.Wait()

	require.Equal(t, map[consumer.Record]int{
		{DID: a.DID, Collection: "app.bsky.feed.post", Rkey: "p1"}: 1,
		{DID: a.DID, Collection: "app.bsky.feed.post", Rkey: "p2"}: 1,
		{DID: a.DID, Collection: "app.bsky.feed.post", Rkey: "p3"}: 1,
	}, c.Records())
	require.Equal(t, map[string]int{"identity": 1, "sync": 1, "commit": 3}, c.Kinds())
}
