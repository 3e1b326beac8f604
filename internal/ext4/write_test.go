package ext4

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/umltools/umltools/internal/testutil"
)

// fileDev is an image file as a Device.
type fileDev struct {
	*os.File
	discards int
	// dropAfter >0: writes after that many more are silently lost (a
	// power cut in the middle of a writeback).
	dropAfter int
}

func (d *fileDev) WriteAt(p []byte, off int64) (int, error) {
	if d.dropAfter > 0 {
		d.dropAfter--
		if d.dropAfter == 0 {
			d.dropAfter = -1
		}
	} else if d.dropAfter < 0 {
		return len(p), nil
	}
	return d.File.WriteAt(p, off)
}

func (d *fileDev) Flush() error { return d.Sync() }

func (d *fileDev) Discard(off, n int64) error {
	d.discards++
	return nil
}

// newImage makes an empty filesystem image of size with mke2fs opts.
func newImage(t testing.TB, size string, opts ...string) string {
	t.Helper()
	return testutil.MkfsImage(t, t.TempDir(), size, opts...)
}

func openRW(t testing.TB, img string, o *Options) (*FS, *fileDev) {
	t.Helper()
	fh, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fh.Close() })
	st, _ := fh.Stat()
	if o == nil {
		o = &Options{}
	}
	o.Writable = true
	dev := &fileDev{File: fh}
	f, err := OpenDevice(dev, st.Size(), o)
	if err != nil {
		t.Fatalf("OpenDevice %s: %v", img, err)
	}
	return f, dev
}

// fsck runs e2fsck with args and returns its exit code and output.
func fsck(t testing.TB, img string, args ...string) (int, string) {
	t.Helper()
	p := testutil.NeedCmd(t, "e2fsck")[0]
	out, err := exec.Command(p, append(args, img)...).CombinedOutput()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return ee.ExitCode(), string(out)
		}
		t.Fatalf("e2fsck: %v", err)
	}
	return 0, string(out)
}

