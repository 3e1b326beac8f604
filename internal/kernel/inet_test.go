package kernel

import (
	"encoding/binary"
	"net"
	"net/netip"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"

	"github.com/umltools/umltools/internal/abi"
	"github.com/umltools/umltools/internal/netdev"
)

func sin(port uint16, a [4]byte) []byte {
	b := make([]byte, 16)
	binary.LittleEndian.PutUint16(b, unix.AF_INET)
	binary.BigEndian.PutUint16(b[2:], port)
	copy(b[4:], a[:])
	return b
}

func TestSockaddrInet(t *testing.T) {
	six := make([]byte, 28)
	binary.LittleEndian.PutUint16(six, unix.AF_INET6)
	binary.BigEndian.PutUint16(six[2:], 80)
	six[23] = 1 // ::1
	for _, c := range []struct {
		name string
		b    []byte
		fam  int
		want string
		r    int64
	}{
		{"v4", sin(8080, [4]byte{10, 0, 0, 1}), unix.AF_INET, "10.0.0.1:8080", 0},
		{"any", sin(5000, [4]byte{}), unix.AF_INET, ":5000", 0},
		{"v4 on v6 socket", sin(22, [4]byte{127, 0, 0, 1}), unix.AF_INET6, "[::ffff:127.0.0.1]:22", 0},
		{"v6", six, unix.AF_INET6, "[::1]:80", 0},
		{"v6 on v4 socket", six, unix.AF_INET, "", -abi.EAFNOSUPPORT},
		{"short", sin(1, [4]byte{1, 2, 3, 4})[:8], unix.AF_INET, "", -abi.EINVAL},
		{"unix", []byte{1, 0, '/', 0}, unix.AF_INET, "", -abi.EAFNOSUPPORT},
	} {
		a, r := sockaddrInet(c.b, c.fam)
		if r != c.r {
			t.Errorf("%s: result %d, want %d", c.name, r, c.r)
			continue
		}
		if r != 0 {
			continue
		}
		got := ":" + itoa(a.Port)
		if a.Addr.Len() > 0 {
			ip, _ := netip.AddrFromSlice(a.Addr.AsSlice())
			got = netip.AddrPortFrom(ip, a.Port).String()
		}
		if got != c.want {
			t.Errorf("%s: %s, want %s", c.name, got, c.want)
		}
		// Round trip through what getsockname writes.
		back, r := sockaddrInet(sockaddrOf(a, c.fam), c.fam)
		if r != 0 || back != a {
			t.Errorf("%s: round trip gives %v (%d), want %v", c.name, back, r, a)
		}
	}
}

func itoa(p uint16) string {
	return netip.AddrPortFrom(netip.IPv4Unspecified(), p).String()[len("0.0.0.0:"):]
}

// /proc/net/route and /proc/net/dev as busybox's route and ifconfig read
// them.
func TestProcNet(t *testing.T) {
	st := stackWithEth0(t)
	if _, err := st.SetAddr4("eth0", netip.MustParsePrefix("192.168.1.7/24")); err != nil {
		t.Fatal(err)
	}
	st.AddRoute(netip.MustParsePrefix("0.0.0.0/0"), netip.MustParseAddr("192.168.1.1"), "eth0")
	route := string(procNetRoute(st))
	for _, want := range []string{"eth0\t0001A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t", "eth0\t00000000\t0101A8C0\t0003\t0\t0\t0\t00000000\t"} {
		if !strings.Contains(route, want) {
			t.Errorf("/proc/net/route lacks %q:\n%s", want, route)
		}
	}
	for _, l := range strings.Split(strings.TrimSuffix(route, "\n"), "\n") {
		if len(l) != 127 {
			t.Errorf("route line of %d bytes, want 127: %q", len(l), l)
		}
	}
	dev := string(procNetDev(st))
	if !strings.Contains(dev, "    lo:") || !strings.Contains(dev, "  eth0:") {
		t.Errorf("/proc/net/dev:\n%s", dev)
	}
}

