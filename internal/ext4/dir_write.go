package ext4

import (
	"errors"
	"fmt"
	"strings"
	"syscall"
)

// Rename flags (the Linux RENAME_* values).
const (
	RenameNoReplace = 0x1
	RenameExchange  = 0x2
)

func entLen(nameLen int) int { return (8 + nameLen + 3) &^ 3 }

func (f *FS) putRecLen(b []byte, off, n int) {
	v := n
	if f.bs >= 65536 {
		if n == 65536 {
			v = 65535
		} else {
			v = n&65532 | n>>16&3
		}
	}
	putLE16(b, off+4, uint16(v))
}

// tailLen is the room a leaf block keeps for its checksum tail.
func (f *FS) tailLen() int {
	if f.csum {
		return 12
	}
	return 0
}

func (f *FS) ftOf(mode uint16) uint8 {
	if f.sb.FeatureIncompat&incompatFiletype == 0 {
		return 0
	}
	switch mode & S_IFMT {
	case S_IFREG:
		return 1
	case S_IFDIR:
		return 2
	case S_IFCHR:
		return 3
	case S_IFBLK:
		return 4
	case S_IFIFO:
		return 5
	case S_IFSOCK:
		return 6
	case S_IFLNK:
		return 7
	}
	return 0
}

// putEnt writes an entry header and name at off.
func (f *FS) putEnt(b []byte, off int, ino uint32, name string, ft uint8, rl int) {
	putLE32(b, off, ino)
	f.putRecLen(b, off, rl)
	b[off+6] = byte(len(name))
	if f.sb.FeatureIncompat&incompatFiletype != 0 {
		b[off+7] = ft
	} else {
		b[off+7] = 0
	}
	copy(b[off+8:], name)
	// Clear the padding after the name.
	for i := off + 8 + len(name); i < off+entLen(len(name)) && i < len(b); i++ {
		b[i] = 0
	}
}

func (f *FS) entName(b []byte, off int) (string, int) {
	nl := int(b[off+6])
	if f.sb.FeatureIncompat&incompatFiletype == 0 {
		nl |= int(b[off+7]) << 8
	}
	return string(b[off+8 : off+8+nl]), nl
}

// leafTail writes the dirent tail and checksum of a leaf block.
func (f *FS) leafTail(dir *ibuf, b []byte) {
	if !f.csum {
		return
	}
	t := len(b) - 12
	putLE32(b, t, 0)
	putLE16(b, t+4, 12)
	b[t+6], b[t+7] = 0, 0xDE
	putLE32(b, t+8, crc32c(f.inodeSeed(dir.ino, dir.gen()), b[:t]))
}

// blockInsert puts an entry into leaf block b if it has room.
func (f *FS) blockInsert(b []byte, ino uint32, name string, ft uint8) bool {
	need := entLen(len(name))
	end := len(b) - f.tailLen()
	for off := 0; off < end; {
		rl := recLen(le16(b, off+4), f.bs)
		if rl < 8 || off+rl > end {
			return false
		}
		used := 0
		if le32(b, off) != 0 {
			_, nl := f.entName(b, off)
			used = entLen(nl)
		}
		if rl-used >= need {
			if used > 0 {
				f.putRecLen(b, off, used)
				f.putEnt(b, off+used, ino, name, ft, rl-used)
			} else {
				f.putEnt(b, off, ino, name, ft, rl)
			}
			return true
		}
		off += rl
	}
	return false
}

// blockFind returns the offset of name in leaf block b, and of the entry
// before it (-1 when first).
func (f *FS) blockFind(b []byte, name string) (int, int) {
	end := len(b) - f.tailLen()
	prev := -1
	for off := 0; off < end; {
		rl := recLen(le16(b, off+4), f.bs)
		if rl < 8 || off+rl > end {
			return -1, -1
		}
		if le32(b, off) != 0 {
			if n, _ := f.entName(b, off); n == name {
				return off, prev
			}
		}
		prev = off
		off += rl
	}
	return -1, -1
}

// blockRemove deletes the entry at off (prev is the entry before it).
func (f *FS) blockRemove(b []byte, off, prev int) {
	if prev >= 0 {
		f.putRecLen(b, prev, recLen(le16(b, prev+4), f.bs)+recLen(le16(b, off+4), f.bs))
		return
	}
	putLE32(b, off, 0)
}

