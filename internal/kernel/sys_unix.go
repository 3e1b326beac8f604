package kernel

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/umltools/umltools/internal/abi"
	"github.com/umltools/umltools/internal/sandbox"
	"github.com/umltools/umltools/internal/vfs"
)

// AF_UNIX sockets named by paths in the guest's filesystem.
//
// A guest socket bound to a path is bound, by the engine on a
// pidfd_getfd copy of it, to a host path in a directory of the engine's
// own (outside the guests' host root, so no guest can name it), and an
// S_IFSOCK node is made at the guest path. connect and sendto with a path
// resolve it in the guest's filesystem (with Linux's errors and the write
// permission on the node) and connect or send, again in the engine on a
// copy of the guest's socket, to the host path recorded for that node.
// Everything else (reading, writing, SCM_RIGHTS on connected sockets,
// listen, accept, poll) stays native. The addresses the host reports
// (getsockname, getpeername, accept, recvfrom, recvmsg) name host paths;
// those syscalls stop at their exit (ptrace) while any socket is bound,
// and the engine puts back the guest's name.

// sunPathMax is sizeof(struct sockaddr_un): family and sun_path[108].
const sunPathMax = 110

// unixNode identifies a socket node: the mount's device and the inode.
type unixNode struct{ dev, ino uint64 }

// unixBinding is one guest path binding.
type unixBinding struct {
	host  string // the host path the socket is bound to
	guest string // sun_path as the guest gave it to bind
	node  unixNode
}

// unixNames is the kernel's table of path bindings. It has its own lock:
// the tracer thread reads it (address translation) without the kernel's.
type unixNames struct {
	mu     sync.Mutex
	dir    string // the engine's private directory of host sockets
	next   int
	byNode map[unixNode]*unixBinding
	byHost map[string]*unixBinding
	live   int          // bindings found alive at the last sweep
	count  atomic.Int32 // len(byHost), for the tracer's fast path
	// noCreds is set when the host refused credentials the engine
	// passed for a guest (an unprivileged engine may not).
	noCreds atomic.Bool
	// pending are the address buffers of syscalls stopped for their
	// exit, by host tid (the tracer thread only).
	pending map[int]unixPending
}

// newHost returns a fresh host path for a binding.
func (u *unixNames) newHost() (string, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.dir == "" {
		base := os.TempDir()
		if len(base) > 60 {
			base = "/tmp" // sun_path holds 107 bytes
		}
		d, err := os.MkdirTemp(base, "uml-sock-")
		if err != nil {
			return "", fmt.Errorf("unix sockets: %w", err)
		}
		u.dir = d
	}
	u.next++
	return filepath.Join(u.dir, strconv.Itoa(u.next)), nil
}

func (u *unixNames) add(b *unixBinding) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.byNode == nil {
		u.byNode = map[unixNode]*unixBinding{}
		u.byHost = map[string]*unixBinding{}
	}
	if old := u.byNode[b.node]; old != nil {
		u.dropLocked(old)
	}
	u.byNode[b.node] = b
	u.byHost[b.host] = b
	u.count.Store(int32(len(u.byHost)))
}

func (u *unixNames) dropLocked(b *unixBinding) {
	if u.byNode[b.node] == b {
		delete(u.byNode, b.node)
	}
	delete(u.byHost, b.host)
	os.Remove(b.host)
	u.count.Store(int32(len(u.byHost)))
}

// host returns the host path bound for a socket node.
func (u *unixNames) host(n unixNode) (string, bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	b := u.byNode[n]
	if b == nil {
		return "", false
	}
	return b.host, true
}

// guestName returns the guest's sun_path for a host address as the host
// reported it (possibly cut to the caller's buffer: then any one binding
// it is the start of, when only one is).
func (u *unixNames) guestName(host string, full bool) (string, bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if b := u.byHost[host]; b != nil {
		return b.guest, true
	}
	if full {
		return "", false
	}
	found := ""
	for h, b := range u.byHost {
		if strings.HasPrefix(h, host) {
			if found != "" {
				return "", false
			}
			found = b.guest
		}
	}
	return found, found != ""
}

// sweep forgets the bindings whose sockets are gone: the host paths
// still bound by some socket of the guest's network namespace are listed
// in /proc/<tgid>/net/unix of any guest process. It runs when the table
// has doubled since the last sweep.
func (u *unixNames) sweep(tgid int) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.byHost) < 2*u.live+16 {
		return
	}
	f, err := os.Open("/proc/" + strconv.Itoa(tgid) + "/net/unix")
	if err != nil {
		return
	}
	defer f.Close()
	bound := map[string]bool{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if fl := strings.Fields(sc.Text()); len(fl) >= 8 {
			bound[fl[7]] = true
		}
	}
	if sc.Err() != nil {
		return
	}
	for h, b := range u.byHost {
		if !bound[h] {
			u.dropLocked(b)
		}
	}
	u.live = len(u.byHost)
}

