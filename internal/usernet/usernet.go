// Package usernet is a rootless user-mode NAT for one machine's Ethernet
// device (the slirp transport without a command): a small virtual
// network in which the machine is the only host and the engine plays the
// router, as QEMU's "user" network does.
//
// The default layout is QEMU's: the network 10.0.2.0/24, the gateway
// 10.0.2.2 (which reaches the host's loopback: 10.0.2.2:8000 is the
// host's 127.0.0.1:8000), a DNS proxy at 10.0.2.3 that forwards to the
// host's resolver, and 10.0.2.15 handed out by DHCP; IPv6 is fec0::/64
// with the gateway fec0::2 (the host's ::1) and DNS at fec0::3, which the
// guest configures itself.
//
// Guest TCP connections and UDP flows to anywhere else become host
// sockets of the engine's own (no privileges needed), and host ports
// forward into the guest (Forward). The router is a gVisor netstack of
// its own, in promiscuous mode so that it terminates every connection
// the guest opens; DHCP is answered on the frame level, before it.
package usernet

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"
	"gvisor.dev/gvisor/pkg/tcpip/link/ethernet"
	"gvisor.dev/gvisor/pkg/tcpip/network/arp"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/icmp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
)

// Config is a NAT's layout. The zero value of a field means its default
// (Defaults).
type Config struct {
	// Net is the IPv4 network (10.0.2.0/24).
	Net netip.Prefix
	// Gateway is the router's address, which stands for the host's
	// loopback (10.0.2.2).
	Gateway netip.Addr
	// DNS is the DNS proxy's address (10.0.2.3).
	DNS netip.Addr
	// Guest is the address DHCP hands out (10.0.2.15).
	Guest netip.Addr
	// Net6, Gateway6 and DNS6 are the IPv6 counterparts (fec0::/64,
	// fec0::2, fec0::3).
	Net6           netip.Prefix
	Gateway6, DNS6 netip.Addr
	// Upstream is the resolver the DNS proxy asks; zero: the first
	// nameserver of /etc/resolv.conf (127.0.0.1:53 without one).
	Upstream netip.AddrPort
	// Forwards are the host ports forwarded into the guest.
	Forwards []Forward
	// MTU is the link's MTU (1500).
	MTU uint32
}

// Defaults returns c with every zero field set to its default.
func (c Config) Defaults() Config {
	set := func(a *netip.Addr, s string) {
		if !a.IsValid() {
			*a = netip.MustParseAddr(s)
		}
	}
	if !c.Net.IsValid() {
		c.Net = netip.MustParsePrefix("10.0.2.0/24")
	}
	set(&c.Gateway, "10.0.2.2")
	set(&c.DNS, "10.0.2.3")
	set(&c.Guest, "10.0.2.15")
	if !c.Net6.IsValid() {
		c.Net6 = netip.MustParsePrefix("fec0::/64")
	}
	set(&c.Gateway6, "fec0::2")
	set(&c.DNS6, "fec0::3")
	if c.MTU == 0 {
		c.MTU = 1500
	}
	return c
}

// check says what is wrong with a layout (after Defaults).
func (c Config) check() error {
	if !c.Net.Addr().Is4() || !c.Net6.Addr().Is6() || c.Net.Bits() > 30 {
		return fmt.Errorf("usernet: bad networks %s, %s", c.Net, c.Net6)
	}
	for _, a := range []netip.Addr{c.Gateway, c.DNS, c.Guest} {
		if !c.Net.Contains(a) {
			return fmt.Errorf("usernet: %s is not in %s", a, c.Net)
		}
	}
	for _, a := range []netip.Addr{c.Gateway6, c.DNS6} {
		if !c.Net6.Contains(a) {
			return fmt.Errorf("usernet: %s is not in %s", a, c.Net6)
		}
	}
	if c.Gateway == c.DNS || c.Gateway == c.Guest || c.DNS == c.Guest {
		return errors.New("usernet: the gateway, DNS and guest addresses must differ")
	}
	return nil
}

