package blocks_test

import (
	"bytes"
	"testing"

	"github.com/ipfs/go-cid"
	"github.com/stretchr/testify/require"

	"github.com/pdsmux/pdsmux/internal/blocks"
)

func TestCAR_RoundTripAndBadBlocks(t *testing.T) {
	s := blocks.NewSet()
	a, err := s.AddRaw([]byte{0xa1, 0x61, 'a', 0x01})
	require.NoError(t, err)
	b, err := s.AddRaw([]byte{0xa1, 0x61, 'b', 0x02})
	require.NoError(t, err)
	missing, err := blocks.CBORCID([]byte{0xa0})
	require.NoError(t, err)
	s.Add(missing, nil) // how Cocoon answers getBlocks for a block it lacks

	var buf bytes.Buffer
	require.NoError(t, blocks.WriteCAR(&buf, a, s))
	root, got, bad, err := blocks.ReadCAR(&buf)
	require.NoError(t, err)
	require.Equal(t, a, root)
	require.Equal(t, []cid.Cid{a, b}, got.CIDs())
	require.Equal(t, []cid.Cid{missing}, bad)

	buf.Reset()
	require.NoError(t, blocks.WriteCAR(&buf, cid.Undef, got))
	root, got2, _, err := blocks.ReadCAR(&buf)
	require.NoError(t, err)
	require.False(t, root.Defined())
	require.Equal(t, 2, got2.Len())
}
