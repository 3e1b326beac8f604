package ext4

import (
	"errors"
	"fmt"
	"syscall"
)

// Extent trees are kept in their most compact form: every change to a
// file's mapping edits the sorted run list (insert, merge, split, convert
// unwritten runs) and stores the tree again with the least depth and the
// fewest nodes that hold it, reusing the inode's existing tree blocks. So
// depth grows and collapses as needed and e2fsck never finds a tree that
// "could be narrower" or "shorter". The cost is O(extents) per mapping
// change, which is small for the files a guest writes (contiguous
// allocation keeps the run list short).

const (
	maxInitLen   = 32768
	maxUninitLen = 32767
	maxLblk      = 1<<32 - 1
)

// fileMap is an extent-mapped inode's runs and its tree blocks.
type fileMap struct {
	runs  []run
	nodes []uint64
}

func (f *FS) loadMap(ib *ibuf) (*fileMap, error) {
	if ib.flags()&flagExtents == 0 {
		return nil, fmt.Errorf("inode %d uses an ext2/ext3 block map, which this driver does not write: %w", ib.ino, ErrReadOnly)
	}
	in := f.parsed(ib)
	runs, err := f.blockMap(in)
	if err != nil {
		return nil, err
	}
	m := &fileMap{runs: runs}
	var walk func(b []byte, depth int) error
	walk = func(b []byte, depth int) error {
		if depth == 0 {
			return nil
		}
		n := int(le16(b, 2))
		for i := 0; i < n; i++ {
			e := b[12+12*i:]
			child := uint64(le32(e, 4)) | uint64(le16(e, 8))<<32
			m.nodes = append(m.nodes, child)
			if depth > 1 {
				cb, err := f.block(child)
				if err != nil {
					return err
				}
				if err := walk(cb, depth-1); err != nil {
					return err
				}
			}
		}
		return nil
	}
	root := ib.iblock()
	if err := walk(root, int(le16(root, 6))); err != nil {
		return nil, err
	}
	return m, nil
}

// setRange maps [l, l+n) to p.. (unmaps it when p is 0), splitting the
// runs it overlaps, and merges neighbours.
func setRange(runs []run, l, n, p uint64, uninit bool) []run {
	out := make([]run, 0, len(runs)+2)
	end := l + n
	placed := false
	place := func() {
		if !placed && p != 0 {
			out = appendMerge(out, run{lblk: l, pblk: p, n: n, uninit: uninit})
		}
		placed = true
	}
	for _, r := range runs {
		re := r.lblk + r.n
		if re <= l {
			out = appendMerge(out, r)
			continue
		}
		if r.lblk >= end {
			place()
			out = appendMerge(out, r)
			continue
		}
		if r.lblk < l {
			out = appendMerge(out, run{lblk: r.lblk, pblk: r.pblk, n: l - r.lblk, uninit: r.uninit})
		}
		if re > end {
			place()
			out = appendMerge(out, run{lblk: end, pblk: r.pblk + end - r.lblk, n: re - end, uninit: r.uninit})
		}
	}
	place()
	return out
}

func appendMerge(out []run, r run) []run {
	if k := len(out) - 1; k >= 0 {
		q := &out[k]
		if q.lblk+q.n == r.lblk && q.pblk+q.n == r.pblk && q.uninit == r.uninit {
			q.n += r.n
			return out
		}
	}
	return append(out, r)
}

// rangeRuns returns the parts of runs inside [l, l+n).
func rangeRuns(runs []run, l, n uint64) []run {
	var out []run
	end := l + n
	for _, r := range runs {
		s, e := max(r.lblk, l), min(r.lblk+r.n, end)
		if s < e {
			out = append(out, run{lblk: s, pblk: r.pblk + s - r.lblk, n: e - s, uninit: r.uninit})
		}
	}
	return out
}

type extent struct {
	lblk, pblk uint64
	n          uint64
	uninit     bool
}

func splitExtents(runs []run) []extent {
	var out []extent
	for _, r := range runs {
		lim := uint64(maxInitLen)
		if r.uninit {
			lim = maxUninitLen
		}
		for done := uint64(0); done < r.n; {
			c := min(lim, r.n-done)
			out = append(out, extent{r.lblk + done, r.pblk + done, c, r.uninit})
			done += c
		}
	}
	return out
}

