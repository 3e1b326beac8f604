package main

import (
	"fmt"
	"io"
	"strings"
	"unsafe"

	"github.com/umltools/umltools/internal/cli"
	"github.com/umltools/umltools/internal/tuntap"
	"golang.org/x/sys/unix"
)

// nSLIP is the SLIP line discipline number (N_SLIP).
const nSLIP = 1

// slip implements `uml_net 4 slip up <gate>` and `uml_net 4 slip down
// <name>` (§4.5). The pty the kernel passes as fd 0 is the proof of
// ownership: "up" turns it into a SLIP interface, "down" finds the
// interface through it (the name argument is only checked, never used).
func (e *env) slip(fd int, stdin io.Reader, stdout io.Writer, rest []string) error {
	if len(rest) >= 2 && rest[0] != "up" && rest[0] != "down" {
		fmt.Fprintf(stdout, "slip - Unknown op '%s'\n", rest[0])
		return cli.Exit(1)
	}
	if err := needReplyFD(fd, 0, true); err != nil {
		fmt.Fprintf(e.stderr, "uml_net : slip: %v\n", err)
		return cli.Exit(1)
	}
	var o output
	fail := e.refusal("slip", &o, func() { e.replyBlob(fd, &o, 1) })
	if len(rest) < 2 {
		return fail("uml_net : too few arguments to slip_v4")
	}
	op := rest[0]
	if len(rest) > 2 {
		return fail("uml_net : too many arguments to slip_v4")
	}
	tty := fdOf(stdin)
	if tty < 0 || !inspectFD(tty).tty {
		return fail("uml_net : slip: descriptor 0 is not the terminal the kernel passes")
	}
	nl, err := tuntap.DialNetlink()
	if err != nil {
		return fail("uml_net : %v", err)
	}
	defer nl.Close()
	if op == "down" {
		if err := validDev(rest[1]); err != nil {
			return fail("%v", err)
		}
		l, err := slipLink(nl, tty)
		if err != nil {
			return fail("%v", err)
		}
		dev := l.Name
		addrs, err := nl.Addrs()
		if err != nil {
			return fail("uml_net : %v", err)
		}
		for _, a := range addrs {
			if a.Index == l.Index && a.Prefix.Addr().Is4() {
				if err := nl.DelAddr(l.Index, a.Prefix); err == nil {
					o.step("netlink: ip address del %s dev %s", a.Prefix, dev)
				}
			}
		}
		if err := nl.SetLinkUp(l.Index, false); err != nil {
			return fail("uml_net : %v", err)
		}
		o.step("netlink: ip link set %s down", dev)
		e.log("uid %d: slip %s down", e.who.uid, dev)
		dropPrivileges(e.who)
		return e.replyBlob(fd, &o, 0)
	}
	gate, err := parseHostIPv4("gate address", rest[1])
	if err != nil {
		return fail("uml_net : %v", err)
	}
	if err := checkConflict(nl, gate, 0); err != nil {
		return fail("uml_net : gate address %v", err)
	}
	disc := int32(nSLIP)
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(tty), unix.TIOCSETD, uintptr(unsafe.Pointer(&disc))); errno != 0 {
		hint := ""
		if errno == unix.EINVAL {
			hint = "\n(this host kernel has no SLIP support: use eth0=tuntap,,,<gate> instead)"
		}
		return fail("Setting slip line discipline : %s%s", tuntap.Strerror(errno), hint)
	}
	encap := int32(0)
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(tty), unix.SIOCSIFENCAP, uintptr(unsafe.Pointer(&encap))); errno != 0 {
		return fail("Setting slip encapsulation : %s", tuntap.Strerror(errno))
	}
	l, err := slipLink(nl, tty)
	if err != nil {
		return fail("%v", err)
	}
	dev := l.Name
	if err := gateUp(nl, l, gate, &o); err != nil {
		return fail("uml_net : %v", err)
	}
	forward(&o)
	e.log("uid %d: slip %s up, gate %s", e.who.uid, dev, gate)
	if err := dropPrivileges(e.who); err != nil {
		return fail("uml_net : %v", err)
	}
	return e.replyBlob(fd, &o, 0)
}

// slipLink finds the SLIP interface attached to tty.
func slipLink(nl *tuntap.Netlink, tty int) (tuntap.Link, error) {
	dev, err := slipName(tty)
	if err != nil {
		return tuntap.Link{}, fmt.Errorf("Getting slip line discipline : %s", tuntap.Strerror(err))
	}
	l, err := nl.LinkByName(dev)
	if err != nil {
		return tuntap.Link{}, fmt.Errorf("uml_net : %w", err)
	}
	return l, nil
}

// slipName asks the SLIP line discipline on tty for its interface name.
func slipName(tty int) (string, error) {
	var name [unix.IFNAMSIZ]byte
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(tty), unix.SIOCGIFNAME, uintptr(unsafe.Pointer(&name[0]))); errno != 0 {
		return "", errno
	}
	return strings.TrimRight(string(name[:]), "\x00"), nil
}
