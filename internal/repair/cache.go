package repair

import (
	"container/list"
	"sync"

	"github.com/ipfs/go-cid"
)

// DefaultCacheBytes bounds the block cache.
const DefaultCacheBytes = 64 << 20

// blockCache is an LRU of verified blocks by CID. Blocks are
// content-addressed, so an entry is never stale; MST nodes shared by
// successive trees of a repo are fetched once.
type blockCache struct {
	mu    sync.Mutex
	max   int
	size  int
	order *list.List // front = most recent
	items map[cid.Cid]*list.Element
}

type cacheEntry struct {
	c    cid.Cid
	data []byte
}

func newBlockCache(max int) *blockCache {
	return &blockCache{max: max, order: list.New(), items: map[cid.Cid]*list.Element{}}
}

func (b *blockCache) get(c cid.Cid) ([]byte, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	e, ok := b.items[c]
	if !ok {
		return nil, false
	}
	b.order.MoveToFront(e)
	return e.Value.(*cacheEntry).data, true
}

func (b *blockCache) put(c cid.Cid, data []byte) {
	if len(data) > b.max/8 {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.items[c]; ok {
		return
	}
	b.items[c] = b.order.PushFront(&cacheEntry{c: c, data: data})
	b.size += len(data)
	for b.size > b.max {
		last := b.order.Back()
		ent := last.Value.(*cacheEntry)
		b.order.Remove(last)
		delete(b.items, ent.c)
		b.size -= len(ent.data)
	}
}
