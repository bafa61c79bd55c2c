package consumer

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	comatproto "github.com/bluesky-social/indigo/api/atproto"
	"github.com/bluesky-social/indigo/atproto/identity"
	"github.com/bluesky-social/indigo/atproto/repo"
	"github.com/bluesky-social/indigo/atproto/repo/mst"
	"github.com/ipfs/go-cid"

	"github.com/pdsmux/pdsmux/internal/blocks"
)

// RepoView is what a strict consumer believes a repo holds.
type RepoView struct {
	Rev     string
	Data    cid.Cid
	Records map[string]cid.Cid
}

// Strict is a sync-1.1 consumer: it verifies every #commit with indigo's
// own code (signature when Dir is set, record CIDs in the tree, op
// inversion to prevData), requires each commit to chain onto the last
// (since = last rev, prevData = last data), and re-fetches a repo with
// getRepo on #sync, as relays and tap do. Problems are recorded, not
// fatal, so a test can list them all.
type Strict struct {
	Dir  identity.Directory // nil: signatures are not checked
	Base string             // http(s) base for getRepo
	HTTP *http.Client

	mu       sync.Mutex
	repos    map[string]*RepoView
	problems []string
	commits  int
	syncs    int
	stale    int
	fetches  int
}

// NewStrict returns a strict consumer that fetches repos from base.
func NewStrict(base string, dir identity.Directory) *Strict {
	return &Strict{Dir: dir, Base: base, HTTP: &http.Client{Timeout: 30 * time.Second}, repos: map[string]*RepoView{}}
}

// Attach makes c feed s.
func (s *Strict) Attach(c *Consumer) {
	c.OnCommit = s.Commit
	c.OnSync = s.Sync
}

func (s *Strict) problem(format string, args ...any) {
	s.problems = append(s.problems, fmt.Sprintf(format, args...))
}

// Commit processes one #commit.
func (s *Strict) Commit(e *comatproto.SyncSubscribeRepos_Commit) error {
	ctx := context.Background()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.commits++
	if s.Dir != nil {
		if err := repo.VerifyCommitSignature(ctx, s.Dir, e); err != nil {
			s.problem("%s rev %s: signature: %v", e.Repo, e.Rev, err)
			return nil
		}
	}
	if _, err := repo.VerifyCommitMessage(ctx, e); err != nil {
		s.problem("%s rev %s: VerifyCommitMessage: %v", e.Repo, e.Rev, err)
		return nil
	}
	commit, _, err := repo.LoadCommitFromCAR(ctx, bytes.NewReader(e.Blocks))
	if err != nil {
		s.problem("%s rev %s: commit block: %v", e.Repo, e.Rev, err)
		return nil
	}
	st := s.repos[e.Repo]
	first := false
	switch {
	case st == nil && e.Since == nil:
		// a repo's first commit: nothing to chain onto
		st, first = &RepoView{Records: map[string]cid.Cid{}}, true
		s.repos[e.Repo] = st
	case st == nil:
		s.problem("%s rev %s: first event for the repo is a #commit mid-chain (since %s) with no #sync before it", e.Repo, e.Rev, *e.Since)
		return nil
	}
	if e.Rev <= st.Rev {
		s.stale++
		return nil
	}
	if !first && (e.Since == nil || *e.Since != st.Rev) {
		since := "null"
		if e.Since != nil {
			since = *e.Since
		}
		s.problem("%s rev %s: since %s, last rev %s (chain break)", e.Repo, e.Rev, since, st.Rev)
	}
	if st.Data.Defined() && (e.PrevData == nil || cid.Cid(*e.PrevData) != st.Data) {
		s.problem("%s rev %s: prevData does not match the last data %s (chain break)", e.Repo, e.Rev, st.Data)
	}
	for _, op := range e.Ops {
		switch op.Action {
		case "create", "update":
			st.Records[op.Path] = cid.Cid(*op.Cid)
		case "delete":
			delete(st.Records, op.Path)
		}
	}
	st.Rev, st.Data = e.Rev, commit.Data
	return nil
}

// Sync processes one #sync: verify, then re-fetch the repo.
func (s *Strict) Sync(e *comatproto.SyncSubscribeRepos_Sync) error {
	ctx := context.Background()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.syncs++
	var commit *repo.Commit
	var err error
	if s.Dir != nil {
		commit, err = repo.VerifySyncMessage(ctx, s.Dir, e)
	} else {
		commit, _, err = repo.LoadCommitFromCAR(ctx, bytes.NewReader(e.Blocks))
	}
	if err != nil {
		s.problem("%s #sync rev %s: %v", e.Did, e.Rev, err)
		return nil
	}
	if commit.Rev != e.Rev {
		s.problem("%s #sync rev %s carries commit rev %s", e.Did, e.Rev, commit.Rev)
	}
	// Like indigo's relay, a #sync with an older rev is taken (a PDS
	// restored from backup); the same rev again is stale. So a stale copy
	// of an old #sync passed on by pdsmux rolls this consumer back, and
	// the next commit shows up as a chain break.
	if st := s.repos[e.Did]; st != nil && e.Rev == st.Rev {
		s.stale++
		return nil
	}
	st, err := s.fetch(ctx, e.Did, commit)
	if err != nil {
		s.problem("%s #sync rev %s: getRepo: %v", e.Did, e.Rev, err)
		return nil
	}
	s.repos[e.Did] = st
	return nil
}

// fetch loads the repo's tree as of commit at (the #sync's commit) from a
// getRepo answer. Like a relay, the consumer's state is then exactly the
// #sync's rev, even when the replica has moved on since.
func (s *Strict) fetch(ctx context.Context, did string, at *repo.Commit) (*RepoView, error) {
	s.fetches++
	resp, err := s.HTTP.Get(s.Base + "/xrpc/com.atproto.sync.getRepo?did=" + did)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("HTTP %d: %s", resp.StatusCode, body)
	}
	_, set, _, err := blocks.ReadCAR(bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	tree, err := mst.LoadTreeFromStore(ctx, set, at.Data)
	if err != nil {
		return nil, err
	}
	if tree.IsPartial() {
		return nil, fmt.Errorf("getRepo lacks the tree of rev %s", at.Rev)
	}
	recs := map[string]cid.Cid{}
	if err := tree.WriteToMap(recs); err != nil {
		return nil, err
	}
	return &RepoView{Rev: at.Rev, Data: at.Data, Records: recs}, nil
}

// View returns a copy of what the consumer believes about did.
func (s *Strict) View(did string) (RepoView, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.repos[did]
	if st == nil {
		return RepoView{}, false
	}
	recs := make(map[string]cid.Cid, len(st.Records))
	for k, v := range st.Records {
		recs[k] = v
	}
	return RepoView{Rev: st.Rev, Data: st.Data, Records: recs}, true
}

// Problems lists every verification failure and chain break seen.
func (s *Strict) Problems() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.problems...)
}

// Stats reports how many commits, syncs, stale events and getRepo fetches
// the consumer handled.
func (s *Strict) Stats() (commits, syncs, stale, fetches int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.commits, s.syncs, s.stale, s.fetches
}
