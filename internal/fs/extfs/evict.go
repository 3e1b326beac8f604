package extfs

import (
	"slices"

	"golang.org/x/sys/unix"
)

// Eviction: the page cache is bounded, as Linux's is by memory. Each
// page costs the engine a descriptor and its content in memory, so a
// walk over more files than the engine may open (tar c /usr, find |
// xargs cat) would otherwise end in EMFILE. Past MaxPages pages or
// MaxBytes bytes, the least recently opened pages are dropped until a
// quarter of the bound is free again, if they are clean (nothing to
// write back, no writer, not an orphan) and no guest holds them.
//
// A clean page has no writer: a guest holding it holds it read-only,
// and dropping the page loses nothing. It is kept anyway, so that a
// later writer's page is the one such readers see. The open that goes
// over a bound makes room, in its syscall: the kernel serves one at a
// time, so no other open is on its way from a page to a guest.

// Defaults of the bounds when Options leave them 0.
const (
	defaultMaxBytes = 512 << 20
	maxPagesCap     = 16384
)

// bounds returns the page cache's bounds: Options', or three quarters of
// the engine's open-file limit (at most maxPagesCap; the engine's other
// descriptors are few) and defaultMaxBytes.
func (o *Options) bounds() (pages int, bytes int64) {
	pages, bytes = o.MaxPages, o.MaxBytes
	if pages <= 0 {
		pages = maxPagesCap
		var rl unix.Rlimit
		if unix.Getrlimit(unix.RLIMIT_NOFILE, &rl) == nil && rl.Cur/4*3 < uint64(pages) {
			pages = max(int(rl.Cur/4*3), 64)
		}
	}
	if bytes <= 0 {
		bytes = defaultMaxBytes
	}
	return pages, bytes
}

// touch records an open of p (p.mu held).
func (f *FS) touch(p *page) { p.used = f.clock.Add(1) }

// overBound reports whether the cache holds more than its bounds allow.
func (f *FS) overBound() bool {
	f.mu.Lock()
	n := len(f.cache)
	f.mu.Unlock()
	return n > f.maxPages || f.bytes.Load() > f.maxBytes
}

// evict drops least recently opened clean pages that no guest holds,
// until the cache is a quarter below its bounds (or nothing more can go).
// A pass that could not get below the bounds (guests hold the pages,
// or they wait for write-back) is not tried again before a quarter of
// MaxPages new pages: the cache goes over, opens stay cheap.
func (f *FS) evict() {
	if !f.overBound() || !f.evictMu.TryLock() {
		return // within bounds, or another open is making room
	}
	defer f.evictMu.Unlock()
	if f.stuck > 0 {
		f.stuck--
		return
	}
	defer func() {
		if f.overBound() {
			f.stuck = f.maxPages / 4
		}
	}()
	type cand struct {
		p    *page
		used int64
	}
	var cands []cand
	for _, p := range f.pages() {
		p.mu.Lock()
		if f.clean(p) && p.identify() == nil {
			cands = append(cands, cand{p, p.used})
		}
		p.mu.Unlock()
	}
	slices.SortFunc(cands, func(a, b cand) int { return int(a.used - b.used) })
	var held map[uint64]bool
	if f.opts.Held != nil {
		held = f.opts.Held()
	}
	wantPages, wantBytes := f.maxPages*3/4, f.maxBytes*3/4
	for _, c := range cands {
		f.mu.Lock()
		n := len(f.cache)
		f.mu.Unlock()
		if n <= wantPages && f.bytes.Load() <= wantBytes {
			return
		}
		p := c.p
		p.mu.Lock()
		if held[p.hostIno] || p.used != c.used || !f.clean(p) {
			p.mu.Unlock()
			continue
		}
		p.evicted = true
		ino := p.hostIno
		p.mu.Unlock()
		f.drop(p)
		if f.opts.Dropped != nil {
			f.opts.Dropped(ino)
		}
	}
}

// clean reports whether dropping p loses nothing (p.mu held): no writer
// since its last write-back, nothing newer in the memfd than in the
// image, not an orphan.
func (f *FS) clean(p *page) bool {
	if p.f == nil || p.orphan || p.written {
		return false
	}
	if !p.writable {
		return true
	}
	var st unix.Stat_t
	return unix.Fstat(int(p.f.Fd()), &st) == nil && st.Size == p.size && st.Mtim == p.mtime
}