// dirCtx is a directory being changed: its inode copy and block map.
type dirCtx struct {
	ib          *ibuf
	m           *fileMap
	blockMapped bool
}

func (f *FS) openDirW(ino uint32) (*dirCtx, error) {
	ib, err := f.getInode(ino)
	if err != nil {
		return nil, err
	}
	if !ib.isDir() {
		return nil, errf(syscall.ENOTDIR, "inode %d", ino)
	}
	if ib.flags()&flagInlineData != 0 {
		return nil, fmt.Errorf("directory %d is inline (inline_data): %w", ino, ErrReadOnly)
	}
	if ib.flags()&flagExtents == 0 {
		// An ext2/ext3 block map: entries can change in place, but the
		// directory cannot grow.
		runs, err := f.blockMap(f.parsed(ib))
		if err != nil {
			return nil, err
		}
		return &dirCtx{ib: ib, m: &fileMap{runs: runs}, blockMapped: true}, nil
	}
	m, err := f.loadMap(ib)
	if err != nil {
		return nil, err
	}
	return &dirCtx{ib: ib, m: m}, nil
}

func (d *dirCtx) nblocks(f *FS) uint64 { return d.ib.size() / uint64(f.bs) }

// pblk maps logical block l of the directory.
func (d *dirCtx) pblk(l uint64) (uint64, error) {
	i, ok := findRun(d.m.runs, l)
	if !ok || d.m.runs[i].uninit {
		return 0, corrupt(0, "directory %d: block %d is a hole", d.ib.ino, l)
	}
	r := d.m.runs[i]
	return r.pblk + l - r.lblk, nil
}

// appendBlock adds a zeroed block at the end of the directory.
func (f *FS) appendBlock(d *dirCtx) (uint64, []byte, error) {
	if d.blockMapped {
		return 0, nil, fmt.Errorf("directory %d uses an ext2/ext3 block map and cannot grow: %w", d.ib.ino, ErrReadOnly)
	}
	l := d.nblocks(f)
	if l >= maxLblk {
		return 0, nil, errf(syscall.ENOSPC, "directory %d is full", d.ib.ino)
	}
	runs, fresh, err := f.allocRange(d.ib, d.m.runs, l, 1, false)
	if err != nil {
		return 0, nil, err
	}
	if err := f.storeMap(d.ib, d.m, runs); err != nil {
		f.freeBlocks(fresh[0].pblk, 1)
		return 0, nil, err
	}
	if err := f.addBlocks(d.ib, 1); err != nil {
		return 0, nil, err
	}
	f.setSize(d.ib, (l+1)*uint64(f.bs))
	return l, f.newMeta(fresh[0].pblk), nil
}

func (f *FS) indexed(d *dirCtx) bool {
	return d.ib.flags()&flagIndex != 0 && f.sb.FeatureCompat&compatDirIndex != 0
}

// addEntry links name -> ino into the directory (the caller checked that
// name is not there).
func (f *FS) addEntry(d *dirCtx, name string, ino uint32, ft uint8) error {
	if f.indexed(d) {
		return f.dxAdd(d, name, ino, ft)
	}
	if d.ib.flags()&flagIndex != 0 {
		// An index without dir_index: the kernel treats it as linear but
		// the index would go stale; clear it, as e2fsck would.
		d.ib.setFlags(d.ib.flags() &^ flagIndex)
	}
	nb := d.nblocks(f)
	for l := uint64(0); l < nb; l++ {
		p, err := d.pblk(l)
		if err != nil {
			return err
		}
		b, err := f.mblock(p)
		if err != nil {
			return err
		}
		if f.blockInsert(b, ino, name, ft) {
			f.leafTail(d.ib, b)
			return nil
		}
	}
	if nb == 1 && f.sb.FeatureCompat&compatDirIndex != 0 {
		return f.makeIndexed(d, name, ino, ft)
	}
	_, b, err := f.appendBlock(d)
	if err != nil {
		return err
	}
	f.putEnt(b, 0, ino, name, ft, len(b)-f.tailLen())
	f.leafTail(d.ib, b)
	return nil
}

