package kernel

import (
	"encoding/binary"
	"io"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/waiter"

	"github.com/umltools/umltools/internal/abi"
	"github.com/umltools/umltools/internal/sandbox"
)

// Guest TCP sockets on the machine's network stack (Config.Net).
//
// A guest socket(AF_INET or AF_INET6, SOCK_STREAM) gets one end of a host
// socketpair; the engine keeps the other. Reading, writing, polling,
// shutdown and close stay native on the guest's end. connect is served
// here: the engine connects a netstack endpoint and, once it is
// connected, two goroutines copy bytes between it and the engine's end.
// getsockopt and setsockopt at the TCP and IP levels, and SO_ERROR, SO_TYPE,
// SO_DOMAIN and SO_PROTOCOL, are answered here too; the other socket-level
// options act on the host socket. A non-blocking connect answers
// EINPROGRESS at once; the guest's end is writable before the connection
// is up (its bytes wait in the socketpair), so getsockopt(SO_ERROR)
// waits for the outcome instead of reporting a connection still under
// way as a success.

// inetSock is one guest TCP socket.
type inetSock struct {
	family int      // AF_INET or AF_INET6
	mine   *os.File // the engine's end of the socketpair
	ino    uint64   // the guest end's host inode: the table's key

	mu    sync.Mutex
	state int           // sockIdle, sockConnecting, sockConnected, sockFailed
	err   syscall.Errno // the failed connect's error, until SO_ERROR reads it
	done  chan struct{} // closed when a connect ends
	local tcpip.FullAddress
	peer  tcpip.FullAddress
	ep    tcpip.Endpoint // made at the first bind, connect or listen
	wq    *waiter.Queue  // ep's
	opts  sockOpts
}

const (
	sockIdle = iota
	sockConnecting
	sockConnected
	sockFailed
	sockListening
)

// sockTable is a table of the machine's guest sockets of one kind, by
// the host inode of the guest's end. It has its own lock: the tracer
// thread reads it (getsockname, recvfrom's source).
type sockTable[S comparable] struct {
	mu    sync.Mutex
	m     map[uint64]S
	count atomic.Int32 // len(m), read without the lock
}

func (t *sockTable[S]) get(ino uint64) S {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.m[ino]
}

// putLocked adds s (t.mu held).
func (t *sockTable[S]) putLocked(ino uint64, s S) {
	if t.m == nil {
		t.m = map[uint64]S{}
	}
	t.m[ino] = s
	t.count.Store(int32(len(t.m)))
}

func (t *sockTable[S]) put(ino uint64, s S) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.putLocked(ino, s)
}

// drop forgets s, unless another socket took its inode since.
func (t *sockTable[S]) drop(ino uint64, s S) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.m[ino] == s {
		delete(t.m, ino)
	}
	t.count.Store(int32(len(t.m)))
}

// inetSocks is the kernel's table of guest TCP sockets and their
// accepted connections.
type inetSocks struct {
	sockTable[*inetSock]
	conns map[uint64]*inetConn // accepted connections by id
	// accepts holds, by host tid, the address buffer and length of an
	// accept stopped at its entry (inetAcceptTrap).
	accepts map[int][2]uint64
	swept   int           // the table's size at the last sweep
	id      atomic.Uint64 // the last listener or connection id
}

func (t *inetSocks) nextID() uint64 { return t.id.Add(1) }

func (t *inetSocks) addConn(id uint64, c *inetConn) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.conns == nil {
		t.conns = map[uint64]*inetConn{}
	}
	t.conns[id] = c
}

func (t *inetSocks) dropConn(id uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.conns, id)
}

func (t *inetSocks) conn(id uint64) *inetConn {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.conns[id]
}

// listenerAlive reports whether some guest process still has the
// listener whose host inode is ino: its abstract name is then still
// listed in the engine's /proc/net/unix.
func (t *inetSocks) listenerAlive(ino uint64) bool {
	b, err := os.ReadFile("/proc/self/net/unix")
	if err != nil {
		return true
	}
	want := " " + strconv.FormatUint(ino, 10) + " "
	return strings.Contains(string(b), want)
}

func (t *inetSocks) add(s *inetSock) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.putLocked(s.ino, s)
	if len(t.m) > 2*t.swept+16 {
		t.sweepLocked()
		t.count.Store(int32(len(t.m)))
	}
}

// sweepLocked forgets the sockets never connected whose guest ends are
// all closed (the engine's end then polls a hang-up).
func (t *inetSocks) sweepLocked() {
	for ino, s := range t.m {
		s.mu.Lock()
		idle := s.state == sockIdle || s.state == sockFailed
		s.mu.Unlock()
		if idle && hungUp(s.mine) {
			delete(t.m, ino)
			s.mine.Close()
			s.mu.Lock()
			if s.ep != nil {
				s.ep.Close()
			}
			s.mu.Unlock()
		}
	}
	t.swept = len(t.m)
}

