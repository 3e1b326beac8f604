package usernet_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"

	"github.com/umltools/umltools/internal/netdev"
	"github.com/umltools/umltools/internal/usernet"
)

// guest is a machine's stack on a NAT, configured as DHCP would.
func guest(t *testing.T, cfg usernet.Config) (*netdev.Stack, *usernet.Net) {
	t.Helper()
	n, err := usernet.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	st, err := netdev.New()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close(); n.Close() })
	if _, err := st.Add("eth0", nil, n); err != nil {
		t.Fatal(err)
	}
	if err := st.SetUp("eth0", true); err != nil {
		t.Fatal(err)
	}
	if err := st.AddAddr("eth0", netip.MustParsePrefix("10.0.2.15/24")); err != nil {
		t.Fatal(err)
	}
	if err := st.AddRoute(netip.MustParsePrefix("0.0.0.0/0"), netip.MustParseAddr("10.0.2.2"), "eth0"); err != nil {
		t.Fatal(err)
	}
	return st, n
}

func full(a string, port uint16) tcpip.FullAddress {
	return tcpip.FullAddress{Addr: tcpip.AddrFromSlice(netip.MustParseAddr(a).AsSlice()), Port: port}
}

// The gateway is the host's loopback: a guest connection to 10.0.2.2:P
// reaches a host server on 127.0.0.1:P, both ways, with half closes.
func TestGatewayIsHostLoopback(t *testing.T) {
	st, _ := guest(t, usernet.Config{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		b, _ := io.ReadAll(c) // until the guest's half close
		c.Write(bytes.ToUpper(b))
		c.Close()
	}()
	port := uint16(ln.Addr().(*net.TCPAddr).Port)
	c, err := gonet.DialTCP(st.Netstack(), full("10.0.2.2", port), ipv4.ProtocolNumber)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	msg := bytes.Repeat([]byte("hello over the nat "), 20000)
	go func() { c.Write(msg); c.CloseWrite() }()
	c.SetReadDeadline(time.Now().Add(20 * time.Second))
	got, err := io.ReadAll(c)
	if err != nil || !bytes.Equal(got, bytes.ToUpper(msg)) {
		t.Fatalf("got %d bytes (%v), want %d", len(got), err, len(msg))
	}
}

// A closed host port refuses the guest's connection.
func TestRefused(t *testing.T) {
	st, _ := guest(t, usernet.Config{})
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	port := uint16(ln.Addr().(*net.TCPAddr).Port)
	ln.Close()
	_, err := gonet.DialTCP(st.Netstack(), full("10.0.2.2", port), ipv4.ProtocolNumber)
	if err == nil || !strings.Contains(err.Error(), "refused") {
		t.Fatalf("dial a closed port: %v", err)
	}
}

// The DNS proxy at 10.0.2.3:53 passes questions to the upstream
// resolver and its answers back.
func TestDNSProxy(t *testing.T) {
	up := udpServer(t, func(q []byte) []byte { return append([]byte("answer:"), q...) })
	st, _ := guest(t, usernet.Config{Upstream: up})
	to := full("10.0.2.3", 53)
	c, err := gonet.DialUDP(st.Netstack(), nil, &to, ipv4.ProtocolNumber)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i := 0; i < 2; i++ {
		c.Write([]byte("question"))
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		b := make([]byte, 512)
		k, err := c.Read(b)
		if err != nil || string(b[:k]) != "answer:question" {
			t.Fatalf("read %q, %v", b[:k], err)
		}
	}
	// Another port of the proxy's address goes nowhere.
	to.Port = 54
	c2, _ := gonet.DialUDP(st.Netstack(), nil, &to, ipv4.ProtocolNumber)
	defer c2.Close()
	c2.Write([]byte("question"))
	c2.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	if k, err := c2.Read(make([]byte, 64)); err == nil {
		t.Errorf("port 54 of the DNS address answered %d bytes", k)
	}
}

// Host forwards, TCP and UDP, on a port the host picks, added at start
// and at run time, and removed.
func TestForwards(t *testing.T) {
	fwd, err := usernet.ParseForward("tcp:127.0.0.1:0-:80")
	if err != nil {
		t.Fatal(err)
	}
	st, n := guest(t, usernet.Config{Forwards: []usernet.Forward{fwd}})
	ln, err := gonet.ListenTCP(st.Netstack(), tcpip.FullAddress{Port: 80}, ipv4.ProtocolNumber)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("from the guest, to " + c.RemoteAddr().String()))
			c.Close()
		}
	}()
	fs := n.Forwards()
	if len(fs) != 1 || fs[0].Host.Port() == 0 {
		t.Fatalf("forwards %v", fs)
	}
	c, err := net.Dial("tcp", fs[0].Host.String())
	if err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	b, err := io.ReadAll(c)
	c.Close()
	if !strings.HasPrefix(string(b), "from the guest, to 10.0.2.2:") {
		t.Fatalf("read %q, %v", b, err)
	}

	// UDP, at run time.
	u, _ := usernet.ParseForward("udp:127.0.0.1:0-10.0.2.15:5353")
	if err := n.AddForward(u); err != nil {
		t.Fatal(err)
	}
	if err := n.AddForward(fs[0]); !errors.Is(err, usernet.ErrForwardExists) && !errors.Is(err, syscall.EADDRINUSE) {
		t.Errorf("the same host port twice: %v", err)
	}
	gu, err := gonet.DialUDP(st.Netstack(), &tcpip.FullAddress{Port: 5353}, nil, ipv4.ProtocolNumber)
	if err != nil {
		t.Fatal(err)
	}
	defer gu.Close()
	go func() {
		b := make([]byte, 100)
		for {
			k, from, err := gu.ReadFrom(b)
			if err != nil {
				return
			}
			gu.WriteTo(bytes.ToUpper(b[:k]), from)
		}
	}()
	var uh usernet.Forward
	for _, f := range n.Forwards() {
		if f.UDP {
			uh = f
		}
	}
	hc, err := net.Dial("udp", uh.Host.String())
	if err != nil {
		t.Fatal(err)
	}
	defer hc.Close()
	hc.Write([]byte("ping"))
	hc.SetReadDeadline(time.Now().Add(10 * time.Second))
	b = make([]byte, 100)
	k, err := hc.Read(b)
	if err != nil || string(b[:k]) != "PING" {
		t.Fatalf("udp forward: %q %v", b[:k], err)
	}

	if err := n.RemoveForward(fs[0]); err != nil {
		t.Fatal(err)
	}
	if c, err := net.Dial("tcp", fs[0].Host.String()); err == nil {
		c.Close()
		t.Errorf("the removed forward still listens")
	}
	if err := n.RemoveForward(fs[0]); err == nil {
		t.Errorf("removed twice")
	}

	// Every host address (empty): found again by the text it was asked
	// with, its port filled in.
	all, _ := usernet.ParseForward("tcp::0-:80")
	if err := n.AddForward(all); err != nil {
		t.Fatal(err)
	}
	var got usernet.Forward
	for _, f := range n.Forwards() {
		if !f.UDP {
			got = f
		}
	}
	again, err := usernet.ParseForward(fmt.Sprintf("tcp::%d-:1", got.Host.Port()))
	if err != nil || got.Host.Port() == 0 || n.RemoveForward(again) != nil {
		t.Errorf("the forward on every address (%v) was not found as %v", got, again)
	}
}

