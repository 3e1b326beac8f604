package extfs

import (
	"bytes"
	"fmt"
	"io"
	"syscall"
	"testing"

	"github.com/umltools/umltools/internal/testutil"
)

// TestReadahead: two opens in a row of neighbouring files start filling
// the files after them, whose pages then read right; a random open, or
// opens while the filesystem changes, start nothing; and a page filled
// ahead for an inode that was freed meanwhile is never cached.
func TestReadahead(t *testing.T) {
	testutil.NeedCmd(t, "mkfs.ext4", "e2fsck")
	fs, img := mount(t, Options{Writeback: -1})
	var files []*file
	content := func(i int) []byte { return bytes.Repeat([]byte(fmt.Sprintf("%d,", i)), 1000+i) }
	for i := range 60 {
		n := create(t, fs, fmt.Sprintf("f%02d", i))
		w := openFile(t, n, syscall.O_WRONLY)
		w.Write(content(i))
		w.Close()
		files = append(files, n)
	}
	if err := fs.Sync(); err != nil {
		t.Fatal(err)
	}
	// Start cold: drop every page (nothing holds them).
	for _, p := range fs.pages() {
		p.mu.Lock()
		p.evicted = true
		p.mu.Unlock()
		fs.drop(p)
	}
	root := fs.Root().(*dir)
	open := func(i int) {
		r := openFile(t, files[i], syscall.O_RDONLY)
		r.Close()
		root.Readahead(fmt.Sprintf("f%02d", i))
	}
	open(40) // a random open: no readahead
	open(7)
	waitIdle := func() {
		waitFor(t, "the readahead to finish", func() bool {
			fs.ra.mu.Lock()
			defer fs.ra.mu.Unlock()
			return !fs.ra.busy
		})
	}
	waitIdle()
	if n := len(fs.pages()); n != 2 {
		t.Fatalf("%d pages after two unrelated opens, want 2 (no readahead)", n)
	}
	open(8) // sequential: f09… are filled ahead
	waitIdle()
	if n := len(fs.pages()); n < 3+raFiles/2 {
		t.Fatalf("%d pages after a sequential open, want the next files filled ahead", n)
	}
	for i := 9; i < 9+raFiles/2; i++ {
		if fs.cached(files[i].ino) == nil {
			t.Errorf("f%02d was not filled ahead", i)
		}
		r := openFile(t, files[i], syscall.O_RDONLY)
		b, err := io.ReadAll(r)
		r.Close()
		if err != nil || !bytes.Equal(b, content(i)) {
			t.Errorf("f%02d filled ahead reads %d bytes (%v), want %d", i, len(b), err, len(content(i)))
		}
	}
	// A file bigger than a readahead batch is left for its own open.
	big := create(t, fs, "big")
	w := openFile(t, big, syscall.O_WRONLY)
	if _, err := w.Write(make([]byte, raBytes+1)); err != nil {
		t.Fatal(err)
	}
	w.Close()
	if err := fs.SyncFile(big.ino, false); err != nil {
		t.Fatal(err)
	}
	for _, p := range fs.pages() {
		if p.ino == big.ino {
			p.mu.Lock()
			p.evicted = true
			p.mu.Unlock()
			fs.drop(p)
		}
	}
	if n, _ := fs.fillPage(big.ino, fs.gen.Load()); n != 0 || fs.cached(big.ino) != nil {
		t.Errorf("a %d-byte file was filled ahead", raBytes+1)
	}
	// A page filled ahead from an inode freed meanwhile is not cached,
	// even when the generation it started at is current (the inode is
	// checked itself).
	ino := files[59].ino
	if err := root.Unlink("f59"); err != nil {
		t.Fatal(err)
	}
	if n, _ := fs.fillPage(ino, fs.gen.Load()); n != 0 || fs.cached(ino) != nil {
		t.Errorf("a page of the unlinked f59 was cached by readahead")
	}
	if err := fs.Close(); err != nil {
		t.Fatal(err)
	}
	testutil.E2fsck(t, img)
}
