package repair

import (
	"bytes"
	"context"
	"fmt"
	"sort"
	"time"

	comatproto "github.com/bluesky-social/indigo/api/atproto"
	"github.com/bluesky-social/indigo/atproto/atdata"
	"github.com/bluesky-social/indigo/atproto/repo"
	"github.com/bluesky-social/indigo/atproto/repo/mst"
	"github.com/bluesky-social/indigo/atproto/syntax"
	lexutil "github.com/bluesky-social/indigo/lex/util"
	"github.com/ipfs/go-cid"

	"github.com/pdsmux/pdsmux/internal/blocks"
)

// Limits of one #commit: the lexicon's ops bound and the relay's bound on
// the blocks field.
const (
	MaxOps        = 200
	MaxBlockBytes = 2_000_000
)

// source reads one repo's blocks: cache first, then one replica.
type source struct {
	api   *replicaAPI
	cache *blockCache
	did   string
}

// fetch adds to into every cid it can get; absent ones stay absent.
func (s *source) fetch(ctx context.Context, into *blocks.Set, cids []cid.Cid) error {
	var need []cid.Cid
	for _, c := range cids {
		if _, ok := into.Lookup(c); ok {
			continue
		}
		if data, ok := s.cache.get(c); ok {
			into.Add(c, data)
			continue
		}
		need = append(need, c)
	}
	if len(need) == 0 {
		return nil
	}
	got, err := s.api.blocks(ctx, s.did, need)
	if err != nil {
		return err
	}
	for _, c := range need {
		if data, ok := got.Lookup(c); ok {
			into.Add(c, data)
			s.cache.put(c, data)
		}
	}
	return nil
}

// commit fetches and decodes a commit block.
func (s *source) commit(ctx context.Context, store *blocks.Set, c cid.Cid) (*repo.Commit, []byte, error) {
	if err := s.fetch(ctx, store, []cid.Cid{c}); err != nil {
		return nil, nil, err
	}
	data, ok := store.Lookup(c)
	if !ok {
		return nil, nil, fmt.Errorf("%w: commit block %s", ErrMissingBlocks, c)
	}
	var cm repo.Commit
	if err := cm.UnmarshalCBOR(bytes.NewReader(data)); err != nil {
		return nil, nil, fmt.Errorf("%w: commit %s: %v", ErrBadCommit, c, err)
	}
	if err := cm.VerifyStructure(); err != nil {
		return nil, nil, fmt.Errorf("%w: commit %s: %v", ErrBadCommit, c, err)
	}
	if cm.DID != s.did {
		return nil, nil, fmt.Errorf("%w: commit %s is for %s", ErrBadCommit, c, cm.DID)
	}
	return &cm, data, nil
}

// loadTree loads every node of the MST at root into store, one level per
// round trip, and returns the complete tree.
func (s *source) loadTree(ctx context.Context, store *blocks.Set, root cid.Cid) (*mst.Tree, error) {
	level := []cid.Cid{root}
	for len(level) > 0 {
		if err := s.fetch(ctx, store, level); err != nil {
			return nil, err
		}
		var next []cid.Cid
		for _, c := range level {
			data, ok := store.Lookup(c)
			if !ok {
				return nil, fmt.Errorf("%w: MST node %s", ErrMissingBlocks, c)
			}
			nd, err := mst.NodeDataFromCBOR(bytes.NewReader(data))
			if err != nil {
				return nil, fmt.Errorf("%w: MST node %s: %v", ErrMissingBlocks, c, err)
			}
			if nd.Left != nil {
				next = append(next, *nd.Left)
			}
			for _, e := range nd.Entries {
				if e.Right != nil {
					next = append(next, *e.Right)
				}
			}
		}
		level = next
	}
	tree, err := mst.LoadTreeFromStore(ctx, store, root)
	if err != nil {
		return nil, fmt.Errorf("%w: MST %s: %v", ErrMissingBlocks, root, err)
	}
	// indigo tolerates missing children ("partial" trees); a diff over a
	// partial tree would be wrong, so refuse it.
	if tree.IsPartial() {
		return nil, fmt.Errorf("%w: MST %s is incomplete", ErrMissingBlocks, root)
	}
	return tree, nil
}

type treeOp struct {
	path      string
	prev, val *cid.Cid
}

// diffMaps lists the record changes from old to new, by path.
func diffMaps(old, new map[string]cid.Cid) []treeOp {
	var ops []treeOp
	for k, v := range old {
		if nv, ok := new[k]; !ok {
			p := v
			ops = append(ops, treeOp{path: k, prev: &p})
		} else if nv != v {
			p, n := v, nv
			ops = append(ops, treeOp{path: k, prev: &p, val: &n})
		}
	}
	for k, v := range new {
		if _, ok := old[k]; !ok {
			n := v
			ops = append(ops, treeOp{path: k, val: &n})
		}
	}
	sort.Slice(ops, func(i, j int) bool { return ops[i].path < ops[j].path })
	return ops
}

