package fakepds

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base32"
	"fmt"
	"time"

	comatproto "github.com/bluesky-social/indigo/api/atproto"
	"github.com/bluesky-social/indigo/atproto/atcrypto"
	"github.com/bluesky-social/indigo/atproto/atdata"
	"github.com/bluesky-social/indigo/atproto/repo"
	"github.com/bluesky-social/indigo/atproto/repo/mst"
	"github.com/bluesky-social/indigo/atproto/syntax"
	lexutil "github.com/bluesky-social/indigo/lex/util"
	"github.com/ipfs/go-cid"

	"github.com/pdsmux/pdsmux/internal/blocks"
)

// Op is one record write within a commit.
type Op struct {
	Action     string // create, update, delete
	Collection string
	Rkey       string
	Record     map[string]any // create and update
}

// Path is collection/rkey.
func (o Op) Path() string { return o.Collection + "/" + o.Rkey }

// Account is one repo with its signing key. Its methods are not safe for
// concurrent use; the Store serialises them.
type Account struct {
	DID    string
	Handle string
	Key    *atcrypto.PrivateKeyK256
	// Created is when the account was made, by the clock passed to
	// NewAccount (the Store's Now for Replica.CreateAccount). The PLC
	// audit log reports it as the genesis operation's createdAt.
	Created time.Time

	Active bool
	Status string

	tree mst.Tree
	// lastMicros is the timestamp (unix microseconds) of the last rev.
	lastMicros int64
	rev        string
	commit     cid.Cid
	data       cid.Cid
	// all blocks ever written for the repo (Cocoon never collects garbage)
	blocks *blocks.Set
	// OmitUpdatePrev makes update ops carry no prev, as Cocoon's do.
	OmitUpdatePrev bool
	// DiscardHistory keeps no blocks beyond the live tree (load
	// generation: nothing serves getBlocks or getRepo).
	DiscardHistory bool

	// plcEntry is the genesis PLC log entry last served, made for
	// plcEntryKey (endpoint and handle).
	plcEntry    *plcLogEntry
	plcEntryKey string
}

// DIDFor returns a did:plc-shaped DID derived from name.
func DIDFor(name string) string {
	sum := sha256.Sum256([]byte("fakepds:" + name))
	enc := base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(sum[:])
	return "did:plc:" + string(bytes.ToLower([]byte(enc[:24])))
}

// NewAccount creates an account with a fresh secp256k1 key and an empty,
// signed repo, made at now: Created is now and the first rev is the TID
// of now. The returned #sync event announces it.
func NewAccount(handle string, now time.Time) (*Account, *comatproto.SyncSubscribeRepos_Sync, error) {
	key, err := atcrypto.GeneratePrivateKeyK256()
	if err != nil {
		return nil, nil, err
	}
	a := &Account{
		DID: DIDFor(handle), Handle: handle, Key: key, Created: now, Active: true,
		tree: mst.NewEmptyTree(), blocks: blocks.NewSet(),
	}
	diff := blocks.NewSet()
	root, err := a.tree.WriteDiffBlocks(context.Background(), diff)
	if err != nil {
		return nil, nil, err
	}
	cc, commitBytes, err := a.sign(*root, now)
	if err != nil {
		return nil, nil, err
	}
	ev, err := syncEvent(a.DID, a.rev, cc, commitBytes, now)
	if err != nil {
		return nil, nil, err
	}
	a.blocks.Add(cc, commitBytes)
	a.blocks.Merge(diff)
	return a, ev, nil
}

// syncEvent is a #sync announcing the signed commit cc (seq left 0).
func syncEvent(did, rev string, cc cid.Cid, commitBytes []byte, now time.Time) (*comatproto.SyncSubscribeRepos_Sync, error) {
	one := blocks.NewSet()
	one.Add(cc, commitBytes)
	car, err := blocks.CAR(cc, one)
	if err != nil {
		return nil, err
	}
	return &comatproto.SyncSubscribeRepos_Sync{Did: did, Rev: rev, Blocks: car, Time: now.UTC().Format(syntax.AtprotoDatetimeLayout)}, nil
}

// nextRev returns the rev for a commit made at now: the TID (clock id 0,
// as Cocoon's) of now in microseconds, or 1 µs past the previous rev when
// now is not later than it (a clock set back, or frozen), so a repo's revs
// always increase whatever the clock does.
func (a *Account) nextRev(now time.Time) string {
	us := now.UTC().UnixMicro()
	if us <= a.lastMicros {
		us = a.lastMicros + 1
	}
	a.lastMicros = us
	return syntax.NewTID(us, 0).String()
}

