package cursor

// ReadSizer picks the COUNT of a reader's next read of the log (XREAD
// and XRANGE take a count, not bytes): as many entries as MaxBytes holds
// at the size of the largest entry seen lately, between 1 and Max. The
// largest entry seen is remembered at full size until Max entries have
// been read after it with none as large, then at half for the next Max
// entries, and so on: large entries that come every few hundred entries
// (a replica sending large frames beside others sending small ones) keep
// the count down, so a read does not meet several of them at once. A
// read is then about MaxBytes at most unless large entries come faster
// than that, in Redis's reply (which Redis holds until it is sent, within
// the log's byte budget) as in the reader's memory. The zero value is not
// ready: set MaxBytes and Max.
type ReadSizer struct {
	MaxBytes int64 // bytes one read may hold, about
	Max      int64 // the count never goes above this
	count    int64 // 0: nothing read yet
	largest  int64 // the largest entry seen lately, bytes
	since    int64 // entries read since largest was last seen or halved
}

// Next is the COUNT of the next read: 1 until a read has shown the
// entries' size.
func (z *ReadSizer) Next() int64 {
	if z.count == 0 {
		return 1
	}
	return z.count
}

// Observe sizes the next read from this one's entries and returns the
// read's frame bytes.
func (z *ReadSizer) Observe(entries []Entry) int64 {
	if len(entries) == 0 {
		if z.count == 0 {
			z.count = 1
		}
		return 0
	}
	var total, largest int64
	for i := range entries {
		n := int64(len(entries[i].Frame))
		total += n
		largest = max(largest, n)
	}
	window := max(z.Max, 1)
	if largest >= z.largest {
		z.largest, z.since = largest, 0
	} else {
		z.since += int64(len(entries))
		for z.since >= window && z.largest > largest {
			z.largest, z.since = max(z.largest/2, largest), z.since-window
		}
	}
	z.count = min(max(z.MaxBytes/max(z.largest, 1), 1), window)
	return total
}
