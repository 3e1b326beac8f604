package ext4

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/umltools/umltools/internal/testutil"
)

// TestHtreeTwoLevels grows an indexed directory past one index level with
// 1 KiB blocks and long names (root grow, then interior node splits),
// removes and renames some entries, and checks every name by hash, with
// e2fsck and with the kernel.
func TestHtreeTwoLevels(t *testing.T) {
	for _, opts := range [][]string{{"-b", "1024"}, {"-b", "1024", "-O", "^metadata_csum"}} {
		t.Run(strings.Join(opts, ""), func(t *testing.T) {
			img := newImage(t, "64M", append([]string{"-t", "ext4"}, opts...)...)
			f, _ := openRW(t, img, nil)
			d, err := f.Mkdir(RootIno, "big", 0o755, 0, 0)
			must(t, err)
			name := func(i int) string { return fmt.Sprintf("%05d-%s", i, strings.Repeat("n", 190+i%50)) }
			const n = 2500
			for i := 0; i < n; i++ {
				if _, err := f.Create(d, name(i), 0o644, 0, 0); err != nil {
					t.Fatalf("create %d: %v", i, err)
				}
			}
			for i := 0; i < n; i += 3 {
				must(t, f.Unlink(d, name(i)))
			}
			for i := 1; i < n; i += 3 {
				must(t, f.Rename(d, name(i), d, "r"+name(i)[1:], 0))
			}
			must(t, f.Close())
			fsckClean(t, img)
			r := openImage(t, img)
			dd, _ := r.openDir(resolve(t, r, "/big"))
			root, _, _ := r.dirBlock(dd, 0)
			if dd.in.Flags&flagIndex == 0 || root[0x1E] != 1 {
				t.Fatalf("flags %#x, index levels %d: want a two-level htree", dd.in.Flags, root[0x1E]+1)
			}
			for i := 0; i < n; i++ {
				nm := name(i)
				switch i % 3 {
				case 1:
					nm = "r" + nm[1:]
				case 0:
					if _, found, _ := r.htreeLookup(dd, nm); found {
						t.Fatalf("removed %d still found", i)
					}
					continue
				}
				if _, found, err := r.htreeLookup(dd, nm); !found || err != nil {
					t.Fatalf("hash lookup of %d: %v %v", i, found, err)
				}
			}
			if os.Geteuid() == 0 {
				mnt := loopMount(t, img, "ext4", "ro")
				ents, err := os.ReadDir(filepath.Join(mnt, "big"))
				if err != nil || len(ents) != n-(n+2)/3 {
					t.Errorf("kernel lists %d entries (%v), want %d", len(ents), err, n-(n+2)/3)
				}
				if _, err := os.Stat(filepath.Join(mnt, "big", name(2))); err != nil {
					t.Errorf("kernel lookup: %v", err)
				}
			}
		})
	}
}

