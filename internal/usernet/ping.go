package usernet

import (
	"bytes"
	"encoding/binary"
	"net"
	"net/netip"
	"os"
	"time"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
)

// Outbound ICMP echo (IPv4), on the frame level: the router's stack,
// being promiscuous, would answer every echo request itself and make
// any address look alive. A request to an address outside the NAT goes
// to the host through an ICMP socket of the engine's instead, and the
// host's answer comes back as a frame from that address: a datagram
// ("ping") socket, which the host's net.ipv4.ping_group_range must allow
// for the engine's group, else a raw socket, which needs CAP_NET_RAW.
// With neither the request is dropped, and the guest's ping goes
// unanswered. Requests to the router's own addresses are its stack's;
// to other addresses of the NAT's network, unanswered.

// pingWait is how long an echo request waits for its reply.
const pingWait = 5 * time.Second

// echoRequest is an IPv4 ICMP echo request the guest sent.
type echoRequest struct {
	mac      net.HardwareAddr // the guest's
	src, dst netip.Addr
	id, seq  uint16
	data     []byte
}

// parseEcho reads an ICMP echo request (IPv4, or ICMPv6 right after
// the IPv6 header) out of frame f.
func parseEcho(f []byte) (e echoRequest, ok bool) {
	if len(f) < ethLen+ipv4Len+8 {
		return e, false
	}
	e.mac = net.HardwareAddr(bytes.Clone(f[6:12]))
	ip := f[ethLen:]
	var icmp []byte
	switch binary.BigEndian.Uint16(f[12:14]) {
	case 0x0800:
		ihl := int(ip[0]&0xf) * 4
		total := int(binary.BigEndian.Uint16(ip[2:4]))
		if ip[0]>>4 != 4 || ihl < ipv4Len || ip[9] != 1 || total > len(ip) || total < ihl+8 || binary.BigEndian.Uint16(ip[6:8])&0x3fff != 0 {
			return e, false
		}
		icmp = ip[ihl:total]
		if icmp[0] != 8 {
			return e, false
		}
		e.src, e.dst = netip.AddrFrom4([4]byte(ip[12:16])), netip.AddrFrom4([4]byte(ip[16:20]))
	case 0x86dd:
		if len(ip) < ipv6Len+8 || ip[0]>>4 != 6 || ip[6] != 58 {
			return e, false
		}
		pl := int(binary.BigEndian.Uint16(ip[4:6]))
		if pl < 8 || ipv6Len+pl > len(ip) {
			return e, false
		}
		icmp = ip[ipv6Len : ipv6Len+pl]
		if icmp[0] != 128 {
			return e, false
		}
		e.src, e.dst = netip.AddrFrom16([16]byte(ip[8:24])), netip.AddrFrom16([16]byte(ip[24:40]))
	default:
		return e, false
	}
	if icmp[1] != 0 {
		return e, false
	}
	e.id, e.seq = binary.BigEndian.Uint16(icmp[4:6]), binary.BigEndian.Uint16(icmp[6:8])
	e.data = bytes.Clone(icmp[8:])
	return e, true
}

// ping takes frame f when it is an echo request that is not the
// router's to answer, and forwards it when it goes outside the NAT.
func (n *Net) ping(f []byte) bool {
	e, ok := parseEcho(f)
	if !ok || e.dst == n.cfg.Gateway || e.dst == n.cfg.DNS || e.dst == n.cfg.Gateway6 || e.dst == n.cfg.DNS6 || e.dst.IsMulticast() || e.dst.IsLinkLocalUnicast() {
		return false
	}
	if dst, ok := n.hostAddr(e.dst, 0); ok {
		n.start(func() { n.echo(e, dst.Addr()) })
	}
	return true
}

