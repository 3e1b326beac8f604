package netdev

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/umltools/umltools/internal/cmdline"
	"github.com/umltools/umltools/internal/switchd"
	"github.com/umltools/umltools/internal/tuntap"
	"github.com/umltools/umltools/internal/usernet"
)

// Frames is a transport: a host channel that carries whole Ethernet
// frames (no preamble, no FCS), one per read or write. ReadFrame may
// block; Close makes a blocked ReadFrame return.
type Frames interface {
	ReadFrame(b []byte) (int, error)
	WriteFrame(b []byte) error
	Close() error
}

// Open opens the transport of device e, as the C kernel does when the
// device is created. It returns the transport and the C kernel's text
// for the boot banner (after "Netdevice N (mac) : "); mac is the device's
// address (a multicast transport drops its own frames, which the host
// loops back). Its errors carry
// the C kernel's message where it has one.
func Open(e *cmdline.Eth, mac net.HardwareAddr) (Frames, string, error) {
	switch e.Transport {
	case "daemon":
		c, err := switchd.Dial(e.Ctl)
		if err != nil {
			var errno syscall.Errno
			if errors.As(err, &errno) {
				return nil, "", fmt.Errorf("daemon_open : control connect failed, errno = %d (%s: %w)", int(errno), e.Ctl, errno)
			}
			return nil, "", fmt.Errorf("daemon_open : %w", err)
		}
		return c, "daemon backend (uml_switch version 3) - " + e.SockType + ":" + e.Ctl, nil
	case "mcast":
		f, err := openUDP(e)
		if err != nil {
			return nil, "", fmt.Errorf("mcast_open : %w", err)
		}
		f.self = mac
		return f, "mcast backend multicast address: " + e.Addr + ":" + strconv.Itoa(e.Port) + ", TTL:" + strconv.Itoa(e.TTL), nil
	case "ucast":
		f, err := openUDP(e)
		if err != nil {
			return nil, "", fmt.Errorf("ucast_open : %w", err)
		}
		return f, "ucast backend address: " + e.Addr + ":" + strconv.Itoa(e.RPort) + " listen port: " + strconv.Itoa(e.Port), nil
	case "tuntap":
		banner := "TUN/TAP backend - "
		if e.Gate != "" {
			banner += "IP = " + e.Gate
		}
		if e.Dev == "" {
			f, text, err := umlNetTap(e.Gate)
			if err != nil {
				return nil, "", err
			}
			if text = strings.TrimSpace(text); text != "" {
				banner += "\n" + text
			}
			return f, banner, nil
		}
		f, err := openTapVnet(e.Dev)
		if err != nil {
			return nil, "", fmt.Errorf("tuntap_open : %w", err)
		}
		return f, banner, nil
	case "vde":
		return openVDE(e)
	case "slirp":
		if !usernet.IsOptions(e.SlirpArgv) {
			return nil, "", fmt.Errorf("slirp_open : running a slirp command (%s) is not implemented in this version of the engine; "+
				"eth%d=slirp without one is the built-in user-mode NAT", strings.Join(e.SlirpArgv, " "), e.Unit)
		}
		cfg, err := usernet.Options(e.SlirpArgv)
		if err != nil {
			return nil, "", fmt.Errorf("slirp_open : %w", err)
		}
		n, err := usernet.New(cfg)
		if err != nil {
			return nil, "", fmt.Errorf("slirp_open : %w", err)
		}
		return n, n.Banner(), nil
	}
	return nil, "", fmt.Errorf("the %s transport is not implemented in this version of the engine", e.Transport)
}

// openTap attaches to the existing tap dev (IFF_TAP|IFF_NO_PI), in Go's
// poller: Close then ends a blocked read.
func openTap(dev string) (*tapFrames, error) {
	f, _, err := tuntap.Open("", dev)
	if err != nil {
		return nil, err
	}
	return tapFile(f, dev)
}

// tapFile moves an open tap into Go's poller.
func tapFile(f *os.File, dev string) (*tapFrames, error) {
	fd, err := unix.Dup(int(f.Fd()))
	f.Close()
	if err != nil {
		return nil, err
	}
	unix.CloseOnExec(fd)
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, err
	}
	return &tapFrames{f: os.NewFile(uintptr(fd), "tap:"+dev)}, nil
}

// OpenVec opens vector device v's transport: tap (the existing tap
// ifname=), raw (the host interface ifname=, through an AF_PACKET
// socket in promiscuous mode, which needs CAP_NET_RAW), and hybrid, fd,
// bess, l2tpv3 and gre (vector.go). Frames go one at a time; the vector
// options (depth, gro, headroom, vec) tune the C kernel's batching and
// are accepted.
func OpenVec(v *cmdline.Vec) (Frames, string, error) {
	ifname, _ := v.Get("ifname")
	if (v.Transport == "tap" || v.Transport == "raw") && ifname == "" {
		return nil, "", fmt.Errorf("vector_%s: ifname= names no host interface", v.Transport)
	}
	switch v.Transport {
	case "tap":
		f, err := openTapVnet(ifname)
		if err != nil {
			return nil, "", fmt.Errorf("vector tap: %w", err)
		}
		return f, "vector tap transport on " + ifname, nil
	case "raw":
		f, err := openRaw(ifname)
		if err != nil {
			return nil, "", fmt.Errorf("vector raw: %w", err)
		}
		return f, "vector raw transport on " + ifname, nil
	case "hybrid":
		return openVecHybrid(v)
	case "fd":
		return openVecFD(v)
	case "bess":
		return openVecBESS(v)
	case "l2tpv3":
		return openVecL2TPv3(v)
	case "gre":
		return openVecGRE(v)
	}
	return nil, "", fmt.Errorf("the %s vector transport is not implemented in this version of the engine", v.Transport)
}

