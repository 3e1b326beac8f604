package ext4

import (
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/umltools/umltools/internal/testutil"
)

// TestMinbase is acceptance 3: every file of a Debian minbase image (made
// by debootstrap, cached) reads back exactly as the host kernel reads the
// same image through a read-only loop mount: content sha256, mode, owner,
// nlink, rdev, symlink target and xattrs. Without root the reference is
// the debootstrap tree the image was made from.
func TestMinbase(t *testing.T) {
	img, tree := MinbaseImageForTest(t)
	var want map[string]rec
	tp := exactTimes
	if os.Geteuid() == 0 {
		mnt := loopMount(t, img, "ext4", "ro", "noload")
		want = walkHost(t, mnt, true)
	} else {
		want, tp = walkHost(t, tree, true), mkfsTimes
	}
	start := time.Now()
	got := walkImage(t, openImage(t, img), true)
	t.Logf("walked %d entries in %v", len(got), time.Since(start))
	regular := 0
	for _, r := range want {
		if r.mode&S_IFMT == S_IFREG {
			regular++
		}
	}
	if regular < 3000 {
		t.Fatalf("only %d regular files in the minbase reference: not a Debian tree?", regular)
	}
	compareTrees(t, want, got, tp)
}

// MinbaseImageForTest wraps testutil.MinbaseImage (cached image + tree).
func MinbaseImageForTest(t *testing.T) (string, string) {
	return testutil.MinbaseImage(t)
}

// TestBenchWalk is acceptance 6 (make bench): walk the minbase image and
// read every file, against debugfs rdump of the same image. Ours is timed
// twice: reading only, and extracting to a directory as rdump does.
func TestBenchWalk(t *testing.T) {
	testutil.NeedBench(t)
	debugfs := testutil.NeedCmd(t, "debugfs")[0]
	img, _ := testutil.MinbaseImage(t)
	// Warm the host page cache for both.
	exec.Command("cat", img).Run()
	fh, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	st, _ := fh.Stat()

	start := time.Now()
	f, err := Open(fh, st.Size(), nil)
	if err != nil {
		t.Fatal(err)
	}
	files, bytes := benchWalk(t, f, "")
	ours := time.Since(start)

	dout := ramDir(t)
	start = time.Now()
	if b, err := exec.Command(debugfs, "-R", "rdump / "+dout, img).CombinedOutput(); err != nil {
		t.Fatalf("debugfs rdump: %v\n%s", err, b)
	}
	c := time.Since(start)
	out := ramDir(t)
	start = time.Now()
	f2, _ := Open(fh, st.Size(), nil)
	benchWalk(t, f2, out)
	oursX := time.Since(start)

	t.Logf("%d files, %d MB", files, bytes>>20)
	t.Logf("BENCH: ext4 walk+read minbase: ours %.2fs (extracting like rdump %.2fs), debugfs rdump %.2fs, ratio %.1fx (extract %.1fx)",
		ours.Seconds(), oursX.Seconds(), c.Seconds(), c.Seconds()/ours.Seconds(), c.Seconds()/oursX.Seconds())
	if ours > 2*time.Second {
		t.Errorf("walk+read took %v, target under 2 s", ours)
	}
}

// ramDir is a temporary directory on tmpfs (/dev/shm) when there is one,
// so that extraction timings measure the readers, not disk writeback.
func ramDir(t *testing.T) string {
	d, err := os.MkdirTemp("/dev/shm", "ext4bench")
	if err != nil {
		return t.TempDir()
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// benchWalk reads every regular file; with out set it also writes each
// file, directory and symlink below out.
func benchWalk(t *testing.T, f *FS, out string) (files int, total int64) {
	buf := make([]byte, 1<<20)
	var walk func(dir uint32, path string)
	walk = func(dir uint32, path string) {
		var ents []DirEntry
		if err := f.ReadDir(dir, 0, func(e DirEntry) bool { ents = append(ents, e); return true }); err != nil {
			t.Fatal(err)
		}
		for _, e := range ents {
			if e.Name == "." || e.Name == ".." {
				continue
			}
			p := filepath.Join(path, e.Name)
			switch e.Type {
			case 4:
				if out != "" {
					os.Mkdir(filepath.Join(out, p), 0o755)
				}
				walk(e.Ino, p)
			case 10:
				l, err := f.Readlink(e.Ino)
				if err != nil {
					t.Fatal(err)
				}
				if out != "" {
					os.Symlink(l, filepath.Join(out, p))
				}
			case 8:
				fl, err := f.Open(e.Ino)
				if err != nil {
					t.Fatal(err)
				}
				var w *os.File
				if out != "" {
					if w, err = os.Create(filepath.Join(out, p)); err != nil {
						t.Fatal(err)
					}
				}
				for off := int64(0); ; {
					n, err := fl.ReadAt(buf, off)
					if w != nil {
						w.Write(buf[:n])
					}
					off += int64(n)
					total += int64(n)
					if err == io.EOF {
						break
					}
					if err != nil {
						t.Fatal(err)
					}
				}
				if w != nil {
					w.Close()
				}
				files++
			}
		}
	}
	walk(RootIno, "")
	return files, total
}