// TestCrash is acceptance 4: work dropped without Close (no Sync, and a
// Sync in the middle) leaves an image that e2fsck -fy repairs and that is
// clean afterwards; a not-clean image mounts read-write again (the kernel
// mounts a not-clean filesystem without a journal too, with a warning,
// and leaves it not clean at unmount).
func TestCrash(t *testing.T) {
	for _, mode := range []string{"nosync", "midsync", "synced", "torn"} {
		t.Run(mode, func(t *testing.T) {
			img := newImage(t, "32M", "-t", "ext4", "-b", "1024")
			dirty := 32 << 10
			if mode == "torn" {
				dirty = 64 << 20
			}
			f, dev := openRW(t, img, &Options{DirtyBytes: dirty})
			work := func(tag string) {
				d, err := f.Mkdir(RootIno, "d"+tag, 0o755, 0, 0)
				must(t, err)
				for i := 0; i < 300; i++ {
					ino, err := f.Create(d, fmt.Sprintf("file-%s-%03d", tag, i), 0o644, 0, 0)
					must(t, err)
					_, err = f.WriteAt(ino, bytes.Repeat([]byte{byte(i)}, i*53), 0)
					must(t, err)
				}
				for i := 0; i < 300; i += 4 {
					must(t, f.Unlink(d, fmt.Sprintf("file-%s-%03d", tag, i)))
				}
			}
			work("1")
			if mode != "nosync" {
				must(t, f.Sync())
			}
			if mode != "synced" {
				work("2")
			}
			if mode == "torn" {
				// Only the first two (coalesced) writes of a Sync reach
				// the disk.
				dev.dropAfter = 2
				f.Sync()
			}
			f.Abandon()
			rc, out := fsck(t, img, "-fy")
			if mode == "synced" {
				// Everything was written: only the not-clean state remains
				// (e2fsck marks it clean and says so with rc 1).
				if rc > 1 || strings.Count(out, "\n") > 7 {
					t.Errorf("e2fsck -fy after a Sync: rc %d\n%s", rc, out)
				}
			} else if rc > 1 {
				t.Fatalf("e2fsck -fy: rc %d\n%s", rc, out)
			}
			if mode == "torn" && (rc != 1 || strings.Count(out, "\n") <= 7) {
				t.Errorf("a torn writeback left nothing to repair? rc %d\n%s", rc, out)
			}
			t.Logf("e2fsck -fy: rc %d, %d lines", rc, strings.Count(out, "\n"))
			fsckClean(t, img)
		})
	}
	t.Run("reopen-not-clean", func(t *testing.T) {
		img := newImage(t, "16M", "-t", "ext4", "-b", "1024")
		f, _ := openRW(t, img, nil)
		_, err := f.Create(RootIno, "x", 0o644, 0, 0)
		must(t, err)
		must(t, f.Sync())
		f.Abandon()
		if out := debugfs(t, img, "stats"); !strings.Contains(out, "Filesystem state:         not clean") {
			t.Errorf("superblock state after a crash:\n%.400s", out)
		}
		var warned []string
		g, _ := openRW(t, img, &Options{Logf: func(format string, a ...any) { warned = append(warned, fmt.Sprintf(format, a...)) }})
		if !g.WasNotClean() || len(warned) == 0 {
			t.Errorf("no not-clean warning (%v)", warned)
		}
		_, err = g.Create(RootIno, "y", 0o644, 0, 0)
		must(t, err)
		must(t, g.Close())
		fsckClean(t, img)
		// The kernel leaves a filesystem mounted not clean marked so.
		if out := debugfs(t, img, "stats"); !strings.Contains(out, "Filesystem state:         not clean") {
			t.Errorf("state after Close:\n%.400s", out)
		}
		if rc, out := fsck(t, img, "-fy"); rc > 1 {
			t.Fatalf("e2fsck -fy: rc %d\n%s", rc, out)
		}
		h, _ := openRW(t, img, nil)
		if h.WasNotClean() {
			t.Errorf("not clean after e2fsck -fy")
		}
		must(t, h.Close())
		if out := debugfs(t, img, "stats"); !strings.Contains(out, "Filesystem state:         clean") {
			t.Errorf("not clean after a clean mount and Close:\n%.400s", out)
		}
	})
}

// TestRefuseWrite: read-write mounts the driver cannot do are refused by
// name; a dirty journal asks for e2fsck.
func TestRefuseWrite(t *testing.T) {
	for _, c := range []struct {
		opts []string
		want string
	}{
		{[]string{"-t", "ext3"}, "extent"},
		{[]string{"-t", "ext2"}, "extent"},
		{[]string{"-t", "ext4", "-O", "inline_data"}, "inline_data"},
		{[]string{"-t", "ext4", "-b", "1024", "-O", "bigalloc", "-C", "16384"}, "bigalloc"},
	} {
		img := newImage(t, "32M", c.opts...)
		fh, _ := os.OpenFile(img, os.O_RDWR, 0)
		st, _ := fh.Stat()
		_, err := OpenDevice(&fileDev{File: fh}, st.Size(), &Options{Writable: true})
		fh.Close()
		if !errors.Is(err, syscall.EROFS) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: %v, want EROFS naming %s", c.opts, err, c.want)
		}
	}
	// needs_recovery: set the bit by hand (checksum kept right).
	img := newImage(t, "16M", "-t", "ext4")
	raw, _ := os.ReadFile(img)
	v := le32(raw, 1024+0x60) | incompatRecover
	putLE32(raw, 1024+0x60, v)
	putLE32(raw, 1024+0x3FC, crc32c(^uint32(0), raw[1024:1024+0x3FC]))
	os.WriteFile(img, raw, 0o644)
	fh, _ := os.OpenFile(img, os.O_RDWR, 0)
	defer fh.Close()
	if _, err := OpenDevice(&fileDev{File: fh}, int64(len(raw)), &Options{Writable: true}); !errors.Is(err, ErrNeedsRecovery) {
		t.Errorf("needs_recovery: %v", err)
	}
	// A read-only FS refuses writes with EROFS.
	r := openImage(t, newImage(t, "16M", "-t", "ext4"))
	if _, err := r.Create(RootIno, "x", 0o644, 0, 0); !errors.Is(err, syscall.EROFS) {
		t.Errorf("create on a read-only FS: %v", err)
	}
}

