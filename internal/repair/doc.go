// Package repair covers the writes the replicas performed but never
// streamed (stock Cocoon loses about half of its events to seq
// collisions), so that relays see every repo reach the replicas' state
// with an unbroken chain.
//
// Detection: a held #commit whose predecessor did not arrive within the
// hold time; a periodic com.atproto.sync.listRepos scan of every healthy
// replica that finds a repo ahead of the log (or unknown to it) for longer
// than a grace period; the same scan finding an account status the log
// never announced.
//
// Repair, best first: a synthesized #commit from the log's last rev to the
// replica's current signed commit, whose ops are the MST diff between the
// two trees and whose blocks are exactly what a sync-1.1 consumer needs to
// check it (the signed commit block, the new MST nodes including proof
// nodes, the new records). Every synthesized commit passes indigo's own
// VerifyCommitMessage before it is appended. Where that cannot be built
// (old blocks gone, more than 200 ops, more than 2,000,000 bytes, a repo
// the log has never seen) a #sync carrying the signed commit is appended
// instead. Synthesized #account events announce status changes.
//
// Appends go through cursor.Log.AppendRepair, which only succeeds if the
// repo is still at the rev the repair was built from, and which drops held
// commits the repair covered.
//
// It does not own detection of chain breaks (internal/cursor holds them)
// or the crawl requests to relays (internal/crawl).
package repair
