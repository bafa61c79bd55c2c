package tail

import (
	"bytes"
	"io"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// readMessage returns each message whole and as its own copy (the scratch
// buffer is reused for the next one), refuses one over the limit but reads
// past it so the next message is read from its start, and does not keep a
// scratch a large message grew.
func TestReadMessage_CopiesEachFrameAndSkipsOversized(t *testing.T) {
	var scratch bytes.Buffer
	first, tooBig, err := readMessage(strings.NewReader("first frame"), 64, &scratch)
	require.NoError(t, err)
	require.False(t, tooBig)
	second, _, err := readMessage(strings.NewReader("second"), 64, &scratch)
	require.NoError(t, err)
	require.Equal(t, "first frame", string(first), "a later read must not overwrite an earlier frame")
	require.Equal(t, "second", string(second))

	exact, tooBig, err := readMessage(strings.NewReader(strings.Repeat("x", 64)), 64, &scratch)
	require.NoError(t, err)
	require.False(t, tooBig)
	require.Len(t, exact, 64)

	long := strings.NewReader(strings.Repeat("y", 65))
	b, tooBig, err := readMessage(long, 64, &scratch)
	require.NoError(t, err)
	require.True(t, tooBig)
	require.Nil(t, b)
	rest, _ := io.ReadAll(long)
	require.Empty(t, rest, "the oversized message is read to its end")

	big := strings.Repeat("z", 2*scratchKeep)
	b, tooBig, err = readMessage(strings.NewReader(big), 4*scratchKeep, &scratch)
	require.NoError(t, err)
	require.False(t, tooBig)
	require.Equal(t, big, string(b))
	require.LessOrEqual(t, scratch.Cap(), scratchKeep, "a scratch grown by a large frame is let go")
}