// hungUp reports whether the peer of socket f is closed.
func hungUp(f *os.File) bool {
	rc, err := f.SyscallConn()
	if err != nil {
		return true
	}
	hup := false
	rc.Control(func(fd uintptr) {
		p := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLRDHUP}}
		if n, err := unix.Poll(p, 0); err == nil && n > 0 {
			hup = p[0].Revents&(unix.POLLRDHUP|unix.POLLHUP) != 0
		}
	})
	return hup
}

// sysSocket serves socket(2): AF_INET and AF_INET6 stream sockets are
// made here when the machine has a network; everything else is the
// host's.
func (c *call) sysSocket(domain, typ, proto int) int64 {
	if c.k.cfg.Net != nil && domain == unix.AF_NETLINK && proto == unix.NETLINK_ROUTE &&
		(typ&0xf == unix.SOCK_RAW || typ&0xf == unix.SOCK_DGRAM) && typ&^(0xf|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC) == 0 {
		return c.netlinkSocket(typ)
	}
	if c.k.cfg.Net != nil && domain == unix.AF_PACKET && (typ&0xf == unix.SOCK_RAW || typ&0xf == unix.SOCK_DGRAM) {
		if typ&^(0xf|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC) != 0 {
			return -abi.EINVAL
		}
		return c.dgramSocket(domain, typ, proto, 0)
	}
	if c.k.cfg.Net == nil || domain != unix.AF_INET && domain != unix.AF_INET6 {
		return continued
	}
	if typ&^(0xf|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC) != 0 {
		return -abi.EINVAL
	}
	if tp, ok := dgramKind(domain, typ&0xf, proto); ok {
		return c.dgramSocket(domain, typ, proto, tp)
	}
	if typ&0xf != unix.SOCK_STREAM || proto != 0 && proto != unix.IPPROTO_TCP {
		return continued
	}
	mine, guest, ino, err := socketpair(unix.SOCK_STREAM, typ, "inet")
	if err != nil {
		return errno(err)
	}
	s := &inetSock{family: domain, mine: mine, ino: ino}
	c.k.inet.add(s)
	r := c.install(guest, nil, typ&unix.SOCK_CLOEXEC != 0)
	if r < 0 && r != answered {
		c.k.inet.drop(s.ino, s)
		s.mine.Close()
	}
	return r
}

// socketpair makes the host socketpair (of type kind) behind a guest
// socket of type typ: the engine's end, which waits in Go's poller, and
// the guest's, blocking unless typ asks otherwise (O_NONBLOCK belongs to
// the open file, which the guest's fd shares), with the guest end's host
// inode, the key of the kernel's socket tables.
func socketpair(kind, typ int, name string) (mine, guest *os.File, ino uint64, err error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, kind|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, 0, err
	}
	unix.SetNonblock(fds[0], true)
	if typ&unix.SOCK_NONBLOCK != 0 {
		unix.SetNonblock(fds[1], true)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fds[1], &st); err != nil {
		unix.Close(fds[0])
		unix.Close(fds[1])
		return nil, nil, 0, err
	}
	return os.NewFile(uintptr(fds[0]), name), os.NewFile(uintptr(fds[1]), name), st.Ino, nil
}

// hostSock copies fd n of host thread tid into the engine and returns
// the copy and its host inode, when it is a socket (the caller closes
// h).
func hostSock(tid, n int) (h int, ino uint64, ok bool) {
	pidfd, err := unix.PidfdOpen(tid, unix.PIDFD_THREAD)
	if err != nil {
		return -1, 0, false
	}
	h, err = unix.PidfdGetfd(pidfd, n, 0)
	unix.Close(pidfd)
	if err != nil {
		return -1, 0, false
	}
	var st unix.Stat_t
	if unix.Fstat(h, &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		unix.Close(h)
		return -1, 0, false
	}
	return h, st.Ino, true
}

// inetFd returns the TCP socket that is guest fd n, or nil.
func (c *call) inetFd(n int) *inetSock {
	s, _ := c.sockOf(n)
	return s
}

// sockOf returns the TCP or the datagram socket that is guest fd n (nil,
// nil for any other fd).
func (c *call) sockOf(n int) (*inetSock, *dgramSock) {
	if c.k.cfg.Net == nil || c.k.inet.count.Load() == 0 && c.k.dgram.count.Load() == 0 {
		return nil, nil
	}
	var st unix.Stat_t
	if c.k.statFd(c.th.Tid, n, &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		return nil, nil
	}
	if s := c.k.inet.get(st.Ino); s != nil {
		return s, nil
	}
	return nil, c.k.dgram.get(st.Ino)
}

