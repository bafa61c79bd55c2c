// Package fanout serves com.atproto.sync.subscribeRepos from the merged
// log: the one websocket Caddy pins every relay to.
//
// One Broadcaster per process tails the log in Redis and turns each new
// entry into a prepared websocket message shared by all subscribers. It,
// and a replay from Redis, send an entry only once the Keeper (the durable
// archive, the log's other reader) has read it; when Redis loses entries
// the broadcaster had not delivered yet, it delivers them from the Keeper. A
// subscriber with a cursor first replays seq > cursor from the log (and
// from the durable archive when Redis no longer holds it), then joins the
// broadcaster; joining happens under the broadcaster's lock only once the
// replay has caught up with what the broadcaster has delivered, and live
// entries at or below the last replayed seq are skipped, so the hand-over
// has no gap and no duplicate.
//
// Each subscriber has a bounded queue; when it fills, the subscriber gets
// a ConsumerTooSlow error frame and is closed. Others never wait for it.
// One writer goroutine per subscriber is its socket's only writer, pings
// included, from the upgrade on; one liveness window (two ping intervals
// plus the time a reader at 64 KiB/s needs for what the subscriber has not
// shown it read) bounds its read deadline and every write to it.
//
// It does not own the log (internal/cursor) or the proxying of the other
// sync endpoints (internal/proxy).
package fanout
