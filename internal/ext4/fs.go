package ext4

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
)

// RootIno is the inode number of the root directory.
const RootIno = 2

// Options tune Open. The zero value is the default.
type Options struct {
	// CacheBytes bounds the metadata block cache (default 8 MiB).
	CacheBytes int
	// NoReplay refuses a filesystem whose journal needs recovery instead
	// of replaying it in memory.
	NoReplay bool
	// Writable mounts the filesystem read-write (OpenDevice only; see
	// write.go for what is refused).
	Writable bool
	// Discard passes the host blocks of freed extents to the device's
	// Discard method (when it has one).
	Discard bool
	// DirtyBytes bounds the metadata kept dirty in memory between Syncs
	// (default 16 MiB); past it, dirty blocks are written back.
	DirtyBytes int
	// Logf receives warnings (a not-clean filesystem mounted read-write).
	Logf func(format string, a ...any)
}

// FS is a mounted ext2/3/4 filesystem, read-only (Open) or read-write
// (OpenDevice). All methods are safe for concurrent use: readers share mu,
// writers hold it exclusively.
type FS struct {
	mu       sync.RWMutex
	w        *writer // nil when read-only
	wgen     uint64  // bumped by every write operation (File reloads)
	dev      io.ReaderAt
	devSize  int64
	sb       *Superblock
	bs       uint32
	groups   []groupDesc
	csum     bool   // metadata_csum
	csumSeed uint32 // crc32c seed for metadata checksums
	cache    *blockCache
	overlay  map[uint64]replayed // blocks replayed from the journal
	replayed int                 // transactions replayed at Open
	overhead uint64              // metadata blocks, left out of statfs's f_blocks
	revokes  int                 // revoke records seen in them
	skipped  int                 // journalled copies not replayed because revoked
	checked  checkedSet          // metadata whose checksum was verified once
}

// checkedSet remembers which inodes and directory leaf blocks passed
// their checksum. This driver is the image's only writer while it is
// mounted and keeps every checksum it writes, so each needs checking once,
// not at every path walk. Safe for concurrent readers.
type checkedSet struct {
	mu   sync.Mutex
	seen map[uint64]uint64 // inodeKey or leafKey → the identity it passed with
}

// inodeKey and leafKey keep inode numbers and block numbers apart.
func inodeKey(ino uint32) uint64 { return uint64(ino)<<1 | 1 }
func leafKey(blk uint64) uint64  { return blk << 1 }

// has reports whether key passed its check as who (an inode's
// generation; a leaf's owning inode and generation, its checksum seed).
func (c *checkedSet) has(key, who uint64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	w, ok := c.seen[key]
	return ok && w == who
}

func (c *checkedSet) add(key, who uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.seen == nil {
		c.seen = map[uint64]uint64{}
	}
	c.seen[key] = who
}

type groupDesc struct {
	inodeTable uint64
	flags      uint16
}

const bgInodeUninit = 0x1

// Open reads the filesystem on dev, which is size bytes long. When the
// superblock says needs_recovery, the journal is replayed into memory (the
// device is never written) unless opts.NoReplay is set, in which case Open
// fails with an error wrapping ErrNeedsRecovery.
func Open(dev io.ReaderAt, size int64, opts *Options) (*FS, error) {
	if opts == nil {
		opts = &Options{}
	}
	f := &FS{dev: dev, devSize: size}
	if err := f.load(); err != nil {
		return nil, err
	}
	cb := opts.CacheBytes
	if cb <= 0 {
		cb = 8 << 20
	}
	f.cache = newBlockCache(cb, f.bs)
	if f.sb.FeatureIncompat&incompatRecover != 0 {
		if opts.NoReplay {
			return nil, fmt.Errorf("needs_recovery set: %w", ErrNeedsRecovery)
		}
		if err := f.replayJournal(); err != nil {
			return nil, fmt.Errorf("journal replay: %w (%w)", err, ErrNeedsRecovery)
		}
		// The journal may hold newer copies of the superblock and the
		// group descriptors: decode them again through the overlay.
		f.cache = newBlockCache(cb, f.bs)
		if err := f.load(); err != nil {
			return nil, fmt.Errorf("after journal replay: %w", err)
		}
	}
	return f, nil
}