// TestOrphans: an inode unlinked while held keeps its data until Forget;
// Close frees the ones still held.
func TestOrphans(t *testing.T) {
	img := newImage(t, "16M", "-t", "ext4", "-b", "1024")
	f, _ := openRW(t, img, nil)
	free0 := f.Statfs()
	a, _ := f.Create(RootIno, "a", 0o644, 0, 0)
	b, _ := f.Create(RootIno, "b", 0o644, 0, 0)
	for _, ino := range []uint32{a, b} {
		must(t, f.Hold(ino))
		_, err := f.WriteAt(ino, make([]byte, 100000), 0)
		must(t, err)
		must(t, f.Unlink(RootIno, map[uint32]string{a: "a", b: "b"}[ino]))
	}
	if got := f.Orphans(); len(got) != 2 {
		t.Fatalf("orphans %v", got)
	}
	// Still readable and writable.
	_, err := f.WriteAt(a, []byte("still here"), 0)
	must(t, err)
	buf := make([]byte, 10)
	f.ReadAt(a, buf, 0)
	if string(buf) != "still here" {
		t.Errorf("orphan read %q", buf)
	}
	must(t, f.Forget(a))
	if got := f.Orphans(); len(got) != 1 || got[0] != b {
		t.Errorf("orphans after Forget: %v", got)
	}
	must(t, f.Close())
	fsckClean(t, img)
	g := openImage(t, img)
	if s := g.Statfs(); s.FreeBlocks != free0.FreeBlocks || s.FreeInodes != free0.FreeInodes {
		t.Errorf("statfs after orphans freed %+v, at start %+v", s, free0)
	}
}

