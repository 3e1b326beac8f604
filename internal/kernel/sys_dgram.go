package kernel

import (
	"bytes"
	"encoding/binary"
	"os"
	"sync"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/transport/icmp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
	"gvisor.dev/gvisor/pkg/waiter"

	"github.com/umltools/umltools/internal/abi"
	"github.com/umltools/umltools/internal/sandbox"
)

// Guest datagram sockets on the machine's network stack: UDP, ICMP echo
// ("ping") sockets, raw ICMP sockets (what ping uses as root) and packet
// sockets (AF_PACKET, SOCK_DGRAM and SOCK_RAW, as root: DHCP clients).
//
// The guest's descriptor is one end of a host SOCK_SEQPACKET socketpair,
// which keeps message boundaries: each datagram the netstack endpoint
// receives is one message there, and each message the guest sends on a
// connected socket is one datagram to its peer. sendto and sendmsg with
// an address are served by the engine (they are notified for AF_UNIX
// paths already), as are bind and connect. The source address the
// guest's recvfrom and recvmsg report is put there at their exit (the
// tracer stops them when they ask for it): the peer's for a connected
// socket, otherwise the source of the last datagram the engine passed on
// (exact while one sender talks to the socket at a time, as DNS and ping
// do).

// dgramSock is one guest datagram socket.
type dgramSock struct {
	family int // AF_INET or AF_INET6
	typ    int // SOCK_DGRAM or SOCK_RAW
	proto  int // IPPROTO_UDP, IPPROTO_ICMP, IPPROTO_ICMPV6
	mine   *os.File
	ino    uint64
	ep     tcpip.Endpoint
	wq     *waiter.Queue

	mu        sync.Mutex
	connected bool
	lastFrom  tcpip.FullAddress
	opts      sockOpts
}

// dgramSocks is the kernel's table of guest datagram sockets.
type dgramSocks struct {
	sockTable[*dgramSock]
	// recvs holds, by host tid, a recvfrom's or recvmsg's address
	// buffer, length pointer and the buffer's size, noted at its entry
	// (the host writes its own, shorter, length at the exit); under mu.
	recvs map[int][3]uint64
}

// dgramKind returns the netstack protocol of a guest socket(2) the
// engine serves as a datagram socket; ok is false for the others.
func dgramKind(domain, typ, proto int) (tcpip.TransportProtocolNumber, bool) {
	switch {
	case typ == unix.SOCK_DGRAM && (proto == 0 || proto == unix.IPPROTO_UDP):
		return udp.ProtocolNumber, true
	case domain == unix.AF_INET && (typ == unix.SOCK_DGRAM || typ == unix.SOCK_RAW) && proto == unix.IPPROTO_ICMP:
		return icmp.ProtocolNumber4, true
	case domain == unix.AF_INET6 && (typ == unix.SOCK_DGRAM || typ == unix.SOCK_RAW) && proto == unix.IPPROTO_ICMPV6:
		return icmp.ProtocolNumber6, true
	}
	return 0, false
}

// dgramSocket makes a datagram socket for socket(2) (sysSocket checked
// the family and the flags).
func (c *call) dgramSocket(domain, typ, proto int, tp tcpip.TransportProtocolNumber) int64 {
	base := typ & 0xf
	np := ipv4.ProtocolNumber
	if domain == unix.AF_INET6 {
		np = ipv6.ProtocolNumber
	}
	st := c.k.cfg.Net.Netstack()
	wq := new(waiter.Queue)
	var ep tcpip.Endpoint
	var terr tcpip.Error
	if domain == unix.AF_PACKET {
		// proto is an EtherType in network order (0: none until bind).
		if c.p.Cred.Euid != 0 {
			return -abi.EPERM
		}
		ep, terr = st.NewPacketEndpoint(base == unix.SOCK_DGRAM, tcpip.NetworkProtocolNumber(htons(uint16(proto))), wq)
	} else if base == unix.SOCK_RAW {
		if c.p.Cred.Euid != 0 {
			return -abi.EPERM
		}
		ep, terr = st.NewRawEndpoint(tp, np, wq, true)
	} else {
		ep, terr = st.NewEndpoint(tp, np, wq)
	}
	if terr != nil {
		return -int64(tcpipErrno(terr))
	}
	mine, guest, ino, err := socketpair(unix.SOCK_SEQPACKET, typ, "dgram")
	if err != nil {
		ep.Close()
		return errno(err)
	}
	if proto == 0 && domain != unix.AF_PACKET {
		proto = unix.IPPROTO_UDP
	}
	s := &dgramSock{family: domain, typ: base, proto: proto, mine: mine, ino: ino, ep: ep, wq: wq}
	c.k.dgram.put(s.ino, s)
	r := c.install(guest, nil, typ&unix.SOCK_CLOEXEC != 0)
	if r < 0 && r != answered {
		c.k.dgram.drop(s.ino, s)
		s.mine.Close()
		ep.Close()
		return r
	}
	go s.in(c.k)
	go s.out()
	return r
}

