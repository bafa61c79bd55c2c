package verify_test

import (
	"strings"
	"testing"

	comatproto "github.com/bluesky-social/indigo/api/atproto"
	"github.com/stretchr/testify/require"

	"github.com/pdsmux/pdsmux/internal/fakepds"
	"github.com/pdsmux/pdsmux/internal/frame"
	"github.com/pdsmux/pdsmux/internal/verify"
)

// An #identity goes on as it came when a relay would pass it on, and is
// otherwise rebuilt with its DID, seq, time and valid handle only, or
// refused when its DID is no DID; every other kind is untouched.
func TestCleanIdentity(t *testing.T) {
	const did, tm = "did:plc:ewvi7nxzyoun6zhxrhs64oiz", "2026-11-30T12:00:00.000Z"
	handle := func(h string) *string { return &h }
	for _, tc := range []struct {
		name    string
		body    *comatproto.SyncSubscribeRepos_Identity
		rebuilt bool
		handle  string // of the frame passed on; "" none
		reason  string // refused
	}{
		{name: "valid", body: &comatproto.SyncSubscribeRepos_Identity{Did: did, Seq: 7, Time: tm, Handle: handle("alice.test")}, handle: "alice.test"},
		{name: "no handle", body: &comatproto.SyncSubscribeRepos_Identity{Did: did, Seq: 7, Time: tm}},
		{name: "a handle that is no handle", body: &comatproto.SyncSubscribeRepos_Identity{Did: did, Seq: 7, Time: tm, Handle: handle("not a handle!")}, rebuilt: true},
		{name: "a 1 MB handle", body: &comatproto.SyncSubscribeRepos_Identity{Did: did, Seq: 7, Time: tm, Handle: handle(strings.Repeat("a", 1<<20) + ".test")}, rebuilt: true},
		{name: "a DID that is no DID", body: &comatproto.SyncSubscribeRepos_Identity{Did: "plc:nope", Seq: 7, Time: tm}, reason: verify.ReasonBadIdentity},
		{name: "a 1 MB handle and no time", body: &comatproto.SyncSubscribeRepos_Identity{Did: did, Seq: 7, Time: "yesterday", Handle: handle(strings.Repeat("a", 1<<20))}, reason: verify.ReasonBadIdentity},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := ""
			if tc.body.Handle != nil {
				h = *tc.body.Handle
			}
			b := fakepds.RawIdentity(tc.body.Did, tc.body.Seq, tc.body.Time, h)
			in, err := frame.Parse(b, 8<<20)
			require.NoError(t, err)
			out, info, rebuilt, err := verify.CleanIdentity(b, &in)
			if tc.reason != "" {
				require.Equal(t, tc.reason, verify.ReasonOf(err), "%v", err)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.rebuilt, rebuilt)
			if !rebuilt {
				require.Equal(t, b, out, "passed as it came")
			}
			require.LessOrEqual(t, len(out), verify.MaxIdentityBytes)
			require.Equal(t, frame.KindIdentity, info.Kind)
			require.Equal(t, int64(7), info.Seq)
			require.Equal(t, did, info.DID)
			require.Equal(t, tm, info.Time)
			var ev comatproto.SyncSubscribeRepos_Identity
			require.NoError(t, ev.UnmarshalCBOR(strings.NewReader(string(out[info.BodyStart:]))))
			if tc.handle == "" {
				require.Nil(t, ev.Handle)
			} else {
				require.Equal(t, tc.handle, *ev.Handle)
			}
		})
	}
	// other kinds are untouched
	b, err := frame.Encode(frame.TypeAccount, &comatproto.SyncSubscribeRepos_Account{Did: "nope", Seq: 3, Time: tm, Active: true})
	require.NoError(t, err)
	in, err := frame.Parse(b, 0)
	require.NoError(t, err)
	out, _, rebuilt, err := verify.CleanIdentity(b, &in)
	require.NoError(t, err)
	require.False(t, rebuilt)
	require.Equal(t, b, out)
}