func TestParseForward(t *testing.T) {
	for _, tc := range []struct{ in, out, err string }{
		{"tcp:127.0.0.1:8080-:80", "tcp:127.0.0.1:8080-:80", ""},
		{"udp::5353-10.0.2.15:53", "udp::5353-10.0.2.15:53", ""},
		{":2222-:22", "tcp::2222-:22", ""},
		{"tcp:[::1]:8080-[fec0::15]:80", "tcp:[::1]:8080-[fec0::15]:80", ""},
		{"tcp:127.0.0.1:8080", "", "want [tcp|udp]"},
		{"tcp:127.0.0.1:x-:80", "", "bad port"},
		{"tcp:127.0.0.1:80-:0", "", "bad port"},
		{"tcp:127.0.0.1:80-:65536", "", "bad port"},
		{"tcp:nohost:80-:80", "", "bad address"},
		{"tcp:80-:80", "", "no port"},
	} {
		f, err := usernet.ParseForward(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: err %v, want %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || f.String() != tc.out {
			t.Errorf("%q: %q, %v; want %q", tc.in, f, err, tc.out)
		}
	}
}

func TestHostResolver(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "resolv.conf")
	os.WriteFile(p, []byte("# x\nsearch example\nnameserver bogus\nnameserver 192.0.2.53\nnameserver 192.0.2.54\n"), 0o644)
	if got := usernet.HostResolver(p); got.String() != "192.0.2.53:53" {
		t.Errorf("got %v", got)
	}
	if got := usernet.HostResolver(filepath.Join(dir, "none")); got.String() != "127.0.0.1:53" {
		t.Errorf("no file: %v", got)
	}
}

