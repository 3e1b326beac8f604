package netdev

// The vector transports other than tap and raw, as the 6.1 C kernel's
// vector driver (arch/um/drivers/vector_*.c) has them:
//
//   - fd: frames over a descriptor the engine inherited, one per read or
//     write (a datagram or seqpacket socket, as the C kernel expects;
//     a tap works too);
//   - bess: an AF_UNIX SOCK_SEQPACKET socket bound to src= (if given) and
//     connected to dst=, one frame per message;
//   - l2tpv3: each frame after an L2TPv3 header, over UDP (udp=1) or
//     straight over IP (protocol 115, a raw socket: CAP_NET_RAW);
//   - gre: each frame after a GRE header of protocol 0x6558 (transparent
//     Ethernet bridging), over IP protocol 47 (a raw socket);
//   - hybrid: frames go out through the tap ifname= and come in through
//     a packet socket on the same interface.
//
// The headers are the C kernel's to the byte: every field is in network
// byte order, and a received packet goes through the C kernel's checks
// (see l2tpv3Header.strip and greHeader.strip). Where the C kernel reads
// an option with kstrtoint (base 0, a signed int) or strtol (base 10), so
// do we, quirks included: a key or session number above 0x7fffffff is
// not a number to kstrtoint and counts as absent, as it does there.

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/umltools/umltools/internal/cmdline"
)

// IP protocol numbers of the encapsulations.
const (
	ipProtoGRE    = 47
	ipProtoL2TPv3 = 115
)

// greTEB is GRE's protocol type for a whole Ethernet frame (transparent
// Ethernet bridging).
const greTEB = 0x6558

// GRE flag bits, in the first 16-bit word.
const (
	greFlagKey      = 0x2000
	greFlagSequence = 0x1000
)

// l2tpv3DataWord is the first word of an L2TPv3 data message over UDP:
// T=0, version 3, reserved 0.
const l2tpv3DataWord = 0x00030000

// ipv4MinHeader is an IPv4 header without options: a raw IPv4 socket
// hands over each packet with its IP header (an IPv6 one does not).
const ipv4MinHeader = 20

// Receive-side errors: a packet the C kernel would drop (and count as an
// rx_encaps_error).
var (
	errShortPacket  = errors.New("packet too short for its encapsulation")
	errNotIPv4      = errors.New("not an IPv4 packet")
	errL2TPSession  = errors.New("uml_l2tpv3: session mismatch")
	errL2TPCookie   = errors.New("uml_l2tpv3: unknown cookie id")
	errGREHeader    = errors.New("header type disagreement")
	errGREKey       = errors.New("unknown key id")
	errTransportEOF = errors.New("the other end closed the connection")
)

// encapHeader is a header that goes before each frame on the wire.
type encapHeader interface {
	// size is the length of the header the sender puts before a frame.
	size() int
	// put writes the next frame's header into b[:size()] (it moves the
	// sequence counter on, if there is one).
	put(b []byte)
	// strip checks a received packet p as the C kernel does and returns
	// the offset of the frame in it.
	strip(p []byte) (int, error)
}

// nextCount is a header's next counter or sequence number: 1, 2, … (0
// each time when pinned).
func nextCount(c *uint32, pinned bool) uint32 {
	if pinned {
		return 0
	}
	*c++
	return *c
}

// headerAt returns where the encapsulation header of size n starts in
// received packet p (after the IPv4 header a raw IPv4 socket leaves on)
// and where the frame after it does; a packet that is not longer than
// that carries no frame.
func headerAt(p []byte, n int, ipv4 bool) (hdr []byte, off int, err error) {
	if len(p) <= n {
		return nil, 0, errShortPacket
	}
	base := 0
	if ipv4 {
		if base, err = skipIPv4(p); err != nil {
			return nil, 0, err
		}
	}
	if off = base + n; len(p) <= off {
		return nil, 0, errShortPacket
	}
	return p[base:], off, nil
}

// skipIPv4 returns the length of the IPv4 header p starts with. (The C
// kernel takes it as 20 bytes; a header with options is then misread
// there, while here its frame is found.)
func skipIPv4(p []byte) (int, error) {
	if len(p) < ipv4MinHeader {
		return 0, errShortPacket
	}
	if p[0]>>4 != 4 {
		return 0, errNotIPv4
	}
	n := int(p[0]&0x0f) * 4
	if n < ipv4MinHeader {
		return 0, errNotIPv4
	}
	if n > len(p) {
		return 0, errShortPacket
	}
	return n, nil
}

