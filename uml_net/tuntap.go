package main

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"

	"github.com/umltools/umltools/internal/cli"
	"github.com/umltools/umltools/internal/tuntap"
	"golang.org/x/sys/unix"
)

// tuntapUp implements `uml_net 4 tuntap up [<gate>]` (§4.2): create a tap
// owned by the caller, give it the gate address, enable forwarding, and
// send {16-byte name, text} with the tap descriptor (SCM_RIGHTS) as one
// datagram on fd 1. On failure the datagram carries the text only.
func (e *env) tuntapUp(fd int, rest []string) error {
	if err := needReplyFD(fd, unix.SOCK_DGRAM, false); err != nil {
		fmt.Fprintf(e.stderr, "uml_net : tuntap up: %v\n", err)
		return cli.Exit(1)
	}
	var o output
	fail := e.refusal("tuntap up", &o, func() {
		if err := sendTap(fd, nil, "", &o); err != nil {
			fmt.Fprintf(e.stderr, "uml_net : sendmsg: %v\n", err)
		}
	})
	if len(rest) > 1 {
		return fail("uml_net : too many arguments to tuntap up")
	}
	var gate netip.Addr
	if len(rest) == 1 && rest[0] != "" {
		g, err := parseHostIPv4("gate address", rest[0])
		if err != nil {
			return fail("uml_net : %v", err)
		}
		gate = g
	}
	nl, err := tuntap.DialNetlink()
	if err != nil {
		return fail("uml_net : %v", err)
	}
	defer nl.Close()
	if gate.IsValid() {
		if err := checkConflict(nl, gate, 0); err != nil {
			return fail("uml_net : gate address %v", err)
		}
	}
	if err := ensureTunNode(&o); err != nil {
		return fail("Opening %s failed : %s", tuntap.DefaultClone, tuntap.Strerror(err))
	}
	tap, name, err := tuntap.Open("", "")
	if err != nil {
		return fail("TUNSETIFF : %s%s", tuntap.Strerror(err), privHint(err))
	}
	defer tap.Close()
	o.step("netlink: created %s (tap, no packet info) for uid %d", name, e.who.uid)
	if err := tuntap.SetOwner(tap, e.who.uid); err != nil {
		return fail("TUNSETOWNER %s : %s", name, tuntap.Strerror(err))
	}
	if gate.IsValid() {
		l, err := nl.LinkByName(name)
		if err != nil {
			return fail("uml_net : %v", err)
		}
		if err := gateUp(nl, l, gate, &o); err != nil {
			return fail("uml_net : %v%s", err, privHint(err))
		}
	}
	forward(&o)
	e.log("uid %d: created %s (owner uid %d) gate %s", e.who.uid, name, e.who.uid, orNone(gate))
	if err := dropPrivileges(e.who); err != nil {
		return fail("uml_net : %v", err)
	}
	if err := sendTap(fd, tap, name, &o); err != nil {
		fmt.Fprintf(e.stderr, "uml_net : sendmsg: %v\n", err)
		return cli.Exit(1)
	}
	return nil
}

// sendTap sends the tuntap-up reply: with a tap, iov0 is its name in 16
// NUL-padded bytes and the descriptor rides as SCM_RIGHTS; iov1 is the
// NUL-terminated text with no length prefix.
func sendTap(fd int, tap *os.File, name string, o *output) error {
	var p, oob []byte
	if tap != nil {
		var n [unix.IFNAMSIZ]byte
		copy(n[:], name)
		p = append(p, n[:]...)
		oob = unix.UnixRights(int(tap.Fd()))
	}
	p = append(p, o.text()...)
	return unix.Sendmsg(fd, p, oob, nil, 0)
}

// ensureTunNode creates /dev/net/tun (char 10:200, mode 0600 as the C
// helper does) when it is missing. Opening it loads the tun module on
// demand, so no modprobe is needed.
func ensureTunNode(o *output) error {
	if _, err := os.Lstat(tuntap.DefaultClone); !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if err := os.Mkdir("/dev/net", 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return err
	}
	if err := unix.Mknod(tuntap.DefaultClone, unix.S_IFCHR|0o600, int(unix.Mkdev(10, 200))); err != nil {
		return err
	}
	o.step("mknod %s c 10 200", tuntap.DefaultClone)
	return nil
}

