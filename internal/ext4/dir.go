package ext4

import (
	"errors"
	"fmt"
	"sort"
)

// DirEntry is one directory entry as ReadDir returns it.
type DirEntry struct {
	Name string
	Ino  uint32
	Type uint8 // DT_* (from the entry when the filetype feature is on, else 0)
	// Next is the cookie to pass to ReadDir to continue after this entry.
	Next uint64
}

// dirent file_type values (EXT4_FT_*) to DT_* values.
var ftToDT = [8]uint8{0, 8, 4, 2, 6, 1, 12, 10}

// recLen decodes a rec_len (64 KiB blocks store 65536 as 0 or 65535).
func recLen(v uint16, bs uint32) int {
	if bs < 65536 {
		return int(v)
	}
	if v == 65535 || v == 0 {
		return int(bs)
	}
	return int(v&65532) | int(v&3)<<16
}

// dirIter walks the entries of one directory block, validating each. It
// calls fn with the entry's offset in b; fn returns false to stop.
func (f *FS) dirIter(b []byte, where uint64, ino uint32, fn func(off int, d DirEntry) bool) error {
	return f.dirScan(b, where, ino, func(off, nl int, typ uint8, n uint32) bool {
		return fn(off, DirEntry{Name: string(b[off+8 : off+8+nl]), Ino: n, Type: typ})
	})
}

// dirScan is dirIter without the names: fn gets each live entry's offset,
// name length, type and inode.
func (f *FS) dirScan(b []byte, where uint64, ino uint32, fn func(off, nameLen int, typ uint8, ino uint32) bool) error {
	ft := f.sb.FeatureIncompat&incompatFiletype != 0
	for off := 0; off < len(b); {
		if off+8 > len(b) {
			return corrupt(where, "directory %d: entry header runs off the block at %d", ino, off)
		}
		rl := recLen(le16(b, off+4), f.bs)
		nl := int(b[off+6])
		typ := uint8(0)
		if ft {
			if t := b[off+7]; t < 8 {
				typ = ftToDT[t]
			}
		} else {
			nl |= int(b[off+7]) << 8
		}
		if rl < 12 || rl%4 != 0 || rl < 8+nl || off+rl > len(b) {
			return corrupt(where, "directory %d: entry at %d (rec_len %d, name_len %d)", ino, off, rl, nl)
		}
		if n := le32(b, off); n != 0 && nl > 0 && !fn(off, nl, typ, n) {
			return nil
		}
		off += rl
	}
	return nil
}

// dirFind returns the inode of entry name in directory block b (0 when it
// is not there), checking the entries as dirIter does but making no
// strings: lookups run on every path walk.
func (f *FS) dirFind(b []byte, where uint64, ino uint32, name string) (uint32, error) {
	var found uint32
	err := f.dirScan(b, where, ino, func(off, nl int, _ uint8, n uint32) bool {
		if nl == len(name) && string(b[off+8:off+8+nl]) == name {
			found = n
			return false
		}
		return true
	})
	return found, err
}

// checkLeaf verifies the dirent tail checksum of a directory leaf block.
func (f *FS) checkLeaf(in *Inode, b []byte, blk uint64) error {
	if !f.csum {
		return nil
	}
	t := len(b) - 12
	if le32(b, t) != 0 || le16(b, t+4) != 12 || b[t+6] != 0 || b[t+7] != 0xDE {
		return corrupt(blk, "directory %d: leaf block without checksum tail (run e2fsck -fD)", in.Ino)
	}
	who := uint64(in.Ino)<<32 | uint64(in.Generation)
	if f.checked.has(leafKey(blk), who) {
		return nil
	}
	got := crc32c(f.inodeSeed(in.Ino, in.Generation), b[:t])
	if want := le32(b, t+8); got != want {
		return &ChecksumError{What: fmt.Sprintf("directory %d block", in.Ino), Block: blk, Want: want, Got: got}
	}
	f.checked.add(leafKey(blk), who)
	return nil
}

// isDxNode reports whether b is an htree interior block of an indexed
// directory (lblk 0 is the root; others start with an empty dirent that
// spans the block).
func (f *FS) isDxNode(in *Inode, lblk uint64, b []byte) bool {
	if in.Flags&flagIndex == 0 {
		return false
	}
	if lblk == 0 {
		return true
	}
	return le32(b, 0) == 0 && recLen(le16(b, 4), f.bs) == int(f.bs)
}

