package frame

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/ipfs/go-cid"
)

// Header op values.
const (
	OpMessage = 1
	OpError   = -1
)

// Message types pdsmux routes on. Any other `t` is Unknown and still
// passes through when it carries a seq.
const (
	TypeCommit   = "#commit"
	TypeSync     = "#sync"
	TypeIdentity = "#identity"
	TypeAccount  = "#account"
	TypeInfo     = "#info"
)

// MaxSeq is the largest seq the protocol allows (2^53, JavaScript-safe).
const MaxSeq = 1 << 53

// Kind classifies a frame for the merge.
type Kind uint8

const (
	KindUnknown  Kind = iota // a message type we do not know; kept if it has a seq
	KindCommit               // #commit
	KindSync                 // #sync
	KindIdentity             // #identity
	KindAccount              // #account
	KindInfo                 // #info: per-connection, never sequenced
	KindError                // op -1 error frame
)

func (k Kind) String() string {
	switch k {
	case KindCommit:
		return "commit"
	case KindSync:
		return "sync"
	case KindIdentity:
		return "identity"
	case KindAccount:
		return "account"
	case KindInfo:
		return "info"
	case KindError:
		return "error"
	default:
		return "unknown"
	}
}

// Info is what Parse learns about a frame. Strings are copies; the frame
// itself is not retained.
type Info struct {
	Op   int64
	Type string // header `t`, "" for error frames
	Kind Kind
	// BodyStart is the offset of the body map (the end of the header).
	BodyStart int

	// HasSeq is set when the body has a top-level unsigned `seq`.
	// SeqStart:SeqEnd is the byte range of its value within the frame.
	HasSeq           bool
	Seq              int64
	SeqStart, SeqEnd int

	DID      string // `repo` for #commit, `did` for the others
	Rev      string
	Since    string
	HasSince bool   // since present and not null
	Commit   string // #commit: `commit` CID; #sync: root CID of `blocks`
	Time     string

	// #account fields.
	Active    bool
	HasActive bool
	Status    string

	// Name and Message hold an #info frame's name/message or an error
	// frame's error/message.
	Name    string
	Message string
}

// Parse checks that b is one event frame (header map + body map, nothing
// after) and extracts the routing fields. maxSize bounds len(b); 0 means
// no bound. Errors wrap one of the package sentinels.
func Parse(b []byte, maxSize int) (Info, error) {
	var in Info
	if maxSize > 0 && len(b) > maxSize {
		return in, fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, len(b), maxSize)
	}
	s := scanner{b: b}
	if err := parseHeader(&s, &in); err != nil {
		return in, err
	}
	in.BodyStart = s.pos
	if err := parseBody(&s, &in); err != nil {
		return in, err
	}
	if s.remaining() != 0 {
		return in, fmt.Errorf("%w: %d bytes", ErrTrailing, s.remaining())
	}
	switch {
	case in.Op == OpError:
		in.Kind = KindError
	case in.Op != OpMessage:
		return in, fmt.Errorf("%w: header op %d", ErrShape, in.Op)
	case in.Type == TypeCommit:
		in.Kind = KindCommit
	case in.Type == TypeSync:
		in.Kind = KindSync
	case in.Type == TypeIdentity:
		in.Kind = KindIdentity
	case in.Type == TypeAccount:
		in.Kind = KindAccount
	case in.Type == TypeInfo:
		in.Kind = KindInfo
	default:
		in.Kind = KindUnknown
	}
	return in, nil
}

func parseHeader(s *scanner, in *Info) error {
	n, err := s.mapLen()
	if err != nil {
		return fmt.Errorf("header: %w", err)
	}
	sawOp := false
	for range n {
		key, err := s.text()
		if err != nil {
			return fmt.Errorf("header key: %w", err)
		}
		switch key {
		case "op":
			start := s.pos
			maj, arg, err := s.head()
			if err != nil {
				return fmt.Errorf("header op: %w", err)
			}
			switch {
			case maj == majUint && arg <= math.MaxInt32:
				in.Op = int64(arg)
			case maj == majNegInt && arg < math.MaxInt32:
				in.Op = -1 - int64(arg)
			default:
				return fmt.Errorf("%w: header op at byte %d is not a small integer", ErrShape, start)
			}
			sawOp = true
		case "t":
			if in.Type, err = s.text(); err != nil {
				return fmt.Errorf("header t: %w", err)
			}
		default:
			if err := s.skip(); err != nil {
				return fmt.Errorf("header %q: %w", key, err)
			}
		}
	}
	if !sawOp {
		return fmt.Errorf("%w: header has no op", ErrShape)
	}
	return nil
}

