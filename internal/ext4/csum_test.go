package ext4

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/umltools/umltools/internal/testutil"
)

// TestChecksumErrors flips one byte in each checksummed structure of a
// metadata_csum image and expects a *ChecksumError naming that block.
func TestChecksumErrors(t *testing.T) {
	src := t.TempDir()
	os.Mkdir(filepath.Join(src, "dir"), 0o755)
	for i := 0; i < 40; i++ {
		os.WriteFile(filepath.Join(src, "dir", fmt.Sprintf("f%02d", i)), nil, 0o644)
	}
	fr, _ := os.Create(filepath.Join(src, "frag"))
	for i := 0; i < 8; i++ {
		fr.WriteAt([]byte("chunk"), int64(i)*8192)
	}
	fr.Close()
	os.WriteFile(filepath.Join(src, "x"), nil, 0o644)
	unix.Setxattr(filepath.Join(src, "x"), "user.big", []byte(strings.Repeat("v", 600)), 0)
	img := testutil.MkfsImage(t, src, "4M", "-t", "ext4", "-b", "1024", "-O", "metadata_csum")
	raw, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	f, err := Open(bytes.NewReader(raw), int64(len(raw)), nil)
	if err != nil {
		t.Fatal(err)
	}
	bs := uint64(f.bs)
	frag, _ := f.Lookup(RootIno, "frag")
	fin, _ := f.Inode(frag)
	dir, _ := f.Lookup(RootIno, "dir")
	dh, _ := f.openDir(dir)
	x, _ := f.Inode(mustLookup(t, f, "x"))
	if x.FileACL == 0 || le16(fin.iblock[:], 6) != 1 {
		t.Fatalf("test image lacks an xattr block (%d) or an extent block", x.FileACL)
	}
	extBlk := uint64(le32(fin.iblock[:], 16))
	cases := []struct {
		name  string
		at    uint64 // byte to flip
		block uint64 // block the error must name
		op    func(*FS) error
	}{
		{"superblock", 1024 + 0x78, 1, nil},
		{"group descriptor", f.descBlock(0)*bs + 0x4, f.descBlock(0), nil},
		{"inode", fin.block*bs + uint64(frag-1)%uint64(bs/uint64(f.sb.InodeSize))*uint64(f.sb.InodeSize) + 0x10, fin.block,
			func(f *FS) error { _, err := f.Inode(frag); return err }},
		{"extent block", extBlk*bs + 24, extBlk,
			func(f *FS) error { _, err := f.ReadAt(frag, make([]byte, 10), 0); return err }},
		{"directory block", dh.runs[0].pblk*bs + 30, dh.runs[0].pblk,
			func(f *FS) error { _, err := f.Lookup(dir, "f07"); return err }},
		{"xattr block", x.FileACL*bs + 100, x.FileACL,
			func(f *FS) error { _, err := f.Xattrs(x.Ino); return err }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b := bytes.Clone(raw)
			b[c.at] ^= 0x40
			g, err := Open(bytes.NewReader(b), int64(len(b)), nil)
			if err == nil && c.op != nil {
				err = c.op(g)
			}
			var ce *ChecksumError
			if !errors.As(err, &ce) || ce.Block != c.block {
				t.Fatalf("got %v, want a checksum error at block %d", err, c.block)
			}
			if !errors.Is(err, syscall.EBADMSG) || !strings.Contains(err.Error(), fmt.Sprintf("block %d", c.block)) {
				t.Errorf("error %q", err)
			}
		})
	}
}

func mustLookup(t *testing.T, f *FS, name string) uint32 {
	ino, err := f.Lookup(RootIno, name)
	if err != nil {
		t.Fatal(err)
	}
	return ino
}

// TestRefusals: unsupported incompat features are refused by name.
func TestRefusals(t *testing.T) {
	img := testutil.MkfsImage(t, t.TempDir(), "4M", "-t", "ext4")
	raw, _ := os.ReadFile(img)
	for bit, name := range map[uint32]string{incompatEncrypt: "encrypt", incompatCasefold: "casefold", incompatJournalDev: "journal_dev", 0x80000000: "incompat bit 0x80000000"} {
		b := bytes.Clone(raw)
		v := le32(b, 1024+0x60) | bit
		b[1024+0x60], b[1024+0x61], b[1024+0x62], b[1024+0x63] = byte(v), byte(v>>8), byte(v>>16), byte(v>>24)
		// Keep the superblock checksum right so that the feature check is
		// what refuses.
		c := crc32c(^uint32(0), b[1024:1024+0x3FC])
		b[1024+0x3FC], b[1024+0x3FD], b[1024+0x3FE], b[1024+0x3FF] = byte(c), byte(c>>8), byte(c>>16), byte(c>>24)
		_, err := Open(bytes.NewReader(b), int64(len(b)), nil)
		var fe *FeatureError
		if !errors.As(err, &fe) || !strings.Contains(err.Error(), name) {
			t.Errorf("feature %s: %v", name, err)
		}
	}
}
