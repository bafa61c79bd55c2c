package pdsmuxd

import "time"

// PauseClaim makes the runtime's last successful claim d older and fails
// its claims until ResumeClaim, as if the process had been paused
// (SIGSTOP) or cut off from Redis that long.
func (rt *Runtime) PauseClaim(d time.Duration) {
	rt.claimMu.Lock()
	defer rt.claimMu.Unlock()
	rt.claimedAt = rt.claimedAt.Add(-d)
	rt.claimPaused = true
}

// ResumeClaim ends PauseClaim.
func (rt *Runtime) ResumeClaim() {
	rt.claimMu.Lock()
	defer rt.claimMu.Unlock()
	rt.claimPaused = false
}
