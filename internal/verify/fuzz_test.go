package verify_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	comatproto "github.com/bluesky-social/indigo/api/atproto"
	"github.com/bluesky-social/indigo/atproto/identity"

	"github.com/pdsmux/pdsmux/internal/frame"
	"github.com/pdsmux/pdsmux/internal/verify"
)

// FuzzCheck feeds arbitrary bytes through the frame reader and, where
// they parse, the door: it must never panic, and every error must be a
// *verify.Rejection with a reason. The seeds are genuine signed frames
// whose key the verifier's directory holds, so mutations reach the CAR,
// MST, signature and inversion code.
func FuzzCheck(f *testing.F) {
	// indigo logs every legacy (prev-less) op it cannot invert through
	// slog's default logger; at fuzzing rates that is only noise.
	prev := slog.Default()
	slog.SetDefault(slog.New(slog.DiscardHandler))
	f.Cleanup(func() { slog.SetDefault(prev) })

	dir := identity.NewMockDirectory()
	a, created := newAccount(f, dir, "alice.test")
	first := apply(f, a, t0.Add(-40*time.Minute), posts("p", 3)...)
	edit := apply(f, a, t0.Add(-30*time.Minute), create("new"), update("p1", "edited"), del("p2"))
	a.OmitUpdatePrev = true
	legacy := apply(f, a, t0.Add(-20*time.Minute), update("p0", "legacy"))
	h := "alice.test"
	v := verify.New(dir, nil, clock)
	ctx := context.Background()

	for _, b := range [][]byte{
		encode(f, frame.TypeCommit, first),
		encode(f, frame.TypeCommit, edit),
		encode(f, frame.TypeCommit, legacy),
		encode(f, frame.TypeSync, created),
		encode(f, frame.TypeSync, syncOf(f, a, legacy)),
		encode(f, frame.TypeIdentity, &comatproto.SyncSubscribeRepos_Identity{Did: a.DID, Seq: 9, Time: first.Time, Handle: &h}),
	} {
		if err := check(f, v, b); err != nil {
			f.Fatalf("seed refused: %v", err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		in, err := frame.Parse(b, 4<<20)
		if err != nil {
			return
		}
		err = v.Check(ctx, b, &in)
		if err != nil && verify.ReasonOf(err) == "" {
			t.Fatalf("%s frame: error without a reason: %v", in.Kind, err)
		}
		if err == nil && (in.Kind == frame.KindCommit || in.Kind == frame.KindSync) && in.DID == "" {
			t.Fatalf("%s frame without a DID passed", in.Kind)
		}
		out, info, _, err := verify.CleanIdentity(b, &in)
		if err != nil {
			if verify.ReasonOf(err) != verify.ReasonBadIdentity {
				t.Fatalf("CleanIdentity: error without its reason: %v", err)
			}
			return
		}
		if in.Kind == frame.KindIdentity && in.HasSeq && (len(out) > verify.MaxIdentityBytes || info.Seq != in.Seq || info.DID != in.DID) {
			t.Fatalf("CleanIdentity passed %d bytes, seq %d (was %d), DID %q (was %q)", len(out), info.Seq, in.Seq, info.DID, in.DID)
		}
	})
}