// TestWriteMisc: device nodes, fifos, sockets, slow symlinks, xattrs in
// the inode and in a block, ACLs, fallocate and punch, unwritten extents
// converted by writes, i_blocks, statfs, times, and a sparse file past
// 4 GiB; checked against the kernel's view of the image.
func TestWriteMisc(t *testing.T) {
	img := newImage(t, "64M", "-t", "ext4", "-b", "4096")
	f, dev := openRW(t, img, &Options{Discard: true})
	u := must1[uint32](t)
	before := f.Statfs()
	chr := u(f.Mknod(RootIno, "chr", S_IFCHR|0o600, 0, 0, unix.Mkdev(4, 64)))
	u(f.Mknod(RootIno, "blk", S_IFBLK|0o600, 0, 0, unix.Mkdev(259, 300000)))
	u(f.Mknod(RootIno, "fifo", S_IFIFO|0o644, 0, 0, 0))
	u(f.Mknod(RootIno, "sock", S_IFSOCK|0o644, 1000, 1000, 0))
	long := strings.Repeat("x/", 100)
	u(f.Symlink(RootIno, "slow", long, 0, 0))
	x := u(f.Create(RootIno, "x", 0o644, 1234, 5678))
	must(t, f.SetXattr(x, "user.small", []byte("v"), 0))
	must(t, f.SetXattr(x, "user.big", bytes.Repeat([]byte("B"), 2000), 0))
	must(t, f.SetXattr(x, "trusted.t", []byte("tt"), XattrCreate))
	if err := f.SetXattr(x, "user.small", []byte("w"), XattrCreate); !errors.Is(err, syscall.EEXIST) {
		t.Errorf("XATTR_CREATE on existing: %v", err)
	}
	if err := f.RemoveXattr(x, "user.none"); !errors.Is(err, syscall.ENODATA) {
		t.Errorf("remove missing xattr: %v", err)
	}
	acl := []byte{2, 0, 0, 0, 1, 0, 6, 0, 0xff, 0xff, 0xff, 0xff, 4, 0, 4, 0, 0xff, 0xff, 0xff, 0xff, 0x20, 0, 4, 0, 0xff, 0xff, 0xff, 0xff}
	must(t, f.SetXattr(x, "system.posix_acl_access", acl, 0))
	if got, err := f.GetXattr(x, "system.posix_acl_access"); err != nil || !bytes.Equal(got, acl) {
		t.Errorf("ACL back %x %v", got, err)
	}
	// Preallocate, write into the middle of the unwritten extent, punch.
	p := u(f.Create(RootIno, "prealloc", 0o644, 0, 0))
	must(t, f.Fallocate(p, 0, 0, 1<<20))
	_, err := f.WriteAt(p, []byte("middle"), 500000)
	must(t, err)
	must(t, f.Fallocate(p, FallocPunchHole|FallocKeepSize, 8192, 65536))
	must(t, f.Fallocate(p, FallocKeepSize, 1<<20, 1<<20))
	in, _ := f.Inode(p)
	if in.Size != 1<<20 || in.Blocks != (2<<20-65536)/512 {
		t.Errorf("prealloc: size %d blocks %d", in.Size, in.Blocks)
	}
	// Huge sparse file.
	h := u(f.Create(RootIno, "huge", 0o644, 0, 0))
	_, err = f.WriteAt(h, []byte("far"), 5<<30)
	must(t, err)
	mt := time.Date(2020, 1, 2, 3, 4, 5, 6000, time.UTC)
	must(t, f.SetAttr(h, &Attr{Mask: AttrMtime | AttrAtime | AttrUid, Mtime: mt, Atime: mt, Uid: 77}))
	hin, _ := f.Inode(h)
	if !hin.Mtime.Equal(mt) || hin.Uid != 77 || hin.Size != 5<<30+3 || hin.Blocks != 8 {
		t.Errorf("huge: mtime %v uid %d size %d blocks %d", hin.Mtime, hin.Uid, hin.Size, hin.Blocks)
	}
	tmp := u(f.Create(RootIno, "tmp", 0o644, 0, 0))
	_, err = f.WriteAt(tmp, make([]byte, 1<<20), 0)
	must(t, err)
	must(t, f.Unlink(RootIno, "tmp"))
	if dev.discards == 0 {
		t.Errorf("no discard for the freed extent")
	}
	s := f.Statfs()
	if s.FreeBlocks >= before.FreeBlocks || s.FreeInodes != before.FreeInodes-8 {
		t.Errorf("statfs %+v, before %+v", s, before)
	}
	must(t, f.Close())
	fsckClean(t, img)
	r := openImage(t, img)
	if s2 := r.Statfs(); s2 != s {
		t.Errorf("statfs after reopen %+v, before close %+v", s2, s)
	}
	cin, _ := r.Inode(chr)
	if cin.Rdev() != unix.Mkdev(4, 64) {
		t.Errorf("chr rdev %#x", cin.Rdev())
	}
	if os.Geteuid() != 0 {
		return
	}
	mnt := loopMount(t, img, "ext4", "ro")
	var st unix.Stat_t
	unix.Lstat(filepath.Join(mnt, "blk"), &st)
	if st.Rdev != unix.Mkdev(259, 300000) || st.Mode != unix.S_IFBLK|0o600 {
		t.Errorf("kernel: blk rdev %#x mode %o", st.Rdev, st.Mode)
	}
	unix.Lstat(filepath.Join(mnt, "sock"), &st)
	if st.Mode&unix.S_IFMT != unix.S_IFSOCK || st.Uid != 1000 {
		t.Errorf("kernel: sock mode %o uid %d", st.Mode, st.Uid)
	}
	if l, _ := os.Readlink(filepath.Join(mnt, "slow")); l != long {
		t.Errorf("kernel: slow symlink %q", l)
	}
	val := make([]byte, 4096)
	if n, err := unix.Lgetxattr(filepath.Join(mnt, "x"), "user.big", val); err != nil || n != 2000 {
		t.Errorf("kernel: user.big %d %v", n, err)
	}
	if n, err := unix.Lgetxattr(filepath.Join(mnt, "x"), "system.posix_acl_access", val); err != nil || !bytes.Equal(val[:n], acl) {
		t.Errorf("kernel: ACL %x %v", val[:n], err)
	}
	b, _ := os.ReadFile(filepath.Join(mnt, "prealloc"))
	want := make([]byte, 1<<20)
	copy(want[500000:], "middle")
	if !bytes.Equal(b, want) {
		t.Errorf("kernel: prealloc contents differ")
	}
	hb := make([]byte, 3)
	hf, _ := os.Open(filepath.Join(mnt, "huge"))
	hf.ReadAt(hb, 5<<30)
	hf.Close()
	if string(hb) != "far" {
		t.Errorf("kernel: huge reads %q", hb)
	}
	_ = testutil.NeedRoot
}

// TestBenchWrite reports (make bench) the time to write a 256 MiB file
// through WriteAt in 1 MiB chunks plus Sync, against dd writing the same
// amount to a host file with conv=fsync.
func TestBenchWrite(t *testing.T) {
	testutil.NeedBench(t)
	dd := testutil.NeedCmd(t, "dd")[0]
	img := newImage(t, "1G", "-t", "ext4")
	f, _ := openRW(t, img, nil)
	ino, err := f.Create(RootIno, "big", 0o644, 0, 0)
	must(t, err)
	chunk := bytes.Repeat([]byte("0123456789abcdef"), 1<<16)
	start := time.Now()
	for i := 0; i < 256; i++ {
		if _, err := f.WriteAt(ino, chunk, int64(i)<<20); err != nil {
			t.Fatal(err)
		}
	}
	must(t, f.Sync())
	ours := time.Since(start)
	must(t, f.Close())
	fsckClean(t, img)
	out := filepath.Join(t.TempDir(), "dd.out")
	start = time.Now()
	if b, err := execCombined(dd, "if=/dev/zero", "of="+out, "bs=1M", "count=256", "conv=fsync"); err != nil {
		t.Fatalf("dd: %v\n%s", err, b)
	}
	host := time.Since(start)
	t.Logf("BENCH: ext4 write: 256 MiB in 1 MiB WriteAt chunks + Sync: %v (%.0f MiB/s); dd conv=fsync on the host: %v (%.0f MiB/s); ratio %.2f",
		ours, 256/ours.Seconds(), host, 256/host.Seconds(), ours.Seconds()/host.Seconds())
}