// storeMap writes runs as ib's extent tree (not ib itself, whose i_block
// and i_blocks it changes). On ENOSPC nothing has changed.
func (f *FS) storeMap(ib *ibuf, m *fileMap, runs []run) error {
	exts := splitExtents(runs)
	cap := (int(f.bs) - 12) / 12
	// Level sizes, leaves first.
	var levels []int
	for cnt := len(exts); cnt > 4; {
		nodes := (cnt + cap - 1) / cap
		levels = append(levels, nodes)
		cnt = nodes
	}
	if len(levels) > maxExtentDepth {
		return errf(syscall.EFBIG, "inode %d: extent tree too deep", ib.ino)
	}
	need := 0
	for _, c := range levels {
		need += c
	}
	blocks := append([]uint64(nil), m.nodes...)
	var fresh [][2]uint64
	goal := uint64(0)
	if len(runs) > 0 {
		goal = runs[0].pblk
	}
	for len(blocks) < need {
		p, n, err := f.allocBlocks(goal, uint64(need-len(blocks)))
		if err != nil {
			for _, fr := range fresh {
				f.freeBlocks(fr[0], fr[1])
			}
			return err
		}
		fresh = append(fresh, [2]uint64{p, n})
		for i := uint64(0); i < n; i++ {
			blocks = append(blocks, p+i)
		}
	}
	for _, b := range blocks[need:] {
		if err := f.freeBlocks(b, 1); err != nil {
			return err
		}
	}
	if err := f.addBlocks(ib, int64(need)-int64(len(m.nodes))); err != nil {
		return err
	}
	blocks = blocks[:need]
	m.nodes = blocks
	m.runs = runs
	// Entries of the current level: (first lblk, extent or child block).
	type ent struct {
		lblk uint64
		ext  extent
		kid  uint64
	}
	cur := make([]ent, len(exts))
	for i, e := range exts {
		cur[i] = ent{lblk: e.lblk, ext: e}
	}
	seed := f.inodeSeed(ib.ino, ib.gen())
	fill := func(b []byte, es []ent, max, depth int) {
		putLE16(b, 0, extentMagic)
		putLE16(b, 2, uint16(len(es)))
		putLE16(b, 4, uint16(max))
		putLE16(b, 6, uint16(depth))
		putLE32(b, 8, 0)
		for i, e := range es {
			o := b[12+12*i:]
			putLE32(o, 0, uint32(e.lblk))
			if depth == 0 {
				n := uint16(e.ext.n)
				if e.ext.uninit {
					n += maxInitLen
				}
				putLE16(o, 4, n)
				putLE16(o, 6, uint16(e.ext.pblk>>32))
				putLE32(o, 8, uint32(e.ext.pblk))
			} else {
				putLE32(o, 4, uint32(e.kid))
				putLE16(o, 8, uint16(e.kid>>32))
				putLE16(o, 10, 0)
			}
		}
	}
	next := 0
	for depth, nodes := range levels {
		var up []ent
		per, extra := len(cur)/nodes, len(cur)%nodes
		at := 0
		for k := 0; k < nodes; k++ {
			cnt := per
			if k < extra {
				cnt++
			}
			blk := blocks[next]
			next++
			b := f.newMeta(blk)
			fill(b, cur[at:at+cnt], cap, depth)
			if f.csum {
				putLE32(b, 12+12*cap, crc32c(seed, b[:12+12*cap]))
			}
			up = append(up, ent{lblk: cur[at].lblk, kid: blk})
			at += cnt
		}
		cur = up
	}
	root := ib.iblock()
	clear(root)
	fill(root, cur, 4, len(levels))
	return nil
}

// fileGoal is where new blocks for logical block l of ib should go: after
// the physical block mapped just before l, else in the inode's group.
func (f *FS) fileGoal(ib *ibuf, runs []run, l uint64) uint64 {
	i, _ := findRun(runs, l)
	if i > 0 {
		r := runs[i-1]
		return r.pblk + r.n + (l - r.lblk - r.n)
	}
	if i < len(runs) && runs[i].pblk > runs[i].lblk-l {
		return runs[i].pblk - (runs[i].lblk - l)
	}
	return f.groupFirst(f.inodeGroup(ib.ino))
}