func TestBadConfig(t *testing.T) {
	for _, c := range []usernet.Config{
		{Guest: netip.MustParseAddr("10.9.9.9")},
		{DNS: netip.MustParseAddr("10.0.2.2")},
		{Net: netip.MustParsePrefix("10.0.0.0/31")},
	} {
		if n, err := usernet.New(c); err == nil {
			n.Close()
			t.Errorf("%+v: no error", c)
		}
	}
}

func TestOptions(t *testing.T) {
	for _, tc := range []struct {
		argv []string
		is   bool
	}{
		{[]string{"slirp"}, true},
		{[]string{"hostfwd=tcp::80-:80", "resolver=127.0.0.1"}, true},
		{[]string{"/usr/bin/slirp"}, false},
		{[]string{"slirp", "-P"}, false},
		{[]string{"hostfwd=tcp::80-:80", "tty"}, false},
		{[]string{"env=x"}, false},
		{nil, false},
	} {
		if got := usernet.IsOptions(tc.argv); got != tc.is {
			t.Errorf("IsOptions(%q) = %v", tc.argv, got)
		}
	}
	c, err := usernet.Options([]string{"net=10.9.8.0/24", "resolver=[::1]:5353", "hostfwd=udp::5353-:53", "hostfwd=:2222-:22"})
	if err != nil {
		t.Fatal(err)
	}
	if c.Net.String() != "10.9.8.0/24" || c.Gateway.String() != "10.9.8.2" || c.DNS.String() != "10.9.8.3" || c.Guest.String() != "10.9.8.15" ||
		c.Upstream.String() != "[::1]:5353" || len(c.Forwards) != 2 || c.Forwards[1].String() != "tcp::2222-:22" {
		t.Errorf("options: %+v", c)
	}
	if c, _ := usernet.Options([]string{"resolver=192.0.2.1"}); c.Upstream.String() != "192.0.2.1:53" {
		t.Errorf("resolver without a port: %v", c.Upstream)
	}
	for _, bad := range []string{"net=10.0.0.0/28", "net=fec0::/64", "resolver=nohost", "hostfwd=x", "bogus=1"} {
		if _, err := usernet.Options([]string{bad}); err == nil {
			t.Errorf("%s: no error", bad)
		}
	}
}

