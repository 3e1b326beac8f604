package ext4

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"sort"
	"strings"
	"syscall"
)

// Setxattr flags (the Linux XATTR_* values).
const (
	XattrCreate  = 0x1
	XattrReplace = 0x2
)

// xent is an attribute as stored: name index, name suffix, raw value.
type xent struct {
	idx   uint8
	name  string
	value []byte
}

func (e xent) size() int  { return (16 + len(e.name) + 3) &^ 3 }
func (e xent) vsize() int { return (len(e.value) + 3) &^ 3 }

// splitXattrName maps a full name to its index and suffix.
func splitXattrName(full string) (uint8, string, error) {
	switch full {
	case "system.posix_acl_access":
		return 2, "", nil
	case "system.posix_acl_default":
		return 3, "", nil
	case "system.data":
		return 0, "", errf(syscall.EPERM, "system.data is reserved")
	}
	for _, p := range []struct {
		idx uint8
		pfx string
	}{{1, "user."}, {4, "trusted."}, {6, "security."}, {7, "system."}} {
		if strings.HasPrefix(full, p.pfx) {
			s := full[len(p.pfx):]
			if s == "" {
				return 0, "", errf(syscall.EINVAL, "empty xattr name %q", full)
			}
			if len(s) > 255 {
				return 0, "", errf(syscall.ERANGE, "xattr name of %d bytes", len(s))
			}
			return p.idx, s, nil
		}
	}
	return 0, "", errf(syscall.EOPNOTSUPP, "xattr namespace of %q", full)
}

func rawXattrs(region []byte, start, valBase int) []xent {
	var out []xent
	for pos := start; pos+16 <= len(region) && le32(region, pos) != 0; {
		e := region[pos:]
		nl := int(e[0])
		voff, vsize := int(le16(e, 2)), int(le32(e, 8))
		out = append(out, xent{idx: e[1], name: string(e[16 : 16+nl]),
			value: bytes.Clone(region[valBase+voff : valBase+voff+vsize])})
		pos += (16 + nl + 3) &^ 3
	}
	return out
}

// ibodyRegion is where in-inode attributes live (nil when there is no
// room).
func (f *FS) ibodyRegion(ib *ibuf) []byte {
	if len(ib.raw) <= 128 {
		return nil
	}
	x := 128 + int(le16(ib.raw, 0x80))
	if x+4 >= len(ib.raw) {
		return nil
	}
	return ib.raw[x:]
}

// allXattrs reads ib's stored attributes (after the read side validated
// them).
func (f *FS) allXattrs(ib *ibuf) ([]xent, error) {
	in := f.parsed(ib)
	if _, err := f.ibodyXattrs(in); err != nil {
		return nil, err
	}
	if _, err := f.blockXattrs(in); err != nil {
		return nil, err
	}
	var out []xent
	if r := f.ibodyRegion(ib); r != nil && le32(r, 0) == xattrMagic {
		out = append(out, rawXattrs(r, 4, 4)...)
	}
	if acl := ib.fileACL(); acl != 0 {
		b, err := f.block(acl)
		if err != nil {
			return nil, err
		}
		out = append(out, rawXattrs(b, 32, 0)...)
	}
	return out, nil
}

func xattrHash(e xent) uint32 {
	var h uint32
	for i := 0; i < len(e.name); i++ {
		h = h<<5 ^ h>>27 ^ uint32(e.name[i])
	}
	v := make([]byte, e.vsize())
	copy(v, e.value)
	for i := 0; i < len(v); i += 4 {
		h = h<<16 ^ h>>16 ^ binary.LittleEndian.Uint32(v[i:])
	}
	return h
}

