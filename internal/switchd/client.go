package switchd

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/user"
	"strconv"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// DialOptions tunes Dial.
type DialOptions struct {
	// Version is the request version: 3 (the default when zero, what
	// the 6.1 kernel sends) or 1.
	Version int
	// V0 sends a version 0 request instead (no reply; DataPath names the
	// switch's data socket, as for `uml_switch -compat-v0`).
	V0 bool
	// MAC is sent in v0/v1 requests (v3 carries none).
	MAC [6]byte
	// DataPath is the switch's data socket for version 0 (default
	// /tmp/uml.data).
	DataPath string
	// Timeout bounds connecting and reading the reply (default 10 s).
	Timeout time.Duration

	// The VDE dialect (vde_switch, as libvdeplug speaks it): Port asks
	// for that port (0: any); Description follows the v3 request; with
	// DataDir set the data socket is a file there, named as libvdeplug
	// names it (vde_switch looks at it), with mode DataMode (0700 when
	// zero) and group DataGroup (a name or number; "": unchanged),
	// removed by Close.
	Port        int
	Description string
	DataDir     string
	DataMode    os.FileMode
	DataGroup   string
}

// Conn is one port on a switch, seen from the client: the control stream
// (the port's lifetime) and a datagram socket exchanging raw Ethernet
// frames with the switch. One goroutine may read while another writes.
type Conn struct {
	ctl    *net.UnixConn
	data   *os.File
	rc     syscall.RawConn
	local  Addr
	remote Addr
	path   string // the data socket's file, when it has one
	rb, wb *batch
}

// NewClientAddr returns a fresh abstract address laid out like the
// kernel's: a zero byte, three pad bytes, the pid and a microsecond
// count, here followed by random bytes so that one process can open many.
func NewClientAddr() Addr {
	var a Addr
	binary.LittleEndian.PutUint16(a[:], 1)
	binary.LittleEndian.PutUint32(a[6:], uint32(os.Getpid()))
	binary.LittleEndian.PutUint32(a[10:], uint32(time.Now().Nanosecond()/1000))
	rand.Read(a[14:30])
	return a
}

// Dial connects to the switch whose control socket is ctlPath with a v3
// request, as a UML kernel's daemon transport does.
func Dial(ctlPath string) (*Conn, error) { return DialWith(ctlPath, DialOptions{}) }

// DialWith connects to the switch at ctlPath with the given options.
func DialWith(ctlPath string, o DialOptions) (*Conn, error) {
	if o.Version == 0 {
		o.Version = 3
	}
	if o.V0 {
		o.Version = 0
	}
	if o.Timeout == 0 {
		o.Timeout = 10 * time.Second
	}
	c := &Conn{local: NewClientAddr(), rb: newBatch(64), wb: newBatch(64)}
	var err error
	if o.DataDir != "" {
		err = c.bindInDir(o)
	} else {
		c.data, err = dgramSocket(&c.local, "daemon data socket")
	}
	if err != nil {
		return nil, err
	}
	if c.rc, err = c.data.SyscallConn(); err != nil {
		c.data.Close()
		return nil, err
	}
	d := net.Dialer{Timeout: o.Timeout}
	nc, err := d.Dial("unix", ctlPath)
	if err != nil {
		c.data.Close()
		return nil, fmt.Errorf("control connect %s: %w", ctlPath, err)
	}
	c.ctl = nc.(*net.UnixConn)
	var req []byte
	switch o.Version {
	case 3:
		req = AppendV3(nil, &c.local)
		binary.LittleEndian.PutUint32(req[8:], ReqNewControl+uint32(o.Port)<<8)
		req = append(req, o.Description...)
	case 1:
		req = AppendV1(nil, o.MAC, &c.local)
	case 0:
		req = AppendV0(nil, o.MAC, &c.local)
	default:
		c.Close()
		return nil, fmt.Errorf("%s: unsupported request version %d", ctlPath, o.Version)
	}
	if _, err := c.ctl.Write(req); err != nil {
		c.Close()
		return nil, fmt.Errorf("%s: sending request: %w", ctlPath, err)
	}
	if o.Version == 0 {
		p := o.DataPath
		if p == "" {
			p = "/tmp/uml.data"
		}
		if c.remote, err = PathAddr(p); err != nil {
			c.Close()
			return nil, err
		}
	} else {
		c.ctl.SetReadDeadline(time.Now().Add(o.Timeout))
		if _, err := io.ReadFull(c.ctl, c.remote[:]); err != nil {
			c.Close()
			return nil, fmt.Errorf("%s: reading the data socket address: %w", ctlPath, err)
		}
		c.ctl.SetReadDeadline(time.Time{})
	}
	// Connecting the data socket lets the kernel tell us when the
	// switch's queue has room (instead of failing with EAGAIN), and it
	// lifts the receive queue limit for frames from the switch.
	var cerr error
	c.rc.Control(func(fd uintptr) {
		_, _, e := unix.RawSyscall(unix.SYS_CONNECT, fd, uintptr(unsafe.Pointer(&c.remote[0])), AddrLen)
		if e != 0 {
			cerr = e
		}
	})
	if cerr != nil {
		c.Close()
		return nil, fmt.Errorf("%s: connecting to data socket %s: %w", ctlPath, c.remote.String(), cerr)
	}
	return c, nil
}

