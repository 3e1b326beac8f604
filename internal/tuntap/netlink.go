package tuntap

// A small route-netlink (rtnetlink) client: just the requests tunctl,
// uml_net and their tests need (links, IPv4 addresses, host routes, proxy
// neighbour entries), built on golang.org/x/sys/unix. It replaces the
// net-tools commands (ifconfig, route, arp) the C uml_net runs, so the
// setuid helper never executes another program.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"
)

// Netlink is an open route-netlink socket. Its methods are not safe for
// concurrent use.
type Netlink struct {
	fd  int
	seq atomic.Uint32
}

// Link is one network interface as RTM_GETLINK reports it.
type Link struct {
	Index int
	Name  string
	Flags uint32 // IFF_UP, IFF_RUNNING, ...
	MTU   int
	Kind  string   // IFLA_INFO_KIND: "tun", "veth", ... ("" for none)
	Tun   *TunInfo // set when Kind is "tun"
}

// Up reports whether the link is administratively up.
func (l Link) Up() bool { return l.Flags&unix.IFF_UP != 0 }

// TunInfo is what the kernel reports about a tun/tap device
// (IFLA_INFO_DATA of kind "tun").
type TunInfo struct {
	Tap     bool  // IFLA_TUN_TYPE is IFF_TAP (else IFF_TUN)
	Owner   int64 // -1 when no owner is set
	Group   int64 // -1 when no group is set
	Persist bool
}

// Addr is one interface address.
type Addr struct {
	Index  int
	Prefix netip.Prefix // address and prefix length
}

// Route is one route of the main IPv4 table.
type Route struct {
	Dst netip.Prefix
	Oif int        // output interface index, 0 when none
	Gw  netip.Addr // next hop, invalid when none
}

// Neigh is one IPv4 neighbour (ARP) entry.
type Neigh struct {
	Index int
	IP    netip.Addr
	State uint16 // NUD_REACHABLE, NUD_STALE, ...
}

// Proxy is one proxy-ARP neighbour entry (`ip neigh add proxy`).
type Proxy struct {
	Index int
	IP    netip.Addr
}

var native = binary.NativeEndian

// DialNetlink opens a route-netlink socket in the calling thread's network
// namespace.
func DialNetlink() (*Netlink, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("netlink socket: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("netlink bind: %w", err)
	}
	// Ask for the kernel's error text with NLMSG_ERROR (best effort).
	_ = unix.SetsockoptInt(fd, unix.SOL_NETLINK, unix.NETLINK_EXT_ACK, 1)
	return &Netlink{fd: fd}, nil
}

// Close closes the socket.
func (n *Netlink) Close() error { return unix.Close(n.fd) }

// NetlinkError is a negative acknowledgement from the kernel.
type NetlinkError struct {
	Errno unix.Errno
	Msg   string // extended-ack text, may be empty
}

func (e *NetlinkError) Error() string {
	if e.Msg != "" {
		return e.Errno.Error() + " (" + e.Msg + ")"
	}
	return e.Errno.Error()
}

// Unwrap lets errors.Is(err, unix.EEXIST) and friends work.
func (e *NetlinkError) Unwrap() error { return e.Errno }

// attr appends one rtattr (length, type, payload, padding) to b.
func attr(b []byte, typ uint16, data []byte) []byte {
	l := 4 + len(data)
	b = native.AppendUint16(b, uint16(l))
	b = native.AppendUint16(b, typ)
	b = append(b, data...)
	for l%4 != 0 {
		b = append(b, 0)
		l++
	}
	return b
}

func u32(v uint32) []byte { return native.AppendUint32(nil, v) }

// parseAttrs splits a run of rtattrs. Malformed tails are ignored.
func parseAttrs(b []byte) map[uint16][]byte {
	m := map[uint16][]byte{}
	for len(b) >= 4 {
		l := int(native.Uint16(b))
		typ := native.Uint16(b[2:]) &^ (unix.NLA_F_NESTED | unix.NLA_F_NET_BYTEORDER)
		if l < 4 || l > len(b) {
			break
		}
		if _, dup := m[typ]; !dup {
			m[typ] = b[4:l]
		}
		al := (l + 3) &^ 3
		if al > len(b) {
			break
		}
		b = b[al:]
	}
	return m
}

