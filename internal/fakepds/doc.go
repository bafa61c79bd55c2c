// Package fakepds is a test replica: an in-process PDS that writes real,
// signed atproto repos with indigo (real keys, MST, CAR slices, correct
// rev/since/prevData) and serves them the way the replicas pdsmux fronts
// do, including their faults.
//
// Several Replicas share one Store (one database). The Store's Mode picks
// the behaviour being modelled:
//
//   - ModeCocoon: each replica seeds an in-memory seq counter from the
//     table's max seq (or unix seconds) at start and never re-reads it;
//     an event whose seq is already taken is dropped while the write
//     itself succeeds. Live streams carry only the replica's own events;
//     cursor replay reads the shared table. This is stock Cocoon.
//   - ModeOwn: one seq counter; live streams carry own events only.
//   - ModeShared: one seq counter; every live stream carries every event
//     (the reference PDS with two processes on one data directory).
//
// Account creation emits what Cocoon's createAccount emits (#identity,
// then #sync; no #account), each through the sequencer, so in ModeCocoon
// a new account can reach no stream at all.
//
// It also serves the sync endpoints repair needs (listRepos,
// getLatestCommit, getBlocks, getRepo without since, getRepoStatus) and a
// did:plc directory for the accounts (DID documents and audit logs whose
// createdAt is Account.Created). Store.Now (or SetNow) moves the store
// clock, e.g. to make accounts and history "an hour ago". It is test and
// benchmark support: pdsmux itself never imports it.
package fakepds
