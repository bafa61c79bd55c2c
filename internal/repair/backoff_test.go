package repair_test

import (
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pdsmux/pdsmux/internal/cursor"
	"github.com/pdsmux/pdsmux/internal/repair"
)

// holdLog is a repair.Log that only knows its hold time.
type holdLog struct {
	repair.Log
	hold time.Duration
}

func (h holdLog) Config() cursor.Config { return cursor.Config{HoldTimeout: h.hold} }

// A repair that keeps failing is tried again after the hold time doubled
// per failure, at most MaxBackoff, and logged on the 1st, 2nd, 4th, 8th...
// failure only; another repo starts from the hold time again.
func TestBackOff_DoublesUpToMaxAndLogsSparsely(t *testing.T) {
	r := repair.New(repair.Config{}, holdLog{hold: time.Second}, nil, nil, nil, nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
	now := time.Unix(1_800_000_000, 0)
	var waits []time.Duration
	var loud []int
	for i := 1; i <= 12; i++ {
		d, l := repair.BackOffForTest(r, "did:plc:a", now)
		waits = append(waits, d)
		if l {
			loud = append(loud, i)
		}
	}
	require.Equal(t, []time.Duration{1 * time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 16 * time.Second,
		32 * time.Second, 64 * time.Second, 128 * time.Second, 256 * time.Second, repair.MaxBackoff, repair.MaxBackoff, repair.MaxBackoff}, waits)
	require.Equal(t, []int{1, 2, 4, 8}, loud)
	d, l := repair.BackOffForTest(r, "did:plc:b", now)
	require.Equal(t, time.Second, d)
	require.True(t, l)
}