// request sends one message and returns the payloads of the replies: for a
// dump every part up to NLMSG_DONE, otherwise nothing once the kernel acks.
func (n *Netlink) request(typ, flags uint16, body []byte) ([][]byte, error) {
	seq := n.seq.Add(1)
	flags |= unix.NLM_F_REQUEST
	dump := flags&unix.NLM_F_DUMP == unix.NLM_F_DUMP
	if !dump {
		flags |= unix.NLM_F_ACK
	}
	msg := make([]byte, 0, unix.NLMSG_HDRLEN+len(body))
	msg = native.AppendUint32(msg, uint32(unix.NLMSG_HDRLEN+len(body)))
	msg = native.AppendUint16(msg, typ)
	msg = native.AppendUint16(msg, flags)
	msg = native.AppendUint32(msg, seq)
	msg = native.AppendUint32(msg, 0)
	msg = append(msg, body...)
	if err := unix.Sendto(n.fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return nil, fmt.Errorf("netlink send: %w", err)
	}
	var out [][]byte
	buf := make([]byte, 1<<16)
	for {
		nr, from, err := unix.Recvfrom(n.fd, buf, 0)
		if err != nil {
			if err == unix.EINTR {
				continue
			}
			return nil, fmt.Errorf("netlink receive: %w", err)
		}
		if sa, ok := from.(*unix.SockaddrNetlink); !ok || sa.Pid != 0 {
			continue // not from the kernel
		}
		b := buf[:nr]
		for len(b) >= unix.NLMSG_HDRLEN {
			l := int(native.Uint32(b))
			mtyp := native.Uint16(b[4:])
			mflags := native.Uint16(b[6:])
			mseq := native.Uint32(b[8:])
			if l < unix.NLMSG_HDRLEN || l > len(b) {
				return nil, errors.New("netlink: truncated message")
			}
			payload := b[unix.NLMSG_HDRLEN:l]
			al := (l + unix.NLMSG_ALIGNTO - 1) &^ (unix.NLMSG_ALIGNTO - 1)
			if al > len(b) {
				al = len(b)
			}
			b = b[al:]
			if mseq != seq {
				continue
			}
			switch mtyp {
			case unix.NLMSG_DONE:
				return out, nil
			case unix.NLMSG_ERROR:
				if len(payload) < 4 {
					return nil, errors.New("netlink: short error message")
				}
				code := int32(native.Uint32(payload))
				if code == 0 {
					if dump {
						continue
					}
					return out, nil
				}
				e := &NetlinkError{Errno: unix.Errno(-code)}
				// Extended ack: the original header (and body unless
				// capped) follows, then attributes.
				if len(payload) >= 4+unix.NLMSG_HDRLEN {
					rest := payload[4:]
					origLen := unix.NLMSG_HDRLEN
					if mflags&unix.NLM_F_CAPPED == 0 {
						origLen = int(native.Uint32(rest))
					}
					if origLen <= len(rest) {
						if m := parseAttrs(rest[origLen:])[unix.NLMSGERR_ATTR_MSG]; len(m) > 0 {
							e.Msg = cstring(m)
						}
					}
				}
				return nil, e
			default:
				out = append(out, append([]byte(nil), payload...))
			}
		}
	}
}

func cstring(b []byte) string {
	for i, c := range b {
		if c == 0 {
			return string(b[:i])
		}
	}
	return string(b)
}

// ifinfomsg builds struct ifinfomsg.
func ifinfomsg(index int, flags, change uint32) []byte {
	b := []byte{unix.AF_UNSPEC, 0, 0, 0}
	b = native.AppendUint32(b, uint32(index))
	b = native.AppendUint32(b, flags)
	return native.AppendUint32(b, change)
}