// gateUp gives link l the host-side address gate/32 and brings it up
// (what `ifconfig <dev> <gate> netmask 255.255.255.255 up` does).
func gateUp(nl *tuntap.Netlink, l tuntap.Link, gate netip.Addr, o *output) error {
	if err := nl.AddAddr(l.Index, netip.PrefixFrom(gate, 32)); err != nil {
		return err
	}
	o.step("netlink: ip address add %s/32 dev %s", gate, l.Name)
	if err := nl.SetLinkUp(l.Index, true); err != nil {
		return err
	}
	o.step("netlink: ip link set %s up", l.Name)
	return nil
}

// forward enables IPv4 forwarding; a failure is reported, not fatal (as in
// the C helper).
func forward(o *output) {
	if err := tuntap.SetIPForward(true); err != nil {
		o.fail("echo 1 > /proc/sys/net/ipv4/ip_forward", err)
		return
	}
	o.step("echo 1 > /proc/sys/net/ipv4/ip_forward")
}

func privHint(err error) string {
	if errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) {
		return " (uml_net must be setuid root or have cap_net_admin+ep; see uml_net(8))"
	}
	return ""
}

func orNone(a netip.Addr) string {
	if !a.IsValid() {
		return "none"
	}
	return a.String()
}

// checkConflict refuses an address that another machine may own: the next
// hop of a route, a host route through an interface other than skip (a
// guest behind another tap), or a live neighbour entry on an interface
// other than skip. Publishing or assigning such an address would let a
// guest steal its traffic.
func checkConflict(nl *tuntap.Netlink, a netip.Addr, skip int) error {
	rs, err := nl.Routes()
	if err != nil {
		return err
	}
	for _, r := range rs {
		if r.Gw == a {
			return fmt.Errorf("%s is a router of this host; refusing it", a)
		}
		if r.Dst == netip.PrefixFrom(a, 32) && r.Oif != 0 && r.Oif != skip {
			return fmt.Errorf("%s is routed to another interface (%d); refusing it", a, r.Oif)
		}
	}
	ns, err := nl.Neighbours()
	if err != nil {
		return err
	}
	for _, n := range ns {
		live := n.State&(unix.NUD_REACHABLE|unix.NUD_STALE|unix.NUD_DELAY|unix.NUD_PROBE|unix.NUD_PERMANENT) != 0
		if n.IP == a && live && n.Index != skip {
			return fmt.Errorf("%s is in use by another machine (neighbour on interface %d); refusing it", a, n.Index)
		}
	}
	return nil
}

// change implements `uml_net 4 add|del <dev> <addr> <netmask>` (§4.3):
// a host route to the guest address through the tap, proxy_arp on the
// tap, and proxy ARP entries on every other interface whose route covers
// the guest's network. The reply is one output blob on fd 1.
func (e *env) change(fd int, op string, rest []string) error {
	var o output
	refuse := e.refusal(op, &o, func() { e.replyBlob(fd, &o, 1) })
	if err := needReplyFD(fd, 0, true); err != nil {
		fmt.Fprintf(e.stderr, "uml_net : %s: %v\n", op, err)
		return cli.Exit(1)
	}
	if len(rest) != 3 {
		if len(rest) < 3 {
			return refuse("uml_net : too few arguments to %s", op)
		}
		return refuse("uml_net : too many arguments to %s", op)
	}
	dev := rest[0]
	if err := validDev(dev); err != nil {
		return refuse("%v", err)
	}
	addr, err := parseHostIPv4("address", rest[1])
	if err != nil {
		return refuse("uml_net : %v", err)
	}
	bits, err := parseNetmask(rest[2])
	if err != nil {
		return refuse("uml_net : %v", err)
	}
	nl, err := tuntap.DialNetlink()
	if err != nil {
		return refuse("uml_net : %v", err)
	}
	defer nl.Close()
	l, err := nl.LinkByName(dev)
	if err != nil {
		return refuse("uml_net : %v", err)
	}
	if err := e.mayUse(l); err != nil {
		return refuse("uml_net : %v", err)
	}
	code := applyChange(nl, l, op == "del", addr, bits, &o)
	e.log("uid %d: %s %s/%d on %s (exit %d)", e.who.uid, op, addr, bits, dev, code)
	if err := dropPrivileges(e.who); err != nil {
		o.line("uml_net : " + err.Error())
		code = 1
	}
	return e.replyBlob(fd, &o, code)
}

