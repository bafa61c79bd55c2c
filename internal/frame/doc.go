// Package frame reads and rewrites atproto event-stream frames
// (com.atproto.sync.subscribeRepos websocket messages) without decoding
// them into Go structs.
//
// A frame is two concatenated DAG-CBOR objects: a header {op, t} and a
// body map. Parse walks both once, checks that they are well-formed
// DAG-CBOR maps, and reports the few fields pdsmux routes on (type, seq,
// did, rev, since, commit CID) plus the byte offsets of the body's seq
// value. Patch then swaps that seq value for a new one and keeps every
// other byte as it was, so unknown event types and unknown fields pass
// through untouched.
//
// This package owns the frame format only. It does not own sequencing
// (internal/cursor), transport (internal/tail, internal/fanout) or repo
// semantics (internal/repair).
package frame