func parseLink(p []byte) (Link, bool) {
	if len(p) < unix.SizeofIfInfomsg {
		return Link{}, false
	}
	l := Link{Index: int(int32(native.Uint32(p[4:]))), Flags: native.Uint32(p[8:])}
	a := parseAttrs(p[unix.SizeofIfInfomsg:])
	l.Name = cstring(a[unix.IFLA_IFNAME])
	if v := a[unix.IFLA_MTU]; len(v) >= 4 {
		l.MTU = int(native.Uint32(v))
	}
	if li := a[unix.IFLA_LINKINFO]; li != nil {
		info := parseAttrs(li)
		l.Kind = cstring(info[unix.IFLA_INFO_KIND])
		if l.Kind == "tun" {
			t := &TunInfo{Owner: -1, Group: -1}
			d := parseAttrs(info[unix.IFLA_INFO_DATA])
			if v := d[unix.IFLA_TUN_OWNER]; len(v) >= 4 {
				t.Owner = int64(native.Uint32(v))
			}
			if v := d[unix.IFLA_TUN_GROUP]; len(v) >= 4 {
				t.Group = int64(native.Uint32(v))
			}
			if v := d[unix.IFLA_TUN_TYPE]; len(v) >= 1 {
				t.Tap = v[0] == unix.IFF_TAP
			}
			if v := d[unix.IFLA_TUN_PERSIST]; len(v) >= 1 {
				t.Persist = v[0] != 0
			}
			l.Tun = t
		}
	}
	return l, l.Name != ""
}

// Links lists every interface.
func (n *Netlink) Links() ([]Link, error) {
	msgs, err := n.request(unix.RTM_GETLINK, unix.NLM_F_DUMP, ifinfomsg(0, 0, 0))
	if err != nil {
		return nil, fmt.Errorf("listing links: %w", err)
	}
	var ls []Link
	for _, m := range msgs {
		if l, ok := parseLink(m); ok {
			ls = append(ls, l)
		}
	}
	return ls, nil
}

// LinkByName returns the interface called name; the error wraps
// unix.ENODEV when there is none.
func (n *Netlink) LinkByName(name string) (Link, error) {
	if !ValidName(name) {
		return Link{}, fmt.Errorf("link %q: invalid interface name: %w", name, unix.ENODEV)
	}
	body := attr(ifinfomsg(0, 0, 0), unix.IFLA_IFNAME, append([]byte(name), 0))
	msgs, err := n.request(unix.RTM_GETLINK, 0, body)
	if err == nil && len(msgs) == 0 {
		// Some kernels answer a get with the link and no ack.
		err = fmt.Errorf("no reply")
	}
	if err != nil {
		return Link{}, fmt.Errorf("link %s: %w", name, err)
	}
	l, ok := parseLink(msgs[0])
	if !ok {
		return Link{}, fmt.Errorf("link %s: malformed reply", name)
	}
	return l, nil
}

// SetLinkUp brings interface index up or down.
func (n *Netlink) SetLinkUp(index int, up bool) error {
	var flags uint32
	if up {
		flags = unix.IFF_UP
	}
	if _, err := n.request(unix.RTM_NEWLINK, 0, ifinfomsg(index, flags, unix.IFF_UP)); err != nil {
		return fmt.Errorf("set link %d up=%v: %w", index, up, err)
	}
	return nil
}

func ifaddrmsg(index int, p netip.Prefix) []byte {
	fam := byte(unix.AF_INET)
	if p.Addr().Is6() {
		fam = unix.AF_INET6
	}
	b := []byte{fam, byte(p.Bits()), 0, unix.RT_SCOPE_UNIVERSE}
	b = native.AppendUint32(b, uint32(index))
	ip := p.Addr().AsSlice()
	b = attr(b, unix.IFA_LOCAL, ip)
	return attr(b, unix.IFA_ADDRESS, ip)
}

// AddAddr assigns address p (address/prefix length) to interface index.
func (n *Netlink) AddAddr(index int, p netip.Prefix) error {
	if _, err := n.request(unix.RTM_NEWADDR, unix.NLM_F_CREATE|unix.NLM_F_EXCL, ifaddrmsg(index, p)); err != nil {
		return fmt.Errorf("add address %s to link %d: %w", p, index, err)
	}
	return nil
}

// DelAddr removes address p from interface index.
func (n *Netlink) DelAddr(index int, p netip.Prefix) error {
	if _, err := n.request(unix.RTM_DELADDR, 0, ifaddrmsg(index, p)); err != nil {
		return fmt.Errorf("delete address %s from link %d: %w", p, index, err)
	}
	return nil
}

