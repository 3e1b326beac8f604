package kernel

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"sort"
	"strings"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"

	"github.com/umltools/umltools/internal/abi"
	"github.com/umltools/umltools/internal/netdev"
	"github.com/umltools/umltools/internal/sandbox"
)

// The classic interface ioctls (SIOC*, what busybox and net-tools
// ifconfig and route use), served from the machine's network stack. They
// stop at the tracer (ioctlTrapBit); those not served here run on the
// host, in the guest's empty network namespace.

// ifreqSize is sizeof(struct ifreq): the name, then a 24-byte union.
const ifreqSize = 40

// Interface flags (IFF_*).
const (
	iffUp        = 0x1
	iffBroadcast = 0x2
	iffLoopback  = 0x8
	iffRunning   = 0x40
	iffMulticast = 0x1000
)

// netIoctl serves request req on the machine's stack; ok is false for a
// request it does not serve.
func (k *Kernel) netIoctl(t *sandbox.Task, req uint32, arg uint64) (a sandbox.Action, ok bool) {
	st := k.cfg.Net
	if st == nil {
		return a, false
	}
	switch req {
	case unix.SIOCGIFCONF:
		return ifconf(t, st, arg), true
	case unix.SIOCADDRT, unix.SIOCDELRT:
		return addRoute(t, st, arg, req == unix.SIOCADDRT), true
	case unix.SIOCGIFFLAGS, unix.SIOCSIFFLAGS, unix.SIOCGIFADDR, unix.SIOCSIFADDR,
		unix.SIOCGIFNETMASK, unix.SIOCSIFNETMASK, unix.SIOCGIFBRDADDR, unix.SIOCSIFBRDADDR,
		unix.SIOCGIFHWADDR, unix.SIOCGIFINDEX, unix.SIOCGIFMTU, unix.SIOCSIFMTU, unix.SIOCGIFNAME:
	default:
		return a, false
	}
	var r [ifreqSize]byte
	if _, err := t.ReadMem(arg, r[:]); err != nil {
		return sandbox.Fail(abi.EFAULT), true
	}
	var f netdev.Iface
	if req == unix.SIOCGIFNAME {
		idx := int(int32(binary.LittleEndian.Uint32(r[16:])))
		for _, g := range st.Ifaces() {
			if g.Index == idx {
				f, ok = g, true
			}
		}
		if !ok {
			return sandbox.Fail(int(unix.ENODEV)), true
		}
		clear(r[:16])
		copy(r[:15], f.Name)
		return putIfreq(t, arg, r[:]), true
	}
	name := string(r[:16])
	if i := strings.IndexByte(name, 0); i >= 0 {
		name = name[:i]
	}
	if f, ok = st.Iface(name); !ok {
		return sandbox.Fail(int(unix.ENODEV)), true
	}
	u := r[16:]
	v4 := netip.Prefix{}
	for _, p := range f.Addrs {
		if p.Addr().Is4() {
			v4 = p
			break
		}
	}
	switch req {
	case unix.SIOCGIFFLAGS:
		clear(u)
		binary.LittleEndian.PutUint16(u, uint16(ifFlags(f)))
	case unix.SIOCSIFFLAGS:
		up := binary.LittleEndian.Uint16(u)&iffUp != 0
		if up != f.Up {
			if err := st.SetUp(name, up); err != nil {
				return sandbox.Fail(abi.EINVAL), true
			}
		}
		return sandbox.Emulate(0), true
	case unix.SIOCGIFADDR, unix.SIOCGIFNETMASK, unix.SIOCGIFBRDADDR:
		if !v4.IsValid() {
			return sandbox.Fail(int(unix.EADDRNOTAVAIL)), true
		}
		a := v4.Addr().As4()
		switch req {
		case unix.SIOCGIFNETMASK:
			a = netip.PrefixFrom(netip.AddrFrom4([4]byte{255, 255, 255, 255}), v4.Bits()).Masked().Addr().As4()
		case unix.SIOCGIFBRDADDR:
			m := netip.PrefixFrom(netip.AddrFrom4([4]byte{255, 255, 255, 255}), v4.Bits()).Masked().Addr().As4()
			for i := range a {
				a[i] |= ^m[i]
			}
		}
		putSockaddrIn(u, a)
	case unix.SIOCSIFADDR, unix.SIOCSIFNETMASK:
		if binary.LittleEndian.Uint16(u) != unix.AF_INET {
			return sandbox.Fail(abi.EINVAL), true
		}
		a := netip.AddrFrom4([4]byte(u[4:8]))
		var p netip.Prefix
		if req == unix.SIOCSIFADDR {
			// A new address takes its class's mask, as Linux's
			// inet_set_ifa does when none was set before.
			bits := 24
			if v4.IsValid() {
				bits = v4.Bits()
			} else if b := a.As4()[0]; b < 128 {
				bits = 8
			} else if b < 192 {
				bits = 16
			}
			p = netip.PrefixFrom(a, bits)
		} else {
			if !v4.IsValid() {
				return sandbox.Fail(int(unix.EADDRNOTAVAIL)), true
			}
			ones := 0
			m := a.As4()
			for _, b := range m {
				for ; b&0x80 != 0; b <<= 1 {
					ones++
				}
			}
			p = netip.PrefixFrom(v4.Addr(), ones)
		}
		out, err := st.SetAddr4(name, p)
		if out = strings.TrimSpace(out); out != "" && k.cfg.Logf != nil {
			k.cfg.Logf("%s", out) // uml_net's log, as the C kernel prints it
		}
		if err != nil {
			return sandbox.Fail(abi.EINVAL), true
		}
		return sandbox.Emulate(0), true
	case unix.SIOCSIFBRDADDR:
		return sandbox.Emulate(0), true // the broadcast follows the mask
	case unix.SIOCGIFHWADDR:
		clear(u)
		if f.Loopback {
			binary.LittleEndian.PutUint16(u, unix.ARPHRD_LOOPBACK)
		} else {
			binary.LittleEndian.PutUint16(u, unix.ARPHRD_ETHER)
			copy(u[2:], f.MAC)
		}
	case unix.SIOCGIFINDEX:
		clear(u)
		binary.LittleEndian.PutUint32(u, uint32(f.Index))
	case unix.SIOCGIFMTU:
		clear(u)
		binary.LittleEndian.PutUint32(u, uint32(f.MTU))
	case unix.SIOCSIFMTU:
		if err := st.SetMTU(name, int(int32(binary.LittleEndian.Uint32(u)))); err != nil {
			return sandbox.Fail(abi.EINVAL), true
		}
		return sandbox.Emulate(0), true
	}
	return putIfreq(t, arg, r[:]), true
}

