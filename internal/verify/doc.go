// Package verify is pdsmux's door: every #commit and #sync a replica
// streams is checked here, before it can touch dedup, holds or the seq,
// with the checks a strict sync-1.1 relay applies (indigo cmd/relay
// VerifyRepoCommit, VerifyCommitMessageStrict and VerifyRepoSync, and
// atproto/repo.VerifyCommitMessage for MST inversion).
//
// What is refused, by reason (the label of
// pdsmux_replica_bad_frames_total):
//
//	too_big         tooBig flag, over 200 ops or over 2,000,000 bytes of blocks
//	rebase          the deprecated rebase flag
//	bad_blocks      blocks that are not a CAR holding a well-formed signed
//	                commit (indigo's LoadCommitFromCAR: repo version, signature present)
//	bad_commit      an event body that does not decode, or a malformed rev
//	did_mismatch    the signed commit is for another DID than the event's repo/did
//	rev_mismatch    the signed commit's rev differs from the event's rev
//	future_rev      a rev more than 5 minutes ahead of the clock
//	no_prev_data    a #commit with since but without prevData
//	bad_inversion   ops that do not invert to prevData, or records missing from blocks
//	bad_signature   not signed by the DID's current key
//	bad_time        a time field that is not an atproto datetime
//
// A refused event is never appended as it is; the caller asks repair to
// bring the repo to the replica's signed head instead. #identity,
// #account and unknown types pass unchecked (they carry no repo data).
//
// Signatures are checked against the DID's current key through an
// identity.Directory (a cache in front of PLC in production). When the
// directory cannot answer, the event passes unchecked and is counted as
// identity_unavailable, as the relay does; on a bad signature the DID is
// purged from the cache and checked once more (a rotated key).
package verify
