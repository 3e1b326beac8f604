package usernet

import (
	"encoding/binary"
	"net"
	"net/netip"
	"testing"
	"time"
)

var clientMAC = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x15}

// clientMsg builds a client's DHCP frame of type typ with options
// 50 (requested, when valid) and 54 (server, when valid), as udhcpc
// sends it: from 0.0.0.0 (or ciaddr) to the broadcast address.
func clientMsg(typ byte, ciaddr, requested, server netip.Addr) []byte {
	b := make([]byte, bootpLen)
	b[0], b[1], b[2] = 1, 1, 6
	copy(b[4:8], []byte{1, 2, 3, 4})
	if ciaddr.IsValid() {
		c := ciaddr.As4()
		copy(b[12:16], c[:])
	}
	copy(b[28:34], clientMAC)
	b = append(b, dhcpMagic...)
	b = append(b, 53, 1, typ)
	if requested.IsValid() {
		r := requested.As4()
		b = append(append(b, 50, 4), r[:]...)
	}
	if server.IsValid() {
		s := server.As4()
		b = append(append(b, 54, 4), s[:]...)
	}
	b = append(b, 55, 3, 1, 3, 6, 255)
	src := netip.IPv4Unspecified()
	if ciaddr.IsValid() {
		src = ciaddr
	}
	f := udpFrame(net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, src, 68, netip.MustParseAddr("255.255.255.255"), 67, b)
	copy(f[6:12], clientMAC)
	return f
}

// reply is what a client reads of the server's answer.
type reply struct {
	typ         byte
	yiaddr, dst netip.Addr
	opts        map[byte][]byte
	ethDst      net.HardwareAddr
	csumOK      bool
}

func readReply(t *testing.T, f []byte) reply {
	t.Helper()
	if len(f) < ethLen+ipv4Len+udpLen+bootpLen+4 {
		t.Fatalf("short answer: %d bytes", len(f))
	}
	ip := f[ethLen:]
	u := ip[ipv4Len:]
	r := reply{ethDst: net.HardwareAddr(f[0:6]), dst: netip.AddrFrom4([4]byte(ip[16:20])), opts: map[byte][]byte{}}
	// Checksums as a client checks them: the header's and the UDP one.
	hdrOK := ipChecksum(ip[:ipv4Len]) == 0
	var ph [12]byte
	copy(ph[0:8], ip[12:20])
	ph[9] = 17
	binary.BigEndian.PutUint16(ph[10:], uint16(len(u)))
	r.csumOK = hdrOK && ipChecksum(append(ph[:], u...)) == 0
	b := u[udpLen:]
	if b[0] != 2 || binary.BigEndian.Uint16(u[0:2]) != 67 || binary.BigEndian.Uint16(u[2:4]) != 68 {
		t.Fatalf("not a BOOTREPLY from 67 to 68")
	}
	r.yiaddr = netip.AddrFrom4([4]byte(b[16:20]))
	o := b[bootpLen+4:]
	for len(o) >= 2 && o[0] != 255 {
		r.opts[o[0]] = o[2 : 2+o[1]]
		o = o[2+o[1]:]
	}
	r.typ = r.opts[53][0]
	return r
}

func ipChecksum(b []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s > 0xffff {
		s = s&0xffff + s>>16
	}
	return ^uint16(s)
}