// in passes each datagram the endpoint receives to the guest, until the
// guest's end is closed.
func (s *dgramSock) in(k *Kernel) {
	we, ready := waiter.NewChannelEntry(waiter.ReadableEvents)
	s.wq.EventRegister(&we)
	defer s.wq.EventUnregister(&we)
	defer k.dgram.drop(s.ino, s)
	defer s.ep.Close()
	for {
		var b bytes.Buffer
		res, terr := s.ep.Read(&b, tcpip.ReadOptions{NeedRemoteAddr: true, NeedLinkPacketInfo: s.family == unix.AF_PACKET})
		if _, wait := terr.(*tcpip.ErrWouldBlock); wait {
			<-ready
			if hungUp(s.mine) {
				return
			}
			continue
		}
		if terr != nil {
			if _, closed := terr.(*tcpip.ErrClosedForReceive); closed {
				return
			}
			continue
		}
		s.mu.Lock()
		s.lastFrom = res.RemoteAddr
		if s.family == unix.AF_PACKET {
			s.lastFrom.Port = uint16(res.LinkPacketInfo.Protocol)
		}
		s.mu.Unlock()
		if _, err := s.mine.Write(b.Bytes()); err != nil {
			return // the guest closed its end
		}
	}
}

// out sends each message the guest writes on its end (a connected
// socket's datagrams) to the endpoint's peer.
func (s *dgramSock) out() {
	buf := make([]byte, 65536)
	for {
		n, err := s.mine.Read(buf)
		if err != nil || n == 0 {
			// The guest closed its end: end in, which waits on the
			// endpoint.
			s.ep.Shutdown(tcpip.ShutdownRead | tcpip.ShutdownWrite)
			s.wq.Notify(waiter.ReadableEvents)
			s.mine.Close()
			return
		}
		s.ep.Write(bytes.NewReader(buf[:n]), tcpip.WriteOptions{}) // lost without a peer, as a wire loses
	}
}

// dgramFd returns the datagram socket that is guest fd n, or nil.
func (c *call) dgramFd(n int) *dgramSock {
	if c.k.dgram.count.Load() == 0 {
		return nil
	}
	var st unix.Stat_t
	if c.k.statFd(c.th.Tid, n, &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		return nil
	}
	return c.k.dgram.get(st.Ino)
}

// dgramAddr serves bind and connect on a datagram socket.
func (c *call) dgramAddr(s *dgramSock, b []byte, bind bool) int64 {
	if !bind && len(b) >= 2 && binary.LittleEndian.Uint16(b) == unix.AF_UNSPEC {
		s.ep.Disconnect()
		s.mu.Lock()
		s.connected = false
		s.mu.Unlock()
		return 0
	}
	a, r := sockaddrInet(b, s.family)
	if r < 0 {
		return r
	}
	if bind {
		if terr := s.ep.Bind(a); terr != nil {
			return -int64(tcpipErrno(terr))
		}
		return 0
	}
	if a.Addr.Len() == 0 && binary.LittleEndian.Uint16(b) == unix.AF_INET {
		// Connecting to INADDR_ANY is connecting to this host, over
		// IPv4 also from an IPv6 socket (whose name is then
		// v4-mapped: glibc's getaddrinfo asserts it when it sorts).
		a.Addr = tcpip.AddrFrom4([4]byte{127, 0, 0, 1})
		if s.family == unix.AF_INET6 {
			a.Addr = tcpip.AddrFrom16([16]byte{10: 0xff, 11: 0xff, 12: 127, 15: 1})
		}
	}
	if terr := s.ep.Connect(a); terr != nil {
		return -int64(tcpipErrno(terr))
	}
	s.mu.Lock()
	s.connected = true
	s.mu.Unlock()
	return 0
}

