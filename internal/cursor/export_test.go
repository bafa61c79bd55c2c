package cursor

import (
	"context"
	"time"
)

// SetClock replaces the log's clock (test seam).
func SetClock(l *Log, now func() time.Time) { l.now = now }

var EntryCost = entryCost

// TailSharers is how many Tails joined the read in flight from after (0
// if none is).
func TailSharers(l *Log, after int64) int {
	l.tails.mu.Lock()
	defer l.tails.mu.Unlock()
	if c := l.tails.flight[after]; c != nil {
		return c.sharers
	}
	return 0
}

// TrimCall runs one call of the byte trim as trimBytes does (next: the
// bytes left to drop, the previous call's entry size and trim mark; nil
// for the first).
func TrimCall(ctx context.Context, l *Log, keepAbove int64, next []int64) ([]int64, error) {
	return l.trimCall(ctx, keepAbove, 0, next)
}

// TrimStep is how many bytes one trim call drops.
func TrimStep(l *Log) int64 { return l.cfg.callBytes() }
