package pdsmuxd

import "time"

// PauseClaim makes the runtime's last successful claim d older, as if the
// process had been paused (SIGSTOP) or cut off from Redis that long.
func (rt *Runtime) PauseClaim(d time.Duration) {
	rt.claimMu.Lock()
	defer rt.claimMu.Unlock()
	rt.claimedAt = rt.claimedAt.Add(-d)
}