// inetSendTo serves sendto (data at buf, size bytes) and sendmsg with an
// AF_INET or AF_INET6 address on a datagram socket; continued for others.
func (c *call) inetSendTo(fd int, addr uint64, n int, data func() ([]byte, int64)) int64 {
	if c.k.dgram.count.Load() == 0 && c.k.nl.count.Load() == 0 || addr == 0 || n < 2 || n > 128 {
		return continued
	}
	b := make([]byte, n)
	if c.read(addr, b) < 0 {
		return continued
	}
	f := binary.LittleEndian.Uint16(b)
	if f == unix.AF_NETLINK {
		s := c.nlFd(fd)
		if s == nil {
			return continued
		}
		d, r := data()
		if r < 0 {
			return r
		}
		if out := s.handle(c.k.cfg.Net, d); len(out) > 0 {
			if _, err := s.mine.Write(out); err != nil {
				return errno(err)
			}
		}
		return int64(len(d))
	}
	if f != unix.AF_INET && f != unix.AF_INET6 && f != unix.AF_PACKET {
		return continued
	}
	_, ds := c.sockOf(fd)
	if ds == nil {
		return continued
	}
	d, r := data()
	if r < 0 {
		return r
	}
	return c.dgramSendTo(ds, b, d)
}

// sockaddrInet parses an AF_INET or AF_INET6 sockaddr for a socket of
// family fam (or a sockaddr_ll for an AF_PACKET one).
func sockaddrInet(b []byte, fam int) (tcpip.FullAddress, int64) {
	if len(b) < 2 {
		return tcpip.FullAddress{}, -abi.EINVAL
	}
	if fam == unix.AF_PACKET {
		return sockaddrLL(b)
	}
	// The unspecified address (INADDR_ANY, ::) is netstack's empty one.
	full := func(a netip.Addr) tcpip.FullAddress {
		f := tcpip.FullAddress{Port: binary.BigEndian.Uint16(b[2:])}
		if !a.IsUnspecified() {
			f.Addr = tcpip.AddrFromSlice(a.AsSlice())
		}
		return f
	}
	switch f := int(binary.LittleEndian.Uint16(b)); {
	case f == unix.AF_INET && len(b) >= 16:
		a := netip.AddrFrom4([4]byte(b[4:8]))
		if fam == unix.AF_INET6 && !a.IsUnspecified() {
			a = netip.AddrFrom16(a.As16()) // v4-mapped
		}
		return full(a), 0
	case f == unix.AF_INET6 && fam == unix.AF_INET6 && len(b) >= 24:
		return full(netip.AddrFrom16([16]byte(b[8:24]))), 0
	case f == unix.AF_INET6 && fam == unix.AF_INET:
		return tcpip.FullAddress{}, -abi.EAFNOSUPPORT
	case f == unix.AF_INET || f == unix.AF_INET6:
		return tcpip.FullAddress{}, -abi.EINVAL
	}
	return tcpip.FullAddress{}, -abi.EAFNOSUPPORT
}

// sockaddrLL parses a struct sockaddr_ll: the interface, the protocol
// (an EtherType, which netstack keeps in Port) and the hardware address.
func sockaddrLL(b []byte) (tcpip.FullAddress, int64) {
	if len(b) < 12 || binary.LittleEndian.Uint16(b) != unix.AF_PACKET {
		return tcpip.FullAddress{}, -abi.EINVAL
	}
	a := tcpip.FullAddress{NIC: tcpip.NICID(int32(binary.LittleEndian.Uint32(b[4:]))), Port: binary.BigEndian.Uint16(b[2:])}
	if halen := int(b[11]); halen > 0 {
		if halen > 8 || len(b) < 12+halen {
			return tcpip.FullAddress{}, -abi.EINVAL
		}
		a.LinkAddr = tcpip.LinkAddress(b[12 : 12+halen])
	}
	return a, 0
}

// sockaddrOf encodes a for a socket of family fam. For AF_PACKET it is
// a sockaddr_ll of an Ethernet device, a packet to this host (Port is
// the EtherType).
func sockaddrOf(a tcpip.FullAddress, fam int) []byte {
	if fam == unix.AF_PACKET {
		b := make([]byte, 20)
		binary.LittleEndian.PutUint16(b, unix.AF_PACKET)
		binary.BigEndian.PutUint16(b[2:], a.Port)
		binary.LittleEndian.PutUint32(b[4:], uint32(a.NIC))
		binary.LittleEndian.PutUint16(b[8:], unix.ARPHRD_ETHER)
		b[11] = byte(copy(b[12:], a.LinkAddr))
		return b
	}
	if fam == unix.AF_INET {
		b := make([]byte, 16)
		binary.LittleEndian.PutUint16(b, unix.AF_INET)
		binary.BigEndian.PutUint16(b[2:], a.Port)
		if a.Addr.Len() == 4 {
			copy(b[4:], a.Addr.AsSlice())
		}
		return b
	}
	b := make([]byte, 28)
	binary.LittleEndian.PutUint16(b, unix.AF_INET6)
	binary.BigEndian.PutUint16(b[2:], a.Port)
	switch a.Addr.Len() {
	case 16:
		copy(b[8:], a.Addr.AsSlice())
	case 4:
		m := netip.AddrFrom4(a.Addr.As4()).As16()
		m[10], m[11] = 0xff, 0xff
		copy(b[8:], m[:])
	}
	return b
}

