package ext4

import (
	"encoding/binary"
	"math/bits"
	"syscall"
)

// gdesc is a fully decoded group descriptor (the write side keeps them all
// in memory and encodes the changed ones at writeback).
type gdesc struct {
	blockBitmap, inodeBitmap, inodeTable uint64
	freeBlocks, freeInodes, usedDirs     uint32
	itableUnused                         uint32
	flags                                uint16
	bbCsum, ibCsum                       uint32
}

func (f *FS) loadFullGroups(w *writer) error {
	n := f.sb.groupCount()
	ds := uint64(f.sb.DescSize)
	dpb := uint64(f.bs) / ds
	w.gd = make([]gdesc, n)
	for g := uint64(0); g < n; g++ {
		b, err := f.block(f.descBlock(g))
		if err != nil {
			return err
		}
		d := b[(g%dpb)*ds : (g%dpb+1)*ds]
		x := gdesc{
			blockBitmap: uint64(le32(d, 0)), inodeBitmap: uint64(le32(d, 4)), inodeTable: uint64(le32(d, 8)),
			freeBlocks: uint32(le16(d, 0xC)), freeInodes: uint32(le16(d, 0xE)), usedDirs: uint32(le16(d, 0x10)),
			flags: le16(d, 0x12), itableUnused: uint32(le16(d, 0x1C)),
			bbCsum: uint32(le16(d, 0x18)), ibCsum: uint32(le16(d, 0x1A)),
		}
		if ds >= 64 {
			x.blockBitmap |= uint64(le32(d, 0x20)) << 32
			x.inodeBitmap |= uint64(le32(d, 0x24)) << 32
			x.inodeTable |= uint64(le32(d, 0x28)) << 32
			x.freeBlocks |= uint32(le16(d, 0x2C)) << 16
			x.freeInodes |= uint32(le16(d, 0x2E)) << 16
			x.usedDirs |= uint32(le16(d, 0x30)) << 16
			x.itableUnused |= uint32(le16(d, 0x32)) << 16
			x.bbCsum |= uint32(le16(d, 0x38)) << 16
			x.ibCsum |= uint32(le16(d, 0x3A)) << 16
		}
		if !f.uninitBG() {
			x.flags, x.itableUnused = 0, 0
		}
		for _, blk := range []uint64{x.blockBitmap, x.inodeBitmap} {
			if blk == 0 || blk >= f.sb.BlocksCount {
				return corrupt(f.descBlock(g), "group descriptor %d: bitmap at block %d", g, blk)
			}
		}
		w.gd[g] = x
	}
	return nil
}

// uninitBG reports whether group descriptors carry the *_UNINIT flags and
// checksums (uninit_bg or metadata_csum).
func (f *FS) uninitBG() bool {
	return f.csum || f.sb.FeatureRoCompat&roCompatGdtCsum != 0
}

// encodeGroups computes the bitmap checksums of the changed groups and
// writes the changed descriptors into their (dirty) GDT blocks.
func (f *FS) encodeGroups() error {
	w := f.w
	ds := int(f.sb.DescSize)
	dpb := uint64(f.bs) / uint64(ds)
	for g := range w.bbDirty {
		b, err := f.block(w.gd[g].blockBitmap)
		if err != nil {
			return err
		}
		if f.csum {
			w.gd[g].bbCsum = crc32c(f.csumSeed, b[:f.sb.BlocksPerGroup/8])
		}
		w.gdDirty[g] = true
	}
	for g := range w.ibDirty {
		b, err := f.block(w.gd[g].inodeBitmap)
		if err != nil {
			return err
		}
		if f.csum {
			w.gd[g].ibCsum = crc32c(f.csumSeed, b[:f.sb.InodesPerGroup/8])
		}
		w.gdDirty[g] = true
	}
	clear(w.bbDirty)
	clear(w.ibDirty)
	for g := range w.gdDirty {
		blk := f.descBlock(uint64(g))
		b, err := f.mblock(blk)
		if err != nil {
			return err
		}
		d := b[(uint64(g)%dpb)*uint64(ds) : (uint64(g)%dpb+1)*uint64(ds)]
		x := &w.gd[g]
		putLE16(d, 0xC, uint16(x.freeBlocks))
		putLE16(d, 0xE, uint16(x.freeInodes))
		putLE16(d, 0x10, uint16(x.usedDirs))
		if f.uninitBG() {
			putLE16(d, 0x12, x.flags)
			putLE16(d, 0x1C, uint16(x.itableUnused))
		}
		if f.csum {
			putLE16(d, 0x18, uint16(x.bbCsum))
			putLE16(d, 0x1A, uint16(x.ibCsum))
		}
		if ds >= 64 {
			putLE16(d, 0x2C, uint16(x.freeBlocks>>16))
			putLE16(d, 0x2E, uint16(x.freeInodes>>16))
			putLE16(d, 0x30, uint16(x.usedDirs>>16))
			if f.uninitBG() {
				putLE16(d, 0x32, uint16(x.itableUnused>>16))
			}
			if f.csum {
				putLE16(d, 0x38, uint16(x.bbCsum>>16))
				putLE16(d, 0x3A, uint16(x.ibCsum>>16))
			}
		}
		f.descCsum(uint64(g), d)
		f.groups[g].flags = x.flags
	}
	clear(w.gdDirty)
	return nil
}

