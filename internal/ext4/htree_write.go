package ext4

import (
	"sort"
	"syscall"
)

// htree (dx) directories: block 0 is the root (".", "..", dx_root_info,
// then count/limit and {hash, block} entries), optional interior nodes
// (an empty dirent spanning the block, then count/limit and entries), and
// leaves that are ordinary dirent blocks covering a hash range each. New
// entries go to the leaf their hash selects; a full leaf is split at the
// median hash into a new block (the second half's index entry carries the
// continuation bit when the median hash continues across the split); a
// full root grows the tree to two levels, a full interior node is split in
// two. Without large_dir two levels are the limit, as in the kernel.

func (f *FS) dxLimit(off int) int {
	l := (int(f.bs) - off) / 8
	if f.csum {
		l--
	}
	return l
}

// dxSum stores the dx_tail checksum of an index block whose count/limit
// header is at off.
func (f *FS) dxSum(dir *ibuf, b []byte, off int) {
	if !f.csum {
		return
	}
	limit, count := int(le16(b, off)), int(le16(b, off+2))
	t := off + limit*8
	putLE32(b, t, 0)
	c := crc32c(f.inodeSeed(dir.ino, dir.gen()), b[:off+count*8])
	c = crc32c(c, b[t:t+4])
	c = crc32c(c, []byte{0, 0, 0, 0})
	putLE32(b, t+4, c)
}

func (f *FS) dirHashOf(version uint8, name string) (uint32, uint32) {
	hv := version
	if hv <= 2 && f.sb.Flags&0x2 != 0 {
		hv += 3
	}
	return dirHash(name, hv, f.sb.HashSeed)
}

// dxNodeW is one index block on an insert path.
type dxNodeW struct {
	lblk, pblk uint64
	off        int // count/limit header
	at         int // entry followed
}

func dxCount(b []byte, off int) int { return int(le16(b, off+2)) }

func dxEnt(b []byte, off, i int) (uint32, uint32) {
	o := off + 8*i
	h := le32(b, o)
	if i == 0 {
		h = 0
	}
	return h, le32(b, o+4) & 0x0FFFFFFF
}

// dxPathTo walks from the root to the leaf for hash.
func (f *FS) dxPathTo(d *dirCtx, hash uint32) ([]dxNodeW, uint8, error) {
	rp, err := d.pblk(0)
	if err != nil {
		return nil, 0, err
	}
	root, err := f.block(rp)
	if err != nil {
		return nil, 0, err
	}
	if _, err := f.dxNode(f.parsed(d.ib), root, rp, 0x20); err != nil || root[0x1D] != 8 {
		if err == nil {
			err = corrupt(rp, "directory %d: htree root info length %d", d.ib.ino, root[0x1D])
		}
		return nil, 0, err
	}
	levels := int(root[0x1E])
	if levels > 1 || root[0x1C] > 2 {
		return nil, 0, corrupt(rp, "directory %d: htree root (levels %d, hash %d)", d.ib.ino, levels+1, root[0x1C])
	}
	path := []dxNodeW{{lblk: 0, pblk: rp, off: 0x20}}
	b := root
	for {
		n := &path[len(path)-1]
		cnt := dxCount(b, n.off)
		n.at = sort.Search(cnt-1, func(i int) bool { h, _ := dxEnt(b, n.off, i+1); return h > hash })
		if len(path) > levels {
			return path, root[0x1C], nil
		}
		_, lb := dxEnt(b, n.off, n.at)
		p, err := d.pblk(uint64(lb))
		if err != nil {
			return nil, 0, err
		}
		if b, err = f.block(p); err != nil {
			return nil, 0, err
		}
		if _, err := f.dxNode(f.parsed(d.ib), b, p, 8); err != nil {
			return nil, 0, err
		}
		path = append(path, dxNodeW{lblk: uint64(lb), pblk: p, off: 8})
	}
}

