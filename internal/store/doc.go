// Package store keeps pdsmux's durable checkpoint and archive in libsql:
// an embedded SQLite file by default (file: URL, modernc.org/sqlite, pure
// Go) or a remote libsql server (libsql://, https://) such as Turso or
// sqld, through github.com/tursodatabase/libsql-client-go.
//
// The Store speaks to its database through one Backend interface (atomic
// write of a batch, reads ordered with writes or beside them, close), one
// file per backend: backend_file.go (WAL, one writer connection and a
// read-only pool, so replays do not queue behind a slow write) and
// backend_hrana.go. Every write is atomic and, on a server, one HTTP round
// trip: the statements go as a single BEGIN...COMMIT pipeline request, so
// the store never relies on a server keeping a stream open between
// requests.
//
// It holds, trailing Redis by about a second: every event of the merged
// log for the archive retention (default 30 days), each repo's last rev
// and commit, each account's last status, each replica's cursor as far as
// the archive covers it, and the seq high-water mark. From that, a Redis
// that lost its data is put back (cursor.Log.Reconcile) so seq never goes
// backwards and no flood of duplicates reaches relays; and subscribers
// with cursors older than Redis keeps are replayed from the archive.
//
// The Archiver is a reader of the log with its own durable position (the
// high-water mark): it tails the Redis stream from there into a buffer
// bounded in bytes and writes it in batches, retrying and never dropping;
// while the database is down it stops reading and later catches up from
// Redis. The fanout sends an entry only once the Archiver has read it
// (Archiver.Await) unless the archive is more than its buffer behind, so
// whatever a subscriber has seen is in the archive or in the Archiver's
// buffer, which Flush writes out before a reconcile.
//
// It does not own the log (internal/cursor) or serving (internal/fanout).
package store