// descCsum stores the descriptor checksum (crc32c or crc16, as checkDesc
// verifies it).
func (f *FS) descCsum(g uint64, d []byte) {
	var le [4]byte
	binary.LittleEndian.PutUint32(le[:], uint32(g))
	switch {
	case f.csum:
		c := crc32c(f.csumSeed, le[:])
		c = crc32c(c, d[:0x1E])
		c = crc32c(c, []byte{0, 0})
		if len(d) > 0x20 {
			c = crc32c(c, d[0x20:])
		}
		putLE16(d, 0x1E, uint16(c))
	case f.sb.FeatureRoCompat&roCompatGdtCsum != 0:
		c := crc16(0xFFFF, f.sb.UUID[:])
		c = crc16(c, le[:])
		c = crc16(c, d[:0x1E])
		if len(d) > 0x20 {
			c = crc16(c, d[0x20:])
		}
		putLE16(d, 0x1E, c)
	}
}

func (f *FS) groupFirst(g uint64) uint64 {
	return uint64(f.sb.FirstDataBlock) + g*uint64(f.sb.BlocksPerGroup)
}

// groupBlocks is the number of blocks in group g (the last may be short).
func (f *FS) groupBlocks(g uint64) uint64 {
	first := f.groupFirst(g)
	return min(uint64(f.sb.BlocksPerGroup), f.sb.BlocksCount-first)
}

func setBit(b []byte, i uint64)       { b[i/8] |= 1 << (i % 8) }
func clearBit(b []byte, i uint64)     { b[i/8] &^= 1 << (i % 8) }
func testBit(b []byte, i uint64) bool { return b[i/8]&(1<<(i%8)) != 0 }
func setBitsTo(b []byte, from, to uint64) {
	for i := from; i < to; i++ {
		setBit(b, i)
	}
}

// blockBitmap returns group g's block bitmap for modification,
// initialising it first when the group is BLOCK_UNINIT.
func (f *FS) blockBitmap(g uint64) ([]byte, error) {
	w := f.w
	x := &w.gd[g]
	if x.flags&bgBlkUninit == 0 {
		return f.mblock(x.blockBitmap)
	}
	b := f.newMeta(x.blockBitmap)
	first := f.groupFirst(g)
	n := f.groupBlocks(g)
	mark := func(blk, cnt uint64) {
		for i := uint64(0); i < cnt; i++ {
			if blk+i >= first && blk+i < first+n {
				setBit(b, blk+i-first)
			}
		}
	}
	mark(first, f.superAndDescBlocks(g))
	itBlocks := (uint64(f.sb.InodesPerGroup)*uint64(f.sb.InodeSize) + uint64(f.bs) - 1) / uint64(f.bs)
	for h := range w.gd {
		mark(w.gd[h].blockBitmap, 1)
		mark(w.gd[h].inodeBitmap, 1)
		mark(w.gd[h].inodeTable, itBlocks)
	}
	setBitsTo(b, n, uint64(f.bs)*8)
	x.flags &^= bgBlkUninit
	w.gdDirty[uint32(g)] = true
	w.bbDirty[uint32(g)] = true
	return b, nil
}

