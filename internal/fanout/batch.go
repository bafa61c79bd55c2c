package fanout

import "github.com/pdsmux/pdsmux/internal/cursor"

// DefaultBatchBytes bounds, roughly, the bytes of one read of entries from
// the log by the broadcaster, and by each replay.
const DefaultBatchBytes = 8 << 20

// SetMaxBatchBytes bounds the bytes of one read of new entries by the
// broadcaster and of each replay's reads (cursor.ReadSizer); n <= 0 keeps
// DefaultBatchBytes. Call it before Run.
func (b *Broadcaster) SetMaxBatchBytes(n int64) {
	if n > 0 {
		b.batchBytes = n
	}
}

// newSizer sizes one reader's reads (the broadcaster's, or one replay's)
// to the batch bytes, at most max entries.
func (b *Broadcaster) newSizer(max int64) cursor.ReadSizer {
	n := b.batchBytes
	if n <= 0 {
		n = DefaultBatchBytes
	}
	return cursor.ReadSizer{MaxBytes: n, Max: max}
}