// Addrs lists every IPv4 and IPv6 address.
func (n *Netlink) Addrs() ([]Addr, error) {
	msgs, err := n.request(unix.RTM_GETADDR, unix.NLM_F_DUMP, make([]byte, unix.SizeofIfAddrmsg))
	if err != nil {
		return nil, fmt.Errorf("listing addresses: %w", err)
	}
	var as []Addr
	for _, m := range msgs {
		if len(m) < unix.SizeofIfAddrmsg {
			continue
		}
		a := parseAttrs(m[unix.SizeofIfAddrmsg:])
		raw := a[unix.IFA_LOCAL]
		if raw == nil {
			raw = a[unix.IFA_ADDRESS]
		}
		ip, ok := netip.AddrFromSlice(raw)
		if !ok {
			continue
		}
		as = append(as, Addr{Index: int(native.Uint32(m[4:])), Prefix: netip.PrefixFrom(ip, int(m[1]))})
	}
	return as, nil
}

func rtmsg(dst netip.Prefix, index int, scope byte) []byte {
	b := []byte{unix.AF_INET, byte(dst.Bits()), 0, 0, unix.RT_TABLE_MAIN, unix.RTPROT_BOOT, scope, unix.RTN_UNICAST}
	b = native.AppendUint32(b, 0)
	b = attr(b, unix.RTA_DST, dst.Addr().AsSlice())
	return attr(b, unix.RTA_OIF, u32(uint32(index)))
}

// AddHostRoute adds the route ip/32 via interface index (what
// `route add -host ip dev name` does).
func (n *Netlink) AddHostRoute(ip netip.Addr, index int) error {
	if !ip.Is4() {
		return fmt.Errorf("host route %s: not an IPv4 address", ip)
	}
	body := rtmsg(netip.PrefixFrom(ip, 32), index, unix.RT_SCOPE_LINK)
	if _, err := n.request(unix.RTM_NEWROUTE, unix.NLM_F_CREATE|unix.NLM_F_EXCL, body); err != nil {
		return fmt.Errorf("add route %s/32 dev %d: %w", ip, index, err)
	}
	return nil
}

// DelHostRoute removes the route ip/32 via interface index.
func (n *Netlink) DelHostRoute(ip netip.Addr, index int) error {
	if !ip.Is4() {
		return fmt.Errorf("host route %s: not an IPv4 address", ip)
	}
	body := rtmsg(netip.PrefixFrom(ip, 32), index, unix.RT_SCOPE_NOWHERE)
	if _, err := n.request(unix.RTM_DELROUTE, 0, body); err != nil {
		return fmt.Errorf("delete route %s/32 dev %d: %w", ip, index, err)
	}
	return nil
}

// Routes lists the main IPv4 routing table (what /proc/net/route shows).
func (n *Netlink) Routes() ([]Route, error) {
	req := make([]byte, unix.SizeofRtMsg)
	req[0] = unix.AF_INET
	msgs, err := n.request(unix.RTM_GETROUTE, unix.NLM_F_DUMP, req)
	if err != nil {
		return nil, fmt.Errorf("listing routes: %w", err)
	}
	var rs []Route
	for _, m := range msgs {
		if len(m) < unix.SizeofRtMsg || m[0] != unix.AF_INET {
			continue
		}
		a := parseAttrs(m[unix.SizeofRtMsg:])
		table := uint32(m[4])
		if v := a[unix.RTA_TABLE]; len(v) >= 4 {
			table = native.Uint32(v)
		}
		if table != unix.RT_TABLE_MAIN {
			continue
		}
		dst := netip.IPv4Unspecified()
		if v, ok := netip.AddrFromSlice(a[unix.RTA_DST]); ok {
			dst = v
		}
		r := Route{Dst: netip.PrefixFrom(dst, int(m[1]))}
		if v := a[unix.RTA_OIF]; len(v) >= 4 {
			r.Oif = int(native.Uint32(v))
		}
		if v, ok := netip.AddrFromSlice(a[unix.RTA_GATEWAY]); ok {
			r.Gw = v
		}
		rs = append(rs, r)
	}
	return rs, nil
}

