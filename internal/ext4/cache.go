package ext4

import (
	"container/list"
	"sync"
)

const cacheShards = 16

// blockCache is a sharded LRU of metadata blocks with a bound on the bytes
// it holds. Cached slices are shared and must never be modified by readers.
type blockCache struct {
	shards [cacheShards]cacheShard
}

type cacheShard struct {
	mu    sync.Mutex
	max   int // blocks
	lru   *list.List
	items map[uint64]*list.Element
}

type cacheEntry struct {
	blk  uint64
	data []byte
}

func newBlockCache(maxBytes int, blockSize uint32) *blockCache {
	per := maxBytes / int(blockSize) / cacheShards
	if per < 4 {
		per = 4
	}
	c := &blockCache{}
	for i := range c.shards {
		c.shards[i].max = per
		c.shards[i].lru = list.New()
		c.shards[i].items = make(map[uint64]*list.Element)
	}
	return c
}

func (c *blockCache) get(blk uint64) []byte {
	s := &c.shards[blk%cacheShards]
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.items[blk]; ok {
		s.lru.MoveToFront(e)
		return e.Value.(*cacheEntry).data
	}
	return nil
}

func (c *blockCache) put(blk uint64, data []byte) {
	s := &c.shards[blk%cacheShards]
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.items[blk]; ok {
		s.lru.MoveToFront(e)
		return
	}
	s.items[blk] = s.lru.PushFront(&cacheEntry{blk, data})
	for s.lru.Len() > s.max {
		old := s.lru.Back()
		s.lru.Remove(old)
		delete(s.items, old.Value.(*cacheEntry).blk)
	}
}
