package verify_test

import (
	"context"
	"testing"
	"time"

	"github.com/bluesky-social/indigo/atproto/identity"

	"github.com/pdsmux/pdsmux/internal/frame"
	"github.com/pdsmux/pdsmux/internal/verify"
)

// BenchmarkCheckCommit is the door's cost for a typical event: a #commit
// creating one post in a repo of 50 records, with prevData (so the MST
// inversion runs) and the signature checked (a k256 verify against a key
// the directory already holds). Frame parsing is not included.
func BenchmarkCheckCommit(b *testing.B) {
	dir := identity.NewMockDirectory()
	a, _ := newAccount(b, dir, "alice.test")
	apply(b, a, t0.Add(-40*time.Minute), posts("p", 50)...)
	fr := encode(b, frame.TypeCommit, apply(b, a, t0.Add(-30*time.Minute), create("new")))
	in, err := frame.Parse(fr, 0)
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	// one verifier, as in the daemon (its DID and key caches warm), each
	// time the first sight of the event: without a seq, no copy of it is
	// remembered (a copy already checked is a hash:
	// BenchmarkCheckCommitCopy). Left out: that hash of the frame, about
	// 2 µs, which the daemon also takes on a first sight
	v := verify.New(dir, nil, clock)
	in.HasSeq = false
	b.SetBytes(int64(len(fr)))
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if err := v.Check(ctx, fr, &in); err != nil {
			b.Fatal(err)
		}
	}
	// the share of one core the door takes at the users' scale
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)*2000/1e9, "cores@2000ev/s")
}

// BenchmarkCheckCommitCopy is the door's cost for a copy of an event it
// already passed (replicas replaying each other's events): a hash.
func BenchmarkCheckCommitCopy(b *testing.B) {
	dir := identity.NewMockDirectory()
	a, _ := newAccount(b, dir, "alice.test")
	fr := encode(b, frame.TypeCommit, apply(b, a, t0.Add(-30*time.Minute), create("new")))
	in, err := frame.Parse(fr, 0)
	if err != nil {
		b.Fatal(err)
	}
	v := verify.New(dir, nil, clock)
	ctx := context.Background()
	if err := v.Check(ctx, fr, &in); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(fr)))
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if err := v.Check(ctx, fr, &in); err != nil {
			b.Fatal(err)
		}
	}
}
