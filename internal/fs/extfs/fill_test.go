package extfs

import (
	"bytes"
	"io"
	"math/rand"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/umltools/umltools/internal/testutil"
)

// hostDev is a device that offers its image file, as a raw ubd does, so
// that pages are filled with sendfile from the image's extents.
type hostDev struct{ fileDev }

func (d hostDev) HostFile() *os.File { return d.File }

// TestFill: both ways of filling a page (sendfile from the image's
// extents, and reads through the driver) give every file's exact bytes:
// small and large, sparse (holes inside and at the end), empty, inline;
// and a page filled either way is written back right after a change.
func TestFill(t *testing.T) {
	testutil.NeedCmd(t, "mkfs.ext4", "e2fsck")
	src := t.TempDir()
	rng := rand.New(rand.NewSource(1))
	want := map[string][]byte{}
	put := func(name string, b []byte, size int64) {
		f, err := os.Create(filepath.Join(src, name))
		if err != nil {
			t.Fatal(err)
		}
		for off := 0; off < len(b); off += 4096 {
			chunk := b[off:min(off+4096, len(b))]
			if !isZero(chunk) { // leave zero blocks as holes
				if _, err := f.WriteAt(chunk, int64(off)); err != nil {
					t.Fatal(err)
				}
			}
		}
		if err := f.Truncate(size); err != nil {
			t.Fatal(err)
		}
		f.Close()
		full := make([]byte, size)
		copy(full, b)
		want[name] = full
	}
	random := func(n int) []byte { b := make([]byte, n); rng.Read(b); return b }
	put("small", random(100), 100)
	put("big", random(3<<20+17), 3<<20+17)
	sparse := random(1 << 20)
	clear(sparse[100<<10 : 600<<10])
	put("sparse", sparse, 5<<20) // a hole inside and 4 MiB of hole at the end
	put("empty", nil, 0)
	put("hole", nil, 1<<20)
	img := testutil.MkfsImage(t, src, "64M", "-t", "ext4")
	for _, direct := range []bool{true, false} {
		f, err := os.OpenFile(img, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		st, _ := f.Stat()
		var dev interface {
			ReadAt([]byte, int64) (int, error)
			WriteAt([]byte, int64) (int, error)
			Flush() error
		} = fileDev{f}
		if direct {
			dev = hostDev{fileDev{f}}
		}
		fs, err := Mount(dev, st.Size(), Options{Writeback: -1, Logf: t.Logf})
		if err != nil {
			t.Fatal(err)
		}
		for name, w := range want {
			n, err := fs.Root().(*dir).Lookup(nil, name)
			if err != nil {
				t.Fatal(err)
			}
			r := openFile(t, n.(*file), syscall.O_RDONLY)
			got, err := io.ReadAll(r)
			r.Close()
			if err != nil || !bytes.Equal(got, w) {
				t.Errorf("direct=%v: %s reads %d bytes (%v), want %d, equal %v", direct, name, len(got), err, len(w), bytes.Equal(got, w))
			}
		}
		// A write after the fill is written back, with the rest intact.
		n, _ := fs.Root().(*dir).Lookup(nil, "sparse")
		rw := openFile(t, n.(*file), syscall.O_RDWR)
		if _, err := rw.WriteAt([]byte("X"), 3<<20); err != nil {
			t.Fatal(err)
		}
		rw.Close()
		want["sparse"][3<<20] = 'X'
		if err := fs.Close(); err != nil {
			t.Fatal(err)
		}
		f.Close()
		if got := debugfs(t, img, "cat /sparse"); got != string(want["sparse"]) {
			t.Errorf("direct=%v: /sparse in the image differs after the write (%d bytes)", direct, len(got))
		}
		testutil.E2fsck(t, img)
	}
}
