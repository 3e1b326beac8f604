package ext4

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/umltools/umltools/internal/testutil"
)

// fuzzBase is a small image (1 KiB blocks, no checksums so that mutations
// reach past them) with a linear directory, an htree directory, a file
// with a depth-1 extent tree, symlinks and xattrs; plus where each
// structure lives.
type fuzzBase struct {
	img                          []byte
	bs                           int
	gdt, itab                    int // byte offsets: first GDT block, inode table block of "frag"
	fragInode                    int // byte offset of the "frag" inode
	fragExtentBlk                int // byte offset of frag's extent block
	linearDir, htreeRoot, dxLeaf int
	inodeSize                    int
}

var (
	fuzzOnce sync.Once
	fuzzImg  *fuzzBase
	fuzzErr  error
)

func loadFuzzBase(t testing.TB) *fuzzBase {
	fuzzOnce.Do(func() { fuzzImg, fuzzErr = buildFuzzBase() })
	if fuzzErr != nil {
		if errors.Is(fuzzErr, exec.ErrNotFound) {
			testutil.Skip(t, "mke2fs/e2fsck not installed: %v", fuzzErr)
		}
		t.Fatal(fuzzErr)
	}
	return fuzzImg
}

func buildFuzzBase() (*fuzzBase, error) {
	dir, err := os.MkdirTemp("", "ext4fuzz")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	src := filepath.Join(dir, "src")
	os.MkdirAll(filepath.Join(src, "lin"), 0o755)
	os.MkdirAll(filepath.Join(src, "hdir"), 0o755)
	for i := 0; i < 6; i++ {
		os.WriteFile(filepath.Join(src, "lin", fmt.Sprintf("f%d", i)), []byte(strings.Repeat("x", i*100)), 0o644)
	}
	for i := 0; i < 150; i++ {
		os.WriteFile(filepath.Join(src, "hdir", fmt.Sprintf("entry-with-a-longish-name-%03d", i)), nil, 0o644)
	}
	fr, err := os.Create(filepath.Join(src, "frag"))
	if err != nil {
		return nil, err
	}
	for i := 0; i < 8; i++ {
		fr.WriteAt(bytes.Repeat([]byte{byte('a' + i)}, 1500), int64(i)*8192)
	}
	fr.Close()
	os.Symlink("short", filepath.Join(src, "s1"))
	os.Symlink(strings.Repeat("long/", 30), filepath.Join(src, "s2"))
	os.WriteFile(filepath.Join(src, "x"), []byte("x"), 0o644)
	unix.Setxattr(filepath.Join(src, "x"), "user.a", []byte(strings.Repeat("v", 300)), 0)
	img := filepath.Join(dir, "img")
	mkfs, err := testutil.LookPath("mke2fs")
	if err != nil {
		return nil, fmt.Errorf("%w: mke2fs", exec.ErrNotFound)
	}
	fsck, err := testutil.LookPath("e2fsck")
	if err != nil {
		return nil, fmt.Errorf("%w: e2fsck", exec.ErrNotFound)
	}
	if out, err := exec.Command(mkfs, "-q", "-F", "-t", "ext4", "-b", "1024", "-N", "256", "-O", "^metadata_csum,^uninit_bg,^has_journal,^resize_inode", "-d", src, img, "1M").CombinedOutput(); err != nil {
		return nil, fmt.Errorf("mke2fs: %v: %s", err, out)
	}
	exec.Command(fsck, "-fyD", img).Run()
	raw, err := os.ReadFile(img)
	if err != nil {
		return nil, err
	}
	f, err := Open(bytes.NewReader(raw), int64(len(raw)), nil)
	if err != nil {
		return nil, err
	}
	b := &fuzzBase{img: raw, bs: int(f.bs), inodeSize: int(f.sb.InodeSize)}
	b.gdt = int(f.descBlock(0)) * b.bs
	ino := func(name string, dir uint32) (uint32, error) { return f.Lookup(dir, name) }
	frag, err := ino("frag", RootIno)
	if err != nil {
		return nil, err
	}
	in, _ := f.Inode(frag)
	if le16(in.iblock[:], 6) != 1 {
		return nil, fmt.Errorf("frag has extent depth %d, want 1", le16(in.iblock[:], 6))
	}
	b.fragExtentBlk = int(le32(in.iblock[:], 16)) * b.bs
	off := uint64(frag-1) * uint64(b.inodeSize)
	b.fragInode = int(f.groups[0].inodeTable*uint64(b.bs) + off)
	b.itab = b.fragInode / b.bs * b.bs
	lin, _ := ino("lin", RootIno)
	d, err := f.openDir(lin)
	if err != nil {
		return nil, err
	}
	b.linearDir = int(d.runs[0].pblk) * b.bs
	h, _ := ino("hdir", RootIno)
	d, err = f.openDir(h)
	if err != nil {
		return nil, err
	}
	if d.in.Flags&flagIndex == 0 || len(d.runs) == 0 {
		return nil, fmt.Errorf("hdir is not indexed")
	}
	b.htreeRoot = int(d.runs[0].pblk) * b.bs
	blk, _, _ := f.dirBlock(d, 1)
	if blk == nil {
		return nil, fmt.Errorf("hdir has no block 1")
	}
	_, p, _ := f.dirBlock(d, 1)
	b.dxLeaf = int(p) * b.bs
	return b, nil
}

// exerciseBounded runs exercise and fails t when it does not finish in
// time, so that the fuzzer records endless loops as crashers.
func exerciseBounded(t *testing.T, img []byte) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		exercise(img)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		panic("exercise did not finish in 5 s: endless loop")
	}
}