// inetAddr serves bind and connect on a TCP socket; continued when fd is
// not one.
func (c *call) inetAddr(fd int, addr uint64, n int, bind bool) int64 {
	// The family first: AF_UNIX binds and connects pay no fd lookup.
	if c.k.cfg.Net == nil || n < 2 || n > 128 {
		return continued
	}
	b := make([]byte, n)
	if c.read(addr, b) < 0 {
		return continued // the host reports the fault
	}
	f := binary.LittleEndian.Uint16(b)
	if f == unix.AF_NETLINK {
		if c.nlFd(fd) != nil {
			return 0 // bound to its port id already; groups are never sent to
		}
		return continued
	}
	if f != unix.AF_INET && f != unix.AF_INET6 && f != unix.AF_PACKET && (f != unix.AF_UNSPEC || bind) {
		return continued
	}
	s, ds := c.sockOf(fd)
	if ds != nil {
		return c.dgramAddr(ds, b, bind)
	}
	if s == nil {
		return continued
	}
	a, r := sockaddrInet(b, s.family)
	if r < 0 {
		return r
	}
	if bind {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.ep != nil || s.state != sockIdle {
			return -abi.EINVAL
		}
		if terr := s.endpointLocked(c.k); terr != nil {
			return -int64(tcpipErrno(terr))
		}
		// The port is taken now: getsockname tells it before listen.
		if terr := s.ep.Bind(a); terr != nil {
			s.ep.Close()
			s.ep, s.wq = nil, nil
			return -int64(tcpipErrno(terr))
		}
		return 0
	}
	return c.inetConnect(fd, s, a)
}

// inetConnect starts connecting s to a, and answers at once for a
// non-blocking socket (EINPROGRESS) or once the connection is up or has
// failed.
func (c *call) inetConnect(fd int, s *inetSock, a tcpip.FullAddress) int64 {
	s.mu.Lock()
	switch s.state {
	case sockConnected:
		s.mu.Unlock()
		return -int64(unix.EISCONN)
	case sockConnecting:
		s.mu.Unlock()
		return -int64(unix.EALREADY)
	}
	if s.ep == nil {
		if terr := s.endpointLocked(c.k); terr != nil {
			s.mu.Unlock()
			return -int64(tcpipErrno(terr))
		}
	}
	s.state, s.err, s.done = sockConnecting, 0, make(chan struct{})
	ep, wq := s.ep, s.wq
	s.mu.Unlock()
	go s.connect(c.k, ep, wq, a)
	if nonblock, _ := c.guestFdFlags(fd); nonblock {
		return -int64(unix.EINPROGRESS)
	}
	later, tid := c.n.Detach(), c.th.Tid
	c.detached = true
	go c.k.finishLater(c, later, func() int64 {
		for {
			select {
			case <-s.done:
				s.mu.Lock()
				defer s.mu.Unlock()
				if s.state == sockFailed {
					e := s.err
					s.err = 0
					return -int64(e)
				}
				return 0
			case <-time.After(waitSlice):
				// The connection goes on after a signal, as a host
				// connect does; the guest's next connect says so.
				if interrupted(tid, later) {
					return -errRestartSys
				}
			}
		}
	})
	return answered
}

// connectTimeout bounds a connect, about Linux's with its default SYN
// retries.
const connectTimeout = 130 * time.Second

// connect connects s's netstack endpoint to a and starts moving bytes.
func (s *inetSock) connect(k *Kernel, ep tcpip.Endpoint, wq *waiter.Queue, a tcpip.FullAddress) {
	fail := func(e syscall.Errno) {
		s.mu.Lock()
		s.state, s.err = sockFailed, e
		s.ep, s.wq = nil, nil // a failed connect leaves the socket unusable, as Linux's
		close(s.done)
		s.mu.Unlock()
	}
	we, ready := waiter.NewChannelEntry(waiter.WritableEvents)
	wq.EventRegister(&we)
	terr := ep.Connect(a)
	if _, started := terr.(*tcpip.ErrConnectStarted); started {
		select {
		case <-ready:
			terr = ep.LastError()
		case <-time.After(connectTimeout):
			terr = &tcpip.ErrTimeout{}
		}
	}
	wq.EventUnregister(&we)
	if terr != nil {
		ep.Close()
		fail(tcpipErrno(terr))
		return
	}
	s.mu.Lock()
	s.local, _ = ep.GetLocalAddress()
	s.peer, _ = ep.GetRemoteAddress()
	s.state = sockConnected
	close(s.done)
	s.mu.Unlock()
	s.pump(k, gonet.NewTCPConn(wq, ep))
}

