// Package blocks holds IPLD blocks in memory and reads and writes them as
// CARv1 files, checking every block against its CID. Repair uses it to
// collect the blocks of a synthesized commit; the fake replica used in
// tests uses it as its block store.
//
// It does not know about repos or MSTs; indigo's atproto/repo packages do
// that over a Set.
package blocks
