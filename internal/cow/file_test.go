package cow

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/umltools/umltools/internal/testutil"
)

func readFile(t testing.TB, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// newBacking writes size bytes of pseudo-random data (with a hole) to
// dir/backing.img.
func newBacking(t testing.TB, dir string, size int64, seed int64) string {
	t.Helper()
	p := filepath.Join(dir, "backing.img")
	b := make([]byte, size)
	rand.New(rand.NewSource(seed)).Read(b)
	if len(b) > 64<<10 {
		clear(b[16<<10 : 48<<10])
	}
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	for off := int64(0); off < size; off += 4096 {
		end := min(off+4096, size)
		if !bytes.Equal(b[off:end], make([]byte, end-off)) {
			f.WriteAt(b[off:end], off)
		}
	}
	f.Truncate(size)
	f.Close()
	return p
}

// TestFileModel writes random ranges (aligned or not) through a File and
// checks every read, a reopen, and a merge against a plain byte slice.
func TestFileModel(t *testing.T) {
	for _, size := range []int64{1 << 20, 100*512 + 77, 3000} {
		dir := t.TempDir()
		back := newBacking(t, dir, size, size)
		model := readFile(t, back)
		devSize := roundUp(size, 512)
		model = append(model, make([]byte, devSize-size)...)
		cowPath := filepath.Join(dir, "x.cow")
		if _, err := Create(cowPath, back, false); err != nil {
			t.Fatal(err)
		}
		f, err := Open(cowPath, Options{Lock: true})
		if err != nil {
			t.Fatal(err)
		}
		if f.Size() != devSize {
			t.Fatalf("Size %d, want %d", f.Size(), devSize)
		}
		rnd := rand.New(rand.NewSource(1))
		for i := 0; i < 300; i++ {
			off := rnd.Int63n(devSize)
			n := rnd.Int63n(min(devSize-off, 5000)) + 1
			if i%3 == 0 {
				off = off / 512 * 512
				n = min((n+511)/512*512, devSize-off)
			}
			p := make([]byte, n)
			rnd.Read(p)
			if i%5 == 0 {
				clear(p)
			}
			if w, err := f.WriteAt(p, off); err != nil || int64(w) != n {
				t.Fatalf("WriteAt(%d, %d): %d %v", n, off, w, err)
			}
			copy(model[off:], p)
			roff := rnd.Int63n(devSize)
			rn := rnd.Int63n(devSize-roff) + 1
			got := make([]byte, rn)
			if _, err := f.ReadAt(got, roff); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, model[roff:roff+rn]) {
				t.Fatalf("size %d step %d: ReadAt(%d, %d) differs from the model", size, i, rn, roff)
			}
		}
		if _, err := f.ReadAt(make([]byte, 10), devSize-5); err != io.EOF {
			t.Errorf("read past the end: %v, want io.EOF", err)
		}
		if _, err := f.WriteAt(make([]byte, 10), devSize-5); err == nil {
			t.Errorf("write past the end accepted")
		}
		if err := f.Sync(); err != nil {
			t.Fatal(err)
		}
		f.Close()
		g, err := Open(cowPath, Options{ReadOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		all := make([]byte, devSize)
		if _, err := g.ReadAt(all, 0); err != nil {
			t.Fatal(err)
		}
		g.Close()
		if !bytes.Equal(all, model) {
			t.Fatalf("size %d: reopened disk differs from the model", size)
		}
		if _, err := g.WriteAt([]byte{1}, 0); !errors.Is(err, ErrReadOnly) {
			t.Errorf("write on read-only: %v", err)
		}
		out := filepath.Join(dir, "merged.img")
		m, err := NewMerge(cowPath, MergeOptions{Output: out})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := m.Run(nil); err != nil {
			t.Fatal(err)
		}
		m.Close()
		whole := size / 512 * 512 // uml_moo drops a trailing partial sector
		if got := readFile(t, out); !bytes.Equal(got, model[:whole]) {
			t.Fatalf("size %d: merge differs from the model (%d bytes, want %d)", size, len(got), whole)
		}
	}
}

// TestBitmapUnits checks the on-disk bitmap update unit: two 64-bit words
// at BitmapOffset + 8*floor(sector/64), one word back at the bitmap's end;
// nothing else of the bitmap area is written.
func TestBitmapUnits(t *testing.T) {
	dir := t.TempDir()
	back := newBacking(t, dir, 1<<20, 5) // 2048 sectors: 32 words
	cowPath := filepath.Join(dir, "x.cow")
	h, err := Create(cowPath, back, false)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		sector int64
		unit   int64 // first word written
	}{{0, 0}, {70, 1}, {64*30 + 5, 30}, {64*31 + 1, 30}, {2047, 30}} {
		f, err := Open(cowPath, Options{})
		if err != nil {
			t.Fatal(err)
		}
		// Scribble on the on-disk bitmap behind File's back: bytes the
		// unit covers are overwritten from memory, others survive.
		raw, _ := os.OpenFile(cowPath, os.O_RDWR, 0)
		junk := bytes.Repeat([]byte{0xEE}, int(h.BitmapLen))
		raw.WriteAt(junk, h.BitmapOffset)
		if _, err := f.WriteAt(make([]byte, 512), c.sector*512); err != nil {
			t.Fatal(err)
		}
		disk := make([]byte, h.BitmapLen)
		raw.ReadAt(disk, h.BitmapOffset)
		for i := range disk {
			in := int64(i) >= 8*c.unit && int64(i) < 8*c.unit+16
			if !in && disk[i] != 0xEE {
				t.Fatalf("sector %d: byte %d outside the unit written", c.sector, i)
			}
			if in && disk[i] == 0xEE {
				t.Fatalf("sector %d: byte %d of the unit not written", c.sector, i)
			}
		}
		if !TestBit(disk, c.sector) {
			t.Fatalf("sector %d: bit not set on disk", c.sector)
		}
		// Restore a clean bitmap for the next case.
		raw.WriteAt(make([]byte, h.BitmapLen), h.BitmapOffset)
		raw.Close()
		f.Close()
	}
}

// lockedBy starts a helper process (this test binary) that holds a write
// lock on path, as a running UML does, until the test ends.
func lockedBy(t *testing.T, path string) int {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestLockHelper$")
	cmd.Env = append(os.Environ(), "COW_LOCK_HELPER="+path)
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stdin.Close(); cmd.Wait() })
	line, _ := bufio.NewReader(stdout).ReadString('\n')
	if line != "locked\n" {
		t.Fatalf("lock helper: %q", line)
	}
	return cmd.Process.Pid
}