// findEntry locates name: the leaf's physical block, the entry's offset
// and the one before it.
func (f *FS) findEntry(d *dirCtx, name string) (uint64, int, int, error) {
	if f.indexed(d) {
		p, off, prev, err := f.dxFind(d, name)
		var ce *CorruptError
		if err == nil || !errors.As(err, &ce) {
			return p, off, prev, err
		}
	}
	nb := d.nblocks(f)
	for l := uint64(0); l < nb; l++ {
		p, err := d.pblk(l)
		if err != nil {
			return 0, 0, 0, err
		}
		b, err := f.block(p)
		if err != nil {
			return 0, 0, 0, err
		}
		if l == 0 && f.indexed(d) {
			continue
		}
		if f.indexed(d) && f.isDxNode(f.parsed(d.ib), l, b) {
			continue
		}
		if off, prev := f.blockFind(b, name); off >= 0 {
			return p, off, prev, nil
		}
	}
	return 0, 0, 0, errf(syscall.ENOENT, "%q not in directory %d", name, d.ib.ino)
}

// leafSum redoes the checksum of the directory block p after a change:
// the dx tail for the root of an indexed directory, else the dirent tail.
func (f *FS) leafSum(d *dirCtx, p uint64, b []byte) {
	if f.indexed(d) {
		if q, err := d.pblk(0); err == nil && q == p {
			f.dxSum(d.ib, b, 0x20)
			return
		}
	}
	f.leafTail(d.ib, b)
}

func (f *FS) removeEntry(d *dirCtx, name string) error {
	p, off, prev, err := f.findEntry(d, name)
	if err != nil {
		return err
	}
	b, err := f.mblock(p)
	if err != nil {
		return err
	}
	f.blockRemove(b, off, prev)
	f.leafSum(d, p, b)
	return nil
}

// setEntry points an existing entry at another inode.
func (f *FS) setEntry(d *dirCtx, name string, ino uint32, ft uint8) error {
	p, off, _, err := f.findEntry(d, name)
	if err != nil {
		return err
	}
	b, err := f.mblock(p)
	if err != nil {
		return err
	}
	putLE32(b, off, ino)
	if f.sb.FeatureIncompat&incompatFiletype != 0 {
		b[off+7] = ft
	}
	f.leafSum(d, p, b)
	return nil
}

func checkName(name string) error {
	switch {
	case name == "" || strings.ContainsAny(name, "/\x00"):
		return errf(syscall.EINVAL, "invalid name %q", name)
	case len(name) > maxNameLen:
		return errf(syscall.ENAMETOOLONG, "name of %d bytes", len(name))
	}
	return nil
}

// lookupW looks name up in the directory being changed (0 if absent).
func (f *FS) lookupW(d *dirCtx, name string) (uint32, error) {
	ino, err := f.lookup(d.ib.ino, name)
	if errors.Is(err, syscall.ENOENT) {
		return 0, nil
	}
	return ino, err
}

// incDir and decDir count a subdirectory's ".." link in its parent, with
// the dir_nlink rule: past 65000 (or once overflowed) the count is 1.
func (f *FS) incDir(ib *ibuf) {
	n := uint32(ib.links()) + 1
	if f.sb.FeatureRoCompat&roCompatDirNlink != 0 && ib.flags()&flagIndex != 0 && (n >= linkMax || n == 2) {
		n = 1
	}
	ib.setLinks(uint16(n))
}

func (f *FS) decDir(ib *ibuf) {
	if n := ib.links(); n > 2 {
		ib.setLinks(n - 1)
	}
}

func (f *FS) dirLinkMax(ib *ibuf) bool {
	return ib.links() >= linkMax && !(f.sb.FeatureRoCompat&roCompatDirNlink != 0 && ib.flags()&flagIndex != 0)
}

// prepareCreate opens dir for a new entry name.
func (f *FS) prepareCreate(dir uint32, name string) (*dirCtx, error) {
	if err := checkName(name); err != nil {
		return nil, err
	}
	d, err := f.openDirW(dir)
	if err != nil {
		return nil, err
	}
	if d.ib.links() == 0 {
		return nil, errf(syscall.ENOENT, "directory %d was removed", dir)
	}
	if name == "." || name == ".." {
		return nil, errf(syscall.EEXIST, "%q", name)
	}
	if ino, err := f.lookupW(d, name); err != nil {
		return nil, err
	} else if ino != 0 {
		return nil, errf(syscall.EEXIST, "%q in directory %d", name, dir)
	}
	return d, nil
}