// allocRange maps every hole of [l, l+n) to new blocks (unwritten when
// uninit), returning the new runs and the fresh allocations; on error every
// fresh block is freed again.
func (f *FS) allocRange(ib *ibuf, runs []run, l, n uint64, uninit bool) ([]run, []run, error) {
	var fresh []run
	end := l + n
	out := runs
	for pos := l; pos < end; {
		i, ok := findRun(out, pos)
		if ok {
			pos = out[i].lblk + out[i].n
			continue
		}
		hole := end
		if i < len(out) && out[i].lblk < hole {
			hole = out[i].lblk
		}
		goal := f.fileGoal(ib, out, pos)
		for pos < hole {
			p, got, err := f.allocBlocks(goal, hole-pos)
			if err != nil {
				for _, r := range fresh {
					f.freeBlocks(r.pblk, r.n)
				}
				return nil, nil, err
			}
			fresh = append(fresh, run{lblk: pos, pblk: p, n: got, uninit: uninit})
			out = setRange(out, pos, got, p, uninit)
			pos += got
			goal = p + got
		}
	}
	return out, fresh, nil
}

func (f *FS) regular(ino uint32) (*ibuf, error) {
	ib, err := f.getInode(ino)
	if err != nil {
		return nil, err
	}
	switch ib.mode() & S_IFMT {
	case S_IFREG:
	case S_IFDIR:
		return nil, errf(syscall.EISDIR, "inode %d", ino)
	default:
		return nil, errf(syscall.EINVAL, "inode %d is not a regular file", ino)
	}
	if ib.links() == 0 && !f.w.orphans[ino] {
		return nil, errf(syscall.ENOENT, "inode %d is not in use", ino)
	}
	return ib, nil
}

func (f *FS) maxBytes() uint64 { return uint64(maxLblk) * uint64(f.bs) }

// WriteAt writes p at off into regular file ino, allocating blocks for
// holes and converting unwritten extents it covers. When the filesystem
// cannot hold all of p, it writes the longest prefix that fits and returns
// its length with no error, as write(2) does; when not even one block
// fits, it writes nothing and returns ENOSPC. Data goes straight to the
// device; metadata stays dirty until Sync.
func (f *FS) WriteAt(ino uint32, p []byte, off int64) (int, error) {
	unlock, err := f.wlock()
	if err != nil {
		return 0, err
	}
	defer unlock()
	n, err := f.writeAt(ino, p, off)
	if err == nil || !errors.Is(err, syscall.ENOSPC) || off < 0 {
		return n, err
	}
	// Find the longest prefix, ending on a block boundary, that fits
	// (each failed try leaves nothing behind).
	bs := int64(f.bs)
	first := off/bs + 1 // the prefix ends at a block boundary past off
	last := (off + int64(len(p)) - 1) / bs
	lo, hi := first, last // candidate end blocks (exclusive end = k*bs)
	best := 0
	for lo <= hi {
		mid := lo + (hi-lo)/2
		k := int(mid*bs - off)
		if m, err := f.writeAt(ino, p[:k], off); err == nil {
			// Written: keep it and try longer (a longer try rewrites
			// the same bytes first).
			best = m
			lo = mid + 1
		} else if errors.Is(err, syscall.ENOSPC) {
			hi = mid - 1
		} else {
			return best, err
		}
	}
	if best == 0 {
		return 0, err
	}
	return best, nil
}

func (f *FS) writeAt(ino uint32, p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, errf(syscall.EINVAL, "inode %d: negative offset", ino)
	}
	ib, err := f.regular(ino)
	if err != nil {
		return 0, err
	}
	if len(p) == 0 {
		return 0, nil
	}
	if uint64(off)+uint64(len(p)) > f.maxBytes() {
		return 0, errf(syscall.EFBIG, "inode %d: write past %d bytes", ino, f.maxBytes())
	}
	m, err := f.loadMap(ib)
	if err != nil {
		return 0, err
	}
	bs := uint64(f.bs)
	first, last := uint64(off)/bs, (uint64(off)+uint64(len(p))-1)/bs
	n := last - first + 1
	// Unwritten runs in the range become written; holes get new blocks.
	old := rangeRuns(m.runs, first, n)
	runs := m.runs
	for _, r := range old {
		if r.uninit {
			runs = setRange(runs, r.lblk, r.n, r.pblk, false)
		}
	}
	runs, fresh, err := f.allocRange(ib, runs, first, n, false)
	if err != nil {
		return 0, err
	}
	var allocated uint64
	for _, r := range fresh {
		allocated += r.n
	}
	changed := len(fresh) > 0 || len(runs) != len(m.runs)
	if !changed {
		for i := range runs {
			if runs[i] != m.runs[i] {
				changed = true
				break
			}
		}
	}
	if changed {
		if err := f.storeMap(ib, m, runs); err != nil {
			for _, r := range fresh {
				f.freeBlocks(r.pblk, r.n)
			}
			return 0, err
		}
	}
	if err := f.addBlocks(ib, int64(allocated)); err != nil {
		return 0, err
	}
	// Blocks that were holes or unwritten get zeros around the data.
	var zeroed []run
	for _, r := range old {
		if r.uninit {
			zeroed = setRange(zeroed, r.lblk, r.n, 1, false)
		}
	}
	for _, r := range fresh {
		zeroed = setRange(zeroed, r.lblk, r.n, 1, false)
	}
	if err := f.writeRange(runs, p, uint64(off), zeroed); err != nil {
		return 0, err
	}
	if end := uint64(off) + uint64(len(p)); end > ib.size() {
		f.setSize(ib, end)
	}
	f.setTime(ib, tMtime|tCtime, f.w.now())
	if err := f.putInode(ib); err != nil {
		return 0, err
	}
	return len(p), nil
}