// close removes the host sockets' directory.
func (u *unixNames) close() error {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.dir == "" {
		return nil
	}
	if err := os.RemoveAll(u.dir); err != nil {
		return fmt.Errorf("unix sockets: %w", err)
	}
	u.dir = ""
	return nil
}

// takeGuestFd copies the calling thread's fd n into the engine (the
// thread's own fd table: a thread made without CLONE_FILES has one).
func (c *call) takeGuestFd(n int) (int, error) {
	pidfd, err := unix.PidfdOpen(c.th.Tid, unix.PIDFD_THREAD)
	if err != nil {
		return c.k.takeFd(c.p.Tgid, n)
	}
	defer unix.Close(pidfd)
	return unix.PidfdGetfd(pidfd, n, 0)
}

// unixSock copies guest fd n when it is an AF_UNIX socket, with its type
// (SOCK_STREAM, SOCK_DGRAM, SOCK_SEQPACKET). ok is false for any other
// fd, with the error (EBADF, ENOTSOCK) or, for a socket of another
// family, continued: the host then answers itself with a family error,
// reading no path.
func (c *call) unixSock(n int) (s, typ int, ok bool, r int64) {
	s, err := c.takeGuestFd(n)
	if err != nil {
		// Never continued: the host would resolve the path itself.
		return -1, 0, false, errno(err)
	}
	dom, err := unix.GetsockoptInt(s, unix.SOL_SOCKET, unix.SO_DOMAIN)
	if err != nil {
		unix.Close(s)
		return -1, 0, false, errno(err) // ENOTSOCK
	}
	if dom != unix.AF_UNIX {
		unix.Close(s)
		return -1, 0, false, continued
	}
	typ, err = unix.GetsockoptInt(s, unix.SOL_SOCKET, unix.SO_TYPE)
	if err != nil {
		unix.Close(s)
		return -1, 0, false, errno(err)
	}
	return s, typ, true, 0
}

// unixBind binds guest socket fd to path.
func (c *call) unixBind(fd int, path string) int64 {
	s, _, ok, r := c.unixSock(fd)
	if !ok {
		return r
	}
	defer unix.Close(s)
	w, r := c.walker(abi.AT_FDCWD, path)
	if r < 0 {
		return r
	}
	dir, name, trailing, err := w.Parent(path)
	if err != nil {
		return errno(err)
	}
	// Linux makes the node first: an existing name (a dangling symlink
	// too) is EADDRINUSE before anything else.
	if name == "" || c.exists(dir, name) {
		return -abi.EADDRINUSE
	}
	if trailing {
		return -abi.ENOENT
	}
	if r := c.mayWrite(dir); r < 0 {
		return r
	}
	wd, ok := dir.Node.(vfs.WritableDir)
	if !ok {
		return -abi.EROFS
	}
	if bound(s) {
		return -abi.EINVAL
	}
	n, err := wd.Mknod(name, syscall.S_IFSOCK|0o777&^c.p.FS.Umask, 0, c.p.Cred.Fsuid, c.p.Cred.Fsgid)
	if err != nil {
		return errno(err)
	}
	c.k.vfs.Forget(dir, name)
	undo := func() {
		wd.Unlink(name)
		c.k.vfs.Forget(dir, name)
	}
	a, err := n.Attr()
	if err != nil {
		undo()
		return errno(err)
	}
	host, err := c.k.unix.newHost()
	if err != nil {
		undo()
		return -abi.ENOMEM
	}
	if err := unix.Bind(s, &unix.SockaddrUnix{Name: host}); err != nil {
		undo()
		return errno(err)
	}
	c.k.unix.add(&unixBinding{host: host, guest: path, node: unixNode{dir.Mount.Dev, a.Ino}})
	if c.k.init != nil {
		c.k.unix.sweep(c.k.init.Tgid)
	}
	return 0
}

// bound reports whether socket s has a name (x/sys's Getsockname shows
// an unnamed socket as "@").
func bound(s int) bool {
	var b [sunPathMax]byte
	l := uint32(len(b))
	_, _, e := unix.RawSyscall(unix.SYS_GETSOCKNAME, uintptr(s), uintptr(unsafe.Pointer(&b[0])), uintptr(unsafe.Pointer(&l)))
	return e == 0 && l > 2
}

// unixTarget resolves the path of a connect or send: the host path of
// the socket bound there.
func (c *call) unixTarget(path string) (string, int64) {
	d, r := c.lookup(abi.AT_FDCWD, path, true)
	if r < 0 {
		return "", r
	}
	a, err := d.Node.Attr()
	if err != nil {
		return "", errno(err)
	}
	if a.Type() != syscall.S_IFSOCK {
		return "", -abi.ECONNREFUSED
	}
	if r := c.permit(&a, 2); r < 0 {
		return "", r
	}
	host, ok := c.k.unix.host(unixNode{d.Mount.Dev, a.Ino})
	if !ok {
		return "", -abi.ECONNREFUSED // a node no socket is bound to
	}
	return host, 0
}