// TestLockHelper is the helper process of lockedBy.
func TestLockHelper(t *testing.T) {
	p := os.Getenv("COW_LOCK_HELPER")
	if p == "" {
		return
	}
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := lockFile(f, p, true); err != nil {
		t.Fatal(err)
	}
	os.Stdout.WriteString("locked\n")
	io.Copy(io.Discard, os.Stdin)
}

func TestLocking(t *testing.T) {
	dir := t.TempDir()
	back := newBacking(t, dir, 64<<10, 9)
	cowPath := filepath.Join(dir, "x.cow")
	if _, err := Create(cowPath, back, false); err != nil {
		t.Fatal(err)
	}
	pid := lockedBy(t, cowPath)
	var le *LockedError
	if _, err := Open(cowPath, Options{Lock: true}); !errors.As(err, &le) || le.Pid != pid {
		t.Fatalf("Open of a locked COW file: %v (helper pid %d)", err, pid)
	}
	if _, err := NewMerge(cowPath, MergeOptions{Output: filepath.Join(dir, "o")}); !errors.As(err, &le) {
		t.Fatalf("merge of a locked COW file: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "o")); err == nil {
		t.Fatalf("output created")
	}
	f, err := Open(cowPath, Options{ReadOnly: true})
	if err != nil {
		t.Fatalf("unlocked open: %v", err)
	}
	f.Close()
}

func TestOpenChecksBacking(t *testing.T) {
	dir := t.TempDir()
	back := newBacking(t, dir, 64<<10, 9)
	cowPath := filepath.Join(dir, "x.cow")
	if _, err := Create(cowPath, back, false); err != nil {
		t.Fatal(err)
	}
	if _, err := Create(cowPath, back, false); !errors.Is(err, os.ErrExist) {
		t.Fatalf("Create over an existing file: %v", err)
	}
	other := filepath.Join(dir, "other.img")
	os.WriteFile(other, make([]byte, 64<<10+1), 0o644)
	h := mustOpenHeader(t, cowPath)
	var me *MismatchError
	if err := CheckBacking(h, other); !errors.Is(err, ErrSizeMismatch) || !errors.As(err, &me) {
		t.Fatalf("size: %v", err)
	}
	if me.KernelMessage() != "Size mismatch (65536 vs 65537) of COW header vs backing file" {
		t.Errorf("kernel wording: %q", me.KernelMessage())
	}
	// A requested backing file that does not match: the kernel logs the
	// mismatch and keeps the header's file.
	var log []string
	logf := func(f string, a ...any) { log = append(log, fmt.Sprintf(f, a...)) }
	f, err := Open(cowPath, Options{Backing: other, Switch: true, Logf: logf})
	if err != nil || f.BackingFile() != back {
		t.Fatalf("non-matching request: %v", err)
	}
	f.Close()
	if len(log) != 1 || log[0] != fmt.Sprintf("Backing file mismatch - \"%s\" requested, \"%s\" specified in COW header of \"%s\"", other, back, cowPath) {
		t.Fatalf("log %q", log)
	}
	// A matching copy elsewhere: switch, and rewrite the header.
	moved := filepath.Join(dir, "moved.img")
	testutil.CopySparse(t, back, moved)
	log = nil
	if f, err = Open(cowPath, Options{Backing: moved, Switch: true, Logf: logf}); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if len(log) != 2 || log[1] != "Switching backing file to '"+moved+"'" {
		t.Fatalf("log %q", log)
	}
	if h2 := mustOpenHeader(t, cowPath); h2.BackingFile != moved || h2.Mtime != h.Mtime || h2.DataOffset != h.DataOffset {
		t.Fatalf("header after the switch: %+v", h2)
	}
	// The same file under another name is no switch.
	log = nil
	os.Symlink(moved, filepath.Join(dir, "alias.img"))
	if f, err = Open(cowPath, Options{Backing: filepath.Join(dir, "alias.img"), Logf: logf}); err != nil || len(log) != 0 || f.BackingFile() != moved {
		t.Fatalf("alias: %v %q", err, log)
	}
	f.Close()
	back = moved
	tm := time.Unix(1600000000, 0)
	os.Chtimes(back, tm, tm)
	if _, err := Open(cowPath, Options{}); !errors.Is(err, ErrMtimeMismatch) {
		t.Fatalf("mtime: %v", err)
	}
	if _, err := Open(filepath.Join(dir, "none.cow"), Options{}); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing: %v", err)
	}
}