// sign makes, signs and stores the commit for data at now, advancing rev.
func (a *Account) sign(data cid.Cid, now time.Time) (cid.Cid, []byte, error) {
	c := repo.Commit{DID: a.DID, Version: repo.ATPROTO_REPO_VERSION, Data: data, Rev: a.nextRev(now)}
	if err := c.Sign(a.Key); err != nil {
		return cid.Undef, nil, err
	}
	var buf bytes.Buffer
	if err := c.MarshalCBOR(&buf); err != nil {
		return cid.Undef, nil, err
	}
	cc, err := blocks.CBORCID(buf.Bytes())
	if err != nil {
		return cid.Undef, nil, err
	}
	a.rev, a.commit, a.data = c.Rev, cc, data
	return cc, buf.Bytes(), nil
}

// Rev, Commit and Data describe the current head.
func (a *Account) Rev() string         { return a.rev }
func (a *Account) Commit() cid.Cid     { return a.commit }
func (a *Account) Data() cid.Cid       { return a.data }
func (a *Account) Blocks() *blocks.Set { return a.blocks }

// Records returns path -> record CID for the current tree.
func (a *Account) Records() (map[string]cid.Cid, error) {
	m := map[string]cid.Cid{}
	return m, a.tree.WriteToMap(m)
}

// Apply performs ops in one signed commit made at now (its rev is the TID
// of now, kept increasing as nextRev says) and returns its #commit event
// (seq left 0 for the caller to assign).
func (a *Account) Apply(ops []Op, now time.Time) (*comatproto.SyncSubscribeRepos_Commit, error) {
	ctx := context.Background()
	prevData, since := a.data, a.rev
	diff := blocks.NewSet()
	var repoOps []*comatproto.SyncSubscribeRepos_RepoOp
	for _, op := range ops {
		path := op.Path()
		switch op.Action {
		case "create", "update":
			rec, err := atdata.MarshalCBOR(op.Record)
			if err != nil {
				return nil, fmt.Errorf("encode record %s: %w", path, err)
			}
			rc, err := diff.AddRaw(rec)
			if err != nil {
				return nil, err
			}
			prev, err := a.tree.Insert([]byte(path), rc)
			if err != nil {
				return nil, fmt.Errorf("insert %s: %w", path, err)
			}
			if op.Action == "create" && prev != nil {
				return nil, fmt.Errorf("create %s: record exists", path)
			}
			if op.Action == "update" && prev == nil {
				return nil, fmt.Errorf("update %s: no such record", path)
			}
			ro := &comatproto.SyncSubscribeRepos_RepoOp{Action: op.Action, Path: path, Cid: (*lexutil.LexLink)(&rc)}
			if prev != nil && !a.OmitUpdatePrev {
				ro.Prev = (*lexutil.LexLink)(prev)
			}
			repoOps = append(repoOps, ro)
		case "delete":
			prev, err := a.tree.Remove([]byte(path))
			if err != nil {
				return nil, fmt.Errorf("delete %s: %w", path, err)
			}
			if prev == nil {
				return nil, fmt.Errorf("delete %s: no such record", path)
			}
			repoOps = append(repoOps, &comatproto.SyncSubscribeRepos_RepoOp{Action: "delete", Path: path, Prev: (*lexutil.LexLink)(prev)})
		default:
			return nil, fmt.Errorf("unknown op action %q", op.Action)
		}
	}
	root, err := a.tree.WriteDiffBlocks(ctx, diff)
	if err != nil {
		return nil, err
	}
	cc, commitBytes, err := a.sign(*root, now)
	if err != nil {
		return nil, err
	}
	slice := blocks.NewSet()
	slice.Add(cc, commitBytes)
	slice.Merge(diff)
	car, err := blocks.CAR(cc, slice)
	if err != nil {
		return nil, err
	}
	if !a.DiscardHistory {
		a.blocks.Merge(slice)
	}
	ev := &comatproto.SyncSubscribeRepos_Commit{
		Repo: a.DID, Commit: lexutil.LexLink(cc), Rev: a.rev, Blocks: car, Ops: repoOps,
		Blobs: []lexutil.LexLink{}, Time: now.UTC().Format(syntax.AtprotoDatetimeLayout),
		PrevData: (*lexutil.LexLink)(&prevData),
	}
	if since != "" {
		ev.Since = &since
	}
	return ev, nil
}

// Post returns a post record.
func Post(text string, now time.Time) map[string]any {
	return map[string]any{"$type": "app.bsky.feed.post", "text": text, "createdAt": now.UTC().Format(syntax.AtprotoDatetimeLayout)}
}
