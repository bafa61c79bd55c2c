package fanout

import "errors"

var (
	// ErrTooSlow ends a subscriber whose queue overflowed.
	ErrTooSlow = errors.New("fanout: subscriber too slow")
	// errClosed ends a subscriber when the server shuts down.
	errClosed = errors.New("fanout: server shutting down")
	// errStalled ends a subscriber a write to which timed out: it took
	// nothing off its socket for its liveness window (subscriber.deadline).
	errStalled = errors.New("fanout: subscriber stopped reading")
	// errStopped wraps why a wait for a read ended the session before the
	// read returned (see answering).
	errStopped = errors.New("fanout: session ended during a read")
	// errRead marks a failed read of the log or the archive that a
	// session needed (not a write to the peer, nor the session ending
	// during the read).
	errRead = errors.New("fanout: read failed")
)
