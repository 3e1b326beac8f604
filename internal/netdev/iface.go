package netdev

import (
	"fmt"
	"net"
	"net/netip"
	"sort"
	"strings"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
)

// Iface is what the guest sees of an interface (ifconfig, ip link).
// (netstack reports every NIC "up"; its Running is the guest's up.)
type Iface struct {
	Index    int
	Name     string
	MAC      net.HardwareAddr // nil for lo
	MTU      int
	Up       bool
	Loopback bool
	Addrs    []netip.Prefix
	// The counters of /proc/net/dev.
	RxBytes, RxPackets, TxBytes, TxPackets uint64
}

// Ifaces lists the interfaces by index.
func (st *Stack) Ifaces() []Iface {
	var l []Iface
	for id, info := range st.s.NICInfo() {
		f := Iface{Index: int(id), Name: info.Name, MTU: int(info.MTU), Up: info.Flags.Running, Loopback: info.Flags.Loopback,
			RxBytes: info.Stats.Rx.Bytes.Value(), RxPackets: info.Stats.Rx.Packets.Value(),
			TxBytes: info.Stats.Tx.Bytes.Value(), TxPackets: info.Stats.Tx.Packets.Value()}
		if !f.Loopback {
			f.MAC = net.HardwareAddr(info.LinkAddress)
		}
		for _, pa := range info.ProtocolAddresses {
			a, ok := netip.AddrFromSlice(pa.AddressWithPrefix.Address.AsSlice())
			if ok {
				f.Addrs = append(f.Addrs, netip.PrefixFrom(a, pa.AddressWithPrefix.PrefixLen))
			}
		}
		sort.Slice(f.Addrs, func(i, j int) bool { return f.Addrs[i].Addr().Less(f.Addrs[j].Addr()) })
		l = append(l, f)
	}
	sort.Slice(l, func(i, j int) bool { return l[i].Index < l[j].Index })
	return l
}

// Iface returns the interface called name.
func (st *Stack) Iface(name string) (Iface, bool) {
	for _, f := range st.Ifaces() {
		if f.Name == name {
			return f, true
		}
	}
	return Iface{}, false
}

// SetUp brings interface name up or down.
func (st *Stack) SetUp(name string, up bool) error {
	f, ok := st.Iface(name)
	if !ok {
		return fmt.Errorf("%s: no such device", name)
	}
	var err tcpip.Error
	if up {
		err = st.s.EnableNIC(tcpip.NICID(f.Index))
	} else {
		err = st.s.DisableNIC(tcpip.NICID(f.Index))
	}
	if err != nil {
		return fmt.Errorf("%s: %s", name, err)
	}
	return nil
}

// SetAddr4 makes p the interface's IPv4 address (replacing the one it
// had, with its subnet route), as ifconfig's SIOCSIFADDR and
// SIOCSIFNETMASK do. A transport that announces addresses to the host
// (uml_net's taps) is told, and what it printed is returned.
func (st *Stack) SetAddr4(name string, p netip.Prefix) (string, error) {
	f, ok := st.Iface(name)
	if !ok {
		return "", fmt.Errorf("%s: no such device", name)
	}
	var ac AddrChanger
	if n := st.NIC(name); n != nil {
		ac, _ = n.frames.(AddrChanger)
	}
	var log strings.Builder
	id := tcpip.NICID(f.Index)
	for _, a := range f.Addrs {
		if a.Addr().Is4() {
			st.s.RemoveAddress(id, tcpip.AddrFromSlice(a.Addr().AsSlice()))
			old := tcpip.AddressWithPrefix{Address: tcpip.AddrFromSlice(a.Addr().AsSlice()), PrefixLen: a.Bits()}.Subnet()
			st.s.RemoveRoutes(func(r tcpip.Route) bool { return r.NIC == id && r.Destination == old && r.Gateway.Len() == 0 })
			if ac != nil {
				log.WriteString(ac.AddrChanged(false, a))
			}
		}
	}
	if err := st.addAddress(id, p); err != nil {
		return log.String(), err
	}
	if ac != nil {
		log.WriteString(ac.AddrChanged(true, p))
	}
	return log.String(), nil
}

// Route is one entry of the routing table.
type Route struct {
	Dst   netip.Prefix
	Gw    netip.Addr // invalid when none
	Iface string
}

// AddRoute adds a route to dst through interface name, via gw when valid.
func (st *Stack) AddRoute(dst netip.Prefix, gw netip.Addr, name string) error {
	f, ok := st.Iface(name)
	if !ok {
		return fmt.Errorf("%s: no such device", name)
	}
	sub, err := tcpip.NewSubnet(tcpip.AddrFromSlice(dst.Masked().Addr().AsSlice()), tcpip.MaskFromBytes(net.CIDRMask(dst.Bits(), dst.Addr().BitLen())))
	if err != nil {
		return err
	}
	r := tcpip.Route{Destination: sub, NIC: tcpip.NICID(f.Index)}
	if gw.IsValid() {
		r.Gateway = tcpip.AddrFromSlice(gw.AsSlice())
	}
	st.s.AddRoute(r)
	return nil
}

