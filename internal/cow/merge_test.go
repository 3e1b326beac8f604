package cow

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/umltools/umltools/internal/testutil"
)

// fixture is a backing file and a COW file over it, with the expected
// merge result computed naively.
type fixture struct {
	dir, back, cow string
	want           []byte // merged whole sectors
}

func newFixture(t testing.TB, version int, sectors int64, tail int64, bits []byte, seed int64) *fixture {
	t.Helper()
	const mt = 1700000000
	dir := t.TempDir()
	size := sectors*512 + tail
	rnd := rand.New(rand.NewSource(seed))
	backing := make([]byte, size)
	rnd.Read(backing)
	for i := int64(0); i < sectors; i++ {
		if rnd.Intn(4) == 0 {
			clear(backing[i*512 : (i+1)*512])
		}
	}
	back := filepath.Join(dir, "backing.img")
	if err := os.WriteFile(back, backing, 0o644); err != nil {
		t.Fatal(err)
	}
	tm := time.Unix(mt, 0)
	os.Chtimes(back, tm, tm)
	want := append([]byte(nil), backing[:sectors*512]...)
	secs := map[int64][]byte{}
	nbits := sectors
	if version < 3 {
		nbits = min(nbits, 8*((size+511)/4096)) // sectors with a bit
	}
	for i := int64(0); i < nbits; i++ {
		if TestBit(bits, i) {
			b := make([]byte, 512)
			if rnd.Intn(3) != 0 {
				rnd.Read(b)
			}
			secs[i] = b
			copy(want[i*512:], b)
		}
	}
	cowPath := filepath.Join(dir, "x.cow")
	testutil.CraftCOW(t, cowPath, testutil.COWSpec{Version: version, Backing: back, Mtime: mt, Size: uint64(size), Sectors: secs})
	return &fixture{dir: dir, back: back, cow: cowPath, want: want}
}

func merge(t testing.TB, cowPath string, o MergeOptions) error {
	t.Helper()
	m, err := NewMerge(cowPath, o)
	if err != nil {
		return err
	}
	defer m.Close()
	_, err = m.Run(nil)
	return err
}

// TestResumeInterrupted proves -d crash safety: a merge stopped after k
// writes (the state a crash leaves: marker present, backing file partly
// written and its mtime changed) is finished by a plain re-run, with the
// same bytes as an uninterrupted merge.
func TestResumeInterrupted(t *testing.T) {
	bits := make([]byte, 256)
	rand.New(rand.NewSource(3)).Read(bits)
	fx := newFixture(t, 3, 2048, 0, bits, 3)
	orig := readFile(t, fx.back)
	for _, k := range []int{1, 2, 7, 50, 200} {
		b := filepath.Join(fx.dir, "copy.img")
		testutil.CopySparse(t, fx.back, b)
		err := merge(t, fx.cow, MergeOptions{Backing: b, abortAfter: k})
		if !errors.Is(err, errAborted) {
			t.Fatalf("k=%d: %v", k, err)
		}
		if _, err := os.Stat(MarkerPath(b)); err != nil {
			t.Fatalf("k=%d: no marker after the interruption", k)
		}
		if bytes.Equal(readFile(t, b), orig) {
			t.Fatalf("k=%d: nothing was written before the interruption", k)
		}
		m, err := NewMerge(fx.cow, MergeOptions{Backing: b})
		if err != nil {
			t.Fatalf("k=%d: re-run refused: %v", k, err)
		}
		if !m.Resumed() {
			t.Fatalf("k=%d: not reported as resumed", k)
		}
		if _, err := m.Run(nil); err != nil {
			t.Fatal(err)
		}
		m.Close()
		if !bytes.Equal(readFile(t, b), fx.want) {
			t.Fatalf("k=%d: resumed merge differs from an uninterrupted one", k)
		}
		if _, err := os.Stat(MarkerPath(b)); err == nil {
			t.Fatalf("k=%d: marker left after the merge", k)
		}
		os.Remove(b)
	}

	// Without the marker the changed mtime is refused, as by the C tool.
	b := filepath.Join(fx.dir, "copy.img")
	testutil.CopySparse(t, fx.back, b)
	merge(t, fx.cow, MergeOptions{Backing: b, abortAfter: 3})
	os.Remove(MarkerPath(b))
	if err := merge(t, fx.cow, MergeOptions{Backing: b}); !errors.Is(err, ErrMtimeMismatch) {
		t.Fatalf("no marker: %v", err)
	}
	// A marker left by another COW file does not let this one in.
	testutil.CopySparse(t, fx.back, b+"2")
	merge(t, fx.cow, MergeOptions{Backing: b + "2", abortAfter: 3})
	other := filepath.Join(fx.dir, "other.cow")
	testutil.CopySparse(t, fx.cow, other)
	if err := merge(t, other, MergeOptions{Backing: b + "2"}); !errors.Is(err, ErrMtimeMismatch) {
		t.Fatalf("other COW file: %v", err)
	}
}

