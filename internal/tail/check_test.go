package tail

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/pdsmux/pdsmux/internal/frame"
)

type panickingDoor struct{}

func (panickingDoor) Check(context.Context, []byte, *frame.Info) error {
	var b []byte
	_ = b[len(b)] // an index out of range: a runtime panic, as a decoder bug would raise
	return nil
}

// A door that panics refuses the event with errDoorPanic, and the panic is
// logged once at error level with the stack naming where it happened;
// the next panic within the minute is counted, not logged again.
func TestCheck_APanicIsRefusedAndLoggedWithItsStack(t *testing.T) {
	var out bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&out, nil))
	tl, err := New(Config{Name: "r1", URL: "ws://127.0.0.1:1", Door: panickingDoor{}}, nil, nil, log)
	require.NoError(t, err)

	it := &item{in: frame.Info{DID: "did:plc:abc", Rev: "3l", Seq: 7}}
	err = tl.check(context.Background(), it)
	require.True(t, errors.Is(err, errDoorPanic), "got %v", err)
	require.Contains(t, err.Error(), "index out of range")
	require.NotContains(t, err.Error(), "goroutine", "the returned error stays one line")

	var line map[string]any
	require.NoError(t, json.Unmarshal(out.Bytes(), &line), "one JSON log line: %s", out.String())
	require.Equal(t, "ERROR", line["level"])
	require.Equal(t, "did:plc:abc", line["did"])
	require.Contains(t, line["panic"], "index out of range")
	require.Contains(t, line["stack"], "tail.panickingDoor.Check")
	require.Contains(t, line["stack"], "tail.(*Tailer).check")

	out.Reset()
	require.True(t, errors.Is(tl.check(context.Background(), it), errDoorPanic))
	require.Empty(t, out.String(), "a second panic within the minute is not logged again")
}
