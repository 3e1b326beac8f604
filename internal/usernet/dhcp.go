package usernet

import (
	"bytes"
	"encoding/binary"
	"net"
	"net/netip"

	"gvisor.dev/gvisor/pkg/tcpip/checksum"
)

// The DHCP server (RFC 2131), on the frame level: a guest's DHCP
// request is a UDP broadcast from an address it does not have yet, so
// it is answered here, before the router's stack. There is one client,
// the machine, and one lease, Config.Guest, whoever asks.

// DHCP message types (option 53).
const (
	dhcpDiscover = 1
	dhcpOffer    = 2
	dhcpRequest  = 3
	dhcpDecline  = 4
	dhcpAck      = 5
	dhcpNak      = 6
	dhcpRelease  = 7
	dhcpInform   = 8
)

// Header sizes and offsets.
const (
	ethLen      = 14
	ipv4Len     = 20
	ipv6Len     = 40
	udpLen      = 8
	bootpLen    = 236 // the fixed BOOTP part, before the magic cookie
	bootpMinLen = 300 // what old clients expect at least
	leaseSecs   = 86400
)

var dhcpMagic = []byte{99, 130, 83, 99}

// dhcpRequestMsg is what the server reads of a client's message.
type dhcpRequestMsg struct {
	typ       byte
	xid       [4]byte
	flags     uint16
	ciaddr    netip.Addr
	chaddr    net.HardwareAddr
	requested netip.Addr // option 50
	server    netip.Addr // option 54
}

// parseDHCP reads a client's DHCP message out of an Ethernet frame: an
// IPv4 UDP datagram to port 67 with a BOOTREQUEST. ok is false for
// anything else.
func parseDHCP(f []byte) (m dhcpRequestMsg, ok bool) {
	if len(f) < ethLen+ipv4Len+udpLen || binary.BigEndian.Uint16(f[12:14]) != 0x0800 {
		return m, false
	}
	ip := f[ethLen:]
	ihl := int(ip[0]&0xf) * 4
	if ip[0]>>4 != 4 || ihl < ipv4Len || ip[9] != 17 || binary.BigEndian.Uint16(ip[6:8])&0x3fff != 0 {
		return m, false // not IPv4 UDP, or a fragment
	}
	total := int(binary.BigEndian.Uint16(ip[2:4]))
	if total > len(ip) || total < ihl+udpLen {
		return m, false
	}
	u := ip[ihl:total]
	if binary.BigEndian.Uint16(u[2:4]) != 67 {
		return m, false
	}
	ul := int(binary.BigEndian.Uint16(u[4:6]))
	if ul < udpLen || ul > len(u) {
		return m, false
	}
	b := u[udpLen:ul]
	if len(b) < bootpLen+len(dhcpMagic) || b[0] != 1 || b[1] != 1 || b[2] != 6 || !bytes.Equal(b[bootpLen:bootpLen+4], dhcpMagic) {
		return m, false // not an Ethernet BOOTREQUEST with DHCP options
	}
	copy(m.xid[:], b[4:8])
	m.flags = binary.BigEndian.Uint16(b[10:12])
	m.ciaddr = netip.AddrFrom4([4]byte(b[12:16]))
	m.chaddr = net.HardwareAddr(bytes.Clone(b[28:34]))
	opts := b[bootpLen+4:]
	for len(opts) > 0 {
		code := opts[0]
		if code == 255 {
			break
		}
		if code == 0 {
			opts = opts[1:]
			continue
		}
		if len(opts) < 2 || len(opts) < 2+int(opts[1]) {
			return m, false
		}
		v := opts[2 : 2+int(opts[1])]
		switch {
		case code == 53 && len(v) == 1:
			m.typ = v[0]
		case code == 50 && len(v) == 4:
			m.requested = netip.AddrFrom4([4]byte(v))
		case code == 54 && len(v) == 4:
			m.server = netip.AddrFrom4([4]byte(v))
		}
		opts = opts[2+len(v):]
	}
	return m, m.typ != 0
}

// dhcp answers a client's DHCP message in frame f: it returns the
// answer's frame, or nil when f is not one (or needs no answer).
func (n *Net) dhcp(f []byte) []byte {
	m, ok := parseDHCP(f)
	if !ok {
		return nil
	}
	return dhcpAnswer(n.cfg, m)
}

