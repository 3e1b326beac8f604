package hostfs

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/umltools/umltools/internal/vfs"
)

func TestParseData(t *testing.T) {
	for _, tc := range []struct {
		data, path string
		o          Options
		bad        bool
	}{
		{"", "", Options{}, false},
		{"/home/ftp", "/home/ftp", Options{}, false},
		{"/home/ftp,ro", "/home/ftp", Options{}, false},
		{"/srv,uid=1000,gid=100", "/srv", Options{Uid: 1000, Gid: 100}, false},
		{"hostfs=/a,b", "/a,b", Options{}, false},
		{"/a,b,rw", "/a,b", Options{}, false},
		{"/home/ftp,ro,user", "/home/ftp", Options{}, false}, // seed 004's fstab line
		{"defaults,noauto,/x", "/x", Options{}, false},
		{"uid=x", "", Options{}, true},
		{"gid=4294967295", "", Options{}, true},
	} {
		p, o, err := ParseData(tc.data)
		if (err != nil) != tc.bad {
			t.Errorf("ParseData(%q): error %v, want bad=%v", tc.data, err, tc.bad)
			continue
		}
		if !tc.bad && (p != tc.path || o != tc.o) {
			t.Errorf("ParseData(%q) = %q, %+v; want %q, %+v", tc.data, p, o, tc.path, tc.o)
		}
	}
}

