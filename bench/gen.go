package main

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/pdsmux/pdsmux/internal/fakepds"
	"github.com/pdsmux/pdsmux/internal/frame"
)

// stream is a generated sequence of frames (seq 0) from several accounts.
type stream struct {
	frames [][]byte
	keys   []string // did|rev of each frame
	owner  []int    // account index of each frame
	bytes  int64
	// signing keys: DID -> public key (multibase), served by the bench's
	// PLC so pdsmux checks signatures as it does by default
	pubkeys map[string]string
}

const genVersion = "v4"

// generate makes n commit frames over accounts repos; about one in
// bigEvery is a 50-200 KB commit. Results are cached on disk.
func generate(cacheDir string, n, accounts, bigEvery int) (*stream, error) {
	path := filepath.Join(cacheDir, fmt.Sprintf("frames-%s-%d-%d-%d.bin", genVersion, n, accounts, bigEvery))
	if s, err := loadStream(path); err == nil {
		return s, nil
	}
	fmt.Fprintf(os.Stderr, "bench: generating %d signed commits (cached in %s for later runs)\n", n, path)
	workers := runtime.NumCPU()
	type part struct {
		frames [][]byte
		keys   []string
		sync   []byte // the account's creation #sync: the stream starts with these
		key    string
		did    string
		pub    string // public key, multibase
	}
	parts := make([]part, accounts)
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	next := make(chan int, accounts)
	for a := range accounts {
		next <- a
	}
	close(next)
	per := (n + accounts - 1) / accounts
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for a := range next {
				acct, syncEv, err := fakepds.NewAccount(fmt.Sprintf("bench%03d.test", a), time.Now())
				if err != nil {
					errs <- err
					return
				}
				if parts[a].sync, err = frame.Encode(frame.TypeSync, syncEv); err != nil {
					errs <- err
					return
				}
				parts[a].key = syncEv.Did + "|" + syncEv.Rev
				pub, err := acct.Key.PublicKey()
				if err != nil {
					errs <- err
					return
				}
				parts[a].did, parts[a].pub = acct.DID, pub.Multibase()
				acct.DiscardHistory = true
				rnd := rand.New(rand.NewPCG(uint64(a), 99))
				for i := range per {
					rec := fakepds.Post(fmt.Sprintf("bench post %d of account %d", i, a), time.Now())
					if bigEvery > 0 && rnd.IntN(bigEvery) == 0 {
						rec = map[string]any{"$type": "com.example.bench.blob", "text": strings.Repeat("x", 50_000+rnd.IntN(150_000))}
					}
					ev, err := acct.Apply([]fakepds.Op{{Action: "create", Collection: "app.bsky.feed.post", Rkey: fmt.Sprintf("b%08d", i), Record: rec}}, time.Now())
					if err != nil {
						errs <- err
						return
					}
					b, err := frame.Encode(frame.TypeCommit, ev)
					if err != nil {
						errs <- err
						return
					}
					parts[a].frames = append(parts[a].frames, b)
					parts[a].keys = append(parts[a].keys, ev.Repo+"|"+ev.Rev)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return nil, err
	}
	// every account's #sync first (new repos, as relays would first see
	// them), then the commits interleaved round-robin, each account's in
	// order
	s := &stream{pubkeys: map[string]string{}}
	for a := range accounts {
		s.pubkeys[parts[a].did] = parts[a].pub
		s.frames = append(s.frames, parts[a].sync)
		s.keys = append(s.keys, parts[a].key)
		s.owner = append(s.owner, a)
		s.bytes += int64(len(parts[a].sync))
	}
	for i := range per {
		for a := range accounts {
			s.frames = append(s.frames, parts[a].frames[i])
			s.keys = append(s.keys, parts[a].keys[i])
			s.owner = append(s.owner, a)
			s.bytes += int64(len(parts[a].frames[i]))
		}
	}
	if err := saveStream(path, s); err != nil {
		fmt.Fprintln(os.Stderr, "bench: could not cache frames:", err)
	}
	return s, nil
}

func saveStream(path string, s *stream) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp := path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(f)
	put := func(b []byte) {
		var l [4]byte
		binary.BigEndian.PutUint32(l[:], uint32(len(b)))
		w.Write(l[:])
		w.Write(b)
	}
	// the keys first: a count, then DID and multibase pairs
	put([]byte(fmt.Sprint(len(s.pubkeys))))
	for did, pub := range s.pubkeys {
		put([]byte(did))
		put([]byte(pub))
	}
	for i := range s.frames {
		put(s.frames[i])
		put([]byte(s.keys[i]))
		put([]byte{byte(s.owner[i] >> 8), byte(s.owner[i])})
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func loadStream(path string) (*stream, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	r := bufio.NewReaderSize(f, 1<<20)
	get := func() ([]byte, error) {
		var l [4]byte
		if _, err := io.ReadFull(r, l[:]); err != nil {
			return nil, err
		}
		b := make([]byte, binary.BigEndian.Uint32(l[:]))
		_, err := io.ReadFull(r, b)
		return b, err
	}
	s := &stream{pubkeys: map[string]string{}}
	nb, err := get()
	if err != nil {
		return nil, err
	}
	var nk int
	if _, err := fmt.Sscan(string(nb), &nk); err != nil {
		return nil, fmt.Errorf("%s: bad key count: %w", path, err)
	}
	for range nk {
		did, err := get()
		if err != nil {
			return nil, err
		}
		pub, err := get()
		if err != nil {
			return nil, err
		}
		s.pubkeys[string(did)] = string(pub)
	}
	for {
		fb, err := get()
		if err == io.EOF {
			return s, nil
		}
		if err != nil {
			return nil, err
		}
		k, err := get()
		if err != nil {
			return nil, err
		}
		o, err := get()
		if err != nil {
			return nil, err
		}
		s.frames = append(s.frames, fb)
		s.keys = append(s.keys, string(k))
		s.owner = append(s.owner, int(o[0])<<8|int(o[1]))
		s.bytes += int64(len(fb))
	}
}
