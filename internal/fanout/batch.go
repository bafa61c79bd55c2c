package fanout

import "github.com/pdsmux/pdsmux/internal/cursor"

// DefaultBatchBytes bounds, roughly, the bytes of one read of new entries
// from the log by the broadcaster.
const DefaultBatchBytes = 8 << 20

// batchSizer picks how many entries the broadcaster's next read asks
// Redis for (XREAD COUNT is a count, not bytes): as many as maxBytes holds
// at the size of the largest entry seen lately (the largest of a read,
// halved every read that has none as large, so a few reads of small
// entries between large ones do not open the count again), between 1 and
// tailCount. A read is then about maxBytes at most unless entries grow
// faster than that; what the log holds at all is bounded by its own byte
// budget (cursor.Config.MaxBytes).
type batchSizer struct {
	maxBytes int64 // 0: DefaultBatchBytes
	count    int64 // 0: nothing read yet
	largest  int64 // the largest entry seen lately, bytes
}

// SetMaxBatchBytes bounds the bytes of one read of new entries (see
// batchSizer); n <= 0 keeps DefaultBatchBytes. Call it before Run.
func (b *Broadcaster) SetMaxBatchBytes(n int64) { b.sizer.maxBytes = n }

// next is the COUNT of the next read.
func (z *batchSizer) next() int64 {
	if z.count == 0 {
		return 1 // the first read learns the entries' size
	}
	return z.count
}

// observe sizes the next read from this one's entries and reports the
// read's bytes.
func (z *batchSizer) observe(entries []cursor.Entry, m *Metrics) {
	if len(entries) == 0 {
		if z.count == 0 {
			z.count = 1
		}
		return
	}
	var total, largest int64
	for i := range entries {
		n := int64(len(entries[i].Frame))
		total += n
		largest = max(largest, n)
	}
	z.largest = max(largest, z.largest/2)
	limit := z.maxBytes
	if limit <= 0 {
		limit = DefaultBatchBytes
	}
	z.count = min(max(limit/max(z.largest, 1), 1), tailCount)
	m.setBatchBytes(total)
}
