package cursor

import (
	"bytes"
	"strconv"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/pdsmux/pdsmux/internal/frame"
)

// FuzzToEntry decodes arbitrary stream entries (what XRANGE/XREAD return
// for the log: an id and the p, q and m fields): a malformed one is an
// error, never a panic, and a decoded one puts its id's seq between the
// stored frame halves and reads back every metadata field.
func FuzzToEntry(f *testing.F) {
	f.Add("1764000000000001-0", "\xa2ctop", "\x01", "c did:plc:abc 3lbbbbbbbbb22 bafycid r1 42  1764000000000", true)
	f.Add("5-0", "", "", "a did:plc:x    -1 deactivated 0", true)
	f.Add("18446744073709551615-0", "p", "q", "o       ", true)
	f.Add("-1", "p", "q", "", false)
	f.Fuzz(func(t *testing.T, id, p, q, m string, hasM bool) {
		vals := map[string]any{"p": p, "q": q}
		if hasM {
			vals["m"] = m
		}
		e, err := toEntry(redis.XMessage{ID: id, Values: vals})
		if err != nil {
			return
		}
		if e.Seq < 0 {
			t.Fatalf("negative seq %d from id %q", e.Seq, id)
		}
		want := frame.AppendUint([]byte(p), uint64(e.Seq))
		want = append(want, q...)
		if !bytes.Equal(e.Frame, want) {
			t.Fatalf("frame is not p + seq + q")
		}
		ms, _, _ := strings.Cut(id, "-")
		if strconv.FormatInt(e.Seq, 10) != strings.TrimLeft(strings.TrimPrefix(ms, "+"), "0") && e.Seq != 0 {
			t.Fatalf("seq %d from id %q", e.Seq, id)
		}
		got := strings.Join([]string{e.Kind, e.DID, e.Rev, e.Commit, e.Source}, " ")
		if !strings.HasPrefix(m, got+" ") {
			t.Fatalf("metadata %q read as %q", m, got)
		}
	})
}
