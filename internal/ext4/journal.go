package ext4

import (
	"encoding/binary"
	"fmt"
)

// jbd2 on-disk constants (all journal fields are big-endian).
const (
	jbdMagic      = 0xC03B3998
	jbdDescriptor = 1
	jbdCommit     = 2
	jbdSuperV1    = 3
	jbdSuperV2    = 4
	jbdRevoke     = 5

	jbdIncRevoke      = 0x1
	jbdInc64bit       = 0x2
	jbdIncAsyncCommit = 0x4
	jbdIncCsumV2      = 0x8
	jbdIncCsumV3      = 0x10
	jbdIncFastCommit  = 0x20
	jbdIncKnown       = jbdIncRevoke | jbdInc64bit | jbdIncAsyncCommit | jbdIncCsumV2 | jbdIncCsumV3

	tagEscape   = 0x1
	tagSameUUID = 0x2
	tagLast     = 0x8
)

// replayed locates the newest journalled copy of a filesystem block.
type replayed struct {
	src     uint64 // filesystem block holding the copy inside the journal
	escaped bool   // the copy's first word was escaped (restore the magic)
}

// overlayBlock returns the journalled copy of blk.
func (f *FS) overlayBlock(blk uint64) ([]byte, error) {
	r := f.overlay[blk]
	b := make([]byte, f.bs)
	if err := f.readRaw(b, int64(r.src)*int64(f.bs)); err != nil {
		return nil, fmt.Errorf("journal copy of block %d: %w", blk, err)
	}
	if r.escaped {
		binary.BigEndian.PutUint32(b, jbdMagic)
	}
	return b, nil
}

type journal struct {
	f        *FS
	runs     []run
	maxlen   uint64
	first    uint64
	incompat uint32
	csum     bool // v2 or v3
	seed     uint32
}

// phys maps journal block n to a filesystem block.
func (j *journal) phys(n uint64) (uint64, error) {
	i, ok := findRun(j.runs, n)
	if !ok || j.runs[i].uninit {
		return 0, corrupt(0, "journal block %d is not mapped", n)
	}
	return j.runs[i].pblk + n - j.runs[i].lblk, nil
}

func (j *journal) read(n uint64) ([]byte, uint64, error) {
	p, err := j.phys(n)
	if err != nil {
		return nil, 0, err
	}
	b := make([]byte, j.f.bs)
	if err := j.f.readRaw(b, int64(p)*int64(j.f.bs)); err != nil {
		return nil, p, err
	}
	return b, p, nil
}

// csumBlock is jbd2's checksum of a whole block whose checksum word at off
// is taken as zero.
func (j *journal) csumBlock(b []byte, off int) uint32 {
	c := crc32c(j.seed, b[:off])
	c = crc32c(c, []byte{0, 0, 0, 0})
	return crc32c(c, b[off+4:])
}

type jtag struct {
	target  uint64
	src     uint64 // journal block number of the copy
	escaped bool
	csum    uint32
}

type jtxn struct {
	seq     uint32
	tags    []jtag
	revokes []uint64
}

// replayJournal replays the committed transactions of the internal journal
// into f.overlay, as the kernel's jbd2 recovery does at mount (scan,
// revoke, replay), without writing the device.
func (f *FS) replayJournal() error {
	sb := f.sb
	if sb.FeatureCompat&compatHasJournal == 0 || sb.JournalInum == 0 {
		return fmt.Errorf("needs_recovery set but no journal inode")
	}
	in, err := f.Inode(sb.JournalInum)
	if err != nil {
		return fmt.Errorf("journal inode: %w", err)
	}
	runs, err := f.blockMap(in)
	if err != nil {
		return fmt.Errorf("journal inode: %w", err)
	}
	j := &journal{f: f, runs: runs}
	jsb, jsbBlk, err := j.read(0)
	if err != nil {
		return fmt.Errorf("journal superblock: %w", err)
	}
	if be32(jsb, 0) != jbdMagic || (be32(jsb, 4) != jbdSuperV1 && be32(jsb, 4) != jbdSuperV2) {
		return corrupt(jsbBlk, "journal superblock magic")
	}
	if bs := be32(jsb, 0xC); bs != f.bs {
		return corrupt(jsbBlk, "journal block size %d differs from the filesystem's %d", bs, f.bs)
	}
	j.maxlen, j.first = uint64(be32(jsb, 0x10)), uint64(be32(jsb, 0x14))
	start, seq := uint64(be32(jsb, 0x1C)), be32(jsb, 0x18)
	if be32(jsb, 4) == jbdSuperV2 {
		j.incompat = be32(jsb, 0x28)
	}
	if bad := j.incompat &^ jbdIncKnown; bad != 0 {
		if bad&jbdIncFastCommit != 0 {
			return fmt.Errorf("journal uses fast commits, which are not replayed here")
		}
		return fmt.Errorf("journal has unknown incompatible features %#x", bad)
	}
	j.csum = j.incompat&(jbdIncCsumV2|jbdIncCsumV3) != 0
	if j.csum {
		j.seed = crc32c(^uint32(0), jsb[0x30:0x40])
		c := crc32c(^uint32(0), jsb[:0xFC])
		c = crc32c(c, []byte{0, 0, 0, 0})
		c = crc32c(c, jsb[0x100:1024])
		if want := be32(jsb, 0xFC); c != want {
			return &ChecksumError{What: "journal superblock", Block: jsbBlk, Want: want, Got: c}
		}
	}
	if start == 0 {
		return nil // the journal is empty: nothing to replay
	}
	if j.first == 0 || j.first >= j.maxlen || start < j.first || start >= j.maxlen || (in.Size+uint64(f.bs)-1)/uint64(f.bs) < j.maxlen {
		return corrupt(jsbBlk, "journal geometry (first %d, start %d, maxlen %d)", j.first, start, j.maxlen)
	}
	txns, err := j.scan(start, seq)
	if err != nil {
		return err
	}
	revoked := map[uint64]uint32{}
	for _, t := range txns {
		f.revokes += len(t.revokes)
		for _, r := range t.revokes {
			if old, ok := revoked[r]; !ok || int32(t.seq-old) > 0 {
				revoked[r] = t.seq
			}
		}
	}
	f.overlay = map[uint64]replayed{}
	for _, t := range txns {
		for _, tg := range t.tags {
			if r, ok := revoked[tg.target]; ok && int32(r-t.seq) >= 0 {
				f.skipped++
				continue
			}
			if tg.target >= sb.BlocksCount {
				return corrupt(0, "journal transaction %d writes block %d beyond the filesystem", t.seq, tg.target)
			}
			b, p, err := j.read(tg.src)
			if err != nil {
				return err
			}
			if j.csum {
				var s [4]byte
				binary.BigEndian.PutUint32(s[:], t.seq)
				c := crc32c(crc32c(j.seed, s[:]), b)
				if j.incompat&jbdIncCsumV3 == 0 {
					c &= 0xFFFF
				}
				if c != tg.csum {
					return &ChecksumError{What: fmt.Sprintf("journalled copy of block %d (transaction %d)", tg.target, t.seq), Block: p, Want: tg.csum, Got: c}
				}
			}
			f.overlay[tg.target] = replayed{src: p, escaped: tg.escaped}
		}
	}
	f.replayed = len(txns)
	return nil
}

