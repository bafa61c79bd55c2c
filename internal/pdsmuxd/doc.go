// Package pdsmuxd wires pdsmux together: it validates the Config once,
// builds every component (Build), runs them under one errgroup (Run) and
// shuts them down in order (Close).
//
// Data flows one way: tail (one per replica) -> cursor (the merged log in
// Redis) -> fanout (subscribers). Beside that line sit proxy and pool (the
// other sync endpoints), repair (gaps the replicas lost), crawl (relay
// crawl requests) and store (the durable checkpoint and archive).
//
// It owns no protocol logic of its own; cmd/pdsmux only turns flags into a
// Config.
package pdsmuxd
