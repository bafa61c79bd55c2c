package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/tursodatabase/libsql-client-go/libsql"
	_ "modernc.org/sqlite" // the "sqlite" driver libsql-client-go uses for file: URLs
)

// fileBackend is an embedded SQLite file (modernc.org/sqlite, pure Go,
// opened through libsql-client-go's connector) in WAL mode.
type fileBackend struct {
	// db is ONE connection, the writer: SQLite serialises writes anyway,
	// and per-connection pragmas then hold.
	db *sql.DB
	// rd reads over connections of its own (WAL readers do not wait for
	// the writer), so a replay from the archive is not queued behind a
	// write waiting on a slow disk or a lock. nil for :memory: (each
	// connection would be another database): reads then use db.
	rd *sql.DB
}

// openFile opens (and creates) the file: URL raw, parsed as u. Errors
// name the database (name, the URL for messages) and say why the file
// cannot be used: ErrBadURL for a file:// URL, its directory or mode, not
// a SQLite database.
func openFile(ctx context.Context, raw, name string, u *url.URL) (*fileBackend, error) {
	if strings.HasPrefix(raw, "file://") && !strings.HasPrefix(raw, "file:///") {
		return nil, fmt.Errorf("%w %q: write file:/path or file:relative/path, not file://", ErrBadURL, name)
	}
	if err := checkFile(u); err != nil {
		return nil, fmt.Errorf("store %s: %w", name, err)
	}
	conn, err := libsql.NewConnector(raw)
	if err != nil {
		return nil, fmt.Errorf("store %s: %w", name, err)
	}
	b := &fileBackend{db: sql.OpenDB(conn)}
	b.db.SetMaxOpenConns(1)
	for _, p := range []string{fmt.Sprintf("PRAGMA busy_timeout=%d", busyWait.Milliseconds()), "PRAGMA journal_mode=WAL", "PRAGMA synchronous=NORMAL"} {
		// switching to WAL takes the file's exclusive lock, and a busy
		// one fails at once, not after busy_timeout: another process is
		// opening it too (an HA pair on one host)
		if err := retryBusy(ctx, func() error { _, err := b.db.ExecContext(ctx, p); return err }); err != nil {
			b.db.Close()
			return nil, fmt.Errorf("store %s: %s: %w (is the file a SQLite database?)", name, p, err)
		}
	}
	if !strings.Contains(raw, ":memory:") {
		sep := "?"
		if strings.Contains(raw, "?") {
			sep = "&"
		}
		// modernc.org/sqlite applies _pragma to every connection
		if b.rd, err = sql.Open("sqlite", raw+sep+fmt.Sprintf("_pragma=busy_timeout(%d)&_pragma=query_only(1)", busyWait.Milliseconds())); err != nil {
			b.db.Close()
			return nil, fmt.Errorf("store %s: %w", name, err)
		}
		b.rd.SetMaxOpenConns(4)
	}
	return b, nil
}

// checkFile tells why an embedded database file cannot be opened for
// writing (its directory missing, not a directory, not writable; the file
// not a regular file or not writable), which SQLite reports only as an
// error on the first pragma.
func checkFile(u *url.URL) error {
	path := u.Opaque
	if path == "" {
		path = u.Path
	}
	if path == "" || path == ":memory:" {
		return nil
	}
	dir := filepath.Dir(path)
	fi, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("directory %s does not exist (create it, or point the database URL elsewhere)", dir)
	case err != nil:
		return fmt.Errorf("directory %s: %w", dir, err)
	case !fi.IsDir():
		return fmt.Errorf("%s is not a directory", dir)
	}
	if fi, err := os.Stat(path); err == nil {
		if !fi.Mode().IsRegular() {
			return fmt.Errorf("%s is not a regular file", path)
		}
		f, err := os.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			return fmt.Errorf("database file %s is not writable: %w", path, err)
		}
		f.Close()
	}
	// SQLite writes a -wal and a -shm file beside the database
	f, err := os.CreateTemp(dir, ".pdsmux-write-check-*")
	if err != nil {
		return fmt.Errorf("directory %s is not writable: %w", dir, err)
	}
	f.Close()
	os.Remove(f.Name())
	return nil
}

// Exec runs stmts in one transaction on the writer connection. A lock
// held by another process is waited for up to 10 s (busy_timeout), then
// SQLite's "database is locked" is returned.
func (b *fileBackend) Exec(ctx context.Context, stmts []Stmt) error {
	// Another process's write transaction (the other pdsmux of an HA pair
	// on one host) can make this one fail with SQLITE_BUSY_SNAPSHOT, which
	// busy_timeout does not wait out: the whole transaction is tried
	// again, for as long as busy_timeout would have waited. Every write
	// pdsmux makes is safe to repeat (see Backend.Exec).
	return retryBusy(ctx, func() error { return b.exec(ctx, stmts) })
}

// retryBusy runs f until it does not fail with SQLITE_BUSY, for up to
// busyWait, 10-50 ms apart.
func retryBusy(ctx context.Context, f func() error) error {
	deadline := time.Now().Add(busyWait)
	for {
		err := f()
		if err == nil || !isBusy(err) || time.Now().After(deadline) {
			return err
		}
		if !sleep(ctx, time.Duration(10+rand.IntN(40))*time.Millisecond) {
			return err
		}
	}
}

// busyWait is how long a write waits for another process's lock: SQLite's
// busy_timeout on every connection, and retryBusy's bound.
const busyWait = 10 * time.Second

// isBusy reports whether err is SQLite's SQLITE_BUSY, any extended code
// (BUSY_SNAPSHOT is 517).
func isBusy(err error) bool {
	var se interface{ Code() int }
	return errors.As(err, &se) && se.Code()&0xff == 5
}

func (b *fileBackend) exec(ctx context.Context, stmts []Stmt) error {
	tx, err := b.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	defer tx.Rollback()
	for _, st := range stmts {
		if _, err := tx.ExecContext(ctx, st.SQL, st.Args...); err != nil {
			return err
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// Query reads on the writer connection, after any write in progress.
func (b *fileBackend) Query(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	return b.db.QueryContext(ctx, query, args...)
}

// Read reads on the read-only pool, beside a write in progress.
func (b *fileBackend) Read(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	if b.rd == nil {
		return b.db.QueryContext(ctx, query, args...)
	}
	return b.rd.QueryContext(ctx, query, args...)
}

// Close closes the read pool and the writer.
func (b *fileBackend) Close() error {
	if b.rd != nil {
		b.rd.Close()
	}
	return b.db.Close()
}