// openRaw opens a packet socket on host interface name that receives
// every frame arriving there (not the ones it sends).
func openRaw(name string) (*tapFrames, error) {
	ifi, err := net.InterfaceByName(name)
	if err != nil {
		return nil, fmt.Errorf("no host interface %q", name)
	}
	all := int(htons(unix.ETH_P_ALL))
	s, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, all)
	if err != nil {
		return nil, fmt.Errorf("packet socket: %w", err)
	}
	fail := func(what string, err error) (*tapFrames, error) {
		unix.Close(s)
		return nil, fmt.Errorf("%s on %s: %w", what, name, err)
	}
	if err := unix.Bind(s, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifi.Index}); err != nil {
		return fail("bind", err)
	}
	mr := unix.PacketMreq{Ifindex: int32(ifi.Index), Type: unix.PACKET_MR_PROMISC}
	if err := unix.SetsockoptPacketMreq(s, unix.SOL_PACKET, unix.PACKET_ADD_MEMBERSHIP, &mr); err != nil {
		return fail("promiscuous mode", err)
	}
	// Our own frames would come back as outgoing ones (Linux 4.20).
	unix.SetsockoptInt(s, unix.SOL_PACKET, unix.PACKET_IGNORE_OUTGOING, 1)
	return &tapFrames{f: os.NewFile(uintptr(s), "raw:"+name), trust: true}, nil
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// tapFrames is a host tap opened with IFF_TAP|IFF_NO_PI, or a packet
// socket: each read or write is one frame.
type tapFrames struct {
	f *os.File
	// vnet: each frame has a struct virtio_net_hdr before it (vnet.go);
	// rc is f's, for readv and writev.
	vnet bool
	rc   syscall.RawConn
	// trust: a packet socket sees the host's frames as its stack made
	// them, before checksums are filled in and large sends are cut
	// (GSO): the checksums are not to be checked.
	trust bool
}

// TrustsChecksums reports whether the stack should take the checksums
// of received frames as checked.
func (t *tapFrames) TrustsChecksums() bool { return t.trust }

func (t *tapFrames) ReadFrame(b []byte) (int, error) {
	if t.vnet {
		return t.readVnet(b)
	}
	return t.f.Read(b)
}

func (t *tapFrames) WriteFrame(b []byte) error {
	if t.vnet {
		var hdr [vnetHdrLen]byte
		return t.writev(hdr[:], b)
	}
	_, err := t.f.Write(b)
	return err
}

func (t *tapFrames) Close() error { return t.f.Close() }

// udpFrames carries frames as UDP datagrams: mcast (to and from a group,
// with multicast loopback on, so that machines on one host hear each
// other) and ucast (to one remote address).
type udpFrames struct {
	c    *net.UDPConn
	to   *net.UDPAddr
	self net.HardwareAddr // mcast: our own frames come back, and are dropped
}

func openUDP(e *cmdline.Eth) (*udpFrames, error) {
	ip := net.ParseIP(e.Addr)
	if ip == nil {
		addrs, err := net.LookupIP(e.Addr)
		if err != nil || len(addrs) == 0 {
			return nil, fmt.Errorf("bad address %q: %v", e.Addr, err)
		}
		ip = addrs[0]
	}
	u := &udpFrames{to: &net.UDPAddr{IP: ip, Port: e.RPort}}
	if e.Unicast {
		c, err := net.ListenUDP("udp4", &net.UDPAddr{Port: e.Port})
		if err != nil {
			return nil, err
		}
		u.c = c
		return u, nil
	}
	// Several machines on one host share the group's port: SO_REUSEADDR
	// before the bind, as the C transport does.
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		rc.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
		})
		return serr
	}}
	pc, err := lc.ListenPacket(nil, "udp4", ":"+strconv.Itoa(e.Port))
	if err != nil {
		return nil, err
	}
	c := pc.(*net.UDPConn)
	rc, err := c.SyscallConn()
	if err != nil {
		c.Close()
		return nil, err
	}
	ip4 := ip.To4()
	if ip4 == nil {
		c.Close()
		return nil, fmt.Errorf("%s: not an IPv4 multicast address", e.Addr)
	}
	var serr error
	rc.Control(func(fd uintptr) {
		mreq := &unix.IPMreq{Multiaddr: [4]byte(ip4)}
		if serr = unix.SetsockoptIPMreq(int(fd), unix.IPPROTO_IP, unix.IP_ADD_MEMBERSHIP, mreq); serr != nil {
			serr = fmt.Errorf("IP_ADD_MEMBERSHIP %s: %w", e.Addr, serr)
			return
		}
		if serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_MULTICAST_TTL, e.TTL); serr != nil {
			return
		}
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_MULTICAST_LOOP, 1)
	})
	if serr != nil {
		c.Close()
		return nil, serr
	}
	u.c = c
	return u, nil
}

func (u *udpFrames) ReadFrame(b []byte) (int, error) {
	for {
		n, _, err := u.c.ReadFromUDP(b)
		if err != nil {
			return 0, err
		}
		// Multicast loopback returns our own frames: a NIC never
		// receives what it sent.
		if u.self != nil && n >= 12 && bytes.Equal(b[6:12], u.self) {
			continue
		}
		return n, nil
	}
}

func (u *udpFrames) WriteFrame(b []byte) error {
	_, err := u.c.WriteToUDP(b, u.to)
	return err
}

func (u *udpFrames) Close() error { return u.c.Close() }