// GatewayMAC is the router's hardware address (QEMU's).
var GatewayMAC = net.HardwareAddr{0x52, 0x55, 0x0a, 0x00, 0x02, 0x02}

// nicID is the router's one NIC.
const nicID tcpip.NICID = 1

// Net is one running NAT. It is a transport: the machine's device writes
// its frames with WriteFrame and reads the router's with ReadFrame.
type Net struct {
	cfg  Config
	s    *stack.Stack
	link *channel.Endpoint
	dns  netip.AddrPort // the upstream resolver

	ctx    context.Context
	cancel context.CancelFunc
	wake   chan struct{}  // the link has a frame for ReadFrame
	extra  chan []byte    // frames made beside the stack (DHCP)
	wg     sync.WaitGroup // the relays
	once   sync.Once

	mu       sync.Mutex
	guestMAC net.HardwareAddr // the last DHCP client's
	fwds     map[string]*hostFwd
}

// New starts a NAT with layout cfg (Defaults fills it in) and its
// forwards.
func New(cfg Config) (*Net, error) {
	cfg = cfg.Defaults()
	if err := cfg.check(); err != nil {
		return nil, err
	}
	n := &Net{cfg: cfg, wake: make(chan struct{}, 1), extra: make(chan []byte, 16), fwds: map[string]*hostFwd{}}
	n.dns = cfg.Upstream
	if !n.dns.IsValid() {
		n.dns = HostResolver("/etc/resolv.conf")
	}
	n.ctx, n.cancel = context.WithCancel(context.Background())
	n.s = stack.New(stack.Options{
		NetworkProtocols:   []stack.NetworkProtocolFactory{ipv4.NewProtocol, ipv6.NewProtocol, arp.NewProtocol},
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol, udp.NewProtocol, icmp.NewProtocol4, icmp.NewProtocol6},
	})
	// Both ends are netstacks in this process: checksums are neither
	// made nor checked between them (frames made here for DHCP carry
	// theirs, for the guest's packet sockets).
	n.link = channel.New(512, cfg.MTU, tcpip.LinkAddress(GatewayMAC))
	n.link.LinkEPCapabilities |= stack.CapabilityRXChecksumOffload | stack.CapabilityTXChecksumOffload
	// TCP segments larger than the MTU both ways, with their checksums
	// unfilled: no host cuts them, and neither stack looks.
	n.link.SupportedGSOKind = stack.HostGSOSupported
	n.link.AddNotify(n)
	if err := n.s.CreateNIC(nicID, ethernet.New(n.link)); err != nil {
		n.s.Close()
		return nil, fmt.Errorf("usernet: %s", err)
	}
	for _, a := range []struct {
		addr netip.Addr
		net  netip.Prefix
	}{{cfg.Gateway, cfg.Net}, {cfg.DNS, cfg.Net}, {cfg.Gateway6, cfg.Net6}, {cfg.DNS6, cfg.Net6}} {
		proto := ipv4.ProtocolNumber
		if a.addr.Is6() {
			proto = ipv6.ProtocolNumber
		}
		pa := tcpip.ProtocolAddress{Protocol: proto, AddressWithPrefix: tcpip.AddressWithPrefix{
			Address: tcpip.AddrFromSlice(a.addr.AsSlice()), PrefixLen: a.net.Bits()}}
		if err := n.s.AddProtocolAddress(nicID, pa, stack.AddressProperties{}); err != nil {
			n.s.Close()
			return nil, fmt.Errorf("usernet: address %s: %s", a.addr, err)
		}
	}
	n.s.SetRouteTable([]tcpip.Route{
		{Destination: header.IPv4EmptySubnet, NIC: nicID},
		{Destination: header.IPv6EmptySubnet, NIC: nicID},
	})
	// Promiscuous with spoofing: the router answers for every address
	// the guest sends to, and replies from it.
	n.s.SetPromiscuousMode(nicID, true)
	n.s.SetSpoofing(nicID, true)
	n.s.SetTransportProtocolHandler(tcp.ProtocolNumber, tcp.NewForwarder(n.s, 0, 256, n.forwardTCP).HandlePacket)
	n.s.SetTransportProtocolHandler(udp.ProtocolNumber, udp.NewForwarder(n.s, n.forwardUDP).HandlePacket)
	for _, f := range cfg.Forwards {
		if err := n.AddForward(f); err != nil {
			n.Close()
			return nil, err
		}
	}
	return n, nil
}

