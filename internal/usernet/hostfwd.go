package usernet

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
)

// Forward is one host port forwarded into the guest, QEMU's hostfwd:
// connections (TCP) or datagrams (UDP) to Host on the host reach Guest
// in the guest, from the gateway's address.
type Forward struct {
	// UDP is true for a UDP forward, false for TCP.
	UDP bool
	// Host is the host address and port the engine listens on; an
	// unspecified address listens on every host address, port 0 on a
	// port the host picks (Net.Forwards tells it).
	Host netip.AddrPort
	// Guest is where the forward goes; an unspecified address is the
	// address DHCP hands out.
	Guest netip.AddrPort
}

// ParseForward reads QEMU's hostfwd syntax,
// [tcp|udp]:[hostaddr]:hostport-[guestaddr]:guestport, as in
// "tcp:127.0.0.1:8080-:80" (IPv6 addresses in brackets).
func ParseForward(s string) (Forward, error) {
	var f Forward
	rest := s
	switch {
	case strings.HasPrefix(rest, "tcp:"):
		rest = rest[4:]
	case strings.HasPrefix(rest, "udp:"):
		f.UDP, rest = true, rest[4:]
	}
	host, guest, ok := strings.Cut(rest, "-")
	if !ok {
		return f, fmt.Errorf("hostfwd %q: want [tcp|udp]:[hostaddr]:hostport-[guestaddr]:guestport", s)
	}
	var err error
	if f.Host, err = parseAddrPort(host, true); err != nil {
		return f, fmt.Errorf("hostfwd %q: host side: %w", s, err)
	}
	if f.Guest, err = parseAddrPort(guest, false); err != nil {
		return f, fmt.Errorf("hostfwd %q: guest side: %w", s, err)
	}
	return f, nil
}

// parseAddrPort reads "[addr]:port" where addr may be empty (the
// unspecified IPv4 address); port 0 is allowed on the host side.
func parseAddrPort(s string, zeroPort bool) (netip.AddrPort, error) {
	i := strings.LastIndexByte(s, ':')
	if i < 0 {
		return netip.AddrPort{}, fmt.Errorf("no port in %q", s)
	}
	a, p := s[:i], s[i+1:]
	port, err := strconv.ParseUint(p, 10, 16)
	if err != nil || port == 0 && !zeroPort {
		return netip.AddrPort{}, fmt.Errorf("bad port %q", p)
	}
	addr := netip.IPv4Unspecified()
	if a != "" {
		in := a
		if strings.HasPrefix(a, "[") != strings.HasSuffix(a, "]") {
			return netip.AddrPort{}, fmt.Errorf("bad address %q", in)
		}
		a = strings.TrimSuffix(strings.TrimPrefix(a, "["), "]")
		if addr, err = netip.ParseAddr(a); err != nil || addr.Zone() != "" {
			return netip.AddrPort{}, fmt.Errorf("bad address %q", in)
		}
	}
	return netip.AddrPortFrom(addr.Unmap(), uint16(port)), nil
}

// String gives f in the syntax ParseForward reads.
func (f Forward) String() string { return f.key() + "-" + side(f.Guest) }

// key names a forward by its host side, "tcp:[addr]:port" (a forward
// asked on port 0 goes by the port the host picked).
func (f Forward) key() string {
	proto := "tcp"
	if f.UDP {
		proto = "udp"
	}
	return proto + ":" + side(f.Host)
}

// side gives one side of a forward, the unspecified IPv4 address as "".
func side(a netip.AddrPort) string {
	s := ""
	switch {
	case a.Addr().Is6():
		s = "[" + a.Addr().String() + "]"
	case a.Addr() != netip.IPv4Unspecified():
		s = a.Addr().String()
	}
	return s + ":" + strconv.Itoa(int(a.Port()))
}

// hostFwd is one forward's host listener.
type hostFwd struct {
	f  Forward
	ln net.Listener
	pc net.PacketConn
}

func (h *hostFwd) close() {
	if h.ln != nil {
		h.ln.Close()
	}
	if h.pc != nil {
		h.pc.Close()
	}
}

// ErrForwardExists is AddForward's error for a host side already
// forwarded.
var ErrForwardExists = errors.New("already forwarded")

// AddForward starts forward f: it listens on its host side at once.
func (n *Net) AddForward(f Forward) error {
	h := &hostFwd{f: f}
	var err error
	var port int
	if f.UDP {
		h.pc, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(f.Host))
		if err == nil {
			port = h.pc.LocalAddr().(*net.UDPAddr).Port
		}
	} else {
		h.ln, err = net.ListenTCP("tcp", net.TCPAddrFromAddrPort(f.Host))
		if err == nil {
			port = h.ln.Addr().(*net.TCPAddr).Port
		}
	}
	if err != nil {
		return fmt.Errorf("hostfwd %s: %w", f, err)
	}
	// The port the host picked for port 0; the address stays as asked
	// (Go reports 0.0.0.0 as [::], which would name another forward).
	h.f.Host = netip.AddrPortFrom(f.Host.Addr(), uint16(port))
	n.mu.Lock()
	if n.fwds[h.f.key()] != nil {
		n.mu.Unlock()
		h.close()
		return fmt.Errorf("hostfwd %s: %w", f, ErrForwardExists)
	}
	n.fwds[h.f.key()] = h
	n.mu.Unlock()
	if f.UDP {
		n.start(func() { n.serveUDPForward(h) })
	} else {
		n.start(func() { n.serveTCPForward(h) })
	}
	return nil
}