// stackWithEth0 returns a stack with an eth0 whose transport carries
// nothing, closed when tb ends.
func stackWithEth0(tb testing.TB) *netdev.Stack {
	st, err := netdev.New()
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(st.Close)
	if _, err := st.Add("eth0", nil, nopFrames{make(chan struct{})}); err != nil {
		tb.Fatal(err)
	}
	return st
}

// nopFrames is a transport that carries nothing.
type nopFrames struct{ closed chan struct{} }

func (f nopFrames) ReadFrame([]byte) (int, error) { <-f.closed; return 0, net.ErrClosed }
func (nopFrames) WriteFrame([]byte) error         { return nil }
func (f nopFrames) Close() error                  { close(f.closed); return nil }

// FuzzNetlink feeds route netlink requests (the bytes a guest sends) to
// the engine's answerer over a stack with a device: it must never panic,
// and every answer is a sequence of well-formed messages.
func FuzzNetlink(f *testing.F) {
	st := stackWithEth0(f)
	req := func(typ, flags uint16, payload []byte) []byte {
		b := make([]byte, 16, 16+len(payload))
		binary.LittleEndian.PutUint32(b, uint32(16+len(payload)))
		binary.LittleEndian.PutUint16(b[4:], typ)
		binary.LittleEndian.PutUint16(b[6:], flags)
		return append(b, payload...)
	}
	dump := uint16(unix.NLM_F_REQUEST | unix.NLM_F_DUMP)
	f.Add(req(unix.RTM_GETLINK, dump, make([]byte, unix.SizeofIfInfomsg)))
	f.Add(req(unix.RTM_GETADDR, dump, []byte{unix.AF_INET, 0, 0, 0, 0, 0, 0, 0}))
	f.Add(req(unix.RTM_GETROUTE, dump, make([]byte, unix.SizeofRtMsg)))
	addr := []byte{unix.AF_INET, 24, 0, 0, 2, 0, 0, 0, 8, 0, unix.IFA_LOCAL, 0, 10, 0, 0, 2}
	f.Add(req(unix.RTM_NEWADDR, unix.NLM_F_REQUEST|unix.NLM_F_ACK, addr))
	link := make([]byte, unix.SizeofIfInfomsg+8)
	binary.LittleEndian.PutUint32(link[4:], 2)
	binary.LittleEndian.PutUint32(link[8:], unix.IFF_UP)
	binary.LittleEndian.PutUint32(link[12:], unix.IFF_UP)
	copy(link[16:], []byte{8, 0, unix.IFLA_MTU, 0, 0xdc, 5, 0, 0})
	f.Add(req(unix.RTM_NEWLINK, unix.NLM_F_REQUEST|unix.NLM_F_ACK, link))
	f.Add(req(unix.RTM_NEWROUTE, unix.NLM_F_REQUEST|unix.NLM_F_ACK, []byte{unix.AF_INET, 0, 0, 0, 254, 3, 0, 1, 8, 0, unix.RTA_GATEWAY, 0, 10, 0, 0, 1}))
	s := &nlSock{pid: 77}
	f.Fuzz(func(t *testing.T, b []byte) {
		out := s.handle(st, b)
		for len(out) > 0 {
			if len(out) < unix.SizeofNlMsghdr {
				t.Fatalf("a truncated header in the answer: % x", out)
			}
			l := int(binary.LittleEndian.Uint32(out))
			if l < unix.SizeofNlMsghdr || l > len(out) || l%4 != 0 {
				t.Fatalf("a message of length %d in an answer of %d bytes", l, len(out))
			}
			if pid := binary.LittleEndian.Uint32(out[12:]); pid != 77 {
				t.Fatalf("answer to port %d, want 77", pid)
			}
			out = out[l:]
		}
	})
}

// FuzzSockaddrInet: any guest sockaddr parses or fails cleanly, and what
// parses encodes back to itself.
func FuzzSockaddrInet(f *testing.F) {
	f.Add(sin(80, [4]byte{10, 0, 0, 1}), true)
	f.Add(make([]byte, 28), false)
	f.Fuzz(func(t *testing.T, b []byte, v4 bool) {
		fam := unix.AF_INET6
		if v4 {
			fam = unix.AF_INET
		}
		a, r := sockaddrInet(b, fam)
		if r != 0 {
			return
		}
		if back, r := sockaddrInet(sockaddrOf(a, fam), fam); r != 0 || back != a {
			t.Fatalf("%v encodes to %v (%d)", a, back, r)
		}
	})
}

