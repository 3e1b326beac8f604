package kernel

import (
	"encoding/binary"
	"net/netip"
	"os"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/umltools/umltools/internal/netdev"
)

// Route netlink (NETLINK_ROUTE) on the machine's network stack: what
// ip(8) uses. The guest's socket is one end of a host SOCK_SEQPACKET
// socketpair; the engine reads each request the guest sends on it
// (send, or sendto/sendmsg to the kernel's address, which are notified)
// and writes the answer back as one message: links, addresses and routes
// dumped from the stack, and address, link (up, down, MTU) and route
// changes applied to it, with the acks and errors Linux sends. The
// source of what the guest receives is the kernel's address
// (recvfrom/recvmsg stop at their exit for it, as datagram sockets do).
// Multicast groups are accepted at bind and never sent to.

// nlSock is one guest route netlink socket.
type nlSock struct {
	mine *os.File
	ino  uint64
	pid  uint32 // the port id the socket is bound to
}

// nlSocks is the kernel's table of them, by the host inode of the guest's
// end (own lock: the tracer reads it).
type nlSocks struct {
	sockTable[*nlSock]
	next atomic.Uint32
}

// netlinkSocket serves socket(AF_NETLINK, SOCK_RAW or SOCK_DGRAM,
// NETLINK_ROUTE).
func (c *call) netlinkSocket(typ int) int64 {
	mine, guest, ino, err := socketpair(unix.SOCK_SEQPACKET, typ, "netlink")
	if err != nil {
		return errno(err)
	}
	// Port ids as Linux gives them: the first socket of a process gets
	// the process's pid; here every socket gets a fresh number.
	s := &nlSock{mine: mine, ino: ino, pid: uint32(c.p.pid)<<8 | c.k.nl.next.Add(1)&0xff}
	c.k.nl.put(s.ino, s)
	r := c.install(guest, nil, typ&unix.SOCK_CLOEXEC != 0)
	if r < 0 && r != answered {
		c.k.nl.drop(s.ino, s)
		s.mine.Close()
		return r
	}
	go s.serve(c.k)
	return r
}

// serve answers the requests the guest sends on its end.
func (s *nlSock) serve(k *Kernel) {
	defer k.nl.drop(s.ino, s)
	defer s.mine.Close()
	buf := make([]byte, 65536)
	for {
		n, err := s.mine.Read(buf)
		if err != nil || n == 0 {
			return // the guest closed its end
		}
		if out := s.handle(k.cfg.Net, buf[:n]); len(out) > 0 {
			if _, err := s.mine.Write(out); err != nil {
				return
			}
		}
	}
}

// nlFd returns the netlink socket that is guest fd n, or nil.
func (c *call) nlFd(n int) *nlSock {
	if c.k.nl.count.Load() == 0 {
		return nil
	}
	var st unix.Stat_t
	if c.k.statFd(c.th.Tid, n, &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		return nil
	}
	return c.k.nl.get(st.Ino)
}

// nlSockaddr is a sockaddr_nl: the kernel's (pid 0) or a socket's.
func nlSockaddr(pid uint32) []byte {
	b := make([]byte, unix.SizeofSockaddrNetlink)
	binary.LittleEndian.PutUint16(b, unix.AF_NETLINK)
	binary.LittleEndian.PutUint32(b[4:], pid)
	return b
}

// nlReply builds the messages answering one request.
type nlReply struct {
	b   []byte
	seq uint32
	pid uint32
}

// msg appends a message of type typ with flags whose payload is fixed
// followed by the attributes attrs (type, value pairs).
func (r *nlReply) msg(typ, flags uint16, fixed []byte, attrs ...nlAttr) {
	start := len(r.b)
	r.b = append(r.b, make([]byte, unix.SizeofNlMsghdr)...)
	r.b = append(r.b, fixed...)
	for _, a := range attrs {
		l := unix.SizeofRtAttr + len(a.v)
		r.b = binary.LittleEndian.AppendUint16(r.b, uint16(l))
		r.b = binary.LittleEndian.AppendUint16(r.b, a.t)
		r.b = append(r.b, a.v...)
		for len(r.b)%4 != 0 {
			r.b = append(r.b, 0)
		}
	}
	h := r.b[start:]
	binary.LittleEndian.PutUint32(h, uint32(len(h)))
	binary.LittleEndian.PutUint16(h[4:], typ)
	binary.LittleEndian.PutUint16(h[6:], flags)
	binary.LittleEndian.PutUint32(h[8:], r.seq)
	binary.LittleEndian.PutUint32(h[12:], r.pid)
}