// endpointLocked makes s's netstack endpoint (s.mu held).
func (s *inetSock) endpointLocked(k *Kernel) tcpip.Error {
	proto := ipv4.ProtocolNumber
	if s.family == unix.AF_INET6 {
		proto = ipv6.ProtocolNumber
	}
	wq := new(waiter.Queue)
	ep, terr := k.cfg.Net.Netstack().NewEndpoint(tcp.ProtocolNumber, proto, wq)
	if terr != nil {
		return terr
	}
	// SO_REUSEADDR acts on the host socket, which the engine does not
	// see: a restarted server may bind its port again at once.
	ep.SocketOptions().SetReuseAddress(true)
	s.ep, s.wq = ep, wq
	return nil
}

// pump copies bytes both ways between the guest's socketpair and the
// connection until both directions are done, then forgets the socket.
func (s *inetSock) pump(k *Kernel, conn *gonet.TCPConn) {
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		io.Copy(conn, s.mine)
		conn.CloseWrite() // the guest shut down its writing, or closed
	}()
	go func() {
		defer wg.Done()
		if _, err := io.Copy(s.mine, conn); err != nil {
			conn.Close() // the guest closed its end: abort
		}
		if rc, err := s.mine.SyscallConn(); err == nil {
			rc.Control(func(fd uintptr) { unix.Shutdown(int(fd), unix.SHUT_WR) })
		}
	}()
	wg.Wait()
	conn.Close()
	s.mine.Close()
	k.inet.drop(s.ino, s)
}

// tcpipErrno maps a netstack error to the errno Linux gives.
func tcpipErrno(e tcpip.Error) syscall.Errno {
	switch e.(type) {
	case *tcpip.ErrConnectionRefused:
		return unix.ECONNREFUSED
	case *tcpip.ErrTimeout:
		return unix.ETIMEDOUT
	case *tcpip.ErrHostUnreachable:
		return unix.EHOSTUNREACH
	case *tcpip.ErrNetworkUnreachable:
		return unix.ENETUNREACH
	case *tcpip.ErrHostDown:
		return unix.EHOSTDOWN
	case *tcpip.ErrConnectionReset:
		return unix.ECONNRESET
	case *tcpip.ErrPortInUse:
		return unix.EADDRINUSE
	case *tcpip.ErrBadLocalAddress:
		return unix.EADDRNOTAVAIL
	case *tcpip.ErrAddressFamilyNotSupported:
		return unix.EAFNOSUPPORT
	case *tcpip.ErrConnectionAborted:
		return unix.ECONNABORTED
	}
	return unix.EIO
}

// sysSockopt serves getsockopt and setsockopt on a TCP socket; continued
// for other fds and for the socket-level options the host socket holds.
func (c *call) sysSockopt(get bool) int64 {
	fd, level, name := int(int32(c.args[0])), int32(c.args[1]), int32(c.args[2])
	if level == unix.SOL_SOCKET {
		switch name {
		case unix.SO_ERROR, unix.SO_TYPE, unix.SO_DOMAIN, unix.SO_PROTOCOL:
		default:
			return continued
		}
	}
	s, ds := c.sockOf(fd)
	if ds != nil {
		// SO_ERROR is always 0: a datagram socket's errors come back
		// from its calls.
		return c.sockopt(&ds.opts, sockIdent{int32(ds.typ), int32(ds.family), int32(ds.proto)}, get, level, name,
			func(val, lenAddr uint64) int64 { return c.putInt(val, lenAddr, 0) })
	}
	if s == nil {
		return continued
	}
	return c.sockopt(&s.opts, sockIdent{unix.SOCK_STREAM, int32(s.family), unix.IPPROTO_TCP}, get, level, name,
		func(val, lenAddr uint64) int64 { return c.soError(s, val, lenAddr) })
}

// sockOpts are the IP- and TCP-level options a guest set on one of the
// machine's sockets: accepted and read back, not applied to the netstack
// endpoint, which keeps its defaults (linux(1), DIFFERENCES).
type sockOpts struct {
	mu sync.Mutex
	m  map[[2]int32]int32
}

// sockIdent is what SO_TYPE, SO_DOMAIN and SO_PROTOCOL report.
type sockIdent struct{ typ, family, proto int32 }

