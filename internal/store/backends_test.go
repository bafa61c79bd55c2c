package store_test

import (
	"context"
	"database/sql"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/pdsmux/pdsmux/internal/testutil/faultproxy"
	"github.com/pdsmux/pdsmux/internal/testutil/libsqlserver"
)

// backend is one kind of database a Store runs on. Every test that is
// not about one backend's own failure modes runs over all of them.
type backend struct {
	name string
	// start makes a fresh, empty database and returns its URL.
	start func(t *testing.T) string
	// startFaulty is start with a fault: cut makes the database refuse the
	// store's writes until restore (reads may go on).
	startFaulty func(t *testing.T) (url string, cut, restore func())
}

// backends: the embedded file (the default deployment) and a real libsql
// server over HTTP (the Turso/sqld path).
var backends = []backend{
	{
		name:  "file",
		start: newFile,
		// another process holding the write lock (a sqlite3 shell in a
		// write transaction, a backup): the store's writes wait out their
		// busy timeout (10 s) and fail; its read pool goes on.
		startFaulty: func(t *testing.T) (string, func(), func()) {
			url := newFile(t)
			db, err := sql.Open("sqlite", url+"?_pragma=busy_timeout(10000)")
			require.NoError(t, err)
			t.Cleanup(func() { db.Close() })
			var conn *sql.Conn // the one connection holding the lock
			cut := func() {
				ctx := context.Background()
				var err error
				conn, err = db.Conn(ctx)
				require.NoError(t, err)
				_, err = conn.ExecContext(ctx, "BEGIN IMMEDIATE")
				require.NoError(t, err)
			}
			restore := func() {
				_, err := conn.ExecContext(context.Background(), "ROLLBACK")
				require.NoError(t, err)
				require.NoError(t, conn.Close())
			}
			return url, cut, restore
		},
	},
	{
		name:  "remote",
		start: func(t *testing.T) string { return libsqlserver.Start(t).URL },
		// the network to the server cut: every connection closed, new
		// ones refused
		startFaulty: func(t *testing.T) (string, func(), func()) {
			srv := libsqlserver.Start(t)
			p := faultproxy.Start(t, strings.TrimPrefix(srv.URL, "http://"))
			return "http://" + p.Addr(), p.Cut, p.Restore
		},
	},
}

func newFile(t *testing.T) string { return "file:" + filepath.Join(t.TempDir(), "pdsmux.db") }

// forEachBackend runs f as a subtest on a fresh database of each backend.
func forEachBackend(t *testing.T, f func(t *testing.T, url string)) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) { f(t, b.start(t)) })
	}
}
