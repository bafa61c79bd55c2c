package frame_test

import (
	"bytes"
	"testing"

	"github.com/pdsmux/pdsmux/internal/frame"
)

// FuzzParsePatch feeds arbitrary bytes to the frame reader and, where a
// frame parses with a seq, checks that patching the seq keeps every other
// byte and yields a frame that parses to the same routing fields.
func FuzzParsePatch(f *testing.F) {
	for _, name := range []string{"live-replica1.frames"} {
		for _, b := range loadFrames(f, name) {
			f.Add(b, uint64(1_764_000_000_000_000))
		}
	}
	f.Add(frame.ErrorFrame("FutureCursor", "x"), uint64(5))
	f.Add(frame.InfoFrame("OutdatedCursor", "x"), uint64(0))
	f.Add([]byte{0xa1, 0x62, 'o', 'p', 0x01, 0xa1, 0x63, 's', 'e', 'q', 0x07}, uint64(1<<40))
	f.Fuzz(func(t *testing.T, b []byte, seq uint64) {
		in, err := frame.Parse(b, 1<<20)
		if err != nil || !in.HasSeq {
			return
		}
		seq %= frame.MaxSeq + 1
		out := frame.Patch(b, &in, seq)
		got, err := frame.Parse(out, 0)
		if err != nil {
			t.Fatalf("patched frame does not parse: %v", err)
		}
		if uint64(got.Seq) != seq {
			t.Fatalf("seq %d, want %d", got.Seq, seq)
		}
		pre, suf := frame.SplitSeq(b, &in)
		gpre, gsuf := frame.SplitSeq(out, &got)
		if !bytes.Equal(pre, gpre) || !bytes.Equal(suf, gsuf) {
			t.Fatalf("bytes outside seq changed")
		}
		got.Seq, got.SeqStart, got.SeqEnd = in.Seq, in.SeqStart, in.SeqEnd
		if got != in {
			t.Fatalf("routing fields changed: %+v vs %+v", got, in)
		}
	})
}