// nlAttr is one route attribute.
type nlAttr struct {
	t uint16
	v []byte
}

func u32(v uint32) []byte  { return binary.LittleEndian.AppendUint32(nil, v) }
func cstr(s string) []byte { return append([]byte(s), 0) }

// handle answers the messages of one request datagram.
func (s *nlSock) handle(st *netdev.Stack, b []byte) []byte {
	var out []byte
	for len(b) >= unix.SizeofNlMsghdr {
		l := int(binary.LittleEndian.Uint32(b))
		if l < unix.SizeofNlMsghdr || l > len(b) {
			break
		}
		m := b[:l]
		b = b[min((l+3)&^3, len(b)):]
		typ := binary.LittleEndian.Uint16(m[4:])
		flags := binary.LittleEndian.Uint16(m[6:])
		r := &nlReply{seq: binary.LittleEndian.Uint32(m[8:]), pid: s.pid}
		e := s.request(st, r, typ, flags, m[unix.SizeofNlMsghdr:])
		if e != 0 || flags&unix.NLM_F_ACK != 0 {
			// NLMSG_ERROR: the error (0 is an ack) and the request's
			// header (capped: no payload).
			fixed := append(u32(uint32(-e)), m[:unix.SizeofNlMsghdr]...)
			r.msg(unix.NLMSG_ERROR, unix.NLM_F_CAPPED, fixed)
		}
		out = append(out, r.b...)
	}
	return out
}

// request serves one message; it returns an errno (positive) or 0.
func (s *nlSock) request(st *netdev.Stack, r *nlReply, typ, flags uint16, p []byte) int32 {
	dump := flags&unix.NLM_F_DUMP == unix.NLM_F_DUMP
	switch typ {
	case unix.RTM_GETLINK:
		want, name := 0, ""
		if len(p) >= unix.SizeofIfInfomsg {
			want = int(int32(binary.LittleEndian.Uint32(p[4:])))
			name = string(nlAttrs(p[unix.SizeofIfInfomsg:])[unix.IFLA_IFNAME])
			if i := len(name) - 1; i >= 0 && name[i] == 0 {
				name = name[:i]
			}
		}
		n := 0
		for _, f := range st.Ifaces() {
			if !dump && f.Index != want && f.Name != name {
				continue
			}
			r.msg(unix.RTM_NEWLINK, multi(dump), ifinfo(f), linkAttrs(f)...)
			n++
		}
		if !dump && n == 0 {
			return int32(unix.ENODEV)
		}
	case unix.RTM_GETADDR:
		fam := 0
		if len(p) >= 1 {
			fam = int(p[0])
		}
		for _, f := range st.Ifaces() {
			for _, a := range f.Addrs {
				af := unix.AF_INET
				if a.Addr().Is6() {
					af = unix.AF_INET6
				}
				if fam != 0 && fam != af {
					continue
				}
				fixed, attrs := addrMsg(f, a, af)
				r.msg(unix.RTM_NEWADDR, multi(dump), fixed, attrs...)
			}
		}
	case unix.RTM_GETROUTE:
		fam := 0
		if len(p) >= 1 {
			fam = int(p[0])
		}
		ifs := map[string]netdev.Iface{}
		for _, f := range st.Ifaces() {
			ifs[f.Name] = f
		}
		for _, rt := range st.Routes() {
			af := unix.AF_INET
			if rt.Dst.Addr().Is6() {
				af = unix.AF_INET6
			}
			// lo's routes live in the local table, which ip route
			// does not show.
			if rt.Iface == "lo" || fam != 0 && fam != af {
				continue
			}
			f := ifs[rt.Iface]
			fixed, attrs := routeMsg(rt, af, f.Index, f.Addrs)
			r.msg(unix.RTM_NEWROUTE, multi(dump), fixed, attrs...)
		}
	case unix.RTM_GETNEIGH:
		fam := 0
		if len(p) >= 1 {
			fam = int(p[0])
		}
		for _, n := range st.Neighbors() {
			af := unix.AF_INET
			if n.Addr.Is6() {
				af = unix.AF_INET6
			}
			if fam != 0 && fam != af {
				continue
			}
			fixed, attrs := neighMsg(n, af)
			r.msg(unix.RTM_NEWNEIGH, multi(dump), fixed, attrs...)
		}
	case unix.RTM_NEWADDR, unix.RTM_DELADDR:
		return nlAddr(st, typ == unix.RTM_NEWADDR, p)
	case unix.RTM_NEWLINK, unix.RTM_SETLINK:
		return nlLink(st, p)
	case unix.RTM_NEWROUTE, unix.RTM_DELROUTE:
		return nlRoute(st, typ == unix.RTM_NEWROUTE, p)
	default:
		return int32(unix.EOPNOTSUPP)
	}
	if dump {
		r.msg(unix.NLMSG_DONE, unix.NLM_F_MULTI, u32(0))
	}
	return 0
}

