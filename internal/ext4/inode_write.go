package ext4

import (
	"fmt"
	"syscall"
	"time"
)

// ibuf is a private copy of an on-disk inode being changed; putInode
// checksums it and stores it back into its inode table block.
type ibuf struct {
	ino uint32
	raw []byte
}

func (f *FS) inodeLoc(ino uint32) (blk uint64, off int) {
	g := uint64(ino-1) / uint64(f.sb.InodesPerGroup)
	idx := uint64(ino-1) % uint64(f.sb.InodesPerGroup)
	o := idx * uint64(f.sb.InodeSize)
	return f.w.gd[g].inodeTable + o/uint64(f.bs), int(o % uint64(f.bs))
}

// getInode reads inode ino (checksum verified) for modification.
func (f *FS) getInode(ino uint32) (*ibuf, error) {
	if ino == 0 || ino > f.sb.InodesCount {
		return nil, errf(syscall.EINVAL, "inode number %d out of range", ino)
	}
	blk, off := f.inodeLoc(ino)
	b, err := f.block(blk)
	if err != nil {
		return nil, fmt.Errorf("inode %d: %w", ino, err)
	}
	raw := append([]byte(nil), b[off:off+int(f.sb.InodeSize)]...)
	if _, err := f.parseInode(ino, blk, raw); err != nil {
		return nil, err
	}
	return &ibuf{ino: ino, raw: raw}, nil
}

// putInode checksums ib and stores it in its (dirty) inode table block.
func (f *FS) putInode(ib *ibuf) error {
	raw := ib.raw
	if f.csum {
		putLE16(raw, 0x7C, 0)
		hasHi := len(raw) > 128 && le16(raw, 0x80) >= 4
		if hasHi {
			putLE16(raw, 0x82, 0)
		}
		c := crc32c(f.inodeSeed(ib.ino, le32(raw, 0x64)), raw)
		putLE16(raw, 0x7C, uint16(c))
		if hasHi {
			putLE16(raw, 0x82, uint16(c>>16))
		}
	}
	blk, off := f.inodeLoc(ib.ino)
	b, err := f.mblock(blk)
	if err != nil {
		return err
	}
	copy(b[off:], raw)
	return nil
}

// parsed decodes ib for the read helpers (blockMap, xattrs).
func (f *FS) parsed(ib *ibuf) *Inode {
	blk, _ := f.inodeLoc(ib.ino)
	in, err := f.parseInode(ib.ino, blk, ib.raw)
	if err != nil {
		// The checksum is stale while the copy is being changed: decode
		// without verifying.
		saved := f.csum
		f.csum = false
		in, _ = f.parseInode(ib.ino, blk, ib.raw)
		f.csum = saved
	}
	return in
}

func (ib *ibuf) mode() uint16      { return le16(ib.raw, 0) }
func (ib *ibuf) isDir() bool       { return ib.mode()&S_IFMT == S_IFDIR }
func (ib *ibuf) links() uint16     { return le16(ib.raw, 0x1A) }
func (ib *ibuf) setLinks(n uint16) { putLE16(ib.raw, 0x1A, n) }
func (ib *ibuf) flags() uint32     { return le32(ib.raw, 0x20) }
func (ib *ibuf) setFlags(v uint32) { putLE32(ib.raw, 0x20, v) }
func (ib *ibuf) gen() uint32       { return le32(ib.raw, 0x64) }
func (ib *ibuf) iblock() []byte    { return ib.raw[0x28:0x64] }
func (ib *ibuf) size() uint64      { return uint64(le32(ib.raw, 4)) | uint64(le32(ib.raw, 0x6C))<<32 }
func (ib *ibuf) fileACL() uint64 {
	return uint64(le32(ib.raw, 0x68)) | uint64(le16(ib.raw, 0x76))<<32
}
func (ib *ibuf) setFileACL(b uint64) {
	putLE32(ib.raw, 0x68, uint32(b))
	putLE16(ib.raw, 0x76, uint16(b>>32))
}

func (f *FS) setSize(ib *ibuf, s uint64) {
	putLE32(ib.raw, 4, uint32(s))
	putLE32(ib.raw, 0x6C, uint32(s>>32))
	if s > 1<<31-1 && f.sb.FeatureRoCompat&roCompatLargeFile == 0 {
		f.sb.FeatureRoCompat |= roCompatLargeFile
	}
}

// blocks512 is i_blocks in 512-byte units.
func (f *FS) blocks512(ib *ibuf) uint64 {
	n := uint64(le32(ib.raw, 0x1C))
	if f.sb.FeatureRoCompat&roCompatHugeFile != 0 {
		n |= uint64(le16(ib.raw, 0x74)) << 32
		if ib.flags()&flagHugeFile != 0 {
			n *= uint64(f.bs / 512)
		}
	}
	return n
}