// load decodes the superblock and the group descriptors (through the
// journal overlay when there is one).
func (f *FS) load() error {
	buf := make([]byte, superSize)
	if err := f.readRaw(buf, superOffset); err != nil {
		return fmt.Errorf("reading superblock: %w", err)
	}
	if f.overlay != nil {
		// The superblock lives in block 0 (bs > 1024) or block 1.
		blk, off := uint64(superOffset)/uint64(f.bs), superOffset%int(f.bs)
		if _, ok := f.overlay[blk]; ok {
			b, err := f.overlayBlock(blk)
			if err != nil {
				return err
			}
			copy(buf, b[off:])
		}
	}
	sb, err := parseSuperblock(buf)
	if err != nil {
		return err
	}
	if sb.BlocksCount > uint64(f.devSize)/uint64(sb.BlockSize) {
		return fmt.Errorf("superblock: %d blocks of %d bytes exceed the device (%d bytes)", sb.BlocksCount, sb.BlockSize, f.devSize)
	}
	f.sb, f.bs = sb, sb.BlockSize
	f.csum = sb.FeatureRoCompat&roCompatMetadataCsum != 0
	if sb.FeatureIncompat&incompatCsumSeed != 0 {
		f.csumSeed = sb.ChecksumSeed
	} else {
		f.csumSeed = crc32c(^uint32(0), sb.UUID[:])
	}
	if f.cache == nil {
		f.cache = newBlockCache(1<<20, f.bs)
	}
	if err := f.loadGroups(); err != nil {
		return err
	}
	f.overhead = f.metaOverhead()
	return nil
}

// metaOverhead is the number of blocks the filesystem's own structures
// take, as the kernel counts it for statfs: s_overhead_clusters when
// mke2fs or resize2fs recorded it, else the blocks before the first group,
// every group's superblock copy, descriptors and reserved GDT blocks, its
// two bitmaps and inode table, and an internal journal.
func (f *FS) metaOverhead() uint64 {
	if f.sb.Overhead != 0 {
		return uint64(f.sb.Overhead)
	}
	itBlocks := (uint64(f.sb.InodesPerGroup)*uint64(f.sb.InodeSize) + uint64(f.bs) - 1) / uint64(f.bs)
	n := uint64(f.sb.FirstDataBlock)
	for g := uint64(0); g < f.sb.groupCount(); g++ {
		n += f.superAndDescBlocks(g) + 2 + itBlocks
	}
	if f.sb.FeatureCompat&compatHasJournal != 0 && f.sb.JournalInum != 0 {
		if in, err := f.Inode(f.sb.JournalInum); err == nil {
			n += in.Size / uint64(f.bs)
		}
	}
	return min(n, f.sb.BlocksCount)
}

func (f *FS) hasSuper(g uint64) bool {
	if g <= 1 || f.sb.FeatureRoCompat&0x1 == 0 { // sparse_super
		return true
	}
	for _, p := range []uint64{3, 5, 7} {
		n := p
		for n < g {
			n *= p
		}
		if n == g {
			return true
		}
	}
	return false
}

// descBlock is the block holding group g's descriptor: right after the
// superblock's block, or with meta_bg in the first group of each meta
// group (after its backup superblock).
func (f *FS) descBlock(g uint64) uint64 {
	dpb := uint64(f.bs) / uint64(f.sb.DescSize)
	if f.sb.FeatureIncompat&incompatMetaBG == 0 || g/dpb < uint64(f.sb.FirstMetaBG) {
		sbBlock := uint64(superOffset) / uint64(f.bs)
		return sbBlock + 1 + g/dpb
	}
	mg := (g / dpb) * dpb
	blk := uint64(f.sb.FirstDataBlock) + mg*uint64(f.sb.BlocksPerGroup)
	if f.hasSuper(mg) {
		blk++
	}
	if f.bs == 1024 && mg == 0 && f.sb.FirstDataBlock == 0 {
		blk++ // bigalloc with 1 KiB blocks: block 0 is the boot block
	}
	return blk
}

func (f *FS) loadGroups() error {
	n := f.sb.groupCount()
	ds := uint64(f.sb.DescSize)
	dpb := uint64(f.bs) / ds
	f.groups = make([]groupDesc, n)
	for g := uint64(0); g < n; g++ {
		blk := f.descBlock(g)
		b, err := f.block(blk)
		if err != nil {
			return fmt.Errorf("group descriptor %d: %w", g, err)
		}
		d := b[(g%dpb)*ds : (g%dpb+1)*ds]
		if err := f.checkDesc(g, blk, d); err != nil {
			return err
		}
		it := uint64(le32(d, 0x8))
		if ds >= 64 {
			it |= uint64(le32(d, 0x28)) << 32
		}
		itBlocks := (uint64(f.sb.InodesPerGroup)*uint64(f.sb.InodeSize) + uint64(f.bs) - 1) / uint64(f.bs)
		if it == 0 || it+itBlocks > f.sb.BlocksCount {
			return corrupt(blk, "group descriptor %d: inode table at block %d", g, it)
		}
		f.groups[g] = groupDesc{inodeTable: it, flags: le16(d, 0x12)}
	}
	return nil
}