// unixConnect connects guest socket fd to the socket bound at path.
func (c *call) unixConnect(fd int, path string) int64 {
	s, typ, ok, r := c.unixSock(fd)
	if !ok {
		return r
	}
	host, r := c.unixTarget(path)
	if r < 0 {
		unix.Close(s)
		return r
	}
	sa := &unix.SockaddrUnix{Name: host}
	fl, err := unix.FcntlInt(uintptr(s), unix.F_GETFL, 0)
	if err != nil {
		unix.Close(s)
		return errno(err)
	}
	if typ == unix.SOCK_DGRAM || fl&unix.O_NONBLOCK != 0 {
		// Nothing waits: a datagram connect only names the peer, and a
		// non-blocking stream connect fails EAGAIN when the listener's
		// backlog is full.
		err := unix.Connect(s, sa)
		unix.Close(s)
		return errno(err)
	}
	// A blocking stream connect waits while the backlog is full. Try
	// without waiting (O_NONBLOCK for the instant of the call), then wait
	// on another goroutine so other guests go on.
	unix.FcntlInt(uintptr(s), unix.F_SETFL, fl|unix.O_NONBLOCK)
	err = unix.Connect(s, sa)
	unix.FcntlInt(uintptr(s), unix.F_SETFL, fl)
	if err != unix.EAGAIN {
		unix.Close(s)
		return errno(err)
	}
	later, tid := c.n.Detach(), c.th.Tid
	c.detached = true
	go c.k.finishLater(c, later, func() int64 {
		defer unix.Close(s)
		return waitConnect(s, sa, func() bool { return interrupted(tid, later) })
	})
	return answered
}

// waitSlice is how long one wait of a detached syscall lasts before it
// looks whether a signal is due to the guest thread.
const waitSlice = 20 * time.Millisecond

// errRestartSys is ERESTARTSYS: answered for a detached syscall that a
// signal interrupts, it restarts the syscall after a SA_RESTART handler
// and fails it with EINTR otherwise, as the host's own waits do.
const errRestartSys = 512

// interrupted reports whether host thread tid has a signal it does not
// block pending, or is gone. (The guest waits for an answer killably
// only, WAIT_KILLABLE_RECV: the engine ends the wait for the signal.)
func interrupted(tid int, n *sandbox.Notification) bool {
	if !n.Valid() {
		return true
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(tid) + "/status")
	if err != nil {
		return true
	}
	var pnd, blk uint64
	for _, l := range strings.Split(string(b), "\n") {
		k, v, _ := strings.Cut(l, ":")
		x, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
		if err != nil {
			continue
		}
		switch k {
		case "SigPnd", "ShdPnd":
			pnd |= x
		case "SigBlk":
			blk = x
		}
	}
	return pnd&^blk != 0
}

// waitConnect is a blocking stream connect, in waits of waitSlice (the
// socket's send timeout bounds a unix connect's wait), until it is done,
// a signal interrupts it, or the guest's own SO_SNDTIMEO, if any, ends.
func waitConnect(s int, sa unix.Sockaddr, stop func() bool) int64 {
	orig, err := unix.GetsockoptTimeval(s, unix.SOL_SOCKET, unix.SO_SNDTIMEO)
	if err != nil {
		return errno(err)
	}
	var deadline time.Time
	if orig.Sec != 0 || orig.Usec != 0 {
		deadline = time.Now().Add(time.Duration(orig.Nano()))
	}
	slice := unix.NsecToTimeval(waitSlice.Nanoseconds())
	unix.SetsockoptTimeval(s, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &slice)
	defer unix.SetsockoptTimeval(s, unix.SOL_SOCKET, unix.SO_SNDTIMEO, orig)
	for {
		err := unix.Connect(s, sa)
		if err != unix.EAGAIN && err != unix.EINTR {
			return errno(err)
		}
		if stop() {
			return -errRestartSys
		}
		if !deadline.IsZero() && time.Now().After(deadline) {
			return -abi.EAGAIN
		}
	}
}

// finishLater runs a detached syscall's wait on its own goroutine and
// answers it.
func (k *Kernel) finishLater(c *call, n *sandbox.Notification, wait func() int64) {
	r := wait()
	if k.cfg.Trace != nil {
		k.mu.Lock()
		k.trace(c, r)
		k.mu.Unlock()
	}
	if r < 0 {
		n.Fail(int(-r))
	} else {
		n.Return(r)
	}
}