type dirHandle struct {
	in   *Inode
	runs []run
	data []byte // inline directory
}

func (f *FS) openDir(ino uint32) (*dirHandle, error) {
	in, err := f.inode(ino)
	if err != nil {
		return nil, err
	}
	if !in.IsDir() {
		return nil, fmt.Errorf("inode %d: %w", ino, ErrNotDir)
	}
	d := &dirHandle{in: in}
	if in.Flags&flagInlineData != 0 {
		d.data, err = f.inlineData(in)
		if err == nil && len(d.data) < 4 {
			err = corrupt(in.block, "directory %d: inline data too short", ino)
		}
	} else {
		d.runs, err = f.blockMap(in)
		var total uint64
		for _, r := range d.runs {
			total += r.n
		}
		if err == nil && total > f.sb.BlocksCount {
			err = corrupt(in.block, "directory %d maps %d blocks", ino, total)
		}
	}
	return d, err
}

// dirBlock returns logical block lblk of the directory (nil for a hole)
// and its physical block number.
func (f *FS) dirBlock(d *dirHandle, lblk uint64) ([]byte, uint64, error) {
	i, ok := findRun(d.runs, lblk)
	if !ok {
		return nil, 0, nil
	}
	r := d.runs[i]
	if r.uninit {
		return nil, 0, nil
	}
	p := r.pblk + lblk - r.lblk
	b, err := f.block(p)
	return b, p, err
}

// ReadDir calls fn for each entry of directory dir from cookie on (0 starts
// at the beginning), in on-disk order, until fn returns false. Each entry
// carries the cookie of the next one, so a caller can resume where it
// stopped. "." and ".." are included (synthesised for inline directories).
func (f *FS) ReadDir(dir uint32, cookie uint64, fn func(DirEntry) bool) error {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.readDir(dir, cookie, fn)
}

func (f *FS) readDir(dir uint32, cookie uint64, fn func(DirEntry) bool) error {
	d, err := f.openDir(dir)
	if err != nil {
		return err
	}
	if d.data != nil {
		return f.readInlineDir(d, cookie, fn)
	}
	bs := uint64(f.bs)
	return f.dirBlocks(d, cookie/bs, func(lblk uint64, b []byte, p uint64) (bool, error) {
		base, stop := lblk*bs, false
		err := f.dirIter(b, p, d.in.Ino, func(off int, e DirEntry) bool {
			pos := base + uint64(off)
			if pos < cookie {
				return true
			}
			e.Next = pos + uint64(recLen(le16(b, off+4), f.bs))
			stop = !fn(e)
			return !stop
		})
		return stop, err
	})
}

// dirBlocks calls fn with each leaf block of d (checked) from logical
// block first on, until fn says stop.
func (f *FS) dirBlocks(d *dirHandle, first uint64, fn func(lblk uint64, b []byte, p uint64) (stop bool, err error)) error {
	bs := uint64(f.bs)
	nblk := (d.in.Size + bs - 1) / bs
	// Visit mapped blocks only: holes hold no entries, and a corrupt size
	// must not make us step through billions of them.
	for _, r := range d.runs {
		lo, hi := max(r.lblk, first), min(r.lblk+r.n, nblk)
		for lblk := lo; lblk < hi; lblk++ {
			b, p, err := f.dirBlock(d, lblk)
			if err != nil {
				return err
			}
			if b == nil || f.isDxNode(d.in, lblk, b) && lblk != 0 {
				continue
			}
			if lblk != 0 || d.in.Flags&flagIndex == 0 {
				if err := f.checkLeaf(d.in, b, p); err != nil {
					return err
				}
			}
			if stop, err := fn(lblk, b, p); stop || err != nil {
				return err
			}
		}
	}
	return nil
}

