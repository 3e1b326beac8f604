package devpts

import (
	"errors"
	"syscall"
	"testing"

	"github.com/umltools/umltools/internal/vfs"
)

type fakeSource []Pty

func (f fakeSource) Ptys() []Pty { return f }

func TestLookupAndList(t *testing.T) {
	fs := New(fakeSource{{N: 5, Uid: 1000, Gid: 5}, {N: 300, Gid: 5}})
	root := fs.Root()
	for _, tt := range []struct {
		name string
		rdev uint64
		mode uint32
		uid  uint32
		err  error
	}{
		{"ptmx", Ptmx, syscall.S_IFCHR, 0, nil},
		{"5", Dev(5), syscall.S_IFCHR | 0o620, 1000, nil},
		{"300", Dev(300), syscall.S_IFCHR | 0o620, 0, nil},
		{"6", 0, 0, 0, syscall.ENOENT},
		{"05", 0, 0, 0, syscall.ENOENT},
		{"x", 0, 0, 0, syscall.ENOENT},
	} {
		n, err := root.Lookup(nil, tt.name)
		if !errors.Is(err, tt.err) {
			t.Errorf("%s: error %v, want %v", tt.name, err, tt.err)
			continue
		}
		if err != nil {
			continue
		}
		a, _ := n.Attr()
		if a.Rdev != tt.rdev || a.Mode != tt.mode || a.Uid != tt.uid {
			t.Errorf("%s: rdev %x mode %o uid %d, want %x %o %d", tt.name, a.Rdev, a.Mode, a.Uid, tt.rdev, tt.mode, tt.uid)
		}
	}
	ents, err := root.ReadDir(nil)
	if err != nil || len(ents) != 3 || ents[0].Name != "ptmx" || ents[1].Name != "5" || ents[2].Name != "300" {
		t.Errorf("ReadDir: %v %v", ents, err)
	}
}

func TestNumber(t *testing.T) {
	for _, n := range []int{0, 5, 255, 256, 1000, 2047} {
		if got := Number(Dev(n)); got != n {
			t.Errorf("Number(Dev(%d)) = %d", n, got)
		}
	}
	for _, rdev := range []uint64{Ptmx, 0, vfs.Mkdev(Major+8, 0), vfs.Mkdev(Major-1, 255)} {
		if got := Number(rdev); got != -1 {
			t.Errorf("Number(%x) = %d, want -1", rdev, got)
		}
	}
}
