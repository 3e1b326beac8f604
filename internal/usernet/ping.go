package usernet

import (
	"bytes"
	"encoding/binary"
	"net"
	"net/netip"
	"os"
	"time"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
)

// Outbound ICMP echo (IPv4), on the frame level: the router's stack,
// being promiscuous, would answer every echo request itself and make
// any address look alive. A request to an address outside the NAT goes
// to the host through an ICMP socket of the engine's instead, and the
// host's answer comes back as a frame from that address: a datagram
// ("ping") socket, which the host's net.ipv4.ping_group_range must allow
// for the engine's group, else a raw socket, which needs CAP_NET_RAW.
// With neither the request is dropped, and the guest's ping goes
// unanswered. Requests to the router's own addresses are its stack's;
// to other addresses of the NAT's network, unanswered.

// pingWait is how long an echo request waits for its reply.
const pingWait = 5 * time.Second

// echoRequest is an IPv4 ICMP echo request the guest sent.
type echoRequest struct {
	mac      net.HardwareAddr // the guest's
	src, dst netip.Addr
	id, seq  uint16
	data     []byte
}

// parseEcho reads an IPv4 ICMP echo request out of frame f.
func parseEcho(f []byte) (e echoRequest, ok bool) {
	if len(f) < ethLen+ipv4Len+8 || binary.BigEndian.Uint16(f[12:14]) != 0x0800 {
		return e, false
	}
	ip := f[ethLen:]
	ihl := int(ip[0]&0xf) * 4
	total := int(binary.BigEndian.Uint16(ip[2:4]))
	if ip[0]>>4 != 4 || ihl < ipv4Len || ip[9] != 1 || total > len(ip) || total < ihl+8 || binary.BigEndian.Uint16(ip[6:8])&0x3fff != 0 {
		return e, false
	}
	icmp := ip[ihl:total]
	if icmp[0] != 8 || icmp[1] != 0 {
		return e, false
	}
	return echoRequest{
		mac: net.HardwareAddr(bytes.Clone(f[6:12])),
		src: netip.AddrFrom4([4]byte(ip[12:16])), dst: netip.AddrFrom4([4]byte(ip[16:20])),
		id: binary.BigEndian.Uint16(icmp[4:6]), seq: binary.BigEndian.Uint16(icmp[6:8]),
		data: bytes.Clone(icmp[8:]),
	}, true
}

// ping takes frame f when it is an echo request that is not the
// router's to answer, and forwards it when it goes outside the NAT.
func (n *Net) ping(f []byte) bool {
	e, ok := parseEcho(f)
	if !ok || e.dst == n.cfg.Gateway || e.dst == n.cfg.DNS {
		return false
	}
	if dst, ok := n.hostAddr(e.dst, 0); ok {
		n.start(func() { n.echo(e, dst.Addr()) })
	}
	return true
}

// echo sends e's request to dst from the host and passes the reply on.
func (n *Net) echo(e echoRequest, dst netip.Addr) {
	raw := false
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unix.IPPROTO_ICMP)
	if err != nil {
		raw = true
		fd, err = unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unix.IPPROTO_ICMP)
		if err != nil {
			return
		}
	}
	s := os.NewFile(uintptr(fd), "icmp")
	defer s.Close()
	req := make([]byte, 8+len(e.data))
	req[0] = 8
	binary.BigEndian.PutUint16(req[4:6], e.id) // a ping socket puts its own
	binary.BigEndian.PutUint16(req[6:8], e.seq)
	copy(req[8:], e.data)
	binary.BigEndian.PutUint16(req[2:4], ^checksum.Checksum(req, 0))
	rc, err := s.SyscallConn()
	if err != nil {
		return
	}
	var serr error
	rc.Write(func(fd uintptr) bool {
		serr = unix.Sendto(int(fd), req, 0, &unix.SockaddrInet4{Addr: dst.As4()})
		return serr != unix.EAGAIN
	})
	if serr != nil {
		return
	}
	s.SetReadDeadline(time.Now().Add(pingWait))
	buf := make([]byte, 65536)
	for n.ctx.Err() == nil {
		k, err := s.Read(buf)
		if err != nil {
			return
		}
		r := buf[:k]
		if raw {
			// A raw socket sees every ICMP message to the host, with
			// its IP header: only dst's reply to this request counts.
			if k < ipv4Len || netip.AddrFrom4([4]byte(r[12:16])) != dst {
				continue
			}
			r = r[int(r[0]&0xf)*4:]
			if len(r) < 8 || binary.BigEndian.Uint16(r[4:6]) != e.id {
				continue
			}
		}
		if len(r) < 8 || r[0] != 0 || binary.BigEndian.Uint16(r[6:8]) != e.seq {
			continue
		}
		rep := make([]byte, len(r))
		copy(rep, r)
		binary.BigEndian.PutUint16(rep[4:6], e.id)
		rep[2], rep[3] = 0, 0
		binary.BigEndian.PutUint16(rep[2:4], ^checksum.Checksum(rep, 0))
		select {
		case n.extra <- ipv4Frame(e.mac, e.dst, e.src, 1, rep):
		default:
		}
		return
	}
}
