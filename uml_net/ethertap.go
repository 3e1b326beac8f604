package main

import (
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strings"

	"github.com/umltools/umltools/internal/cli"
	"github.com/umltools/umltools/internal/tuntap"
	"golang.org/x/sys/unix"
)

// ethertap implements `uml_net 4 ethertap <tapN> <data fd> [<gate>]`
// (§4.4). The host's ethertap driver (/dev/tapN, char 36:16+N) left Linux
// in 2.6, so on any current host this fails cleanly at the open; the
// protocol (status byte, blobs, 12-byte control messages, frame relay) is
// implemented all the same.
func (e *env) ethertap(fd int, rest []string) error {
	if err := needReplyFD(fd, unix.SOCK_STREAM, false); err != nil {
		fmt.Fprintf(e.stderr, "uml_net : ethertap: %v\n", err)
		return cli.Exit(1)
	}
	var o output
	fail := e.refusal("ethertap", &o, func() { unix.Write(fd, append([]byte{0}, o.blob()...)) })
	if len(rest) < 2 {
		return fail("uml_net : Too few arguments to ethertap_v4")
	}
	if len(rest) > 3 {
		return fail("uml_net : too many arguments to ethertap_v4")
	}
	dev := rest[0]
	if err := validDev(dev); err != nil {
		return fail("%v", err)
	}
	unit, ok := strings.CutPrefix(dev, "tap")
	if !ok || unit == "" || len(unit) > 3 || strings.Trim(unit, "0123456789") != "" {
		return fail("failed to get unit number from '%s'", dev)
	}
	data, err := parseFD(rest[1])
	if err != nil {
		return fail("uml_net : %v", err)
	}
	if k := inspectFD(data); data == fd || k.unixType != unix.SOCK_DGRAM {
		return fail("uml_net : data descriptor %d is not a Unix datagram socket", data)
	}
	var gate netip.Addr
	if len(rest) == 3 && rest[2] != "" {
		if gate, err = parseHostIPv4("gate address", rest[2]); err != nil {
			return fail("uml_net : %v", err)
		}
	}
	// Opening the character device with the caller's own permissions is
	// the proof that this ethertap unit is theirs to use.
	var tap *os.File
	path := "/dev/" + dev
	if err := asCaller(e.who, func() (err error) {
		tap, err = os.OpenFile(path, os.O_RDWR|unix.O_NONBLOCK|unix.O_NOFOLLOW, 0)
		return err
	}); err != nil {
		return fail("open %s : %s\n(the ethertap driver was removed from Linux in 2.6; use eth0=tuntap,,,<gate> instead)", path, tuntap.Strerror(err))
	}
	defer tap.Close()
	nl, err := tuntap.DialNetlink()
	if err != nil {
		return fail("uml_net : %v", err)
	}
	defer nl.Close()
	l, err := nl.LinkByName(dev)
	if err != nil {
		return fail("uml_net : %v (uml_net loads no modules)", err)
	}
	if gate.IsValid() {
		if err := checkConflict(nl, gate, l.Index); err != nil {
			return fail("uml_net : gate address %v", err)
		}
		if err := gateUp(nl, l, gate, &o); err != nil {
			return fail("uml_net : %v%s", err, privHint(err))
		}
		forward(&o)
	}
	e.log("uid %d: ethertap %s up, gate %s", e.who.uid, dev, orNone(gate))
	if _, err := unix.Write(fd, append([]byte{1}, o.blob()...)); err != nil {
		return cli.Exit(1)
	}
	// The relay needs CAP_NET_ADMIN for the address changes the kernel
	// sends; everything else is given up now.
	if err := keepOnlyNetAdmin(e.who); err != nil {
		e.log("ethertap %s: keeping full privileges: %v", dev, err)
	}
	ctl := os.NewFile(uintptr(fd), "control")
	relayErr := relayEthertap(int(tap.Fd()), data, ctl, func(c ethertapChange) []byte {
		var co output
		bits, err := parseNetmask(netip.AddrFrom4(c.Netmask).String())
		addr := netip.AddrFrom4(c.Addr)
		if err == nil {
			_, err = parseHostIPv4("address", addr.String())
		}
		if err != nil {
			co.line("uml_net : " + err.Error())
		} else {
			applyChange(nl, l, c.Del, addr, bits, &co)
		}
		return co.blob()
	})
	if gate.IsValid() {
		nl.DelAddr(l.Index, netip.PrefixFrom(gate, 32))
		nl.SetLinkUp(l.Index, false)
	}
	e.log("uid %d: ethertap %s down", e.who.uid, dev)
	if relayErr != nil {
		fmt.Fprintf(e.stderr, "uml_net : ethertap: %v\n", relayErr)
		return cli.Exit(1)
	}
	return nil
}

// relayEthertap copies frames between the ethertap device and the data
// socket and answers address-change messages on the control stream with
// the output blob handle returns. It ends when the kernel closes the
// control or data socket, or the device reports end of file.
func relayEthertap(tap, data int, ctl io.ReadWriter, handle func(ethertapChange) []byte) error {
	ctlFD := -1
	if f, ok := ctl.(*os.File); ok {
		ctlFD = int(f.Fd())
	}
	buf := make([]byte, 65536)
	for {
		fds := []unix.PollFd{{Fd: int32(tap), Events: unix.POLLIN}, {Fd: int32(data), Events: unix.POLLIN}, {Fd: int32(ctlFD), Events: unix.POLLIN}}
		if _, err := unix.Poll(fds, -1); err != nil {
			if err == unix.EINTR {
				continue
			}
			return fmt.Errorf("poll: %w", err)
		}
		if fds[0].Revents != 0 {
			n, err := unix.Read(tap, buf)
			switch {
			case n == 0 && err == nil:
				return nil
			case err == unix.EAGAIN || err == unix.EINTR:
			case err != nil:
				return fmt.Errorf("read tap: %w", err)
			default:
				if err := unix.Send(data, buf[:n], 0); err != nil && err != unix.EAGAIN {
					return fmt.Errorf("send to kernel: %w", err)
				}
			}
		}
		if fds[1].Revents != 0 {
			n, _, err := unix.Recvfrom(data, buf, unix.MSG_DONTWAIT)
			switch {
			case fds[1].Revents&(unix.POLLHUP|unix.POLLERR) != 0 && n <= 0:
				return nil
			case err == unix.EAGAIN || err == unix.EINTR:
			case err != nil:
				return fmt.Errorf("receive from kernel: %w", err)
			default:
				if _, err := unix.Write(tap, buf[:n]); err != nil && err != unix.EAGAIN {
					return fmt.Errorf("write tap: %w", err)
				}
			}
		}
		if fds[2].Revents != 0 {
			var msg [ethertapChangeLen]byte
			if _, err := io.ReadFull(ctl, msg[:]); err != nil {
				if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
					return nil
				}
				return fmt.Errorf("control socket: %w", err)
			}
			c, err := parseEthertapChange(msg[:])
			var reply []byte
			if err != nil {
				var o output
				o.line("uml_net : " + err.Error())
				reply = o.blob()
			} else {
				reply = handle(c)
			}
			if _, err := ctl.Write(reply); err != nil {
				return fmt.Errorf("control socket: %w", err)
			}
		}
	}
}