func ifFlags(f netdev.Iface) int {
	fl := 0
	if f.Loopback {
		fl = iffLoopback
	} else {
		fl = iffBroadcast | iffMulticast
	}
	if f.Up {
		fl |= iffUp | iffRunning
	}
	return fl
}

func putSockaddrIn(b []byte, a [4]byte) {
	clear(b[:16])
	binary.LittleEndian.PutUint16(b, unix.AF_INET)
	copy(b[4:8], a[:])
}

func putIfreq(t *sandbox.Task, arg uint64, r []byte) sandbox.Action {
	if _, err := t.WriteMem(arg, r); err != nil {
		return sandbox.Fail(abi.EFAULT)
	}
	return sandbox.Emulate(0)
}

// ifconf serves SIOCGIFCONF: an ifreq with the IPv4 address of each
// interface that has one; with a NULL buffer only the length needed.
func ifconf(t *sandbox.Task, st *netdev.Stack, arg uint64) sandbox.Action {
	var c [16]byte
	if _, err := t.ReadMem(arg, c[:]); err != nil {
		return sandbox.Fail(abi.EFAULT)
	}
	room := int(int32(binary.LittleEndian.Uint32(c[:])))
	buf := binary.LittleEndian.Uint64(c[8:])
	var out []byte
	for _, f := range st.Ifaces() {
		for _, p := range f.Addrs {
			if p.Addr().Is4() {
				var r [ifreqSize]byte
				copy(r[:15], f.Name)
				putSockaddrIn(r[16:], p.Addr().As4())
				out = append(out, r[:]...)
				break
			}
		}
	}
	if buf != 0 {
		out = out[:min(len(out), max(room, 0)/ifreqSize*ifreqSize)]
		if _, err := t.WriteMem(buf, out); err != nil {
			return sandbox.Fail(abi.EFAULT)
		}
	}
	binary.LittleEndian.PutUint32(c[:], uint32(len(out)))
	if _, err := t.WriteMem(arg, c[:4]); err != nil {
		return sandbox.Fail(abi.EFAULT)
	}
	return sandbox.Emulate(0)
}