// scan walks the log from start and returns its committed transactions.
func (j *journal) scan(pos uint64, seq uint32) ([]jtxn, error) {
	var out []jtxn
	cur := jtxn{seq: seq}
	next := func(n uint64) uint64 {
		n++
		if n >= j.maxlen {
			n = j.first
		}
		return n
	}
	tagSize := 8
	switch {
	case j.incompat&jbdIncCsumV3 != 0:
		tagSize = 16
	default:
		if j.incompat&jbdIncCsumV2 != 0 {
			tagSize += 2
		}
		if j.incompat&jbdInc64bit != 0 {
			tagSize += 4
		}
	}
	tail := 0
	if j.csum {
		tail = 4
	}
	for steps := uint64(0); steps < j.maxlen; steps++ {
		b, p, err := j.read(pos)
		if err != nil {
			return nil, err
		}
		if be32(b, 0) != jbdMagic || be32(b, 8) != cur.seq {
			break
		}
		switch be32(b, 4) {
		case jbdDescriptor:
			if j.csum {
				if c, want := j.csumBlock(b, len(b)-4), be32(b, len(b)-4); c != want {
					return nil, &ChecksumError{What: "journal descriptor block", Block: p, Want: want, Got: c}
				}
			}
			end := len(b) - tail
			for off := 12; off+tagSize <= end; {
				t := b[off:]
				var tg jtag
				var flags uint32
				tg.target = uint64(be32(t, 0))
				if tagSize == 16 {
					flags = be32(t, 4)
					tg.target |= uint64(be32(t, 8)) << 32
					tg.csum = be32(t, 12)
				} else {
					tg.csum = uint32(binary.BigEndian.Uint16(t[4:]))
					flags = uint32(binary.BigEndian.Uint16(t[6:]))
					if j.incompat&jbdInc64bit != 0 {
						tg.target |= uint64(be32(t, 8)) << 32
					}
				}
				tg.escaped = flags&tagEscape != 0
				pos = next(pos)
				steps++
				tg.src = pos
				cur.tags = append(cur.tags, tg)
				off += tagSize
				if flags&tagSameUUID == 0 {
					off += 16
				}
				if flags&tagLast != 0 {
					break
				}
			}
		case jbdRevoke:
			if j.csum {
				if c, want := j.csumBlock(b, len(b)-4), be32(b, len(b)-4); c != want {
					return nil, &ChecksumError{What: "journal revoke block", Block: p, Want: want, Got: c}
				}
			}
			count := int(be32(b, 12))
			rs := 4
			if j.incompat&jbdInc64bit != 0 {
				rs = 8
			}
			if count < 16 || count > len(b)-tail {
				return nil, corrupt(p, "journal revoke block count %d", count)
			}
			for off := 16; off+rs <= count; off += rs {
				if rs == 8 {
					cur.revokes = append(cur.revokes, binary.BigEndian.Uint64(b[off:]))
				} else {
					cur.revokes = append(cur.revokes, uint64(be32(b, off)))
				}
			}
		case jbdCommit:
			if j.csum {
				if c, want := j.csumBlock(b, 16), be32(b, 16); c != want {
					// A torn final commit ends the log, as in jbd2.
					return out, nil
				}
			}
			out = append(out, cur)
			cur = jtxn{seq: cur.seq + 1}
		default:
			return out, nil
		}
		pos = next(pos)
	}
	return out, nil
}
