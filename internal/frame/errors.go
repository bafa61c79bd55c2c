package frame

import "errors"

// Sentinel errors returned by Parse. Callers count them by kind, so each
// bad-input class has its own sentinel; wrap with %w for context.
var (
	// ErrMalformed means the bytes are not well-formed DAG-CBOR (bad
	// header byte, indefinite length, non-canonical integer, truncated).
	ErrMalformed = errors.New("frame: malformed cbor")
	// ErrTrailing means bytes are left over after the body object.
	ErrTrailing = errors.New("frame: trailing bytes after body")
	// ErrShape means the CBOR is well-formed but not an event frame: the
	// header or body is not a map, a map key is not text, or a field we
	// route on has the wrong type.
	ErrShape = errors.New("frame: not an event frame")
	// ErrTooLarge means the frame is bigger than the caller's limit.
	ErrTooLarge = errors.New("frame: too large")
)
