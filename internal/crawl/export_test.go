package crawl

import "time"

// SetTick changes how often the requester looks at its schedule (test seam).
func SetTick(r *Requester, d time.Duration) { r.tick = d }

// SetNow replaces the requester's clock (test seam).
func SetNow(r *Requester, now func() time.Time) { r.now = now }
