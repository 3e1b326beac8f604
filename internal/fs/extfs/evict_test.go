package extfs

import (
	"bytes"
	"fmt"
	"io"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/umltools/umltools/internal/testutil"
)

// TestEvict: past MaxPages the least recently opened clean pages go, but
// never one with a writer, one not yet written back, or one a guest holds;
// every file reads back whole after its page went.
func TestEvict(t *testing.T) {
	testutil.NeedCmd(t, "mkfs.ext4", "debugfs", "e2fsck")
	var fs *FS
	var heldIno atomic.Uint64 // the one memfd "a guest" holds
	var dropped atomic.Int64
	fs, img := mount(t, Options{Writeback: -1, MaxPages: 16,
		Held:    func() map[uint64]bool { return map[uint64]bool{heldIno.Load(): true} },
		Dropped: func(uint64) { dropped.Add(1) }})
	content := func(i int) []byte { return bytes.Repeat([]byte(fmt.Sprintf("file %d;", i)), 100+i) }
	var files []*file
	for i := range 64 {
		n := create(t, fs, fmt.Sprintf("f%02d", i))
		w := openFile(t, n, syscall.O_WRONLY)
		if _, err := w.Write(content(i)); err != nil {
			t.Fatal(err)
		}
		w.Close()
		files = append(files, n)
	}
	// The writers are gone, but only close notifications or a sync write
	// the pages back: until then none may go.
	if err := fs.Sync(); err != nil {
		t.Fatal(err)
	}
	// A page held by "a guest", one with a writer, one dirty by a
	// truncate through a writer that is still open.
	held := openFile(t, files[0], syscall.O_RDONLY)
	defer held.Close()
	p0 := fs.cached(files[0].ino)
	p0.mu.Lock()
	p0.identify()
	heldIno.Store(p0.hostIno)
	p0.mu.Unlock()
	writer := openFile(t, files[1], syscall.O_RDWR)
	defer writer.Close()
	if _, err := writer.WriteAt([]byte("CHANGED"), 0); err != nil {
		t.Fatal(err)
	}
	// Opening more files brings the cache over its bound.
	for i := 2; i < 64; i++ {
		f := openFile(t, files[i], syscall.O_RDONLY)
		f.Close()
	}
	if n := len(fs.pages()); n > 16 {
		t.Errorf("%d pages cached, bound 16", n)
	}
	if dropped.Load() == 0 {
		t.Error("Dropped was never told")
	}
	for i, what := range []string{"held", "written"} {
		if fs.cached(files[i].ino) == nil {
			t.Errorf("the %s page was evicted", what)
		}
	}
	// Every file reads back whole, from a new page where the old went.
	for i, n := range files {
		f := openFile(t, n, syscall.O_RDONLY)
		b, err := io.ReadAll(f)
		f.Close()
		want := content(i)
		if i == 1 {
			copy(want, "CHANGED")
		}
		if err != nil || !bytes.Equal(b, want) {
			t.Errorf("f%02d reads %d bytes (%v), want %d", i, len(b), err, len(want))
		}
	}
	writer.Close()
	if err := fs.Close(); err != nil {
		t.Fatal(err)
	}
	if got := debugfs(t, img, "cat /f01"); !bytes.Equal([]byte(got), func() []byte { w := content(1); copy(w, "CHANGED"); return w }()) {
		t.Errorf("f01 in the image: %.40q…", got)
	}
	testutil.E2fsck(t, img)
}
