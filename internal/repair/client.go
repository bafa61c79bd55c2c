package repair

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	comatproto "github.com/bluesky-social/indigo/api/atproto"
	"github.com/bluesky-social/indigo/xrpc"
	"github.com/ipfs/go-cid"

	"github.com/pdsmux/pdsmux/internal/blocks"
	"github.com/pdsmux/pdsmux/internal/pool"
)

// getBlocksBatch bounds the CIDs per getBlocks call (URL length).
const getBlocksBatch = 100

// replicaAPI is the sync API of one replica.
type replicaAPI struct {
	rep *pool.Replica
	xc  *xrpc.Client
}

func newReplicaAPI(rep *pool.Replica, hc *http.Client, ua string) *replicaAPI {
	return &replicaAPI{rep: rep, xc: &xrpc.Client{Client: hc, Host: rep.URL.String(), UserAgent: &ua}}
}

func isNotFound(err error) bool {
	var xe *xrpc.XRPCError
	if errors.As(err, &xe) {
		return strings.HasSuffix(xe.ErrStr, "NotFound") || xe.ErrStr == "RepoTakendown" || xe.ErrStr == "RepoDeactivated"
	}
	return false
}

// head returns the repo's current commit CID and rev.
func (a *replicaAPI) head(ctx context.Context, did string) (cid.Cid, string, error) {
	out, err := comatproto.SyncGetLatestCommit(ctx, a.xc, did)
	if err != nil {
		if isNotFound(err) {
			return cid.Undef, "", fmt.Errorf("%w: %s on %s: %v", ErrRepoNotFound, did, a.rep.Name, err)
		}
		return cid.Undef, "", fmt.Errorf("getLatestCommit %s on %s: %w", did, a.rep.Name, err)
	}
	c, err := cid.Decode(out.Cid)
	if err != nil {
		return cid.Undef, "", fmt.Errorf("getLatestCommit %s on %s: bad cid %q: %w", did, a.rep.Name, out.Cid, err)
	}
	return c, out.Rev, nil
}

// blocks fetches cids of the repo, keeping only blocks whose bytes match
// their CID (Cocoon answers a CID it lacks with an empty block).
func (a *replicaAPI) blocks(ctx context.Context, did string, cids []cid.Cid) (*blocks.Set, error) {
	out := blocks.NewSet()
	for len(cids) > 0 {
		n := min(len(cids), getBlocksBatch)
		strs := make([]string, n)
		for i, c := range cids[:n] {
			strs[i] = c.String()
		}
		car, err := comatproto.SyncGetBlocks(ctx, a.xc, strs, did)
		if err != nil {
			if isNotFound(err) {
				return out, nil // treat as all missing; the caller checks
			}
			return nil, fmt.Errorf("getBlocks %s on %s: %w", did, a.rep.Name, err)
		}
		_, set, _, err := blocks.ReadCAR(bytes.NewReader(car))
		if err != nil {
			return nil, fmt.Errorf("getBlocks %s on %s: %w", did, a.rep.Name, err)
		}
		out.Merge(set)
		cids = cids[n:]
	}
	return out, nil
}

// RepoInfo is one listRepos row.
type RepoInfo struct {
	DID    string
	Head   string
	Rev    string
	Active bool
	Status string
}

// statusString folds active/status into what #account events carry.
func (r RepoInfo) statusString() string {
	if r.Active {
		return "active"
	}
	if r.Status == "" {
		return "inactive"
	}
	return r.Status
}

// listRepos pages through every repo the replica hosts.
func (a *replicaAPI) listRepos(ctx context.Context) ([]RepoInfo, error) {
	var out []RepoInfo
	cursor := ""
	for {
		page, err := comatproto.SyncListRepos(ctx, a.xc, cursor, 1000)
		if err != nil {
			return nil, fmt.Errorf("listRepos on %s: %w", a.rep.Name, err)
		}
		for _, r := range page.Repos {
			ri := RepoInfo{DID: r.Did, Head: r.Head, Rev: r.Rev, Active: true}
			if r.Active != nil {
				ri.Active = *r.Active
			}
			if r.Status != nil {
				ri.Status = *r.Status
			}
			out = append(out, ri)
		}
		if page.Cursor == nil || *page.Cursor == "" || len(page.Repos) == 0 || *page.Cursor == cursor {
			return out, nil
		}
		cursor = *page.Cursor
	}
}
