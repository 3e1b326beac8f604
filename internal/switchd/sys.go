package switchd

import (
	"errors"
	"fmt"
	"os"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// mmsghdr is struct mmsghdr: a msghdr and the byte count the kernel fills.
type mmsghdr struct {
	hdr unix.Msghdr
	n   uint32
	_   [4]byte
}

// batch is a reusable vector of messages for recvmmsg/sendmmsg.
type batch struct {
	msgs  []mmsghdr
	iovs  []unix.Iovec
	names []Addr
}

func newBatch(n int) *batch {
	b := &batch{msgs: make([]mmsghdr, n), iovs: make([]unix.Iovec, n), names: make([]Addr, n)}
	for i := range b.msgs {
		b.msgs[i].hdr.Iov = &b.iovs[i]
		b.msgs[i].hdr.SetIovlen(1)
	}
	return b
}

// setBuf points message i at buf (and, when name is non-nil, at that
// address, for sending).
func (b *batch) set(i int, buf []byte, name *Addr) {
	b.iovs[i].Base = unsafe.SliceData(buf)
	b.iovs[i].SetLen(len(buf))
	if name != nil {
		b.msgs[i].hdr.Name = &name[0]
		b.msgs[i].hdr.Namelen = AddrLen
	} else {
		b.msgs[i].hdr.Name = nil
		b.msgs[i].hdr.Namelen = 0
	}
}

// setRecv points message i at buf and at the batch's own address slot.
func (b *batch) setRecv(i int, buf []byte) {
	b.iovs[i].Base = unsafe.SliceData(buf)
	b.iovs[i].SetLen(len(buf))
	b.msgs[i].hdr.Name = &b.names[i][0]
	b.msgs[i].hdr.Namelen = AddrLen
}

// recvmmsg receives up to n datagrams without blocking. For each one it
// fixes the sender's address so that bytes past the length the kernel
// wrote are zero, which makes addresses comparable as keys.
func (b *batch) recvmmsg(fd uintptr, n int) (int, error) {
	r, _, e := unix.RawSyscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&b.msgs[0])), uintptr(n), unix.MSG_DONTWAIT, 0, 0)
	if e != 0 {
		return 0, e
	}
	return b.received(int(r)), nil
}

// received normalises the addresses of the first got messages.
func (b *batch) received(got int) int {
	for i := 0; i < got; i++ {
		if l := b.msgs[i].hdr.Namelen; l < AddrLen {
			clear(b.names[i][l:])
		}
	}
	return got
}

// sendmmsg sends messages [0,n) without blocking. A message the kernel
// refuses (full receiver queue, vanished peer) is skipped and counted by
// fail(i, err); the rest still go out.
func (b *batch) sendmmsg(fd uintptr, n int, fail func(i int, err error)) {
	i := 0
	for i < n {
		r, _, e := unix.RawSyscall6(unix.SYS_SENDMMSG, fd, uintptr(unsafe.Pointer(&b.msgs[i])), uintptr(n-i), unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL, 0, 0)
		if e != 0 {
			if e == unix.EINTR {
				continue
			}
			fail(i, e)
			i++
			continue
		}
		i += int(r)
	}
}

// dgramSocket makes a non-blocking, close-on-exec AF_UNIX datagram socket
// bound to addr with the default buffer sizes (a client, like the UML
// kernel's) and wraps it in an *os.File registered with the runtime
// poller, so reads can wait without a thread and Close wakes them.
func dgramSocket(addr *Addr, what string) (*os.File, error) {
	fd, err := dgramFD(addr, what)
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(fd), what), nil
}

// dgramFD makes a non-blocking, close-on-exec AF_UNIX datagram socket
// bound to addr.
func dgramFD(addr *Addr, what string) (int, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("%s: socket: %w", what, err)
	}
	if err := bindRaw(fd, addr); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("%s: bind: %w", what, err)
	}
	return fd, nil
}

// bigBuffers enlarges a datagram socket's buffers.
func bigBuffers(fd int) {
	// Bigger buffers let bursts queue instead of being dropped; a
	// failure only costs throughput, so it is ignored. SO_SNDBUFFORCE
	// needs CAP_NET_ADMIN and falls back to the capped SO_SNDBUF.
	const buf = 4 << 20
	if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, buf) != nil {
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, buf)
	}
	if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, buf) != nil {
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, buf)
	}
}

// bindRaw binds fd to the full 110-byte address, exactly as the C
// programs do (address length sizeof(struct sockaddr_un)).
func bindRaw(fd int, addr *Addr) error {
	_, _, e := unix.RawSyscall(unix.SYS_BIND, uintptr(fd), uintptr(unsafe.Pointer(&addr[0])), AddrLen)
	if e != 0 {
		return e
	}
	return nil
}

// sendto sends one datagram to addr without blocking.
func sendto(fd uintptr, b []byte, addr *Addr) error {
	var p unsafe.Pointer
	if len(b) > 0 {
		p = unsafe.Pointer(&b[0])
	}
	_, _, e := unix.RawSyscall6(unix.SYS_SENDTO, fd, uintptr(p), uintptr(len(b)), unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL, uintptr(unsafe.Pointer(&addr[0])), AddrLen)
	if e != 0 {
		return e
	}
	return nil
}

// isAgain reports whether err means "would block".
func isAgain(err error) bool {
	return errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EWOULDBLOCK)
}

// rawRead runs f on the file's descriptor until it stops asking to wait.
func rawRead(rc syscall.RawConn, f func(fd uintptr) error) error {
	var ferr error
	err := rc.Read(func(fd uintptr) bool {
		ferr = f(fd)
		return !isAgain(ferr)
	})
	if err != nil {
		return err
	}
	return ferr
}

// rawWrite runs f on the file's descriptor until it stops asking to wait.
func rawWrite(rc syscall.RawConn, f func(fd uintptr) error) error {
	var ferr error
	err := rc.Write(func(fd uintptr) bool {
		ferr = f(fd)
		return !isAgain(ferr)
	})
	if err != nil {
		return err
	}
	return ferr
}
