package memfd

import (
	"bytes"
	"errors"
	"io"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// zeroReader is a ReaderAt whose content is zeros except for data at off.
type zeroReader struct {
	size int64
	off  int64
	data []byte
}

func (z zeroReader) ReadAt(p []byte, off int64) (int, error) {
	if off >= z.size {
		return 0, io.EOF
	}
	n := len(p)
	if int64(n) > z.size-off {
		n = int(z.size - off)
	}
	clear(p[:n])
	for i := 0; i < n; i++ {
		if j := off + int64(i) - z.off; j >= 0 && j < int64(len(z.data)) {
			p[i] = z.data[j]
		}
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func TestFillKeepsHoles(t *testing.T) {
	f, err := New("sparse")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	src := zeroReader{size: 64 << 20, off: 40 << 20, data: []byte("middle")}
	if err := Fill(f, src, src.size); err != nil {
		t.Fatal(err)
	}
	var st syscall.Stat_t
	syscall.Fstat(int(f.Fd()), &st)
	if st.Size != src.size {
		t.Errorf("size %d, want %d", st.Size, src.size)
	}
	if st.Blocks*512 > 4<<20 {
		t.Errorf("%d bytes allocated for a 64 MiB file with 6 bytes of data: holes were written", st.Blocks*512)
	}
	got := make([]byte, 6)
	f.ReadAt(got, 40<<20)
	if string(got) != "middle" {
		t.Errorf("data %q", got)
	}
}

func TestReopen(t *testing.T) {
	r, err := FromBytes("hello", []byte("hello world"))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := r.Write([]byte("x")); !errors.Is(err, syscall.EBADF) {
		t.Errorf("write to a read-only memfd: %v", err)
	}
	a, err := Reopen(r, syscall.O_RDONLY)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b := make([]byte, 5)
	io.ReadFull(a, b)
	rest, _ := io.ReadAll(r)
	if string(b) != "hello" || string(rest) != "hello world" {
		t.Errorf("offsets shared: %q, %q", b, rest)
	}
	w, err := New("rw")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	ap, err := Reopen(w, syscall.O_WRONLY|syscall.O_APPEND|syscall.O_TRUNC|syscall.O_CREAT)
	if err != nil {
		t.Fatal(err)
	}
	ap.Write([]byte("one"))
	ap.WriteAt([]byte("X"), 0) // O_APPEND forbids WriteAt in Go: an error, no write
	ap.Close()
	all, _ := io.ReadAll(w)
	if !bytes.Equal(all, []byte("one")) {
		t.Errorf("content %q", all)
	}
	// The status flags a guest asked for are the new file's, O_NONBLOCK
	// included (it is set after os.NewFile).
	for _, fl := range []int{syscall.O_RDWR, syscall.O_WRONLY | syscall.O_NONBLOCK, syscall.O_RDONLY | syscall.O_NONBLOCK | syscall.O_APPEND} {
		g, err := Reopen(w, fl)
		if err != nil {
			t.Fatal(err)
		}
		got, err := unix.FcntlInt(g.Fd(), unix.F_GETFL, 0)
		g.Close()
		const mask = syscall.O_ACCMODE | syscall.O_NONBLOCK | syscall.O_APPEND
		if err != nil || got&mask != fl {
			t.Errorf("Reopen(%#o): F_GETFL %#o (%v), want %#o", fl, got&mask, err, fl)
		}
	}
}