// finishCreate links the new inode into the directory and stores both.
func (f *FS) finishCreate(d *dirCtx, name string, ib *ibuf) error {
	if err := f.addEntry(d, name, ib.ino, f.ftOf(ib.mode())); err != nil {
		return err
	}
	f.setTime(d.ib, tMtime|tCtime, f.w.now())
	if err := f.putInode(ib); err != nil {
		return err
	}
	return f.putInode(d.ib)
}

// undoInode frees an inode that never got linked.
func (f *FS) undoInode(ib *ibuf) {
	ib.setLinks(0)
	f.putInode(ib)
	f.evict(ib.ino)
}

// Create makes a regular file name in dir with permission bits mode and
// returns its inode number.
func (f *FS) Create(dir uint32, name string, mode uint16, uid, gid uint32) (uint32, error) {
	return f.Mknod(dir, name, S_IFREG|mode&0o7777, uid, gid, 0)
}

// Mknod makes a node of any non-directory type: mode carries the type
// (S_IFREG, S_IFCHR, S_IFBLK, S_IFIFO, S_IFSOCK) and permission bits; rdev
// is the Linux dev_t of a device.
func (f *FS) Mknod(dir uint32, name string, mode uint16, uid, gid uint32, rdev uint64) (uint32, error) {
	switch mode & S_IFMT {
	case S_IFREG, S_IFCHR, S_IFBLK, S_IFIFO, S_IFSOCK:
	case 0:
		mode |= S_IFREG
	case S_IFDIR:
		return 0, errf(syscall.EPERM, "mknod of a directory")
	default:
		return 0, errf(syscall.EINVAL, "mknod mode %#o", mode)
	}
	unlock, err := f.wlock()
	if err != nil {
		return 0, err
	}
	defer unlock()
	d, err := f.prepareCreate(dir, name)
	if err != nil {
		return 0, err
	}
	ib, err := f.newInode(dir, mode, uid, gid)
	if err != nil {
		return 0, err
	}
	ib.setLinks(1)
	if t := mode & S_IFMT; t == S_IFCHR || t == S_IFBLK {
		ma := uint32(rdev>>8&0xfff | rdev>>32&^0xfff)
		mi := uint32(rdev&0xff | rdev>>12&^0xff)
		blk := ib.iblock()
		if ma < 256 && mi < 256 {
			putLE32(blk, 0, ma<<8|mi)
		} else {
			putLE32(blk, 4, mi&0xff|ma<<8|(mi&^0xff)<<12)
		}
	}
	if err := f.finishCreate(d, name, ib); err != nil {
		f.undoInode(ib)
		return 0, err
	}
	return ib.ino, nil
}

// Mkdir makes directory name in dir.
func (f *FS) Mkdir(dir uint32, name string, mode uint16, uid, gid uint32) (uint32, error) {
	unlock, err := f.wlock()
	if err != nil {
		return 0, err
	}
	defer unlock()
	d, err := f.prepareCreate(dir, name)
	if err != nil {
		return 0, err
	}
	if f.dirLinkMax(d.ib) {
		return 0, errf(syscall.EMLINK, "directory %d has %d links", dir, d.ib.links())
	}
	ib, err := f.newInode(dir, S_IFDIR|mode&0o7777, uid, gid)
	if err != nil {
		return 0, err
	}
	ib.setLinks(2)
	nd := &dirCtx{ib: ib, m: &fileMap{}}
	_, b, err := f.appendBlock(nd)
	if err != nil {
		f.undoInode(ib)
		return 0, err
	}
	f.putEnt(b, 0, ib.ino, ".", 2&f.ftMask(), 12)
	f.putEnt(b, 12, dir, "..", 2&f.ftMask(), len(b)-12-f.tailLen())
	f.leafTail(ib, b)
	if err := f.finishCreate(d, name, ib); err != nil {
		f.undoInode(ib)
		return 0, err
	}
	f.incDir(d.ib)
	return ib.ino, f.putInode(d.ib)
}

func (f *FS) ftMask() uint8 {
	if f.sb.FeatureIncompat&incompatFiletype != 0 {
		return 0xFF
	}
	return 0
}

