package store

import (
	"context"
	"database/sql"
)

// Stmt is one SQL statement of a write and its arguments ('?'
// placeholders, SQLite syntax).
type Stmt struct {
	SQL  string
	Args []any
}

// Backend is the database under a Store: what the Store needs from it,
// whatever carries the SQL. Two are built in, chosen by Open from the URL:
// an embedded SQLite file (backend_file.go) and a libsql server over
// hrana HTTP (backend_hrana.go, Turso or sqld). Both speak SQLite's SQL;
// the schema and every statement are the Store's.
//
// Errors: a method returns the driver's error (SQLite's, or the HTTP or
// hrana error of a server), wrapped at most with the step that failed
// ("begin: ", "commit: "); it does not name the database, the Store adds
// its name. When ctx ends first the call ends with an error too (ctx.Err()
// or the driver's report of the cancelled request). Nothing is retried
// inside a Backend: the caller decides (the Archiver retries a write, a
// replay ends).
type Backend interface {
	// Exec runs stmts as one atomic write: all of them take effect or
	// none. A nil error means the write is committed; later Query and
	// Read calls see it. An error means it was rolled back, except that a
	// server reached over the network may have committed a write whose
	// answer was lost (connection cut, ctx ended after the request was
	// sent): Exec then returns the transport's error and the caller cannot
	// tell. The Store's writes are idempotent (INSERT OR IGNORE, marks
	// that only move forward), so retrying is always safe.
	Exec(ctx context.Context, stmts []Stmt) error
	// Query runs a read ordered with the writes: on the embedded file it
	// waits for a write in progress (one writer connection), so it sees
	// every write that began before it; on a server it is one request.
	// The caller closes the rows; an error while iterating comes from
	// rows.Err.
	Query(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	// Read runs a read that need not wait for a write in progress (a
	// replay, a high-water mark): it sees every write Exec has returned
	// from, and may see a concurrent one or not. On the embedded file it
	// runs on a read-only pool of its own; elsewhere it is Query. Errors
	// as Query.
	Read(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	// Close releases the connections. Calls after Close fail with
	// database/sql's "sql: database is closed".
	Close() error
}

// scanOne scans the first row of rows (as Query or Read returned them,
// err included) into dest and closes it: sql.ErrNoRows when there is no
// row.
func scanOne(rows *sql.Rows, err error, dest ...any) error {
	if err != nil {
		return err
	}
	defer rows.Close()
	if !rows.Next() {
		if err := rows.Err(); err != nil {
			return err
		}
		return sql.ErrNoRows
	}
	if err := rows.Scan(dest...); err != nil {
		return err
	}
	return rows.Close()
}