// superAndDescBlocks is the number of blocks at the start of group g taken
// by a superblock copy, group descriptors and reserved GDT blocks.
func (f *FS) superAndDescBlocks(g uint64) uint64 {
	dpb := uint64(f.bs) / uint64(f.sb.DescSize)
	gdtBlocks := (f.sb.groupCount() + dpb - 1) / dpb
	resv := uint64(f.sb.ReservedGDT)
	var n uint64
	metaBG := f.sb.FeatureIncompat&incompatMetaBG != 0
	if f.hasSuper(g) {
		n = 1
		if metaBG {
			n += uint64(f.sb.FirstMetaBG) + resv
		} else {
			n += gdtBlocks + resv
		}
	}
	if metaBG && g/dpb >= uint64(f.sb.FirstMetaBG) {
		if r := g % dpb; r == 0 || r == 1 || r == dpb-1 {
			n++
		}
	}
	if f.bs == 1024 && f.sb.FirstDataBlock == 0 && g == 0 {
		n++ // boot block
	}
	return n
}

// inodeBitmap returns group g's inode bitmap for modification.
func (f *FS) inodeBitmap(g uint64) ([]byte, error) {
	w := f.w
	x := &w.gd[g]
	if x.flags&bgInodeUninit == 0 {
		return f.mblock(x.inodeBitmap)
	}
	b := f.newMeta(x.inodeBitmap)
	setBitsTo(b, uint64(f.sb.InodesPerGroup), uint64(f.bs)*8)
	x.flags &^= bgInodeUninit
	w.gdDirty[uint32(g)] = true
	w.ibDirty[uint32(g)] = true
	return b, nil
}

// allocBlocks allocates up to want (>0) contiguous blocks, the first at or
// after goal when possible, and returns the first and the count.
func (f *FS) allocBlocks(goal, want uint64) (uint64, uint64, error) {
	w := f.w
	if f.sb.FreeBlocks == 0 {
		return 0, 0, errf(syscall.ENOSPC, "no free blocks")
	}
	if goal < uint64(f.sb.FirstDataBlock) || goal >= f.sb.BlocksCount {
		goal = uint64(f.sb.FirstDataBlock)
	}
	ng := uint64(len(w.gd))
	g0 := (goal - uint64(f.sb.FirstDataBlock)) / uint64(f.sb.BlocksPerGroup)
	for k := uint64(0); k <= ng; k++ {
		g := (g0 + k) % ng
		if w.gd[g].freeBlocks == 0 {
			continue
		}
		start := uint64(0)
		if k == 0 {
			start = goal - f.groupFirst(g)
		}
		b, err := f.blockBitmap(g)
		if err != nil {
			return 0, 0, err
		}
		n := f.groupBlocks(g)
		i, ok := findZero(b, start, n)
		if !ok {
			if k == 0 && start > 0 {
				// Retry this group from its start at the end of the loop.
				if i, ok = findZero(b, 0, n); !ok {
					continue
				}
			} else {
				continue
			}
		}
		j := i
		for j < n && j-i < want && !testBit(b, j) {
			setBit(b, j)
			j++
		}
		cnt := j - i
		w.gd[g].freeBlocks -= uint32(cnt)
		f.sb.FreeBlocks -= cnt
		w.gdDirty[uint32(g)] = true
		w.bbDirty[uint32(g)] = true
		return f.groupFirst(g) + i, cnt, nil
	}
	return 0, 0, errf(syscall.ENOSPC, "no free blocks (counters say %d)", f.sb.FreeBlocks)
}

// findZero finds the first clear bit in [from, n).
func findZero(b []byte, from, n uint64) (uint64, bool) {
	i := from
	for i < n {
		if i%64 == 0 && i+64 <= n {
			v := binary.LittleEndian.Uint64(b[i/8:])
			if v == ^uint64(0) {
				i += 64
				continue
			}
			return i + uint64(bits.TrailingZeros64(^v)), true
		}
		if !testBit(b, i) {
			return i, true
		}
		i++
	}
	return 0, false
}

