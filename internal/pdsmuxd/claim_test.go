package pdsmuxd_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pdsmux/pdsmux/internal/fakepds"
	"github.com/pdsmux/pdsmux/internal/pdsmuxd"
	"github.com/pdsmux/pdsmux/internal/testutil"
	"github.com/pdsmux/pdsmux/internal/testutil/redisserver"
)

// Two pdsmux on one Redis log with different --db-url (docs/ha.md forbids
// it: one archive would miss what the other's trims drop) are refused with
// an error naming --db-url: at Build when Redis answers, at the start-up
// reconcile when it did not, and in a running pdsmux that finds the other
// claimed the log while its own claim was gone. An HA pair on one
// database is not, and a pdsmux that closed leaves the log to any archive.
func TestStart_TwoDatabasesOnOneLog(t *testing.T) {
	t.Parallel()
	// AOF "always": the Redis restarted below keeps the claims
	e := newEnv(t, fakepds.ModeOwn, 1, redisserver.Options{AppendFsync: "always"})
	cfg := e.mergeConfig()
	other := cfg
	other.DBURL = "file:" + filepath.Join(t.TempDir(), "other.db")
	build := func(c pdsmuxd.Config) (*pdsmuxd.Runtime, error) {
		return pdsmuxd.Build(context.Background(), c, pdsmuxd.Options{Listener: testutil.Listen(t), MetricsListener: testutil.Listen(t), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	}
	isDBURL := func(err error, url string) {
		t.Helper()
		var ce *pdsmuxd.ConfigError
		require.True(t, errors.As(err, &ce), "a ConfigError: %v", err)
		require.Equal(t, "db-url", ce.Setting)
		require.Equal(t, url, ce.Value, "the refused pdsmux's own setting")
		require.Contains(t, ce.Reason, "another pdsmux on this Redis log")
		require.Contains(t, ce.Reason, "must use the same --db-url")
	}

	a := e.start(cfg, "pdsmux-a")
	waitConnected(t, a.rt)
	_, err := build(other)
	isDBURL(err, other.DBURL)

	pair, err := build(cfg)
	require.NoError(t, err, "the other half of an HA pair, on the same database")
	require.NoError(t, pair.Close(context.Background()))

	// Redis lost the claims (FLUSHALL of that key alone): the other
	// archive claims first, and the running pdsmux stops at its next claim.
	require.NoError(t, e.redis.Client().Del(context.Background(), "{pdsmux}:users").Err())
	b, err := build(other)
	require.NoError(t, err)
	select {
	case err = <-a.done:
		a.cancel = nil // its Run is over
		isDBURL(err, cfg.DBURL)
	case <-time.After(60 * time.Second):
		t.Fatal("the running pdsmux did not stop")
	}
	require.NoError(t, a.rt.Close(context.Background()))
	require.NoError(t, b.Close(context.Background()))

	// b closed and dropped its claim: the first database's pdsmux starts
	// at once, though b's claim would not have lapsed yet.
	c := e.start(cfg, "pdsmux-c")
	waitConnected(t, c.rt)

	// Redis does not answer at Build: the start-up reconcile claims.
	e.redis.Kill()
	d := e.start(other, "pdsmux-d")
	e.redis.Restart()
	select {
	case err = <-d.done:
		d.cancel = nil
		isDBURL(err, other.DBURL)
	case <-time.After(60 * time.Second):
		t.Fatal("the pdsmux built while Redis was down did not stop at its start-up claim")
	}
	require.Contains(t, readLog(t, "pdsmux-d"), "redis does not answer at start-up")
}