// RemoveForward stops the forward whose host side f names (f.Guest is
// not looked at): it stops listening; connections already made go on.
func (n *Net) RemoveForward(f Forward) error {
	n.mu.Lock()
	h := n.fwds[f.key()]
	delete(n.fwds, f.key())
	n.mu.Unlock()
	if h == nil {
		return fmt.Errorf("hostfwd %s: no such forward", f.key())
	}
	h.close()
	return nil
}

// Forwards returns the forwards in place, with the ports the host
// picked.
func (n *Net) Forwards() []Forward {
	n.mu.Lock()
	defer n.mu.Unlock()
	var fs []Forward
	for _, h := range n.fwds {
		fs = append(fs, h.f)
	}
	sort.Slice(fs, func(i, j int) bool { return fs[i].String() < fs[j].String() })
	return fs
}

// guestTarget returns where forward f goes in the guest, and the
// gateway address the connection comes from.
func (n *Net) guestTarget(f Forward) (to, from tcpip.FullAddress, proto tcpip.NetworkProtocolNumber) {
	g := f.Guest.Addr()
	src, proto := n.cfg.Gateway, ipv4.ProtocolNumber
	if g.IsUnspecified() {
		g = n.cfg.Guest
	} else if g.Is6() {
		src, proto = n.cfg.Gateway6, ipv6.ProtocolNumber
	}
	return tcpip.FullAddress{NIC: nicID, Addr: tcpip.AddrFromSlice(g.AsSlice()), Port: f.Guest.Port()},
		tcpip.FullAddress{NIC: nicID, Addr: tcpip.AddrFromSlice(src.AsSlice())}, proto
}

// serveTCPForward accepts on a TCP forward's listener and connects each
// connection into the guest.
func (n *Net) serveTCPForward(h *hostFwd) {
	for {
		c, err := h.ln.Accept()
		if err != nil {
			return // closed
		}
		n.start(func() {
			to, from, proto := n.guestTarget(h.f)
			ctx, cancel := context.WithTimeout(n.ctx, dialTimeout)
			gc, err := gonet.DialTCPWithBind(ctx, n.s, from, to, proto)
			cancel()
			if err != nil {
				c.Close()
				return
			}
			n.relay(c, gc)
		})
	}
}

// serveUDPForward passes datagrams to a UDP forward's host side into the
// guest, one flow (a guest socket of the gateway's) per host client.
func (n *Net) serveUDPForward(h *hostFwd) {
	var mu sync.Mutex
	flows := map[netip.AddrPort]*gonet.UDPConn{}
	defer func() {
		mu.Lock()
		for _, c := range flows {
			c.Close()
		}
		mu.Unlock()
	}()
	buf := make([]byte, 65536)
	for {
		k, from, err := h.pc.(*net.UDPConn).ReadFromUDPAddrPort(buf)
		if err != nil {
			return // closed
		}
		mu.Lock()
		c := flows[from]
		if c == nil {
			to, src, proto := n.guestTarget(h.f)
			if c, err = gonet.DialUDP(n.s, &src, &to, proto); err != nil {
				mu.Unlock()
				continue
			}
			flows[from] = c
			n.start(func() {
				defer func() {
					mu.Lock()
					delete(flows, from)
					mu.Unlock()
					c.Close()
				}()
				b := make([]byte, 65536)
				for {
					c.SetReadDeadline(time.Now().Add(udpIdle))
					k, err := c.Read(b)
					if err != nil {
						return
					}
					h.pc.WriteTo(b[:k], net.UDPAddrFromAddrPort(from))
				}
			})
		}
		mu.Unlock()
		c.Write(buf[:k])
	}
}

// HostResolver returns the first nameserver of resolv.conf file path
// (port 53), or 127.0.0.1:53 when there is none.
func HostResolver(path string) netip.AddrPort {
	def := netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), 53)
	f, err := os.Open(path)
	if err != nil {
		return def
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		w := strings.Fields(sc.Text())
		if len(w) < 2 || w[0] != "nameserver" {
			continue
		}
		a, err := netip.ParseAddr(w[1])
		if err != nil {
			continue
		}
		return netip.AddrPortFrom(a.WithZone("").Unmap(), 53)
	}
	return def
}