// TestExtentDepth fragments a file on purpose (every other block) until
// its extent tree needs depth 2 with 1 KiB blocks, then punches, truncates
// and rewrites it so that the tree collapses again; e2fsck and the
// contents are checked at each stage.
func TestExtentDepth(t *testing.T) {
	img := newImage(t, "64M", "-t", "ext4", "-b", "1024")
	f, _ := openRW(t, img, nil)
	ino, err := f.Create(RootIno, "frag", 0o644, 0, 0)
	must(t, err)
	// A second file allocated in between keeps the extents apart.
	other, err := f.Create(RootIno, "other", 0o644, 0, 0)
	must(t, err)
	want := map[int64]byte{}
	blk := make([]byte, 1024)
	for i := 0; i < 1200; i++ {
		for j := range blk {
			blk[j] = byte(i)
		}
		_, err := f.WriteAt(ino, blk, int64(2*i)*1024)
		must(t, err)
		want[int64(2*i)] = byte(i)
		_, err = f.WriteAt(other, blk, int64(i)*1024)
		must(t, err)
	}
	depth := func() int {
		ib, err := f.getInodeLocked(ino)
		must(t, err)
		return int(le16(ib.iblock(), 6))
	}
	check := func(stage string, wantDepth int) {
		t.Helper()
		if d := depth(); d != wantDepth {
			t.Errorf("%s: depth %d, want %d", stage, d, wantDepth)
		}
		in, _ := f.Inode(ino)
		buf := make([]byte, in.Size)
		f.ReadAt(ino, buf, 0)
		for b := int64(0); b < int64(in.Size)/1024; b++ {
			v, ok := want[b]
			if !ok {
				v = 0
			}
			if buf[b*1024] != v || buf[b*1024+1023] != v {
				t.Fatalf("%s: block %d reads %d, want %d", stage, b, buf[b*1024], v)
			}
		}
	}
	check("fragmented", 2)
	must(t, f.Sync())
	fsckClean(t, img)
	// Punch most of it: the tree shrinks to depth 1.
	must(t, f.Fallocate(ino, FallocPunchHole|FallocKeepSize, 100*1024, 2000*1024))
	for b := int64(100); b < 2100; b++ {
		delete(want, b)
	}
	check("punched", 1)
	must(t, f.Sync())
	fsckClean(t, img)
	must(t, f.Truncate(ino, 6*1024))
	for b := range want {
		if b >= 6 {
			delete(want, b)
		}
	}
	check("truncated", 0)
	must(t, f.Close())
	fsckClean(t, img)
}

// getInodeLocked reads an inode copy under the read lock (tests).
func (f *FS) getInodeLocked(ino uint32) (*ibuf, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	blk, off := f.inodeLoc(ino)
	b, err := f.block(blk)
	if err != nil {
		return nil, err
	}
	return &ibuf{ino: ino, raw: append([]byte(nil), b[off:off+int(f.sb.InodeSize)]...)}, nil
}

