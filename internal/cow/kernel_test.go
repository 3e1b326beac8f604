package cow

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/umltools/umltools/internal/testutil"
)

// TestKernelWording checks MismatchError.KernelMessage against the C
// kernel's own log line for a COW file whose backing file was touched, and
// that the kernel reads a COW file written through File.
func TestKernelWording(t *testing.T) {
	dir := t.TempDir()
	back := newBacking(t, dir, 1<<20, 11)
	tm := time.Unix(1700000000, 0)
	os.Chtimes(back, tm, tm)
	stale := filepath.Join(dir, "stale.cow")
	if _, err := Create(stale, back, false); err != nil {
		t.Fatal(err)
	}
	good := filepath.Join(dir, "good.cow")
	if _, err := Create(good, back, false); err != nil {
		t.Fatal(err)
	}
	f, err := Open(good, Options{Lock: true})
	if err != nil {
		t.Fatal(err)
	}
	msg := []byte("written-through-cow.File")
	if _, err := f.WriteAt(msg, 300000); err != nil {
		t.Fatal(err)
	}
	f.Close()
	// Make stale.cow's header disagree: set the backing file's mtime in
	// its header to another value.
	h, _ := ParseHeader(readFile(t, stale))
	h.Mtime = 1600000000
	sf, _ := os.OpenFile(stale, os.O_RDWR, 0)
	WriteHeader(sf, h)
	sf.Close()
	want := (&MismatchError{What: "mtime", Header: 1600000000, Actual: 1700000000}).KernelMessage()

	u := testutil.StartUML(t, testutil.UMLOptions{
		Init:  "dd if=/dev/ubdb bs=1 skip=300000 count=24 2>/dev/null; echo; echo INIT-DONE; echo o > /proc/sysrq-trigger\n",
		Extra: []string{"ubd1=" + good, "ubd2=" + stale},
	})
	u.WaitOutput(t, want, 60*time.Second)
	u.WaitOutput(t, string(msg), 60*time.Second)
	u.WaitOutput(t, "INIT-DONE", 60*time.Second)
}
