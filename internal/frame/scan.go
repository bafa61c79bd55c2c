package frame

import (
	"encoding/binary"
	"fmt"
	"math"
)

// CBOR major types.
const (
	majUint   = 0
	majNegInt = 1
	majBytes  = 2
	majText   = 3
	majArray  = 4
	majMap    = 5
	majTag    = 6
	majSimple = 7
)

// Simple values allowed by DAG-CBOR.
const (
	simpleFalse = 20
	simpleTrue  = 21
	simpleNull  = 22
)

// cidTag is the only CBOR tag DAG-CBOR allows: a CID link.
const cidTag = 42

// scanner walks DAG-CBOR bytes in place. It never recurses and never
// allocates for skipped items, so hostile input costs at most one pass
// over its own bytes.
type scanner struct {
	b   []byte
	pos int
}

func (s *scanner) remaining() int { return len(s.b) - s.pos }

// head reads one item head and returns its major type and argument. For
// major type 7 the argument is the simple value (20-22) or, for a float64,
// its bit pattern. Everything DAG-CBOR forbids is ErrMalformed:
// indefinite lengths, non-minimal integers, half and single floats,
// simple values other than false/true/null, tags other than 42.
func (s *scanner) head() (maj byte, arg uint64, err error) {
	if s.pos >= len(s.b) {
		return 0, 0, fmt.Errorf("%w: unexpected end at byte %d", ErrMalformed, s.pos)
	}
	first := s.b[s.pos]
	s.pos++
	maj = first >> 5
	low := first & 0x1f
	var n int
	switch {
	case low < 24:
		arg = uint64(low)
	case low == 24:
		n = 1
	case low == 25:
		n = 2
	case low == 26:
		n = 4
	case low == 27:
		n = 8
	default:
		return 0, 0, fmt.Errorf("%w: reserved or indefinite length 0x%02x at byte %d", ErrMalformed, first, s.pos-1)
	}
	if n > 0 {
		if s.remaining() < n {
			return 0, 0, fmt.Errorf("%w: truncated item head at byte %d", ErrMalformed, s.pos-1)
		}
		raw := s.b[s.pos : s.pos+n]
		s.pos += n
		switch n {
		case 1:
			arg = uint64(raw[0])
		case 2:
			arg = uint64(binary.BigEndian.Uint16(raw))
		case 4:
			arg = uint64(binary.BigEndian.Uint32(raw))
		case 8:
			arg = binary.BigEndian.Uint64(raw)
		}
	}
	if maj == majSimple {
		switch {
		case n == 8: // float64: any bit pattern is fine
		case n == 0 && (arg == simpleFalse || arg == simpleTrue || arg == simpleNull):
		default:
			return 0, 0, fmt.Errorf("%w: simple value or float width not allowed in DAG-CBOR (0x%02x)", ErrMalformed, first)
		}
		return maj, arg, nil
	}
	if n > 0 && !minimal(n, arg) {
		return 0, 0, fmt.Errorf("%w: non-minimal integer encoding at byte %d", ErrMalformed, s.pos-n-1)
	}
	if maj == majTag && arg != cidTag {
		return 0, 0, fmt.Errorf("%w: tag %d not allowed in DAG-CBOR", ErrMalformed, arg)
	}
	return maj, arg, nil
}

func minimal(n int, v uint64) bool {
	switch n {
	case 1:
		return v >= 24
	case 2:
		return v > math.MaxUint8
	case 4:
		return v > math.MaxUint16
	default:
		return v > math.MaxUint32
	}
}

// skip moves past exactly one complete item, however deeply nested.
func (s *scanner) skip() error {
	for todo := uint64(1); todo > 0; todo-- {
		maj, arg, err := s.head()
		if err != nil {
			return err
		}
		switch maj {
		case majBytes, majText:
			if arg > uint64(s.remaining()) {
				return fmt.Errorf("%w: string of %d bytes runs past the end", ErrMalformed, arg)
			}
			s.pos += int(arg)
		case majArray, majMap:
			// Every item is at least one byte, so a count above what is
			// left can only be a lie; refusing it also keeps todo small.
			if arg > uint64(s.remaining()) {
				return fmt.Errorf("%w: container of %d items runs past the end", ErrMalformed, arg)
			}
			if maj == majMap {
				arg *= 2
			}
			todo += arg
		case majTag:
			todo++
		}
	}
	return nil
}

// text reads a text string item.
func (s *scanner) text() (string, error) {
	b, err := s.str(majText)
	return string(b), err
}

// str reads a byte or text string item of the given major type and
// returns a slice into the input.
func (s *scanner) str(want byte) ([]byte, error) {
	start := s.pos
	maj, arg, err := s.head()
	if err != nil {
		return nil, err
	}
	if maj != want {
		return nil, fmt.Errorf("%w: expected major type %d at byte %d, found %d", ErrShape, want, start, maj)
	}
	if arg > uint64(s.remaining()) {
		return nil, fmt.Errorf("%w: string of %d bytes runs past the end", ErrMalformed, arg)
	}
	out := s.b[s.pos : s.pos+int(arg)]
	s.pos += int(arg)
	return out, nil
}

// isNull reports whether the next item is null, consuming it if so.
func (s *scanner) isNull() bool {
	if s.pos < len(s.b) && s.b[s.pos] == 0xf6 {
		s.pos++
		return true
	}
	return false
}

// mapLen reads a map head.
func (s *scanner) mapLen() (int, error) {
	start := s.pos
	maj, arg, err := s.head()
	if err != nil {
		return 0, err
	}
	if maj != majMap {
		return 0, fmt.Errorf("%w: expected a map at byte %d, found major type %d", ErrShape, start, maj)
	}
	if arg > uint64(s.remaining()) {
		return 0, fmt.Errorf("%w: map of %d entries runs past the end", ErrMalformed, arg)
	}
	return int(arg), nil
}

// link reads a CID link (tag 42 over a byte string with a 0x00 prefix) and
// returns the raw CID bytes without the prefix.
func (s *scanner) link() ([]byte, error) {
	start := s.pos
	maj, arg, err := s.head()
	if err != nil {
		return nil, err
	}
	if maj != majTag || arg != cidTag {
		return nil, fmt.Errorf("%w: expected a CID link at byte %d", ErrShape, start)
	}
	b, err := s.str(majBytes)
	if err != nil {
		return nil, err
	}
	if len(b) < 2 || b[0] != 0 {
		return nil, fmt.Errorf("%w: CID link without multibase prefix at byte %d", ErrShape, start)
	}
	return b[1:], nil
}

// AppendUint appends v as a minimal DAG-CBOR unsigned integer.
func AppendUint(dst []byte, v uint64) []byte {
	switch {
	case v < 24:
		return append(dst, byte(v))
	case v <= math.MaxUint8:
		return append(dst, 0x18, byte(v))
	case v <= math.MaxUint16:
		return binary.BigEndian.AppendUint16(append(dst, 0x19), uint16(v))
	case v <= math.MaxUint32:
		return binary.BigEndian.AppendUint32(append(dst, 0x1a), uint32(v))
	default:
		return binary.BigEndian.AppendUint64(append(dst, 0x1b), v)
	}
}
