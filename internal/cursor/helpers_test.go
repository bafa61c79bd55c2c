package cursor_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	comatproto "github.com/bluesky-social/indigo/api/atproto"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/pdsmux/pdsmux/internal/cursor"
	"github.com/pdsmux/pdsmux/internal/fakepds"
	"github.com/pdsmux/pdsmux/internal/frame"
	"github.com/pdsmux/pdsmux/internal/testutil/redisserver"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func newLog(t *testing.T, cfg cursor.Config) (*cursor.Log, *redisserver.Server) {
	t.Helper()
	l, srv, _ := newLogMetrics(t, cfg)
	return l, srv
}

// newLogMetrics is newLog with its metrics on the registry it returns.
func newLogMetrics(t *testing.T, cfg cursor.Config) (*cursor.Log, *redisserver.Server, *prometheus.Registry) {
	t.Helper()
	srv := redisserver.Start(t, redisserver.Options{})
	checkDeclaredKeys(t, srv.Addr())
	reg := prometheus.NewRegistry()
	l, err := cursor.New(srv.Client(), cfg, cursor.NewMetrics(reg), quiet)
	require.NoError(t, err)
	_, err = l.Reconcile(context.Background(), cursor.DurableState{}, false)
	require.NoError(t, err)
	return l, srv, reg
}

// upstream is one account whose commits are encoded as a replica would.
type upstream struct {
	t   *testing.T
	a   *fakepds.Account
	seq int64
	n   int
}

func newUpstream(t *testing.T, handle string) (*upstream, []byte) {
	a, syncEv, err := fakepds.NewAccount(handle, time.Now())
	require.NoError(t, err)
	u := &upstream{t: t, a: a, seq: 100}
	u.seq++
	syncEv.Seq = u.seq
	b, err := frame.Encode(frame.TypeSync, syncEv)
	require.NoError(t, err)
	return u, b
}

func (u *upstream) commit() []byte {
	u.t.Helper()
	u.n++
	ev, err := u.a.Apply([]fakepds.Op{{Action: "create", Collection: "app.bsky.feed.post", Rkey: fmt.Sprintf("k%05d", u.n), Record: fakepds.Post("hello", time.Now())}}, time.Now())
	require.NoError(u.t, err)
	u.seq++
	ev.Seq = u.seq
	b, err := frame.Encode(frame.TypeCommit, ev)
	require.NoError(u.t, err)
	return b
}

func identity(t *testing.T, did, handle string, seq int64) []byte {
	b, err := frame.Encode(frame.TypeIdentity, &comatproto.SyncSubscribeRepos_Identity{Did: did, Handle: &handle, Seq: seq, Time: "2026-11-25T00:00:00.000Z"})
	require.NoError(t, err)
	return b
}

func event(t *testing.T, b []byte) cursor.Event {
	t.Helper()
	in, err := frame.Parse(b, 0)
	require.NoError(t, err)
	ev, err := cursor.NewEvent(b, &in)
	require.NoError(t, err)
	return ev
}

func events(t *testing.T, frames ...[]byte) []cursor.Event {
	out := make([]cursor.Event, len(frames))
	for i, b := range frames {
		out[i] = event(t, b)
	}
	return out
}

func outcomes(b cursor.Batch) []cursor.Outcome {
	out := make([]cursor.Outcome, len(b.Results))
	for i, r := range b.Results {
		out[i] = r.Outcome
	}
	return out
}

func allEntries(t *testing.T, l *cursor.Log) []cursor.Entry {
	t.Helper()
	var out []cursor.Entry
	after := int64(0)
	for {
		es, err := l.Range(context.Background(), after, 1000)
		require.NoError(t, err)
		if len(es) == 0 {
			return out
		}
		out = append(out, es...)
		after = es[len(es)-1].Seq
	}
}

func redisZ(member any, at time.Time) redis.Z {
	return redis.Z{Member: member, Score: float64(at.UnixMilli())}
}
