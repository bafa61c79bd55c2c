// Package proxy forwards every com.atproto.sync.* request other than
// subscribeRepos (getRepo, getRecord, getBlob, listRepos, getLatestCommit,
// getRepoStatus, getBlocks, ...) to a healthy replica, streaming the
// response as it arrives.
//
// An idempotent request (GET, HEAD, without a body) that fails before any
// byte reached the client (connection error, any 5xx, or a "not found"
// answer, since in a split deployment only one replica holds a given repo)
// is retried on the next replica; 502/503/504 and connection errors also
// mark the replica unhealthy until its next health check. A response whose
// body has started streaming is never retried: a failure mid-body cuts the
// client's connection. Other methods go to one replica. Status, headers and
// body of the answer that is used pass through unchanged; the last
// replica's answer is used as it is. With no replica left it answers an
// XRPC JSON error (502 when replicas failed, 503 when none is configured).
//
// Forwarding headers: pdsmux trusts the hop in front of it (Caddy, which
// sets X-Forwarded-* from what it saw and drops a client's), so the
// listener must not be reachable by clients directly. X-Forwarded-For is
// appended to (client first, then Caddy), X-Forwarded-Proto,
// X-Forwarded-Host and Forwarded pass as received, and X-Real-IP is
// dropped.
//
// It does not decide health on its own: internal/pool does.
package proxy