// freeBlocks releases [blk, blk+n), which may span groups.
func (f *FS) freeBlocks(blk, n uint64) error {
	w := f.w
	if blk < uint64(f.sb.FirstDataBlock) || blk+n > f.sb.BlocksCount || n == 0 {
		return corrupt(0, "freeing blocks %d+%d outside the filesystem", blk, n)
	}
	f.forget(blk, n)
	if w.discard != nil {
		if err := w.discard.Discard(int64(blk)*int64(f.bs), int64(n)*int64(f.bs)); err != nil {
			w.logf("ext4: discard of blocks %d+%d: %v", blk, n, err)
		}
	}
	for n > 0 {
		g := (blk - uint64(f.sb.FirstDataBlock)) / uint64(f.sb.BlocksPerGroup)
		first := f.groupFirst(g)
		cnt := min(n, first+f.groupBlocks(g)-blk)
		b, err := f.blockBitmap(g)
		if err != nil {
			return err
		}
		for i := blk - first; i < blk-first+cnt; i++ {
			if !testBit(b, i) {
				return corrupt(w.gd[g].blockBitmap, "freeing free block %d", first+i)
			}
			clearBit(b, i)
		}
		w.gd[g].freeBlocks += uint32(cnt)
		f.sb.FreeBlocks += cnt
		w.gdDirty[uint32(g)] = true
		w.bbDirty[uint32(g)] = true
		blk += cnt
		n -= cnt
	}
	return nil
}

// allocInode allocates an inode, preferring group goal (directories go to
// the group with the most free inodes, to spread them as Orlov does).
func (f *FS) allocInode(goal uint64, dir bool) (uint32, error) {
	w := f.w
	if f.sb.FreeInodes == 0 {
		return 0, errf(syscall.ENOSPC, "no free inodes")
	}
	ng := uint64(len(w.gd))
	if dir {
		best := goal
		for g := uint64(0); g < ng; g++ {
			if w.gd[g].freeInodes > w.gd[best].freeInodes {
				best = g
			}
		}
		goal = best
	}
	ipg := uint64(f.sb.InodesPerGroup)
	for k := uint64(0); k < ng; k++ {
		g := (goal + k) % ng
		x := &w.gd[g]
		if x.freeInodes == 0 {
			continue
		}
		b, err := f.inodeBitmap(g)
		if err != nil {
			return 0, err
		}
		start := uint64(0)
		if g == 0 {
			start = uint64(f.sb.FirstIno) - 1
		}
		i, ok := findZero(b, start, ipg)
		if !ok {
			continue
		}
		ino := g*ipg + i + 1
		if ino > uint64(f.sb.InodesCount) {
			continue
		}
		setBit(b, i)
		x.freeInodes--
		f.sb.FreeInodes--
		if dir {
			x.usedDirs++
		}
		if f.uninitBG() && x.itableUnused > 0 && i >= ipg-uint64(x.itableUnused) {
			x.itableUnused = uint32(ipg - i - 1)
		}
		w.gdDirty[uint32(g)] = true
		w.ibDirty[uint32(g)] = true
		return uint32(ino), nil
	}
	return 0, errf(syscall.ENOSPC, "no free inodes (counters say %d)", f.sb.FreeInodes)
}

// freeInode clears ino's bit and fixes the counters.
func (f *FS) freeInode(ino uint32, dir bool) error {
	w := f.w
	ipg := uint64(f.sb.InodesPerGroup)
	g, i := uint64(ino-1)/ipg, uint64(ino-1)%ipg
	b, err := f.inodeBitmap(g)
	if err != nil {
		return err
	}
	if !testBit(b, i) {
		return corrupt(w.gd[g].inodeBitmap, "freeing free inode %d", ino)
	}
	clearBit(b, i)
	w.gd[g].freeInodes++
	f.sb.FreeInodes++
	if dir {
		w.gd[g].usedDirs--
	}
	w.gdDirty[uint32(g)] = true
	w.ibDirty[uint32(g)] = true
	return nil
}

func (f *FS) inodeGroup(ino uint32) uint64 {
	return uint64(ino-1) / uint64(f.sb.InodesPerGroup)
}