func multi(dump bool) uint16 {
	if dump {
		return unix.NLM_F_MULTI
	}
	return 0
}

// nlAttrs splits route attributes by type.
func nlAttrs(b []byte) map[uint16][]byte {
	m := map[uint16][]byte{}
	for len(b) >= unix.SizeofRtAttr {
		l := int(binary.LittleEndian.Uint16(b))
		if l < unix.SizeofRtAttr || l > len(b) {
			break
		}
		m[binary.LittleEndian.Uint16(b[2:])&0x3fff] = b[unix.SizeofRtAttr:l]
		b = b[min((l+3)&^3, len(b)):]
	}
	return m
}

// ifinfo is the struct ifinfomsg of interface f.
func ifinfo(f netdev.Iface) []byte {
	b := make([]byte, unix.SizeofIfInfomsg)
	typ := uint16(unix.ARPHRD_ETHER)
	if f.Loopback {
		typ = unix.ARPHRD_LOOPBACK
	}
	binary.LittleEndian.PutUint16(b[2:], typ)
	binary.LittleEndian.PutUint32(b[4:], uint32(f.Index))
	fl := uint32(ifFlags(f))
	if f.Up {
		fl |= unix.IFF_LOWER_UP
	}
	binary.LittleEndian.PutUint32(b[8:], fl)
	return b
}

func linkAttrs(f netdev.Iface) []nlAttr {
	oper := []byte{2} // IF_OPER_DOWN
	if f.Up {
		oper = []byte{6} // IF_OPER_UP
	}
	if f.Loopback && f.Up {
		oper = []byte{0} // IF_OPER_UNKNOWN, as Linux's lo
	}
	a := []nlAttr{{unix.IFLA_IFNAME, cstr(f.Name)}, {unix.IFLA_MTU, u32(uint32(f.MTU))},
		{unix.IFLA_TXQLEN, u32(1000)}, {unix.IFLA_OPERSTATE, oper}, {unix.IFLA_LINKMODE, []byte{0}},
		{unix.IFLA_GROUP, u32(0)}}
	// struct rtnl_link_stats64: rx and tx packets, then rx and tx bytes
	// (ip -s link); the other 20 counters stay 0.
	stats := make([]byte, 24*8)
	binary.LittleEndian.PutUint64(stats[0:], f.RxPackets)
	binary.LittleEndian.PutUint64(stats[8:], f.TxPackets)
	binary.LittleEndian.PutUint64(stats[16:], f.RxBytes)
	binary.LittleEndian.PutUint64(stats[24:], f.TxBytes)
	a = append(a, nlAttr{unix.IFLA_STATS64, stats})
	if f.Loopback {
		a = append(a, nlAttr{unix.IFLA_ADDRESS, make([]byte, 6)}, nlAttr{unix.IFLA_BROADCAST, make([]byte, 6)})
	} else {
		a = append(a, nlAttr{unix.IFLA_ADDRESS, []byte(f.MAC)}, nlAttr{unix.IFLA_BROADCAST, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}})
	}
	return a
}