func (f *FS) leafOf(d *dirCtx, path []dxNodeW) (uint64, uint64, error) {
	n := path[len(path)-1]
	b, err := f.block(n.pblk)
	if err != nil {
		return 0, 0, err
	}
	_, lb := dxEnt(b, n.off, n.at)
	p, err := d.pblk(uint64(lb))
	return uint64(lb), p, err
}

// dxFind finds name through the index (following hash collisions into the
// next leaves).
func (f *FS) dxFind(d *dirCtx, name string) (uint64, int, int, error) {
	rp, err := d.pblk(0)
	if err != nil {
		return 0, 0, 0, err
	}
	root, err := f.block(rp)
	if err != nil {
		return 0, 0, 0, err
	}
	hash, _ := f.dirHashOf(root[0x1C], name)
	path, _, err := f.dxPathTo(d, hash)
	if err != nil {
		return 0, 0, 0, err
	}
	for steps := 0; steps < 1<<16; steps++ {
		_, p, err := f.leafOf(d, path)
		if err != nil {
			return 0, 0, 0, err
		}
		b, err := f.block(p)
		if err != nil {
			return 0, 0, 0, err
		}
		if off, prev := f.blockFind(b, name); off >= 0 {
			return p, off, prev, nil
		}
		// Next leaf, if it continues this hash.
		k := len(path) - 1
		for k >= 0 {
			nb, err := f.block(path[k].pblk)
			if err != nil {
				return 0, 0, 0, err
			}
			if path[k].at+1 < dxCount(nb, path[k].off) {
				break
			}
			k--
		}
		if k < 0 {
			break
		}
		path[k].at++
		nb, _ := f.block(path[k].pblk)
		h, _ := dxEnt(nb, path[k].off, path[k].at)
		if h&^1 != hash {
			break
		}
		for k++; k < len(path); k++ {
			pb, _ := f.block(path[k-1].pblk)
			_, lb := dxEnt(pb, path[k-1].off, path[k-1].at)
			p, err := d.pblk(uint64(lb))
			if err != nil {
				return 0, 0, 0, err
			}
			path[k] = dxNodeW{lblk: uint64(lb), pblk: p, off: 8, at: 0}
		}
	}
	return 0, 0, 0, errf(syscall.ENOENT, "%q not in directory %d", name, d.ib.ino)
}

// hent is a directory entry with its hash, for splits.
type hent struct {
	name        string
	ino         uint32
	ft          uint8
	hash, minor uint32
}

func (f *FS) leafEntries(b []byte, version uint8) []hent {
	var out []hent
	end := len(b) - f.tailLen()
	for off := 0; off < end; {
		rl := recLen(le16(b, off+4), f.bs)
		if rl < 8 {
			break
		}
		if ino := le32(b, off); ino != 0 {
			n, _ := f.entName(b, off)
			h, m := f.dirHashOf(version, n)
			ft := uint8(0)
			if f.sb.FeatureIncompat&incompatFiletype != 0 {
				ft = b[off+7]
			}
			out = append(out, hent{n, ino, ft, h, m})
		}
		off += rl
	}
	return out
}

// packLeaf rewrites leaf b with exactly es.
func (f *FS) packLeaf(dir *ibuf, b []byte, es []hent) {
	clear(b)
	end := len(b) - f.tailLen()
	if len(es) == 0 {
		putLE32(b, 0, 0)
		f.putRecLen(b, 0, end)
	}
	off := 0
	for i, e := range es {
		rl := entLen(len(e.name))
		if i == len(es)-1 {
			rl = end - off
		}
		f.putEnt(b, off, e.ino, e.name, e.ft, rl)
		off += rl
	}
	f.leafTail(dir, b)
}

func sortHents(es []hent) {
	sort.SliceStable(es, func(i, j int) bool {
		if es[i].hash != es[j].hash {
			return es[i].hash < es[j].hash
		}
		return es[i].minor < es[j].minor
	})
}