// echo sends e's request to dst from the host and passes the reply on.
func (n *Net) echo(e echoRequest, dst netip.Addr) {
	fam, proto, reqType, repType := unix.AF_INET6, unix.IPPROTO_ICMPV6, byte(128), byte(129)
	var to unix.Sockaddr = &unix.SockaddrInet6{Addr: dst.As16()}
	if dst.Is4() {
		fam, proto, reqType, repType = unix.AF_INET, unix.IPPROTO_ICMP, 8, 0
		to = &unix.SockaddrInet4{Addr: dst.As4()}
	}
	raw := false
	fd, err := unix.Socket(fam, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, proto)
	if err != nil {
		raw = true
		if fd, err = unix.Socket(fam, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, proto); err != nil {
			return
		}
	}
	s := os.NewFile(uintptr(fd), "icmp")
	defer s.Close()
	rc, err := s.SyscallConn()
	if err != nil {
		return
	}
	req := make([]byte, 8+len(e.data))
	req[0] = reqType
	binary.BigEndian.PutUint16(req[4:6], e.id) // a ping socket puts its own
	binary.BigEndian.PutUint16(req[6:8], e.seq)
	copy(req[8:], e.data)
	if !dst.Is6() {
		binary.BigEndian.PutUint16(req[2:4], ^checksum.Checksum(req, 0)) // ICMPv6's is the host's to make
	}
	var serr error
	rc.Write(func(fd uintptr) bool {
		serr = unix.Sendto(int(fd), req, 0, to)
		return serr != unix.EAGAIN
	})
	if serr != nil {
		return
	}
	deadline := time.Now().Add(pingWait)
	buf := make([]byte, 65536)
	for n.ctx.Err() == nil {
		s.SetReadDeadline(deadline)
		var k int
		var from unix.Sockaddr
		var rerr error
		if err := rc.Read(func(fd uintptr) bool {
			k, from, rerr = unix.Recvfrom(int(fd), buf, 0)
			return rerr != unix.EAGAIN
		}); err != nil || rerr != nil {
			return
		}
		if !sockaddrIs(from, dst) {
			continue // a raw socket sees every ICMP message to the host
		}
		r := buf[:k]
		if raw && !dst.Is6() {
			r = r[min(int(r[0]&0xf)*4, len(r)):] // with its IP header
		}
		if len(r) < 8 || r[0] != repType || raw && binary.BigEndian.Uint16(r[4:6]) != e.id || binary.BigEndian.Uint16(r[6:8]) != e.seq {
			continue
		}
		rep := bytes.Clone(r)
		binary.BigEndian.PutUint16(rep[4:6], e.id)
		rep[2], rep[3] = 0, 0
		var f []byte
		if dst.Is6() {
			f = ipv6Frame(e.mac, e.dst, e.src, 58, rep)
		} else {
			binary.BigEndian.PutUint16(rep[2:4], ^checksum.Checksum(rep, 0))
			f = ipv4Frame(e.mac, e.dst, e.src, 1, rep)
		}
		select {
		case n.extra <- f:
		default:
		}
		return
	}
}

// sockaddrIs says whether sa is address a.
func sockaddrIs(sa unix.Sockaddr, a netip.Addr) bool {
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		return a.Is4() && sa.Addr == a.As4()
	case *unix.SockaddrInet6:
		return a.Is6() && sa.Addr == a.As16()
	}
	return false
}

// ipv6Frame builds an Ethernet frame from the router with an IPv6
// packet whose payload is of protocol next (ICMPv6: its checksum filled
// in).
func ipv6Frame(to net.HardwareAddr, src, dst netip.Addr, next byte, payload []byte) []byte {
	f := make([]byte, ethLen+ipv6Len+len(payload))
	copy(f[0:6], to)
	copy(f[6:12], GatewayMAC)
	binary.BigEndian.PutUint16(f[12:14], 0x86dd)
	ip := f[ethLen : ethLen+ipv6Len]
	ip[0] = 0x60
	binary.BigEndian.PutUint16(ip[4:6], uint16(len(payload)))
	ip[6], ip[7] = next, 64
	s16, d16 := src.As16(), dst.As16()
	copy(ip[8:24], s16[:])
	copy(ip[24:40], d16[:])
	p := f[ethLen+ipv6Len:]
	copy(p, payload)
	if next == 58 {
		var ph [40]byte
		copy(ph[0:16], s16[:])
		copy(ph[16:32], d16[:])
		binary.BigEndian.PutUint32(ph[32:36], uint32(len(p)))
		ph[39] = 58
		binary.BigEndian.PutUint16(p[2:4], ^checksum.Checksum(p, checksum.Checksum(ph[:], 0)))
	}
	return f
}