// Symlink makes symbolic link name in dir pointing at target: in i_block
// when shorter than 60 bytes, else in one data block.
func (f *FS) Symlink(dir uint32, name, target string, uid, gid uint32) (uint32, error) {
	if target == "" {
		return 0, errf(syscall.ENOENT, "empty symlink target")
	}
	if len(target)+1 > int(f.bs) {
		return 0, errf(syscall.ENAMETOOLONG, "symlink target of %d bytes", len(target))
	}
	unlock, err := f.wlock()
	if err != nil {
		return 0, err
	}
	defer unlock()
	d, err := f.prepareCreate(dir, name)
	if err != nil {
		return 0, err
	}
	ib, err := f.newInode(dir, S_IFLNK|0o777, uid, gid)
	if err != nil {
		return 0, err
	}
	ib.setLinks(1)
	if len(target) < 60 {
		ib.setFlags(ib.flags() &^ flagExtents)
		clear(ib.iblock())
		copy(ib.iblock(), target)
	} else {
		m := &fileMap{}
		runs, fresh, err := f.allocRange(ib, nil, 0, 1, false)
		if err == nil {
			err = f.storeMap(ib, m, runs)
		}
		if err != nil {
			f.undoInode(ib)
			return 0, err
		}
		f.addBlocks(ib, 1)
		blk := make([]byte, f.bs)
		copy(blk, target)
		if err := f.writeData(blk, int64(fresh[0].pblk)*int64(f.bs)); err != nil {
			return 0, err
		}
	}
	f.setSize(ib, uint64(len(target)))
	if err := f.finishCreate(d, name, ib); err != nil {
		f.undoInode(ib)
		return 0, err
	}
	return ib.ino, nil
}

// Link adds name in dir as another link to ino (not a directory).
func (f *FS) Link(ino, dir uint32, name string) error {
	unlock, err := f.wlock()
	if err != nil {
		return err
	}
	defer unlock()
	d, err := f.prepareCreate(dir, name)
	if err != nil {
		return err
	}
	ib, err := f.getInode(ino)
	if err != nil {
		return err
	}
	if ib.isDir() {
		return errf(syscall.EPERM, "hard link to directory %d", ino)
	}
	if ib.links() == 0 {
		return errf(syscall.ENOENT, "inode %d has no links", ino)
	}
	if ib.links() >= linkMax {
		return errf(syscall.EMLINK, "inode %d has %d links", ino, ib.links())
	}
	if err := f.addEntry(d, name, ino, f.ftOf(ib.mode())); err != nil {
		return err
	}
	ib.setLinks(ib.links() + 1)
	now := f.w.now()
	f.setTime(ib, tCtime, now)
	f.setTime(d.ib, tMtime|tCtime, now)
	if err := f.putInode(ib); err != nil {
		return err
	}
	return f.putInode(d.ib)
}

// Unlink removes name (not a directory) from dir; the inode is freed with
// its last link unless held (see Hold).
func (f *FS) Unlink(dir uint32, name string) error {
	unlock, err := f.wlock()
	if err != nil {
		return err
	}
	defer unlock()
	return f.unlink(dir, name, false)
}

// Rmdir removes the empty directory name from dir.
func (f *FS) Rmdir(dir uint32, name string) error {
	unlock, err := f.wlock()
	if err != nil {
		return err
	}
	defer unlock()
	return f.unlink(dir, name, true)
}

func (f *FS) unlink(dir uint32, name string, isDir bool) error {
	if err := checkName(name); err != nil {
		return err
	}
	if name == "." {
		return errf(syscall.EINVAL, "rmdir of \".\"")
	}
	if name == ".." {
		return errf(syscall.ENOTEMPTY, "rmdir of \"..\"")
	}
	d, err := f.openDirW(dir)
	if err != nil {
		return err
	}
	ino, err := f.lookupW(d, name)
	if err != nil {
		return err
	}
	if ino == 0 {
		return errf(syscall.ENOENT, "%q in directory %d", name, dir)
	}
	ib, err := f.getInode(ino)
	if err != nil {
		return err
	}
	switch {
	case isDir && !ib.isDir():
		return errf(syscall.ENOTDIR, "%q", name)
	case !isDir && ib.isDir():
		return errf(syscall.EISDIR, "%q", name)
	}
	if isDir {
		if err := f.checkEmpty(ino); err != nil {
			return err
		}
	}
	if err := f.removeEntry(d, name); err != nil {
		return err
	}
	if isDir {
		f.decDir(d.ib)
	}
	f.setTime(d.ib, tMtime|tCtime, f.w.now())
	if err := f.putInode(d.ib); err != nil {
		return err
	}
	return f.dropLink(ib)
}

