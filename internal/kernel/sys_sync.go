package kernel

import (
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/umltools/umltools/internal/vfs"
)

// fsync, fdatasync, syncfs and sync: the guest's files are page cache
// memfds, so durability is the filesystem's write-back to its image.

// sysFsync serves fsync and fdatasync. Pipes, sockets and host devices
// run natively.
func (c *call) sysFsync(fd int, dataOnly bool) int64 {
	o, r := c.fd(fd)
	if r < 0 {
		return r
	}
	if o.d == nil {
		return continued
	}
	if s, ok := o.d.Node.(vfs.Syncer); ok {
		return errno(s.Sync(dataOnly))
	}
	return 0
}

// sysSyncfs serves syncfs: the filesystem holding fd.
func (c *call) sysSyncfs(fd int) int64 {
	o, r := c.fd(fd)
	if r < 0 {
		return r
	}
	if o.d == nil {
		return 0
	}
	if s, ok := o.d.Mount.FS.(vfs.SyncFS); ok {
		return errno(s.Sync())
	}
	return 0
}

// Sync writes back every mounted filesystem (sync(2), and the machine's
// halt). Errors are logged, as sync(2) reports none.
func (k *Kernel) Sync() {
	seen := map[vfs.FS]bool{}
	for _, m := range k.vfs.Mounts() {
		if seen[m.FS] {
			continue
		}
		seen[m.FS] = true
		if s, ok := m.FS.(vfs.SyncFS); ok {
			if err := s.Sync(); err != nil && k.cfg.Logf != nil {
				k.cfg.Logf("sync: %s: %v", m.FS.Type(), err)
			}
		}
	}
}

func (c *call) sysSync() int64 {
	c.k.Sync()
	return 0
}

// snapshotPids publishes the guest's host tgids (k.mu held).
func (k *Kernel) snapshotPids() {
	l := make([]int, 0, len(k.procs))
	for tgid := range k.procs {
		l = append(l, tgid)
	}
	k.pids.Store(&l)
}

// HostFileInUse reports whether a guest process holds the host file
// called name (its /proc/<pid>/fd link, "/memfd:<name> (deleted)" for a
// page cache memfd) with inode ino, by an fd or a mapping. It takes no
// lock: filesystems call it from their own goroutines and from syscalls.
func (k *Kernel) HostFileInUse(name string, ino uint64) bool {
	pp := k.pids.Load()
	if pp == nil {
		return false
	}
	link := "/memfd:" + name + " "
	for _, pid := range *pp {
		dir := "/proc/" + strconv.Itoa(pid)
		if ents, err := os.ReadDir(dir + "/fd"); err == nil {
			for _, e := range ents {
				t, err := os.Readlink(dir + "/fd/" + e.Name())
				if err != nil || !strings.HasPrefix(t+" ", link) {
					continue
				}
				var st unix.Stat_t
				if unix.Stat(dir+"/fd/"+e.Name(), &st) == nil && st.Ino == ino {
					return true
				}
			}
		}
		maps, err := os.ReadFile(dir + "/maps")
		if err != nil {
			continue
		}
		want := strconv.FormatUint(ino, 10)
		for _, line := range strings.Split(string(maps), "\n") {
			if !strings.Contains(line, link) {
				continue
			}
			if f := strings.Fields(line); len(f) >= 6 && f[4] == want {
				return true
			}
		}
	}
	return false
}
