package ext4

import (
	"bytes"
	"encoding/binary"
	"os"
	"testing"

	"github.com/umltools/umltools/internal/testutil"
)

// TestJournalReplaySynthetic writes a jbd2 log by hand (csum v3, 64-bit
// tags) and checks each replay rule: a committed block is replayed, a
// block revoked by a later transaction is not, an escaped block gets its
// magic back, an uncommitted transaction is ignored, and a bad data-block
// checksum is refused.
func TestJournalReplaySynthetic(t *testing.T) {
	img := testutil.MkfsImage(t, t.TempDir(), "8M", "-t", "ext4", "-b", "1024")
	raw, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	f, err := Open(bytes.NewReader(raw), int64(len(raw)), nil)
	if err != nil {
		t.Fatal(err)
	}
	bs := int(f.bs)
	jin, err := f.Inode(f.sb.JournalInum)
	if err != nil {
		t.Fatal(err)
	}
	runs, _ := f.blockMap(jin)
	j := &journal{f: f, runs: runs}
	jblk := func(n uint64) []byte {
		p, err := j.phys(n)
		if err != nil {
			t.Fatal(err)
		}
		return raw[int(p)*bs : int(p+1)*bs]
	}
	be := binary.BigEndian
	jsb := jblk(0)
	first := uint64(be.Uint32(jsb[0x14:]))
	be.PutUint32(jsb[0x28:], jbdInc64bit|jbdIncCsumV3|jbdIncRevoke)
	be.PutUint32(jsb[0x18:], 7)             // s_sequence
	be.PutUint32(jsb[0x1C:], uint32(first)) // s_start
	jsb[0x50] = 4                           // crc32c
	copy(jsb[0x30:0x40], []byte("0123456789abcdef"))
	seed := crc32c(^uint32(0), jsb[0x30:0x40])
	be.PutUint32(jsb[0xFC:], 0)
	be.PutUint32(jsb[0xFC:], crc32c(^uint32(0), jsb[:1024]))
	j.seed = seed

	// Target blocks: free blocks near the end of the filesystem.
	B, C, D := f.sb.BlocksCount-10, f.sb.BlocksCount-11, f.sb.BlocksCount-12
	orig := func(b uint64) []byte { return bytes.Clone(raw[int(b)*bs : int(b+1)*bs]) }
	origB, origD := orig(B), orig(D)
	pos := first
	next := func() []byte { b := jblk(pos); clear(b); pos++; return b }
	header := func(b []byte, typ, seq uint32) {
		be.PutUint32(b[0:], jbdMagic)
		be.PutUint32(b[4:], typ)
		be.PutUint32(b[8:], seq)
	}
	tail := func(b []byte) { be.PutUint32(b[bs-4:], 0); be.PutUint32(b[bs-4:], crc32c(seed, b)) }
	dataCsum := func(seq uint32, d []byte) uint32 {
		var s [4]byte
		be.PutUint32(s[:], seq)
		return crc32c(crc32c(seed, s[:]), d)
	}
	// descriptor writes one tag per target, followed by the data blocks.
	descriptor := func(seq uint32, targets []uint64, datas [][]byte, escape []bool) {
		d := next()
		header(d, jbdDescriptor, seq)
		off := 12
		for i, tg := range targets {
			flags := uint32(0)
			if i > 0 {
				flags |= tagSameUUID
			}
			if escape[i] {
				flags |= tagEscape
			}
			if i == len(targets)-1 {
				flags |= tagLast
			}
			be.PutUint32(d[off:], uint32(tg))
			be.PutUint32(d[off+4:], flags)
			be.PutUint32(d[off+8:], uint32(tg>>32))
			be.PutUint32(d[off+12:], dataCsum(seq, datas[i]))
			off += 16
			if i == 0 {
				off += 16 // UUID
			}
		}
		tail(d)
		for _, data := range datas {
			copy(next(), data)
		}
	}
	commit := func(seq uint32) {
		c := next()
		header(c, jbdCommit, seq)
		be.PutUint32(c[16:], crc32c(seed, c))
	}
	fill := func(v byte) []byte { return bytes.Repeat([]byte{v}, bs) }
	// T7: B := 0xAA, C := 0xBB.  T8: revoke B.  T9: C := escaped magic
	// block.  T10 (no commit): D := 0xDD.
	descriptor(7, []uint64{B, C}, [][]byte{fill(0xAA), fill(0xBB)}, []bool{false, false})
	commit(7)
	r := next()
	header(r, jbdRevoke, 8)
	be.PutUint32(r[12:], 16+8)
	binary.BigEndian.PutUint64(r[16:], B)
	tail(r)
	commit(8)
	esc := fill(0xCC)
	be.PutUint32(esc, 0) // stored with the magic zeroed
	descriptor(9, []uint64{C}, [][]byte{esc}, []bool{true})
	commit(9)
	descriptor(10, []uint64{D}, [][]byte{fill(0xDD)}, []bool{false})

	// Mark the filesystem as needing recovery.
	sb := raw[1024:2048]
	binary.LittleEndian.PutUint32(sb[0x60:], le32(sb, 0x60)|incompatRecover)
	binary.LittleEndian.PutUint32(sb[0x3FC:], crc32c(^uint32(0), sb[:0x3FC]))

	g, err := Open(bytes.NewReader(raw), int64(len(raw)), nil)
	if err != nil {
		t.Fatal(err)
	}
	if g.replayed != 3 || g.revokes != 1 || g.skipped != 1 {
		t.Errorf("replayed %d transactions, %d revokes, %d skipped; want 3, 1, 1", g.replayed, g.revokes, g.skipped)
	}
	get := func(b uint64) []byte {
		d, err := g.block(b)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	if !bytes.Equal(get(B), origB) {
		t.Errorf("revoked block %d was replayed", B)
	}
	wantC := fill(0xCC)
	be.PutUint32(wantC, jbdMagic)
	if !bytes.Equal(get(C), wantC) {
		t.Errorf("escaped block %d: % x...", C, get(C)[:8])
	}
	if !bytes.Equal(get(D), origD) {
		t.Errorf("uncommitted block %d was replayed", D)
	}
	// A damaged journalled copy is refused, not replayed.
	p, _ := j.phys(first + 2) // C in T7 (B at first+1 is revoked, so never checked)
	raw[int(p)*bs+100] ^= 1
	if _, err := Open(bytes.NewReader(raw), int64(len(raw)), nil); err == nil {
		t.Errorf("a journalled block with a bad checksum was accepted")
	}
}