// l2tpv3Header is an L2TPv3 data header (RFC 3931): over UDP, the data
// word 0x00030000 first; then the 32-bit session id, the cookie (none, 32
// or 64 bits) and the optional 32-bit counter, whose first value is 1 and
// which stays 0 when pinned. The receiver checks the cookie, then the
// session; it neither checks the data word nor the counter.
type l2tpv3Header struct {
	udp bool // the data word is there (udp=)
	// ipv4: received packets start with their IPv4 header (a raw IPv4
	// socket: not udp=, not v6=).
	ipv4                 bool
	rxSession, txSession uint32
	cookieLen            int // 0, 4 or 8
	rxCookie, txCookie   uint64
	counter, pinCounter  bool
	count                uint32 // the last counter sent
}

func (h *l2tpv3Header) sessionOff() int {
	if h.udp {
		return 4
	}
	return 0
}

func (h *l2tpv3Header) size() int {
	n := h.sessionOff() + 4 + h.cookieLen
	if h.counter {
		n += 4
	}
	return n
}

func (h *l2tpv3Header) put(b []byte) {
	if h.udp {
		binary.BigEndian.PutUint32(b, l2tpv3DataWord)
	}
	o := h.sessionOff()
	binary.BigEndian.PutUint32(b[o:], h.txSession)
	o += 4
	switch h.cookieLen {
	case 4:
		binary.BigEndian.PutUint32(b[o:], uint32(h.txCookie))
	case 8:
		binary.BigEndian.PutUint64(b[o:], h.txCookie)
	}
	o += h.cookieLen
	if h.counter {
		binary.BigEndian.PutUint32(b[o:], nextCount(&h.count, h.pinCounter))
	}
}

func (h *l2tpv3Header) strip(p []byte) (int, error) {
	// The C kernel reads the header only once the packet is longer than
	// what it sends before a frame; the frame then starts after what it
	// receives before one (the IPv4 header too).
	hdr, off, err := headerAt(p, h.size(), h.ipv4)
	if err != nil {
		return 0, err
	}
	o := h.sessionOff() + 4
	switch h.cookieLen {
	case 4:
		if got := binary.BigEndian.Uint32(hdr[o:]); uint64(got) != h.rxCookie&math.MaxUint32 {
			return 0, fmt.Errorf("%w %#x, expecting %#x", errL2TPCookie, got, uint32(h.rxCookie))
		}
	case 8:
		if got := binary.BigEndian.Uint64(hdr[o:]); got != h.rxCookie {
			return 0, fmt.Errorf("%w %#x, expecting %#x", errL2TPCookie, got, h.rxCookie)
		}
	}
	if got := binary.BigEndian.Uint32(hdr[h.sessionOff():]); got != h.rxSession {
		return 0, fmt.Errorf("%w: %#x, expecting %#x", errL2TPSession, got, h.rxSession)
	}
	return off, nil
}

// greHeader is a GRE header (RFC 2890) for protocol 0x6558: the flags
// (key and sequence bits only) and the protocol, the 32-bit key if keyed,
// the 32-bit sequence number if sequenced (first 1, or always 0 when
// pinned). The receiver wants the first word (flags, version, protocol)
// to be exactly its own, then the key (if keyed); it does not check the
// sequence.
type greHeader struct {
	ipv4                  bool // received packets start with their IPv4 header (not v6=)
	key                   bool
	rxKey, txKey          uint32
	sequence, pinSequence bool
	seq                   uint32
}

func (h *greHeader) word() uint32 {
	var flags uint32
	if h.key {
		flags |= greFlagKey
	}
	if h.sequence {
		flags |= greFlagSequence
	}
	return flags<<16 | greTEB
}

func (h *greHeader) size() int {
	n := 4
	if h.key {
		n += 4
	}
	if h.sequence {
		n += 4
	}
	return n
}

func (h *greHeader) put(b []byte) {
	binary.BigEndian.PutUint32(b, h.word())
	o := 4
	if h.key {
		binary.BigEndian.PutUint32(b[o:], h.txKey)
		o += 4
	}
	if h.sequence {
		binary.BigEndian.PutUint32(b[o:], nextCount(&h.seq, h.pinSequence))
	}
}