// The exchange udhcpc makes, through the NAT's frames: DISCOVER gets an
// OFFER of 10.0.2.15 with the router, DNS and mask; REQUEST of it an
// ACK; of another address a NAK; a REQUEST to another server nothing; a
// renewal (ciaddr set) an ACK to the client's address.
func TestDHCPExchange(t *testing.T) {
	n, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	got := make(chan []byte, 4)
	go func() {
		for {
			b := make([]byte, 2048)
			k, err := n.ReadFrame(b)
			if err != nil {
				return
			}
			got <- b[:k]
		}
	}()
	ask := func(f []byte) []byte {
		t.Helper()
		if err := n.WriteFrame(f); err != nil {
			t.Fatal(err)
		}
		select {
		case b := <-got:
			return b
		case <-time.After(300 * time.Millisecond):
			return nil
		}
	}
	none := netip.Addr{}
	gw, guest := netip.MustParseAddr("10.0.2.2"), netip.MustParseAddr("10.0.2.15")

	r := readReply(t, ask(clientMsg(dhcpDiscover, none, none, none)))
	if r.typ != dhcpOffer || r.yiaddr != guest || !r.csumOK || r.ethDst.String() != clientMAC.String() || r.dst.String() != "255.255.255.255" {
		t.Fatalf("offer: %+v", r)
	}
	for code, want := range map[byte]string{1: "\xff\xff\xff\x00", 3: "\x0a\x00\x02\x02", 6: "\x0a\x00\x02\x03", 54: "\x0a\x00\x02\x02", 28: "\x0a\x00\x02\xff"} {
		if string(r.opts[code]) != want {
			t.Errorf("offer option %d = %x, want %x", code, r.opts[code], want)
		}
	}
	if r := readReply(t, ask(clientMsg(dhcpRequest, none, guest, gw))); r.typ != dhcpAck || r.yiaddr != guest || len(r.opts[51]) != 4 {
		t.Errorf("ack: %+v", r)
	}
	if r := readReply(t, ask(clientMsg(dhcpRequest, none, netip.MustParseAddr("10.0.2.99"), gw))); r.typ != dhcpNak || r.yiaddr.IsValid() && !r.yiaddr.IsUnspecified() {
		t.Errorf("nak: %+v", r)
	}
	if b := ask(clientMsg(dhcpRequest, none, guest, netip.MustParseAddr("10.0.2.200"))); b != nil {
		t.Errorf("answered a request to another server")
	}
	if r := readReply(t, ask(clientMsg(dhcpRequest, guest, none, none))); r.typ != dhcpAck || r.dst != guest {
		t.Errorf("renewal: %+v", r)
	}
	if b := ask(clientMsg(dhcpRelease, guest, none, gw)); b != nil {
		t.Errorf("answered a release")
	}
}

// FuzzDHCP: any frame is either not DHCP or gets a well-formed answer
// (or none); nothing panics.
func FuzzDHCP(f *testing.F) {
	none := netip.Addr{}
	f.Add(clientMsg(dhcpDiscover, none, none, none))
	f.Add(clientMsg(dhcpRequest, none, netip.MustParseAddr("10.0.2.15"), netip.MustParseAddr("10.0.2.2")))
	f.Add(clientMsg(dhcpInform, netip.MustParseAddr("10.0.2.15"), none, none))
	c := Config{}.Defaults()
	f.Fuzz(func(t *testing.T, b []byte) {
		m, ok := parseDHCP(b)
		if !ok {
			return
		}
		a := dhcpAnswer(c, m)
		if a == nil {
			return
		}
		if _, ok := parseReplyShape(a); !ok {
			t.Fatalf("malformed answer %x", a)
		}
	})
}

// parseReplyShape checks an answer's framing: lengths agree, option 53
// is there.
func parseReplyShape(f []byte) (byte, bool) {
	if len(f) < ethLen+ipv4Len+udpLen+bootpLen+4 || int(binary.BigEndian.Uint16(f[ethLen+2:])) != len(f)-ethLen {
		return 0, false
	}
	o := f[ethLen+ipv4Len+udpLen+bootpLen+4:]
	if len(o) < 3 || o[0] != 53 || o[1] != 1 {
		return 0, false
	}
	return o[2], true
}

// FuzzEcho: the echo-request parser takes any frame without panicking,
// and what it takes is an echo request of one address family.
func FuzzEcho(f *testing.F) {
	f.Add(ipv4Frame(clientMAC, netip.MustParseAddr("10.0.2.15"), netip.MustParseAddr("192.0.2.1"), 1, []byte{8, 0, 0, 0, 0, 1, 0, 1, 'x'}))
	f.Add(ipv6Frame(clientMAC, netip.MustParseAddr("fec0::15"), netip.MustParseAddr("2001:db8::1"), 58, []byte{128, 0, 0, 0, 0, 1, 0, 1, 'x'}))
	f.Fuzz(func(t *testing.T, b []byte) {
		e, ok := parseEcho(b)
		if ok && (e.src.Is4() != e.dst.Is4() || len(e.mac) != 6) {
			t.Fatalf("parsed %+v", e)
		}
	})
}
