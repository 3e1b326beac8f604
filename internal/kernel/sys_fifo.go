package kernel

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/umltools/umltools/internal/abi"
	"github.com/umltools/umltools/internal/sandbox"
	"github.com/umltools/umltools/internal/vfs"
)

// Named pipes (FIFOs) in guest filesystems: each guest FIFO node stands
// for a host FIFO in the kernel's private directory, made at its first
// open; the guest's fd is the host FIFO opened with its flags, so reads,
// writes and poll run natively and peers meet as on Linux.

// fifoPath returns the host FIFO of guest FIFO d (k.mu held).
func (k *Kernel) fifoPath(d *vfs.Dentry, a *vfs.Attr) (string, error) {
	key := hostKey{d.Mount.Dev, a.Ino}
	if p, ok := k.fifos[key]; ok {
		if _, err := os.Lstat(p); err == nil {
			return p, nil
		}
	}
	dir := filepath.Join(k.priv, "p")
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return "", fmt.Errorf("fifo: %w", err)
	}
	k.nextFile++
	p := filepath.Join(dir, "p"+strconv.Itoa(k.nextFile))
	if err := unix.Mkfifo(p, 0o600); err != nil {
		return "", fmt.Errorf("fifo %s: %w", p, err)
	}
	k.fifos[key] = p
	return p, nil
}

// openFifo opens guest FIFO d. O_RDWR and O_NONBLOCK opens never wait
// (a non-blocking writer without a reader gets ENXIO, as on Linux); a
// blocking open waits for its peer on another goroutine, so that other
// guest threads go on, and a signal to the guest ends the wait (EINTR,
// or a restart after an SA_RESTART handler).
func (c *call) openFifo(d *vfs.Dentry, a *vfs.Attr, flags int, cloexec bool) int64 {
	p, err := c.k.fifoPath(d, a)
	if err != nil {
		c.k.cfg.Logf("%v", err)
		return -abi.EIO
	}
	keep := flags & (syscall.O_ACCMODE | syscall.O_APPEND | syscall.O_NONBLOCK)
	acc := flags & syscall.O_ACCMODE
	if acc == syscall.O_RDWR || flags&syscall.O_NONBLOCK != 0 {
		fd, err := syscall.Open(p, keep|syscall.O_CLOEXEC, 0)
		if err != nil {
			return errno(err)
		}
		return c.install(os.NewFile(uintptr(fd), p), d, cloexec)
	}
	later, tid := c.n.Detach(), c.th.Tid
	c.detached = true
	go c.k.openFifoLater(c, later, tid, p, keep, d, cloexec)
	return answered
}

// openFifoLater is a blocking FIFO open: the open waits on this
// goroutine; a second one watches for a signal to the guest thread and
// then releases the open with a peer of its own, which is closed at once.
func (k *Kernel) openFifoLater(c *call, n *sandbox.Notification, tid int, p string, flags int, d *vfs.Dentry, cloexec bool) {
	type result struct {
		fd  int
		err error
	}
	done := make(chan result, 1)
	go func() {
		for {
			fd, err := syscall.Open(p, flags|syscall.O_CLOEXEC, 0)
			if err != syscall.EINTR {
				done <- result{fd, err}
				return
			}
		}
	}()
	var res result
	tick := time.NewTicker(waitSlice)
	defer tick.Stop()
	for stop := false; ; {
		select {
		case res = <-done:
		case <-tick.C:
			if !stop && interrupted(tid, n) {
				stop = true
				// The other end, for an instant: the open returns.
				peer := syscall.O_WRONLY
				if flags&syscall.O_ACCMODE != syscall.O_RDONLY {
					peer = syscall.O_RDONLY
				}
				if pfd, err := syscall.Open(p, peer|syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0); err == nil {
					defer syscall.Close(pfd)
				}
			}
			continue
		}
		break
	}
	if res.err != nil {
		n.Fail(int(res.err.(syscall.Errno)))
		return
	}
	f := os.NewFile(uintptr(res.fd), p)
	defer f.Close()
	if interrupted(tid, n) {
		n.Fail(errRestartSys)
		return
	}
	k.mu.Lock()
	k.register(f, d)
	nfd, err := n.AddFd(f, cloexec)
	if k.cfg.Trace != nil {
		r := int64(nfd)
		if err != nil {
			r = -abi.EINTR
		}
		k.trace(c, r)
	}
	k.mu.Unlock()
}
