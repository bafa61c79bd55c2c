package pdsmuxd

import (
	"fmt"

	"github.com/dustin/go-humanize"
)

// DefaultMemoryBudget suits a Raspberry Pi with 1 GB that also runs
// Redis (docs/configuration.md, Sizing).
const DefaultMemoryBudget = "512MiB"

// minMemoryBudget is the least budget the derived caps work with.
const minMemoryBudget = 64 << 20

// minCapBytes is the least any single byte cap may be.
const minCapBytes = 1 << 20

// memory is the validated memory budget and the byte caps derived from it
// (or set one by one). What each bounds: docs/configuration.md, Sizing.
type memory struct {
	Budget int64 // pdsmux and its Redis log together
	// GoLimit is the Go heap's soft limit (GOMEMLIMIT): half the budget.
	GoLimit int64
	// LogBytes is the log's budget in Redis, the stream and what is in
	// flight to and from it (cursor/budget.go): a quarter. The last
	// quarter is Redis's other state and overhead, and Go's memory
	// outside its heap.
	LogBytes int64
	// ReplicaQueueBytes: a 32nd, per replica.
	ReplicaQueueBytes int64
	// SubscriberQueueBytes: a 16th, shared by all subscribers (they queue
	// the same frames).
	SubscriberQueueBytes int64
	// BatchBytes bounds one broadcaster read: a quarter of the subscriber
	// queue cap.
	BatchBytes int64
	// ArchiveBytes bounds what the archive has read and not yet written:
	// an eighth of the log's budget, since Redis keeps those entries too
	// (the byte budget does not drop them): with what the live stream has
	// not read (a sixteenth), they fit in the half the stream is kept to.
	ArchiveBytes int64
}

// parseBytes reads a size such as 512MiB, 1GiB or 300MB (KiB/MiB/GiB are
// powers of 1024, KB/MB/GB of 1000; a bare number is bytes).
func parseBytes(setting, v string, least int64) (int64, error) {
	n, err := humanize.ParseBytes(v)
	if err != nil {
		return 0, bad(setting, v, "want a size such as 512MiB, 2GiB or 300MB")
	}
	if n < uint64(least) {
		return 0, bad(setting, v, "must be at least %s", humanize.IBytes(uint64(least)))
	}
	if n > 1<<50 {
		return 0, bad(setting, v, "must be at most 1 PiB")
	}
	return int64(n), nil
}

// validateMemory derives the byte caps from MemoryBudget, then takes the
// ones set one by one.
func (c Config) validateMemory() (memory, error) {
	budget := c.MemoryBudget
	if budget == "" {
		budget = DefaultMemoryBudget
	}
	b, err := parseBytes("memory-budget", budget, minMemoryBudget)
	if err != nil {
		return memory{}, err
	}
	m := memory{Budget: b, GoLimit: b / 2, LogBytes: b / 4, ReplicaQueueBytes: b / 32, SubscriberQueueBytes: b / 16}
	for _, o := range []struct {
		setting, v string
		to         *int64
	}{
		{"log-max-bytes", c.LogMaxBytes, &m.LogBytes},
		{"replica-queue-bytes", c.ReplicaQueueBytes, &m.ReplicaQueueBytes},
		{"subscriber-queue-bytes", c.SubscriberQueueBytes, &m.SubscriberQueueBytes},
	} {
		if o.v == "" {
			continue
		}
		if *o.to, err = parseBytes(o.setting, o.v, minCapBytes); err != nil {
			return memory{}, err
		}
	}
	m.BatchBytes = m.SubscriberQueueBytes / 4
	m.ArchiveBytes = max(m.LogBytes/8, minCapBytes)
	return m, nil
}

// String is the budget as logged at start.
func (m memory) String() string {
	return fmt.Sprintf("budget %s: Go heap limit %s, Redis log %s, %s per replica queue, %s subscriber queues, %s archive buffer",
		humanize.IBytes(uint64(m.Budget)), humanize.IBytes(uint64(m.GoLimit)), humanize.IBytes(uint64(m.LogBytes)),
		humanize.IBytes(uint64(m.ReplicaQueueBytes)), humanize.IBytes(uint64(m.SubscriberQueueBytes)), humanize.IBytes(uint64(m.ArchiveBytes)))
}
