package cursor_test

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pdsmux/pdsmux/internal/cursor"
	"github.com/pdsmux/pdsmux/internal/frame"
)

// FuzzNewEvent builds events from arbitrary frames: a frame the reader
// accepts either becomes an Event or is refused with ErrBadEvent, never a
// panic; an Event's bytes around the seq are the frame's own, its seq is
// the frame's, and a #commit/#sync always carries its DID, rev and commit.
func FuzzNewEvent(f *testing.F) {
	for _, b := range replicaFrames(f) {
		f.Add(b)
	}
	f.Add(frame.ErrorFrame("FutureCursor", "x"))
	f.Add([]byte{0xa1, 0x62, 'o', 'p', 0x01, 0xa1, 0x63, 's', 'e', 'q', 0x07})
	f.Fuzz(func(t *testing.T, b []byte) {
		in, err := frame.Parse(b, 1<<20)
		if err != nil {
			return
		}
		ev, err := cursor.NewEvent(b, &in)
		if err != nil {
			if !errors.Is(err, cursor.ErrBadEvent) {
				t.Fatalf("refusal is not ErrBadEvent: %v", err)
			}
			return
		}
		if ev.UpstreamSeq != in.Seq || ev.Kind != in.Kind {
			t.Fatalf("event %+v does not match frame %+v", ev, in)
		}
		joined := append(append(append([]byte{}, ev.Pre...), b[in.SeqStart:in.SeqEnd]...), ev.Suf...)
		if !bytes.Equal(joined, b) {
			t.Fatalf("pre + seq + suf is not the frame")
		}
		switch ev.Kind {
		case frame.KindCommit, frame.KindSync:
			if ev.DID == "" || ev.Rev == "" || ev.Commit == "" {
				t.Fatalf("%s without did, rev or commit: %+v", ev.Kind, ev)
			}
			if ev.Kind == frame.KindSync && ev.Hash == "" {
				t.Fatalf("#sync without content hash")
			}
		default:
			if ev.Hash == "" {
				t.Fatalf("%s without content hash", ev.Kind)
			}
		}
		if ev.Hash != "" && ev.Kind != frame.KindCommit {
			h, err := cursor.ContentHash(b)
			if err != nil || h != ev.Hash {
				t.Fatalf("content hash %q, ContentHash %q %v", ev.Hash, h, err)
			}
		}
	})
}

// replicaFrames are the recorded frames of a real replica, as seeds.
func replicaFrames(t testing.TB) [][]byte {
	t.Helper()
	fh, err := os.Open(filepath.Join("..", "..", "testdata", "cocoon-2replicas", "live-replica1.frames"))
	if err != nil {
		t.Fatalf("seed frames: %v", err)
	}
	defer fh.Close()
	var out [][]byte
	sc := bufio.NewScanner(fh)
	sc.Buffer(make([]byte, 1<<20), 1<<22)
	for sc.Scan() {
		_, b64, _ := strings.Cut(sc.Text(), " ")
		b, err := base64.StdEncoding.DecodeString(b64)
		if err != nil {
			t.Fatalf("seed frames: %v", err)
		}
		out = append(out, b)
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("seed frames: %v", err)
	}
	return out
}