// readInlineDir serves an inline directory: cookie 0 is ".", 1 is "..",
// and an entry at offset o of the dirent area has cookie o+2.
func (f *FS) readInlineDir(d *dirHandle, cookie uint64, fn func(DirEntry) bool) error {
	if cookie == 0 && !fn(DirEntry{Name: ".", Ino: d.in.Ino, Type: 4, Next: 1}) {
		return nil
	}
	if cookie <= 1 && !fn(DirEntry{Name: "..", Ino: le32(d.data, 0), Type: 4, Next: 2}) {
		return nil
	}
	// The dirents sit in i_block after the parent (56 bytes) and then in
	// the system.data value; each area is a separate run of entries.
	areas := [][2]int{{4, 60}}
	if len(d.data) > 60 {
		areas = append(areas, [2]int{60, len(d.data)})
	}
	for _, a := range areas {
		if a[1] > len(d.data) {
			a[1] = len(d.data)
		}
		stop := false
		area := d.data[a[0]:a[1]]
		err := f.dirIterInline(area, d.in, func(off int, e DirEntry) bool {
			pos := uint64(a[0]-4+off) + 2
			if pos < cookie {
				return true
			}
			e.Next = pos + uint64(recLen(le16(area, off+4), f.bs))
			if !fn(e) {
				stop = true
				return false
			}
			return true
		})
		if err != nil || stop {
			return err
		}
	}
	return nil
}

func (f *FS) dirIterInline(area []byte, in *Inode, fn func(off int, d DirEntry) bool) error {
	if len(area) == 0 {
		return nil
	}
	return f.dirIter(area, in.block, in.Ino, fn)
}

// Lookup finds name in directory dir and returns its inode number, or an
// error wrapping ErrNotExist. Indexed (htree) directories are searched by
// hash; a damaged index falls back to a linear scan, as the kernel does.
func (f *FS) Lookup(dir uint32, name string) (uint32, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.lookup(dir, name)
}

func (f *FS) lookup(dir uint32, name string) (uint32, error) {
	if name == "" || len(name) > 255 {
		return 0, fmt.Errorf("lookup %q in directory %d: %w", name, dir, ErrNotExist)
	}
	d, err := f.openDir(dir)
	if err != nil {
		return 0, err
	}
	if d.in.Flags&flagIndex != 0 && d.data == nil && f.sb.FeatureCompat&compatDirIndex != 0 && name != "." && name != ".." {
		ino, found, err := f.htreeLookup(d, name)
		var ce *CorruptError
		switch {
		case err == nil && found:
			return ino, nil
		case err == nil:
			return 0, ErrNotExist // no message: every failed lookup (a create, a PATH search) makes one
		case !errors.As(err, &ce):
			return 0, err
		}
	}
	var ino uint32
	if d.data != nil {
		err = f.readInlineDir(d, 0, func(e DirEntry) bool {
			if e.Name == name {
				ino = e.Ino
			}
			return ino == 0
		})
	} else {
		err = f.dirBlocks(d, 0, func(_ uint64, b []byte, p uint64) (bool, error) {
			n, err := f.dirFind(b, p, d.in.Ino, name)
			ino = n
			return n != 0, err
		})
	}
	if err != nil {
		return 0, err
	}
	if ino == 0 {
		return 0, ErrNotExist
	}
	return ino, nil
}

// dxLevel is one htree node on the lookup path.
type dxLevel struct {
	b       []byte
	entries int // offset of the count/limit header
	count   int
	at      int // index of the entry followed
}

// dxNode validates an htree node's count/limit header (and its checksum)
// at offset off of b.
func (f *FS) dxNode(in *Inode, b []byte, blk uint64, off int) (dxLevel, error) {
	limit, count := int(le16(b, off)), int(le16(b, off+2))
	want := (len(b) - off) / 8
	if f.csum {
		want--
	}
	if limit != want || count == 0 || count > limit {
		return dxLevel{}, corrupt(blk, "directory %d: htree node (count %d, limit %d, expected limit %d)", in.Ino, count, limit, want)
	}
	if f.csum {
		t := off + limit*8
		c := crc32c(f.inodeSeed(in.Ino, in.Generation), b[:off+count*8])
		c = crc32c(c, b[t:t+4])
		c = crc32c(c, []byte{0, 0, 0, 0})
		if stored := le32(b, t+4); c != stored {
			return dxLevel{}, &ChecksumError{What: fmt.Sprintf("directory %d htree node", in.Ino), Block: blk, Want: stored, Got: c}
		}
	}
	return dxLevel{b: b, entries: off, count: count}, nil
}

