package cursor

import "time"

// SetClock replaces the log's clock (test seam).
func SetClock(l *Log, now func() time.Time) { l.now = now }

var EntryCost = entryCost