// dhcpAnswer returns the server's answer frame to m under layout c, or
// nil.
func dhcpAnswer(c Config, m dhcpRequestMsg) []byte {
	var typ byte
	yiaddr := c.Guest
	switch m.typ {
	case dhcpDiscover:
		typ = dhcpOffer
	case dhcpRequest:
		typ = dhcpAck
		if m.server.IsValid() && m.server != c.Gateway {
			return nil // the client chose another server
		}
		want := m.requested
		if !want.IsValid() {
			want = m.ciaddr // renewing
		}
		if want != c.Guest {
			typ, yiaddr = dhcpNak, netip.IPv4Unspecified()
		}
	case dhcpInform:
		typ, yiaddr = dhcpAck, netip.IPv4Unspecified()
	default:
		return nil // release, decline: nothing to say
	}

	b := make([]byte, bootpLen, bootpMinLen)
	b[0], b[1], b[2] = 2, 1, 6 // BOOTREPLY, Ethernet
	copy(b[4:8], m.xid[:])
	binary.BigEndian.PutUint16(b[10:12], m.flags)
	if m.typ == dhcpInform || typ == dhcpAck && m.ciaddr != netip.IPv4Unspecified() && m.ciaddr.IsValid() {
		ci := m.ciaddr.As4()
		copy(b[12:16], ci[:])
	}
	yi := yiaddr.As4()
	copy(b[16:20], yi[:])
	if typ != dhcpNak {
		si := c.Gateway.As4()
		copy(b[20:24], si[:])
	}
	copy(b[28:34], m.chaddr)
	b = append(b, dhcpMagic...)
	opt := func(code byte, v ...byte) { b = append(append(b, code, byte(len(v))), v...) }
	ip4 := func(a netip.Addr) []byte { x := a.As4(); return x[:] }
	u32 := func(x uint32) []byte { return binary.BigEndian.AppendUint32(nil, x) }
	opt(53, typ)
	opt(54, ip4(c.Gateway)...)
	if typ != dhcpNak {
		if m.typ != dhcpInform {
			opt(51, u32(leaseSecs)...)
			opt(58, u32(leaseSecs/2)...)
			opt(59, u32(leaseSecs*7/8)...)
		}
		mask := net.CIDRMask(c.Net.Bits(), 32)
		opt(1, mask...)
		opt(3, ip4(c.Gateway)...)
		opt(6, ip4(c.DNS)...)
		bc := c.Net.Masked().Addr().As4()
		for i := range bc {
			bc[i] |= ^mask[i]
		}
		opt(28, bc[:]...)
	}
	b = append(b, 255)
	for len(b) < bootpMinLen {
		b = append(b, 0)
	}

	// To the client's hardware address; to its address when it has one
	// (renewing), else broadcast, which every client takes.
	dst := netip.AddrFrom4([4]byte{255, 255, 255, 255})
	if m.ciaddr.IsValid() && m.ciaddr != netip.IPv4Unspecified() && typ != dhcpNak {
		dst = m.ciaddr
	}
	return udpFrame(m.chaddr, c.Gateway, 67, dst, 68, b)
}

// udpFrame builds an Ethernet frame with an IPv4 UDP datagram from the
// router, checksums filled in.
func udpFrame(to net.HardwareAddr, src netip.Addr, sport uint16, dst netip.Addr, dport uint16, payload []byte) []byte {
	u := make([]byte, udpLen+len(payload))
	binary.BigEndian.PutUint16(u[0:2], sport)
	binary.BigEndian.PutUint16(u[2:4], dport)
	binary.BigEndian.PutUint16(u[4:6], uint16(len(u)))
	copy(u[udpLen:], payload)
	// The pseudo header: addresses, protocol, UDP length.
	s4, d4 := src.As4(), dst.As4()
	var ph [12]byte
	copy(ph[0:4], s4[:])
	copy(ph[4:8], d4[:])
	ph[9] = 17
	binary.BigEndian.PutUint16(ph[10:12], uint16(len(u)))
	sum := ^checksum.Checksum(u, checksum.Checksum(ph[:], 0))
	if sum == 0 {
		sum = 0xffff
	}
	binary.BigEndian.PutUint16(u[6:8], sum)
	return ipv4Frame(to, src, dst, 17, u)
}

// ipv4Frame builds an Ethernet frame from the router with an IPv4
// packet of protocol proto, its header checksum filled in.
func ipv4Frame(to net.HardwareAddr, src, dst netip.Addr, proto byte, payload []byte) []byte {
	f := make([]byte, ethLen+ipv4Len+len(payload))
	copy(f[0:6], to)
	copy(f[6:12], GatewayMAC)
	binary.BigEndian.PutUint16(f[12:14], 0x0800)
	ip := f[ethLen : ethLen+ipv4Len]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:4], uint16(ipv4Len+len(payload)))
	ip[8] = 64 // TTL
	ip[9] = proto
	s4, d4 := src.As4(), dst.As4()
	copy(ip[12:16], s4[:])
	copy(ip[16:20], d4[:])
	binary.BigEndian.PutUint16(ip[10:12], ^checksum.Checksum(ip, 0))
	copy(f[ethLen+ipv4Len:], payload)
	return f
}
