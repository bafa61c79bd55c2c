package fakepds

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sort"
	"sync"
	"time"

	comatproto "github.com/bluesky-social/indigo/api/atproto"
	"github.com/bluesky-social/indigo/atproto/identity"
	"github.com/bluesky-social/indigo/atproto/syntax"

	"github.com/pdsmux/pdsmux/internal/frame"
)

// Mode selects the replica behaviour being modelled (see the package doc).
type Mode int

const (
	ModeCocoon Mode = iota
	ModeOwn
	ModeShared
)

// Store is the database the replicas share: accounts, their blocks and
// the events table.
type Store struct {
	mu       sync.Mutex
	mode     Mode
	accounts map[string]*Account
	order    []string
	events   map[int64][]byte
	seqs     []int64 // sorted keys of events
	counter  int64   // shared seq counter (ModeOwn, ModeShared)
	replicas []*Replica
	rnd      *rand.Rand

	// Overlap is the probability that an event is also streamed live by
	// one other replica (so the merge sees it twice).
	Overlap float64
	// OmitUpdatePrev makes new accounts' update ops carry no prev (Cocoon).
	OmitUpdatePrev bool
	// Now is the store's clock (time.Now by default). It stamps event
	// times, account Created times (the PLC audit log's createdAt) and
	// revs (TIDs of it, kept increasing per repo when it runs backwards or
	// stands still), and seeds ModeCocoon counters at Replica.Start (unix
	// seconds). To make history "in the past", point it at an earlier time,
	// create accounts and write, then restore it:
	//
	//	restore := st.SetNow(func() time.Time { return time.Now().Add(-time.Hour) })
	//	a, _ := r.CreateAccount("old.test") // a.Created an hour ago
	//	r.Write(a.DID, ops...)             // revs are TIDs of an hour ago
	//	restore()                          // later writes: revs of now
	//
	// Assign the field only while nothing else uses the store; use SetNow
	// once replicas serve or other goroutines write.
	Now func() time.Time

	// Lost counts events dropped on a seq collision (ModeCocoon).
	Lost int
	// Emitted counts events stored and streamed.
	Emitted int
}

// NewStore returns an empty store. seed makes overlap choices repeatable.
func NewStore(mode Mode, seed uint64) *Store {
	return &Store{
		mode: mode, accounts: map[string]*Account{}, events: map[int64][]byte{},
		rnd: rand.New(rand.NewPCG(seed, 7)), Now: time.Now,
	}
}

// SetNow replaces the store clock (see Now) under the store lock, so it is
// safe while replicas serve, and returns a func that puts the previous
// clock back.
func (s *Store) SetNow(now func() time.Time) (restore func()) {
	s.mu.Lock()
	prev := s.Now
	s.Now = now
	s.mu.Unlock()
	return func() {
		s.mu.Lock()
		s.Now = prev
		s.mu.Unlock()
	}
}

// Account returns an account by DID.
func (s *Store) Account(did string) *Account {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.accounts[did]
}

// Accounts returns every account in creation order.
func (s *Store) Accounts() []*Account {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*Account, 0, len(s.order))
	for _, d := range s.order {
		out = append(out, s.accounts[d])
	}
	return out
}

// Directory returns an identity directory over the store's accounts (as
// they are at lookup time), for consumers that verify commit signatures.
func (s *Store) Directory() identity.Directory { return storeDirectory{s} }

type storeDirectory struct{ s *Store }

func (d storeDirectory) snapshot() *identity.MockDirectory {
	d.s.mu.Lock()
	defer d.s.mu.Unlock()
	dir := identity.NewMockDirectory()
	for _, did := range d.s.order {
		a := d.s.accounts[did]
		pub, _ := a.Key.PublicKey()
		dir.Insert(identity.Identity{
			DID: syntax.DID(a.DID), Handle: syntax.Handle(a.Handle),
			Keys: map[string]identity.VerificationMethod{"atproto": {Type: "Multikey", PublicKeyMultibase: pub.Multibase()}},
		})
	}
	return dir
}

func (d storeDirectory) LookupHandle(ctx context.Context, h syntax.Handle) (*identity.Identity, error) {
	return d.snapshot().LookupHandle(ctx, h)
}

