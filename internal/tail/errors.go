package tail

import "errors"

var (
	// ErrFutureCursor means the replica refused our cursor as being ahead
	// of its stream: its database was reset or restored.
	ErrFutureCursor = errors.New("tail: replica says the cursor is in the future")
	// ErrStalled means no frame and no pong arrived within the read timeout.
	ErrStalled = errors.New("tail: replica went quiet")
	// errUpstreamError is an error frame other than FutureCursor.
	errUpstreamError = errors.New("tail: replica sent an error frame")
)