// dxEntry returns (hash, lblk) of entry i of a node (entry 0 has hash 0).
func (l *dxLevel) dxEntry(i int) (uint32, uint64) {
	o := l.entries + 8*i
	h := le32(l.b, o)
	if i == 0 {
		h = 0
	}
	return h, uint64(le32(l.b, o+4) & 0x0FFFFFFF)
}

func (f *FS) htreeLookup(d *dirHandle, name string) (uint32, bool, error) {
	in := d.in
	root, rootBlk, err := f.dirBlock(d, 0)
	if err != nil {
		return 0, false, err
	}
	if root == nil || len(root) < 40 {
		return 0, false, corrupt(in.block, "directory %d: htree root missing", in.Ino)
	}
	infoLen, levels, hv := int(root[0x1D]), int(root[0x1E]), root[0x1C]
	maxLevels := 2
	if f.sb.FeatureIncompat&incompatLargedir != 0 {
		maxLevels = 3
	}
	if le32(root, 0x18) != 0 || infoLen != 8 || levels >= maxLevels || hv > 2 {
		return 0, false, corrupt(rootBlk, "directory %d: htree root (hash %d, levels %d)", in.Ino, hv, levels)
	}
	if hv <= 2 && f.sb.Flags&0x2 != 0 {
		hv += 3
	}
	hash, _ := dirHash(name, hv, f.sb.HashSeed)
	lvl, err := f.dxNode(in, root, rootBlk, 0x18+infoLen)
	if err != nil {
		return 0, false, err
	}
	path := []dxLevel{lvl}
	for {
		l := &path[len(path)-1]
		// Last entry whose hash is <= the name's hash.
		l.at = sort.Search(l.count-1, func(i int) bool { h, _ := l.dxEntry(i + 1); return h > hash })
		if len(path) > levels {
			break
		}
		_, lb := l.dxEntry(l.at)
		b, p, err := f.dirBlock(d, lb)
		if err != nil {
			return 0, false, err
		}
		if b == nil {
			return 0, false, corrupt(in.block, "directory %d: htree points at hole %d", in.Ino, lb)
		}
		n, err := f.dxNode(in, b, p, 8)
		if err != nil {
			return 0, false, err
		}
		path = append(path, n)
	}
	for steps := 0; steps < 1<<16; steps++ {
		l := &path[len(path)-1]
		_, lb := l.dxEntry(l.at)
		b, p, err := f.dirBlock(d, lb)
		if err != nil {
			return 0, false, err
		}
		if b == nil {
			return 0, false, corrupt(in.block, "directory %d: htree leaf is a hole (%d)", in.Ino, lb)
		}
		if err := f.checkLeaf(in, b, p); err != nil {
			return 0, false, err
		}
		ino, err := f.dirFind(b, p, in.Ino, name)
		if err != nil {
			return 0, false, err
		}
		if ino != 0 {
			return ino, true, nil
		}
		// Hash collisions may continue into the next leaf: its starting
		// hash then equals ours with the low bit set.
		more, err := f.dxNext(d, path)
		if err != nil || !more {
			return 0, false, err
		}
		if h, _ := path[len(path)-1].dxEntry(path[len(path)-1].at); h&^1 != hash {
			return 0, false, nil
		}
	}
	return 0, false, corrupt(in.block, "directory %d: htree collision chain too long", in.Ino)
}

// dxNext advances path to the next leaf in hash order. It reports false at
// the end of the index.
func (f *FS) dxNext(d *dirHandle, path []dxLevel) (bool, error) {
	k := len(path) - 1
	for k >= 0 && path[k].at+1 >= path[k].count {
		k--
	}
	if k < 0 {
		return false, nil
	}
	path[k].at++
	for k++; k < len(path); k++ {
		_, lb := path[k-1].dxEntry(path[k-1].at)
		b, p, err := f.dirBlock(d, lb)
		if err != nil {
			return false, err
		}
		if b == nil {
			return false, corrupt(d.in.block, "directory %d: htree points at hole %d", d.in.Ino, lb)
		}
		n, err := f.dxNode(d.in, b, p, 8)
		if err != nil {
			return false, err
		}
		path[k] = n
	}
	return true, nil
}
