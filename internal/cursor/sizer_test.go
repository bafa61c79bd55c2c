package cursor

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func entries(sizes ...int) []Entry {
	out := make([]Entry, len(sizes))
	for i, n := range sizes {
		out[i].Frame = make([]byte, n)
	}
	return out
}

// A read asks for as many entries as MaxBytes holds at the largest size
// seen lately: 1 first, then by bytes, never above Max nor below 1. A
// large entry keeps the count down until Max entries were read after it
// with none as large (then it is remembered at half for the next Max),
// so large entries a few hundred entries apart never meet in one read.
func TestReadSizer_CountFollowsTheLargestEntry(t *testing.T) {
	z := ReadSizer{MaxBytes: 8 << 20, Max: 500}
	require.EqualValues(t, 1, z.Next(), "the first read learns the size")
	require.EqualValues(t, 3000, z.Observe(entries(1000, 2000)))
	require.EqualValues(t, 500, z.Next(), "small entries: capped at Max")
	z.Observe(entries(1000, 5_000_000))
	require.EqualValues(t, 1, z.Next(), "a 5 MB entry: one at a time")
	for range 499 {
		z.Observe(entries(1000))
		require.EqualValues(t, 1, z.Next(), "fewer than Max small entries since the 5 MB one")
	}
	z.Observe(entries(1000))
	require.EqualValues(t, 3, z.Next(), "Max small entries since: remembered at half, 2.5 MB")
	z.Observe(entries(make([]int, 499)...))
	require.EqualValues(t, 3, z.Next())
	z.Observe(entries(1000))
	require.EqualValues(t, 6, z.Next(), "a quarter")
	z.Observe(nil)
	require.EqualValues(t, 6, z.Next(), "an empty read changes nothing")
	z.Observe(entries(2_000_000))
	require.EqualValues(t, 4, z.Next(), "a larger one than remembered: by it, counted afresh")
	z.Observe(entries(make([]int, 5000)...))
	require.EqualValues(t, 500, z.Next(), "many Max of small entries: back to Max, never below their size")
	var fresh ReadSizer
	fresh.Observe(nil)
	require.EqualValues(t, 1, fresh.Next())
}

// A replica sending 4.9 MB frames beside one sending small ones: once the
// reader has met one, every read holds at most one large frame (about
// MaxBytes) whatever the other entries between them. (The first read of
// all may meet several: nothing told it their size yet.)
func TestReadSizer_LargeFramesAmongSmallOnesComeOneAtATime(t *testing.T) {
	const large = 4_900_000
	z := ReadSizer{MaxBytes: 8 << 20, Max: 1000}
	// the log: one large frame after every 40 small ones, then runs of 5
	// large frames in a row (a replica's calls appended back to back)
	z.Observe(entries(large))
	var log []int
	for i := range 2000 {
		log = append(log, 1500)
		if i%40 == 39 {
			log = append(log, large)
		}
		if i%400 == 399 {
			log = append(log, large, large, large, large, large)
		}
	}
	var most int64
	for len(log) > 0 {
		n := min(int(z.Next()), len(log))
		bytes := z.Observe(entries(log[:n]...))
		most = max(most, bytes)
		log = log[n:]
	}
	require.LessOrEqual(t, most, int64(large+8<<20), "one large frame and MaxBytes of others at most")
}
