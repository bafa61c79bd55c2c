package pdsmuxd_test

import (
	"bytes"
	"io"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pdsmux/pdsmux/internal/fakepds"
	"github.com/pdsmux/pdsmux/internal/frame"
	"github.com/pdsmux/pdsmux/internal/testutil"
	"github.com/pdsmux/pdsmux/internal/testutil/redisserver"
	"github.com/pdsmux/pdsmux/internal/verify"
)

// Malformed CBOR, a truncated frame, an oversized frame, a text message and
// an unknown `t`: each is counted and logged with the replica's name; the
// unknown type passes through; nothing panics and the stream goes on.
func TestBadFrames_CountedLoggedAndSkipped(t *testing.T) {
	t.Parallel()
	e := newEnv(t, fakepds.ModeOwn, 1, redisserver.Options{})
	cfg := e.config()
	cfg.MaxFrameBytes = 64 << 10
	run := e.start(cfg, "pdsmux")
	waitConnected(t, run.rt)
	r := e.replicas[0]
	e.createAccounts(1)
	e.writeCommits(5, 1)

	good := e.store.Events()[len(e.store.Events())-1]
	future, err := frame.Encode("#future", unknownBody{seq: e.store.MaxSeq()})
	require.NoError(t, err)
	r.InjectRaw([]byte{0xff, 0x00, 0x01})                // malformed
	r.InjectRaw(good[:len(good)/2])                      // truncated
	r.InjectRaw(bytes.Repeat([]byte{0xa1}, 100<<10))     // oversized
	r.InjectRaw(append(append([]byte{}, good...), 0x00)) // trailing bytes
	r.InjectRaw(future)                                  // unknown type: passes
	e.writeCommits(5, 2)

	want, total := e.expected()
	l := e.reader()
	waitLog(t, l, int64(total+1), 20*time.Second)
	entries := allEntries(t, l)
	checkLog(t, entries, want)
	require.Equal(t, "o", entries[len(entries)-6].Kind, "the unknown event type is in the log, in stream order")

	m := testutil.Scrape(t, run.rt.MetricsAddr())
	for _, reason := range []string{"too_large", "trailing"} {
		require.Equal(t, 1.0, m["pdsmux_replica_bad_frames_total{reason="+reason+",replica=r1}"], reason)
	}
	require.Equal(t, 2.0, m["pdsmux_replica_bad_frames_total{reason=malformed,replica=r1}"], "garbage and truncated")
	require.Equal(t, 1.0, m["pdsmux_replica_events_total{kind=unknown,replica=r1}"])
	require.Equal(t, 1.0, m["pdsmux_log_events_total{kind=unknown,outcome=appended}"])
	require.Equal(t, 1.0, m["pdsmux_replica_connected{replica=r1}"], "the session survived")

	// The truncated frame is malformed too; each reason is logged once.
	run.stop()
	logText := readLog(t, "pdsmux")
	require.Equal(t, 1, strings.Count(logText, `reason=malformed`), "logged once, repeats suppressed")
	require.Contains(t, logText, `msg="skipped a bad frame from the replica" component=tail replica=r1 reason=too_large`)
	require.Contains(t, logText, `passing through an event type pdsmux does not know`)
}

type unknownBody struct{ seq int64 }

func (u unknownBody) MarshalCBOR(w io.Writer) error {
	var b []byte
	b = append(b, 0xa2, 0x63, 's', 'e', 'q')
	b = frame.AppendUint(b, uint64(u.seq))
	b = append(b, 0x6b)
	b = append(b, "futureField"...)
	b = append(b, 0xf5)
	_, err := w.Write(b)
	return err
}

func readLog(t *testing.T, name string) string {
	t.Helper()
	path, ok := logPaths.Load(t.Name() + "/" + name)
	require.True(t, ok, "no pdsmux named %s in this test", name)
	b, err := os.ReadFile(path.(string))
	require.NoError(t, err)
	return string(b)
}

// An #identity a relay would not pass on as it came (a 1 MB handle, a
// handle that is no handle) reaches the log rebuilt with its DID, seq and
// time only, small, in stream order; one whose DID is no DID is skipped;
// each is counted and logged. Before, the 1 MB frame went into the log
// and to every subscriber as it came.
func TestBadFrames_IdentityRebuiltAsARelayWouldPassIt(t *testing.T) {
	t.Parallel()
	e := newEnv(t, fakepds.ModeOwn, 1, redisserver.Options{})
	run := e.start(e.config(), "pdsmux")
	waitConnected(t, run.rt)
	r := e.replicas[0]
	e.createAccounts(1)
	did := e.accounts[0].DID
	// distinct times: an #identity is deduplicated by its content
	var times []string
	for i := range 5 {
		times = append(times, time.Now().UTC().Add(time.Duration(i)*time.Millisecond).Format("2006-01-02T15:04:05.000Z"))
	}
	at := func(i int) string { return times[i] }
	seq := e.store.MaxSeq()
	r.InjectRaw(fakepds.RawIdentity(did, seq, at(1), strings.Repeat("h", 1<<20)+".test"))
	r.InjectRaw(fakepds.RawIdentity(did, seq, at(2), "not a handle!"))
	r.InjectRaw(fakepds.RawIdentity("plc:nope", seq, at(3), ""))
	r.InjectRaw(fakepds.RawIdentity(did, seq, at(4), "alice.test")) // as it came
	e.writeCommits(3, 1)

	want, total := e.expected()
	l := e.reader()
	waitLog(t, l, int64(total+3), 20*time.Second)
	entries := allEntries(t, l)
	var identities []frame.Info
	for _, en := range entries {
		in, err := frame.Parse(en.Frame, 0)
		require.NoError(t, err)
		if in.Kind == frame.KindIdentity && in.DID == did {
			require.LessOrEqual(t, len(en.Frame), verify.MaxIdentityBytes)
			identities = append(identities, in)
		}
	}
	require.Len(t, identities, 4, "the creation's #identity, two rebuilt, one as it came")
	for i, in := range identities[1:] {
		require.Equal(t, []int{1, 2, 4}[i], slices.Index(times, in.Time), "in stream order, time kept")
	}
	checkLog(t, entries, want)

	m := testutil.Scrape(t, run.rt.MetricsAddr())
	require.Equal(t, 2.0, m["pdsmux_replica_bad_frames_total{reason=identity_rebuilt,replica=r1}"])
	require.Equal(t, 1.0, m["pdsmux_replica_bad_frames_total{reason=bad_identity,replica=r1}"])
	run.stop()
	require.Contains(t, readLog(t, "pdsmux"), "rebuilt an #identity a relay would not pass on as it came")
}
