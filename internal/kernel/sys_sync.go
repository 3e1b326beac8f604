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

// HeldMemfds returns the host inode numbers of the memfds that guest
// processes hold, by an fd or a mapping, from one look at every process
// (a stat per fd, and its maps). It takes no lock: filesystems call it
// from their own goroutines and from syscalls.
func (k *Kernel) HeldMemfds() map[uint64]bool {
	held := map[uint64]bool{}
	pp := k.pids.Load()
	if pp == nil {
		return held
	}
	for _, pid := range *pp {
		dir := "/proc/" + strconv.Itoa(pid)
		if ents, err := os.ReadDir(dir + "/fd"); err == nil {
			for _, e := range ents {
				var st unix.Stat_t
				if unix.Stat(dir+"/fd/"+e.Name(), &st) == nil && st.Dev == k.memDev {
					held[st.Ino] = true
				}
			}
		}
		maps, err := os.ReadFile(dir + "/maps")
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(maps), "\n") {
			if !strings.Contains(line, "/memfd:") {
				continue
			}
			if f := strings.Fields(line); len(f) >= 6 {
				if ino, err := strconv.ParseUint(f[4], 10, 64); err == nil {
					held[ino] = true
				}
			}
		}
	}
	return held
}

// ForgetMemfd forgets what a dropped page cache memfd was, since the
// host may give its inode number to another memfd. Filesystems call it
// from the open that made room, in a syscall (k.mu held).
func (k *Kernel) ForgetMemfd(hostIno uint64) {
	delete(k.objs, hostKey{k.memDev, hostIno})
}
