package ext4

import (
	"encoding/binary"
	"fmt"
	"time"
)

// File type bits of Inode.Mode (the S_IF* values).
const (
	S_IFMT   = 0xF000
	S_IFSOCK = 0xC000
	S_IFLNK  = 0xA000
	S_IFREG  = 0x8000
	S_IFBLK  = 0x6000
	S_IFDIR  = 0x4000
	S_IFCHR  = 0x2000
	S_IFIFO  = 0x1000
)

// Inode flags the read path uses.
const (
	flagIndex      = 0x1000
	flagHugeFile   = 0x40000
	flagExtents    = 0x80000
	flagEAInode    = 0x200000
	flagInlineData = 0x10000000
	flagEncrypt    = 0x800
)

// Inode is a decoded on-disk inode: everything stat needs, plus what the
// driver needs to map its data.
type Inode struct {
	Ino        uint32
	Mode       uint16 // type and permission bits (S_IF* | 07777)
	Uid, Gid   uint32
	Size       uint64
	Nlink      uint16
	Blocks     uint64 // 512-byte units, as stat reports
	Flags      uint32
	Generation uint32
	// RdevMajor and RdevMinor are set for character and block devices.
	RdevMajor, RdevMinor uint32
	Atime, Mtime, Ctime  time.Time
	Crtime               time.Time // zero when the inode has no room for it
	FileACL              uint64    // xattr block, 0 for none

	iblock [60]byte // i_block: extent root, block map, fast symlink or inline data
	extra  []byte   // bytes after the 128-byte base (in-inode xattrs live here)
	isize  int      // i_extra_isize
	block  uint64   // where the inode was read from (for error messages)
}

// IsDir reports whether the inode is a directory.
func (i *Inode) IsDir() bool { return i.Mode&S_IFMT == S_IFDIR }

// IsRegular reports whether the inode is a regular file.
func (i *Inode) IsRegular() bool { return i.Mode&S_IFMT == S_IFREG }

// IsSymlink reports whether the inode is a symbolic link.
func (i *Inode) IsSymlink() bool { return i.Mode&S_IFMT == S_IFLNK }

// DirType is the dirent d_type (DT_*) of the inode's file type.
func (i *Inode) DirType() uint8 { return modeToDT(i.Mode) }

func modeToDT(mode uint16) uint8 {
	switch mode & S_IFMT {
	case S_IFREG:
		return 8
	case S_IFDIR:
		return 4
	case S_IFCHR:
		return 2
	case S_IFBLK:
		return 6
	case S_IFIFO:
		return 1
	case S_IFSOCK:
		return 12
	case S_IFLNK:
		return 10
	}
	return 0
}

// Rdev returns the Linux dev_t encoding of the device number.
func (i *Inode) Rdev() uint64 {
	ma, mi := uint64(i.RdevMajor), uint64(i.RdevMinor)
	return (mi & 0xff) | (ma&0xfff)<<8 | (mi&^0xff)<<12 | (ma&^0xfff)<<32
}

// Inode reads and decodes inode ino, verifying its checksum.
func (f *FS) Inode(ino uint32) (*Inode, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.inode(ino)
}

func (f *FS) inode(ino uint32) (*Inode, error) {
	if ino == 0 || ino > f.sb.InodesCount {
		return nil, corrupt(0, "inode number %d out of range (1..%d)", ino, f.sb.InodesCount)
	}
	g := uint64(ino-1) / uint64(f.sb.InodesPerGroup)
	idx := uint64(ino-1) % uint64(f.sb.InodesPerGroup)
	if g >= uint64(len(f.groups)) {
		return nil, corrupt(0, "inode %d in missing group %d", ino, g)
	}
	off := idx * uint64(f.sb.InodeSize)
	blk := f.groups[g].inodeTable + off/uint64(f.bs)
	b, err := f.block(blk)
	if err != nil {
		return nil, fmt.Errorf("inode %d: %w", ino, err)
	}
	raw := b[off%uint64(f.bs) : off%uint64(f.bs)+uint64(f.sb.InodeSize)]
	return f.parseInode(ino, blk, raw)
}

