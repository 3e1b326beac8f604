package procfs

import (
	"errors"
	"io"
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