func (f *FS) checkEmpty(ino uint32) error {
	empty := true
	err := f.readDir(ino, 0, func(e DirEntry) bool {
		if e.Name != "." && e.Name != ".." {
			empty = false
			return false
		}
		return true
	})
	if err != nil {
		return err
	}
	if !empty {
		return errf(syscall.ENOTEMPTY, "directory %d", ino)
	}
	return nil
}

// setDotDot points directory ino's ".." at parent.
func (f *FS) setDotDot(ino, parent uint32) error {
	d, err := f.openDirW(ino)
	if err != nil {
		return err
	}
	p, err := d.pblk(0)
	if err != nil {
		return err
	}
	b, err := f.mblock(p)
	if err != nil {
		return err
	}
	if n, _ := f.entName(b, 12); n != ".." {
		return corrupt(p, "directory %d: no \"..\" entry", ino)
	}
	putLE32(b, 12, parent)
	f.leafSum(d, p, b)
	return nil
}

// isAncestor reports whether dir a is dir b or one of b's ancestors.
func (f *FS) isAncestor(a, b uint32) (bool, error) {
	for i := 0; i < 1<<16; i++ {
		if a == b {
			return true, nil
		}
		if b == RootIno {
			return false, nil
		}
		up, err := f.lookup(b, "..")
		if err != nil {
			return false, err
		}
		if up == b {
			return false, nil
		}
		b = up
	}
	return false, corrupt(0, "directory %d: \"..\" chain too long", b)
}

// Rename moves olddir/oldname to newdir/newname, replacing a target as
// rename(2) does (a directory only by an empty directory). flags may be
// RenameNoReplace (EEXIST if the target exists) or RenameExchange (swap
// the two, which must both exist).
func (f *FS) Rename(olddir uint32, oldname string, newdir uint32, newname string, flags uint32) error {
	unlock, err := f.wlock()
	if err != nil {
		return err
	}
	defer unlock()
	if flags&^(RenameNoReplace|RenameExchange) != 0 || flags == RenameNoReplace|RenameExchange {
		return errf(syscall.EINVAL, "rename flags %#x", flags)
	}
	for _, n := range []string{oldname, newname} {
		if err := checkName(n); err != nil {
			return err
		}
		if n == "." || n == ".." {
			return errf(syscall.EBUSY, "rename of %q", n)
		}
	}
	od, err := f.openDirW(olddir)
	if err != nil {
		return err
	}
	nd, err := f.openDirW(newdir)
	if err != nil {
		return err
	}
	if nd.ib.links() == 0 {
		return errf(syscall.ENOENT, "directory %d was removed", newdir)
	}
	src, err := f.lookupW(od, oldname)
	if err != nil {
		return err
	}
	if src == 0 {
		return errf(syscall.ENOENT, "%q in directory %d", oldname, olddir)
	}
	dst, err := f.lookupW(nd, newname)
	if err != nil {
		return err
	}
	sib, err := f.getInode(src)
	if err != nil {
		return err
	}
	if flags&RenameExchange != 0 {
		if dst == 0 {
			return errf(syscall.ENOENT, "%q in directory %d", newname, newdir)
		}
		return f.exchange(od, oldname, sib, nd, newname, dst)
	}
	if dst != 0 && flags&RenameNoReplace != 0 {
		return errf(syscall.EEXIST, "%q in directory %d", newname, newdir)
	}
	if sib.isDir() && olddir != newdir {
		if anc, err := f.isAncestor(src, newdir); err != nil {
			return err
		} else if anc {
			return errf(syscall.EINVAL, "moving directory %d into itself", src)
		}
	}
	if dst != 0 && dst != src && olddir != newdir {
		// A target that is an ancestor of the source cannot be empty.
		if anc, err := f.isAncestor(dst, olddir); err != nil {
			return err
		} else if anc {
			return errf(syscall.ENOTEMPTY, "rename over an ancestor (%d)", dst)
		}
	}
	if dst == src {
		return nil // two links to one inode: nothing to do
	}
	var dib *ibuf
	if dst != 0 {
		if dib, err = f.getInode(dst); err != nil {
			return err
		}
		switch {
		case sib.isDir() && !dib.isDir():
			return errf(syscall.ENOTDIR, "%q", newname)
		case !sib.isDir() && dib.isDir():
			return errf(syscall.EISDIR, "%q", newname)
		}
		if dib.isDir() {
			if err := f.checkEmpty(dst); err != nil {
				return err
			}
		}
	}
	moveDir := sib.isDir() && olddir != newdir
	if moveDir {
		if dib == nil && f.dirLinkMax(nd.ib) {
			return errf(syscall.EMLINK, "directory %d has %d links", newdir, nd.ib.links())
		}
	}
	ft := f.ftOf(sib.mode())
	if dib != nil {
		if err := f.setEntry(nd, newname, src, ft); err != nil {
			return err
		}
	} else if err := f.addEntry(nd, newname, src, ft); err != nil {
		return err
	}
	// The old directory may be the new one, changed by the insert.
	if olddir == newdir {
		od = nd
	}
	if err := f.removeEntry(od, oldname); err != nil {
		return err
	}
	now := f.w.now()
	if moveDir {
		if err := f.setDotDot(src, newdir); err != nil {
			return err
		}
		f.decDir(od.ib)
		if dib == nil {
			f.incDir(nd.ib)
		}
	} else if sib.isDir() && dib != nil {
		// Same directory: the replaced directory's ".." link goes.
		f.decDir(nd.ib)
	}
	if moveDir && dib != nil {
		// The replaced directory's ".." link to newdir goes, src's comes:
		// newdir's count is unchanged.
	}
	f.setTime(sib, tCtime, now)
	if err := f.putInode(sib); err != nil {
		return err
	}
	f.setTime(od.ib, tMtime|tCtime, now)
	f.setTime(nd.ib, tMtime|tCtime, now)
	if olddir != newdir {
		if err := f.putInode(od.ib); err != nil {
			return err
		}
	}
	if err := f.putInode(nd.ib); err != nil {
		return err
	}
	if dib != nil {
		return f.dropLink(dib)
	}
	return nil
}