// writeRange writes p at byte off through the (now complete) mapping;
// blocks in zeroed get zeros in the parts p does not cover.
func (f *FS) writeRange(runs []run, p []byte, off uint64, zr []run) error {
	bs := uint64(f.bs)
	zeroed := func(l uint64) bool { _, ok := findRun(zr, l); return ok }
	end := off + uint64(len(p))
	for pos := off; pos < end; {
		l := pos / bs
		i, ok := findRun(runs, l)
		if !ok {
			return fmt.Errorf("inode data: block %d unmapped after allocation", l)
		}
		r := runs[i]
		// Contiguous bytes in this run.
		stop := min(end, (r.lblk+r.n)*bs)
		phys := (r.pblk+l-r.lblk)*bs + pos%bs
		// Head block partially covered and fresh: pad with zeros.
		if zeroed(l) && (pos%bs != 0 || stop-pos < bs) {
			blk := make([]byte, bs)
			bend := min(stop, (l+1)*bs)
			copy(blk[pos%bs:], p[pos-off:bend-off])
			if err := f.writeData(blk, int64((r.pblk+l-r.lblk)*bs)); err != nil {
				return err
			}
			pos = bend
			continue
		}
		// Whole blocks (or a partial tail of an old block) straight from p;
		// a fresh partial tail block is handled by the next iteration.
		body := stop
		if lt := (stop - 1) / bs; zeroed(lt) && stop%bs != 0 && lt > l {
			body = lt * bs
		}
		if err := f.writeData(p[pos-off:body-off], int64(phys)); err != nil {
			return err
		}
		pos = body
	}
	return nil
}

// Truncate sets the size of regular file ino, freeing the blocks past the
// new end (and unwritten preallocations past it) or extending with a hole.
func (f *FS) Truncate(ino uint32, size uint64) error {
	unlock, err := f.wlock()
	if err != nil {
		return err
	}
	defer unlock()
	return f.truncate(ino, size)
}

func (f *FS) truncate(ino uint32, size uint64) error {
	ib, err := f.regular(ino)
	if err != nil {
		return err
	}
	if size > f.maxBytes() {
		return errf(syscall.EFBIG, "inode %d: size %d", ino, size)
	}
	old := ib.size()
	bs := uint64(f.bs)
	if size < old || ib.flags()&flagExtents != 0 {
		m, err := f.loadMap(ib)
		if err != nil {
			return err
		}
		// The tail of the new last block must read as zeros if the file
		// grows again.
		if size%bs != 0 && size < old {
			l := size / bs
			if i, ok := findRun(m.runs, l); ok && !m.runs[i].uninit {
				r := m.runs[i]
				z := make([]byte, min(bs-size%bs, old-size))
				if err := f.writeData(z, int64((r.pblk+l-r.lblk)*bs+size%bs)); err != nil {
					return err
				}
			}
		}
		if err := f.truncateBlocksMap(ib, m, (size+bs-1)/bs); err != nil {
			return err
		}
	}
	f.setSize(ib, size)
	f.setTime(ib, tMtime|tCtime, f.w.now())
	return f.putInode(ib)
}

// truncateBlocks frees every block of ib from logical block keep on.
func (f *FS) truncateBlocks(ib *ibuf, keep uint64) error {
	m, err := f.loadMap(ib)
	if err != nil {
		return err
	}
	return f.truncateBlocksMap(ib, m, keep)
}

func (f *FS) truncateBlocksMap(ib *ibuf, m *fileMap, keep uint64) error {
	if len(m.runs) == 0 || m.runs[len(m.runs)-1].lblk+m.runs[len(m.runs)-1].n <= keep {
		return nil
	}
	return f.unmapRange(ib, m, keep, maxLblk+1-keep)
}

