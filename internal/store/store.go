package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/tursodatabase/libsql-client-go/libsql"
	_ "modernc.org/sqlite" // the "sqlite" driver libsql-client-go uses for file: URLs

	"github.com/pdsmux/pdsmux/internal/redact"
)

// Store is the libsql database.
type Store struct {
	db *sql.DB
	// rd reads an embedded file over connections of its own (WAL readers
	// do not wait for the writer), so a replay from the archive is not
	// queued behind a write waiting on a slow disk or a lock; nil for a
	// server (db has a pool) and for :memory:.
	rd     *sql.DB
	name   string // the URL with any secret removed, for messages
	remote bool   // a libsql server over HTTP, not an embedded file
}

// Open opens (and creates, for file: URLs) the database and brings its
// schema up to date. authToken is for libsql:// and https:// servers.
// Errors name the database.
func Open(ctx context.Context, raw, authToken string) (*Store, error) {
	s := &Store{name: redact.URL(raw)}
	u, err := url.Parse(raw)
	if err != nil || redact.Misparsed(u) {
		return nil, fmt.Errorf("%w %q: not a URL (characters such as /?#@%% in a token must be percent-encoded)", ErrBadURL, s.name)
	}
	var opts []libsql.Option
	switch u.Scheme {
	case "file":
		if strings.HasPrefix(raw, "file://") && !strings.HasPrefix(raw, "file:///") {
			return nil, fmt.Errorf("%w %q: write file:/path or file:relative/path, not file://", ErrBadURL, s.name)
		}
		if err := checkFile(u); err != nil {
			return nil, fmt.Errorf("store %s: %w", s.name, err)
		}
	case "libsql", "https", "http":
		s.remote = true
		if u.RawQuery != "" {
			// libsql refuses ?authToken= but sends a malformed query on,
			// and its errors then print the URL with the token
			return nil, fmt.Errorf("%w %q: a server URL takes no query parameters (give the token as the auth token setting)", ErrBadURL, s.name)
		}
		if authToken != "" {
			opts = append(opts, libsql.WithAuthToken(authToken))
		}
	default:
		return nil, fmt.Errorf("%w %q: want file:, libsql:// or https://", ErrBadURL, s.name)
	}
	conn, err := libsql.NewConnector(raw, opts...)
	if err != nil {
		return nil, fmt.Errorf("store %s: %w", s.name, err)
	}
	s.db = sql.OpenDB(conn)
	if u.Scheme == "file" {
		// One writer connection: SQLite serialises writes anyway, and
		// per-connection pragmas then hold.
		s.db.SetMaxOpenConns(1)
		for _, p := range []string{"PRAGMA journal_mode=WAL", "PRAGMA busy_timeout=10000", "PRAGMA synchronous=NORMAL"} {
			if _, err := s.db.ExecContext(ctx, p); err != nil {
				s.db.Close()
				return nil, fmt.Errorf("store %s: %s: %w (is the file a SQLite database?)", s.name, p, err)
			}
		}
		if !strings.Contains(raw, ":memory:") {
			sep := "?"
			if strings.Contains(raw, "?") {
				sep = "&"
			}
			// modernc.org/sqlite applies _pragma to every connection
			if s.rd, err = sql.Open("sqlite", raw+sep+"_pragma=busy_timeout(10000)&_pragma=query_only(1)"); err != nil {
				s.db.Close()
				return nil, fmt.Errorf("store %s: %w", s.name, err)
			}
			s.rd.SetMaxOpenConns(4)
		}
	}
	if err := s.migrate(ctx); err != nil {
		s.db.Close()
		return nil, err
	}
	return s, nil
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

// Close closes the database.
func (s *Store) Close() error {
	if s.rd != nil {
		s.rd.Close()
	}
	return s.db.Close()
}

// reader is the pool reads that need not see a write in progress use.
func (s *Store) reader() *sql.DB {
	if s.rd != nil {
		return s.rd
	}
	return s.db
}

// Name is the database URL without secrets.
func (s *Store) Name() string { return s.name }

// migrations, in order; the schema version is the number applied.
// Never edit one that has shipped: add another.
var migrations = []string{
	// 1: the archive and the checkpoint.
	`CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
	CREATE TABLE IF NOT EXISTS events (
		seq INTEGER PRIMARY KEY,
		time_ms INTEGER NOT NULL,
		kind TEXT NOT NULL,
		did TEXT NOT NULL,
		rev TEXT NOT NULL,
		source TEXT NOT NULL,
		frame BLOB NOT NULL
	);
	CREATE INDEX IF NOT EXISTS events_time ON events (time_ms);
	CREATE TABLE IF NOT EXISTS repos (did TEXT PRIMARY KEY, rev TEXT NOT NULL, commit_cid TEXT NOT NULL, seq INTEGER NOT NULL);
	CREATE TABLE IF NOT EXISTS accounts (did TEXT PRIMARY KEY, status TEXT NOT NULL, seq INTEGER NOT NULL);
	CREATE TABLE IF NOT EXISTS cursors (replica TEXT PRIMARY KEY, cursor INTEGER NOT NULL);`,
}

// SchemaVersion is the schema this binary writes.
var SchemaVersion = len(migrations)

func (s *Store) migrate(ctx context.Context) error {
	if _, err := s.db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)`); err != nil {
		if s.remote {
			return fmt.Errorf("store %s: cannot create the meta table: %w", s.name, err)
		}
		return fmt.Errorf("store %s: cannot create the meta table: %w (is it a SQLite database?)", s.name, err)
	}
	have, err := s.version(ctx)
	if err != nil {
		return err
	}
	if have > SchemaVersion {
		return fmt.Errorf("%w: %s has schema %d, this pdsmux knows up to %d; run a newer pdsmux or point --db-url elsewhere",
			ErrNewerSchema, s.name, have, SchemaVersion)
	}
	for v := have; v < SchemaVersion; v++ {
		var stmts []stmt
		for _, q := range strings.Split(migrations[v], ";") {
			if strings.TrimSpace(q) != "" {
				stmts = append(stmts, stmt{sql: q})
			}
		}
		stmts = append(stmts, stmt{`INSERT INTO meta (key, value) VALUES ('schema_version', ?)
			ON CONFLICT (key) DO UPDATE SET value = excluded.value`, []any{strconv.Itoa(v + 1)}})
		if err := s.exec(ctx, stmts); err != nil {
			return fmt.Errorf("store %s: migration %d: %w", s.name, v+1, err)
		}
	}
	return nil
}

// stmt is one statement of a write.
type stmt struct {
	sql  string
	args []any
}

// exec runs stmts atomically. An embedded file uses a transaction. A
// server gets them as ONE hrana pipeline request (BEGIN, the statements,
// COMMIT, each step run only if the one before succeeded, ROLLBACK
// otherwise): a write costs one round trip to Turso whatever its size, and
// no server-side stream (baton) has to outlive the request.
func (s *Store) exec(ctx context.Context, stmts []stmt) error {
	if s.remote {
		var q strings.Builder
		var args []any
		q.WriteString("BEGIN;\n")
		for _, st := range stmts {
			q.WriteString(strings.TrimSpace(st.sql))
			q.WriteString(";\n")
			args = append(args, st.args...)
		}
		q.WriteString("COMMIT")
		_, err := s.db.ExecContext(ctx, q.String(), args...)
		return err
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	defer tx.Rollback()
	for _, st := range stmts {
		if _, err := tx.ExecContext(ctx, st.sql, st.args...); err != nil {
			return err
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

func (s *Store) version(ctx context.Context) (int, error) {
	var v string
	err := s.db.QueryRowContext(ctx, `SELECT value FROM meta WHERE key = 'schema_version'`).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("store %s: read schema version: %w", s.name, err)
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		return 0, fmt.Errorf("store %s: schema version %q is not a number (corrupt meta table)", s.name, v)
	}
	return n, nil
}
