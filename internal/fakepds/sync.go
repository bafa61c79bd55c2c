package fakepds

import (
	"encoding/json"
	"net/http"
	"sort"
	"strconv"

	comatproto "github.com/bluesky-social/indigo/api/atproto"
	"github.com/ipfs/go-cid"

	"github.com/pdsmux/pdsmux/internal/blocks"
	"github.com/pdsmux/pdsmux/internal/xrpcerr"
)

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// syncRoutes serves the read side of com.atproto.sync the way Cocoon does:
// getRepo ignores `since` and sends every block ever stored for the repo;
// getBlocks answers a CID it lacks with an empty block instead of an error.
func (r *Replica) syncRoutes(mux *http.ServeMux) {
	s := r.store
	account := func(w http.ResponseWriter, req *http.Request) *Account {
		did := req.URL.Query().Get("did")
		a := s.accounts[did]
		if a == nil {
			xrpcerr.Write(w, http.StatusBadRequest, "RepoNotFound", "could not find repo for DID: "+did)
		}
		return a
	}
	mux.HandleFunc("GET /xrpc/com.atproto.sync.listRepos", func(w http.ResponseWriter, req *http.Request) {
		limit := 500
		if l, err := strconv.Atoi(req.URL.Query().Get("limit")); err == nil && l > 0 && l <= 1000 {
			limit = l
		}
		after := req.URL.Query().Get("cursor")
		s.mu.Lock()
		dids := append([]string(nil), s.order...)
		sort.Strings(dids)
		out := comatproto.SyncListRepos_Output{Repos: []*comatproto.SyncListRepos_Repo{}}
		for _, d := range dids {
			if d <= after {
				continue
			}
			if len(out.Repos) == limit {
				c := out.Repos[len(out.Repos)-1].Did
				out.Cursor = &c
				break
			}
			a := s.accounts[d]
			active := a.Active
			repo := &comatproto.SyncListRepos_Repo{Did: d, Head: a.commit.String(), Rev: a.rev, Active: &active}
			if a.Status != "" {
				st := a.Status
				repo.Status = &st
			}
			out.Repos = append(out.Repos, repo)
		}
		s.mu.Unlock()
		writeJSON(w, http.StatusOK, out)
	})
	mux.HandleFunc("GET /xrpc/com.atproto.sync.getLatestCommit", func(w http.ResponseWriter, req *http.Request) {
		s.mu.Lock()
		defer s.mu.Unlock()
		if a := account(w, req); a != nil {
			writeJSON(w, http.StatusOK, comatproto.SyncGetLatestCommit_Output{Cid: a.commit.String(), Rev: a.rev})
		}
	})
	mux.HandleFunc("GET /xrpc/com.atproto.sync.getRepoStatus", func(w http.ResponseWriter, req *http.Request) {
		s.mu.Lock()
		defer s.mu.Unlock()
		if a := account(w, req); a != nil {
			rev := a.rev
			out := comatproto.SyncGetRepoStatus_Output{Did: a.DID, Active: a.Active, Rev: &rev}
			if a.Status != "" {
				st := a.Status
				out.Status = &st
			}
			writeJSON(w, http.StatusOK, out)
		}
	})
	mux.HandleFunc("GET /xrpc/com.atproto.sync.getBlocks", func(w http.ResponseWriter, req *http.Request) {
		s.mu.Lock()
		a := account(w, req)
		if a == nil {
			s.mu.Unlock()
			return
		}
		set := blocks.NewSet()
		for _, cs := range req.URL.Query()["cids"] {
			c, err := cid.Decode(cs)
			if err != nil {
				s.mu.Unlock()
				xrpcerr.Write(w, http.StatusBadRequest, "InvalidRequest", "bad cid: "+cs)
				return
			}
			data, _ := a.blocks.Lookup(c) // missing: empty bytes, as Cocoon answers
			set.Add(c, data)
		}
		s.mu.Unlock()
		w.Header().Set("Content-Type", "application/vnd.ipld.car")
		_ = blocks.WriteCAR(w, cid.Undef, set)
	})
	mux.HandleFunc("GET /xrpc/com.atproto.sync.getRepo", func(w http.ResponseWriter, req *http.Request) {
		s.mu.Lock()
		a := account(w, req)
		if a == nil {
			s.mu.Unlock()
			return
		}
		all := blocks.NewSet()
		all.Merge(a.blocks)
		root := a.commit
		s.mu.Unlock()
		w.Header().Set("Content-Type", "application/vnd.ipld.car")
		_ = blocks.WriteCAR(w, root, all)
	})
}