// addrMsg is the RTM_NEWADDR payload for address a of interface f.
func addrMsg(f netdev.Iface, a netip.Prefix, af int) ([]byte, []nlAttr) {
	b := make([]byte, unix.SizeofIfAddrmsg)
	b[0], b[1], b[2] = byte(af), byte(a.Bits()), unix.IFA_F_PERMANENT
	if f.Loopback {
		b[3] = unix.RT_SCOPE_HOST
	}
	binary.LittleEndian.PutUint32(b[4:], uint32(f.Index))
	ip := a.Addr().AsSlice()
	attrs := []nlAttr{{unix.IFA_ADDRESS, ip}}
	if af == unix.AF_INET {
		attrs = append(attrs, nlAttr{unix.IFA_LOCAL, ip})
		if !f.Loopback {
			m := netip.PrefixFrom(netip.AddrFrom4([4]byte{255, 255, 255, 255}), a.Bits()).Masked().Addr().As4()
			bc := a.Addr().As4()
			for i := range bc {
				bc[i] |= ^m[i]
			}
			attrs = append(attrs, nlAttr{unix.IFA_BROADCAST, bc[:]})
		}
		attrs = append(attrs, nlAttr{unix.IFA_LABEL, cstr(f.Name)})
	}
	// struct ifa_cacheinfo: preferred and valid lifetimes forever.
	ci := make([]byte, 16)
	binary.LittleEndian.PutUint32(ci, 0xffffffff)
	binary.LittleEndian.PutUint32(ci[4:], 0xffffffff)
	attrs = append(attrs, nlAttr{unix.IFA_FLAGS, u32(unix.IFA_F_PERMANENT)}, nlAttr{unix.IFA_CACHEINFO, ci})
	return b, attrs
}

// routeMsg is the RTM_NEWROUTE payload for route rt through interface
// index oif, whose addresses are addrs (a subnet's route names its own
// as the preferred source, as Linux's).
func routeMsg(rt netdev.Route, af, oif int, addrs []netip.Prefix) ([]byte, []nlAttr) {
	b := make([]byte, unix.SizeofRtMsg)
	b[0], b[1] = byte(af), byte(rt.Dst.Bits())
	b[4] = unix.RT_TABLE_MAIN
	b[5], b[6] = unix.RTPROT_KERNEL, unix.RT_SCOPE_LINK
	b[7] = unix.RTN_UNICAST
	attrs := []nlAttr{{unix.RTA_TABLE, u32(unix.RT_TABLE_MAIN)}}
	if rt.Dst.Bits() > 0 {
		attrs = append(attrs, nlAttr{unix.RTA_DST, rt.Dst.Masked().Addr().AsSlice()})
	}
	if rt.Gw.IsValid() {
		b[5], b[6] = unix.RTPROT_BOOT, unix.RT_SCOPE_UNIVERSE
		attrs = append(attrs, nlAttr{unix.RTA_GATEWAY, rt.Gw.AsSlice()})
	} else {
		for _, a := range addrs {
			if a.Masked() == rt.Dst.Masked() {
				attrs = append(attrs, nlAttr{unix.RTA_PREFSRC, a.Addr().AsSlice()})
				break
			}
		}
	}
	attrs = append(attrs, nlAttr{unix.RTA_OIF, u32(uint32(oif))})
	return b, attrs
}

// ifaceByIndex returns the name of interface index i.
func ifaceByIndex(st *netdev.Stack, i int) (string, bool) {
	for _, f := range st.Ifaces() {
		if f.Index == i {
			return f.Name, true
		}
	}
	return "", false
}

// nlAddr serves RTM_NEWADDR and RTM_DELADDR.
func nlAddr(st *netdev.Stack, add bool, p []byte) int32 {
	if len(p) < unix.SizeofIfAddrmsg {
		return int32(unix.EINVAL)
	}
	name, ok := ifaceByIndex(st, int(binary.LittleEndian.Uint32(p[4:])))
	if !ok {
		return int32(unix.ENODEV)
	}
	at := nlAttrs(p[unix.SizeofIfAddrmsg:])
	ip := at[unix.IFA_LOCAL]
	if ip == nil {
		ip = at[unix.IFA_ADDRESS]
	}
	a, ok := netip.AddrFromSlice(ip)
	if !ok || int(p[1]) > a.BitLen() {
		return int32(unix.EINVAL)
	}
	pf := netip.PrefixFrom(a, int(p[1]))
	var err error
	if add {
		err = st.AddAddr(name, pf)
	} else {
		err = st.DelAddr(name, pf)
	}
	if err != nil {
		if add {
			return int32(unix.EEXIST)
		}
		return int32(unix.EADDRNOTAVAIL)
	}
	return 0
}