func (f *FS) exchange(od *dirCtx, oldname string, sib *ibuf, nd *dirCtx, newname string, dst uint32) error {
	dib, err := f.getInode(dst)
	if err != nil {
		return err
	}
	if sib.ino == dst {
		return nil
	}
	same := od.ib.ino == nd.ib.ino
	for _, c := range [][2]*ibuf{{sib, nd.ib}, {dib, od.ib}} {
		if !same && c[0].isDir() {
			if anc, err := f.isAncestor(c[0].ino, c[1].ino); err != nil {
				return err
			} else if anc {
				return errf(syscall.EINVAL, "moving directory %d into itself", c[0].ino)
			}
		}
	}
	if err := f.setEntry(nd, newname, sib.ino, f.ftOf(sib.mode())); err != nil {
		return err
	}
	if same {
		od = nd
	}
	if err := f.setEntry(od, oldname, dst, f.ftOf(dib.mode())); err != nil {
		return err
	}
	if !same && sib.isDir() != dib.isDir() {
		// One directory changes parent: move its ".." link.
		if sib.isDir() {
			f.decDir(od.ib)
			f.incDir(nd.ib)
		} else {
			f.decDir(nd.ib)
			f.incDir(od.ib)
		}
	}
	if !same {
		if sib.isDir() {
			if err := f.setDotDot(sib.ino, nd.ib.ino); err != nil {
				return err
			}
		}
		if dib.isDir() {
			if err := f.setDotDot(dib.ino, od.ib.ino); err != nil {
				return err
			}
		}
	}
	now := f.w.now()
	for _, ib := range []*ibuf{sib, dib} {
		f.setTime(ib, tCtime, now)
		if err := f.putInode(ib); err != nil {
			return err
		}
	}
	f.setTime(od.ib, tMtime|tCtime, now)
	f.setTime(nd.ib, tMtime|tCtime, now)
	if !same {
		if err := f.putInode(od.ib); err != nil {
			return err
		}
	}
	return f.putInode(nd.ib)
}
