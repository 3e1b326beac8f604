package vfs_test

import (
	"errors"
	"strings"
	"syscall"
	"testing"

	"github.com/umltools/umltools/internal/fs/tmpfs"
	"github.com/umltools/umltools/internal/vfs"
)

// tree builds:
//
//	/a/b/f          file
//	/a/l  -> b      relative link
//	/abs  -> /a/b   absolute link
//	/loop -> loop
//	/dang -> nowhere
//	/m              mount point of a second tmpfs holding /m/inner
func tree(t *testing.T) *vfs.VFS {
	t.Helper()
	fs := tmpfs.New("tmpfs", tmpfs.Magic, 0o755, 0, 0)
	root := fs.Root().(*tmpfs.Dir)
	a, _ := root.Mkdir("a", 0o755, 0, 0)
	b, _ := a.(*tmpfs.Dir).Mkdir("b", 0o755, 0, 0)
	b.(*tmpfs.Dir).Create("f", 0o644, 0, 0)
	a.(*tmpfs.Dir).Symlink("l", "b", 0, 0)
	root.Symlink("abs", "/a/b", 0, 0)
	root.Symlink("loop", "loop", 0, 0)
	root.Symlink("dang", "nowhere", 0, 0)
	root.Mkdir("m", 0o755, 0, 0)
	v := vfs.New(fs, "none", 0, vfs.Mkdev(0, 1))
	other := tmpfs.New("tmpfs", tmpfs.Magic, 0o755, 0, 0)
	other.Root().(*tmpfs.Dir).Mkdir("inner", 0o755, 0, 0)
	w := &vfs.Walker{V: v, Root: v.Root(), Cwd: v.Root()}
	m, err := w.Lookup("/m", true)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Mount(other, m, "other", vfs.ReadOnly, "", v.AnonDev()); err != nil {
		t.Fatal(err)
	}
	return v
}

func TestLookup(t *testing.T) {
	v := tree(t)
	w0 := &vfs.Walker{V: v, Root: v.Root(), Cwd: v.Root()}
	ab, err := w0.Lookup("/a/b", true)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		path   string
		cwd    string
		follow bool
		want   string // resolved path, or an errno name
	}{
		{"/a/b/f", "/", true, "/a/b/f"},
		{"a/b/f", "/", true, "/a/b/f"},
		{"f", "/a/b", true, "/a/b/f"},
		{"../../a/./b//f", "/a/b", true, "/a/b/f"},
		{"/..", "/", true, "/"},
		{"/../../a", "/", true, "/a"},
		{"/a/l/f", "/", true, "/a/b/f"},
		{"/a/l", "/", false, "/a/l"},
		{"/a/l", "/", true, "/a/b"},
		{"/a/l/", "/", false, "/a/b"}, // a trailing slash follows
		{"/abs/f", "/", true, "/a/b/f"},
		{"/loop", "/", true, "ELOOP"},
		{"/loop", "/", false, "/loop"},
		{"/dang", "/", true, "ENOENT"},
		{"/a/b/f/x", "/", true, "ENOTDIR"},
		{"/m/inner", "/", true, "/m/inner"},
		{"/m/inner/..", "/", true, "/m"},
		{"/m/..", "/", true, "/"},
		{"", "/", true, "ENOENT"},
		{"/" + strings.Repeat("x", 256), "/", true, "ENAMETOOLONG"},
		{strings.Repeat("a/", 2100), "/", true, "ENAMETOOLONG"},
	} {
		w := &vfs.Walker{V: v, Root: v.Root(), Cwd: v.Root()}
		if c.cwd != "/" {
			w.Cwd = ab
		}
		d, err := w.Lookup(c.path, c.follow)
		got := ""
		var e syscall.Errno
		switch {
		case errors.As(err, &e):
			got = errName(e)
		case err != nil:
			got = err.Error()
		default:
			got = v.Path(d, v.Root())
		}
		if got != c.want {
			t.Errorf("Lookup(%q, cwd %s, follow %v) = %s, want %s", c.path, c.cwd, c.follow, got, c.want)
		}
	}
}

func errName(e syscall.Errno) string {
	switch e {
	case syscall.ELOOP:
		return "ELOOP"
	case syscall.ENOENT:
		return "ENOENT"
	case syscall.ENOTDIR:
		return "ENOTDIR"
	case syscall.ENAMETOOLONG:
		return "ENAMETOOLONG"
	}
	return e.Error()
}

func TestChrootAndParent(t *testing.T) {
	v := tree(t)
	w := &vfs.Walker{V: v, Root: v.Root(), Cwd: v.Root()}
	ab, _ := w.Lookup("/a/b", true)
	// A chrooted walker cannot climb out, and absolute links stay inside.
	cw := &vfs.Walker{V: v, Root: ab, Cwd: ab}
	d, err := cw.Lookup("../../../f", true)
	if err != nil || v.Path(d, v.Root()) != "/a/b/f" {
		t.Errorf("../../../f in the chroot: %v %v", d, err)
	}
	if p := v.Path(d, ab); p != "/f" {
		t.Errorf("path seen from the chroot = %q", p)
	}
	dir, name, trailing, err := w.Parent("/a/b/new/")
	if err != nil || name != "new" || !trailing || v.Path(dir, v.Root()) != "/a/b" {
		t.Errorf("Parent = %v %q %v %v", dir, name, trailing, err)
	}
	if _, _, _, err := w.Parent("/a/b/f/x"); !errors.Is(err, syscall.ENOTDIR) {
		t.Errorf("Parent under a file: %v", err)
	}
}

func TestMounts(t *testing.T) {
	v := tree(t)
	w := &vfs.Walker{V: v, Root: v.Root(), Cwd: v.Root()}
	ms := v.Mounts()
	if len(ms) != 2 || !ms[1].ReadOnly() || v.Path(ms[1].MountPoint(), v.Root()) != "/m" {
		t.Fatalf("mounts: %+v", ms)
	}
	inner, _ := w.Lookup("/m/inner", true)
	if inner.Mount != ms[1] {
		t.Errorf("/m/inner is on %v", inner.Mount)
	}
	root, _ := w.Lookup("/m", true)
	if err := v.Unmount(inner); !errors.Is(err, syscall.EINVAL) {
		t.Errorf("unmount of a non-root: %v", err)
	}
	if err := v.Unmount(v.Root()); !errors.Is(err, syscall.EBUSY) {
		t.Errorf("unmount of /: %v", err)
	}
	if err := v.Unmount(root); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Lookup("/m/inner", true); !errors.Is(err, syscall.ENOENT) {
		t.Errorf("after unmount: %v", err)
	}
}

func TestDevNumbers(t *testing.T) {
	for _, c := range []struct{ maj, min uint32 }{{1, 3}, {98, 0}, {136, 300}, {4095, 1 << 19}} {
		d := vfs.Mkdev(c.maj, c.min)
		if vfs.Major(d) != c.maj || vfs.Minor(d) != c.min {
			t.Errorf("Mkdev(%d,%d) = %#x → %d,%d", c.maj, c.min, d, vfs.Major(d), vfs.Minor(d))
		}
	}
	if vfs.Mkdev(98, 0) != 0x6200 {
		t.Errorf("ubda = %#x", vfs.Mkdev(98, 0))
	}
}
