package tmpfs

import (
	"errors"
	"io"
	"syscall"
	"testing"

	"github.com/umltools/umltools/internal/vfs"
)

func attr(t *testing.T, n vfs.Node) vfs.Attr {
	t.Helper()
	a, err := n.Attr()
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestTree(t *testing.T) {
	fs := New("tmpfs", Magic, 0o1777, 0, 0)
	root := fs.Root().(*Dir)
	if a := attr(t, root); a.Mode != syscall.S_IFDIR|0o1777 || a.Nlink != 2 {
		t.Fatalf("root: %o nlink %d", a.Mode, a.Nlink)
	}
	d, err := root.Mkdir("d", 0o755, 1, 2)
	if err != nil {
		t.Fatal(err)
	}
	f, err := d.(*Dir).Create("f", 0o600, 1, 2)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.(*Dir).Create("f", 0o600, 1, 2); !errors.Is(err, syscall.EEXIST) {
		t.Errorf("second create: %v", err)
	}
	if a := attr(t, root); a.Nlink != 3 {
		t.Errorf("root nlink %d after mkdir, want 3", a.Nlink)
	}
	// Content goes through the memfd.
	w, err := f.(*File).Open(nil, syscall.O_WRONLY)
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("data"))
	w.Close()
	if a := attr(t, f); a.Size != 4 || a.Uid != 1 || a.Gid != 2 || a.Mode != syscall.S_IFREG|0o600 {
		t.Errorf("file attr %+v", a)
	}
	r, _ := f.(*File).Open(nil, syscall.O_RDONLY)
	b, _ := io.ReadAll(r)
	r.Close()
	if string(b) != "data" {
		t.Errorf("read %q", b)
	}
	// Hard links count.
	if err := root.Link("hard", f); err != nil {
		t.Fatal(err)
	}
	if a := attr(t, f); a.Nlink != 2 {
		t.Errorf("nlink %d after link", a.Nlink)
	}
	if err := root.Link("dlink", d); !errors.Is(err, syscall.EPERM) {
		t.Errorf("hard link to a directory: %v", err)
	}
	other := New("tmpfs", Magic, 0o755, 0, 0)
	if err := other.Root().(*Dir).Link("x", f); !errors.Is(err, syscall.EXDEV) {
		t.Errorf("cross-filesystem link: %v", err)
	}
	// Removal rules.
	for _, c := range []struct {
		name  string
		dir   bool
		want  error
		where *Dir
	}{
		{"d", false, syscall.EISDIR, root},
		{"hard", true, syscall.ENOTDIR, root},
		{"d", true, syscall.ENOTEMPTY, root},
		{"nope", false, syscall.ENOENT, root},
	} {
		var err error
		if c.dir {
			err = c.where.Rmdir(c.name)
		} else {
			err = c.where.Unlink(c.name)
		}
		if !errors.Is(err, c.want) {
			t.Errorf("remove %s (dir %v): %v, want %v", c.name, c.dir, err, c.want)
		}
	}
	if err := root.Unlink("hard"); err != nil {
		t.Fatal(err)
	}
	if a := attr(t, f); a.Nlink != 1 {
		t.Errorf("nlink %d after unlink", a.Nlink)
	}
	// Rename: a file over a file replaces it; a directory over a file
	// is ENOTDIR; a file over a directory is EISDIR.
	root.Create("g", 0o644, 0, 0)
	if err := d.(*Dir).Rename("f", root, "g"); err != nil {
		t.Fatal(err)
	}
	if n, _ := root.Lookup(nil, "g"); n != f {
		t.Error("rename did not replace g")
	}
	if _, err := d.(*Dir).Lookup(nil, "f"); !errors.Is(err, syscall.ENOENT) {
		t.Errorf("old name still there: %v", err)
	}
	root.Mkdir("e", 0o755, 0, 0)
	if err := root.Rename("e", root, "g"); !errors.Is(err, syscall.ENOTDIR) {
		t.Errorf("dir over file: %v", err)
	}
	if err := root.Rename("g", root, "e"); !errors.Is(err, syscall.EISDIR) {
		t.Errorf("file over dir: %v", err)
	}
	if err := root.Rename("e", root, "d"); err != nil { // empty dir over empty dir
		t.Errorf("dir over empty dir: %v", err)
	}
	ents, _ := root.ReadDir(nil)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name)
	}
	if len(names) != 2 || names[0] != "d" || names[1] != "g" {
		t.Errorf("listing %v", names)
	}
	if a := attr(t, root); a.Nlink != 3 {
		t.Errorf("root nlink %d, want 3 (one subdirectory)", a.Nlink)
	}
	l, _ := root.Symlink("l", "g", 0, 0)
	if target, _ := l.(*Link).Readlink(nil); target != "g" || attr(t, l).Size != 1 {
		t.Errorf("symlink %q", target)
	}
}