// TestWriteMatrix runs random differential sequences on the other layouts
// mke2fs can make (32-bit, no flex_bg, meta_bg, 128-byte inodes, a
// checksum seed, no dir_index, no journal).
func TestWriteMatrix(t *testing.T) {
	testutil.NeedCmd(t, "mke2fs", "e2fsck")
	for i, c := range []diffConfig{
		{"32bit", "32M", []string{"-t", "ext4", "-O", "^64bit"}},
		{"noflex", "32M", []string{"-t", "ext4", "-b", "1024", "-O", "^flex_bg"}},
		{"metabg", "32M", []string{"-t", "ext4", "-b", "1024", "-O", "meta_bg,^resize_inode"}},
		{"csumseed", "16M", []string{"-t", "ext4", "-O", "metadata_csum_seed"}},
		{"nodirindex", "16M", []string{"-t", "ext4", "-b", "1024", "-O", "^dir_index"}},
		{"nojournal-4k", "32M", []string{"-t", "ext4", "-b", "4096", "-O", "^has_journal"}},
		{"plain", "16M", []string{"-t", "ext4", "-O", "^flex_bg,^dir_index,^has_journal,^huge_file,^dir_nlink,^metadata_csum,^uninit_bg"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			seqs := 4
			if v := os.Getenv("EXT4_DIFF_SEQS"); v != "" {
				fmt.Sscan(v, &seqs)
				seqs = max(seqs/10, 1)
			}
			for s := 0; s < seqs; s++ {
				r := rand.New(rand.NewSource(int64(5000 + 100*i + s)))
				ops := randomOps(r, 80+r.Intn(80))
				if err := safeDiffRun(t, c, ops); err != nil {
					small := shrink(t, c, ops)
					t.Fatalf("seed %d: %v\nshrunk to %d ops: %v\nerror: %v", s, err, len(small), small, safeDiffRun(t, c, small))
				}
			}
		})
	}
}

// TestConcurrentWrite: writers in several goroutines and readers (a File
// handle kept open across writes, ReadDir, Lookup) at the same time; run
// under -race by make test's race pass or by hand.
func TestConcurrentWrite(t *testing.T) {
	img := newImage(t, "64M", "-t", "ext4", "-b", "1024")
	f, _ := openRW(t, img, nil)
	shared, err := f.Create(RootIno, "shared", 0o644, 0, 0)
	must(t, err)
	fl, err := f.Open(shared)
	must(t, err)
	done := make(chan error, 8)
	for w := 0; w < 4; w++ {
		go func(w int) {
			d, err := f.Mkdir(RootIno, fmt.Sprintf("w%d", w), 0o755, 0, 0)
			for i := 0; err == nil && i < 150; i++ {
				var ino uint32
				if ino, err = f.Create(d, fmt.Sprintf("f%03d", i), 0o644, 0, 0); err == nil {
					_, err = f.WriteAt(ino, bytes.Repeat([]byte{byte(i)}, 3000), 0)
				}
				if err == nil {
					_, err = f.WriteAt(shared, []byte{byte(w)}, int64(w*1000+i))
				}
			}
			done <- err
		}(w)
	}
	for r := 0; r < 2; r++ {
		go func() {
			buf := make([]byte, 5000)
			for i := 0; i < 300; i++ {
				fl.ReadAt(buf, 0)
				f.ReadDir(RootIno, 0, func(DirEntry) bool { return true })
				if d, err := f.Lookup(RootIno, "w1"); err == nil {
					f.Lookup(d, "f010")
				}
				f.Statfs()
			}
			done <- nil
		}()
	}
	for i := 0; i < 6; i++ {
		must(t, <-done)
	}
	buf := make([]byte, 4000)
	n, _ := fl.ReadAt(buf, 0)
	if n != 3150 || buf[3149] != 3 || buf[149] != 0 {
		t.Errorf("shared file: %d bytes, [3149]=%d", n, buf[3149])
	}
	must(t, f.Close())
	fsckClean(t, img)
}

// TestKernelInterop: the kernel indexes a directory, we add to its htree
// (leaf and index splits of a kernel-made tree), then the kernel mounts
// our image read-write and adds more; e2fsck is clean after each side.
func TestKernelInterop(t *testing.T) {
	testutil.NeedRoot(t)
	testutil.NeedCmd(t, "mount", "umount", "losetup")
	img := newImage(t, "128M", "-t", "ext4", "-b", "1024")
	mnt := loopMount(t, img, "ext4")
	os.Mkdir(filepath.Join(mnt, "k"), 0o755)
	for i := 0; i < 2000; i++ {
		os.WriteFile(filepath.Join(mnt, "k", fmt.Sprintf("kernel-%05d", i)), []byte("k"), 0o644)
	}
	runCmd(t, "umount", mnt)
	waitDetached(t, img)
	f, _ := openRW(t, img, nil)
	k := resolve(t, f, "/k")
	if in, _ := f.Inode(k); in.Flags&flagIndex == 0 {
		t.Fatal("the kernel did not index /k")
	}
	for i := 0; i < 3000; i++ {
		ino, err := f.Create(k, fmt.Sprintf("driver-made-entry-%05d", i), 0o600, 0, 0)
		must(t, err)
		if i%100 == 0 {
			_, err = f.WriteAt(ino, []byte("d"), 0)
			must(t, err)
		}
	}
	for i := 0; i < 2000; i += 2 {
		must(t, f.Unlink(k, fmt.Sprintf("kernel-%05d", i)))
	}
	must(t, f.Close())
	fsckClean(t, img)
	mnt = loopMount(t, img, "ext4")
	ents, err := os.ReadDir(filepath.Join(mnt, "k"))
	if err != nil || len(ents) != 4000 {
		t.Fatalf("kernel lists %d entries in /k (%v), want 4000", len(ents), err)
	}
	if b, _ := os.ReadFile(filepath.Join(mnt, "k", "driver-made-entry-00100")); string(b) != "d" {
		t.Errorf("kernel reads %q", b)
	}
	for i := 0; i < 1000; i++ {
		must(t, os.WriteFile(filepath.Join(mnt, "k", fmt.Sprintf("kernel-again-%05d", i)), nil, 0o644))
	}
	for i := 0; i < 3000; i += 3 {
		must(t, os.Remove(filepath.Join(mnt, "k", fmt.Sprintf("driver-made-entry-%05d", i))))
	}
	runCmd(t, "umount", mnt)
	waitDetached(t, img)
	fsckClean(t, img)
}