// LocalAddr is the client's data socket address (the port's key).
func (c *Conn) LocalAddr() Addr { return c.local }

// SwitchAddr is the switch's data socket address from the reply.
func (c *Conn) SwitchAddr() Addr { return c.remote }

// Control is the control stream; it reads EOF when the switch goes away.
func (c *Conn) Control() *net.UnixConn { return c.ctl }

// SetReadDeadline bounds ReadFrame and ReadFrames.
func (c *Conn) SetReadDeadline(t time.Time) error { return c.data.SetReadDeadline(t) }

// SetWriteDeadline bounds WriteFrame and WriteFrames.
func (c *Conn) SetWriteDeadline(t time.Time) error { return c.data.SetWriteDeadline(t) }

// WriteFrame sends one frame, waiting while the switch's queue is full.
func (c *Conn) WriteFrame(b []byte) error {
	return rawWrite(c.rc, func(fd uintptr) error {
		_, err := unix.Write(int(fd), b)
		return err
	})
}

// ReadFrame receives one frame into b and returns its length.
func (c *Conn) ReadFrame(b []byte) (int, error) {
	var n int
	err := rawRead(c.rc, func(fd uintptr) error {
		var err error
		n, err = unix.Read(int(fd), b)
		return err
	})
	return n, err
}

// WriteFrames sends frames in as few system calls as it can, waiting
// while the switch's queue is full. It returns how many were sent.
func (c *Conn) WriteFrames(frames [][]byte) (int, error) {
	sent := 0
	for sent < len(frames) {
		n := min(len(frames)-sent, len(c.wb.msgs))
		for i := 0; i < n; i++ {
			c.wb.set(i, frames[sent+i], nil)
		}
		var got int
		err := rawWrite(c.rc, func(fd uintptr) error {
			r, _, e := unix.RawSyscall6(unix.SYS_SENDMMSG, fd, uintptr(unsafe.Pointer(&c.wb.msgs[0])), uintptr(n), unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL, 0, 0)
			if e != 0 {
				return e
			}
			got = int(r)
			return nil
		})
		if err != nil {
			return sent, err
		}
		sent += got
	}
	return sent, nil
}

// ReadFrames receives up to len(bufs) frames, waiting for at least one;
// lens[i] gets the length of the frame in bufs[i]. It returns the count.
func (c *Conn) ReadFrames(bufs [][]byte, lens []int) (int, error) {
	n := min(len(bufs), len(lens), len(c.rb.msgs))
	for i := 0; i < n; i++ {
		c.rb.setRecv(i, bufs[i])
	}
	var got int
	err := rawRead(c.rc, func(fd uintptr) error {
		var err error
		got, err = c.rb.recvmmsg(fd, n)
		return err
	})
	for i := 0; i < got; i++ {
		lens[i] = int(c.rb.msgs[i].n)
	}
	return got, err
}

// Close closes the data socket and the control stream; the switch then
// removes the port.
func (c *Conn) Close() error {
	var errs []error
	if c.ctl != nil {
		errs = append(errs, c.ctl.Close())
	}
	errs = append(errs, c.data.Close())
	if c.path != "" {
		os.Remove(c.path)
	}
	return errors.Join(errs...)
}

// bindInDir binds the data socket to a file in o.DataDir, the first
// free ".<pid>-<n>" as libvdeplug names them.
func (c *Conn) bindInDir(o DialOptions) error {
	for n := 0; ; n++ {
		p := fmt.Sprintf("%s/.%05d-%05d", o.DataDir, os.Getpid(), n)
		a, err := PathAddr(p)
		if err != nil {
			return err
		}
		c.local = a
		c.data, err = dgramSocket(&c.local, "vde data socket")
		if errors.Is(err, unix.EADDRINUSE) && n < 1000 {
			continue
		}
		if err != nil {
			return err
		}
		c.path = p
		mode := o.DataMode
		if mode == 0 {
			mode = 0o700
		}
		os.Chmod(p, mode)
		if o.DataGroup != "" {
			gid, err := strconv.Atoi(o.DataGroup)
			if g, lerr := user.LookupGroup(o.DataGroup); lerr == nil {
				gid, err = strconv.Atoi(g.Gid)
			}
			if err == nil {
				os.Chown(p, -1, gid)
			}
		}
		return nil
	}
}
