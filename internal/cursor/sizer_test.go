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
// seen lately: 1 first, then by bytes, never above Max nor below 1, and
// a large entry keeps the count down for a few reads of small ones (the
// remembered largest halves per read).
func TestReadSizer_CountFollowsTheLargestEntry(t *testing.T) {
	z := ReadSizer{MaxBytes: 8 << 20, Max: 500}
	require.EqualValues(t, 1, z.Next(), "the first read learns the size")
	require.EqualValues(t, 3000, z.Observe(entries(1000, 2000)))
	require.EqualValues(t, 500, z.Next(), "small entries: capped at Max")
	z.Observe(entries(1000, 5_000_000))
	require.EqualValues(t, 1, z.Next(), "a 5 MB entry: one at a time")
	z.Observe(entries(1000))
	require.EqualValues(t, 3, z.Next(), "remembered at half: 2.5 MB")
	z.Observe(entries(1000))
	require.EqualValues(t, 6, z.Next(), "a quarter")
	z.Observe(nil)
	require.EqualValues(t, 6, z.Next(), "an empty read changes nothing")
	var fresh ReadSizer
	fresh.Observe(nil)
	require.EqualValues(t, 1, fresh.Next())
}