func (h *greHeader) strip(p []byte) (int, error) {
	hdr, off, err := headerAt(p, h.size(), h.ipv4)
	if err != nil {
		return 0, err
	}
	if got := binary.BigEndian.Uint32(hdr); got != h.word() {
		return 0, fmt.Errorf("%w, expecting %x, got %x", errGREHeader, h.word(), got)
	}
	if h.key {
		if got := binary.BigEndian.Uint32(hdr[4:]); got != h.rxKey {
			return 0, fmt.Errorf("%w %x, expecting %x", errGREKey, got, h.rxKey)
		}
	}
	return off, nil
}

// vecInt is the C kernel's get_uint_param: the option read by kstrtoint;
// false when absent or not a number to kstrtoint.
func vecInt(v *cmdline.Vec, key string) (uint32, bool) {
	s, ok := v.Get(key)
	if !ok {
		return 0, false
	}
	n, ok := cmdline.Kstrtoint(s)
	return uint32(n), ok
}

// vecOn is an option the C kernel turns on with a value above 0.
func vecOn(v *cmdline.Vec, key string) bool {
	n, ok := vecInt(v, key)
	return ok && int32(n) > 0
}

// vecStrtolOn is an option the C kernel's socket code turns on with
// strtol(value, NULL, 10) > 0.
func vecStrtolOn(v *cmdline.Vec, key string) bool {
	s, ok := v.Get(key)
	return ok && cmdline.Strtol10(s) > 0
}

// parseL2TPv3 reads the header options as the C kernel's transport setup
// does. Its errors are the setups the C kernel refuses (with EINVAL and
// no message; here with one).
func parseL2TPv3(v *cmdline.Vec) (*l2tpv3Header, error) {
	h := &l2tpv3Header{}
	v6 := vecOn(v, "v6")
	rx, rxOK := vecInt(v, "rx_session")
	tx, txOK := vecInt(v, "tx_session")
	if !rxOK || !txOK {
		return nil, errors.New("rx_session= and tx_session= are both needed (numbers up to 0x7fffffff)")
	}
	h.rxSession, h.txSession = rx, tx
	cookie64 := vecOn(v, "cookie64")
	if rs, ok := v.Get("rx_cookie"); ok {
		ts, ok := v.Get("tx_cookie")
		if !ok {
			return nil, errors.New("rx_cookie= needs a tx_cookie=")
		}
		// kstrtoul; the C kernel takes even a value it cannot read.
		rc, _ := cmdline.Kstrtoull(rs)
		tc, _ := cmdline.Kstrtoull(ts)
		h.rxCookie, h.txCookie, h.cookieLen = rc, tc, 8
		if !cookie64 {
			h.rxCookie, h.txCookie, h.cookieLen = rc&math.MaxUint32, tc&math.MaxUint32, 4
		}
	}
	if vecOn(v, "counter") {
		h.counter = true
		h.pinCounter = vecOn(v, "pin_counter")
	}
	h.udp = vecOn(v, "udp")
	h.ipv4 = !h.udp && !v6
	return h, nil
}

// parseGRE reads the GRE options as the C kernel's transport setup does.
func parseGRE(v *cmdline.Vec) (*greHeader, error) {
	h := &greHeader{ipv4: !vecOn(v, "v6")}
	if rx, ok := vecInt(v, "rx_key"); ok {
		tx, ok := vecInt(v, "tx_key")
		if !ok {
			return nil, errors.New("rx_key= needs a tx_key= (numbers up to 0x7fffffff)")
		}
		h.key, h.rxKey, h.txKey = true, rx, tx
	}
	if vecOn(v, "sequence") {
		h.sequence = true
		h.pinSequence = vecOn(v, "pin_sequence")
	}
	return h, nil
}