// Config returns the NAT's layout, with its defaults and the resolver
// its DNS proxy asks.
func (n *Net) Config() Config {
	c := n.cfg
	c.Upstream = n.dns
	c.Forwards = n.Forwards()
	return c
}

// WriteNotify is the link's note that it holds a frame (channel.Notification).
func (n *Net) WriteNotify() {
	select {
	case n.wake <- struct{}{}:
	default:
	}
}

// ReadFrame returns the router's next frame to the guest.
func (n *Net) ReadFrame(b []byte) (int, error) {
	for {
		select {
		case f := <-n.extra:
			return copy(b, f), nil
		default:
		}
		if pkt := n.link.Read(); pkt != nil {
			v := pkt.ToView()
			pkt.DecRef()
			k := copy(b, v.AsSlice())
			v.Release()
			return k, nil
		}
		select {
		case <-n.wake:
		case f := <-n.extra:
			return copy(b, f), nil
		case <-n.ctx.Done():
			return 0, io.EOF
		}
	}
}

// WriteFrame takes one frame from the guest.
func (n *Net) WriteFrame(b []byte) error {
	if n.ctx.Err() != nil {
		return net.ErrClosed
	}
	if len(b) < header.EthernetMinimumSize {
		return nil
	}
	if r := n.dhcp(b); r != nil {
		select {
		case n.extra <- r:
		default: // the guest will ask again
		}
		return nil
	}
	if n.ping(b) {
		return nil
	}
	pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(b)})
	n.link.InjectInbound(0, pkt)
	pkt.DecRef()
	return nil
}

// TrustsChecksums says the guest's stack need not check the router's
// checksums (netdev asks).
func (n *Net) TrustsChecksums() bool { return true }

// GSO says the guest's stack may hand the router TCP segments larger
// than the MTU (netdev asks): its stack takes them as they are.
func (n *Net) GSO() bool { return true }

// WriteGSO takes such a segment (netdev's GSO transports).
func (n *Net) WriteGSO(frame []byte, _ stack.GSO, _, _ int) error { return n.WriteFrame(frame) }

// Close stops the NAT: its forwards, its relays and its stack.
func (n *Net) Close() error {
	n.once.Do(func() {
		n.cancel()
		n.mu.Lock()
		fwds := n.fwds
		n.fwds = map[string]*hostFwd{}
		n.mu.Unlock()
		for _, f := range fwds {
			f.close()
		}
		n.link.Close()
		n.s.Close()
		n.wg.Wait()
		n.s.Wait()
	})
	return nil
}

// hostAddr maps an address the guest sent to onto the host's: the
// gateway is the host's loopback, the DNS proxy's port 53 is the
// upstream resolver, any other address outside the NAT's networks is
// itself. ok is false for the NAT's other addresses, broadcasts and
// multicasts.
func (n *Net) hostAddr(a netip.Addr, port uint16) (netip.AddrPort, bool) {
	switch {
	case a == n.cfg.Gateway:
		return netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), port), true
	case a == n.cfg.Gateway6:
		return netip.AddrPortFrom(netip.IPv6Loopback(), port), true
	case a == n.cfg.DNS || a == n.cfg.DNS6:
		if port != 53 {
			return netip.AddrPort{}, false
		}
		return n.dns, true
	case n.cfg.Net.Contains(a) || n.cfg.Net6.Contains(a), !a.IsGlobalUnicast():
		return netip.AddrPort{}, false
	}
	return netip.AddrPortFrom(a, port), true
}
