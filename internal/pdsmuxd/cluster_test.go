package pdsmuxd_test

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	comatproto "github.com/bluesky-social/indigo/api/atproto"
	"github.com/stretchr/testify/require"

	"github.com/pdsmux/pdsmux/internal/cursor"
	"github.com/pdsmux/pdsmux/internal/frame"
	"github.com/pdsmux/pdsmux/internal/pdsmuxd"
	"github.com/pdsmux/pdsmux/internal/testutil/redisserver"
)

// A --redis-url with cluster=true reaches a real Redis Cluster through
// the cluster client: status reads what a log on the cluster appended.
func TestRedisURL_Cluster(t *testing.T) {
	ctx := context.Background()
	cl := redisserver.StartCluster(t, 3)
	l, err := cursor.New(cl.Client(), cursor.Config{}, nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
	require.NoError(t, err)
	_, err = l.Reconcile(ctx, cursor.DurableState{}, false)
	require.NoError(t, err)
	handle := "alice.test"
	b, err := frame.Encode(frame.TypeIdentity, &comatproto.SyncSubscribeRepos_Identity{Did: "did:plc:alice", Handle: &handle, Seq: 7, Time: time.Now().UTC().Format(time.RFC3339)})
	require.NoError(t, err)
	in, err := frame.Parse(b, 0)
	require.NoError(t, err)
	ev, err := cursor.NewEvent(b, &in)
	require.NoError(t, err)
	res, err := l.Append(ctx, "r1", -1, []cursor.Event{ev})
	require.NoError(t, err)

	st, err := pdsmuxd.ReadStatus(ctx, cl.URL(), "pdsmux", "http://127.0.0.1:1/metrics")
	require.NoError(t, err)
	require.EqualValues(t, 1, st.Log.Events)
	require.Equal(t, res.Results[0].Seq, st.Log.HeadSeq)
	require.Len(t, st.Replicas, 1)
	require.Equal(t, int64(7), st.Replicas[0].Cursor)

	for _, bad := range []string{strings.Replace(cl.URL(), "cluster=true", "cluster=maybe", 1), "redis://" + cl.Addrs()[0] + "/3?cluster=true"} {
		_, err = pdsmuxd.ReadStatus(ctx, bad, "pdsmux", "")
		var ce *pdsmuxd.ConfigError
		require.ErrorAs(t, err, &ce, bad)
		require.Equal(t, "redis-url", ce.Setting)
	}
}