// /proc/net/tcp, tcp6, udp and udp6 as netstat reads them: a listener
// on 127.0.0.1:8080, a dual-stack UDP socket on [::]:53 (listed once).
func TestProcNetSockets(t *testing.T) {
	st, err := netdev.New()
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ln, err := gonet.ListenTCP(st.Netstack(), tcpip.FullAddress{Addr: tcpip.AddrFrom4([4]byte{127, 0, 0, 1}), Port: 8080}, ipv4.ProtocolNumber)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	u, err := gonet.DialUDP(st.Netstack(), &tcpip.FullAddress{Port: 53}, nil, ipv6.ProtocolNumber)
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	k := &Kernel{}
	k.cfg.Net = st
	for _, tc := range []struct{ file, head, row string }{
		{"tcp", "  sl  local_address rem_address   st tx_queue", "   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 0 1 "},
		{"tcp6", "  sl  local_address                         remote_address                        st", ""},
		{"udp", "   sl  local_address rem_address   st", ""},
		{"udp6", "   sl  local_address", "    0: 00000000000000000000000000000000:0035 00000000000000000000000000000000:0000 07 "},
	} {
		out := string(k.procNetSockets(tc.file))
		ls := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
		if !strings.HasPrefix(ls[0], tc.head) {
			t.Errorf("%s: header %q", tc.file, ls[0])
		}
		if tc.row == "" && len(ls) != 1 || tc.row != "" && (len(ls) != 2 || !strings.HasPrefix(ls[1], tc.row)) {
			t.Errorf("/proc/net/%s:\n%s", tc.file, out)
		}
	}
}

// The neighbour table as /proc/net/arp (busybox arp) and RTM_NEWNEIGH
// (ip neigh) show it: a static entry is complete and permanent.
func TestNeighbors(t *testing.T) {
	st := stackWithEth0(t)
	st.SetUp("eth0", true)
	if terr := st.Netstack().AddStaticNeighbor(2, ipv4.ProtocolNumber, tcpip.AddrFrom4([4]byte{10, 0, 2, 2}), "\x52\x55\x0a\x00\x02\x02"); terr != nil {
		t.Fatal(terr)
	}
	arp := string(procNetARP(st))
	want := "IP address       HW type     Flags       HW address            Mask     Device\n" +
		"10.0.2.2         0x1         0x6         52:55:0a:00:02:02     *        eth0\n"
	if arp != want {
		t.Errorf("/proc/net/arp:\n%q\nwant\n%q", arp, want)
	}
	var s nlSock
	req := make([]byte, unix.SizeofNlMsghdr+unix.SizeofNdMsg)
	binary.LittleEndian.PutUint32(req, uint32(len(req)))
	binary.LittleEndian.PutUint16(req[4:], unix.RTM_GETNEIGH)
	binary.LittleEndian.PutUint16(req[6:], unix.NLM_F_REQUEST|unix.NLM_F_DUMP)
	out := s.handle(st, req)
	if len(out) < unix.SizeofNlMsghdr+unix.SizeofNdMsg || binary.LittleEndian.Uint16(out[4:]) != unix.RTM_NEWNEIGH {
		t.Fatalf("answer % x", out)
	}
	nd := out[unix.SizeofNlMsghdr:]
	if nd[0] != unix.AF_INET || binary.LittleEndian.Uint32(nd[4:]) != 2 || binary.LittleEndian.Uint16(nd[8:]) != unix.NUD_PERMANENT {
		t.Errorf("ndmsg % x", nd[:unix.SizeofNdMsg])
	}
	attrs := nlAttrs(nd[unix.SizeofNdMsg : binary.LittleEndian.Uint32(out)-unix.SizeofNlMsghdr])
	if string(attrs[unix.NDA_DST]) != "\x0a\x00\x02\x02" || string(attrs[unix.NDA_LLADDR]) != "\x52\x55\x0a\x00\x02\x02" {
		t.Errorf("attributes %v", attrs)
	}
}
