package ext4

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"strings"
)

// Superblock feature bits (the subset the read path cares about; the rest
// are named only so that refusals can say which feature is in the way).
const (
	compatHasJournal = 0x4
	compatDirIndex   = 0x20

	roCompatLargeFile    = 0x2
	roCompatHugeFile     = 0x8
	roCompatGdtCsum      = 0x10
	roCompatDirNlink     = 0x20
	roCompatExtraIsize   = 0x40
	roCompatBigalloc     = 0x200
	roCompatMetadataCsum = 0x400

	incompatCompression = 0x1
	incompatFiletype    = 0x2
	incompatRecover     = 0x4
	incompatJournalDev  = 0x8
	incompatMetaBG      = 0x10
	incompatExtents     = 0x40
	incompat64bit       = 0x80
	incompatMMP         = 0x100
	incompatFlexBG      = 0x200
	incompatEAInode     = 0x400
	incompatDirData     = 0x1000
	incompatCsumSeed    = 0x2000
	incompatLargedir    = 0x4000
	incompatInlineData  = 0x8000
	incompatEncrypt     = 0x10000
	incompatCasefold    = 0x20000
)

// incompatNames names every incompat bit the kernel defines.
var incompatNames = map[uint32]string{
	incompatCompression: "compression", incompatFiletype: "filetype",
	incompatRecover: "needs_recovery", incompatJournalDev: "journal_dev",
	incompatMetaBG: "meta_bg", incompatExtents: "extent", incompat64bit: "64bit",
	incompatMMP: "mmp", incompatFlexBG: "flex_bg", incompatEAInode: "ea_inode",
	incompatDirData: "dirdata", incompatCsumSeed: "metadata_csum_seed",
	incompatLargedir: "large_dir", incompatInlineData: "inline_data",
	incompatEncrypt: "encrypt", incompatCasefold: "casefold",
}

// supportedIncompat is what this driver reads correctly.
const supportedIncompat = incompatFiletype | incompatRecover | incompatMetaBG |
	incompatExtents | incompat64bit | incompatMMP | incompatFlexBG |
	incompatCsumSeed | incompatLargedir | incompatInlineData

