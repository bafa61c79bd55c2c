package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"

	"github.com/pdsmux/pdsmux/internal/redact"
)

// Store is the libsql database: the archive and the checkpoint, kept in
// a Backend chosen by Open from the URL.
type Store struct {
	b    Backend
	name string // the URL with any secret removed, for messages
}

// Open opens (and creates, for file: URLs) the database and brings its
// schema up to date. authToken is for libsql:// and https:// servers.
// Errors name the database: ErrBadURL for a URL it cannot open,
// ErrNewerSchema for a database a newer pdsmux wrote.
func Open(ctx context.Context, raw, authToken string) (*Store, error) {
	s := &Store{name: redact.URL(raw)}
	u, err := url.Parse(raw)
	if err != nil || redact.Misparsed(u) {
		return nil, fmt.Errorf("%w %q: not a URL (characters such as /?#@%% in a token must be percent-encoded)", ErrBadURL, s.name)
	}
	switch u.Scheme {
	case "file":
		if s.b, err = openFile(ctx, raw, s.name, u); err != nil {
			return nil, err
		}
	case "libsql", "https", "http":
		if s.b, err = openHrana(raw, s.name, authToken, u); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("%w %q: want file:, libsql:// or https://", ErrBadURL, s.name)
	}
	if err := s.migrate(ctx); err != nil {
		s.b.Close()
		return nil, err
	}
	return s, nil
}

// Close closes the database.
func (s *Store) Close() error { return s.b.Close() }

// Name is the database URL without secrets.
func (s *Store) Name() string { return s.name }

// migrations, in order; the schema version is the number applied.
// Never edit one that has shipped: add another. Each must be safe to run
// twice (IF NOT EXISTS): the two pdsmux of an HA pair may start at once
// and both apply it.
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
	if err := s.b.Exec(ctx, []Stmt{{SQL: `CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)`}}); err != nil {
		return fmt.Errorf("store %s: cannot create the meta table: %w", s.name, err)
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
		var stmts []Stmt
		for _, q := range strings.Split(migrations[v], ";") {
			if strings.TrimSpace(q) != "" {
				stmts = append(stmts, Stmt{SQL: q})
			}
		}
		stmts = append(stmts, Stmt{`INSERT INTO meta (key, value) VALUES ('schema_version', ?)
			ON CONFLICT (key) DO UPDATE SET value = excluded.value`, []any{strconv.Itoa(v + 1)}})
		if err := s.b.Exec(ctx, stmts); err != nil {
			return fmt.Errorf("store %s: migration %d: %w", s.name, v+1, err)
		}
	}
	return nil
}

func (s *Store) version(ctx context.Context) (int, error) {
	var v string
	rows, err := s.b.Query(ctx, `SELECT value FROM meta WHERE key = 'schema_version'`)
	err = scanOne(rows, err, &v)
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
