package main

import (
	"fmt"
	"net/netip"
	"strconv"

	"golang.org/x/sys/unix"
)

// maxVersion is the newest uml_net protocol; the 6.1 kernel speaks it.
const maxVersion = 4

// parseVersion reads argv[1]. numeric is false when it is not a number at
// all: the C helper then treats it as the transport of a version-0 call.
// A number must be plain decimal (the kernel prints it with %d).
func parseVersion(s string) (v int, numeric bool, err error) {
	if s == "" || s[0] < '0' || s[0] > '9' {
		return 0, false, nil
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, true, fmt.Errorf("bad version '%s'", s)
		}
	}
	n, err := strconv.ParseUint(s, 10, 31)
	if err != nil {
		return 0, true, fmt.Errorf("bad version '%s'", s)
	}
	return int(n), true, nil
}

// validDev accepts the interface names uml_net acts on: 1 to 15 ASCII
// letters and digits (the C helper's "only alphanumeric" rule, plus the
// kernel's length limit).
func validDev(s string) error {
	if s == "" || len(s) >= unix.IFNAMSIZ {
		return fmt.Errorf("bad device name '%s' (1 to %d letters and digits)", s, unix.IFNAMSIZ-1)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			return fmt.Errorf("Device doesn't contain only alphanumeric characters")
		}
	}
	return nil
}

// parseIPv4 accepts a dotted quad exactly as the kernel prints one
// (no leading zeros, no IPv6, no zone).
func parseIPv4(what, s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	if err != nil || !a.Is4() {
		return netip.Addr{}, fmt.Errorf("bad %s '%s' (want an IPv4 address like 10.0.0.1)", what, s)
	}
	return a, nil
}

// parseHostIPv4 is parseIPv4 restricted to addresses that may name a host:
// not 0.0.0.0/8, loopback, link-local multicast/multicast, or the
// reserved/broadcast block 240.0.0.0/4.
func parseHostIPv4(what, s string) (netip.Addr, error) {
	a, err := parseIPv4(what, s)
	if err != nil {
		return a, err
	}
	b := a.As4()
	if b[0] == 0 || a.IsLoopback() || a.IsMulticast() || b[0] >= 240 {
		return netip.Addr{}, fmt.Errorf("refusing %s %s: not a unicast host address", what, a)
	}
	return a, nil
}

// parseNetmask accepts a contiguous IPv4 netmask and returns its length.
func parseNetmask(s string) (int, error) {
	a, err := parseIPv4("netmask", s)
	if err != nil {
		return 0, err
	}
	b := a.As4()
	m := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	ones := 0
	for m&0x80000000 != 0 {
		ones++
		m <<= 1
	}
	if m != 0 {
		return 0, fmt.Errorf("bad netmask '%s' (not contiguous)", s)
	}
	return ones, nil
}

// parseFD accepts a decimal descriptor number above 2.
func parseFD(s string) (int, error) {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, fmt.Errorf("bad file descriptor '%s'", s)
		}
	}
	n, err := strconv.ParseUint(s, 10, 20)
	if err != nil || n <= 2 {
		return 0, fmt.Errorf("bad file descriptor '%s'", s)
	}
	return int(n), nil
}

// fdKind describes an open descriptor: ok reports it is open, sock whether
// it is an AF_UNIX socket of type sockType, pipe whether it is a FIFO,
// tty whether it is a terminal.
type fdKind struct {
	ok, pipe, tty bool
	unixType      int // SOCK_STREAM, SOCK_DGRAM, ...; 0 when not AF_UNIX
}

func inspectFD(fd int) fdKind {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fdKind{}
	}
	k := fdKind{ok: true}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFIFO:
		k.pipe = true
	case unix.S_IFSOCK:
		dom, err1 := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DOMAIN)
		typ, err2 := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
		if err1 == nil && err2 == nil && dom == unix.AF_UNIX {
			k.unixType = typ
		}
	case unix.S_IFCHR:
		if _, err := unix.IoctlGetTermios(fd, unix.TCGETS); err == nil {
			k.tty = true
		}
	}
	return k
}

// needReplyFD checks that fd 1 is what the kernel hands uml_net: an
// AF_UNIX socket of type want (0: any AF_UNIX socket) or, when pipeOK, a
// pipe.
func needReplyFD(fd, want int, pipeOK bool) error {
	what := fmt.Sprintf("descriptor %d", fd)
	if fd < 0 {
		what = "standard output"
	}
	k := inspectFD(fd)
	if fd >= 0 && !k.ok {
		return fmt.Errorf("%s is not open", what)
	}
	if k.pipe && pipeOK || k.unixType != 0 && (want == 0 || k.unixType == want) {
		return nil
	}
	kind := "a Unix stream socket"
	switch {
	case want == unix.SOCK_DGRAM:
		kind = "a Unix datagram socket"
	case pipeOK:
		kind = "a Unix socket or a pipe"
	}
	return fmt.Errorf("%s is not %s (uml_net is run by the UML kernel, not by hand)", what, kind)
}
