package kernel

import (
	"errors"
	"os"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/umltools/umltools/internal/abi"
	"github.com/umltools/umltools/internal/sandbox"
	"github.com/umltools/umltools/internal/vfs"
)

// call is one syscall being served.
type call struct {
	k    *Kernel
	n    *sandbox.Notification
	mem  *sandbox.Task
	th   *Thread
	p    *Process
	args [6]uint64
	// newfd is the fd an answered open installed (for the trace).
	newfd int
	// detached is set when another goroutine answers (and traces) the
	// syscall later (sys_unix.go).
	detached bool
	// strs are the strings read from guest memory, by address (for the
	// trace).
	strs map[uint64]string
}

// errno converts an error to a negative errno result.
func errno(err error) int64 {
	var e syscall.Errno
	switch {
	case err == nil:
		return 0
	case errors.As(err, &e):
		return -int64(e)
	case errors.Is(err, sandbox.ErrFault):
		return -abi.EFAULT
	case errors.Is(err, sandbox.ErrTooLong):
		return -abi.ENAMETOOLONG
	case errors.Is(err, os.ErrNotExist):
		return -abi.ENOENT
	}
	return -abi.EIO
}

// str reads a path argument.
func (c *call) str(addr uint64) (string, int64) {
	if addr == 0 {
		return "", -abi.EFAULT
	}
	s, err := c.mem.ReadString(addr, vfs.PathMax)
	if err != nil {
		return "", errno(err)
	}
	if c.k.cfg.Trace != nil {
		if c.strs == nil {
			c.strs = map[uint64]string{}
		}
		c.strs[addr] = s
	}
	return s, 0
}

// write copies b to guest memory at addr.
func (c *call) write(addr uint64, b []byte) int64 {
	if len(b) == 0 {
		return 0
	}
	if addr == 0 {
		return -abi.EFAULT
	}
	if _, err := c.mem.WriteMem(addr, b); err != nil {
		return -abi.EFAULT
	}
	return 0
}

// read copies guest memory at addr into b.
func (c *call) read(addr uint64, b []byte) int64 {
	if addr == 0 {
		return -abi.EFAULT
	}
	if _, err := c.mem.ReadMem(addr, b); err != nil {
		return -abi.EFAULT
	}
	return 0
}

func (c *call) ctx() *vfs.Ctx {
	return &vfs.Ctx{Who: func() (int, int) { return c.p.Pid(), c.th.NsID() }}
}

// walker returns a path walker starting at dirfd (AT_FDCWD for the cwd)
// for a path; absolute paths ignore dirfd.
func (c *call) walker(dirfd int, path string) (*vfs.Walker, int64) {
	w := &vfs.Walker{V: c.k.vfs, Ctx: c.ctx(), Root: c.p.FS.Root, Cwd: c.p.FS.Cwd}
	if dirfd == abi.AT_FDCWD || (len(path) > 0 && path[0] == '/') {
		return w, 0
	}
	o, r := c.fd(dirfd)
	if r < 0 {
		return nil, r
	}
	if o.d == nil {
		return nil, -abi.ENOTDIR
	}
	if a, err := o.d.Node.Attr(); err != nil || !a.IsDir() {
		return nil, -abi.ENOTDIR
	}
	w.Cwd = o.d
	return w, 0
}

// fdObj is what a guest fd refers to.
type fdObj struct {
	d    *vfs.Dentry // the guest object, nil for host objects (pipes, sockets)
	st   unix.Stat_t // the host object's stat
	host bool        // a host object the engine did not make
}

// fd identifies guest fd n of the calling thread by its host identity.
func (c *call) fd(n int) (*fdObj, int64) {
	return c.k.fdObject(c.th.Tid, n)
}

func (k *Kernel) fdObject(tid, n int) (*fdObj, int64) {
	if n < 0 {
		return nil, -abi.EBADF
	}
	o := &fdObj{}
	if err := k.statFd(tid, n, &o.st); err != nil {
		if err == unix.ENOENT {
			return nil, -abi.EBADF
		}
		// A path we cannot follow (a socket or anon inode fails stat
		// only in odd cases): a host object.
		o.host = true
		return o, 0
	}
	key := hostKey{o.st.Dev, o.st.Ino}
	if d := k.objs[key]; d != nil {
		o.d = d
		return o, 0
	}
	if d := k.procObjs[key]; d != nil {
		o.d = d
		return o, 0
	}
	if name := k.ttyName(&o.st); name != "" {
		// A console or line's pty (init's fds, or opened by an alias):
		// its own node, so that ttyname(3) finds it.
		if d := k.devNode(name); d != nil {
			o.d = d
			return o, 0
		}
	}
	o.host = true
	return o, 0
}

// statFd stats the host object behind fd n of thread tid, through the
// thread's /proc/<tid>/fd directory when the kernel knows the thread.
func (k *Kernel) statFd(tid, n int, st *unix.Stat_t) error {
	name := strconv.Itoa(n)
	th := k.threads[tid]
	if th == nil {
		return unix.Stat("/proc/"+strconv.Itoa(tid)+"/fd/"+name, st)
	}
	if th.fdDir == 0 {
		fd, err := unix.Open("/proc/"+strconv.Itoa(tid)+"/fd", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		th.fdDir = fd + 1
	}
	return unix.Fstatat(th.fdDir-1, name, st, 0)
}

// devNode looks up a /dev path in the guest's tree (nil if it is not
// there).
func (k *Kernel) devNode(path string) *vfs.Dentry {
	root := k.vfs.Root()
	d, err := (&vfs.Walker{V: k.vfs, Root: root, Cwd: root}).Lookup(path, true)
	if err != nil {
		return nil
	}
	return d
}

// register remembers the host identity of a file installed for dentry d.
func (k *Kernel) register(f *os.File, d *vfs.Dentry) {
	var st unix.Stat_t
	if unix.Fstat(int(f.Fd()), &st) != nil {
		return
	}
	key := hostKey{st.Dev, st.Ino}
	if d.Mount.FS.Dynamic() {
		if len(k.procObjs) > 4096 {
			k.procObjs = map[hostKey]*vfs.Dentry{}
		}
		k.procObjs[key] = d
		return
	}
	k.objs[key] = d
}

// install gives the guest a copy of f as its lowest free fd, answering
// the syscall with the number.
func (c *call) install(f *os.File, d *vfs.Dentry, cloexec bool) int64 {
	defer f.Close()
	if d != nil {
		c.k.register(f, d)
	}
	nfd, err := c.n.AddFd(f, cloexec)
	c.newfd = nfd
	if err != nil {
		if errors.Is(err, sandbox.ErrGone) {
			return answered
		}
		if errors.Is(err, syscall.EMFILE) {
			return -abi.EMFILE
		}
		return errno(err)
	}
	return answered
}