func (f *FS) setBlocks512(ib *ibuf, n uint64) error {
	fl := ib.flags() &^ flagHugeFile
	huge := f.sb.FeatureRoCompat&roCompatHugeFile != 0
	switch {
	case n <= 0xFFFFFFFF:
		putLE32(ib.raw, 0x1C, uint32(n))
		putLE16(ib.raw, 0x74, 0)
	case huge && n < 1<<48:
		putLE32(ib.raw, 0x1C, uint32(n))
		putLE16(ib.raw, 0x74, uint16(n>>32))
	case huge:
		v := n / uint64(f.bs/512)
		putLE32(ib.raw, 0x1C, uint32(v))
		putLE16(ib.raw, 0x74, uint16(v>>32))
		fl |= flagHugeFile
	default:
		return errf(syscall.EFBIG, "inode %d: %d sectors need the huge_file feature", ib.ino, n)
	}
	ib.setFlags(fl)
	return nil
}

// addBlocks changes i_blocks by delta filesystem blocks.
func (f *FS) addBlocks(ib *ibuf, delta int64) error {
	n := int64(f.blocks512(ib)) + delta*int64(f.bs/512)
	if n < 0 {
		n = 0
	}
	return f.setBlocks512(ib, uint64(n))
}

// Timestamp selectors for setTime.
const (
	tAtime = 1 << iota
	tMtime
	tCtime
	tCrtime
)

func (f *FS) setTime(ib *ibuf, which int, t time.Time) {
	raw := ib.raw
	extra := -1
	if len(raw) > 128 {
		extra = int(le16(raw, 0x80))
	}
	put := func(lo, xoff int) {
		sec := t.Unix()
		putLE32(raw, lo, uint32(int32(sec)))
		if extra >= 0 && 128+extra >= xoff+4 {
			ep := uint32((sec-int64(int32(sec)))>>32) & 3
			putLE32(raw, xoff, ep|uint32(t.Nanosecond())<<2)
		}
	}
	if which&tAtime != 0 {
		put(0x8, 0x8C)
	}
	if which&tCtime != 0 {
		put(0xC, 0x84)
	}
	if which&tMtime != 0 {
		put(0x10, 0x88)
	}
	if which&tCrtime != 0 && extra >= 0x98-128 {
		put(0x90, 0x94)
	}
}

// newInode allocates and initialises an inode of the given mode near the
// parent directory's group. The caller fills in type-specific parts and
// stores it.
func (f *FS) newInode(parent uint32, mode uint16, uid, gid uint32) (*ibuf, error) {
	dir := mode&S_IFMT == S_IFDIR
	ino, err := f.allocInode(f.inodeGroup(parent), dir)
	if err != nil {
		return nil, err
	}
	raw := make([]byte, f.sb.InodeSize)
	ib := &ibuf{ino: ino, raw: raw}
	putLE16(raw, 0, mode)
	putLE16(raw, 2, uint16(uid))
	putLE16(raw, 0x78, uint16(uid>>16))
	putLE16(raw, 0x18, uint16(gid))
	putLE16(raw, 0x7A, uint16(gid>>16))
	f.w.nextGen++
	putLE32(raw, 0x64, f.w.nextGen)
	if len(raw) > 128 {
		want := int(le16(f.w.sbRaw, 0x15C)) // s_want_extra_isize
		if want < 32 {
			want = 32
		}
		putLE16(raw, 0x80, uint16(min(want, len(raw)-128)))
	}
	f.setTime(ib, tAtime|tMtime|tCtime|tCrtime, f.w.now())
	switch mode & S_IFMT {
	case S_IFREG, S_IFDIR, S_IFLNK:
		ib.setFlags(flagExtents)
		initExtentRoot(ib.iblock())
	}
	return ib, nil
}

func initExtentRoot(b []byte) {
	clear(b)
	putLE16(b, 0, extentMagic)
	putLE16(b, 4, 4)
}

// Attr selects and carries the attributes SetAttr changes.
type Attr struct {
	// Mask says which fields are set: AttrMode | AttrUid | ...
	Mask                uint32
	Mode                uint16 // permission bits (07777); the type is kept
	Uid, Gid            uint32
	Size                uint64
	Atime, Mtime, Ctime time.Time
}

// Attr mask bits.
const (
	AttrMode = 1 << iota
	AttrUid
	AttrGid
	AttrSize
	AttrAtime
	AttrMtime
	AttrCtime // an explicit ctime; otherwise ctime becomes now
)

// SetAttr changes mode bits, owner, size (truncate or extend with a hole)
// and times of ino. The ctime is set to now unless a.Mask has AttrCtime.
func (f *FS) SetAttr(ino uint32, a *Attr) error {
	unlock, err := f.wlock()
	if err != nil {
		return err
	}
	defer unlock()
	if a.Mask&AttrSize != 0 {
		if err := f.truncate(ino, a.Size); err != nil {
			return err
		}
	}
	ib, err := f.getInode(ino)
	if err != nil {
		return err
	}
	if a.Mask&AttrMode != 0 {
		putLE16(ib.raw, 0, ib.mode()&S_IFMT|a.Mode&0o7777)
	}
	if a.Mask&AttrUid != 0 {
		putLE16(ib.raw, 2, uint16(a.Uid))
		putLE16(ib.raw, 0x78, uint16(a.Uid>>16))
	}
	if a.Mask&AttrGid != 0 {
		putLE16(ib.raw, 0x18, uint16(a.Gid))
		putLE16(ib.raw, 0x7A, uint16(a.Gid>>16))
	}
	if a.Mask&AttrAtime != 0 {
		f.setTime(ib, tAtime, a.Atime)
	}
	if a.Mask&AttrMtime != 0 {
		f.setTime(ib, tMtime, a.Mtime)
	}
	if a.Mask&AttrCtime != 0 {
		f.setTime(ib, tCtime, a.Ctime)
	} else {
		f.setTime(ib, tCtime, f.w.now())
	}
	return f.putInode(ib)
}