// routedElsewhere reports whether a host route to a goes through an
// interface other than skip.
func routedElsewhere(nl *tuntap.Netlink, a netip.Addr, skip int) bool {
	rs, err := nl.Routes()
	if err != nil {
		return true // when in doubt, leave others' entries alone
	}
	for _, r := range rs {
		if r.Dst == netip.PrefixFrom(a, 32) && r.Oif != 0 && r.Oif != skip {
			return true
		}
	}
	return false
}

// mayUse enforces "only devices created for the caller": a tap whose
// owner is the caller. Root may also use taps with no owner (made by
// other helpers) and SLIP devices.
func (e *env) mayUse(l tuntap.Link) error {
	isTap := l.Kind == "tun" && l.Tun != nil && l.Tun.Tap
	if isTap && l.Tun.Owner == int64(e.who.uid) {
		return nil
	}
	if e.who.uid == 0 && (isTap && l.Tun.Owner == -1 || l.Kind == "" && strings.HasPrefix(l.Name, "sl")) {
		return nil
	}
	return fmt.Errorf("%s is not a tap device created for uid %d; refusing it", l.Name, e.who.uid)
}

// applyChange does the host side of an address add (or del) for the guest
// behind link l. It checks every address it would publish before touching
// anything, so a refusal leaves the host unchanged. It returns the exit
// code.
func applyChange(nl *tuntap.Netlink, l tuntap.Link, del bool, addr netip.Addr, bits int, o *output) int {
	links, err := nl.Links()
	if err != nil {
		o.line("uml_net : " + err.Error())
		return 1
	}
	names := map[int]string{}
	for _, x := range links {
		names[x.Index] = x.Name
	}
	rs, err := nl.Routes()
	if err != nil {
		o.line("uml_net : " + err.Error())
		return 1
	}
	net := netip.PrefixFrom(addr, bits).Masked()
	var pub []int
	seen := map[int]bool{}
	for _, r := range rs {
		if r.Oif == 0 || r.Oif == l.Index || seen[r.Oif] {
			continue
		}
		if net.Contains(netip.PrefixFrom(r.Dst.Addr(), bits).Masked().Addr()) {
			seen[r.Oif] = true
			pub = append(pub, r.Oif)
		}
	}
	if !del {
		if err := checkConflict(nl, addr, l.Index); err != nil {
			o.line("uml_net : address " + err.Error())
			return 1
		}
	}
	code := 0
	if del {
		if err := nl.DelHostRoute(addr, l.Index); err != nil && !errors.Is(err, unix.ESRCH) && !errors.Is(err, unix.ENOENT) {
			o.line("uml_net : " + err.Error())
			code = 1
		} else {
			o.step("netlink: ip route del %s/32 dev %s", addr, l.Name)
		}
	} else {
		switch err := nl.AddHostRoute(addr, l.Index); {
		case errors.Is(err, unix.EEXIST):
			o.step("netlink: ip route add %s/32 dev %s (already there)", addr, l.Name)
		case err != nil:
			o.line("uml_net : " + err.Error() + privHint(err))
			code = 1
		default:
			o.step("netlink: ip route add %s/32 dev %s", addr, l.Name)
		}
	}
	if del && routedElsewhere(nl, addr, l.Index) {
		// Another tap still serves this address: its proxy entries
		// are not ours to remove.
		pub = nil
	}
	v := "1"
	if del {
		v = "0"
	}
	if err := tuntap.SetProxyARP(l.Name, !del); err != nil {
		o.fail("echo "+v+" > /proc/sys/net/ipv4/conf/"+l.Name+"/proxy_arp", err)
	} else {
		o.step("echo %s > /proc/sys/net/ipv4/conf/%s/proxy_arp", v, l.Name)
	}
	for _, idx := range pub {
		if del {
			if err := nl.DelProxy(addr, idx); err != nil && !errors.Is(err, unix.ENOENT) {
				o.line("uml_net : " + err.Error())
			} else {
				o.step("netlink: ip neigh del proxy %s dev %s", addr, names[idx])
			}
			continue
		}
		if err := nl.AddProxy(addr, idx); err != nil {
			o.line("uml_net : " + err.Error())
		} else {
			o.step("netlink: ip neigh add proxy %s dev %s", addr, names[idx])
		}
	}
	return code
}