func mustOpenHeader(t *testing.T, p string) *Header {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h, err := ReadHeader(f)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func TestAbsolutize(t *testing.T) {
	dir, _ := filepath.EvalSymlinks(t.TempDir())
	os.Mkdir(filepath.Join(dir, "real"), 0o755)
	os.Symlink(filepath.Join(dir, "real"), filepath.Join(dir, "link"))
	wd, _ := os.Getwd()
	defer os.Chdir(wd)
	os.Chdir(filepath.Join(dir, "link"))
	for in, want := range map[string]string{
		"x.img":                  dir + "/real/x.img", // physical cwd, as getcwd
		"./x.img":                dir + "/real/x.img",
		dir + "/link/x.img":      dir + "/real/x.img",
		dir + "/link/../x.img":   dir + "/x.img",
		"/x.img":                 "/x.img", // the C code fails here
		dir + "/real/":           dir + "/real/",
		dir + "/link/lnk-as-is":  dir + "/real/lnk-as-is",
		"../real/sub/../../x.im": "",
	} {
		got, err := Absolutize(in)
		if want == "" {
			if err == nil {
				t.Errorf("%s: want an error, got %q", in, got)
			}
			continue
		}
		if err != nil || got != want {
			t.Errorf("Absolutize(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}

// TestFileConcurrent hammers one File from several goroutines (run with
// -race); each goroutine owns its own sectors, so the final disk is known.
func TestFileConcurrent(t *testing.T) {
	dir := t.TempDir()
	back := newBacking(t, dir, 1<<20, 21)
	cowPath := filepath.Join(dir, "x.cow")
	if _, err := Create(cowPath, back, false); err != nil {
		t.Fatal(err)
	}
	f, err := Open(cowPath, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	const workers = 4
	done := make(chan error, workers)
	for w := 0; w < workers; w++ {
		go func(w int) {
			buf := bytes.Repeat([]byte{byte(w + 1)}, 1000)
			got := make([]byte, 1000)
			for i := 0; i < 200; i++ {
				off := int64((i*workers+w)%2048) * 512
				if off+1000 > f.Size() {
					continue
				}
				if (off/512)%workers != int64(w) {
					continue
				}
				if _, err := f.WriteAt(buf[:512], off); err != nil {
					done <- err
					return
				}
				if _, err := f.ReadAt(got[:512], off); err != nil || !bytes.Equal(got[:512], buf[:512]) {
					done <- fmt.Errorf("worker %d: sector %d reads back wrong (%v)", w, off/512, err)
					return
				}
			}
			done <- nil
		}(w)
	}
	for w := 0; w < workers; w++ {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
}