// sockopt serves getsockopt (get) or setsockopt of level and name on a
// socket with options o and identity id; soError answers SO_ERROR.
func (c *call) sockopt(o *sockOpts, id sockIdent, get bool, level, name int32, soError func(val, lenAddr uint64) int64) int64 {
	val, lenAddr := c.args[3], c.args[4]
	if !get {
		if level == unix.SOL_SOCKET {
			return -int64(unix.ENOPROTOOPT)
		}
		var b [4]byte
		if c.args[4] >= 4 {
			if r := c.read(val, b[:]); r < 0 {
				return r
			}
		}
		o.mu.Lock()
		if o.m == nil {
			o.m = map[[2]int32]int32{}
		}
		o.m[[2]int32{level, name}] = int32(binary.LittleEndian.Uint32(b[:]))
		o.mu.Unlock()
		return 0
	}
	var v int32
	switch {
	case level == unix.SOL_SOCKET && name == unix.SO_TYPE:
		v = id.typ
	case level == unix.SOL_SOCKET && name == unix.SO_DOMAIN:
		v = id.family
	case level == unix.SOL_SOCKET && name == unix.SO_PROTOCOL:
		v = id.proto
	case level == unix.SOL_SOCKET && name == unix.SO_ERROR:
		return soError(val, lenAddr)
	default:
		o.mu.Lock()
		v = o.m[[2]int32{level, name}]
		o.mu.Unlock()
	}
	return c.putInt(val, lenAddr, v)
}

// putInt answers a getsockopt with an int value.
func (c *call) putInt(val, lenAddr uint64, v int32) int64 {
	var l [4]byte
	if r := c.read(lenAddr, l[:]); r < 0 {
		return r
	}
	n := int32(binary.LittleEndian.Uint32(l[:]))
	if n < 0 {
		return -abi.EINVAL
	}
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], uint32(v))
	n = min(n, 4)
	if r := c.write(val, b[:n]); r < 0 {
		return r
	}
	binary.LittleEndian.PutUint32(l[:], uint32(n))
	return c.write(lenAddr, l[:])
}

// soError answers getsockopt(SO_ERROR): the failed connect's error
// (then cleared), 0 otherwise; while a connect is under way it waits for
// its outcome (see the top of the file).
func (c *call) soError(s *inetSock, val, lenAddr uint64) int64 {
	s.mu.Lock()
	done := s.done
	s.mu.Unlock()
	result := func() int64 {
		s.mu.Lock()
		e := s.err
		s.err = 0
		s.mu.Unlock()
		return c.putInt(val, lenAddr, int32(e))
	}
	if done == nil {
		return result()
	}
	select {
	case <-done:
		return result()
	default:
	}
	later := c.n.Detach()
	c.detached = true
	go c.k.finishLater(c, later, func() int64 {
		select {
		case <-done:
		case <-time.After(connectTimeout):
		}
		return result()
	})
	return answered
}

// inetNameTrap serves getsockname and getpeername (stopped at their
// entry by the tracer) on a TCP socket; ok is false for any other fd.
func (k *Kernel) inetNameTrap(t *sandbox.Task, regs *abi.Regs) (sandbox.Action, bool) {
	if k.inet.count.Load() == 0 && k.dgram.count.Load() == 0 && k.nl.count.Load() == 0 {
		return sandbox.Action{}, false
	}
	b, found, ok := k.inetNameOf(t.Tid, int(int32(regs.Rdi)), regs.OrigRax == abi.SYS_GETPEERNAME)
	if !found {
		return sandbox.Action{}, false
	}
	if !ok {
		return sandbox.Fail(int(unix.ENOTCONN)), true
	}
	if r := putSockaddr(t, regs.Rsi, regs.Rdx, b); r < 0 {
		return sandbox.Fail(int(-r)), true
	}
	return sandbox.Emulate(0), true
}

// inetNameOf returns the address getsockname (peer false) or getpeername
// reports for fd n of host thread tid: found is false when the fd is no
// TCP socket of the machine's network, ok false when it has no such
// address (no peer yet).
func (k *Kernel) inetNameOf(tid, n int, peer bool) (b []byte, found, ok bool) {
	h, ino, isSock := hostSock(tid, n)
	if !isSock {
		return nil, false, false
	}
	defer unix.Close(h)
	if b, ok := k.inetName(ino, peer); ok || k.inet.get(ino) != nil {
		return b, true, ok
	}
	if ds := k.dgram.get(ino); ds != nil {
		b, ok := ds.name(peer)
		return b, true, ok
	}
	if ns := k.nl.get(ino); ns != nil {
		if peer {
			return nlSockaddr(0), true, true
		}
		return nlSockaddr(ns.pid), true, true
	}
	// An accepted connection: its peer is the engine's socket, named
	// after the connection.
	c := k.inet.conn(acceptedID(h))
	if c == nil {
		return nil, false, false
	}
	if peer {
		return sockaddrOf(c.peer, c.family), true, true
	}
	return sockaddrOf(c.local, c.family), true, true
}