// Routes lists the routing table in order.
func (st *Stack) Routes() []Route {
	names := map[tcpip.NICID]string{}
	for id, info := range st.s.NICInfo() {
		names[id] = info.Name
	}
	var l []Route
	for _, r := range st.s.GetRouteTable() {
		id := r.Destination.ID()
		a, _ := netip.AddrFromSlice(id.AsSlice())
		e := Route{Dst: netip.PrefixFrom(a, r.Destination.Prefix()), Iface: names[r.NIC]}
		if r.Gateway.Len() > 0 {
			e.Gw, _ = netip.AddrFromSlice(r.Gateway.AsSlice())
		}
		l = append(l, e)
	}
	return l
}

// AddAddr adds address p to interface name (as `ip addr add`), with the
// route to its subnet.
func (st *Stack) AddAddr(name string, p netip.Prefix) error {
	f, ok := st.Iface(name)
	if !ok {
		return fmt.Errorf("%s: no such device", name)
	}
	return st.addAddress(tcpip.NICID(f.Index), p)
}

// DelAddr removes address p from interface name, with its subnet route.
func (st *Stack) DelAddr(name string, p netip.Prefix) error {
	f, ok := st.Iface(name)
	if !ok {
		return fmt.Errorf("%s: no such device", name)
	}
	id := tcpip.NICID(f.Index)
	if err := st.s.RemoveAddress(id, tcpip.AddrFromSlice(p.Addr().AsSlice())); err != nil {
		return fmt.Errorf("%s: %s", p, err)
	}
	sub := tcpip.AddressWithPrefix{Address: tcpip.AddrFromSlice(p.Addr().AsSlice()), PrefixLen: p.Bits()}.Subnet()
	st.s.RemoveRoutes(func(r tcpip.Route) bool { return r.NIC == id && r.Destination == sub && r.Gateway.Len() == 0 })
	return nil
}

// SetMTU sets interface name's MTU (the IP payload size of its frames).
func (st *Stack) SetMTU(name string, mtu int) error {
	f, ok := st.Iface(name)
	if !ok {
		return fmt.Errorf("%s: no such device", name)
	}
	if mtu < 68 || mtu > 65535 {
		return fmt.Errorf("%s: MTU %d out of range", name, mtu)
	}
	link := mtu
	if !f.Loopback {
		link += 14 // the Ethernet header: the device's own MTU counts it
	}
	if err := st.s.SetNICMTU(tcpip.NICID(f.Index), uint32(link)); err != nil {
		return fmt.Errorf("%s: %s", name, err)
	}
	return nil
}

// DelRoute removes the routes to dst (through gw when valid).
func (st *Stack) DelRoute(dst netip.Prefix, gw netip.Addr) bool {
	n := len(st.s.GetRouteTable())
	st.s.RemoveRoutes(func(r tcpip.Route) bool {
		id := r.Destination.ID()
		a, _ := netip.AddrFromSlice(id.AsSlice())
		if netip.PrefixFrom(a, r.Destination.Prefix()) != dst.Masked() {
			return false
		}
		if !gw.IsValid() {
			return true
		}
		g, _ := netip.AddrFromSlice(r.Gateway.AsSlice())
		return g == gw
	})
	return len(st.s.GetRouteTable()) < n
}

// IfaceFor returns the interface with an address whose subnet holds a,
// "" when none has.
func (st *Stack) IfaceFor(a netip.Addr) string {
	for _, f := range st.Ifaces() {
		for _, p := range f.Addrs {
			if p.Contains(a) {
				return f.Name
			}
		}
	}
	return ""
}

// Neighbor is one entry of a device's neighbour table (ARP, NDP).
type Neighbor struct {
	Iface string
	Index int
	Addr  netip.Addr
	MAC   net.HardwareAddr // nil while unresolved
	// State is netstack's: "incomplete", "reachable", "stale", "delay",
	// "probe", "static", "unreachable".
	State string
}

// Neighbors lists the neighbour tables of the Ethernet devices, by
// device, then address.
func (st *Stack) Neighbors() []Neighbor {
	var l []Neighbor
	for _, f := range st.Ifaces() {
		if f.Loopback {
			continue
		}
		for _, proto := range []tcpip.NetworkProtocolNumber{ipv4.ProtocolNumber, ipv6.ProtocolNumber} {
			ents, err := st.s.Neighbors(tcpip.NICID(f.Index), proto)
			if err != nil {
				continue
			}
			for _, e := range ents {
				a, ok := netip.AddrFromSlice(e.Addr.AsSlice())
				if !ok {
					continue
				}
				n := Neighbor{Iface: f.Name, Index: f.Index, Addr: a, State: strings.ToLower(e.State.String())}
				if len(e.LinkAddr) == 6 {
					n.MAC = net.HardwareAddr(e.LinkAddr)
				}
				l = append(l, n)
			}
		}
	}
	sort.SliceStable(l, func(i, j int) bool {
		if l[i].Index != l[j].Index {
			return l[i].Index < l[j].Index
		}
		return l[i].Addr.Less(l[j].Addr)
	})
	return l
}
