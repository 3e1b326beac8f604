package ext4

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"

	"github.com/umltools/umltools/internal/testutil"
)

// TestConcurrentReaders walks one FS from several goroutines at once with
// a tiny block cache (constant eviction) and expects every walk to equal
// a sequential one. Run with -race to check the locking.
func TestConcurrentReaders(t *testing.T) {
	src := filepath.Join(runtime.GOROOT(), "src", "encoding")
	if _, err := os.Stat(src); err != nil {
		testutil.Skip(t, "no Go source tree at %s", src)
	}
	img := testutil.MkfsImage(t, src, "32M", "-t", "ext4", "-b", "1024")
	fh, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	st, _ := fh.Stat()
	f, err := Open(fh, st.Size(), &Options{CacheBytes: 16 << 10})
	if err != nil {
		t.Fatal(err)
	}
	want := walkImage(t, f, true)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got := walkImage(t, f, true)
			if len(got) != len(want) {
				errs <- fmt.Errorf("walk found %d entries, want %d", len(got), len(want))
				return
			}
			for p, r := range want {
				if got[p] != r {
					errs <- fmt.Errorf("%s: %v, want %v", p, got[p], r)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