// acceptedID returns the connection id in the name of host socket h's
// peer, 0 when it is not the engine's end of an accepted connection.
func acceptedID(h int) uint64 {
	sa, err := unix.Getpeername(h)
	if err != nil {
		return 0
	}
	u, ok := sa.(*unix.SockaddrUnix)
	if !ok || len(u.Name) == 0 || u.Name[0] != '@' {
		return 0
	}
	v, ok := strings.CutPrefix(u.Name[1:], inetConnPrefix[1:])
	if !ok {
		return 0
	}
	id, _ := strconv.ParseUint(v, 10, 64)
	return id
}

// putSockaddr writes sockaddr b to a guest buffer at addr whose socklen_t
// is at lenAddr (cut to the buffer; the length says the whole size).
func putSockaddr(t *sandbox.Task, addr, lenAddr uint64, b []byte) int64 {
	var l [4]byte
	if _, err := t.ReadMem(lenAddr, l[:]); err != nil {
		return -abi.EFAULT
	}
	n := int32(binary.LittleEndian.Uint32(l[:]))
	if n < 0 {
		return -abi.EINVAL
	}
	if _, err := t.WriteMem(addr, b[:min(int(n), len(b))]); err != nil {
		return -abi.EFAULT
	}
	binary.LittleEndian.PutUint32(l[:], uint32(len(b)))
	if _, err := t.WriteMem(lenAddr, l[:]); err != nil {
		return -abi.EFAULT
	}
	return 0
}

// inetAcceptTrap, at the entry of an accept that asks for the peer's
// address while the machine has TCP sockets, notes the buffer: the exit
// (inetAcceptExit) writes the TCP peer there when the new fd is one.
func (k *Kernel) inetAcceptTrap(t *sandbox.Task, regs *abi.Regs) bool {
	if k.inet.count.Load() == 0 || regs.Rsi == 0 || regs.Rdx == 0 {
		return false
	}
	k.inet.mu.Lock()
	defer k.inet.mu.Unlock()
	if k.inet.accepts == nil {
		k.inet.accepts = map[int][2]uint64{}
	}
	k.inet.accepts[t.Tid] = [2]uint64{regs.Rsi, regs.Rdx}
	return true
}

// inetAcceptExit completes inetAcceptTrap.
func (k *Kernel) inetAcceptExit(t *sandbox.Task, regs *abi.Regs) {
	k.inet.mu.Lock()
	a, ok := k.inet.accepts[t.Tid]
	delete(k.inet.accepts, t.Tid)
	k.inet.mu.Unlock()
	if !ok || int64(regs.Rax) < 0 {
		return
	}
	if b, found, ok := k.inetNameOf(t.Tid, int(regs.Rax), true); found && ok {
		putSockaddr(t, a[0], a[1], b)
	}
}

