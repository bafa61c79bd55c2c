package cursor

import "errors"

var (
	// ErrCursorRegressed means Redis holds an older cursor for a replica
	// than this process last wrote: Redis lost acknowledged writes (a
	// restart that replayed an AOF missing its last second, a failover to
	// a lagging replica). The caller (a tailer) ends what it is doing; the
	// daemon restores Redis from the durable checkpoint; then the cursor is
	// re-read and the replica re-fetched, and dedup keeps that from
	// doubling anything. The log never calls up into its callers.
	ErrCursorRegressed = errors.New("cursor: stored replica cursor regressed")
	// ErrLostWrites means Redis's seq counter is below a seq this process
	// has appended or read: Redis lost acknowledged writes but kept its
	// state marker (a failover to a lagging replica, a node that came back
	// from an older RDB or AOF and was promoted), so its repo states may
	// be older than what subscribers were sent. Nothing is appended until
	// the daemon has run Reconcile, which merges the durable checkpoint
	// back and raises the counter; a tailer handles it as it handles
	// ErrCursorRegressed.
	ErrLostWrites = errors.New("cursor: Redis holds less than this process has seen")
	// ErrRepairRace means a repair event was built against a rev the repo
	// is no longer at; rebuild it.
	ErrRepairRace = errors.New("cursor: repo moved while the repair was built")
	// ErrNotReconciled means Redis has no incarnation marker: it is new or
	// lost its data, and Reconcile must run before anything is appended
	// or any cursor trusted.
	ErrNotReconciled = errors.New("cursor: Redis not reconciled with the durable checkpoint")
	// ErrBadEvent means an event lacks a field its kind needs.
	ErrBadEvent = errors.New("cursor: event is missing a required field")
)
