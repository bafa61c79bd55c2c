package fakepds

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	comatproto "github.com/bluesky-social/indigo/api/atproto"
	"github.com/ipfs/go-cid"

	"github.com/pdsmux/pdsmux/internal/blocks"
	"github.com/pdsmux/pdsmux/internal/frame"
	"github.com/pdsmux/pdsmux/internal/xrpcerr"
)

// Fixture replays a recording of real replicas (testdata/cocoon-2replicas:
// see its README): each replica's live firehose as recorded, its cursor
// replay as recorded, and the final repos through the sync endpoints,
// answering getBlocks for an unknown CID with an empty block as Cocoon
// does.
type Fixture struct {
	dir      string
	repos    map[string]*blocks.Set
	roots    map[string]cid.Cid
	latest   map[string]comatproto.SyncGetLatestCommit_Output
	listRepo []byte
}

// FrameLine is one recorded websocket message.
type FrameLine struct {
	At    time.Duration
	Bytes []byte
}

// ReadFrames reads a .frames file ("<ms> <base64>" per line).
func ReadFrames(path string) ([]FrameLine, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []FrameLine
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		ms, b64, ok := strings.Cut(sc.Text(), " ")
		if !ok {
			return nil, fmt.Errorf("%s: bad line %q", path, sc.Text())
		}
		n, err := strconv.Atoi(ms)
		if err != nil {
			return nil, err
		}
		b, err := base64.StdEncoding.DecodeString(b64)
		if err != nil {
			return nil, err
		}
		out = append(out, FrameLine{At: time.Duration(n) * time.Millisecond, Bytes: b})
	}
	return out, sc.Err()
}

// LoadFixture reads a recording directory.
func LoadFixture(dir string) (*Fixture, error) {
	fx := &Fixture{dir: dir, repos: map[string]*blocks.Set{}, roots: map[string]cid.Cid{}}
	b, err := os.ReadFile(filepath.Join(dir, "latest-commit.json"))
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(b, &fx.latest); err != nil {
		return nil, fmt.Errorf("latest-commit.json: %w", err)
	}
	if fx.listRepo, err = os.ReadFile(filepath.Join(dir, "list-repos.json")); err != nil {
		return nil, err
	}
	for did := range fx.latest {
		f, err := os.Open(filepath.Join(dir, "repos", strings.ReplaceAll(did, ":", "_")+".car"))
		if err != nil {
			return nil, err
		}
		root, set, bad, err := blocks.ReadCAR(f)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("repo CAR of %s: %w", did, err)
		}
		if len(bad) > 0 {
			return nil, fmt.Errorf("repo CAR of %s: %d blocks do not match their CID", did, len(bad))
		}
		fx.repos[did], fx.roots[did] = set, root
	}
	return fx, nil
}

// Records returns the recorded final records of did: path -> CID.
func (fx *Fixture) Records(did string) (map[string]cid.Cid, error) {
	out := map[string]cid.Cid{}
	matches, err := filepath.Glob(filepath.Join(fx.dir, "records", strings.ReplaceAll(did, ":", "_")+"_*.json"))
	if err != nil {
		return nil, err
	}
	for _, m := range matches {
		b, err := os.ReadFile(m)
		if err != nil {
			return nil, err
		}
		var page struct {
			Records []struct{ URI, CID string }
		}
		if err := json.Unmarshal(b, &page); err != nil {
			return nil, fmt.Errorf("%s: %w", m, err)
		}
		for _, r := range page.Records {
			path := strings.TrimPrefix(r.URI, "at://"+did+"/")
			c, err := cid.Decode(r.CID)
			if err != nil {
				return nil, err
			}
			out[path] = c
		}
	}
	return out, nil
}

// Latest is the recorded head of each repo: did -> rev.
func (fx *Fixture) Latest() map[string]string {
	out := map[string]string{}
	for did, l := range fx.latest {
		out[did] = l.Rev
	}
	return out
}

// Serve serves one recorded replica on l: live frames from liveFile
// (paced as recorded), cursor replay from replayFile.
func (fx *Fixture) Serve(l net.Listener, liveFile, replayFile string) (*http.Server, error) {
	live, err := ReadFrames(filepath.Join(fx.dir, liveFile))
	if err != nil {
		return nil, err
	}
	replay, err := ReadFrames(filepath.Join(fx.dir, replayFile))
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /xrpc/_health", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"version": "fixture"})
	})
	mux.HandleFunc("GET /xrpc/com.atproto.sync.subscribeRepos", func(w http.ResponseWriter, r *http.Request) {
		conn, err := upgrader.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer conn.Close()
		go func() {
			for {
				if _, _, err := conn.ReadMessage(); err != nil {
					conn.Close()
					return
				}
			}
		}()
		frames := live
		var after int64 = -1
		if c := r.URL.Query().Get("cursor"); c != "" {
			after, _ = strconv.ParseInt(c, 10, 64)
			frames = replay
		}
		var prev time.Duration
		for _, f := range frames {
			if after >= 0 {
				if in, err := frame.Parse(f.Bytes, 0); err == nil && in.Seq <= after {
					continue
				}
			} else {
				time.Sleep(f.At - prev)
				prev = f.At
			}
			if conn.WriteMessage(2, f.Bytes) != nil {
				return
			}
		}
		<-r.Context().Done()
	})
	mux.HandleFunc("GET /xrpc/com.atproto.sync.listRepos", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(fx.listRepo)
	})
	mux.HandleFunc("GET /xrpc/com.atproto.sync.getLatestCommit", func(w http.ResponseWriter, r *http.Request) {
		l, ok := fx.latest[r.URL.Query().Get("did")]
		if !ok {
			xrpcerr.Write(w, http.StatusBadRequest, "RepoNotFound", "no such repo")
			return
		}
		writeJSON(w, http.StatusOK, l)
	})
	mux.HandleFunc("GET /xrpc/com.atproto.sync.getBlocks", func(w http.ResponseWriter, r *http.Request) {
		set := fx.repos[r.URL.Query().Get("did")]
		if set == nil {
			xrpcerr.Write(w, http.StatusBadRequest, "RepoNotFound", "no such repo")
			return
		}
		out := blocks.NewSet()
		for _, cs := range r.URL.Query()["cids"] {
			c, err := cid.Decode(cs)
			if err != nil {
				xrpcerr.Write(w, http.StatusBadRequest, "InvalidRequest", "bad cid")
				return
			}
			data, _ := set.Lookup(c)
			out.Add(c, data)
		}
		_ = blocks.WriteCAR(w, cid.Undef, out)
	})
	mux.HandleFunc("GET /xrpc/com.atproto.sync.getRepo", func(w http.ResponseWriter, r *http.Request) {
		did := r.URL.Query().Get("did")
		set := fx.repos[did]
		if set == nil {
			xrpcerr.Write(w, http.StatusBadRequest, "RepoNotFound", "no such repo")
			return
		}
		var buf bytes.Buffer
		_ = blocks.WriteCAR(&buf, fx.roots[did], set)
		_, _ = w.Write(buf.Bytes())
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(l) }()
	return srv, nil
}
