package cursor

import "time"

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