// TestMergeForms merges fixtures of every version both ways and compares
// with the naive result, including a trailing partial sector (left
// unmerged, as by the C tool).
func TestMergeForms(t *testing.T) {
	for _, v := range []int{1, 2, 3} {
		bits := make([]byte, 64)
		rand.New(rand.NewSource(int64(v))).Read(bits)
		fx := newFixture(t, v, 512, 300, bits, int64(v))
		out := filepath.Join(fx.dir, "out.img")
		if err := merge(t, fx.cow, MergeOptions{Output: out}); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(readFile(t, out), fx.want) {
			t.Fatalf("v%d: new-file merge differs", v)
		}
		orig := readFile(t, fx.back)
		if err := merge(t, fx.cow, MergeOptions{}); err != nil {
			t.Fatal(err)
		}
		got := readFile(t, fx.back)
		if !bytes.Equal(got[:len(fx.want)], fx.want) || !bytes.Equal(got[len(fx.want):], orig[len(fx.want):]) {
			t.Fatalf("v%d: in-place merge differs", v)
		}
	}
}

// FuzzParseHeader: any bytes parse without panic; an accepted header has a
// sane layout and a v3 one survives Marshal.
func FuzzParseHeader(f *testing.F) {
	for _, v := range []int{1, 2, 3} {
		p := filepath.Join(f.TempDir(), "seed.cow")
		testutil.CraftCOW(f, p, testutil.COWSpec{Version: v, Backing: "/b.img", Mtime: 5, Size: 1 << 20})
		b := readFile(f, p)
		f.Add(b[:min(len(b), HeaderV3BrokenSize)])
	}
	f.Add([]byte("OOOM\x00\x00\x00\x03"))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := ParseHeader(b)
		if err != nil {
			var he *HeaderError
			if !errors.As(err, &he) {
				t.Fatalf("error of type %T", err)
			}
			return
		}
		if h.SectorSize <= 0 || h.BitmapOffset < HeaderV1Size || h.DataOffset < h.BitmapOffset+h.BitmapLen {
			t.Fatalf("bad layout %+v", h)
		}
		if h.Version == 3 && !h.Broken && h.BackingFile != "" {
			m, err := h.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			h2, err := ParseHeader(m)
			if err != nil || *h2 != *h {
				t.Fatalf("round trip %+v -> %+v %v", h, h2, err)
			}
		}
	})
}

// FuzzBitmap: any bitmap merges (both forms) and reads through File
// exactly like the naive per-sector rule.
func FuzzBitmap(f *testing.F) {
	f.Add(uint8(3), uint16(100), uint16(0), []byte{0xff, 0x01, 0x80})
	f.Add(uint8(1), uint16(64), uint16(511), []byte{0x3c})
	f.Add(uint8(2), uint16(9), uint16(3), []byte{0xaa, 0x55})
	f.Fuzz(func(t *testing.T, ver uint8, sectors, tail uint16, bits []byte) {
		v := int(ver%3) + 1
		n := int64(sectors%600) + 1
		fx := newFixture(t, v, n, int64(tail%512), bits, int64(sectors))
		out := filepath.Join(fx.dir, "out.img")
		if err := merge(t, fx.cow, MergeOptions{Output: out}); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(readFile(t, out), fx.want) {
			t.Fatalf("new-file merge differs")
		}
		if v == 3 {
			cf, err := Open(fx.cow, Options{ReadOnly: true})
			if err != nil {
				t.Fatal(err)
			}
			got := make([]byte, len(fx.want))
			if _, err := cf.ReadAt(got, 0); err != nil {
				t.Fatal(err)
			}
			cf.Close()
			if !bytes.Equal(got, fx.want) {
				t.Fatalf("File.ReadAt differs")
			}
		}
		if err := merge(t, fx.cow, MergeOptions{}); err != nil {
			t.Fatal(err)
		}
		if got := readFile(t, fx.back); !bytes.Equal(got[:len(fx.want)], fx.want) {
			t.Fatalf("in-place merge differs")
		}
	})
}

// TestMarkerUnwritable: an in-place merge into a backing file whose
// directory cannot take the marker still merges (as the C tool would),
// with a warning. The directory is made immutable, which stops root too.
func TestMarkerUnwritable(t *testing.T) {
	bits := []byte{0xf0, 0x0f, 0xff}
	fx := newFixture(t, 3, 64, 0, bits, 8)
	if out, err := exec.Command("chattr", "+i", fx.dir).CombinedOutput(); err != nil {
		testutil.Skip(t, "chattr +i not possible here: %v %s", err, out)
	}
	defer exec.Command("chattr", "-i", fx.dir).Run()
	var warned string
	err := merge(t, fx.cow, MergeOptions{Warnf: func(f string, a ...any) { warned = fmt.Sprintf(f, a...) }})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(warned, "cannot be resumed") {
		t.Fatalf("warning %q", warned)
	}
	if got := readFile(t, fx.back); !bytes.Equal(got, fx.want) {
		t.Fatalf("merge differs")
	}
}