// nlLink serves RTM_NEWLINK and RTM_SETLINK on an existing interface:
// up, down and the MTU.
func nlLink(st *netdev.Stack, p []byte) int32 {
	if len(p) < unix.SizeofIfInfomsg {
		return int32(unix.EINVAL)
	}
	at := nlAttrs(p[unix.SizeofIfInfomsg:])
	name, ok := ifaceByIndex(st, int(int32(binary.LittleEndian.Uint32(p[4:]))))
	if !ok {
		if n := at[unix.IFLA_IFNAME]; len(n) > 0 {
			name, ok = string(n[:len(n)-1]), true
			if _, ok = st.Iface(name); !ok {
				return int32(unix.ENODEV)
			}
		} else {
			return int32(unix.ENODEV)
		}
	}
	if m := at[unix.IFLA_MTU]; len(m) == 4 {
		if err := st.SetMTU(name, int(binary.LittleEndian.Uint32(m))); err != nil {
			return int32(unix.EINVAL)
		}
	}
	flags, change := binary.LittleEndian.Uint32(p[8:]), binary.LittleEndian.Uint32(p[12:])
	if change&unix.IFF_UP != 0 {
		if err := st.SetUp(name, flags&unix.IFF_UP != 0); err != nil {
			return int32(unix.EINVAL)
		}
	}
	return 0
}

// nlRoute serves RTM_NEWROUTE and RTM_DELROUTE in the main table.
func nlRoute(st *netdev.Stack, add bool, p []byte) int32 {
	if len(p) < unix.SizeofRtMsg {
		return int32(unix.EINVAL)
	}
	at := nlAttrs(p[unix.SizeofRtMsg:])
	af, dstLen := int(p[0]), int(p[1])
	dst := netip.IPv4Unspecified()
	if af == unix.AF_INET6 {
		dst = netip.IPv6Unspecified()
	}
	if d, ok := netip.AddrFromSlice(at[unix.RTA_DST]); ok {
		dst = d
	}
	if dstLen > dst.BitLen() {
		return int32(unix.EINVAL)
	}
	gw, _ := netip.AddrFromSlice(at[unix.RTA_GATEWAY])
	pf := netip.PrefixFrom(dst, dstLen)
	if !add {
		if !st.DelRoute(pf, gw) {
			return int32(unix.ESRCH)
		}
		return 0
	}
	name := ""
	if o := at[unix.RTA_OIF]; len(o) == 4 {
		name, _ = ifaceByIndex(st, int(binary.LittleEndian.Uint32(o)))
	}
	if name == "" {
		via := gw
		if !via.IsValid() {
			via = dst
		}
		name = st.IfaceFor(via)
	}
	if name == "" {
		return int32(unix.ENETUNREACH)
	}
	if err := st.AddRoute(pf, gw, name); err != nil {
		return int32(unix.EINVAL)
	}
	return 0
}

// nudStates maps netstack's neighbour states to Linux's NUD_* ones.
var nudStates = map[string]uint16{
	"incomplete": unix.NUD_INCOMPLETE, "reachable": unix.NUD_REACHABLE, "stale": unix.NUD_STALE,
	"delay": unix.NUD_DELAY, "probe": unix.NUD_PROBE, "static": unix.NUD_PERMANENT, "unreachable": unix.NUD_FAILED,
}

// neighMsg is an RTM_NEWNEIGH of neighbour n: struct ndmsg, NDA_DST and,
// once resolved, NDA_LLADDR.
func neighMsg(n netdev.Neighbor, af int) ([]byte, []nlAttr) {
	fixed := make([]byte, unix.SizeofNdMsg)
	fixed[0] = byte(af)
	binary.LittleEndian.PutUint32(fixed[4:], uint32(n.Index))
	binary.LittleEndian.PutUint16(fixed[8:], nudStates[n.State])
	fixed[11] = unix.RTN_UNICAST
	attrs := []nlAttr{{unix.NDA_DST, n.Addr.AsSlice()}}
	if n.MAC != nil {
		attrs = append(attrs, nlAttr{unix.NDA_LLADDR, n.MAC})
	}
	return fixed, attrs
}
