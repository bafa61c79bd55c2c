package cursor

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"

	"github.com/bluesky-social/indigo/atproto/syntax"

	"github.com/pdsmux/pdsmux/internal/frame"
)

// Event is one upstream frame ready to be offered to the log. Pre and Suf
// are the frame's bytes before and after its seq value; the script joins
// them around the new seq.
type Event struct {
	Kind   frame.Kind
	DID    string
	Rev    string // #commit, #sync
	Since  string // #commit; "" means null
	Commit string // commit CID (#commit) or CAR root (#sync)
	Status string // #account: "active" or the status
	// Hash identifies #identity, #account, #sync and unknown events by
	// content (every byte but seq), for dedup across replicas.
	Hash        string
	Pre, Suf    []byte
	UpstreamSeq int64 // the replica's seq; -1 for events pdsmux made
	// Refused is set (to the reason) for a #commit or #sync the door
	// refused: it is not appended, and its repo is flagged for repair.
	Refused string
}

// NewEvent checks that a parsed frame can be sequenced and builds its
// Event. Frames without a seq, #info and error frames are refused with
// ErrBadEvent, as are #commit/#sync frames without a valid DID, TID rev or
// commit CID.
func NewEvent(b []byte, in *frame.Info) (Event, error) {
	switch in.Kind {
	case frame.KindInfo, frame.KindError:
		return Event{}, fmt.Errorf("%w: %s frames are not sequenced", ErrBadEvent, in.Kind)
	}
	if !in.HasSeq {
		return Event{}, fmt.Errorf("%w: %s frame has no seq", ErrBadEvent, in.Kind)
	}
	pre, suf := frame.SplitSeq(b, in)
	ev := Event{Kind: in.Kind, DID: in.DID, Pre: pre, Suf: suf, UpstreamSeq: in.Seq}
	switch in.Kind {
	case frame.KindCommit, frame.KindSync:
		if _, err := syntax.ParseDID(in.DID); err != nil {
			return Event{}, fmt.Errorf("%w: %s did: %v", ErrBadEvent, in.Kind, err)
		}
		if _, err := syntax.ParseTID(in.Rev); err != nil {
			return Event{}, fmt.Errorf("%w: %s rev: %v", ErrBadEvent, in.Kind, err)
		}
		if in.HasSince {
			if _, err := syntax.ParseTID(in.Since); err != nil {
				return Event{}, fmt.Errorf("%w: commit since: %v", ErrBadEvent, err)
			}
		}
		if in.Commit == "" {
			return Event{}, fmt.Errorf("%w: %s has no commit CID", ErrBadEvent, in.Kind)
		}
		ev.Rev, ev.Since, ev.Commit = in.Rev, in.Since, in.Commit
		if in.Kind == frame.KindSync {
			// a replayed copy of an older #sync is told from a rollback by
			// its content
			ev.Hash = contentHash(pre, suf)
		}
	case frame.KindIdentity, frame.KindAccount:
		if _, err := syntax.ParseDID(in.DID); err != nil {
			return Event{}, fmt.Errorf("%w: %s did: %v", ErrBadEvent, in.Kind, err)
		}
		fallthrough
	default:
		ev.Hash = contentHash(pre, suf)
		if in.Kind == frame.KindAccount {
			ev.Status = "active"
			if !in.Active {
				ev.Status = in.Status
				if ev.Status == "" {
					ev.Status = "inactive"
				}
			}
		}
	}
	return ev, nil
}

func contentHash(pre, suf []byte) string {
	h := sha256.New()
	h.Write(pre)
	h.Write(suf)
	var sum [sha256.Size]byte
	return hex.EncodeToString(h.Sum(sum[:0])[:16])
}

func kindCode(k frame.Kind) string {
	switch k {
	case frame.KindCommit:
		return "c"
	case frame.KindSync:
		return "s"
	case frame.KindIdentity:
		return "i"
	case frame.KindAccount:
		return "a"
	default:
		return "o"
	}
}

// KindOf maps a stored kind code back to a frame kind.
func KindOf(code string) frame.Kind {
	switch code {
	case "c":
		return frame.KindCommit
	case "s":
		return frame.KindSync
	case "i":
		return frame.KindIdentity
	case "a":
		return frame.KindAccount
	default:
		return frame.KindUnknown
	}
}
