package procfs

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/umltools/umltools/internal/vfs"
)

type fakeSource struct{}

func (fakeSource) Pids() []int { return []int{7, 1} }
func (fakeSource) Owner(pid int) (uint32, uint32, time.Time, bool) {
	return uint32(pid), 0, time.Unix(1000, 0), pid == 1 || pid == 7
}
func (fakeSource) PidFile(_ *vfs.Ctx, pid int, name string) ([]byte, error) {
	return []byte(name + " of " + string(rune('0'+pid))), nil
}
func (fakeSource) PidLink(_ *vfs.Ctx, pid int, name string) (string, error) { return "/" + name, nil }
func (fakeSource) Fds(pid int) (map[int]string, error) {
	return map[int]string{0: "/dev/console", 3: "pipe:[9]"}, nil
}
func (fakeSource) Sys(_ *vfs.Ctx, path string) ([]byte, error) { return []byte(path + "\n"), nil }

func (fakeSource) File(_ *vfs.Ctx, name string) ([]byte, error) {
	return []byte("machine " + name), nil
}

// Process 7 has threads 7 and 9.
func (fakeSource) Tids(pid int) []int {
	if pid == 7 {
		return []int{9, 7}
	}
	return []int{pid}
}

func (fakeSource) TaskOf(tid int) (int, bool) { return 7, tid == 9 }

func (fakeSource) TaskFile(_ *vfs.Ctx, pid, tid int, name string) ([]byte, error) {
	return []byte(fmt.Sprintf("%s of %d/%d", name, pid, tid)), nil
}

// sysWrites records SysWrite calls of a test.
var sysWrites = map[string]*os.File{}

func (fakeSource) SysWrite(_ *vfs.Ctx, path string, f *os.File) error {
	g, err := os.OpenFile("/proc/self/fd/"+strconv.Itoa(int(f.Fd())), os.O_RDONLY, 0)
	sysWrites[path] = g
	return err
}

func TestTree(t *testing.T) {
	fs := New(fakeSource{})
	root := fs.Root()
	c := &vfs.Ctx{Who: func() (int, int) { return 7, 8 }}
	ents, err := root.ReadDir(c)
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, e := range ents {
		names[e.Name] = true
	}
	for _, want := range []string{"1", "7", "self", "thread-self", "mounts", "meminfo", "uptime", "cmdline"} {
		if !names[want] {
			t.Errorf("/proc lacks %s", want)
		}
	}
	self, _ := root.Lookup(c, "self")
	if l, _ := self.(vfs.LinkNode).Readlink(c); l != "7" {
		t.Errorf("/proc/self -> %q", l)
	}
	ts, _ := root.Lookup(c, "thread-self")
	if l, _ := ts.(vfs.LinkNode).Readlink(c); l != "7/task/8" {
		t.Errorf("/proc/thread-self -> %q", l)
	}
	for _, bad := range []string{"2", "07", "x", "-1"} {
		if _, err := root.Lookup(c, bad); !errors.Is(err, syscall.ENOENT) {
			t.Errorf("/proc/%s: %v", bad, err)
		}
	}
	p, err := root.Lookup(c, "7")
	if err != nil {
		t.Fatal(err)
	}
	if a, _ := p.Attr(); a.Uid != 7 || a.Mode != syscall.S_IFDIR|0o555 {
		t.Errorf("/proc/7: %+v", a)
	}
	st, _ := p.(vfs.DirNode).Lookup(c, "stat")
	f, err := st.(vfs.OpenNode).Open(c, syscall.O_RDONLY)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(f)
	f.Close()
	if string(b) != "stat of 7" {
		t.Errorf("/proc/7/stat = %q", b)
	}
	if _, err := st.(vfs.OpenNode).Open(c, syscall.O_WRONLY); !errors.Is(err, syscall.EACCES) {
		t.Errorf("write open: %v", err)
	}
	fd, _ := p.(vfs.DirNode).Lookup(c, "fd")
	fents, _ := fd.(vfs.DirNode).ReadDir(c)
	if len(fents) != 2 || fents[0].Name != "0" || fents[1].Name != "3" {
		t.Errorf("/proc/7/fd: %+v", fents)
	}
	three, _ := fd.(vfs.DirNode).Lookup(c, "3")
	if l, _ := three.(vfs.LinkNode).Readlink(c); l != "pipe:[9]" {
		t.Errorf("fd 3 -> %q", l)
	}
	if _, err := fd.(vfs.DirNode).Lookup(c, "5"); !errors.Is(err, syscall.ENOENT) {
		t.Errorf("fd 5: %v", err)
	}
	mi, _ := root.Lookup(c, "meminfo")
	mf, _ := mi.(vfs.OpenNode).Open(c, syscall.O_RDONLY)
	b, _ = io.ReadAll(mf)
	mf.Close()
	if string(b) != "machine meminfo" {
		t.Errorf("meminfo %q", b)
	}
}

