// Package netdev is a machine's network: one gVisor netstack
// (gvisor.dev/gvisor/pkg/tcpip) with a loopback interface and one NIC per
// configured device (eth0, …), each NIC's frames carried by a transport
// (transport.go): the uml_switch daemon protocol, UDP multicast or
// unicast, or a host tap. The guest's sockets and its interface
// configuration (ioctls, netlink) are served from this stack by the
// kernel.
package netdev

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"
	"gvisor.dev/gvisor/pkg/tcpip/link/ethernet"
	"gvisor.dev/gvisor/pkg/tcpip/link/loopback"
	"gvisor.dev/gvisor/pkg/tcpip/network/arp"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/icmp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/raw"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
)

// MTU is an Ethernet device's default MTU, as the C kernel's.
const MTU = 1500

// Stack is one machine's network stack. Its methods are safe for
// concurrent use.
type Stack struct {
	s *stack.Stack

	mu   sync.Mutex
	nics map[string]*NIC
	next tcpip.NICID
}

// LoopbackID is the loopback interface's NIC id ("lo", ifindex 1).
const LoopbackID tcpip.NICID = 1

// New returns a stack with IPv4, IPv6, ARP, ICMP, TCP and UDP, and its
// loopback interface "lo" up with 127.0.0.1/8 and ::1/128.
func New() (*Stack, error) {
	s := stack.New(stack.Options{
		NetworkProtocols:         []stack.NetworkProtocolFactory{ipv4.NewProtocol, ipv6.NewProtocol, arp.NewProtocol},
		TransportProtocols:       []stack.TransportProtocolFactory{tcp.NewProtocol, udp.NewProtocol, icmp.NewProtocol4, icmp.NewProtocol6},
		HandleLocal:              true,
		RawFactory:               raw.EndpointFactory{}, // ping as root
		AllowPacketEndpointWrite: true,                  // DHCP clients
	})
	st := &Stack{s: s, nics: map[string]*NIC{}, next: LoopbackID + 1}
	if err := s.CreateNICWithOptions(LoopbackID, loopback.New(), stack.NICOptions{Name: "lo"}); err != nil {
		s.Close()
		return nil, fmt.Errorf("netstack: lo: %s", err)
	}
	for _, p := range []netip.Prefix{netip.MustParsePrefix("127.0.0.1/8"), netip.MustParsePrefix("::1/128")} {
		if err := st.addAddress(LoopbackID, p); err != nil {
			s.Close()
			return nil, fmt.Errorf("netstack: lo: %w", err)
		}
	}
	return st, nil
}

// Netstack returns the gVisor stack, for the socket layer.
func (st *Stack) Netstack() *stack.Stack { return st.s }

// NIC is one Ethernet device of the stack, whose frames a transport
// carries.
type NIC struct {
	// ID is the netstack NIC id (the interface index).
	ID tcpip.NICID
	// Name is the device name (eth0, …).
	Name string
	// MAC is the device's hardware address.
	MAC net.HardwareAddr
	// Desc says what the device is, as the machine chose to put it
	// (its command-line option).
	Desc string

	st     *Stack
	frames Frames
	gso    gsoFrames // frames, when it takes GSO segments
	link   *channel.Endpoint
	cancel context.CancelFunc
	closed atomic.Bool
	done   sync.WaitGroup
}

// RandomMAC returns a random unicast, locally administered address, as
// the kernel's eth_random_addr.
func RandomMAC() net.HardwareAddr {
	m := make(net.HardwareAddr, 6)
	rand.Read(m)
	m[0] = m[0]&^1 | 2
	return m
}

// ErrExists is returned by Add for a device name already in the stack.
var ErrExists = errors.New("device already configured")

// Add creates the Ethernet device name with address mac (a random one
// when nil) whose frames go through f, and starts moving them. The device
// is down (SetUp) and has no address (AddAddress).
func (st *Stack) Add(name string, mac net.HardwareAddr, f Frames) (*NIC, error) {
	return st.AddDesc(name, mac, f, "")
}