// addRoute serves SIOCADDRT (route add) for IPv4 routes; SIOCDELRT is
// refused for now.
func addRoute(t *sandbox.Task, st *netdev.Stack, arg uint64, add bool) sandbox.Action {
	if !add {
		return sandbox.Fail(int(unix.EOPNOTSUPP))
	}
	// struct rtentry: rt_dst at 8, rt_gateway at 24, rt_genmask at 40,
	// rt_flags at 56, rt_dev (a string pointer) at 88.
	var r [120]byte
	if _, err := t.ReadMem(arg, r[:]); err != nil {
		return sandbox.Fail(abi.EFAULT)
	}
	dst := netip.AddrFrom4([4]byte(r[12:16]))
	mask := r[44:48]
	ones := 0
	for _, b := range mask {
		for ; b&0x80 != 0; b <<= 1 {
			ones++
		}
	}
	var gw netip.Addr
	const rtfGateway = 0x2
	if binary.LittleEndian.Uint16(r[56:])&rtfGateway != 0 {
		gw = netip.AddrFrom4([4]byte(r[28:32]))
	}
	dev := ""
	if p := binary.LittleEndian.Uint64(r[88:]); p != 0 {
		s, err := t.ReadString(p, 16)
		if err != nil {
			return sandbox.Fail(abi.EFAULT)
		}
		dev = s
	}
	if dev == "" {
		// The interface whose subnet holds the gateway (or the
		// destination).
		via := gw
		if !via.IsValid() {
			via = dst
		}
		dev = st.IfaceFor(via)
		if dev == "" {
			return sandbox.Fail(int(unix.ENETUNREACH))
		}
	}
	if err := st.AddRoute(netip.PrefixFrom(dst, ones), gw, dev); err != nil {
		return sandbox.Fail(int(unix.ENODEV))
	}
	return sandbox.Emulate(0)
}

// procNetDev is /proc/net/dev: each interface's counters.
func procNetDev(st *netdev.Stack) []byte {
	var b strings.Builder
	b.WriteString("Inter-|   Receive                                                |  Transmit\n")
	b.WriteString(" face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n")
	if st == nil {
		return []byte(b.String())
	}
	for _, f := range st.Ifaces() {
		fmt.Fprintf(&b, "%6s: %7d %7d %4d %4d %4d %5d %10d %9d %8d %7d %4d %4d %4d %5d %7d %10d\n",
			f.Name, f.RxBytes, f.RxPackets, 0, 0, 0, 0, 0, 0, f.TxBytes, f.TxPackets, 0, 0, 0, 0, 0, 0)
	}
	return []byte(b.String())
}

// procNetRoute is /proc/net/route: the IPv4 routes, addresses in hex
// as the host's byte order shows them, each line padded to 127 bytes.
func procNetRoute(st *netdev.Stack) []byte {
	var b strings.Builder
	line := func(s string) { fmt.Fprintf(&b, "%-127s\n", s) }
	line("Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT")
	if st == nil {
		return []byte(b.String())
	}
	hex := func(a netip.Addr) string {
		v := a.As4()
		return fmt.Sprintf("%08X", binary.LittleEndian.Uint32(v[:]))
	}
	for _, r := range st.Routes() {
		if !r.Dst.Addr().Is4() || r.Iface == "lo" {
			continue
		}
		const rtfUp, rtfGateway = 1, 2
		flags, gw := rtfUp, netip.IPv4Unspecified()
		if r.Gw.IsValid() {
			flags, gw = rtfUp|rtfGateway, r.Gw
		}
		mask := netip.PrefixFrom(netip.AddrFrom4([4]byte{255, 255, 255, 255}), r.Dst.Bits()).Masked().Addr()
		line(fmt.Sprintf("%s\t%s\t%s\t%04X\t0\t0\t0\t%s\t0\t0\t0", r.Iface, hex(r.Dst.Masked().Addr()), hex(gw), flags, hex(mask)))
	}
	return []byte(b.String())
}