// read opens a node of the tree by path and returns its content.
func read(t *testing.T, root vfs.DirNode, c *vfs.Ctx, path string) (string, error) {
	t.Helper()
	n, err := walk(root, c, path)
	if err != nil {
		return "", err
	}
	f, err := n.(vfs.OpenNode).Open(c, syscall.O_RDONLY)
	if err != nil {
		return "", err
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	return string(b), err
}

func walk(root vfs.DirNode, c *vfs.Ctx, path string) (vfs.Node, error) {
	var n vfs.Node = root
	for _, name := range strings.Split(path, "/") {
		d, ok := n.(vfs.DirNode)
		if !ok {
			return nil, syscall.ENOTDIR
		}
		var err error
		if n, err = d.Lookup(c, name); err != nil {
			return nil, err
		}
	}
	return n, nil
}

func TestTasks(t *testing.T) {
	root := New(fakeSource{}).Root()
	c := &vfs.Ctx{Who: func() (int, int) { return 7, 9 }}
	task, err := walk(root, c, "7/task")
	if err != nil {
		t.Fatal(err)
	}
	ents, _ := task.(vfs.DirNode).ReadDir(c)
	if len(ents) != 2 || ents[0].Name != "7" || ents[1].Name != "9" || ents[0].Type != syscall.DT_DIR {
		t.Errorf("/proc/7/task: %+v", ents)
	}
	if ents[0].Ino == ents[1].Ino {
		t.Errorf("threads share an inode: %+v", ents)
	}
	pents, _ := mustDir(t, root, c, "7").ReadDir(c)
	if !hasEntry(pents, "task") {
		t.Errorf("/proc/7 lists no task: %+v", pents)
	}
	for _, tc := range []struct{ path, want string }{
		{"7/task/9/stat", "stat of 7/9"},
		{"7/task/7/status", "status of 7/7"},
		{"7/task/9/comm", "comm of 7/9"},
		{"9/stat", "stat of 7/9"}, // a thread's own, unlisted directory
		{"7/stat", "stat of 7"},
	} {
		got, err := read(t, root, c, tc.path)
		if err != nil || got != tc.want {
			t.Errorf("/proc/%s = %q, %v; want %q", tc.path, got, err, tc.want)
		}
	}
	for _, bad := range []string{"7/task/8", "7/task/9/task", "7/task/x", "1/task/9"} {
		if _, err := walk(root, c, bad); !errors.Is(err, syscall.ENOENT) {
			t.Errorf("/proc/%s: %v, want ENOENT", bad, err)
		}
	}
	if _, err := walk(root, c, "7/task/9/fd"); err != nil {
		t.Errorf("a thread's fd/: %v", err)
	}
	rents, _ := root.ReadDir(c)
	if hasEntry(rents, "9") {
		t.Error("/proc lists thread 9")
	}
	ts, _ := root.Lookup(c, "thread-self")
	l, _ := ts.(vfs.LinkNode).Readlink(c)
	if got, err := read(t, root, c, l+"/stat"); err != nil || got != "stat of 7/9" {
		t.Errorf("/proc/thread-self/stat = %q, %v", got, err)
	}
}

func mustDir(t *testing.T, root vfs.DirNode, c *vfs.Ctx, path string) vfs.DirNode {
	t.Helper()
	n, err := walk(root, c, path)
	if err != nil {
		t.Fatal(err)
	}
	return n.(vfs.DirNode)
}

func hasEntry(ents []vfs.Dirent, name string) bool {
	for _, e := range ents {
		if e.Name == name {
			return true
		}
	}
	return false
}

func TestSysWrite(t *testing.T) {
	root := New(fakeSource{}).Root()
	c := &vfs.Ctx{Who: func() (int, int) { return 1, 1 }}
	for _, tc := range []struct {
		path  string
		flags int
		mode  uint32
		err   error
		init  string // what the kernel's copy holds at open
	}{
		{"sys/kernel/hostname", syscall.O_WRONLY, 0o644, nil, ""},
		{"sys/vm/swappiness", syscall.O_WRONLY | syscall.O_TRUNC, 0o644, nil, ""},
		{"sys/net/core/somaxconn", syscall.O_RDWR, 0o644, nil, "net/core/somaxconn\n"},
		{"sys/kernel/osrelease", syscall.O_WRONLY, 0o444, syscall.EACCES, ""},
		{"sys/kernel/random/boot_id", syscall.O_RDWR, 0o444, syscall.EACCES, ""},
		{"sys/fs/file-nr", syscall.O_WRONLY, 0o444, syscall.EACCES, ""},
	} {
		n, err := walk(root, c, tc.path)
		if err != nil {
			t.Fatal(err)
		}
		if a, _ := n.Attr(); a.Mode != syscall.S_IFREG|tc.mode {
			t.Errorf("%s: mode %o, want %o", tc.path, a.Mode, tc.mode)
		}
		f, err := n.(vfs.OpenNode).Open(c, tc.flags)
		if !errors.Is(err, tc.err) || (tc.err == nil) != (err == nil) {
			t.Errorf("%s: open %v, want %v", tc.path, err, tc.err)
			continue
		}
		if err != nil {
			continue
		}
		name := strings.TrimPrefix(tc.path, "sys/")
		k := sysWrites[name]
		if k == nil {
			t.Errorf("%s: SysWrite not called", tc.path)
			f.Close()
			continue
		}
		b, _ := io.ReadAll(k)
		if string(b) != tc.init {
			t.Errorf("%s: kernel's copy starts %q, want %q", tc.path, b, tc.init)
		}
		if _, err := f.WriteAt([]byte("v1\n"), 0); err != nil {
			t.Errorf("%s: guest write: %v", tc.path, err)
		}
		b = make([]byte, 3)
		if _, err := k.ReadAt(b, 0); err != nil || string(b) != "v1\n" {
			t.Errorf("%s: the kernel reads %q, %v", tc.path, b, err)
		}
		f.Close()
		k.Close()
	}
	// Reads stay snapshots.
	if got, err := read(t, root, c, "sys/kernel/hostname"); err != nil || got != "kernel/hostname\n" {
		t.Errorf("read: %q, %v", got, err)
	}
}