func ndmsg(index int, ip netip.Addr) []byte {
	b := []byte{unix.AF_INET, 0, 0, 0}
	b = native.AppendUint32(b, uint32(index))
	b = native.AppendUint16(b, unix.NUD_PERMANENT)
	b = append(b, unix.NTF_PROXY, 0)
	return attr(b, unix.NDA_DST, ip.AsSlice())
}

// AddProxy publishes ip for proxy ARP on interface index (what
// `arp -Ds ip dev pub` does).
func (n *Netlink) AddProxy(ip netip.Addr, index int) error {
	if !ip.Is4() {
		return fmt.Errorf("proxy %s: not an IPv4 address", ip)
	}
	if _, err := n.request(unix.RTM_NEWNEIGH, unix.NLM_F_CREATE|unix.NLM_F_REPLACE, ndmsg(index, ip)); err != nil {
		return fmt.Errorf("add proxy %s dev %d: %w", ip, index, err)
	}
	return nil
}

// DelProxy removes the proxy-ARP entry for ip on interface index.
func (n *Netlink) DelProxy(ip netip.Addr, index int) error {
	if !ip.Is4() {
		return fmt.Errorf("proxy %s: not an IPv4 address", ip)
	}
	if _, err := n.request(unix.RTM_DELNEIGH, 0, ndmsg(index, ip)); err != nil {
		return fmt.Errorf("delete proxy %s dev %d: %w", ip, index, err)
	}
	return nil
}

// Proxies lists the IPv4 proxy-ARP entries.
func (n *Netlink) Proxies() ([]Proxy, error) {
	req := make([]byte, unix.SizeofNdMsg)
	req[0] = unix.AF_INET
	req[10] = unix.NTF_PROXY
	msgs, err := n.request(unix.RTM_GETNEIGH, unix.NLM_F_DUMP, req)
	if err != nil {
		return nil, fmt.Errorf("listing proxy entries: %w", err)
	}
	var ps []Proxy
	for _, m := range msgs {
		if len(m) < unix.SizeofNdMsg || m[10]&unix.NTF_PROXY == 0 {
			continue
		}
		ip, ok := netip.AddrFromSlice(parseAttrs(m[unix.SizeofNdMsg:])[unix.NDA_DST])
		if !ok {
			continue
		}
		ps = append(ps, Proxy{Index: int(int32(native.Uint32(m[4:]))), IP: ip})
	}
	return ps, nil
}

// SetIPForward writes /proc/sys/net/ipv4/ip_forward.
func SetIPForward(on bool) error {
	return writeSysctl("/proc/sys/net/ipv4/ip_forward", on)
}

// SetProxyARP writes /proc/sys/net/ipv4/conf/<dev>/proxy_arp.
func SetProxyARP(dev string, on bool) error {
	if !ValidName(dev) || dev == "all" || dev == "default" {
		return fmt.Errorf("proxy_arp: invalid interface name %q", dev)
	}
	return writeSysctl("/proc/sys/net/ipv4/conf/"+dev+"/proxy_arp", on)
}

func writeSysctl(path string, on bool) error {
	v := "0\n"
	if on {
		v = "1\n"
	}
	f, err := os.OpenFile(path, os.O_WRONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return err
	}
	_, err = f.WriteString(v)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// Neighbours lists the IPv4 neighbour (ARP) table.
func (n *Netlink) Neighbours() ([]Neigh, error) {
	req := make([]byte, unix.SizeofNdMsg)
	req[0] = unix.AF_INET
	msgs, err := n.request(unix.RTM_GETNEIGH, unix.NLM_F_DUMP, req)
	if err != nil {
		return nil, fmt.Errorf("listing neighbours: %w", err)
	}
	var ns []Neigh
	for _, m := range msgs {
		if len(m) < unix.SizeofNdMsg || m[0] != unix.AF_INET || m[10]&unix.NTF_PROXY != 0 {
			continue
		}
		ip, ok := netip.AddrFromSlice(parseAttrs(m[unix.SizeofNdMsg:])[unix.NDA_DST])
		if !ok {
			continue
		}
		ns = append(ns, Neigh{Index: int(int32(native.Uint32(m[4:]))), IP: ip, State: native.Uint16(m[8:])})
	}
	return ns, nil
}