// layout writes es into region: entries from start, values from the end
// (offsets relative to valBase). It reports false when they do not fit.
func layoutXattrs(region []byte, start, valBase int, es []xent, hashes bool) bool {
	need := start + 4
	for _, e := range es {
		need += e.size() + e.vsize()
	}
	if need > len(region) {
		return false
	}
	clear(region[start:])
	pos, vend := start, len(region)
	for _, e := range es {
		vend -= e.vsize()
		copy(region[vend:], e.value)
		o := region[pos:]
		o[0], o[1] = byte(len(e.name)), e.idx
		voff := vend - valBase
		if len(e.value) == 0 {
			voff = 0
		}
		putLE16(o, 2, uint16(voff))
		putLE32(o, 4, 0)
		putLE32(o, 8, uint32(len(e.value)))
		if hashes {
			putLE32(o, 12, xattrHash(e))
		}
		copy(o[16:], e.name)
		pos += e.size()
	}
	return true
}

// SetXattr sets attribute name (with its namespace prefix) of ino to
// value. flags may be XattrCreate (EEXIST if present) or XattrReplace
// (ENODATA if absent). POSIX ACLs are taken in the user-space format.
func (f *FS) SetXattr(ino uint32, name string, value []byte, flags int) error {
	unlock, err := f.wlock()
	if err != nil {
		return err
	}
	defer unlock()
	idx, suffix, err := splitXattrName(name)
	if err != nil {
		return err
	}
	if idx == 2 || idx == 3 {
		if value, err = aclToDisk(value); err != nil {
			return errf(syscall.EINVAL, "%s: %v", name, err)
		}
	}
	if len(value) > int(f.bs)-64 {
		return errf(syscall.ENOSPC, "xattr value of %d bytes", len(value))
	}
	return f.changeXattr(ino, xent{idx, suffix, value}, flags, false)
}

// RemoveXattr removes attribute name of ino (ENODATA if absent).
func (f *FS) RemoveXattr(ino uint32, name string) error {
	unlock, err := f.wlock()
	if err != nil {
		return err
	}
	defer unlock()
	idx, suffix, err := splitXattrName(name)
	if err != nil {
		return err
	}
	return f.changeXattr(ino, xent{idx: idx, name: suffix}, XattrReplace, true)
}

func (f *FS) changeXattr(ino uint32, x xent, flags int, remove bool) error {
	ib, err := f.getInode(ino)
	if err != nil {
		return err
	}
	if ib.links() == 0 && !f.w.orphans[ino] {
		return errf(syscall.ENOENT, "inode %d is not in use", ino)
	}
	es, err := f.allXattrs(ib)
	if err != nil {
		return err
	}
	found := -1
	for i, e := range es {
		if e.idx == x.idx && e.name == x.name {
			found = i
		}
	}
	switch {
	case found >= 0 && flags&XattrCreate != 0:
		return errf(syscall.EEXIST, "xattr exists")
	case found < 0 && flags&XattrReplace != 0:
		return errf(syscall.ENODATA, "no such xattr")
	}
	if found >= 0 {
		es = append(es[:found], es[found+1:]...)
	}
	if !remove {
		es = append(es, x)
	}
	if err := f.storeXattrs(ib, es); err != nil {
		return err
	}
	f.setTime(ib, tCtime, f.w.now())
	return f.putInode(ib)
}

