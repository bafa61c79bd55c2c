package frame_test

import (
	"testing"

	"github.com/pdsmux/pdsmux/internal/frame"
)

func BenchmarkParse(b *testing.B) {
	frames := loadFrames(b, "live-replica1.frames")
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		if _, err := frame.Parse(frames[i%len(frames)], 0); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkPatch(b *testing.B) {
	frames := loadFrames(b, "live-replica1.frames")
	infos := make([]frame.Info, len(frames))
	for i, f := range frames {
		var err error
		if infos[i], err = frame.Parse(f, 0); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		j := i % len(frames)
		_ = frame.Patch(frames[j], &infos[j], 1_764_000_000_000_000+uint64(i))
	}
}
