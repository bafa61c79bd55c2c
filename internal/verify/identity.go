package verify

import (
	"bytes"

	comatproto "github.com/bluesky-social/indigo/api/atproto"
	"github.com/bluesky-social/indigo/atproto/syntax"

	"github.com/pdsmux/pdsmux/internal/frame"
)

// MaxIdentityBytes bounds an #identity frame forwarded as it came. Its
// fields (a DID, a handle of at most 253 characters, a time, the seq) take
// a few hundred bytes; a larger one carries something no relay passes on.
const MaxIdentityBytes = 8 << 10

// ReasonBadIdentity refuses an #identity whose DID is not a DID: the
// indigo relay drops it ("invalid DID in message", cmd/relay/relay/
// ingest.go processIdentityEvent). There is no repo to repair.
const ReasonBadIdentity = "bad_identity"

// CleanIdentity returns an #identity frame as a relay would pass it on.
// The indigo relay re-resolves the DID on every #identity, keeps only its
// DID and time, and the handle only when it is the DID document's (a
// valid handle); so one larger than MaxIdentityBytes, or whose body does
// not decode, or whose handle is not a handle, is rebuilt with its DID,
// seq and time only (the handle kept when valid). b and in are returned
// unchanged, with rebuilt false, for every other frame (other kinds, a
// frame without seq). A DID that is not a DID, or (in a frame to rebuild)
// a time that is not a datetime, is refused with a *Rejection
// (ReasonBadIdentity).
func CleanIdentity(b []byte, in *frame.Info) (out []byte, info frame.Info, rebuilt bool, err error) {
	if in.Kind != frame.KindIdentity || !in.HasSeq {
		return b, *in, false, nil
	}
	did, err := syntax.ParseDID(in.DID)
	if err != nil {
		return nil, frame.Info{}, false, reject(ReasonBadIdentity, "#identity DID %.64q: %v", in.DID, err)
	}
	var ev comatproto.SyncSubscribeRepos_Identity
	decoded := ev.UnmarshalCBOR(bytes.NewReader(b[in.BodyStart:])) == nil && ev.Did == in.DID
	validHandle := decoded && ev.Handle != nil && validHandleSyntax(*ev.Handle)
	// the size without the seq, whose width differs between replicas: a
	// frame two replicas stream is rebuilt by both or neither (the log
	// deduplicates an #identity by its content without seq)
	if len(b)-(in.SeqEnd-in.SeqStart) <= MaxIdentityBytes && decoded && (ev.Handle == nil || validHandle) {
		return b, *in, false, nil
	}
	if _, err := syntax.ParseDatetime(in.Time); err != nil {
		// a relay passes the time on as it is given: it must be one
		return nil, frame.Info{}, false, reject(ReasonBadIdentity, "#identity of %s: time %.64q: %v", did, in.Time, err)
	}
	body := &comatproto.SyncSubscribeRepos_Identity{Did: did.String(), Seq: in.Seq, Time: in.Time}
	if validHandle {
		body.Handle = ev.Handle
	}
	out, err = frame.Encode(frame.TypeIdentity, body)
	if err != nil {
		return nil, frame.Info{}, false, reject(ReasonBadIdentity, "rebuild #identity of %s: %v", did, err)
	}
	info, err = frame.Parse(out, 0)
	if err != nil {
		return nil, frame.Info{}, false, reject(ReasonBadIdentity, "rebuilt #identity of %s: %v", did, err)
	}
	return out, info, true, nil
}

// validHandleSyntax says whether h is a handle (at most 253 characters,
// labels of letters, digits and hyphens, as syntax.ParseHandle checks).
func validHandleSyntax(h string) bool {
	_, err := syntax.ParseHandle(h)
	return err == nil
}
