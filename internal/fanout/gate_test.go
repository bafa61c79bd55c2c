package fanout_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pdsmux/pdsmux/internal/cursor"
	"github.com/pdsmux/pdsmux/internal/fanout"
)

// watermark is a gate moved by hand (pdsmuxd's is the archive's read
// position).
type watermark struct {
	mu    sync.Mutex
	w     int64
	moved chan struct{}
}

func newWatermark() *watermark { return &watermark{moved: make(chan struct{})} }

func (g *watermark) set(w int64) {
	g.mu.Lock()
	g.w = w
	close(g.moved)
	g.moved = make(chan struct{})
	g.mu.Unlock()
}

func (g *watermark) Recall(context.Context, int64, int64, int) ([]cursor.Entry, error) {
	return nil, nil
}

func (g *watermark) Epoch() int64 { return 0 }

func (g *watermark) Await(ctx context.Context, seq int64) int64 {
	for {
		g.mu.Lock()
		w, moved := g.w, g.moved
		g.mu.Unlock()
		if w >= seq {
			return w
		}
		select {
		case <-ctx.Done():
			return w
		case <-moved:
		}
	}
}

// Nothing past the gate reaches a subscriber, live or replaying from
// Redis; each gets everything once the gate moves, exactly once.
func TestGate_NothingIsSentPastTheWatermark(t *testing.T) {
	g := newWatermark()
	g.set(1 << 62) // open while the stack appends its accounts
	s := newGatedStack(t, fanout.Config{}, g)
	base := s.base
	g.set(base[len(base)-1])

	live := dial(t, s, -1)
	waitSubscribers(t, s, 1)
	more := s.append(30)
	g.set(more[9])
	require.NoError(t, live.WaitLen(10, 10*time.Second))
	replay := dial(t, s, base[len(base)-1])
	require.NoError(t, replay.WaitLen(10, 10*time.Second))
	time.Sleep(300 * time.Millisecond) // anything past the gate would arrive now
	require.Equal(t, more[:10], live.Seqs(), "live stops at the gate")
	require.Equal(t, more[:10], replay.Seqs(), "replay from Redis stops at the gate")

	g.set(more[len(more)-1])
	require.NoError(t, live.WaitLen(30, 10*time.Second))
	require.NoError(t, replay.WaitLen(30, 10*time.Second))
	time.Sleep(100 * time.Millisecond)
	require.Equal(t, more, live.Seqs())
	require.Equal(t, more, replay.Seqs())
}
