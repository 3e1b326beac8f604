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
// mounts a not-clean filesystem without a journal too, with a warning).
func TestCrash(t *testing.T) {
	for _, mode := range []string{"nosync", "midsync", "synced"} {
		t.Run(mode, func(t *testing.T) {
			img := newImage(t, "32M", "-t", "ext4", "-b", "1024")
			f, _ := openRW(t, img, &Options{DirtyBytes: 32 << 10})
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
		if out := debugfs(t, img, "stats"); !strings.Contains(out, "Filesystem state:         clean") {
			t.Errorf("not clean after Close:\n%.400s", out)
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