const (
	superMagic  = 0xEF53
	superOffset = 1024
	superSize   = 1024
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// crc32c is ext4's raw crc32c: no pre- or post-inversion (the kernel's
// crc32c_le), so chains can be continued as the on-disk formats require.
func crc32c(crc uint32, p []byte) uint32 {
	return ^crc32.Update(^crc, castagnoli, p)
}

// Superblock is the decoded part of the ext4 superblock that the driver uses.
type Superblock struct {
	InodesCount     uint32
	BlocksCount     uint64
	FreeBlocks      uint64
	ReservedBlocks  uint64
	FreeInodes      uint32
	FirstDataBlock  uint32
	BlockSize       uint32
	BlocksPerGroup  uint32
	InodesPerGroup  uint32
	Magic           uint16
	State           uint16
	RevLevel        uint32
	FirstIno        uint32
	InodeSize       uint16
	FeatureCompat   uint32
	FeatureIncompat uint32
	FeatureRoCompat uint32
	UUID            [16]byte
	VolumeName      string
	JournalInum     uint32
	LastOrphan      uint32
	HashSeed        [4]uint32
	DefHashVersion  uint8
	DescSize        uint16
	FirstMetaBG     uint32
	ReservedGDT     uint16 // s_reserved_gdt_blocks
	Overhead        uint32 // s_overhead_clusters (0: not recorded)
	Flags           uint32
	ChecksumSeed    uint32
	Checksum        uint32
}

func le16(b []byte, off int) uint16 { return binary.LittleEndian.Uint16(b[off:]) }
func le32(b []byte, off int) uint32 { return binary.LittleEndian.Uint32(b[off:]) }
func be32(b []byte, off int) uint32 { return binary.BigEndian.Uint32(b[off:]) }

// parseSuperblock decodes and validates the 1024-byte superblock b. It never
// panics on any input; every inconsistency is an error.
func parseSuperblock(b []byte) (*Superblock, error) {
	if len(b) < superSize {
		return nil, fmt.Errorf("superblock: short read (%d bytes)", len(b))
	}
	s := &Superblock{
		InodesCount:     le32(b, 0x0),
		BlocksCount:     uint64(le32(b, 0x4)),
		FreeBlocks:      uint64(le32(b, 0xC)),
		ReservedBlocks:  uint64(le32(b, 0x8)),
		FreeInodes:      le32(b, 0x10),
		FirstDataBlock:  le32(b, 0x14),
		BlocksPerGroup:  le32(b, 0x20),
		InodesPerGroup:  le32(b, 0x28),
		Magic:           le16(b, 0x38),
		State:           le16(b, 0x3A),
		RevLevel:        le32(b, 0x4C),
		FirstIno:        11,
		InodeSize:       128,
		FeatureCompat:   le32(b, 0x5C),
		FeatureIncompat: le32(b, 0x60),
		FeatureRoCompat: le32(b, 0x64),
		JournalInum:     le32(b, 0xE0),
		LastOrphan:      le32(b, 0xE8),
		DefHashVersion:  b[0xFC],
		DescSize:        le16(b, 0xFE),
		FirstMetaBG:     le32(b, 0x104),
		ReservedGDT:     le16(b, 0xCE),
		Overhead:        le32(b, 0x248),
		Flags:           le32(b, 0x160),
		ChecksumSeed:    le32(b, 0x270),
		Checksum:        le32(b, 0x3FC),
	}
	if s.Magic != superMagic {
		return nil, fmt.Errorf("superblock: bad magic %#04x (not an ext2/3/4 filesystem)", s.Magic)
	}
	copy(s.UUID[:], b[0x68:0x78])
	s.VolumeName = strings.TrimRight(string(b[0x78:0x88]), "\x00")
	for i := range s.HashSeed {
		s.HashSeed[i] = le32(b, 0xEC+4*i)
	}
	logBS := le32(b, 0x18)
	if logBS > 6 {
		return nil, fmt.Errorf("superblock: block size 2^(10+%d) out of range", logBS)
	}
	s.BlockSize = 1024 << logBS
	if s.RevLevel >= 1 {
		s.FirstIno = le32(b, 0x54)
		s.InodeSize = le16(b, 0x58)
	}
	if s.FeatureIncompat&incompat64bit != 0 {
		s.BlocksCount |= uint64(le32(b, 0x150)) << 32
		s.FreeBlocks |= uint64(le32(b, 0x158)) << 32
		s.ReservedBlocks |= uint64(le32(b, 0x154)) << 32
		if s.DescSize < 32 || s.DescSize > 1024 || s.DescSize&(s.DescSize-1) != 0 {
			return nil, fmt.Errorf("superblock: group descriptor size %d invalid", s.DescSize)
		}
	} else {
		s.DescSize = 32
	}
	if s.FeatureRoCompat&roCompatMetadataCsum != 0 {
		if got := crc32c(^uint32(0), b[:0x3FC]); got != s.Checksum {
			return nil, &ChecksumError{What: "superblock", Block: uint64(superOffset / s.BlockSize), Want: s.Checksum, Got: got}
		}
	}
	// bigalloc: a group is 8*BlockSize clusters of 2^clusterBits blocks.
	clusterBits := uint32(0)
	if s.FeatureRoCompat&roCompatBigalloc != 0 {
		lc := le32(b, 0x1C)
		if lc < logBS || lc-logBS > 16 {
			return nil, fmt.Errorf("superblock: cluster size 2^(10+%d) invalid", lc)
		}
		clusterBits = lc - logBS
	}
	switch {
	case s.InodeSize < 128 || uint32(s.InodeSize) > s.BlockSize || s.InodeSize&(s.InodeSize-1) != 0:
		return nil, fmt.Errorf("superblock: inode size %d invalid", s.InodeSize)
	case s.BlocksPerGroup == 0 || uint64(s.BlocksPerGroup) > uint64(8*s.BlockSize)<<clusterBits:
		return nil, fmt.Errorf("superblock: %d blocks per group invalid", s.BlocksPerGroup)
	case s.InodesPerGroup == 0 || s.InodesPerGroup > 8*s.BlockSize:
		return nil, fmt.Errorf("superblock: %d inodes per group invalid", s.InodesPerGroup)
	case s.BlocksCount <= uint64(s.FirstDataBlock):
		return nil, fmt.Errorf("superblock: block count %d invalid", s.BlocksCount)
	case s.FirstDataBlock > 1:
		return nil, fmt.Errorf("superblock: first data block %d invalid", s.FirstDataBlock)
	case s.FirstIno < 11 && s.RevLevel >= 1:
		return nil, fmt.Errorf("superblock: first inode %d invalid", s.FirstIno)
	}
	if uint64(s.InodesPerGroup)*uint64(s.groupCount()) < uint64(s.InodesCount) {
		return nil, fmt.Errorf("superblock: %d inodes do not fit %d groups of %d", s.InodesCount, s.groupCount(), s.InodesPerGroup)
	}
	if bad := s.FeatureIncompat &^ supportedIncompat; bad != 0 {
		return nil, &FeatureError{Names: featureNames(bad)}
	}
	return s, nil
}

// groupCount is the number of block groups.
func (s *Superblock) groupCount() uint64 {
	return (s.BlocksCount - uint64(s.FirstDataBlock) + uint64(s.BlocksPerGroup) - 1) / uint64(s.BlocksPerGroup)
}

func featureNames(bits uint32) []string {
	var out []string
	for i := 0; i < 32; i++ {
		bit := uint32(1) << i
		if bits&bit == 0 {
			continue
		}
		if n, ok := incompatNames[bit]; ok {
			out = append(out, n)
		} else {
			out = append(out, fmt.Sprintf("incompat bit %#x", bit))
		}
	}
	return out
}

// HasFeature reports the named feature flags in a compact form for callers
// (the VFS's statfs, tools): metadata_csum, 64bit, extent, needs_recovery,
// has_journal, inline_data, huge_file, dir_index.
func (s *Superblock) HasFeature(name string) bool {
	switch name {
	case "metadata_csum":
		return s.FeatureRoCompat&roCompatMetadataCsum != 0
	case "has_journal":
		return s.FeatureCompat&compatHasJournal != 0
	case "dir_index":
		return s.FeatureCompat&compatDirIndex != 0
	case "huge_file":
		return s.FeatureRoCompat&roCompatHugeFile != 0
	case "gdt_csum", "uninit_bg":
		return s.FeatureRoCompat&roCompatGdtCsum != 0
	}
	for bit, n := range incompatNames {
		if n == name {
			return s.FeatureIncompat&bit != 0
		}
	}
	return false
}