// TestLinkLimits: EMLINK at 65,000 links to a file, and the dir_nlink
// rule for directories (an indexed directory past the limit counts 1; a
// linear one refuses with EMLINK). Link counts are set by hand.
func TestLinkLimits(t *testing.T) {
	img := newImage(t, "16M", "-t", "ext4", "-b", "1024")
	f, _ := openRW(t, img, nil)
	setLinks := func(ino uint32, n uint16) {
		f.mu.Lock()
		defer f.mu.Unlock()
		ib, err := f.getInode(ino)
		must(t, err)
		ib.setLinks(n)
		must(t, f.putInode(ib))
	}
	links := func(ino uint32) uint16 { in, _ := f.Inode(ino); return in.Nlink }
	x, _ := f.Create(RootIno, "x", 0o644, 0, 0)
	setLinks(x, linkMax-1)
	must(t, f.Link(x, RootIno, "y"))
	if err := f.Link(x, RootIno, "z"); !errors.Is(err, syscall.EMLINK) {
		t.Errorf("link at %d links: %v", links(x), err)
	}
	lin, _ := f.Mkdir(RootIno, "lin", 0o755, 0, 0)
	setLinks(lin, linkMax)
	if _, err := f.Mkdir(lin, "sub", 0o755, 0, 0); !errors.Is(err, syscall.EMLINK) {
		t.Errorf("mkdir in a linear directory at the limit: %v", err)
	}
	idx, _ := f.Mkdir(RootIno, "idx", 0o755, 0, 0)
	for i := 0; i < 100; i++ {
		f.Create(idx, fmt.Sprintf("a-long-enough-name-to-fill-blocks-%03d", i), 0o644, 0, 0)
	}
	if in, _ := f.Inode(idx); in.Flags&flagIndex == 0 {
		t.Fatal("idx not indexed")
	}
	setLinks(idx, linkMax-1)
	_, err := f.Mkdir(idx, "sub", 0o755, 0, 0)
	must(t, err)
	if n := links(idx); n != 1 {
		t.Errorf("indexed directory past the limit counts %d, want 1", n)
	}
	must(t, f.Rmdir(idx, "sub"))
	if n := links(idx); n != 1 {
		t.Errorf("after rmdir: %d, want 1 (stays overflowed)", n)
	}
}

// TestBlockMappedFiles: an ext3 image converted with tune2fs -O extent
// mounts read-write; its old block-mapped files refuse data writes with
// EROFS, and unlinking one frees its data and indirect blocks.
func TestBlockMappedFiles(t *testing.T) {
	tune := testutil.NeedCmd(t, "tune2fs")[0]
	src := t.TempDir()
	os.Mkdir(filepath.Join(src, "d"), 0o755)
	big := make([]byte, 5<<20)
	for i := range big {
		big[i] = byte(i >> 10)
	}
	os.WriteFile(filepath.Join(src, "d", "big"), big, 0o644)
	img := testutil.MkfsImage(t, src, "32M", "-t", "ext3", "-b", "1024")
	if out, err := execCombined(tune, "-O", "extent", img); err != nil {
		t.Fatalf("tune2fs: %v\n%s", err, out)
	}
	f, _ := openRW(t, img, nil)
	before := f.Statfs()
	d := resolve(t, f, "/d")
	b := resolve(t, f, "/d/big")
	if _, err := f.WriteAt(b, []byte("x"), 0); !errors.Is(err, syscall.EROFS) {
		t.Errorf("write to a block-mapped file: %v", err)
	}
	bin, _ := f.Inode(b)
	must(t, f.Unlink(d, "big"))
	after := f.Statfs()
	// The data (mke2fs leaves zero blocks as holes) and the indirect
	// blocks: what i_blocks counted.
	if got := after.FreeBlocks - before.FreeBlocks; got != bin.Blocks/2 || got < 5000 {
		t.Errorf("unlink freed %d blocks, want %d", got, bin.Blocks/2)
	}
	// The block-mapped directory takes entries while it has room, and
	// refuses to grow.
	var err error
	for i := 0; err == nil; i++ {
		_, err = f.Create(d, fmt.Sprintf("a-name-long-enough-to-fill-a-block-%03d", i), 0o644, 0, 0)
	}
	if !errors.Is(err, syscall.EROFS) {
		t.Errorf("growing a block-mapped directory: %v", err)
	}
	must(t, f.Close())
	fsckClean(t, img)
}