// splitPoint splits sorted es into two halves of about equal bytes; the
// second half's index hash gets the continuation bit when the hash at the
// split continues from the first half.
func splitPoint(es []hent) (int, uint32) {
	total := 0
	for _, e := range es {
		total += entLen(len(e.name))
	}
	acc, s := 0, 0
	for s < len(es)-1 {
		acc += entLen(len(es[s].name))
		s++
		if acc >= total/2 {
			break
		}
	}
	h := es[s].hash
	if es[s-1].hash == h {
		h |= 1
	}
	return s, h
}

// makeIndexed turns a full one-block linear directory into an htree with
// two leaves and adds the entry, as the kernel does.
func (f *FS) makeIndexed(d *dirCtx, name string, ino uint32, ft uint8) error {
	// Two new leaves and perhaps an extent tree block: refuse before
	// anything changes.
	if f.sb.FreeBlocks < 4 {
		return errf(syscall.ENOSPC, "no room to index directory %d", d.ib.ino)
	}
	p0, err := d.pblk(0)
	if err != nil {
		return err
	}
	b0, err := f.mblock(p0)
	if err != nil {
		return err
	}
	version := f.sb.DefHashVersion
	if version > 2 {
		version = hashHalfMD4
	}
	all := f.leafEntries(b0, version)
	var es []hent
	var parent uint32
	for _, e := range all {
		switch e.name {
		case ".":
		case "..":
			parent = e.ino
		default:
			es = append(es, e)
		}
	}
	h, m := f.dirHashOf(version, name)
	es = append(es, hent{name, ino, ft, h, m})
	sortHents(es)
	s, h2 := splitPoint(es)
	l1, b1, err := f.appendBlock(d)
	if err != nil {
		return err
	}
	l2, b2, err := f.appendBlock(d)
	if err != nil {
		return err
	}
	f.packLeaf(d.ib, b1, es[:s])
	f.packLeaf(d.ib, b2, es[s:])
	clear(b0)
	fm := f.ftMask()
	f.putEnt(b0, 0, d.ib.ino, ".", 2&fm, 12)
	f.putEnt(b0, 12, parent, "..", 2&fm, int(f.bs)-12)
	b0[0x1C], b0[0x1D], b0[0x1E], b0[0x1F] = version, 8, 0, 0
	putLE16(b0, 0x20, uint16(f.dxLimit(0x20)))
	putLE16(b0, 0x22, 2)
	putLE32(b0, 0x24, uint32(l1))
	putLE32(b0, 0x28, h2)
	putLE32(b0, 0x2C, uint32(l2))
	d.ib.setFlags(d.ib.flags() | flagIndex)
	f.dxSum(d.ib, b0, 0x20)
	return nil
}

// dxAdd inserts into an indexed directory.
func (f *FS) dxAdd(d *dirCtx, name string, ino uint32, ft uint8) error {
	rp, err := d.pblk(0)
	if err != nil {
		return err
	}
	root, err := f.block(rp)
	if err != nil {
		return err
	}
	version := root[0x1C]
	hash, minor := f.dirHashOf(version, name)
	path, _, err := f.dxPathTo(d, hash)
	if err != nil {
		return err
	}
	_, lp, err := f.leafOf(d, path)
	if err != nil {
		return err
	}
	b, err := f.mblock(lp)
	if err != nil {
		return err
	}
	if f.blockInsert(b, ino, name, ft) {
		f.leafTail(d.ib, b)
		return nil
	}
	// A new leaf, perhaps a new index node, and extent tree blocks for
	// them: refuse before anything changes.
	if f.sb.FreeBlocks < 4 {
		return errf(syscall.ENOSPC, "no room to split a leaf of directory %d", d.ib.ino)
	}
	// Make room in the index first, so that a full index fails before
	// anything moved.
	path, err = f.dxMakeRoom(d, path)
	if err != nil {
		return err
	}
	es := append(f.leafEntries(b, version), hent{name, ino, ft, hash, minor})
	sortHents(es)
	s, h2 := splitPoint(es)
	nl, nb, err := f.appendBlock(d)
	if err != nil {
		return err
	}
	f.packLeaf(d.ib, b, es[:s])
	f.packLeaf(d.ib, nb, es[s:])
	return f.dxInsertAt(d, path[len(path)-1], h2, nl)
}

