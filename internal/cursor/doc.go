// Package cursor owns the merged, sequenced event log in Redis.
//
// Every event any replica streams is offered to Log.Append. One Lua script
// call per batch (a batch of large frames in several, see budget.go)
// decides, atomically, whether the event is a duplicate (by the
// repo's last rev, or by a content hash for #identity/#account), whether a
// #commit must wait for its missing predecessor (held), or whether it is
// appended: it then gets the next seq, is written to a Redis stream with
// that seq patched into the upstream bytes, and the source replica's
// cursor moves forward in the same step. Two pdsmux processes may append
// to one Redis at once; the script keeps the log correct for both.
//
// The package also reads the log back (Range, Tail, Bounds), exposes the
// per-repo state and held commits the repair loop needs, trims by age
// (never past the durable archive's position) and by a length cap, and
// keeps the log within a byte budget (RunBudget).
//
// It does not own transport (internal/tail reads replicas,
// internal/fanout serves subscribers), repair decisions (internal/repair)
// or durable history beyond Redis (internal/store).
//
// All keys share one hash tag ({prefix}) so the scripts run unchanged on
// Redis Cluster, Valkey and managed Redis, and every key a script touches
// (per-repo hold hashes, dedup markers, per-replica hold indexes included)
// is built in Go and passed in KEYS, as proxies that check declared keys
// require.
package cursor