// buildCommit synthesizes the #commit from the log's last commit
// (prevCommit at rev since) to the replica's signed head commit. With
// prevCommit undefined it builds a repo's first #commit: from the empty
// tree, every record a create, since null and prevData the empty tree's
// root (indigo's relay takes a first commit with since null; with
// prevData set it also checks the inversion, which passes). It returns
// ErrMissingBlocks or ErrTooBig when a #commit cannot carry the change;
// any other error is a fetch failure worth retrying.
func (s *source) buildCommit(ctx context.Context, since string, prevCommit, head cid.Cid, hc *repo.Commit, headBytes []byte, now time.Time) (*comatproto.SyncSubscribeRepos_Commit, int, error) {
	store := blocks.NewSet()
	var oldTree *mst.Tree
	var prevData cid.Cid
	var sincePtr *string
	if prevCommit.Defined() {
		oc, _, err := s.commit(ctx, store, prevCommit)
		if err != nil {
			return nil, 0, err
		}
		if oldTree, err = s.loadTree(ctx, store, oc.Data); err != nil {
			return nil, 0, err
		}
		prevData, sincePtr = oc.Data, &since
	} else {
		empty := mst.NewEmptyTree()
		root, err := empty.RootCID()
		if err != nil {
			return nil, 0, fmt.Errorf("empty tree root: %w", err)
		}
		oldTree, prevData = &empty, *root
	}
	newTree, err := s.loadTree(ctx, store, hc.Data)
	if err != nil {
		return nil, 0, err
	}
	oldMap, newMap := map[string]cid.Cid{}, map[string]cid.Cid{}
	if err := oldTree.WriteToMap(oldMap); err != nil {
		return nil, 0, err
	}
	if err := newTree.WriteToMap(newMap); err != nil {
		return nil, 0, err
	}
	ops := diffMaps(oldMap, newMap)
	if len(ops) > MaxOps {
		return nil, 0, fmt.Errorf("%w: %d ops (limit %d)", ErrTooBig, len(ops), MaxOps)
	}

	// Apply the ops to a full copy of the old tree: indigo then marks the
	// changed nodes and the neighbours that prove them as dirty, and
	// WriteDiffBlocks emits exactly those.
	tree := oldTree.Copy()
	for _, op := range ops {
		if _, err := repo.ApplyOp(&tree, op.path, op.val); err != nil {
			return nil, 0, fmt.Errorf("%w: apply %s: %v", ErrMissingBlocks, op.path, err)
		}
	}
	out := blocks.NewSet()
	out.Add(head, headBytes)
	if !prevCommit.Defined() {
		// A tree grown from the empty one can keep its empty node as a
		// child (the canonical tree the replica signed does too, or the
		// roots would differ); it is not dirty, so WriteDiffBlocks leaves
		// it out, and a relay loading the tree from the CAR cannot find
		// it. It costs a few bytes.
		empty := mst.NewEmptyTree()
		if _, err := empty.WriteDiffBlocks(ctx, out); err != nil {
			return nil, 0, fmt.Errorf("empty tree block: %w", err)
		}
	}
	root, err := tree.WriteDiffBlocks(ctx, out)
	if err != nil {
		return nil, 0, fmt.Errorf("%w: write diff: %v", ErrMissingBlocks, err)
	}
	if !root.Equals(hc.Data) {
		return nil, 0, fmt.Errorf("%w: rebuilt root %s differs from the signed data %s", ErrMissingBlocks, root, hc.Data)
	}

	var recs []cid.Cid
	for _, op := range ops {
		if op.val != nil {
			recs = append(recs, *op.val)
		}
	}
	if err := s.fetch(ctx, store, recs); err != nil {
		return nil, 0, err
	}
	repoOps := make([]*comatproto.SyncSubscribeRepos_RepoOp, 0, len(ops))
	blobs := []lexutil.LexLink{}
	for _, op := range ops {
		ro := &comatproto.SyncSubscribeRepos_RepoOp{Path: op.path, Prev: (*lexutil.LexLink)(op.prev)}
		switch {
		case op.prev == nil:
			ro.Action = "create"
		case op.val == nil:
			ro.Action = "delete"
		default:
			ro.Action = "update"
		}
		if op.val != nil {
			data, ok := store.Lookup(*op.val)
			if !ok {
				return nil, 0, fmt.Errorf("%w: record %s (%s)", ErrMissingBlocks, op.path, op.val)
			}
			out.Add(*op.val, data)
			ro.Cid = (*lexutil.LexLink)(op.val)
			if obj, err := atdata.UnmarshalCBOR(data); err == nil {
				for _, b := range atdata.ExtractBlobs(obj) {
					blobs = append(blobs, lexutil.LexLink(b.Ref))
				}
			}
		}
		repoOps = append(repoOps, ro)
	}
	if size := out.Size(); size > MaxBlockBytes {
		return nil, 0, fmt.Errorf("%w: %d bytes of blocks (limit %d)", ErrTooBig, size, MaxBlockBytes)
	}
	car, err := blocks.CAR(head, out)
	if err != nil {
		return nil, 0, err
	}
	ev := &comatproto.SyncSubscribeRepos_Commit{
		Repo: s.did, Commit: lexutil.LexLink(head), Rev: hc.Rev, Since: sincePtr,
		Blocks: car, Ops: repoOps, PrevData: (*lexutil.LexLink)(&prevData), Blobs: blobs,
		Time: now.UTC().Format(syntax.AtprotoDatetimeLayout),
	}
	// I10: self-check with the code relays run (record CIDs in the tree,
	// ops inverting to prevData) before anything is appended.
	if _, err := repo.VerifyCommitMessage(ctx, ev); err != nil {
		return nil, 0, fmt.Errorf("%w: synthesized commit fails verification: %v", ErrMissingBlocks, err)
	}
	return ev, len(ops), nil
}

// syncEvent is a #sync carrying just the signed head commit.
func syncEvent(did string, head cid.Cid, headBytes []byte, rev string, now time.Time) (*comatproto.SyncSubscribeRepos_Sync, error) {
	one := blocks.NewSet()
	one.Add(head, headBytes)
	car, err := blocks.CAR(head, one)
	if err != nil {
		return nil, err
	}
	return &comatproto.SyncSubscribeRepos_Sync{Did: did, Rev: rev, Blocks: car, Time: now.UTC().Format(syntax.AtprotoDatetimeLayout)}, nil
}
