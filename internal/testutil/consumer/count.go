package consumer

import "strings"

// Record identifies one record as a user of the stream sees it: the repo
// DID and the record's path, split at its first '/' into collection and
// rkey (a path without '/' gives the whole path as Collection and an
// empty Rkey).
type Record struct {
	DID, Collection, Rkey string
}

// CountRecords counts, over evs, the create ops of #commit events by the
// record they create: the value is how many times the record was
// delivered as created (1 = exactly once, 2 = a duplicate; a missing key
// was never delivered). Update and delete ops, and events of other kinds,
// are not counted.
func CountRecords(evs []Event) map[Record]int {
	out := map[Record]int{}
	for _, e := range evs {
		if e.Kind != "commit" || e.Commit == nil {
			continue
		}
		for _, op := range e.Commit.Ops {
			if op == nil || op.Action != "create" {
				continue
			}
			coll, rkey, _ := strings.Cut(op.Path, "/")
			out[Record{DID: e.Commit.Repo, Collection: coll, Rkey: rkey}]++
		}
	}
	return out
}

// CountKinds counts evs by Kind (commit, sync, identity, account, info,
// error).
func CountKinds(evs []Event) map[string]int {
	out := map[string]int{}
	for _, e := range evs {
		out[e.Kind]++
	}
	return out
}

// Records counts the records received so far as #commit create ops (see
// CountRecords). Safe to call while the stream runs.
func (c *Consumer) Records() map[Record]int { return CountRecords(c.Events()) }

// Kinds counts the frames received so far by kind (see CountKinds). Safe
// to call while the stream runs.
func (c *Consumer) Kinds() map[string]int { return CountKinds(c.Events()) }

// Records counts the records received so far, across sessions, as
// #commit create ops (see CountRecords).
func (f *Follower) Records() map[Record]int { return CountRecords(f.Events()) }

// Kinds counts the frames received so far, across sessions, by kind.
func (f *Follower) Kinds() map[string]int { return CountKinds(f.Events()) }