// unmapRange frees the blocks mapped in [l, l+n) and stores the map.
func (f *FS) unmapRange(ib *ibuf, m *fileMap, l, n uint64) error {
	gone := rangeRuns(m.runs, l, n)
	if len(gone) == 0 {
		return nil
	}
	runs := setRange(m.runs, l, n, 0, false)
	// Store first: a smaller tree never needs new blocks.
	if err := f.storeMap(ib, m, runs); err != nil {
		return err
	}
	var freed uint64
	for _, r := range gone {
		if err := f.freeBlocks(r.pblk, r.n); err != nil {
			return err
		}
		freed += r.n
	}
	return f.addBlocks(ib, -int64(freed))
}

// Fallocate modes (the Linux FALLOC_FL_* values).
const (
	FallocKeepSize  = 0x1
	FallocPunchHole = 0x2
	FallocZeroRange = 0x10
)

// Fallocate preallocates (mode 0 or FallocKeepSize: unwritten extents that
// read as zeros), punches a hole (FallocPunchHole|FallocKeepSize) or
// zeroes a range (FallocZeroRange, optionally with FallocKeepSize) of
// regular file ino.
func (f *FS) Fallocate(ino uint32, mode uint32, off, length int64) error {
	unlock, err := f.wlock()
	if err != nil {
		return err
	}
	defer unlock()
	if off < 0 || length <= 0 {
		return errf(syscall.EINVAL, "fallocate: offset %d length %d", off, length)
	}
	if mode&^(FallocKeepSize|FallocPunchHole|FallocZeroRange) != 0 ||
		mode&FallocPunchHole != 0 && mode&FallocKeepSize == 0 ||
		mode&FallocPunchHole != 0 && mode&FallocZeroRange != 0 {
		return errf(syscall.EOPNOTSUPP, "fallocate mode %#x", mode)
	}
	ib, err := f.regular(ino)
	if err != nil {
		return err
	}
	end := uint64(off) + uint64(length)
	if end > f.maxBytes() {
		return errf(syscall.EFBIG, "fallocate past %d bytes", f.maxBytes())
	}
	m, err := f.loadMap(ib)
	if err != nil {
		return err
	}
	bs := uint64(f.bs)
	if mode&(FallocPunchHole|FallocZeroRange) != 0 {
		// Zero the partial blocks at the edges, unmap the whole ones.
		size := ib.size()
		zeroPart := func(a, b uint64) error {
			if b > size {
				b = size
			}
			if a >= b {
				return nil
			}
			l := a / bs
			if i, ok := findRun(m.runs, l); ok && !m.runs[i].uninit {
				r := m.runs[i]
				return f.writeData(make([]byte, b-a), int64((r.pblk+l-r.lblk)*bs+a%bs))
			}
			return nil
		}
		lo, hi := (uint64(off)+bs-1)/bs, end/bs
		if lo > hi {
			// Inside one block.
			if err := zeroPart(uint64(off), end); err != nil {
				return err
			}
		} else {
			if err := zeroPart(uint64(off), lo*bs); err != nil {
				return err
			}
			if err := zeroPart(hi*bs, end); err != nil {
				return err
			}
			if hi > lo {
				if err := f.unmapRange(ib, m, lo, hi-lo); err != nil {
					return err
				}
			}
		}
		if mode&FallocPunchHole != 0 {
			f.setTime(ib, tMtime|tCtime, f.w.now())
			return f.putInode(ib)
		}
	}
	first, count := uint64(off)/bs, (end-1)/bs-uint64(off)/bs+1
	if mode&FallocZeroRange != 0 {
		// Whole blocks only: the edges keep their (now zeroed) data.
		lo, hi := (uint64(off)+bs-1)/bs, end/bs
		first, count = lo, 0
		if hi > lo {
			count = hi - lo
		}
	}
	if count > 0 {
		runs, fresh, err := f.allocRange(ib, m.runs, first, count, true)
		if err != nil {
			return err
		}
		if len(fresh) > 0 {
			if err := f.storeMap(ib, m, runs); err != nil {
				for _, r := range fresh {
					f.freeBlocks(r.pblk, r.n)
				}
				return err
			}
			var n uint64
			for _, r := range fresh {
				n += r.n
			}
			if err := f.addBlocks(ib, int64(n)); err != nil {
				return err
			}
		}
	}
	if mode&FallocKeepSize == 0 && end > ib.size() {
		f.setSize(ib, end)
	}
	f.setTime(ib, tCtime, f.w.now())
	if mode&FallocZeroRange != 0 {
		f.setTime(ib, tMtime, f.w.now())
	}
	return f.putInode(ib)
}