// procNetSockets is /proc/net/tcp, tcp6, udp or udp6 (name): the
// stack's endpoints of that protocol and family, in Linux's format
// (addresses as the host-order hex of their 32-bit words, states by
// Linux's numbers). The inode is the guest's socket's, where the engine
// knows it (0 for accepted connections, as for Linux's orphans).
func (k *Kernel) procNetSockets(name string) []byte {
	v6 := strings.HasSuffix(name, "6")
	isTCP := strings.HasPrefix(name, "tcp")
	var b strings.Builder
	addrW, remote := 8, "rem_address"
	if v6 {
		addrW, remote = 32, "remote_address"
	}
	if isTCP {
		fmt.Fprintf(&b, "  sl  %-*s %-*s st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n",
			addrW+5, "local_address", addrW+5, remote)
	} else {
		fmt.Fprintf(&b, "   sl  %-*s %-*s st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n",
			addrW+5, "local_address", addrW+5, remote)
	}
	if k.cfg.Net == nil {
		return []byte(b.String())
	}
	inos := map[tcpip.Endpoint]uint64{}
	k.inet.mu.Lock()
	for _, s := range k.inet.m {
		s.mu.Lock()
		if s.ep != nil {
			inos[s.ep] = s.ino // a listener's is its AF_UNIX listener's
		}
		s.mu.Unlock()
	}
	k.inet.mu.Unlock()
	k.dgram.mu.Lock()
	for ino, s := range k.dgram.m {
		inos[s.ep] = ino
	}
	k.dgram.mu.Unlock()

	hex := func(a tcpip.Address, port uint16) string {
		var words []byte
		switch {
		case !v6 && a.Len() == 4:
			words = a.AsSlice()
		case !v6:
			words = make([]byte, 4)
		case a.Len() == 16:
			words = a.AsSlice()
		case a.Len() == 4: // a v4 address on an IPv6 socket: v4-mapped
			m := netip.AddrFrom4(a.As4()).As16()
			m[10], m[11] = 0xff, 0xff
			words = m[:]
		default:
			words = make([]byte, 16)
		}
		var s strings.Builder
		for i := 0; i < len(words); i += 4 {
			fmt.Fprintf(&s, "%08X", binary.LittleEndian.Uint32(words[i:]))
		}
		return fmt.Sprintf("%s:%04X", s.String(), port)
	}
	type row struct {
		local, remote string
		state         uint32
		ino           uint64
	}
	var rows []row
	want := tcp.ProtocolNumber
	if !isTCP {
		want = udp.ProtocolNumber
	}
	seen := map[tcpip.Endpoint]bool{} // a dual-stack endpoint is registered twice
	for _, te := range k.cfg.Net.Netstack().RegisteredEndpoints() {
		ep, ok := te.(tcpip.Endpoint)
		if !ok || seen[ep] {
			continue
		}
		seen[ep] = true
		info, ok := ep.Info().(*stack.TransportEndpointInfo)
		if !ok || info.TransProto != want || (info.NetProto == ipv6.ProtocolNumber) != v6 {
			continue
		}
		st := ep.State()
		if isTCP {
			if st == 0 || st > uint32(tcp.StateClosing) {
				continue // netstack's own states: not a connection yet
			}
		} else if transport.DatagramEndpointState(st) == transport.DatagramEndpointStateConnected {
			st = 1 // TCP_ESTABLISHED, as Linux shows a connected UDP socket
		} else {
			st = 7 // TCP_CLOSE
		}
		rows = append(rows, row{hex(info.ID.LocalAddress, info.ID.LocalPort), hex(info.ID.RemoteAddress, info.ID.RemotePort), st, inos[ep]})
	}
	sort.Slice(rows, func(i, j int) bool { return rows[i].local+rows[i].remote < rows[j].local+rows[j].remote })
	for i, r := range rows {
		if isTCP {
			fmt.Fprintf(&b, "%4d: %s %s %02X 00000000:00000000 00:00000000 00000000 %5d %8d %d 1 0000000000000000 100 0 0 10 0\n",
				i, r.local, r.remote, r.state, 0, 0, r.ino)
		} else {
			fmt.Fprintf(&b, "%5d: %s %s %02X 00000000:00000000 00:00000000 00000000 %5d %8d %d 2 0000000000000000 0\n",
				i, r.local, r.remote, r.state, 0, 0, r.ino)
		}
	}
	return []byte(b.String())
}

// procNetARP is /proc/net/arp: the IPv4 neighbours, complete (ATF_COM)
// once resolved, permanent (ATF_PERM) when static.
func procNetARP(st *netdev.Stack) []byte {
	var b strings.Builder
	b.WriteString("IP address       HW type     Flags       HW address            Mask     Device\n")
	if st == nil {
		return []byte(b.String())
	}
	for _, n := range st.Neighbors() {
		if !n.Addr.Is4() {
			continue
		}
		flags, mac := 0, "00:00:00:00:00:00"
		if n.MAC != nil {
			mac = n.MAC.String()
			if n.State != "incomplete" && n.State != "unreachable" {
				flags |= 0x2
			}
		}
		if n.State == "static" {
			flags |= 0x4
		}
		fmt.Fprintf(&b, "%-16s 0x%-10x0x%-10x%-17s     %-8s %s\n", n.Addr, 1, flags, mac, "*", n.Iface)
	}
	return []byte(b.String())
}