// TestSplitPoint: leaf splits halve the bytes and set the collision bit
// when the median hash continues across the split.
func TestSplitPoint(t *testing.T) {
	mk := func(hashes ...uint32) []hent {
		var es []hent
		for i, h := range hashes {
			es = append(es, hent{name: fmt.Sprintf("n%02d", i), hash: h})
		}
		return es
	}
	for _, c := range []struct {
		es    []hent
		split int
		hash  uint32
	}{
		{mk(2, 4, 6, 8), 2, 6},
		{mk(2, 4, 4, 8), 2, 5},      // 4 continues: hash 4|1
		{mk(10, 10, 10, 10), 2, 11}, // all collide
		{mk(2, 4), 1, 4},            // two entries
		{mk(2, 4, 6, 8, 10), 3, 8},  // odd count: the first half takes the median
	} {
		s, h := splitPoint(c.es)
		if s != c.split || h != c.hash {
			t.Errorf("%v: split %d hash %d, want %d %d", c.es, s, h, c.split, c.hash)
		}
	}
}

// TestFull fills the filesystem: writes fail with ENOSPC and leave
// nothing behind, a name still fits a directory block with room, mkdir
// (which needs a block) fails cleanly, and freeing makes room again.
func TestFull(t *testing.T) {
	img := newImage(t, "8M", "-t", "ext4", "-b", "1024")
	f, _ := openRW(t, img, nil)
	ino, err := f.Create(RootIno, "fill", 0o644, 0, 0)
	must(t, err)
	chunk := make([]byte, 64<<10)
	off := int64(0)
	short := false
	for {
		n, err := f.WriteAt(ino, chunk, off)
		off += int64(n)
		if err != nil {
			if !errors.Is(err, syscall.ENOSPC) || n != 0 {
				t.Fatal(err)
			}
			break
		}
		if n < len(chunk) {
			short = true
		}
	}
	if !short {
		t.Errorf("no short write before ENOSPC")
	}
	in, _ := f.Inode(ino)
	if in.Size != uint64(off) {
		t.Errorf("size %d after ENOSPC, wrote %d", in.Size, off)
	}
	free := f.Statfs().FreeBlocks
	t.Logf("full: %d bytes written, %d blocks free", off, free)
	if _, err := f.Create(RootIno, "still-fits", 0o644, 0, 0); err != nil {
		t.Errorf("create in a directory with room on a full filesystem: %v", err)
	}
	for free > 0 {
		if _, err := f.WriteAt(ino, chunk[:1024], off); err != nil {
			break
		}
		off += 1024
		free = f.Statfs().FreeBlocks
	}
	if _, err := f.Mkdir(RootIno, "nodir", 0o755, 0, 0); !errors.Is(err, syscall.ENOSPC) {
		t.Errorf("mkdir on a full filesystem: %v", err)
	}
	if _, err := f.Symlink(RootIno, "slow", strings.Repeat("s", 100), 0, 0); !errors.Is(err, syscall.ENOSPC) {
		t.Errorf("slow symlink on a full filesystem: %v", err)
	}
	must(t, f.Sync())
	fsckClean(t, img)
	must(t, f.Truncate(ino, 0))
	if _, err := f.Mkdir(RootIno, "dir", 0o755, 0, 0); err != nil {
		t.Errorf("mkdir after freeing: %v", err)
	}
	must(t, f.Close())
	fsckClean(t, img)
}

// TestCoarseClock: the cached clock is never ahead of the coarse clock
// and lags it by at most a tick and the cache's millisecond.
func TestCoarseClock(t *testing.T) {
	var c coarseClock
	prev := time.Time{}
	for i := 0; i < 20000; i++ {
		v := c.now()
		after := coarseNow()
		if v.After(after) || after.Sub(v) > 20*time.Millisecond || v.Before(prev) {
			t.Fatalf("reading %d: %v, coarse clock after it %v, previous %v", i, v, after, prev)
		}
		prev = v
	}
}
