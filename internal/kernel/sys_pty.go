package kernel

import (
	"os"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/umltools/umltools/internal/fs/devpts"
)

// Pseudo-terminals the guest allocates (script, ssh -t, tmux): /dev/ptmx
// gives the guest a host pty master, and /dev/pts lists the ptys whose
// master a guest process holds. A slave is opened from that master
// (TIOCGPTPEER), never by its host path: once the guest has closed its
// last master, the host may give the number to another of its users'
// terminals, which the guest must not reach.

// hostPtmx is the host's /dev/ptmx device number.
var hostPtmx = uint64(unix.Mkdev(5, 2))

// openPtmx opens a new host pty master for the guest and notes its
// slave's owner (the opener, group tty, as devpts gives).
func (c *call) openPtmx(flags int) (*os.File, int64) {
	fd, err := syscall.Open("/dev/ptmx", flags|syscall.O_NOCTTY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, errno(err)
	}
	n, err := unix.IoctlGetInt(fd, unix.TIOCGPTN)
	if err != nil {
		syscall.Close(fd)
		return nil, errno(err)
	}
	c.k.ptyOwners[n] = devpts.Pty{N: n, Uid: c.p.Cred.Fsuid, Gid: ttyGid}
	return os.NewFile(uintptr(fd), "/dev/ptmx"), 0
}

// Ptys lists the ptys a guest process holds a master of (devpts.Source;
// k.mu held).
func (k *Kernel) Ptys() []devpts.Pty {
	var out []devpts.Pty
	k.ptyMasters(func(n, fd int) bool {
		p, ok := k.ptyOwners[n]
		if !ok {
			p = devpts.Pty{N: n, Gid: ttyGid}
		}
		out = append(out, p)
		return false
	})
	return out
}

// openPtySlave opens the slave of pty n from a master a guest process
// holds; ENXIO when none does (EIO in Linux for a closed pty).
func (k *Kernel) openPtySlave(n, flags int) (*os.File, int64) {
	var f *os.File
	var r int64 = -int64(syscall.ENXIO)
	k.ptyMasters(func(m, fd int) bool {
		if m != n {
			return false
		}
		s, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.TIOCGPTPEER, uintptr(flags|syscall.O_NOCTTY|syscall.O_CLOEXEC))
		if e != 0 {
			r = -int64(e)
			return true
		}
		f, r = os.NewFile(s, "/dev/pts/"+strconv.Itoa(n)), 0
		return true
	})
	return f, r
}

// ptyMasters calls fn with the number of each pty master a guest process
// holds and a copy of that fd (valid during the call), until fn returns
// true. Stale owner records are dropped.
func (k *Kernel) ptyMasters(fn func(n, fd int) bool) {
	seen := map[int]bool{}
	defer func() {
		for n := range k.ptyOwners {
			if !seen[n] {
				delete(k.ptyOwners, n)
			}
		}
	}()
	for tgid := range k.procs {
		dir := "/proc/" + strconv.Itoa(tgid) + "/fd/"
		ents, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		for _, e := range ents {
			var st unix.Stat_t
			if unix.Stat(dir+e.Name(), &st) != nil || st.Mode&syscall.S_IFMT != syscall.S_IFCHR || st.Rdev != hostPtmx {
				continue
			}
			num, err := strconv.Atoi(e.Name())
			if err != nil {
				continue
			}
			fd, err := k.takeFd(tgid, num)
			if err != nil {
				continue
			}
			n, err := unix.IoctlGetInt(fd, unix.TIOCGPTN)
			if err != nil || seen[n] {
				unix.Close(fd)
				continue
			}
			seen[n] = true
			done := fn(n, fd)
			unix.Close(fd)
			if done {
				return
			}
		}
	}
}