// Hold records that the VFS keeps inode ino in use (an open file): if its
// last link goes while held, it is kept as an orphan until the matching
// Forget. Holds nest.
func (f *FS) Hold(ino uint32) error {
	unlock, err := f.wlock()
	if err != nil {
		return err
	}
	defer unlock()
	f.w.holds[ino]++
	return nil
}

// Forget drops one Hold of ino; when the last goes and the inode has no
// links left, it is freed (blocks, xattr block, inode).
func (f *FS) Forget(ino uint32) error {
	unlock, err := f.wlock()
	if err != nil {
		return err
	}
	defer unlock()
	if f.w.holds[ino] > 1 {
		f.w.holds[ino]--
		return nil
	}
	delete(f.w.holds, ino)
	if f.w.orphans[ino] {
		delete(f.w.orphans, ino)
		return f.evict(ino)
	}
	return nil
}

// Orphans returns the inodes unlinked while held and not yet freed.
func (f *FS) Orphans() []uint32 {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.w == nil {
		return nil
	}
	return sortedKeys(f.w.orphans)
}

// dropLink decrements ib's link count (stored by the caller) and, at zero,
// frees the inode or keeps it as an orphan when held. A directory loses
// both its links at once.
func (f *FS) dropLink(ib *ibuf) error {
	if ib.isDir() {
		ib.setLinks(0)
	} else if n := ib.links(); n > 0 {
		ib.setLinks(n - 1)
	}
	f.setTime(ib, tCtime, f.w.now())
	if ib.links() > 0 {
		return f.putInode(ib)
	}
	if f.w.holds[ib.ino] > 0 {
		f.w.orphans[ib.ino] = true
		return f.putInode(ib)
	}
	if err := f.putInode(ib); err != nil {
		return err
	}
	return f.evict(ib.ino)
}

// evict frees an unlinked inode: its data and tree blocks, its xattr block
// and the inode itself (dtime set, as the kernel leaves it).
func (f *FS) evict(ino uint32) error {
	ib, err := f.getInode(ino)
	if err != nil {
		return err
	}
	if ib.flags()&flagExtents != 0 {
		if err := f.truncateBlocks(ib, 0); err != nil {
			return err
		}
	} else if hasBlockMap(ib) {
		if err := f.freeIndirect(ib); err != nil {
			return err
		}
	}
	if err := f.dropXattrBlock(ib); err != nil {
		return err
	}
	f.setSize(ib, 0)
	f.setBlocks512(ib, 0)
	now := f.w.now()
	putLE32(ib.raw, 0x14, uint32(now.Unix())) // dtime
	ib.setLinks(0)
	if err := f.putInode(ib); err != nil {
		return err
	}
	return f.freeInode(ino, ib.isDir())
}

// hasBlockMap reports whether ib's i_block is an ext2/3 block map with
// blocks to free (not a device, fast symlink or inline data).
func hasBlockMap(ib *ibuf) bool {
	switch ib.mode() & S_IFMT {
	case S_IFREG, S_IFDIR:
	case S_IFLNK:
		if ib.size() < 60 && ib.size() > 0 {
			return false
		}
	default:
		return false
	}
	return ib.flags()&(flagInlineData|flagExtents) == 0
}

// freeIndirect frees the data and indirect blocks of a block-mapped inode.
func (f *FS) freeIndirect(ib *ibuf) error {
	per := uint64(f.bs / 4)
	var walk func(blk uint64, level int) error
	budget := f.sb.BlocksCount
	walk = func(blk uint64, level int) error {
		if blk == 0 {
			return nil
		}
		if blk >= f.sb.BlocksCount || budget == 0 {
			return corrupt(0, "inode %d: block pointer %d", ib.ino, blk)
		}
		budget--
		if level > 0 {
			b, err := f.block(blk)
			if err != nil {
				return err
			}
			ptrs := make([]uint64, per)
			for i := range ptrs {
				ptrs[i] = uint64(le32(b, 4*i))
			}
			for _, p := range ptrs {
				if err := walk(p, level-1); err != nil {
					return err
				}
			}
		}
		return f.freeBlocks(blk, 1)
	}
	ibk := ib.iblock()
	for i := 0; i < 15; i++ {
		lvl := 0
		if i >= 12 {
			lvl = i - 11
		}
		if err := walk(uint64(le32(ibk, 4*i)), lvl); err != nil {
			return err
		}
	}
	clear(ibk)
	return nil
}