// parseInode decodes raw (s_inode_size bytes) as inode ino.
func (f *FS) parseInode(ino uint32, blk uint64, raw []byte) (*Inode, error) {
	in := &Inode{
		Ino:        ino,
		Mode:       le16(raw, 0x0),
		Uid:        uint32(le16(raw, 0x2)) | uint32(le16(raw, 0x78))<<16,
		Gid:        uint32(le16(raw, 0x18)) | uint32(le16(raw, 0x7A))<<16,
		Size:       uint64(le32(raw, 0x4)) | uint64(le32(raw, 0x6C))<<32,
		Nlink:      le16(raw, 0x1A),
		Flags:      le32(raw, 0x20),
		Generation: le32(raw, 0x64),
		FileACL:    uint64(le32(raw, 0x68)) | uint64(le16(raw, 0x76))<<32,
		block:      blk,
	}
	copy(in.iblock[:], raw[0x28:0x64])
	var extraSize int
	if len(raw) > 128 {
		extraSize = int(le16(raw, 0x80))
		if extraSize > len(raw)-128 || extraSize&3 != 0 {
			return nil, corrupt(blk, "inode %d: extra size %d", ino, extraSize)
		}
		in.extra = raw[128:]
		in.isize = extraSize
	}
	if f.csum {
		if err := f.checkInode(in, raw, extraSize); err != nil {
			return nil, err
		}
	}
	blocks := uint64(le32(raw, 0x1C))
	if f.sb.FeatureRoCompat&roCompatHugeFile != 0 {
		blocks |= uint64(le16(raw, 0x74)) << 32
		if in.Flags&flagHugeFile != 0 {
			blocks *= uint64(f.bs / 512)
		}
	}
	in.Blocks = blocks
	tm := func(lo, extraOff int) time.Time {
		sec := int64(int32(le32(raw, lo)))
		var nsec int64
		if extraOff >= 0 && extraSize >= extraOff-128+4 {
			x := le32(raw, extraOff)
			sec += int64(x&3) << 32
			nsec = int64(x >> 2)
		}
		return time.Unix(sec, nsec)
	}
	in.Atime = tm(0x8, 0x8C)
	in.Ctime = tm(0xC, 0x84)
	in.Mtime = tm(0x10, 0x88)
	if extraSize >= 0x98-128 {
		in.Crtime = tm(0x90, 0x94)
	}
	switch in.Mode & S_IFMT {
	case S_IFCHR, S_IFBLK:
		if d := le32(raw, 0x28); d != 0 {
			in.RdevMajor, in.RdevMinor = (d>>8)&0xff, d&0xff
		} else {
			d = le32(raw, 0x2C)
			in.RdevMajor = (d >> 8) & 0xfff
			in.RdevMinor = (d & 0xff) | (d>>12)&0xfff00
		}
	}
	return in, nil
}

// inodeSeed is the per-inode crc32c seed of metadata_csum.
func (f *FS) inodeSeed(ino, gen uint32) uint32 {
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], ino)
	c := crc32c(f.csumSeed, b[:])
	binary.LittleEndian.PutUint32(b[:], gen)
	return crc32c(c, b[:])
}

func (f *FS) checkInode(in *Inode, raw []byte, extraSize int) error {
	if f.checked.has(inodeKey(in.Ino), uint64(in.Generation)) {
		return nil
	}
	c := f.inodeSeed(in.Ino, in.Generation)
	var zero [2]byte
	c = crc32c(c, raw[:0x7C])
	c = crc32c(c, zero[:])
	c = crc32c(c, raw[0x7E:128])
	stored := uint32(le16(raw, 0x7C))
	hasHi := len(raw) > 128 && extraSize >= 4
	if len(raw) > 128 {
		c = crc32c(c, raw[128:0x82])
		if hasHi {
			c = crc32c(c, zero[:])
			c = crc32c(c, raw[0x84:])
			stored |= uint32(le16(raw, 0x82)) << 16
		} else {
			c = crc32c(c, raw[0x82:])
		}
	}
	if !hasHi {
		c &= 0xFFFF
	}
	if c != stored {
		return &ChecksumError{What: fmt.Sprintf("inode %d", in.Ino), Block: in.block, Want: stored, Got: c}
	}
	f.checked.add(inodeKey(in.Ino), uint64(in.Generation))
	return nil
}