// sockFrames carries frames over one socket (or inherited descriptor),
// in Go's poller, each after an encapsulation header or bare.
type sockFrames struct {
	f    *os.File
	rc   syscall.RawConn
	to   unix.Sockaddr // where frames go; nil: a connected descriptor
	hdr  encapHeader   // nil: bare frames
	hbuf []byte
	// eof: a read of nothing means the other end is gone (a stream or
	// seqpacket socket, a pipe); a datagram socket can read an empty
	// datagram.
	eof bool
	// sock: the descriptor is a socket (a write to one whose other end
	// is gone fails with EPIPE, without a SIGPIPE).
	sock bool

	wmu       sync.Mutex // the header's counter, hbuf
	closeOnce sync.Once
	closed    chan struct{}

	// encapErrors counts received packets dropped by the header checks
	// (the C kernel's rx_encaps_errors).
	encapErrors atomic.Uint64
	lastErr     atomic.Value // error: the last one of those
}

// newSockFrames moves descriptor fd into Go's poller; the returned
// transport owns it.
func newSockFrames(fd int, name string) (*sockFrames, error) {
	unix.CloseOnExec(fd)
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, err
	}
	f := os.NewFile(uintptr(fd), name)
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, err
	}
	return &sockFrames{f: f, rc: rc, closed: make(chan struct{})}, nil
}

func (s *sockFrames) ReadFrame(b []byte) (int, error) {
	for {
		var n int
		var err error
		if rerr := s.rc.Read(func(fd uintptr) bool {
			n, err = unix.Read(int(fd), b)
			return err != unix.EAGAIN
		}); rerr != nil {
			return 0, rerr
		}
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return 0, &os.PathError{Op: "read", Path: s.f.Name(), Err: err}
		}
		if n == 0 && s.eof {
			// Nothing more will come: wait for Close rather than
			// have the reader spin.
			<-s.closed
			return 0, &os.PathError{Op: "read", Path: s.f.Name(), Err: errTransportEOF}
		}
		if s.hdr == nil {
			return n, nil
		}
		off, err := s.hdr.strip(b[:n])
		if err != nil {
			s.encapErrors.Add(1)
			s.lastErr.Store(err)
			continue
		}
		return copy(b, b[off:n]), nil
	}
}

func (s *sockFrames) WriteFrame(b []byte) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	bufs := [][]byte{b}
	if s.hdr != nil {
		h := s.hbuf[:s.hdr.size()]
		s.hdr.put(h)
		bufs = [][]byte{h, b}
	}
	var err error
	if werr := s.rc.Write(func(fd uintptr) bool {
		for {
			switch {
			case s.to != nil || s.sock:
				_, err = unix.SendmsgBuffers(int(fd), bufs, nil, s.to, unix.MSG_NOSIGNAL)
			case len(bufs) == 1:
				_, err = unix.Write(int(fd), b)
			default:
				_, err = unix.Writev(int(fd), bufs)
			}
			if err != unix.EINTR {
				return err != unix.EAGAIN
			}
		}
	}); werr != nil {
		return werr
	}
	if err != nil {
		return &os.PathError{Op: "write", Path: s.f.Name(), Err: err}
	}
	return nil
}

func (s *sockFrames) Close() error {
	err := os.ErrClosed
	s.closeOnce.Do(func() {
		close(s.closed)
		err = s.f.Close()
	})
	return err
}

// sockType returns fd's SO_TYPE, or 0 when fd is no socket.
func sockType(fd int) int {
	t, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	if err != nil {
		return 0
	}
	return t
}

// openVecFD is the fd transport: fd=N, a descriptor the engine
// inherited (the C kernel reads it with strtol, base 10).
func openVecFD(v *cmdline.Vec) (Frames, string, error) {
	arg, ok := v.Get("fd")
	n, err := strconv.ParseInt(strings.TrimLeft(arg, " \t\n\v\f\r+"), 10, 64)
	if !ok || err != nil || n < 0 || n > math.MaxInt32 {
		return nil, "", errors.New("vector fd: fd open: bad or missing fd argument (fd=N, a descriptor the engine inherited)")
	}
	fd := int(n)
	flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
	if err != nil {
		return nil, "", fmt.Errorf("vector fd: fd open: descriptor %d is not open: %w", fd, err)
	}
	// What the engine inherited came through exec, so without
	// close-on-exec; the engine opens its own descriptors (its image
	// files, its other devices' sockets, the poller) with it, and they
	// are not a device's to take. (A device that took one sets it too,
	// so no second device takes the same descriptor.)
	if flags&unix.FD_CLOEXEC != 0 {
		return nil, "", fmt.Errorf("vector fd: fd open: descriptor %d is the engine's own or another device's, not one it inherited", fd)
	}
	typ := sockType(fd)
	s, err := newSockFrames(fd, "fd:"+strconv.Itoa(fd))
	if err != nil {
		return nil, "", fmt.Errorf("vector fd: fd %d: %w", fd, err)
	}
	s.eof = typ != unix.SOCK_DGRAM && typ != unix.SOCK_RAW
	s.sock = typ != 0
	what := "descriptor"
	switch typ {
	case unix.SOCK_DGRAM:
		what = "datagram socket"
	case unix.SOCK_SEQPACKET:
		what = "seqpacket socket"
	case unix.SOCK_STREAM:
		what = "stream socket"
	case unix.SOCK_RAW:
		what = "raw socket"
	}
	return s, fmt.Sprintf("vector fd transport on fd %d (%s)", fd, what), nil
}

