// Package proxy forwards every com.atproto.sync.* request other than
// subscribeRepos (getRepo, getRecord, getBlob, listRepos, getLatestCommit,
// getRepoStatus, getBlocks, ...) to a healthy replica, streaming the
// response as it arrives.
//
// An idempotent request (GET, HEAD) that fails before any byte reached the
// client (connection error, 502/503/504, or a "not found" answer, since in
// a split deployment only one replica holds a given repo) is retried on
// the next replica. Status, headers and body of the answer that is used
// pass through unchanged. With no replica left it answers an XRPC JSON
// error (502 when replicas failed, 503 when none is configured healthy).
//
// It does not decide health on its own: internal/pool does.
package proxy