// tree makes base/root (the allowed root, with a subdirectory sub) and
// base/outside/canary next to it.
func tree(t *testing.T) (base, root string) {
	t.Helper()
	base = t.TempDir()
	root = filepath.Join(base, "root")
	for _, d := range []string{"root/sub", "outside"} {
		if err := os.MkdirAll(filepath.Join(base, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(base, "outside/canary"), []byte("outside\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(base, "outside"), filepath.Join(root, "abs")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../outside", filepath.Join(root, "rel")); err != nil {
		t.Fatal(err)
	}
	return base, root
}

func TestMountPolicy(t *testing.T) {
	_, root := tree(t)
	var none *Policy
	if _, err := none.Mount("/", Options{}); !errors.Is(err, ErrNotAllowed) {
		t.Errorf("nil policy: %v, want ErrNotAllowed", err)
	}
	p := &Policy{Root: root}
	for _, tc := range []struct {
		path string
		err  error
	}{
		{"", nil}, {"/", nil}, {"/sub", nil}, {"sub/", nil},
		{"..", ErrEscape}, {"/../outside", ErrEscape}, {"/sub/../..", ErrEscape},
		{"/abs", ErrEscape}, {"/rel", ErrEscape},
		{"/missing", syscall.ENOENT},
	} {
		f, err := p.Mount(tc.path, Options{})
		if tc.err == nil {
			if err != nil {
				t.Errorf("Mount(%q): %v", tc.path, err)
				continue
			}
			f.Close()
			continue
		}
		if !errors.Is(err, tc.err) {
			t.Errorf("Mount(%q): %v, want %v", tc.path, err, tc.err)
		}
	}
}

// TestMountAllow: with hostfs_allow=<dir> mount paths are host paths,
// accepted only beneath dir (and then confined like any other).
func TestMountAllow(t *testing.T) {
	_, root := tree(t)
	p := &Policy{Root: root + "/", Absolute: true}
	for _, tc := range []struct {
		path string
		err  error
	}{
		{root, nil}, {root + "/sub", nil}, {root + "/sub/", nil}, {root + "//sub/.", nil},
		{"", ErrEscape}, {"/", ErrEscape}, {"/etc", ErrEscape}, {root + "/..", ErrEscape},
		{root + "/sub/../../x", ErrEscape}, {root + "x", ErrEscape}, {"sub", ErrEscape},
		{root + "/abs", ErrEscape}, {root + "/rel", ErrEscape}, // host links leading out
		{root + "/missing", syscall.ENOENT},
	} {
		f, err := p.Mount(tc.path, Options{})
		if tc.err == nil {
			if err != nil {
				t.Errorf("Mount(%q): %v", tc.path, err)
				continue
			}
			if want := filepath.Clean(tc.path); f.HostPath() != want {
				t.Errorf("Mount(%q) shows %s, want %s", tc.path, f.HostPath(), want)
			}
			f.Close()
			continue
		}
		if !errors.Is(err, tc.err) {
			t.Errorf("Mount(%q): %v, want %v", tc.path, err, tc.err)
		}
	}
}

func mount(t *testing.T, root string, o Options) *FS {
	t.Helper()
	f, err := (&Policy{Root: root}).Mount("/", o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func lookup(t *testing.T, f *FS, p string) vfs.Node {
	t.Helper()
	w := &vfs.Walker{V: vfs.New(f, "hostfs", 0, 1)}
	w.Root, w.Cwd = w.V.Root(), w.V.Root()
	d, err := w.Lookup(p, false)
	if err != nil {
		t.Fatalf("lookup %s: %v", p, err)
	}
	return d.Node
}

func readAll(t *testing.T, n vfs.Node) string {
	t.Helper()
	fh, err := n.(vfs.OpenNode).Open(nil, os.O_RDONLY)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	b, err := io.ReadAll(fh)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// The changes of each side are seen by the other at once.
func TestBothWays(t *testing.T) {
	_, root := tree(t)
	f := mount(t, root, Options{})
	d := f.Root().(*Dir)

	// Guest writes, host reads.
	n, err := d.Create("g", 0o640, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	fh, err := n.(vfs.OpenNode).Open(nil, os.O_WRONLY)
	if err != nil {
		t.Fatal(err)
	}
	fh.WriteString("from guest\n")
	fh.Close()
	if b, _ := os.ReadFile(filepath.Join(root, "g")); string(b) != "from guest\n" {
		t.Errorf("host reads %q", b)
	}
	if st, _ := os.Stat(filepath.Join(root, "g")); st.Mode().Perm() != 0o640 {
		t.Errorf("host mode %v, want 0640 (not the engine's umask)", st.Mode())
	}
	// Host writes, guest reads (an existing name and a new one).
	os.WriteFile(filepath.Join(root, "g"), []byte("host again\n"), 0o644)
	os.WriteFile(filepath.Join(root, "h"), []byte("from host\n"), 0o644)
	if s := readAll(t, lookup(t, f, "/g")); s != "host again\n" {
		t.Errorf("guest reads %q", s)
	}
	if s := readAll(t, lookup(t, f, "/h")); s != "from host\n" {
		t.Errorf("guest reads %q", s)
	}

	// Guest: rename, hard link, symlink, mkdir, unlink, rmdir.
	steps := []struct {
		name string
		fn   func() error
	}{
		{"rename", func() error { return d.Rename("g", d, "g2") }},
		{"link", func() error { return d.Link("g3", lookup(t, f, "/g2")) }},
		{"symlink", func() error { _, err := d.Symlink("s", "/etc/passwd", 0, 0); return err }},
		{"mkdir", func() error { _, err := d.Mkdir("dir", 0o1777, 0, 0); return err }},
		{"unlink", func() error { return d.Unlink("h") }},
		{"rename into", func() error { return d.Rename("g3", lookup(t, f, "/dir").(*Dir), "g4") }},
	}
	for _, s := range steps {
		if err := s.fn(); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
	}
	a, _ := os.Stat(filepath.Join(root, "g2"))
	b, _ := os.Stat(filepath.Join(root, "dir/g4"))
	if a == nil || b == nil || !os.SameFile(a, b) {
		t.Errorf("g2 and dir/g4 are not one file: %v %v", a, b)
	}
	if l, _ := os.Readlink(filepath.Join(root, "s")); l != "/etc/passwd" {
		t.Errorf("host link %q", l)
	}
	if st, _ := os.Stat(filepath.Join(root, "dir")); st == nil || st.Mode()&os.ModeSticky == 0 || st.Mode().Perm() != 0o777 {
		t.Errorf("dir mode %v", st.Mode())
	}
	if _, err := os.Lstat(filepath.Join(root, "h")); !os.IsNotExist(err) {
		t.Errorf("h still there: %v", err)
	}

	// Host: rename, link, symlink, unlink; the guest sees each.
	os.Rename(filepath.Join(root, "g2"), filepath.Join(root, "m"))
	os.Link(filepath.Join(root, "m"), filepath.Join(root, "m2"))
	os.Symlink("m", filepath.Join(root, "ms"))
	os.Remove(filepath.Join(root, "dir/g4"))
	if _, err := d.Lookup(nil, "g2"); !errors.Is(err, syscall.ENOENT) {
		t.Errorf("renamed g2: %v", err)
	}
	ma, _ := lookup(t, f, "/m").Attr()
	m2, _ := lookup(t, f, "/m2").Attr()
	if ma.Ino != m2.Ino || ma.Nlink != 2 {
		t.Errorf("m %+v, m2 %+v", ma, m2)
	}
	if l, err := lookup(t, f, "/ms").(vfs.LinkNode).Readlink(nil); err != nil || l != "m" {
		t.Errorf("readlink ms: %q %v", l, err)
	}
	names := map[string]bool{}
	ents, err := d.ReadDir(nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		names[e.Name] = true
	}
	for _, want := range []string{"m", "m2", "ms", "s", "dir", "sub", "abs", "rel"} {
		if !names[want] {
			t.Errorf("ReadDir lacks %s: %v", want, ents)
		}
	}
	if err := d.Rmdir("dir"); err != nil {
		t.Errorf("rmdir: %v", err)
	}
}

func TestAttrsAndOwners(t *testing.T) {
	_, root := tree(t)
	f := mount(t, root, Options{Uid: 0, Gid: 0})
	// Pretend the engine runs as 4242:4343, as an unprivileged user would.
	f.hostUid, f.hostGid = 4242, 4343
	p := filepath.Join(root, "own")
	os.WriteFile(p, []byte("x"), 0o600)
	if os.Geteuid() == 0 {
		os.Chown(p, 4242, 4343)
		a, _ := lookup(t, f, "/own").Attr()
		if a.Uid != 0 || a.Gid != 0 {
			t.Errorf("the engine's files show as %d:%d, want 0:0", a.Uid, a.Gid)
		}
		os.Chown(p, 7, 8)
		a, _ = lookup(t, f, "/own").Attr()
		if a.Uid != 7 || a.Gid != 8 {
			t.Errorf("other owners show as %d:%d, want 7:8", a.Uid, a.Gid)
		}
		// A chown to the guest's root gives the file back to the engine.
		if err := lookup(t, f, "/own").(vfs.SetAttr).Chown(0, 0); err != nil {
			t.Fatal(err)
		}
		var st unix.Stat_t
		unix.Stat(p, &st)
		if st.Uid != 4242 || st.Gid != 4343 {
			t.Errorf("host owner %d:%d, want 4242:4343", st.Uid, st.Gid)
		}
	}
	n := lookup(t, f, "/own")
	sa := n.(vfs.SetAttr)
	if err := sa.Chmod(0o751); err != nil {
		t.Fatal(err)
	}
	if err := sa.Truncate(100); err != nil {
		t.Fatal(err)
	}
	mt := time.Unix(1e9, 5)
	if err := sa.Utimes(nil, &mt); err != nil {
		t.Fatal(err)
	}
	a, _ := n.Attr()
	if a.Mode != syscall.S_IFREG|0o751 || !a.Mtime.Equal(mt) || a.Size != 100 {
		t.Errorf("attr %+v", a)
	}
	// Chmod of a symbolic link is refused, its times can be set.
	os.Symlink("/nowhere", filepath.Join(root, "ln"))
	ln := lookup(t, f, "/ln").(vfs.SetAttr)
	if err := ln.Chmod(0o600); !errors.Is(err, syscall.EOPNOTSUPP) {
		t.Errorf("chmod of a link: %v", err)
	}
	if err := ln.Utimes(&mt, &mt); err != nil {
		t.Errorf("utimes of a link: %v", err)
	}
	// xattrs, where the host filesystem has them.
	x := n.(vfs.Xattrs)
	if err := x.Setxattr("user.k", []byte("v"), 0); errors.Is(err, syscall.EOPNOTSUPP) {
		t.Logf("no user xattrs on %s", root)
	} else if err != nil {
		t.Errorf("setxattr: %v", err)
	} else {
		v, err := x.Getxattr("user.k")
		l, _ := x.Listxattr()
		if err != nil || string(v) != "v" || !reflect.DeepEqual(l, []string{"user.k"}) {
			t.Errorf("getxattr %q %v, list %v", v, err, l)
		}
		if err := x.Removexattr("user.k"); err != nil {
			t.Errorf("removexattr: %v", err)
		}
	}
	fs := f.Statfs()
	if fs.Type != Magic || fs.Blocks == 0 {
		t.Errorf("statfs %+v", fs)
	}
}

func TestReadOnly(t *testing.T) {
	_, root := tree(t)
	os.WriteFile(filepath.Join(root, "f"), []byte("x"), 0o644)
	f := mount(t, root, Options{ReadOnly: true})
	d := f.Root().(*Dir)
	n := lookup(t, f, "/f")
	for name, err := range map[string]error{
		"create":   func() error { _, err := d.Create("n", 0o644, 0, 0); return err }(),
		"unlink":   d.Unlink("f"),
		"open w":   func() error { _, err := n.(vfs.OpenNode).Open(nil, os.O_WRONLY); return err }(),
		"chmod":    n.(vfs.SetAttr).Chmod(0),
		"setxattr": n.(vfs.Xattrs).Setxattr("user.a", nil, 0),
	} {
		if !errors.Is(err, syscall.EROFS) {
			t.Errorf("%s on a read-only mount: %v", name, err)
		}
	}
	if s := readAll(t, n); s != "x" {
		t.Errorf("read %q", s)
	}
	f.Remount(false)
	if _, err := d.Create("n", 0o644, 0, 0); err != nil {
		t.Errorf("create after remount rw: %v", err)
	}
}

// watchOutside reports every inotify event on base/outside and its canary.
func watchOutside(t *testing.T, base string) func() []string {
	t.Helper()
	fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"outside", "outside/canary"} {
		if _, err := unix.InotifyAddWatch(fd, filepath.Join(base, p), unix.IN_ALL_EVENTS); err != nil {
			t.Fatal(err)
		}
	}
	return func() []string {
		defer unix.Close(fd)
		buf := make([]byte, 4096)
		n, _ := unix.Read(fd, buf)
		var out []string
		for i := 0; i+unix.SizeofInotifyEvent <= n; {
			ev := (*unix.InotifyEvent)(unsafe.Pointer(&buf[i]))
			out = append(out, maskText(ev.Mask))
			i += unix.SizeofInotifyEvent + int(ev.Len)
		}
		return out
	}
}

func maskText(m uint32) string {
	var out []string
	for bit, name := range map[uint32]string{unix.IN_ACCESS: "access", unix.IN_OPEN: "open", unix.IN_MODIFY: "modify",
		unix.IN_ATTRIB: "attrib", unix.IN_CLOSE_NOWRITE: "close", unix.IN_CLOSE_WRITE: "close-write", unix.IN_CREATE: "create"} {
		if m&bit != 0 {
			out = append(out, name)
		}
	}
	sort.Strings(out)
	return filepath.Join(out...)
}

// Escapes: host links are never followed by the host, and a directory
// swapped for a link to the outside while lookups run never leads out.
func TestNoEscape(t *testing.T) {
	base, root := tree(t)
	events := watchOutside(t, base)
	f := mount(t, root, Options{})
	d := f.Root().(*Dir)
	for _, p := range []string{"abs", "rel"} {
		n, err := d.Lookup(nil, p)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := n.(*Link); !ok {
			t.Errorf("%s is a %T, want a link node", p, n)
		}
		// A node made by hand through the link: the host refuses.
		bad := &File{node{fs: f, rel: p + "/canary"}}
		if _, err := bad.Open(nil, os.O_RDONLY); !errors.Is(err, syscall.ELOOP) {
			t.Errorf("open %s/canary: %v, want ELOOP", p, err)
		}
		if _, err := bad.Attr(); !errors.Is(err, syscall.ELOOP) {
			t.Errorf("stat %s/canary: %v, want ELOOP", p, err)
		}
		if err := bad.Chmod(0o777); err == nil {
			t.Errorf("chmod %s/canary worked", p)
		}
	}
	for _, rel := range []string{"../outside/canary", "sub/../../outside/canary", "/etc/passwd"} {
		bad := &File{node{fs: f, rel: rel}}
		if _, err := bad.Open(nil, os.O_RDONLY); !errors.Is(err, syscall.EXDEV) {
			t.Errorf("open %s: %v, want EXDEV", rel, err)
		}
	}
	for _, name := range []string{"..", ".", "a/b", ""} {
		if _, err := d.Lookup(nil, name); !errors.Is(err, syscall.EINVAL) {
			t.Errorf("Lookup(%q): %v, want EINVAL", name, err)
		}
	}

	// The race: root/d is a directory holding canary ("inside") and, in
	// turns, a link to base/outside.
	os.Mkdir(filepath.Join(root, "d"), 0o755)
	os.WriteFile(filepath.Join(root, "d/canary"), []byte("inside\n"), 0o644)
	os.Symlink(filepath.Join(base, "outside"), filepath.Join(root, "swap"))
	stop := make(chan struct{})
	done := make(chan int)
	go func() {
		n := 0
		for {
			select {
			case <-stop:
				done <- n
				return
			default:
			}
			unix.Renameat2(unix.AT_FDCWD, filepath.Join(root, "d"), unix.AT_FDCWD, filepath.Join(root, "swap"), unix.RENAME_EXCHANGE)
			n++
		}
	}()
	w := &vfs.Walker{V: vfs.New(f, "hostfs", 0, 1)}
	w.Root, w.Cwd = w.V.Root(), w.V.Root()
	reads, links := 0, 0
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		de, err := w.Lookup("/d/canary", false)
		if err != nil {
			continue
		}
		if _, ok := de.Node.(*Link); ok {
			links++
			continue
		}
		on, ok := de.Node.(vfs.OpenNode)
		if !ok {
			continue
		}
		if fh, err := on.Open(nil, os.O_RDWR); err == nil {
			b, _ := io.ReadAll(fh)
			fh.Close()
			if string(b) != "inside\n" {
				t.Fatalf("read %q through the swapped directory", b)
			}
			reads++
		}
	}
	close(stop)
	swaps := <-done
	t.Logf("%d swaps, %d reads of the inside file", swaps, reads)
	if reads == 0 || swaps < 100 {
		t.Errorf("the race did not run: %d swaps, %d reads", swaps, reads)
	}
	if ev := events(); len(ev) != 0 {
		t.Errorf("the outside was reached: inotify events %v", ev)
	}
	if b, _ := os.ReadFile(filepath.Join(base, "outside/canary")); string(b) != "outside\n" {
		t.Errorf("canary now %q", b)
	}
}