// storeXattrs lays es out in the inode body first and the rest in one
// block (sorted as the kernel sorts block entries).
func (f *FS) storeXattrs(ib *ibuf, es []xent) error {
	sort.SliceStable(es, func(i, j int) bool {
		a, b := es[i], es[j]
		if a.idx != b.idx {
			return a.idx < b.idx
		}
		if len(a.name) != len(b.name) {
			return len(a.name) < len(b.name)
		}
		return a.name < b.name
	})
	region := f.ibodyRegion(ib)
	var in, out []xent
	used := 8 // magic + terminator
	for _, e := range es {
		if region != nil && used+e.size()+e.vsize() <= len(region) {
			in = append(in, e)
			used += e.size() + e.vsize()
		} else {
			out = append(out, e)
		}
	}
	if len(out) > 0 {
		need := 32 + 4
		for _, e := range out {
			need += e.size() + e.vsize()
		}
		if need > int(f.bs) {
			return errf(syscall.ENOSPC, "xattrs of inode %d do not fit one block", ib.ino)
		}
	}
	// The block first: it is the part that can fail.
	old := ib.fileACL()
	if len(out) > 0 {
		blk := old
		if blk != 0 {
			b, err := f.block(blk)
			if err != nil {
				return err
			}
			if le32(b, 4) > 1 {
				// Shared: leave it to the others.
				if err := f.unshareXattrBlock(blk); err != nil {
					return err
				}
				blk = 0
			}
		}
		if blk == 0 {
			p, _, err := f.allocBlocks(f.groupFirst(f.inodeGroup(ib.ino)), 1)
			if err != nil {
				return err
			}
			blk = p
			if err := f.addBlocks(ib, 1); err != nil {
				return err
			}
		}
		b := f.newMeta(blk)
		putLE32(b, 0, xattrMagic)
		putLE32(b, 4, 1)
		putLE32(b, 8, 1)
		layoutXattrs(b, 32, 0, out, true)
		var h uint32
		for _, e := range out {
			h = h<<16 ^ h>>16 ^ xattrHash(e)
		}
		putLE32(b, 12, h)
		f.xattrBlockSum(blk, b)
		ib.setFileACL(blk)
	} else if old != 0 {
		if err := f.dropXattrBlock(ib); err != nil {
			return err
		}
	}
	if region != nil {
		clear(region)
		if len(in) > 0 {
			putLE32(region, 0, xattrMagic)
			layoutXattrs(region, 4, 4, in, true)
		}
	}
	return nil
}

func (f *FS) xattrBlockSum(blk uint64, b []byte) {
	if !f.csum {
		return
	}
	var n [8]byte
	binary.LittleEndian.PutUint64(n[:], blk)
	putLE32(b, 0x10, 0)
	c := crc32c(f.csumSeed, n[:])
	c = crc32c(c, b)
	putLE32(b, 0x10, c)
}

func (f *FS) unshareXattrBlock(blk uint64) error {
	b, err := f.mblock(blk)
	if err != nil {
		return err
	}
	putLE32(b, 4, le32(b, 4)-1)
	f.xattrBlockSum(blk, b)
	return nil
}

// dropXattrBlock releases ib's xattr block (freed when ib was its only
// user).
func (f *FS) dropXattrBlock(ib *ibuf) error {
	blk := ib.fileACL()
	if blk == 0 {
		return nil
	}
	if blk >= f.sb.BlocksCount {
		return corrupt(0, "inode %d: xattr block %d", ib.ino, blk)
	}
	b, err := f.block(blk)
	if err != nil {
		return err
	}
	if le32(b, 4) > 1 {
		if err := f.unshareXattrBlock(blk); err != nil {
			return err
		}
	} else if err := f.freeBlocks(blk, 1); err != nil {
		return err
	}
	ib.setFileACL(0)
	return f.addBlocks(ib, -1)
}

// aclToDisk converts a user-space POSIX ACL (version 2, 8-byte entries)
// to ext4's compact form (version 1; short entries for the tags without a
// qualifier).
func aclToDisk(b []byte) ([]byte, error) {
	if len(b) < 4 || le32(b, 0) != 2 || (len(b)-4)%8 != 0 {
		return nil, fmt.Errorf("bad ACL header or length")
	}
	out := binary.LittleEndian.AppendUint32(nil, 1)
	for p := 4; p < len(b); p += 8 {
		tag, perm, id := le16(b, p), le16(b, p+2), le32(b, p+4)
		out = binary.LittleEndian.AppendUint16(out, tag)
		out = binary.LittleEndian.AppendUint16(out, perm)
		switch tag {
		case 1, 4, 0x10, 0x20:
		case 2, 8:
			out = binary.LittleEndian.AppendUint32(out, id)
		default:
			return nil, fmt.Errorf("bad ACL tag %#x", tag)
		}
	}
	return out, nil
}