func (f *FS) checkDesc(g, blk uint64, d []byte) error {
	var le [4]byte
	binary.LittleEndian.PutUint32(le[:], uint32(g))
	stored := uint32(le16(d, 0x1E))
	var got uint32
	switch {
	case f.csum:
		c := crc32c(f.csumSeed, le[:])
		c = crc32c(c, d[:0x1E])
		c = crc32c(c, []byte{0, 0})
		if len(d) > 0x20 {
			c = crc32c(c, d[0x20:])
		}
		got = c & 0xFFFF
	case f.sb.FeatureRoCompat&roCompatGdtCsum != 0:
		c := crc16(0xFFFF, f.sb.UUID[:])
		c = crc16(c, le[:])
		c = crc16(c, d[:0x1E])
		if len(d) > 0x20 {
			c = crc16(c, d[0x20:])
		}
		got = uint32(c)
	default:
		return nil
	}
	if got != stored {
		return &ChecksumError{What: fmt.Sprintf("group descriptor %d", g), Block: blk, Want: stored, Got: got}
	}
	return nil
}

// crc16 is the reflected CRC-16 (poly 0x8005) used by gdt_csum.
func crc16(crc uint16, p []byte) uint16 {
	for _, b := range p {
		crc ^= uint16(b)
		for i := 0; i < 8; i++ {
			if crc&1 != 0 {
				crc = crc>>1 ^ 0xA001
			} else {
				crc >>= 1
			}
		}
	}
	return crc
}

// readRaw reads exactly len(p) bytes at off from the device.
func (f *FS) readRaw(p []byte, off int64) error {
	n, err := f.dev.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == nil || errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("device read of %d bytes at %d: %w", len(p), off, err)
}

// block returns filesystem block blk (through the journal overlay and the
// cache). The slice is shared: never modify it.
func (f *FS) block(blk uint64) ([]byte, error) {
	if f.sb != nil && blk >= f.sb.BlocksCount {
		return nil, corrupt(0, "reference to block %d beyond the end of the filesystem (%d blocks)", blk, f.sb.BlocksCount)
	}
	if f.w != nil {
		if b, ok := f.w.dirty[blk]; ok {
			return b, nil
		}
	}
	if b := f.cache.get(blk); b != nil {
		return b, nil
	}
	if f.overlay != nil {
		if _, ok := f.overlay[blk]; ok {
			b, err := f.overlayBlock(blk)
			if err == nil {
				f.cache.put(blk, b)
			}
			return b, err
		}
	}
	b := make([]byte, f.bs)
	if err := f.readRaw(b, int64(blk)*int64(f.bs)); err != nil {
		return nil, err
	}
	f.cache.put(blk, b)
	return b, nil
}

// Superblock returns a copy of the decoded superblock.
func (f *FS) Superblock() Superblock {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return *f.sb
}

// BlockSize is the filesystem block size in bytes.
func (f *FS) BlockSize() int { return int(f.bs) }

// ReplayedTransactions is the number of journal transactions replayed into
// memory at Open (0 for a clean filesystem). A writer must not write a
// filesystem with a replayed journal before the replay is made durable.
func (f *FS) ReplayedTransactions() int { return f.replayed }

// Statfs is what statfs(2) reports for the filesystem.
type Statfs struct {
	BlockSize   int64
	Blocks      uint64
	FreeBlocks  uint64
	AvailBlocks uint64 // free blocks minus the reserved ones
	Inodes      uint64
	FreeInodes  uint64
	NameLen     int
}

// Statfs returns the superblock's counters (kept exact by the write side).
// Blocks leaves out the metadata overhead, as the kernel's f_blocks does
// (so that df's Used is what files take). AvailBlocks leaves out the reserved
// blocks and, with extents, the kernel's reserve pool (2% of the blocks,
// at most 4096), as the kernel's f_bavail does.
func (f *FS) Statfs() Statfs {
	f.mu.RLock()
	defer f.mu.RUnlock()
	s := f.sb
	reserved := s.ReservedBlocks
	if s.FeatureIncompat&incompatExtents != 0 {
		reserved += min(s.BlocksCount/50, 4096)
	}
	avail := uint64(0)
	if s.FreeBlocks > reserved {
		avail = s.FreeBlocks - reserved
	}
	return Statfs{
		BlockSize: int64(f.bs), Blocks: s.BlocksCount - f.overhead,
		FreeBlocks: s.FreeBlocks, AvailBlocks: avail,
		Inodes: uint64(s.InodesCount), FreeInodes: uint64(s.FreeInodes), NameLen: 255,
	}
}
