package kernel

import (
	"bytes"
	"encoding/binary"

	"golang.org/x/sys/unix"

	"github.com/umltools/umltools/internal/abi"
)

const afUnix = 1

// unixPath reads a sockaddr and returns its AF_UNIX path (ok=false for
// other families, autobind and abstract names, which stay inside the
// guest's own network namespace). An AF_UNIX address longer than struct
// sockaddr_un is EINVAL, as Linux has it.
func (c *call) unixPath(addr uint64, n int) (string, bool, int64) {
	if addr == 0 || n < 2 {
		return "", false, 0
	}
	b := make([]byte, min(n, sunPathMax))
	if r := c.read(addr, b); r < 0 {
		return "", false, r
	}
	if binary.LittleEndian.Uint16(b) != afUnix || len(b) == 2 || b[2] == 0 {
		return "", false, 0
	}
	if n > sunPathMax {
		return "", false, -abi.EINVAL
	}
	p := b[2:]
	if i := bytes.IndexByte(p, 0); i >= 0 {
		p = p[:i]
	}
	return string(p), true, 0
}

// sockPath answers a bind, connect or sendto (the syscall being served)
// whose address is at addr: AF_UNIX paths are served by the engine
// (sys_unix.go), every other address runs natively in the guest's network
// namespace.
func (c *call) sockPath(addr uint64, n int, bind bool) int64 {
	path, ok, r := c.unixPath(addr, n)
	if r < 0 || !ok {
		if r < 0 {
			return r
		}
		return continued
	}
	fd := int(int32(c.args[0]))
	switch {
	case bind:
		return c.unixBind(fd, path)
	case c.n.Nr == abi.SYS_CONNECT:
		return c.unixConnect(fd, path)
	}
	// sendto(fd, buf, len, flags, addr, addrlen)
	buf, size, flags := c.args[1], c.args[2], int(int32(c.args[3]))
	return c.unixSendTo(fd, path, flags, func(max int) ([][]byte, []byte, int64) {
		if size > uint64(max) {
			return nil, nil, -int64(unix.EMSGSIZE)
		}
		b := make([]byte, size)
		if size > 0 {
			if r := c.read(buf, b); r < 0 {
				return nil, nil, r
			}
		}
		return [][]byte{b}, nil, 0
	})
}

// sendmsgPath serves a sendmsg whose destination may be a path, and a
// sendmmsg (called for each of its messages by dispatch: the first call
// serves them all when any names a path).
func (c *call) sendmsgPath(msg uint64) int64 {
	fd := int(int32(c.args[0]))
	if c.n.Nr == abi.SYS_SENDMMSG {
		if msg != c.args[1] {
			return continued // the first call decided for the vector
		}
		return c.unixSendmmsg(fd, msg, int(uint32(c.args[2])), int(int32(c.args[3])))
	}
	h, r := c.readMsghdr(msg)
	if r < 0 {
		return r
	}
	if h.name == 0 {
		return continued
	}
	if r := c.inetSendTo(fd, h.name, int(h.namelen), func() ([]byte, int64) {
		parts, _, r := c.readMsg(h, 65535)
		return bytes.Join(parts, nil), r
	}); r != continued {
		return r
	}
	path, ok, r := c.unixPath(h.name, int(h.namelen))
	if r < 0 || !ok {
		if r < 0 {
			return r
		}
		return continued
	}
	return c.unixSendTo(fd, path, int(int32(c.args[2])), func(max int) ([][]byte, []byte, int64) {
		return c.readMsg(h, max)
	})
}
