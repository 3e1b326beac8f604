package ext4

import (
	"fmt"
	"sort"
)

// run maps n logical blocks starting at lblk to physical blocks starting at
// pblk. Uninitialised runs read as zeros.
type run struct {
	lblk   uint64
	pblk   uint64
	n      uint64
	uninit bool
}

const (
	extentMagic    = 0xF30A
	maxExtentDepth = 5
)

// blockMap returns the sorted, non-overlapping runs of an inode's data.
// Holes are the gaps between runs.
func (f *FS) blockMap(in *Inode) ([]run, error) {
	if in.Flags&flagExtents != 0 {
		w := extentWalk{f: f, in: in, budget: f.sb.BlocksCount + 16}
		if err := w.node(in.iblock[:], 0, -1, 0, ^uint64(0)); err != nil {
			return nil, err
		}
		return w.runs, nil
	}
	return f.indirectMap(in)
}

type extentWalk struct {
	f      *FS
	in     *Inode
	runs   []run
	next   uint64 // lowest logical block the next extent may start at
	budget uint64 // nodes left to visit: stops loops in corrupt trees
}

// node walks one extent node. b is the node (the inode's i_block for the
// root), blk its block number (0 for the root), wantDepth the depth the
// parent expects (-1 for the root); extents must lie in [lo, hi).
func (w *extentWalk) node(b []byte, blk uint64, wantDepth int, lo, hi uint64) error {
	if w.budget == 0 {
		return corrupt(blk, "inode %d: extent tree too large (loop?)", w.in.Ino)
	}
	w.budget--
	where := blk
	if where == 0 {
		where = w.in.block
	}
	if len(b) < 12 || le16(b, 0) != extentMagic {
		return corrupt(where, "inode %d: bad extent header", w.in.Ino)
	}
	entries, max, depth := int(le16(b, 2)), int(le16(b, 4)), int(le16(b, 6))
	if max == 0 || 12+12*max > len(b) || entries > max || depth > maxExtentDepth || (wantDepth >= 0 && depth != wantDepth) {
		return corrupt(where, "inode %d: extent header (entries %d, max %d, depth %d)", w.in.Ino, entries, max, depth)
	}
	if blk != 0 && w.f.csum {
		off := 12 + 12*max
		if off+4 > len(b) {
			return corrupt(blk, "inode %d: extent block without room for its checksum", w.in.Ino)
		}
		got := crc32c(w.f.inodeSeed(w.in.Ino, w.in.Generation), b[:off])
		if want := le32(b, off); got != want {
			return &ChecksumError{What: fmt.Sprintf("inode %d extent block", w.in.Ino), Block: blk, Want: want, Got: got}
		}
	}
	for i := 0; i < entries; i++ {
		e := b[12+12*i : 24+12*i]
		first := uint64(le32(e, 0))
		if first < lo || first >= hi {
			return corrupt(where, "inode %d: extent entry for block %d outside [%d,%d)", w.in.Ino, first, lo, hi)
		}
		if depth == 0 {
			n := uint64(le16(e, 4))
			uninit := false
			if n > 32768 {
				n -= 32768
				uninit = true
			}
			p := uint64(le32(e, 8)) | uint64(le16(e, 6))<<32
			if n == 0 {
				continue
			}
			if first < w.next || first+n > hi || p == 0 || p+n > w.f.sb.BlocksCount {
				return corrupt(where, "inode %d: extent (%d+%d -> %d) out of order or out of range", w.in.Ino, first, n, p)
			}
			w.next = first + n
			if k := len(w.runs) - 1; k >= 0 {
				r := &w.runs[k]
				if r.lblk+r.n == first && r.pblk+r.n == p && r.uninit == uninit {
					r.n += n
					continue
				}
			}
			w.runs = append(w.runs, run{lblk: first, pblk: p, n: n, uninit: uninit})
			continue
		}
		child := uint64(le32(e, 4)) | uint64(le16(e, 8))<<32
		end := hi
		if i+1 < entries {
			end = uint64(le32(b, 12+12*(i+1)))
			if end <= first {
				return corrupt(where, "inode %d: extent index out of order", w.in.Ino)
			}
		}
		cb, err := w.f.block(child)
		if err != nil {
			return fmt.Errorf("inode %d extent block: %w", w.in.Ino, err)
		}
		if err := w.node(cb, child, depth-1, first, end); err != nil {
			return err
		}
	}
	return nil
}

// indirectMap decodes an ext2/ext3 block map: 12 direct pointers, then
// single, double and triple indirect blocks.
func (f *FS) indirectMap(in *Inode) ([]run, error) {
	var runs []run
	per := uint64(f.bs / 4)
	add := func(l, p uint64) error {
		if p == 0 {
			return nil
		}
		if p >= f.sb.BlocksCount {
			return corrupt(in.block, "inode %d: block pointer %d beyond the filesystem", in.Ino, p)
		}
		if k := len(runs) - 1; k >= 0 && runs[k].lblk+runs[k].n == l && runs[k].pblk+runs[k].n == p {
			runs[k].n++
			return nil
		}
		runs = append(runs, run{lblk: l, pblk: p, n: 1})
		return nil
	}
	// Only map as far as the file size needs: blocks past EOF are not data.
	limit := (in.Size + uint64(f.bs) - 1) / uint64(f.bs)
	budget := f.sb.BlocksCount + 16 // indirect blocks left to visit
	var walk func(blk uint64, level int, base uint64) error
	walk = func(blk uint64, level int, base uint64) error {
		if blk == 0 || base >= limit {
			return nil
		}
		if budget == 0 {
			return corrupt(in.block, "inode %d: block map too large (loop?)", in.Ino)
		}
		budget--
		if blk >= f.sb.BlocksCount {
			return corrupt(in.block, "inode %d: indirect block %d beyond the filesystem", in.Ino, blk)
		}
		b, err := f.block(blk)
		if err != nil {
			return fmt.Errorf("inode %d indirect block: %w", in.Ino, err)
		}
		span := uint64(1)
		for i := 0; i < level; i++ {
			span *= per
		}
		for i := uint64(0); i < per; i++ {
			p := uint64(le32(b, int(4*i)))
			l := base + i*span
			if l >= limit {
				break
			}
			if level == 0 {
				if err := add(l, p); err != nil {
					return err
				}
			} else if err := walk(p, level-1, l); err != nil {
				return err
			}
		}
		return nil
	}
	for i := uint64(0); i < 12 && i < limit; i++ {
		if err := add(i, uint64(le32(in.iblock[:], int(4*i)))); err != nil {
			return nil, err
		}
	}
	base := uint64(12)
	for level := 0; level < 3; level++ {
		if err := walk(uint64(le32(in.iblock[:], 48+4*level)), level, base); err != nil {
			return nil, err
		}
		span := per
		for i := 0; i < level; i++ {
			span *= per
		}
		base += span
	}
	return runs, nil
}

// findRun returns the index of the run holding lblk, or the index of the
// first run after it (len(runs) when none) with ok false.
func findRun(runs []run, lblk uint64) (int, bool) {
	i := sort.Search(len(runs), func(i int) bool { return runs[i].lblk+runs[i].n > lblk })
	return i, i < len(runs) && runs[i].lblk <= lblk
}