func parseBody(s *scanner, in *Info) error {
	n, err := s.mapLen()
	if err != nil {
		return fmt.Errorf("body: %w", err)
	}
	var blocks []byte
	var seen [24]string // keys so far; a body has about a dozen
	keys := seen[:0]
	for range n {
		key, err := s.text()
		if err != nil {
			return fmt.Errorf("body key: %w", err)
		}
		// DAG-CBOR maps have unique keys; a duplicate would let the bytes
		// say one thing to pdsmux and another to a subscriber's decoder.
		for _, k := range keys {
			if k == key {
				return fmt.Errorf("%w: duplicate body key %q", ErrShape, key)
			}
		}
		keys = append(keys, key)
		switch key {
		case "seq":
			start := s.pos
			maj, arg, err := s.head()
			if err != nil {
				return fmt.Errorf("body seq: %w", err)
			}
			if maj != majUint || arg > MaxSeq {
				return fmt.Errorf("%w: seq at byte %d is not an unsigned integer <= 2^53", ErrShape, start)
			}
			in.HasSeq, in.Seq, in.SeqStart, in.SeqEnd = true, int64(arg), start, s.pos
		case "repo", "did":
			// #commit names its account in `repo`, the other kinds in
			// `did`; the other key, if present, is an unknown field.
			known := in.Op == OpMessage && (in.Type == TypeCommit || in.Type == TypeSync || in.Type == TypeIdentity || in.Type == TypeAccount)
			if known && (key == "repo") != (in.Type == TypeCommit) {
				err = s.skip()
			} else {
				in.DID, err = s.text()
			}
		case "rev":
			in.Rev, err = s.text()
		case "since":
			if !s.isNull() {
				in.Since, err = s.text()
				in.HasSince = err == nil
			}
		case "time":
			in.Time, err = s.text()
		case "commit":
			var raw []byte
			if raw, err = s.link(); err == nil {
				in.Commit, err = cidString(raw)
			}
		case "blocks":
			blocks, err = s.str(majBytes)
		case "active":
			var arg uint64
			var maj byte
			start := s.pos
			if maj, arg, err = s.head(); err == nil {
				if maj != majSimple || (arg != simpleTrue && arg != simpleFalse) {
					err = fmt.Errorf("%w: active at byte %d is not a boolean", ErrShape, start)
				}
				in.Active, in.HasActive = arg == simpleTrue, true
			}
		case "status":
			if !s.isNull() {
				in.Status, err = s.text()
			}
		case "name", "error":
			in.Name, err = s.text()
		case "message":
			if !s.isNull() {
				in.Message, err = s.text()
			}
		default:
			err = s.skip()
		}
		if err != nil {
			return fmt.Errorf("body %q: %w", key, err)
		}
	}
	if in.Type == TypeSync && blocks != nil && in.Commit == "" {
		root, err := carRoot(blocks)
		if err != nil {
			return fmt.Errorf("body blocks: %w", err)
		}
		in.Commit = root
	}
	return nil
}

// carRoot returns the first root CID of a CARv1 header without reading
// any block.
func carRoot(car []byte) (string, error) {
	hlen, n := binary.Uvarint(car)
	if n <= 0 || hlen > uint64(len(car)-n) {
		return "", fmt.Errorf("%w: bad CAR header length", ErrShape)
	}
	s := scanner{b: car[n : n+int(hlen)]}
	entries, err := s.mapLen()
	if err != nil {
		return "", err
	}
	for range entries {
		key, err := s.text()
		if err != nil {
			return "", err
		}
		if key != "roots" {
			if err := s.skip(); err != nil {
				return "", err
			}
			continue
		}
		maj, count, err := s.head()
		if err != nil {
			return "", err
		}
		if maj != majArray || count == 0 {
			return "", fmt.Errorf("%w: CAR header has no roots", ErrShape)
		}
		raw, err := s.link()
		if err != nil {
			return "", err
		}
		return cidString(raw)
	}
	return "", fmt.Errorf("%w: CAR header has no roots", ErrShape)
}

func cidString(raw []byte) (string, error) {
	c, err := cid.Cast(raw)
	if err != nil {
		return "", fmt.Errorf("%w: bad CID: %v", ErrShape, err)
	}
	return c.String(), nil
}

// SplitSeq returns the bytes before and after the seq value. The slices
// alias b. It panics if in did not come from Parse(b) with HasSeq set.
func SplitSeq(b []byte, in *Info) (pre, suf []byte) {
	return b[:in.SeqStart], b[in.SeqEnd:]
}

// Patch returns a new frame equal to b except that the body's seq value
// is seq (I5). Every other byte is kept; the frame may grow or shrink by the
// difference in the integer's encoded width.
func Patch(b []byte, in *Info, seq uint64) []byte {
	pre, suf := SplitSeq(b, in)
	out := make([]byte, 0, len(pre)+9+len(suf))
	out = append(out, pre...)
	out = AppendUint(out, seq)
	return append(out, suf...)
}
