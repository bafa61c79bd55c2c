package cursor

// ReadSizer picks the COUNT of a reader's next read of the log (XREAD
// and XRANGE take a count, not bytes): as many entries as MaxBytes holds
// at the size of the largest entry seen lately (the largest of a read,
// halved every read that has none as large, so a few reads of small
// entries between large ones do not open the count again), between 1 and
// Max. A read is then about MaxBytes at most unless entries grow faster
// than that, in Redis's reply as in the reader's memory. The zero value
// is not ready: set MaxBytes and Max.
type ReadSizer struct {
	MaxBytes int64 // bytes one read may hold, about
	Max      int64 // the count never goes above this
	count    int64 // 0: nothing read yet
	largest  int64 // the largest entry seen lately, bytes
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
	z.largest = max(largest, z.largest/2)
	z.count = min(max(z.MaxBytes/max(z.largest, 1), 1), max(z.Max, 1))
	return total
}