// dgramSendTo serves sendto and sendmsg with an address: the engine
// sends the datagram itself.
func (c *call) dgramSendTo(s *dgramSock, to []byte, data []byte) int64 {
	a, r := sockaddrInet(to, s.family)
	if r < 0 {
		return r
	}
	n, terr := s.ep.Write(bytes.NewReader(data), tcpip.WriteOptions{To: &a})
	if terr != nil {
		return -int64(tcpipErrno(terr))
	}
	return n
}

// dgramName is getsockname's (peer false) or getpeername's address of s.
func (s *dgramSock) name(peer bool) ([]byte, bool) {
	var a tcpip.FullAddress
	var terr tcpip.Error
	if peer {
		a, terr = s.ep.GetRemoteAddress()
	} else {
		a, terr = s.ep.GetLocalAddress()
	}
	if terr != nil {
		if peer {
			return nil, false
		}
		a = tcpip.FullAddress{}
	}
	return sockaddrOf(a, s.family), true
}

// dgramRecvTrap, at the entry of a recvfrom or recvmsg on a datagram
// socket that asks for the source address, notes where it goes; the exit
// writes it (dgramRecvExit).
func (k *Kernel) dgramRecvTrap(t *sandbox.Task, regs *abi.Regs) bool {
	if k.dgram.count.Load() == 0 && k.nl.count.Load() == 0 {
		return false
	}
	var addr, lenAddr uint64
	switch regs.OrigRax {
	case abi.SYS_RECVFROM:
		addr, lenAddr = regs.R8, regs.R9
	case abi.SYS_RECVMSG:
		var h [16]byte
		if _, err := t.ReadMem(regs.Rsi, h[:]); err != nil {
			return false
		}
		addr, lenAddr = binary.LittleEndian.Uint64(h[:]), regs.Rsi+8
	default:
		return false
	}
	if addr == 0 || lenAddr == 0 || k.recvSource(t.Tid, int(int32(regs.Rdi))) == nil {
		return false
	}
	var l [4]byte
	if _, err := t.ReadMem(lenAddr, l[:]); err != nil {
		return false
	}
	k.dgram.mu.Lock()
	defer k.dgram.mu.Unlock()
	if k.dgram.recvs == nil {
		k.dgram.recvs = map[int][3]uint64{}
	}
	k.dgram.recvs[t.Tid] = [3]uint64{addr, lenAddr, uint64(binary.LittleEndian.Uint32(l[:]))}
	return true
}

// dgramRecvExit completes dgramRecvTrap.
func (k *Kernel) dgramRecvExit(t *sandbox.Task, regs *abi.Regs) {
	k.dgram.mu.Lock()
	a, ok := k.dgram.recvs[t.Tid]
	delete(k.dgram.recvs, t.Tid)
	k.dgram.mu.Unlock()
	if !ok || int64(regs.Rax) < 0 {
		return
	}
	src := k.recvSource(t.Tid, int(int32(regs.Rdi)))
	if src == nil {
		return
	}
	// The address, cut to the buffer's size at entry; the length (a
	// socklen_t, or msghdr's 32-bit msg_namelen) says the whole size.
	b := src()
	t.WriteMem(a[0], b[:min(int(int32(a[2])), len(b))])
	var l [4]byte
	binary.LittleEndian.PutUint32(l[:], uint32(len(b)))
	t.WriteMem(a[1], l[:])
}

// recvSource returns, for fd n of host thread tid when it is one of the
// machine's datagram or netlink sockets, what its receives report as the
// source: the peer of a connected socket, else the last datagram's
// source; the kernel for netlink. nil for any other fd.
func (k *Kernel) recvSource(tid, n int) func() []byte {
	h, ino, ok := hostSock(tid, n)
	if !ok {
		return nil
	}
	unix.Close(h)
	if k.nl.get(ino) != nil {
		return func() []byte { return nlSockaddr(0) }
	}
	s := k.dgram.get(ino)
	if s == nil {
		return nil
	}
	return func() []byte {
		s.mu.Lock()
		from := s.lastFrom
		s.mu.Unlock()
		if s.connected {
			if p, terr := s.ep.GetRemoteAddress(); terr == nil {
				from = p
			}
		}
		return sockaddrOf(from, s.family)
	}
}

// htons swaps a 16-bit value between host and network order.
func htons(v uint16) uint16 { return v<<8 | v>>8 }
