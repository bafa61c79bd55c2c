// Package tail follows one replica's com.atproto.sync.subscribeRepos
// firehose and hands its events, in order and in batches, to a Sink (the
// merged log).
//
// A Tailer resumes from the replica cursor the Sink stored, reconnects
// with exponential backoff and jitter, pings the replica and drops the
// connection when it goes quiet, and reads frames up to a size limit
// (larger ones are skipped without breaking the stream). Frames read but
// not yet appended are bounded in bytes (Config.QueueBytes): past it the
// replica is not read, so TCP pushes back on it alone. Frames that do
// not parse, or that cannot be sequenced, are counted and logged with the
// replica's name; they never stop the stream. A replica's #info
// OutdatedCursor is logged and counted; its FutureCursor error (its
// database was reset) resets the stored cursor and resumes live.
//
// Invariant (with internal/cursor): the stored cursor moves only inside
// Sink.Append, after the events it covers are appended or held, so a
// crash at any point re-reads, never skips. When the Sink reports that
// Redis lost writes, the session ends and the next one re-reads the
// stored cursor.
//
// Tail does not know about Redis, dedup or ordering: that is the Sink's job.
package tail
