package extfs

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/umltools/umltools/internal/ext4"
	"github.com/umltools/umltools/internal/testutil"
	"github.com/umltools/umltools/internal/vfs"
)

type fileDev struct{ *os.File }

func (d fileDev) Flush() error { return d.Sync() }

// mount makes a fresh 64 MiB ext4 image and mounts it read-write.
func mount(t *testing.T, o Options) (*FS, string) {
	t.Helper()
	src := t.TempDir()
	img := testutil.MkfsImage(t, src, "64M", "-t", "ext4")
	return remount(t, img, o), img
}

func remount(t *testing.T, img string, o Options) *FS {
	t.Helper()
	f, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	st, _ := f.Stat()
	if o.Logf == nil {
		o.Logf = t.Logf
	}
	fs, err := Mount(fileDev{f}, st.Size(), o)
	if err != nil {
		t.Fatal(err)
	}
	return fs
}

func debugfs(t *testing.T, img, req string) string {
	t.Helper()
	b, err := exec.Command("debugfs", "-R", req, img).Output()
	if err != nil {
		t.Fatalf("debugfs -R %q: %v", req, err)
	}
	return string(b)
}

func create(t *testing.T, fs *FS, name string) *file {
	t.Helper()
	n, err := fs.Root().(*dir).Create(name, 0o644, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	return n.(*file)
}

func openFile(t *testing.T, n *file, flags int) *os.File {
	t.Helper()
	f, err := n.Open(nil, flags)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func sum(b []byte) [32]byte { return sha256.Sum256(b) }

// waitFor polls cond for up to 5 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

// imageContent reads ino's content through the driver (what the image
// holds, not the page cache).
func imageContent(t *testing.T, fs *FS, ino uint32) []byte {
	t.Helper()
	h, err := fs.fs().Open(ino)
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, h.Size())
	if _, err := h.ReadAt(b, 0); err != nil && len(b) > 0 {
		t.Fatal(err)
	}
	return b
}

// TestWriteBack covers the ways data reaches the image: close of the last
// writer, mmap writes, truncation (shrink into a chunk, grow with a hole),
// fsync, and times set after writing.
func TestWriteBack(t *testing.T) {
	testutil.NeedCmd(t, "mkfs.ext4", "debugfs", "e2fsck")
	fs, img := mount(t, Options{Writeback: -1})
	n := create(t, fs, "f")

	// 1. write(2) then close: written back at the close (inotify).
	data := bytes.Repeat([]byte("0123456789abcdef"), 300000/16) // 300,000 bytes: 5 chunks
	w := openFile(t, n, syscall.O_WRONLY)
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	if got := imageContent(t, fs, n.ino); len(got) != 0 {
		t.Errorf("before close the image already has %d bytes (write-back too early?)", len(got))
	}
	w.Close()
	waitFor(t, "write-back at close", func() bool { return bytes.Equal(imageContent(t, fs, n.ino), data) })

	// 2. a shared mapping's writes, found by the content comparison.
	w = openFile(t, n, syscall.O_RDWR)
	m, err := unix.Mmap(int(w.Fd()), 0, len(data), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	w.Close()
	copy(m[200000:], "MMAP-WRITE")
	copy(data[200000:], "MMAP-WRITE")
	unix.Munmap(m)
	waitFor(t, "write-back of mmap writes at the last unmap", func() bool { return bytes.Equal(imageContent(t, fs, n.ino), data) })

	// 3. shrink into a chunk, grow with a hole, write past it, fsync.
	if err := n.Truncate(70000); err != nil {
		t.Fatal(err)
	}
	w = openFile(t, n, syscall.O_RDWR)
	if err := w.Truncate(5 << 20); err != nil {
		t.Fatal(err)
	}
	if _, err := w.WriteAt([]byte("tail"), 4<<20); err != nil {
		t.Fatal(err)
	}
	want := make([]byte, 5<<20)
	copy(want, data[:70000])
	copy(want[4<<20:], "tail")
	if err := n.Sync(false); err != nil {
		t.Fatal(err)
	}
	if got := imageContent(t, fs, n.ino); sum(got) != sum(want) {
		t.Errorf("after truncate/extend/fsync the image differs (%d bytes, want %d)", len(got), len(want))
	}
	if a, _ := n.Attr(); a.Size != 5<<20 || a.Blocks > 200 {
		t.Errorf("stat: size %d blocks %d; want 5 MiB with a hole (few blocks)", a.Size, a.Blocks)
	}
	w.Close()

	// 4. times set after writing stay (the data's mtime does not win).
	past := time.Unix(1e9, 0)
	before := time.Now().Add(-2 * time.Second) // coarse clocks
	w = openFile(t, n, syscall.O_WRONLY|syscall.O_APPEND)
	w.Write([]byte("more"))
	if err := n.Utimes(&past, &past); err != nil {
		t.Fatal(err)
	}
	w.Close()
	time.Sleep(100 * time.Millisecond) // the close's write-back
	if err := fs.Sync(); err != nil {
		t.Fatal(err)
	}
	if a, _ := n.Attr(); !a.Mtime.Equal(past) || a.Size != 5<<20+4 || a.Ctime.Before(before) {
		t.Errorf("after utimes: mtime %v ctime %v size %d, want %v, now and %d", a.Mtime, a.Ctime, a.Size, past, 5<<20+4)
	}

	if err := fs.Close(); err != nil {
		t.Fatal(err)
	}
	testutil.E2fsck(t, img)
	if out := debugfs(t, img, "stat /f"); !strings.Contains(out, "Size: 5242884") || !strings.Contains(out, "mtime: 0x3b9aca00") {
		t.Errorf("debugfs stat /f:\n%s", out)
	}
	if out := debugfs(t, img, "stats"); !strings.Contains(out, "Filesystem state:         clean") {
		t.Errorf("not clean after Close:\n%s", out)
	}
}

// TestOrphan: a file unlinked while a guest holds it keeps its blocks
// until nobody does, then they are freed.
func TestOrphan(t *testing.T) {
	testutil.NeedCmd(t, "mkfs.ext4", "debugfs", "e2fsck")
	var held atomic.Bool
	var fs *FS
	fs, img := mount(t, Options{Writeback: -1, Held: func() map[uint64]bool {
		m := map[uint64]bool{}
		if held.Load() {
			for _, p := range fs.pages() {
				m[p.hostIno] = true
			}
		}
		return m
	}})
	n := create(t, fs, "big")
	w := openFile(t, n, syscall.O_RDWR)
	if _, err := w.Write(bytes.Repeat([]byte{7}, 8<<20)); err != nil {
		t.Fatal(err)
	}
	if err := n.Sync(false); err != nil {
		t.Fatal(err)
	}
	free0 := fs.Statfs().Bfree
	held.Store(true)
	if err := fs.Root().(*dir).Unlink("big"); err != nil {
		t.Fatal(err)
	}
	if fs.Orphans() != 1 || fs.Statfs().Bfree != free0 {
		t.Errorf("held: %d orphans, free %d → %d; want 1 and unchanged", fs.Orphans(), free0, fs.Statfs().Bfree)
	}
	b := make([]byte, 4)
	if _, err := w.ReadAt(b, 1<<20); err != nil || b[0] != 7 {
		t.Errorf("the holder reads %v, %v", b, err)
	}
	held.Store(false)
	w.Close()
	// The page stops counting as an orphan just before its blocks go.
	waitFor(t, "the orphan freed at its last close", func() bool { return fs.Orphans() == 0 && fs.Statfs().Bfree >= free0+2048 })
	if err := fs.Close(); err != nil {
		t.Fatal(err)
	}
	testutil.E2fsck(t, img)
}

// TestRemount: remount read-only marks the image clean and refuses
// writes; read-write again works; a crash (Abandon) leaves it for e2fsck.
func TestRemount(t *testing.T) {
	testutil.NeedCmd(t, "mkfs.ext4", "debugfs", "e2fsck")
	fs, img := mount(t, Options{Writeback: -1})
	n := create(t, fs, "a")
	w := openFile(t, n, syscall.O_WRONLY)
	w.Write([]byte("one"))
	w.Close()
	if err := fs.Remount(true); err != nil {
		t.Fatal(err)
	}
	if fs.Writable() {
		t.Fatal("still writable after Remount(true)")
	}
	if !strings.Contains(debugfs(t, img, "stats"), "Filesystem state:         clean") {
		t.Error("not clean after remount ro")
	}
	testutil.E2fsck(t, img)
	if _, err := n.Open(nil, syscall.O_WRONLY); err != syscall.EROFS {
		t.Errorf("open for writing on a read-only remount: %v, want EROFS", err)
	}
	if err := fs.Remount(false); err != nil {
		t.Fatal(err)
	}
	if _, err := fs.Root().(*dir).Mkdir("d", 0o755, 0, 0); err != nil {
		t.Fatal(err)
	}
	if err := fs.Sync(); err != nil {
		t.Fatal(err)
	}
	fs.Abandon()
	if strings.Contains(debugfs(t, img, "stats"), "Filesystem state:         clean") {
		t.Error("clean after a crash while mounted rw")
	}
	out, err := exec.Command("e2fsck", "-fy", img).CombinedOutput()
	if code := exitCode(err); code > 1 {
		t.Fatalf("e2fsck -fy exit %d:\n%s", code, out)
	}
	testutil.E2fsck(t, img)
	if out := debugfs(t, img, "cat /a"); out != "one" {
		t.Errorf("cat /a after the crash: %q", out)
	}
}

func exitCode(err error) int {
	if e, ok := err.(*exec.ExitError); ok {
		return e.ExitCode()
	}
	if err != nil {
		return 99
	}
	return 0
}

// TestXattrAndRename: the vfs extension interfaces reach the driver.
func TestXattrAndRename(t *testing.T) {
	testutil.NeedCmd(t, "mkfs.ext4", "debugfs", "e2fsck")
	fs, img := mount(t, Options{Writeback: -1})
	root := fs.Root().(*dir)
	a := create(t, fs, "a")
	create(t, fs, "b")
	var x vfs.Xattrs = &a.node
	if err := x.Setxattr("user.k", []byte("v"), 0); err != nil {
		t.Fatal(err)
	}
	if v, err := x.Getxattr("user.k"); err != nil || string(v) != "v" {
		t.Errorf("getxattr: %q, %v", v, err)
	}
	if _, err := x.Getxattr("user.none"); err == nil || !strings.Contains(err.Error(), syscall.ENODATA.Error()) {
		t.Errorf("missing attribute: %v, want ENODATA", err)
	}
	var r vfs.Renamer = root
	if err := r.RenameFlags("a", root, "b", ext4.RenameNoReplace); err == nil {
		t.Error("RENAME_NOREPLACE over an existing name succeeded")
	}
	if err := r.RenameFlags("a", root, "b", ext4.RenameExchange); err != nil {
		t.Fatal(err)
	}
	if ino, _ := fs.fs().Lookup(ext4.RootIno, "b"); ino != a.ino {
		t.Errorf("after RENAME_EXCHANGE b is inode %d, want %d", ino, a.ino)
	}
	if err := fs.Close(); err != nil {
		t.Fatal(err)
	}
	testutil.E2fsck(t, img)
}

// TestSpares: new files' pages take memfds made ahead, and what is
// written to them still reaches the image at the last writer's close;
// a file whose page is evicted and made again gets a memfd of its own.
func TestSpares(t *testing.T) {
	testutil.NeedCmd(t, "mkfs.ext4", "debugfs", "e2fsck")
	fs, img := mount(t, Options{Writeback: -1})
	first := create(t, fs, "first")
	openFile(t, first, syscall.O_WRONLY).Close() // no spare yet: it asks for them
	waitFor(t, "the spares", func() bool { return len(fs.spares) == spareCount })

	const n = spareCount + spareCount/2 // more than are ready at once
	var nodes []*file
	for i := range n {
		nd := create(t, fs, fmt.Sprintf("f%02d", i))
		w := openFile(t, nd, syscall.O_WRONLY)
		if _, err := w.Write(bytes.Repeat([]byte{byte('a' + i%26)}, 1000+i)); err != nil {
			t.Fatal(err)
		}
		w.Close()
		nodes = append(nodes, nd)
	}
	spared := 0
	for _, nd := range nodes {
		p := fs.cached(nd.ino)
		if p == nil {
			t.Fatalf("inode %d: no page", nd.ino)
		}
		fs.mu.Lock()
		if p.wd >= 0 && fs.wd[p.wd] == p && p.hostIno != 0 {
			spared++
		}
		fs.mu.Unlock()
	}
	if spared < spareCount {
		t.Errorf("%d of %d new files' pages are watched spares, want at least %d", spared, n, spareCount)
	}
	for i, nd := range nodes {
		want := bytes.Repeat([]byte{byte('a' + i%26)}, 1000+i)
		waitFor(t, fmt.Sprintf("write-back of f%02d at close", i), func() bool { return bytes.Equal(imageContent(t, fs, nd.ino), want) })
	}
	if err := fs.Close(); err != nil {
		t.Fatal(err)
	}
	testutil.E2fsck(t, img)
	if out := debugfs(t, img, "cat /f47"); out != strings.Repeat("v", 1047) {
		t.Errorf("debugfs cat /f47: %q", out)
	}
}
