package frame_test

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"

	comatproto "github.com/bluesky-social/indigo/api/atproto"
	"github.com/stretchr/testify/require"
	cbg "github.com/whyrusleeping/cbor-gen"

	"github.com/pdsmux/pdsmux/internal/frame"
)

// loadFrames reads a fixture .frames file: "<ms> <base64>" per line.
func loadFrames(t testing.TB, name string) [][]byte {
	t.Helper()
	f, err := os.Open(filepath.Join("..", "..", "testdata", "cocoon-2replicas", name))
	require.NoError(t, err)
	defer f.Close()
	var out [][]byte
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<22)
	for sc.Scan() {
		_, b64, ok := strings.Cut(sc.Text(), " ")
		require.True(t, ok)
		b, err := base64.StdEncoding.DecodeString(b64)
		require.NoError(t, err)
		out = append(out, b)
	}
	require.NoError(t, sc.Err())
	return out
}

// splitFrame decodes a frame the way indigo's stream client does: header
// first, then the rest is the body.
func splitFrame(t *testing.T, b []byte) (string, []byte) {
	t.Helper()
	r := bytes.NewReader(b)
	var hdr struct{ T string }
	cr := cbg.NewCborReader(r)
	maj, n, err := cr.ReadHeader()
	require.NoError(t, err)
	require.EqualValues(t, cbg.MajMap, maj)
	for range n {
		k, err := cbg.ReadString(cr)
		require.NoError(t, err)
		if k == "t" {
			hdr.T, err = cbg.ReadString(cr)
			require.NoError(t, err)
		} else {
			var d cbg.Deferred
			require.NoError(t, d.UnmarshalCBOR(cr))
		}
	}
	return hdr.T, b[len(b)-r.Len():]
}

func TestParse_CocoonFixture(t *testing.T) {
	frames := loadFrames(t, "live-replica1.frames")
	require.Len(t, frames, 34)
	kinds := map[frame.Kind]int{}
	lastSeq := int64(0)
	for _, b := range frames {
		in, err := frame.Parse(b, 0)
		require.NoError(t, err)
		kinds[in.Kind]++
		require.True(t, in.HasSeq)
		require.Greater(t, in.Seq, lastSeq)
		lastSeq = in.Seq
		require.NotEmpty(t, in.DID)
		typ, body := splitFrame(t, b)
		require.Equal(t, typ, in.Type)
		switch in.Kind {
		case frame.KindCommit:
			var c comatproto.SyncSubscribeRepos_Commit
			require.NoError(t, c.UnmarshalCBOR(bytes.NewReader(body)))
			require.Equal(t, c.Repo, in.DID)
			require.Equal(t, c.Rev, in.Rev)
			require.Equal(t, c.Seq, in.Seq)
			require.Equal(t, c.Since != nil, in.HasSince)
			if c.Since != nil {
				require.Equal(t, *c.Since, in.Since)
			}
			require.Equal(t, c.Commit.String(), in.Commit)
		case frame.KindSync:
			var c comatproto.SyncSubscribeRepos_Sync
			require.NoError(t, c.UnmarshalCBOR(bytes.NewReader(body)))
			require.Equal(t, c.Rev, in.Rev)
			require.NotEmpty(t, in.Commit, "sync root CID from the CAR header")
		}
	}
	require.Equal(t, map[frame.Kind]int{frame.KindIdentity: 3, frame.KindSync: 2, frame.KindCommit: 29}, kinds)
}

func TestPatch_KeepsEveryOtherByte(t *testing.T) {
	for _, b := range loadFrames(t, "live-replica1.frames") {
		in, err := frame.Parse(b, 0)
		require.NoError(t, err)
		for _, seq := range []uint64{0, 23, 24, 255, 256, 65536, 1 << 32, 1_764_000_000_000_000, frame.MaxSeq} {
			out := frame.Patch(b, &in, seq)
			got, err := frame.Parse(out, 0)
			require.NoError(t, err)
			require.EqualValues(t, seq, got.Seq)
			pre, suf := frame.SplitSeq(b, &in)
			gpre, gsuf := frame.SplitSeq(out, &got)
			require.Equal(t, pre, gpre)
			require.Equal(t, suf, gsuf)
		}
	}
}

func TestPatch_UnknownFieldAndTypePassThrough(t *testing.T) {
	// header {t: "#future", op: 1}, body {seq: 7, zzzzNewField: [1, {"a": h'00'}], did: "did:plc:x"}
	var b []byte
	b = append(b, 0xa2, 0x61, 't', 0x67)
	b = append(b, "#future"...)
	b = append(b, 0x62, 'o', 'p', 0x01)
	b = append(b, 0xa3, 0x63, 'd', 'i', 'd', 0x69)
	b = append(b, "did:plc:x"...)
	b = append(b, 0x63, 's', 'e', 'q', 0x07)
	b = append(b, 0x6c)
	b = append(b, "zzzzNewField"...)
	b = append(b, 0x82, 0x01, 0xa1, 0x61, 'a', 0x41, 0x00)
	in, err := frame.Parse(b, 0)
	require.NoError(t, err)
	require.Equal(t, frame.KindUnknown, in.Kind)
	require.EqualValues(t, 7, in.Seq)
	out := frame.Patch(b, &in, 1_764_000_000_000_123)
	require.Equal(t, len(b)+8, len(out))
	require.Equal(t, b[:in.SeqStart], out[:in.SeqStart])
	require.Equal(t, b[in.SeqEnd:], out[in.SeqStart+9:])
}