func (d storeDirectory) LookupDID(ctx context.Context, did syntax.DID) (*identity.Identity, error) {
	return d.snapshot().LookupDID(ctx, did)
}

func (d storeDirectory) Lookup(ctx context.Context, a syntax.AtIdentifier) (*identity.Identity, error) {
	return d.snapshot().Lookup(ctx, a)
}

func (d storeDirectory) Purge(context.Context, syntax.AtIdentifier) error { return nil }

// MaxSeq is the highest seq in the events table (0 if empty).
func (s *Store) MaxSeq() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.maxSeqLocked()
}

func (s *Store) maxSeqLocked() int64 {
	if len(s.seqs) == 0 {
		return 0
	}
	return s.seqs[len(s.seqs)-1]
}

// Events returns a copy of the events table, in seq order.
func (s *Store) Events() [][]byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([][]byte, 0, len(s.seqs))
	for _, q := range s.seqs {
		out = append(out, s.events[q])
	}
	return out
}

// emit assigns a seq through r, stores the event and streams it. It runs
// under s.mu. It returns false when the event was lost to a collision.
func (s *Store) emit(r *Replica, t string, body seqSetter) (bool, error) {
	var seq int64
	if s.mode == ModeCocoon {
		r.counter++
		seq = r.counter
	} else {
		s.counter++
		seq = s.counter
	}
	body.setSeq(seq)
	b, err := frame.Encode(t, body)
	if err != nil {
		return false, err
	}
	if _, taken := s.events[seq]; taken {
		s.Lost++
		return false, nil
	}
	s.events[seq] = b
	i := sort.Search(len(s.seqs), func(i int) bool { return s.seqs[i] >= seq })
	s.seqs = append(s.seqs, 0)
	copy(s.seqs[i+1:], s.seqs[i:])
	s.seqs[i] = seq
	s.Emitted++

	r.lastLive = seq
	switch {
	case s.mode == ModeShared:
		for _, o := range s.replicas {
			o.broadcast(b)
		}
	default:
		r.broadcast(b)
		if s.Overlap > 0 && len(s.replicas) > 1 && s.rnd.Float64() < s.Overlap {
			o := s.replicas[s.rnd.IntN(len(s.replicas))]
			if o != r {
				o.broadcast(b)
			}
		}
	}
	return true, nil
}

// replay returns the stored frames with seq > cursor.
func (s *Store) replay(cursor int64) [][]byte {
	i := sort.Search(len(s.seqs), func(i int) bool { return s.seqs[i] > cursor })
	out := make([][]byte, 0, len(s.seqs)-i)
	for _, q := range s.seqs[i:] {
		out = append(out, s.events[q])
	}
	return out
}

type seqSetter interface {
	frame.Marshaler
	setSeq(int64)
}

type commitBody struct {
	*comatproto.SyncSubscribeRepos_Commit
}

func (c commitBody) setSeq(q int64) { c.Seq = q }

type syncBody struct {
	*comatproto.SyncSubscribeRepos_Sync
}

func (c syncBody) setSeq(q int64) { c.Seq = q }

type identityBody struct {
	*comatproto.SyncSubscribeRepos_Identity
}

func (c identityBody) setSeq(q int64) { c.Seq = q }

type accountBody struct {
	*comatproto.SyncSubscribeRepos_Account
}

func (c accountBody) setSeq(q int64) { c.Seq = q }

func (s *Store) lookup(did string) (*Account, error) {
	a := s.accounts[did]
	if a == nil {
		return nil, fmt.Errorf("fakepds: no account %s", did)
	}
	return a, nil
}

// LastLive is the seq of the last event r stored and streamed itself.
func (r *Replica) LastLive() int64 {
	r.store.mu.Lock()
	defer r.store.mu.Unlock()
	return r.lastLive
}

// Streamed reports whether the events table holds an event of type typ
// (e.g. "#sync") for did: false means the replicas lost every such event.
func (s *Store) Streamed(did, typ string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, b := range s.events {
		in, err := frame.Parse(b, 0)
		if err == nil && in.DID == did && in.Type == typ {
			return true
		}
	}
	return false
}