func fsckClean(t testing.TB, img string) {
	t.Helper()
	rc, out := fsck(t, img, "-fn")
	if rc != 0 {
		t.Fatalf("e2fsck -fn %s: rc %d\n%s", img, rc, out)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	// Clean means no message at all: the version, five passes, summary.
	if len(lines) != 7 {
		t.Fatalf("e2fsck -fn %s: rc 0 but with messages:\n%s", img, out)
	}
	t.Logf("e2fsck -fn: rc 0: %s", lines[len(lines)-1])
}

func debugfs(t testing.TB, img, cmd string) string {
	t.Helper()
	p := testutil.NeedCmd(t, "debugfs")[0]
	out, err := exec.Command(p, "-R", cmd, img).Output()
	if err != nil {
		t.Fatalf("debugfs -R %q: %v", cmd, err)
	}
	return string(out)
}

// resolve walks an absolute path.
func resolve(t testing.TB, f *FS, p string) uint32 {
	t.Helper()
	ino := uint32(RootIno)
	for _, c := range strings.Split(strings.Trim(p, "/"), "/") {
		if c == "" {
			continue
		}
		n, err := f.Lookup(ino, c)
		if err != nil {
			t.Fatalf("lookup %s (%q): %v", p, c, err)
		}
		ino = n
	}
	return ino
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func must1[T any](t testing.TB) func(T, error) T {
	return func(v T, err error) T {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}

// TestWriteScenario is acceptance 1: mkdir -p, write, rename across
// directories, symlink, hard link, chmod, rm -r; then e2fsck is clean,
// debugfs reads the file, and the kernel mounts the image and shows the
// same tree.
func TestWriteScenario(t *testing.T) {
	img := newImage(t, "64M", "-t", "ext4", "-b", "4096")
	f, _ := openRW(t, img, nil)
	u := must1[uint32](t)
	tdir := u(f.Mkdir(RootIno, "t", 0o755, 0, 0))
	a := u(f.Mkdir(tdir, "a", 0o755, 0, 0))
	b := u(f.Mkdir(a, "b", 0o755, 0, 0))
	fi := u(f.Create(b, "f", 0o644, 0, 0))
	if n, err := f.WriteAt(fi, []byte("hi\n"), 0); err != nil || n != 3 {
		t.Fatalf("write: %d %v", n, err)
	}
	must(t, f.Rename(b, "f", tdir, "g", 0))
	u(f.Symlink(tdir, "l", "g", 0, 0))
	must(t, f.Link(fi, tdir, "h"))
	must(t, f.SetAttr(fi, &Attr{Mask: AttrMode, Mode: 0o600}))
	// rm -r /t/a
	must(t, f.Rmdir(a, "b"))
	must(t, f.Rmdir(tdir, "a"))
	// Errors as the kernel gives them.
	for _, c := range []struct {
		err  error
		want syscall.Errno
	}{
		{f.Rmdir(RootIno, "t"), syscall.ENOTEMPTY},
		{f.Unlink(RootIno, "t"), syscall.EISDIR},
		{f.Rmdir(tdir, "g"), syscall.ENOTDIR},
		{f.Unlink(tdir, "nope"), syscall.ENOENT},
		{second(f.Create(tdir, "g", 0o644, 0, 0)), syscall.EEXIST},
		{second(f.Create(tdir, strings.Repeat("n", 256), 0o644, 0, 0)), syscall.ENAMETOOLONG},
		{second(f.Create(fi, "x", 0o644, 0, 0)), syscall.ENOTDIR},
		{f.Rename(RootIno, "t", tdir, "inside", 0), syscall.EINVAL},
		{second(f.WriteAt(tdir, []byte("x"), 0)), syscall.EISDIR},
	} {
		if !errors.Is(c.err, c.want) {
			t.Errorf("got %v, want %v", c.err, c.want)
		}
	}
	got := make([]byte, 10)
	if n, _ := f.ReadAt(fi, got, 0); string(got[:n]) != "hi\n" {
		t.Errorf("read back %q", got[:n])
	}
	must(t, f.Close())
	fsckClean(t, img)
	if out := debugfs(t, img, "cat /t/g"); out != "hi\n" {
		t.Errorf("debugfs cat /t/g = %q", out)
	}
	r := openImage(t, img)
	in, _ := r.Inode(resolve(t, r, "/t/g"))
	if in.Nlink != 2 || in.Mode != S_IFREG|0o600 {
		t.Errorf("/t/g: nlink %d mode %o", in.Nlink, in.Mode)
	}
	if tgt, _ := r.Readlink(resolve(t, r, "/t/l")); tgt != "g" {
		t.Errorf("/t/l -> %q", tgt)
	}
	td, _ := r.Inode(resolve(t, r, "/t"))
	if td.Nlink != 2 {
		t.Errorf("/t nlink %d after rm -r a", td.Nlink)
	}
	if os.Geteuid() == 0 {
		mnt := loopMount(t, img, "ext4", "ro")
		b, err := os.ReadFile(filepath.Join(mnt, "t/h"))
		if err != nil || string(b) != "hi\n" {
			t.Errorf("kernel reads /t/h: %q %v", b, err)
		}
		if l, _ := os.Readlink(filepath.Join(mnt, "t/l")); l != "g" {
			t.Errorf("kernel readlink %q", l)
		}
	}
}

func second[T any](_ T, err error) error { return err }

// TestBigDirAndFile is acceptance 2: a 5,000-entry directory becomes an
// htree; half the names go, the rest are renamed; a 200 MiB file is
// truncated to 1 MiB and extended with a hole; e2fsck is clean and the
// host sees the same contents.
func TestBigDirAndFile(t *testing.T) {
	start := time.Now()
	img := newImage(t, "512M", "-t", "ext4")
	f, _ := openRW(t, img, nil)
	u := must1[uint32](t)
	wr := must1[int](t)
	d := u(f.Mkdir(RootIno, "d", 0o755, 0, 0))
	const n = 5000
	for i := 0; i < n; i++ {
		ino := u(f.Create(d, fmt.Sprintf("file-%05d", i), 0o644, 0, 0))
		if i%500 == 1 {
			wr(f.WriteAt(ino, []byte(fmt.Sprintf("content %d\n", i)), 0))
		}
	}
	din, _ := f.Inode(d)
	if din.Flags&flagIndex == 0 {
		t.Fatalf("5,000-entry directory is not indexed")
	}
	for i := 0; i < n; i += 2 {
		must(t, f.Unlink(d, fmt.Sprintf("file-%05d", i)))
	}
	for i := 1; i < n; i += 2 {
		must(t, f.Rename(d, fmt.Sprintf("file-%05d", i), d, fmt.Sprintf("renamed-%05d", i), 0))
	}
	tDir := time.Since(start)
	big := u(f.Create(RootIno, "big", 0o644, 0, 0))
	chunk := make([]byte, 1<<20)
	h := sha256.New()
	for i := 0; i < 200; i++ {
		for j := range chunk {
			chunk[j] = byte(i*7 + j>>12)
		}
		wr(f.WriteAt(big, chunk, int64(i)<<20))
		if i == 0 {
			h.Write(chunk)
		}
	}
	must(t, f.Truncate(big, 1<<20))
	must(t, f.Truncate(big, 300<<20))
	tail := []byte("the end\n")
	wr(f.WriteAt(big, tail, 300<<20-int64(len(tail))))
	must(t, f.Close())
	t.Logf("5,000-file directory: %v; whole test before e2fsck: %v", tDir, time.Since(start))
	fsckClean(t, img)
	if out := debugfs(t, img, "htree /d"); !strings.Contains(out, "Root node dump") {
		t.Errorf("debugfs htree /d:\n%.500s", out)
	}
	// Expected big-file contents: the first MiB, a hole, the tail.
	zero := make([]byte, 1<<20)
	for i := 1; i < 300; i++ {
		if i == 299 {
			z := make([]byte, 1<<20)
			copy(z[len(z)-len(tail):], tail)
			h.Write(z)
			continue
		}
		h.Write(zero)
	}
	want := hex.EncodeToString(h.Sum(nil))
	out := filepath.Join(t.TempDir(), "big")
	debugfs(t, img, "dump /big "+out)
	if got := sha256File(t, out); got != want {
		t.Errorf("debugfs dump of /big: sha256 %s, want %s", got, want)
	}
	r := openImage(t, img)
	var names int
	r.ReadDir(resolve(t, r, "/d"), 0, func(e DirEntry) bool {
		if strings.HasPrefix(e.Name, "renamed-") {
			names++
		} else if e.Name != "." && e.Name != ".." {
			t.Errorf("unexpected entry %q", e.Name)
		}
		return true
	})
	if names != n/2 {
		t.Errorf("%d renamed entries, want %d", names, n/2)
	}
	if os.Geteuid() == 0 {
		mnt := loopMount(t, img, "ext4", "ro")
		if got := sha256File(t, filepath.Join(mnt, "big")); got != want {
			t.Errorf("kernel reads /big: sha256 %s, want %s", got, want)
		}
		b, _ := os.ReadFile(filepath.Join(mnt, "d/renamed-00501"))
		if string(b) != "content 501\n" {
			t.Errorf("renamed-00501: %q", b)
		}
		ents, _ := os.ReadDir(filepath.Join(mnt, "d"))
		if len(ents) != n/2 {
			t.Errorf("kernel lists %d entries in /d", len(ents))
		}
	}
	t.Logf("total %v", time.Since(start))
}

func sha256File(t testing.TB, p string) string {
	t.Helper()
	fh, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	h := sha256.New()
	io.Copy(h, fh)
	return hex.EncodeToString(h.Sum(nil))
}

var _ = bytes.Equal