func TestParse_BadInput(t *testing.T) {
	good := loadFrames(t, "live-replica1.frames")[1]
	cases := map[string]struct {
		in   []byte
		want error
	}{
		"empty":         {nil, frame.ErrMalformed},
		"truncated":     {good[:len(good)-5], frame.ErrMalformed},
		"trailing":      {append(append([]byte{}, good...), 0x00), frame.ErrTrailing},
		"not a map":     {[]byte{0x82, 0x01, 0x02}, frame.ErrShape},
		"indefinite":    {[]byte{0xbf, 0xff}, frame.ErrMalformed},
		"non-minimal":   {[]byte{0xa1, 0x62, 'o', 'p', 0x18, 0x01, 0xa0}, frame.ErrMalformed},
		"no op":         {[]byte{0xa0, 0xa0}, frame.ErrShape},
		"int key":       {[]byte{0xa1, 0x01, 0x01, 0xa0}, frame.ErrShape},
		"huge map":      {[]byte{0xa1, 0x62, 'o', 'p', 0x01, 0xbb, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, frame.ErrMalformed},
		"negative seq":  {[]byte{0xa1, 0x62, 'o', 'p', 0x01, 0xa1, 0x63, 's', 'e', 'q', 0x20}, frame.ErrShape},
		"bad op":        {[]byte{0xa1, 0x62, 'o', 'p', 0x02, 0xa0}, frame.ErrShape},
		"wrong tag":     {[]byte{0xa1, 0x62, 'o', 'p', 0x01, 0xa1, 0x61, 'x', 0xc1, 0x00}, frame.ErrMalformed},
		"half float":    {[]byte{0xa1, 0x62, 'o', 'p', 0x01, 0xa1, 0x61, 'x', 0xf9, 0x00, 0x00}, frame.ErrMalformed},
		"undefined val": {[]byte{0xa1, 0x62, 'o', 'p', 0x01, 0xa1, 0x61, 'x', 0xf7}, frame.ErrMalformed},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := frame.Parse(c.in, 0)
			require.ErrorIs(t, err, c.want)
		})
	}
	_, err := frame.Parse(good, 100)
	require.ErrorIs(t, err, frame.ErrTooLarge)
}

func TestBuiltFrames_Parse(t *testing.T) {
	in, err := frame.Parse(frame.ErrorFrame(frame.ErrNameFutureCursor, "cursor in the future"), 0)
	require.NoError(t, err)
	require.Equal(t, frame.KindError, in.Kind)
	require.Equal(t, frame.ErrNameFutureCursor, in.Name)
	require.Equal(t, "cursor in the future", in.Message)

	in, err = frame.Parse(frame.InfoFrame(frame.InfoOutdatedCursor, "too old"), 0)
	require.NoError(t, err)
	require.Equal(t, frame.KindInfo, in.Kind)
	require.Equal(t, frame.InfoOutdatedCursor, in.Name)
	require.False(t, in.HasSeq)
}

// A body that names two accounts is read by its kind's own key only, and a
// duplicate key is refused: pdsmux and a subscriber's decoder must not read
// different accounts out of the same bytes.
func TestParse_AccountKeyByKindAndNoDuplicateKeys(t *testing.T) {
	enc := func(typ string, kv ...any) []byte {
		t.Helper()
		var b []byte
		b = append(b, 0xa2) // header {op: 1, t: typ}
		b = append(b, cborText("op")...)
		b = append(b, 0x01)
		b = append(b, cborText("t")...)
		b = append(b, cborText(typ)...)
		b = append(b, byte(0xa0+len(kv)/2))
		for i := 0; i < len(kv); i += 2 {
			b = append(b, cborText(kv[i].(string))...)
			switch v := kv[i+1].(type) {
			case string:
				b = append(b, cborText(v)...)
			case int:
				b = append(b, byte(v))
			}
		}
		return b
	}
	in, err := frame.Parse(enc(frame.TypeCommit, "did", "did:plc:bbb", "repo", "did:plc:aaa", "seq", 7), 0)
	require.NoError(t, err)
	require.Equal(t, "did:plc:aaa", in.DID, "#commit: repo")
	in, err = frame.Parse(enc(frame.TypeCommit, "repo", "did:plc:aaa", "did", "did:plc:bbb", "seq", 7), 0)
	require.NoError(t, err)
	require.Equal(t, "did:plc:aaa", in.DID, "#commit: repo, whatever comes last")
	in, err = frame.Parse(enc(frame.TypeIdentity, "did", "did:plc:aaa", "repo", "did:plc:bbb", "seq", 7), 0)
	require.NoError(t, err)
	require.Equal(t, "did:plc:aaa", in.DID, "#identity: did")
	_, err = frame.Parse(enc(frame.TypeCommit, "repo", "did:plc:bbb", "repo", "did:plc:aaa", "seq", 7), 0)
	require.ErrorIs(t, err, frame.ErrShape)
}

func cborText(s string) []byte {
	b := frame.AppendUint(nil, uint64(len(s)))
	b[0] |= 3 << 5
	return append(b, s...)
}
