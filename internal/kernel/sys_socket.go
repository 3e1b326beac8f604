package kernel

import (
	"bytes"
	"encoding/binary"

	"github.com/umltools/umltools/internal/abi"
)

const afUnix = 1

// unixPath reads a sockaddr and returns its AF_UNIX path (ok=false for
// other families and abstract names, which stay inside the guest's own
// network namespace).
func (c *call) unixPath(addr uint64, n int) (string, bool, int64) {
	if addr == 0 || n < 2 {
		return "", false, 0
	}
	if n > 110 {
		n = 110
	}
	b := make([]byte, n)
	if r := c.read(addr, b); r < 0 {
		return "", false, r
	}
	if binary.LittleEndian.Uint16(b) != afUnix || n == 2 || b[2] == 0 {
		return "", false, 0
	}
	p := b[2:]
	if i := bytes.IndexByte(p, 0); i >= 0 {
		p = p[:i]
	}
	return string(p), true, 0
}

// sockPath answers a bind, connect or send to an AF_UNIX path. Sockets
// bound in the guest's filesystem come with the next milestone; until
// then nothing listens on a path: connect finds the file or ENOENT and is
// refused, bind is refused. The guest's host root is the kernel's private
// directory, so even a raced address names no host socket.
func (c *call) sockPath(addr uint64, n int, bind bool) int64 {
	path, ok, r := c.unixPath(addr, n)
	if r < 0 || !ok {
		if r < 0 {
			return r
		}
		return continued
	}
	_, r = c.lookup(abi.AT_FDCWD, path, true)
	switch {
	case bind && r == 0:
		return -abi.EADDRINUSE
	case bind:
		return -abi.EACCES
	case r < 0:
		return r
	}
	return -abi.ECONNREFUSED
}

// sendmsgPath checks the destination of a sendmsg.
func (c *call) sendmsgPath(msg uint64) int64 {
	var h [16]byte
	if r := c.read(msg, h[:]); r < 0 {
		return r
	}
	name := binary.LittleEndian.Uint64(h[:])
	nlen := int(binary.LittleEndian.Uint32(h[8:]))
	if name == 0 {
		return continued
	}
	return c.sockPath(name, nlen, false)
}