// Echo requests: the router answers its own addresses; another address
// of the NAT's network stays silent (the promiscuous router would answer
// for anything); an address outside it gets the host's answer, when the
// host lets the engine ping (a ping socket, or a raw one as root).
func TestPing(t *testing.T) {
	st, _ := guest(t, usernet.Config{})
	for _, a := range []string{"10.0.2.2", "10.0.2.3"} {
		if err := netdev.Ping(st, netip.MustParseAddr(a), 5*time.Second); err != nil {
			t.Errorf("ping %s: %v", a, err)
		}
	}
	if err := netdev.Ping(st, netip.MustParseAddr("10.0.2.99"), 500*time.Millisecond); err == nil {
		t.Errorf("10.0.2.99 answered")
	}
	// IPv6 the same: the router, not its network's other addresses, nor
	// a documentation address no host route reaches.
	st.AddAddr("eth0", netip.MustParsePrefix("fec0::15/64"))
	st.AddRoute(netip.MustParsePrefix("::/0"), netip.MustParseAddr("fec0::2"), "eth0")
	if err := netdev.Ping(st, netip.MustParseAddr("fec0::2"), 5*time.Second); err != nil {
		t.Errorf("ping fec0::2: %v", err)
	}
	for _, a := range []string{"fec0::99", "2001:db8::1"} {
		if err := netdev.Ping(st, netip.MustParseAddr(a), 500*time.Millisecond); err == nil {
			t.Errorf("%s answered", a)
		}
	}
	// The host's own address outside its loopback (no traffic leaves
	// the machine), when it has one.
	var host netip.Addr
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		if p, err := netip.ParsePrefix(a.String()); err == nil && p.Addr().Is4() && !p.Addr().IsLoopback() {
			host = p.Addr()
			break
		}
	}
	if !host.IsValid() {
		t.Skip("SKIP: the host has no IPv4 address beside its loopback to ping")
	}
	can := func() bool {
		for _, typ := range []int{syscall.SOCK_DGRAM, syscall.SOCK_RAW} {
			if fd, err := syscall.Socket(syscall.AF_INET, typ, syscall.IPPROTO_ICMP); err == nil {
				syscall.Close(fd)
				return true
			}
		}
		return false
	}()
	err := netdev.Ping(st, host, 5*time.Second)
	if can && err != nil {
		t.Errorf("ping %s through the host: %v", host, err)
	}
	if !can && err == nil {
		t.Errorf("ping %s answered, but the host lets the engine send none", host)
	}
}

// IPv6: the guest at fec0::15 reaches the host's ::1 through fec0::2.
func TestGatewayIPv6(t *testing.T) {
	ln, err := net.Listen("tcp", "[::1]:0")
	if err != nil {
		t.Skip("SKIP: the host has no ::1: ", err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err == nil {
			c.Write([]byte("v6 hello"))
			c.Close()
		}
	}()
	st, _ := guest(t, usernet.Config{})
	if err := st.AddAddr("eth0", netip.MustParsePrefix("fec0::15/64")); err != nil {
		t.Fatal(err)
	}
	c, err := gonet.DialTCP(st.Netstack(), full("fec0::2", uint16(ln.Addr().(*net.TCPAddr).Port)), ipv6.ProtocolNumber)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	b, err := io.ReadAll(c)
	if string(b) != "v6 hello" {
		t.Fatalf("read %q, %v", b, err)
	}
}

// FuzzParseForward: any hostfwd text is refused or read into a forward
// whose text reads back the same.
func FuzzParseForward(f *testing.F) {
	for _, s := range []string{"tcp:127.0.0.1:8080-:80", "udp::5353-10.0.2.15:53", ":2222-:22", "tcp:[::1]:0-[fec0::15]:80", "x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		fw, err := usernet.ParseForward(s)
		if err != nil {
			return
		}
		back, err := usernet.ParseForward(fw.String())
		if err != nil || back != fw {
			t.Fatalf("%q read as %+v, written %q, read back %+v (%v)", s, fw, fw.String(), back, err)
		}
	})
}

// Close does not wait for a UDP flow to idle out.
func TestCloseWithFlows(t *testing.T) {
	up := udpServer(t, func(q []byte) []byte { return q })
	st, _ := guest(t, usernet.Config{Upstream: up})
	to := full("10.0.2.3", 53)
	c, err := gonet.DialUDP(st.Netstack(), nil, &to, ipv4.ProtocolNumber)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("q"))
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 16)); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := st.Remove("eth0"); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("removing the device took %v", d)
	}
}

// udpServer runs a UDP server on the host's loopback that answers each
// datagram with reply's, until t ends, and returns its address.
func udpServer(t *testing.T, reply func([]byte) []byte) netip.AddrPort {
	up, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { up.Close() })
	go func() {
		b := make([]byte, 512)
		for {
			k, from, err := up.ReadFrom(b)
			if err != nil {
				return
			}
			up.WriteTo(reply(b[:k]), from)
		}
	}()
	return up.LocalAddr().(*net.UDPAddr).AddrPort()
}
