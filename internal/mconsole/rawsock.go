package mconsole

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// rawAddr is a peer's socket address kept as the exact bytes recvfrom
// returned. The C client binds a 110-byte abstract name whose trailing zero
// bytes are part of the name; converting through unix.SockaddrUnix would
// cut them off and the reply would go nowhere.
type rawAddr []byte

// recvFrom reads one datagram into b and returns its length and the
// sender's address.
func recvFrom(fd int, b []byte) (int, rawAddr, error) {
	var sa unix.RawSockaddrAny
	salen := uint32(unsafe.Sizeof(sa))
	var p unsafe.Pointer
	if len(b) > 0 {
		p = unsafe.Pointer(&b[0])
	}
	n, _, e := unix.Syscall6(unix.SYS_RECVFROM, uintptr(fd), uintptr(p), uintptr(len(b)), 0,
		uintptr(unsafe.Pointer(&sa)), uintptr(unsafe.Pointer(&salen)))
	if e != 0 {
		return 0, nil, e
	}
	if salen > uint32(unsafe.Sizeof(sa)) {
		salen = uint32(unsafe.Sizeof(sa))
	}
	addr := make(rawAddr, salen)
	copy(addr, unsafe.Slice((*byte)(unsafe.Pointer(&sa)), salen))
	return int(n), addr, nil
}

// sendTo sends b to the raw address to. A zero-length address means the
// sender was unbound: there is nowhere to reply, which is not an error.
func sendTo(fd int, b []byte, to rawAddr) error {
	if len(to) <= 2 {
		return nil
	}
	_, _, e := unix.Syscall6(unix.SYS_SENDTO, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)),
		unix.MSG_DONTWAIT, uintptr(unsafe.Pointer(&to[0])), uintptr(len(to)))
	if e != 0 {
		return e
	}
	return nil
}
