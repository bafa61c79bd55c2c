package frame

import (
	"bytes"
	"fmt"
	"io"
)

// Frames pdsmux writes itself: error frames and #info frames. They are
// tiny, fixed-shape maps, so they are assembled directly; keys are in
// DAG-CBOR order (shorter first, then bytewise).

// Error names used by subscribeRepos.
const (
	ErrNameFutureCursor    = "FutureCursor"
	ErrNameConsumerTooSlow = "ConsumerTooSlow"
	InfoOutdatedCursor     = "OutdatedCursor"
)

// ErrorFrame builds an op -1 frame with body {error, message}.
func ErrorFrame(name, message string) []byte {
	b := make([]byte, 0, 32+len(name)+len(message))
	b = append(b, 0xa1) // header: map of 1
	b = AppendText(b, "op")
	b = append(b, 0x20) // -1
	b = append(b, 0xa2)
	b = AppendText(b, "error")
	b = AppendText(b, name)
	b = AppendText(b, "message")
	return AppendText(b, message)
}

// InfoFrame builds an #info frame with body {name, message}.
func InfoFrame(name, message string) []byte {
	b := make([]byte, 0, 40+len(name)+len(message))
	b = append(b, 0xa2) // header: map of 2
	b = AppendText(b, "t")
	b = AppendText(b, TypeInfo)
	b = AppendText(b, "op")
	b = append(b, 0x01)
	b = append(b, 0xa2)
	b = AppendText(b, "name")
	b = AppendText(b, name)
	b = AppendText(b, "message")
	return AppendText(b, message)
}

// AppendText appends s as a minimal DAG-CBOR text string.
func AppendText(b []byte, s string) []byte {
	start := len(b)
	b = AppendUint(b, uint64(len(s)))
	b[start] |= majText << 5
	return append(b, s...)
}

// Marshaler is a CBOR body (indigo's generated event types implement it).
type Marshaler interface {
	MarshalCBOR(w io.Writer) error
}

// Encode builds a message frame: header {t, op: 1} followed by body.
func Encode(t string, body Marshaler) ([]byte, error) {
	var buf bytes.Buffer
	b := make([]byte, 0, 16+len(t))
	b = append(b, 0xa2)
	b = AppendText(b, "t")
	b = AppendText(b, t)
	b = AppendText(b, "op")
	b = append(b, 0x01)
	buf.Write(b)
	if err := body.MarshalCBOR(&buf); err != nil {
		return nil, fmt.Errorf("frame: encode %s body: %w", t, err)
	}
	return buf.Bytes(), nil
}