// AddDesc is Add for a device described by desc (NIC.Desc).
func (st *Stack) AddDesc(name string, mac net.HardwareAddr, f Frames, desc string) (*NIC, error) {
	if mac == nil {
		mac = RandomMAC()
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.nics[name] != nil {
		return nil, fmt.Errorf("%s: %w", name, ErrExists)
	}
	n := &NIC{ID: st.next, Name: name, MAC: mac, Desc: desc, st: st, frames: f,
		link: channel.New(256, MTU+header.EthernetMinimumSize, tcpip.LinkAddress(mac))}
	if c, ok := f.(interface{ TrustsChecksums() bool }); ok && c.TrustsChecksums() {
		n.link.LinkEPCapabilities |= stack.CapabilityRXChecksumOffload
	}
	if g, ok := f.(gsoFrames); ok && g.GSO() {
		n.gso = g
		n.link.SupportedGSOKind = stack.HostGSOSupported
	}
	if err := st.s.CreateNICWithOptions(n.ID, ethernet.New(n.link), stack.NICOptions{Name: name, DeliverLinkPackets: true}); err != nil {
		return nil, fmt.Errorf("netstack: %s: %s", name, err)
	}
	// Down until the guest brings it up, as a new Linux device.
	st.s.DisableNIC(n.ID)
	st.next++
	st.nics[name] = n
	ctx, cancel := context.WithCancel(context.Background())
	n.cancel = cancel
	n.done.Add(2)
	go n.send(ctx)
	go n.receive()
	return n, nil
}

// NIC returns the device called name, or nil.
func (st *Stack) NIC(name string) *NIC {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.nics[name]
}

// Remove takes device name out of the stack and closes its transport.
func (st *Stack) Remove(name string) error {
	st.mu.Lock()
	n := st.nics[name]
	delete(st.nics, name)
	st.mu.Unlock()
	if n == nil {
		return fmt.Errorf("%s: no such device", name)
	}
	n.close()
	return nil
}

// Close removes every device and stops the stack.
func (st *Stack) Close() {
	st.mu.Lock()
	nics := st.nics
	st.nics = map[string]*NIC{}
	st.mu.Unlock()
	for _, n := range nics {
		n.close()
	}
	st.s.Close()
	st.s.Wait()
}

func (n *NIC) close() {
	n.closed.Store(true)
	n.st.s.RemoveNIC(n.ID)
	n.cancel()
	n.frames.Close() // ends receive's ReadFrame
	n.link.Close()
	n.done.Wait()
}

// Transport returns the device's transport.
func (n *NIC) Transport() Frames { return n.frames }

// AddAddress gives the device address p (IPv4 or IPv6) with the route to
// its subnet, as `ip addr add` does.
func (n *NIC) AddAddress(p netip.Prefix) error { return n.st.addAddress(n.ID, p) }

// SetDefaultGateway routes everything not on a subnet of the device
// through gw.
func (n *NIC) SetDefaultGateway(gw netip.Addr) {
	dst := header.IPv4EmptySubnet
	if gw.Is6() {
		dst = header.IPv6EmptySubnet
	}
	n.st.s.AddRoute(tcpip.Route{Destination: dst, Gateway: tcpip.AddrFromSlice(gw.AsSlice()), NIC: n.ID})
}

func (st *Stack) addAddress(id tcpip.NICID, p netip.Prefix) error {
	proto := ipv4.ProtocolNumber
	if p.Addr().Is6() {
		proto = ipv6.ProtocolNumber
	}
	a := tcpip.AddressWithPrefix{Address: tcpip.AddrFromSlice(p.Addr().AsSlice()), PrefixLen: p.Bits()}
	if err := st.s.AddProtocolAddress(id, tcpip.ProtocolAddress{Protocol: proto, AddressWithPrefix: a}, stack.AddressProperties{}); err != nil {
		return fmt.Errorf("address %s: %s", p, err)
	}
	st.s.AddRoute(tcpip.Route{Destination: a.Subnet(), NIC: id})
	return nil
}

// send moves the stack's outgoing frames to the transport.
func (n *NIC) send(ctx context.Context) {
	defer n.done.Done()
	for {
		pkt := n.link.ReadContext(ctx)
		if pkt == nil {
			return // closed
		}
		gso, hdrLen, dataLen := pkt.GSOOptions, pkt.HeaderSize(), pkt.Data().Size()
		v := pkt.ToView()
		pkt.DecRef()
		var err error
		if n.gso != nil && gso.Type != stack.GSONone {
			err = n.gso.WriteGSO(v.AsSlice(), gso, hdrLen, dataLen)
		} else {
			err = n.frames.WriteFrame(v.AsSlice())
		}
		v.Release()
		if err != nil && ctx.Err() != nil {
			return
		}
		// Other write errors (a full switch queue, no route on the
		// host) lose the frame, as a wire would.
	}
}

// receive moves the transport's frames into the stack.
func (n *NIC) receive() {
	defer n.done.Done()
	buf := make([]byte, 1<<17) // a GSO frame from a packet socket: up to 64 KiB of IP, and its headers
	for {
		k, err := n.frames.ReadFrame(buf)
		if err != nil {
			if n.closed.Load() {
				return
			}
			// A transient error (a UDP transport's ICMP port
			// unreachable): a little patience, then read on.
			time.Sleep(time.Millisecond)
			continue
		}
		if k < header.EthernetMinimumSize {
			continue
		}
		pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(buf[:k])})
		n.link.InjectInbound(0, pkt) // the ethernet endpoint reads the type
		pkt.DecRef()
	}
}