// maxUnixPath is the longest socket path the C kernel's bess transport
// takes (sun_path less its NUL).
const maxUnixPath = 107

// openVecBESS is the bess transport: a seqpacket socket bound to src (if
// given) and connected to dst.
func openVecBESS(v *cmdline.Vec) (Frames, string, error) {
	src, hasSrc := v.Get("src")
	dst, _ := v.Get("dst")
	if dst == "" {
		return nil, "", errors.New("vector bess: dst= names no socket to connect to")
	}
	if len(dst) > maxUnixPath {
		return nil, "", fmt.Errorf("vector bess: dst=%s: longer than %d bytes", dst, maxUnixPath)
	}
	if len(src) > maxUnixPath {
		// The C kernel then leaves the socket unbound.
		hasSrc = false
	}
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, "", fmt.Errorf("vector bess: unix open: could not open socket: %w", err)
	}
	if hasSrc && src != "" {
		if err := unix.Bind(fd, &unix.SockaddrUnix{Name: src}); err != nil {
			unix.Close(fd)
			return nil, "", fmt.Errorf("vector bess: unix_open : could not bind socket to %s: %w", src, err)
		}
	}
	if err := unix.Connect(fd, &unix.SockaddrUnix{Name: dst}); err != nil {
		unix.Close(fd)
		return nil, "", fmt.Errorf("vector bess: bess open:cannot connect to %s: %w", dst, err)
	}
	s, err := newSockFrames(fd, "bess:"+dst)
	if err != nil {
		return nil, "", fmt.Errorf("vector bess: %w", err)
	}
	s.eof, s.sock = true, true
	banner := "vector bess transport to " + dst
	if hasSrc && src != "" {
		banner += " from " + src
	}
	return s, banner, nil
}

// resolveEndpoint is the C kernel's getaddrinfo of host and port for a
// socket of family v6 and kind udp (else raw): a missing host is the
// loopback address, a port on a raw socket is refused.
func resolveEndpoint(host string, hasHost bool, port string, hasPort, v6, udp bool) (net.IP, int, error) {
	if !hasHost && !hasPort {
		return nil, 0, errors.New("Name or service not known")
	}
	p := 0
	if hasPort {
		if !udp {
			return nil, 0, errors.New("Servname not supported for ai_socktype (no port on an IP-level transport)")
		}
		n, err := strconv.ParseUint(port, 10, 64)
		if err != nil {
			return nil, 0, fmt.Errorf("bad port %q", port)
		}
		p = int(n & 0xffff) // as getaddrinfo keeps it
	}
	if !hasHost {
		if v6 {
			return net.IPv6loopback, p, nil
		}
		return net.IPv4(127, 0, 0, 1).To4(), p, nil
	}
	if ip := net.ParseIP(host); ip != nil {
		if v6 == (ip.To4() == nil) {
			if !v6 {
				ip = ip.To4()
			}
			return ip, p, nil
		}
		return nil, 0, errors.New("Address family for hostname not supported")
	}
	network := "ip4"
	if v6 {
		network = "ip6"
	}
	ips, err := net.DefaultResolver.LookupIP(context.Background(), network, host)
	if err != nil || len(ips) == 0 {
		return nil, 0, errors.New("Name or service not known")
	}
	ip := ips[0]
	if !v6 {
		ip = ip.To4()
	}
	return ip, p, nil
}

func sockaddr(ip net.IP, port int, v6 bool) unix.Sockaddr {
	if v6 {
		a := &unix.SockaddrInet6{Port: port}
		copy(a.Addr[:], ip.To16())
		return a
	}
	a := &unix.SockaddrInet4{Port: port}
	copy(a.Addr[:], ip.To4())
	return a
}

