package blocks

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"

	blockformat "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	ipld "github.com/ipfs/go-ipld-format"
	car "github.com/ipld/go-car"
	carutil "github.com/ipld/go-car/util"
	"github.com/multiformats/go-multihash"
)

// ErrHashMismatch means a block's bytes do not hash to its CID (a replica
// answered getBlocks for a block it does not have, or corruption).
var ErrHashMismatch = errors.New("blocks: block does not match its CID")

// Set is an insertion-ordered in-memory block set. It implements
// blockstore.Blockstore, so indigo's MST code can read from and write into
// it. It is not safe for concurrent use.
type Set struct {
	data  map[cid.Cid][]byte
	order []cid.Cid
}

// NewSet returns an empty Set.
func NewSet() *Set { return &Set{data: map[cid.Cid][]byte{}} }

// Len is the number of blocks.
func (s *Set) Len() int { return len(s.order) }

// Size is the total of the blocks' data lengths.
func (s *Set) Size() int {
	n := 0
	for _, b := range s.data {
		n += len(b)
	}
	return n
}

// Add stores data under c without checking it.
func (s *Set) Add(c cid.Cid, data []byte) {
	if _, ok := s.data[c]; !ok {
		s.order = append(s.order, c)
	}
	s.data[c] = data
}

// AddRaw computes the dag-cbor CID of data, stores it, and returns the CID.
func (s *Set) AddRaw(data []byte) (cid.Cid, error) {
	c, err := CBORCID(data)
	if err != nil {
		return cid.Undef, err
	}
	s.Add(c, data)
	return c, nil
}

// Lookup returns a block's data.
func (s *Set) Lookup(c cid.Cid) ([]byte, bool) {
	b, ok := s.data[c]
	return b, ok
}

// CIDs returns the CIDs in insertion order.
func (s *Set) CIDs() []cid.Cid { return append([]cid.Cid(nil), s.order...) }

// Merge adds every block of o.
func (s *Set) Merge(o *Set) {
	for _, c := range o.order {
		s.Add(c, o.data[c])
	}
}

// CBORCID is the CIDv1 (dag-cbor, sha2-256) of data.
func CBORCID(data []byte) (cid.Cid, error) {
	return cid.NewPrefixV1(cid.DagCBOR, multihash.SHA2_256).Sum(data)
}

// Verify checks that data hashes to c.
func Verify(c cid.Cid, data []byte) error {
	got, err := c.Prefix().Sum(data)
	if err != nil {
		return fmt.Errorf("blocks: hash %s: %w", c, err)
	}
	if !got.Equals(c) {
		return fmt.Errorf("%w: %s (%d bytes)", ErrHashMismatch, c, len(data))
	}
	return nil
}

// Blockstore interface.

func (s *Set) DeleteBlock(_ context.Context, c cid.Cid) error {
	if _, ok := s.data[c]; !ok {
		return nil
	}
	delete(s.data, c)
	for i, o := range s.order {
		if o.Equals(c) {
			s.order = append(s.order[:i], s.order[i+1:]...)
			break
		}
	}
	return nil
}

func (s *Set) Has(_ context.Context, c cid.Cid) (bool, error) {
	_, ok := s.data[c]
	return ok, nil
}

func (s *Set) Get(_ context.Context, c cid.Cid) (blockformat.Block, error) {
	b, ok := s.data[c]
	if !ok {
		return nil, ipld.ErrNotFound{Cid: c}
	}
	return blockformat.NewBlockWithCid(b, c)
}

func (s *Set) GetSize(_ context.Context, c cid.Cid) (int, error) {
	b, ok := s.data[c]
	if !ok {
		return 0, ipld.ErrNotFound{Cid: c}
	}
	return len(b), nil
}

func (s *Set) Put(_ context.Context, b blockformat.Block) error {
	s.Add(b.Cid(), b.RawData())
	return nil
}

func (s *Set) PutMany(ctx context.Context, bs []blockformat.Block) error {
	for _, b := range bs {
		s.Add(b.Cid(), b.RawData())
	}
	return nil
}

func (s *Set) AllKeysChan(ctx context.Context) (<-chan cid.Cid, error) {
	ch := make(chan cid.Cid, len(s.order))
	for _, c := range s.order {
		ch <- c
	}
	close(ch)
	return ch, nil
}

func (s *Set) HashOnRead(bool) {}

// WriteCAR writes a CARv1 with one root (none if root is cid.Undef) and
// the given blocks, in order.
func WriteCAR(w io.Writer, root cid.Cid, s *Set) error {
	roots := []cid.Cid{}
	if root.Defined() {
		roots = append(roots, root)
	}
	if err := car.WriteHeader(&car.CarHeader{Roots: roots, Version: 1}, w); err != nil {
		return fmt.Errorf("blocks: write CAR header: %w", err)
	}
	for _, c := range s.order {
		if err := carutil.LdWrite(w, c.Bytes(), s.data[c]); err != nil {
			return fmt.Errorf("blocks: write CAR block: %w", err)
		}
	}
	return nil
}

// CAR returns WriteCAR's output as bytes.
func CAR(root cid.Cid, s *Set) ([]byte, error) {
	var buf bytes.Buffer
	if err := WriteCAR(&buf, root, s); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// ReadCAR reads a CARv1, verifying every block against its CID. It returns
// the first root (cid.Undef if none), the blocks that verified, and the
// CIDs of blocks whose bytes did not match (left out of the set: Cocoon's
// getBlocks answers a block it lacks with empty bytes).
func ReadCAR(r io.Reader) (cid.Cid, *Set, []cid.Cid, error) {
	br := bufio.NewReader(r)
	h, err := car.ReadHeader(br)
	if err != nil {
		return cid.Undef, nil, nil, fmt.Errorf("blocks: read CAR header: %w", err)
	}
	if h.Version != 1 {
		return cid.Undef, nil, nil, fmt.Errorf("blocks: CAR version %d, want 1", h.Version)
	}
	root := cid.Undef
	if len(h.Roots) > 0 {
		root = h.Roots[0]
	}
	s := NewSet()
	var bad []cid.Cid
	for {
		c, data, err := carutil.ReadNode(br)
		if errors.Is(err, io.EOF) {
			return root, s, bad, nil
		}
		if err != nil {
			return cid.Undef, nil, nil, fmt.Errorf("blocks: read CAR block: %w", err)
		}
		if Verify(c, data) != nil {
			bad = append(bad, c)
			continue
		}
		s.Add(c, data)
	}
}