// exercise opens a mutated image and uses every part of the API with
// bounded work. Errors are fine; panics and hangs are not.
func exercise(img []byte) {
	f, err := Open(bytes.NewReader(img), int64(len(img)), &Options{CacheBytes: 64 << 10})
	if err != nil {
		return
	}
	seen := map[uint32]bool{}
	budget := 2000
	buf := make([]byte, 8192)
	var walk func(dir uint32, depth int)
	walk = func(dir uint32, depth int) {
		if seen[dir] || depth > 8 {
			return
		}
		seen[dir] = true
		var ents []DirEntry
		f.ReadDir(dir, 0, func(e DirEntry) bool {
			ents = append(ents, e)
			budget--
			return budget > 0
		})
		if len(ents) > 2 {
			f.ReadDir(dir, ents[len(ents)/2].Next, func(DirEntry) bool { return true })
		}
		for i, e := range ents {
			if i%16 == 0 {
				f.Lookup(dir, e.Name)
				f.Lookup(dir, e.Name+"-missing")
			}
			in, err := f.Inode(e.Ino)
			if err != nil {
				continue
			}
			f.Xattrs(e.Ino)
			f.GetXattr(e.Ino, "user.a")
			switch {
			case in.IsDir() && e.Name != "." && e.Name != "..":
				walk(e.Ino, depth+1)
			case in.IsSymlink():
				f.Readlink(e.Ino)
			case in.IsRegular():
				fl, err := f.Open(e.Ino)
				if err != nil {
					continue
				}
				for off := int64(0); off < 64<<10; off += int64(len(buf)) {
					if _, err := fl.ReadAt(buf, off); err != nil {
						break
					}
				}
				fl.ReadAt(buf, fl.Size()-100)
			}
		}
	}
	walk(RootIno, 0)
	for i := uint32(1); i < 20; i++ {
		f.Inode(i)
		f.ReadAt(i, buf[:100], 0)
	}
}

// fuzzRegion replaces n bytes at off of the base image with data.
func fuzzRegion(f *testing.F, pick func(b *fuzzBase) (off, n int)) {
	b := loadFuzzBase(f)
	off, n := pick(b)
	f.Add(bytes.Clone(b.img[off : off+n]))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		img := bytes.Clone(b.img)
		copy(img[off:off+n], data)
		exerciseBounded(t, img)
	})
}

func FuzzSuperblock(f *testing.F) {
	fuzzRegion(f, func(b *fuzzBase) (int, int) { return 1024, 1024 })
}

func FuzzGroupDesc(f *testing.F) {
	fuzzRegion(f, func(b *fuzzBase) (int, int) { return b.gdt, 64 })
}

func FuzzInode(f *testing.F) {
	fuzzRegion(f, func(b *fuzzBase) (int, int) { return b.itab, b.bs })
}

func FuzzExtentTree(f *testing.F) {
	b := loadFuzzBase(f)
	seed := append(bytes.Clone(b.img[b.fragInode+0x28:b.fragInode+0x64]), b.img[b.fragExtentBlk:b.fragExtentBlk+b.bs]...)
	f.Add(seed)
	f.Fuzz(func(t *testing.T, data []byte) {
		img := bytes.Clone(b.img)
		if len(data) > 60 {
			copy(img[b.fragInode+0x28:b.fragInode+0x64], data[:60])
			copy(img[b.fragExtentBlk:b.fragExtentBlk+b.bs], data[60:])
		} else {
			copy(img[b.fragInode+0x28:b.fragInode+0x64], data)
		}
		exerciseBounded(t, img)
	})
}

func FuzzDirBlock(f *testing.F) {
	fuzzRegion(f, func(b *fuzzBase) (int, int) { return b.linearDir, b.bs })
}

func FuzzHtreeNode(f *testing.F) {
	b := loadFuzzBase(f)
	f.Add(bytes.Clone(b.img[b.htreeRoot:b.htreeRoot+b.bs]), bytes.Clone(b.img[b.dxLeaf:b.dxLeaf+b.bs]))
	f.Fuzz(func(t *testing.T, root, leaf []byte) {
		img := bytes.Clone(b.img)
		copy(img[b.htreeRoot:b.htreeRoot+b.bs], root)
		copy(img[b.dxLeaf:b.dxLeaf+b.bs], leaf)
		exerciseBounded(t, img)
	})
}

// TestFuzzBaseSane makes sure the fuzz base really reaches each structure:
// the unmodified image walks cleanly and finds all names by hash.
func TestFuzzBaseSane(t *testing.T) {
	b := loadFuzzBase(t)
	f, err := Open(bytes.NewReader(b.img), int64(len(b.img)), nil)
	if err != nil {
		t.Fatal(err)
	}
	h, err := f.Lookup(RootIno, "hdir")
	if err != nil {
		t.Fatal(err)
	}
	d, _ := f.openDir(h)
	for i := 0; i < 150; i++ {
		if _, found, err := f.htreeLookup(d, fmt.Sprintf("entry-with-a-longish-name-%03d", i)); !found || err != nil {
			t.Fatalf("htree lookup %d: %v %v", i, found, err)
		}
	}
	frag, _ := f.Lookup(RootIno, "frag")
	data := make([]byte, 70000)
	n, err := f.ReadAt(frag, data, 0)
	if err != io.EOF || n != 7*8192+1500 {
		t.Fatalf("frag read %d, %v", n, err)
	}
	for i := 0; i < 8; i++ {
		if data[i*8192] != byte('a'+i) || data[i*8192+1500] != 0 && i < 7 {
			t.Fatalf("frag chunk %d wrong", i)
		}
	}
	exercise(b.img)
}