func hostPort(ip net.IP, port int, udp bool) string {
	if udp {
		return net.JoinHostPort(ip.String(), strconv.Itoa(port))
	}
	return ip.String()
}

// rcvbuf is the receive buffer the IP-level transports ask for. The C
// kernel drains its socket 64 packets a read (recvmmsg) and keeps the
// host's default; we read one at a time, and a burst from the other end
// (a TCP window on a fast path, such as the loopback) would overflow the
// default buffer of about 200 KiB and cost retransmissions.
const rcvbuf = 4 << 20

// growRcvbuf gives socket fd a receive buffer of rcvbuf bytes: past the
// host's limit (net.core.rmem_max) when privileged, else up to it.
func growRcvbuf(fd int) {
	if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, rcvbuf) != nil {
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, rcvbuf)
	}
}

// openIPSocket is the C kernel's user_init_socket_fds: a UDP socket
// (udp) or a raw IP socket of protocol proto, bound to src[:srcport],
// whose frames go to dst[:dstport].
func openIPSocket(v *cmdline.Vec, name string, proto int, udp bool) (*sockFrames, string, error) {
	v6 := vecStrtolOn(v, "v6")
	src, hasSrc := v.Get("src")
	dst, hasDst := v.Get("dst")
	sport, hasSport := v.Get("srcport")
	dport, hasDport := v.Get("dstport")
	sip, sp, err := resolveEndpoint(src, hasSrc, sport, hasSport, v6, udp)
	if err != nil {
		return nil, "", fmt.Errorf("vector %s: socket_open : could not resolve src, error = %v", name, err)
	}
	dip, dp, err := resolveEndpoint(dst, hasDst, dport, hasDport, v6, udp)
	if err != nil {
		return nil, "", fmt.Errorf("vector %s: socket_open : could not resolve dst, error = %v", name, err)
	}
	family := unix.AF_INET
	if v6 {
		family = unix.AF_INET6
	}
	typ, p := unix.SOCK_RAW, proto
	if udp {
		typ, p = unix.SOCK_DGRAM, 0
	}
	fd, err := unix.Socket(family, typ|unix.SOCK_CLOEXEC, p)
	if err != nil {
		return nil, "", fmt.Errorf("vector %s: socket_open : could not open socket: %w", name, err)
	}
	growRcvbuf(fd)
	if err := unix.Bind(fd, sockaddr(sip, sp, v6)); err != nil {
		unix.Close(fd)
		return nil, "", fmt.Errorf("vector %s: %s_open : could not bind socket to %s: %w", name, name, hostPort(sip, sp, udp), err)
	}
	s, err := newSockFrames(fd, name+":"+hostPort(sip, sp, udp))
	if err != nil {
		return nil, "", fmt.Errorf("vector %s: %w", name, err)
	}
	s.to = sockaddr(dip, dp, v6)
	over := "IPv4"
	if v6 {
		over = "IPv6"
	}
	if udp {
		over = "UDP/" + over
	} else {
		over += fmt.Sprintf(" (protocol %d)", proto)
	}
	return s, fmt.Sprintf("over %s from %s to %s", over, hostPort(sip, sp, udp), hostPort(dip, dp, udp)), nil
}

// openVecL2TPv3 is the l2tpv3 transport.
func openVecL2TPv3(v *cmdline.Vec) (Frames, string, error) {
	h, err := parseL2TPv3(v)
	if err != nil {
		return nil, "", fmt.Errorf("vector l2tpv3: %w", err)
	}
	s, where, err := openIPSocket(v, "l2tpv3", ipProtoL2TPv3, vecStrtolOn(v, "udp"))
	if err != nil {
		return nil, "", err
	}
	s.hdr, s.hbuf = h, make([]byte, h.size())
	banner := fmt.Sprintf("vector l2tpv3 transport %s, session %d/%d (rx/tx)", where, h.rxSession, h.txSession)
	if h.cookieLen > 0 {
		banner += fmt.Sprintf(", %d-bit cookie", h.cookieLen*8)
	}
	if h.counter {
		banner += ", counter"
		if h.pinCounter {
			banner += " (pinned)"
		}
	}
	return s, banner, nil
}