// inetName is the address getsockname (peer false) or getpeername (peer
// true) reports for the TCP socket whose guest end is host inode ino; ok
// is false when ino is not one, or for getpeername before a connection.
func (k *Kernel) inetName(ino uint64, peer bool) (b []byte, ok bool) {
	s := k.inet.get(ino)
	if s == nil {
		return nil, false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if peer {
		if s.state != sockConnected {
			return nil, false
		}
		return sockaddrOf(s.peer, s.family), true
	}
	if s.state == sockConnected {
		return sockaddrOf(s.local, s.family), true
	}
	if s.ep != nil {
		if a, terr := s.ep.GetLocalAddress(); terr == nil {
			return sockaddrOf(a, s.family), true
		}
	}
	return sockaddrOf(tcpip.FullAddress{}, s.family), true
}

// Listening sockets. At listen(2) the engine listens on the netstack and
// puts, at the guest's fd number, a host AF_UNIX socket listening on an
// abstract name of the engine's network namespace (no guest can name
// it). For each connection the netstack accepts, the engine connects a
// socket bound to "\x00umltools-inet-<id>" to that listener and moves
// bytes between the two, so the guest's accept, poll and non-blocking
// modes are the host's own. The addresses of accepted sockets come from
// their peer's name (accept's, getsockname's and getpeername's).

// inetConn is one connection accepted from a guest listener.
type inetConn struct {
	family      int
	local, peer tcpip.FullAddress
}

// inetConnPrefix starts the abstract name of the engine's end of an
// accepted connection; the connection's id follows.
const inetConnPrefix = "\x00umltools-inet-"

// sysListen serves listen(2) on a TCP socket.
func (c *call) sysListen(fd, backlog int) int64 {
	s := c.inetFd(fd)
	if s == nil {
		return continued
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.state != sockIdle {
		return -abi.EINVAL
	}
	backlog = min(max(backlog, 1), 4096)
	if s.ep == nil {
		if terr := s.endpointLocked(c.k); terr != nil {
			return -int64(tcpipErrno(terr))
		}
		if terr := s.ep.Bind(tcpip.FullAddress{}); terr != nil {
			return -int64(tcpipErrno(terr))
		}
	}
	ep, wq := s.ep, s.wq
	if terr := ep.Listen(backlog); terr != nil {
		return -int64(tcpipErrno(terr))
	}
	nonblock, cloexec := c.guestFdFlags(fd)
	name := inetConnPrefix + "l-" + strconv.FormatUint(c.k.inet.nextID(), 10)
	l, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err == nil {
		if err = unix.Bind(l, &unix.SockaddrUnix{Name: name}); err == nil {
			err = unix.Listen(l, backlog)
		}
	}
	if err == nil && nonblock {
		err = unix.SetNonblock(l, true)
	}
	var st unix.Stat_t
	if err == nil {
		err = unix.Fstat(l, &st)
	}
	if err != nil {
		if l >= 0 {
			unix.Close(l)
		}
		ep.Close()
		s.ep, s.wq = nil, nil
		return errno(err)
	}
	lf := os.NewFile(uintptr(l), "inet-listener")
	defer lf.Close()
	if err := c.n.AddFdAt(lf, fd, cloexec); err != nil {
		ep.Close()
		s.ep, s.wq = nil, nil
		return errno(err)
	}
	// The guest's fd is the listener now: its socketpair is gone.
	c.k.inet.drop(s.ino, s)
	s.mine.Close()
	s.ino = st.Ino
	s.state = sockListening
	s.local, _ = ep.GetLocalAddress()
	c.k.inet.add(s)
	go s.serve(c.k, ep, wq, name)
	return 0
}

// guestFdFlags reads O_NONBLOCK and O_CLOEXEC of the calling thread's fd n.
func (c *call) guestFdFlags(n int) (nonblock, cloexec bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(c.th.Tid) + "/fdinfo/" + strconv.Itoa(n))
	if err != nil {
		return false, false
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "flags:"); ok {
			fl, _ := strconv.ParseUint(strings.TrimSpace(v), 8, 64)
			return fl&unix.O_NONBLOCK != 0, fl&unix.O_CLOEXEC != 0
		}
	}
	return false, false
}

// serve accepts the netstack's connections for the listener named
// lname until the listener's guest fds are all closed.
func (s *inetSock) serve(k *Kernel, ep tcpip.Endpoint, wq *waiter.Queue, lname string) {
	defer ep.Close()
	defer k.inet.drop(s.ino, s)
	we, ready := waiter.NewChannelEntry(waiter.ReadableEvents)
	wq.EventRegister(&we)
	defer wq.EventUnregister(&we)
	for {
		nep, nwq, terr := ep.Accept(nil)
		if _, wait := terr.(*tcpip.ErrWouldBlock); wait {
			select {
			case <-ready:
			case <-time.After(time.Second):
				// Nobody can accept any more once the guest closed
				// every fd of the listener: then it is gone.
				if !k.inet.listenerAlive(s.ino) {
					return
				}
			}
			continue
		}
		if terr != nil {
			return
		}
		if !s.hand(k, nep, nwq, lname) {
			nep.Close()
		}
	}
}

// hand connects a host socket, named after a fresh connection id, to the
// guest's listener lname, and moves bytes between it and nep.
func (s *inetSock) hand(k *Kernel, nep tcpip.Endpoint, nwq *waiter.Queue, lname string) bool {
	id := k.inet.nextID()
	h, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return false
	}
	if err := unix.Bind(h, &unix.SockaddrUnix{Name: inetConnPrefix + strconv.FormatUint(id, 10)}); err != nil {
		unix.Close(h)
		return false
	}
	// The addresses are known before the connect: the guest's accept
	// can return, and look them up (inetAcceptExit), as soon as it is
	// made.
	local, _ := nep.GetLocalAddress()
	peer, _ := nep.GetRemoteAddress()
	k.inet.addConn(id, &inetConn{family: s.family, local: local, peer: peer})
	if err := unix.Connect(h, &unix.SockaddrUnix{Name: lname}); err != nil {
		k.inet.dropConn(id)
		unix.Close(h) // the listener is gone, or its queue is full
		return false
	}
	unix.SetNonblock(h, true)
	cs := &inetSock{family: s.family, mine: os.NewFile(uintptr(h), "inet"), state: sockConnected, local: local, peer: peer}
	go func() {
		cs.pump(k, gonet.NewTCPConn(nwq, nep))
		k.inet.dropConn(id)
	}()
	return true
}
