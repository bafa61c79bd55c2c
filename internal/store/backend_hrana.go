package store

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"strings"

	"github.com/tursodatabase/libsql-client-go/libsql"
)

// hranaBackend is a libsql server (Turso, sqld) reached over HTTP with
// the hrana v2 pipeline protocol, through libsql-client-go. Every call is
// one HTTP request; the server keeps no stream (baton) for us between
// requests.
type hranaBackend struct {
	db *sql.DB
}

// openHrana opens the libsql://, https:// or http:// URL raw, parsed as
// u; authToken, if set, is sent as a bearer token. It does not contact
// the server (the first query does). Errors name the database (name, the
// URL for messages): ErrBadURL for a URL with a query.
func openHrana(raw, name, authToken string, u *url.URL) (*hranaBackend, error) {
	if u.RawQuery != "" {
		// libsql refuses ?authToken= but sends a malformed query on,
		// and its errors then print the URL with the token
		return nil, fmt.Errorf("%w %q: a server URL takes no query parameters (give the token as the auth token setting)", ErrBadURL, name)
	}
	var opts []libsql.Option
	if authToken != "" {
		opts = append(opts, libsql.WithAuthToken(authToken))
	}
	conn, err := libsql.NewConnector(raw, opts...)
	if err != nil {
		return nil, fmt.Errorf("store %s: %w", name, err)
	}
	return &hranaBackend{db: sql.OpenDB(conn)}, nil
}

// Exec sends stmts as ONE pipeline request: BEGIN, the statements,
// COMMIT, each step run only if the one before succeeded, ROLLBACK
// otherwise. A write costs one round trip whatever its size, and no
// server-side stream has to outlive the request. A statement's error is
// the server's message; a transport error (connection refused or cut,
// ctx ended) leaves the outcome unknown if the request was sent (see
// Backend).
func (b *hranaBackend) Exec(ctx context.Context, stmts []Stmt) error {
	var q strings.Builder
	var args []any
	q.WriteString("BEGIN;\n")
	for _, st := range stmts {
		q.WriteString(strings.TrimSpace(st.SQL))
		q.WriteString(";\n")
		args = append(args, st.Args...)
	}
	q.WriteString("COMMIT")
	_, err := b.db.ExecContext(ctx, q.String(), args...)
	return err
}

// Query runs one request.
func (b *hranaBackend) Query(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	return b.db.QueryContext(ctx, query, args...)
}

// Read is Query: requests do not queue behind each other on this side
// (the pool is unbounded), so a read never waits for a write here.
func (b *hranaBackend) Read(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	return b.db.QueryContext(ctx, query, args...)
}

// Close closes the connections.
func (b *hranaBackend) Close() error { return b.db.Close() }