// openVecGRE is the gre transport.
func openVecGRE(v *cmdline.Vec) (Frames, string, error) {
	h, err := parseGRE(v)
	if err != nil {
		return nil, "", fmt.Errorf("vector gre: %w", err)
	}
	s, where, err := openIPSocket(v, "gre", ipProtoGRE, false)
	if err != nil {
		return nil, "", err
	}
	s.hdr, s.hbuf = h, make([]byte, h.size())
	banner := "vector gre transport " + where
	if h.key {
		banner += fmt.Sprintf(", key %d/%d (rx/tx)", h.rxKey, h.txKey)
	}
	if h.sequence {
		banner += ", sequence"
		if h.pinSequence {
			banner += " (pinned)"
		}
	}
	return s, banner, nil
}

// hybridFrames sends through a tap and receives through a packet socket
// on it: the frames the host sends to the tap (the socket also sees the
// ones written into the tap, which come back in as the host's input and
// are left out, as the C kernel's filter on its own address does).
type hybridFrames struct {
	tx *tapFrames
	rx *os.File
	rc syscall.RawConn
}

// openVecHybrid is the hybrid transport on the tap ifname= (which it
// creates, as TUNSETIFF does, when it does not exist).
func openVecHybrid(v *cmdline.Vec) (Frames, string, error) {
	ifname, _ := v.Get("ifname")
	if ifname == "" {
		return nil, "", errors.New("vector hybrid: uml_tap: failed to parse interface spec (ifname= names no tap)")
	}
	tx, err := openTapVnet(ifname)
	if err != nil {
		return nil, "", fmt.Errorf("vector hybrid: uml_tap: failed to create tun interface: %w", err)
	}
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		tx.Close()
		return nil, "", fmt.Errorf("vector hybrid: uml_tap: failed to create paired raw socket: no host interface %q", ifname)
	}
	all := htons(unix.ETH_P_ALL)
	s, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, int(all))
	if err != nil {
		tx.Close()
		return nil, "", fmt.Errorf("vector hybrid: uml_tap: failed to create paired raw socket: %w", err)
	}
	if err := unix.Bind(s, &unix.SockaddrLinklayer{Protocol: all, Ifindex: ifi.Index}); err != nil {
		unix.Close(s)
		tx.Close()
		return nil, "", fmt.Errorf("vector hybrid: uml_tap: failed to create paired raw socket: bind on %s: %w", ifname, err)
	}
	rx := os.NewFile(uintptr(s), "hybrid:"+ifname)
	rc, err := rx.SyscallConn()
	if err != nil {
		rx.Close()
		tx.Close()
		return nil, "", fmt.Errorf("vector hybrid: %w", err)
	}
	return &hybridFrames{tx: tx, rx: rx, rc: rc}, "vector hybrid transport on " + ifname + " (tap out, packet socket in)", nil
}

func (h *hybridFrames) ReadFrame(b []byte) (int, error) {
	for {
		var n int
		var from unix.Sockaddr
		var err error
		if rerr := h.rc.Read(func(fd uintptr) bool {
			n, from, err = unix.Recvfrom(int(fd), b, 0)
			return err != unix.EAGAIN
		}); rerr != nil {
			return 0, rerr
		}
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return 0, &os.PathError{Op: "read", Path: h.rx.Name(), Err: err}
		}
		if ll, ok := from.(*unix.SockaddrLinklayer); ok && ll.Pkttype != unix.PACKET_OUTGOING {
			continue // one of ours, written into the tap
		}
		return n, nil
	}
}

func (h *hybridFrames) WriteFrame(b []byte) error { return h.tx.WriteFrame(b) }

// GSO and WriteGSO: the tap takes large segments, as for vector tap.
func (h *hybridFrames) GSO() bool { return h.tx.GSO() }

func (h *hybridFrames) WriteGSO(frame []byte, gso stack.GSO, hdrLen, dataLen int) error {
	return h.tx.WriteGSO(frame, gso, hdrLen, dataLen)
}

// TrustsChecksums: the packet socket sees the host's frames before their
// checksums are filled in, as for raw.
func (h *hybridFrames) TrustsChecksums() bool { return true }

func (h *hybridFrames) Close() error {
	err := h.rx.Close()
	if terr := h.tx.Close(); err == nil {
		err = terr
	}
	return err
}