// dxInsertAt puts (hash, lblk) after the followed entry of node n, which
// has room.
func (f *FS) dxInsertAt(d *dirCtx, n dxNodeW, hash uint32, lblk uint64) error {
	b, err := f.mblock(n.pblk)
	if err != nil {
		return err
	}
	cnt := dxCount(b, n.off)
	pos := n.at + 1
	o := n.off + 8*pos
	copy(b[o+8:n.off+8*(cnt+1)], b[o:n.off+8*cnt])
	putLE32(b, o, hash)
	putLE32(b, o+4, uint32(lblk))
	putLE16(b, n.off+2, uint16(cnt+1))
	f.dxSum(d.ib, b, n.off)
	return nil
}

// dxMakeRoom makes sure the last node of path can take one more entry:
// a full root with one level becomes two levels; a full interior node is
// split into two. It returns the path to the same leaf afterwards.
func (f *FS) dxMakeRoom(d *dirCtx, path []dxNodeW) ([]dxNodeW, error) {
	last := path[len(path)-1]
	b, err := f.block(last.pblk)
	if err != nil {
		return nil, err
	}
	limit := int(le16(b, last.off))
	if dxCount(b, last.off) < limit {
		return path, nil
	}
	if len(path) == 1 {
		// Grow: the root's entries move into a new interior node.
		rb, err := f.mblock(last.pblk)
		if err != nil {
			return nil, err
		}
		cnt := dxCount(rb, 0x20)
		nl, nb, err := f.appendBlock(d)
		if err != nil {
			return nil, err
		}
		putLE32(nb, 0, 0)
		f.putRecLen(nb, 0, int(f.bs))
		nlim := f.dxLimit(8)
		copy(nb[8:8+8*cnt], rb[0x20:0x20+8*cnt])
		putLE16(nb, 8, uint16(nlim))
		putLE16(nb, 10, uint16(cnt))
		f.dxSum(d.ib, nb, 8)
		putLE16(rb, 0x22, 1)
		putLE32(rb, 0x24, uint32(nl))
		rb[0x1E] = 1
		f.dxSum(d.ib, rb, 0x20)
		np, err := d.pblk(nl)
		if err != nil {
			return nil, err
		}
		return []dxNodeW{{lblk: 0, pblk: last.pblk, off: 0x20, at: 0}, {lblk: nl, pblk: np, off: 8, at: last.at}}, nil
	}
	// Split the interior node; the root must have room.
	root := path[0]
	rb, err := f.block(root.pblk)
	if err != nil {
		return nil, err
	}
	if dxCount(rb, 0x20) >= int(le16(rb, 0x20)) {
		return nil, errf(syscall.ENOSPC, "directory %d: htree index full", d.ib.ino)
	}
	ob, err := f.mblock(last.pblk)
	if err != nil {
		return nil, err
	}
	cnt := dxCount(ob, 8)
	half := cnt / 2
	nl, nb, err := f.appendBlock(d)
	if err != nil {
		return nil, err
	}
	putLE32(nb, 0, 0)
	f.putRecLen(nb, 0, int(f.bs))
	moved := cnt - half
	splitHash := le32(ob, 8+8*half)
	copy(nb[8:8+8*moved], ob[8+8*half:8+8*cnt])
	putLE16(nb, 8, uint16(f.dxLimit(8)))
	putLE16(nb, 10, uint16(moved))
	f.dxSum(d.ib, nb, 8)
	putLE16(ob, 10, uint16(half))
	f.dxSum(d.ib, ob, 8)
	if err := f.dxInsertAt(d, root, splitHash, nl); err != nil {
		return nil, err
	}
	np, err := d.pblk(nl)
	if err != nil {
		return nil, err
	}
	if last.at >= half {
		return []dxNodeW{{lblk: 0, pblk: root.pblk, off: 0x20, at: root.at + 1}, {lblk: nl, pblk: np, off: 8, at: last.at - half}}, nil
	}
	return path, nil
}
