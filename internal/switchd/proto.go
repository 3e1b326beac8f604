// Package switchd is a virtual Ethernet switch speaking the uml_switch
// daemon protocol, and the client side of that protocol (what a UML
// kernel's eth<N>=daemon transport does).
//
// Protocol (all integers host byte order): a client connects to the
// switch's SOCK_STREAM control socket and writes one request naming its
// own SOCK_DGRAM data socket; for protocol versions 1 and 3 the switch
// answers with the 110-byte sockaddr_un of its data socket. Frames are
// then exchanged as raw Ethernet datagrams between the two data sockets.
// The control stream stays open for the port's lifetime.
package switchd

import (
	"encoding/binary"
	"fmt"
)

// Protocol constants.
const (
	// Magic starts every request of protocol version 1 and later.
	Magic = 0xFEEDFACE
	// ReqNewControl is the only request type: register a port.
	ReqNewControl = 0
	// AddrLen is sizeof(struct sockaddr_un): every address on the wire
	// and every bind/sendto uses this length.
	AddrLen = 110
	// MaxFrame is the largest frame forwarded (Ethernet without FCS).
	MaxFrame = 1514
	// ReqV3Len is the size of the request a 6.1 kernel sends.
	ReqV3Len = 124
	// ReqMax is how much the switch reads for one request (the size of
	// the largest request layout).
	ReqMax = 124

	reqV0Len = 4 + 6 + AddrLen     // type, mac, sockaddr
	reqV1Len = 4 + 4 + 6 + AddrLen // magic, type, mac, sockaddr
	reqV3Min = 4 + 4 + 4 + AddrLen // magic, version, type, sockaddr
)

// Addr is a sockaddr_un as raw bytes: family (u16, 1) then sun_path[108].
// The switch treats client addresses as opaque keys: the UML kernel
// leaves most of its abstract name uninitialised.
type Addr [AddrLen]byte

// PathAddr returns the sockaddr_un for a filesystem path.
func PathAddr(path string) (Addr, error) {
	var a Addr
	if len(path) >= AddrLen-2 {
		return a, fmt.Errorf("socket path %q: longer than %d bytes", path, AddrLen-3)
	}
	binary.LittleEndian.PutUint16(a[:], 1)
	copy(a[2:], path)
	return a, nil
}

// Family returns the address family field.
func (a *Addr) Family() uint16 { return binary.LittleEndian.Uint16(a[:]) }

// Abstract reports whether a names a socket in the abstract namespace.
func (a *Addr) Abstract() bool { return a[2] == 0 }

// String shows a path address as its path and an abstract one as
// "@" plus the hex of its first 12 name bytes.
func (a *Addr) String() string {
	if a.Abstract() {
		return fmt.Sprintf("@%x", a[3:14])
	}
	n := 2
	for n < AddrLen && a[n] != 0 {
		n++
	}
	return string(a[2:n])
}

// Request is a parsed control request.
type Request struct {
	Version int    // 0, 1 or 3
	Type    uint32 // ReqNewControl
	MAC     [6]byte
	Addr    Addr // the client's data socket
}

// RequestError is a request the switch refuses. Msg is the line the
// switch logs (the C switch's wording where it has one).
type RequestError struct{ Msg string }

func (e *RequestError) Error() string { return e.Msg }

func reqErr(format string, a ...any) error { return &RequestError{fmt.Sprintf(format, a...)} }

// ParseRequest decodes one control request. v0 requests (no magic) are
// accepted only when compatV0 is set. It never panics on any input.
func ParseRequest(b []byte, compatV0 bool) (Request, error) {
	var r Request
	if len(b) < 4 {
		return r, reqErr("Short request : %d bytes", len(b))
	}
	le := binary.LittleEndian
	if le.Uint32(b) != Magic {
		if !compatV0 {
			return r, reqErr("Bad request magic : 0x%08x (version 0 needs -compat-v0)", le.Uint32(b))
		}
		if len(b) < reqV0Len {
			return r, reqErr("Short version 0 request : %d bytes", len(b))
		}
		r.Type = le.Uint32(b)
		copy(r.MAC[:], b[4:10])
		copy(r.Addr[:], b[10:10+AddrLen])
	} else {
		if len(b) < 8 {
			return r, reqErr("Short request : %d bytes", len(b))
		}
		// In v1 the word after the magic is the type (0); v2 and later
		// put the version there.
		switch v := le.Uint32(b[4:]); {
		case v <= 1:
			if len(b) < reqV1Len {
				return r, reqErr("Short version 1 request : %d bytes", len(b))
			}
			r.Version = 1
			r.Type = v
			copy(r.MAC[:], b[8:14])
			copy(r.Addr[:], b[14:14+AddrLen])
		case v == 2:
			return r, reqErr("Version 2 is not supported")
		case v == 3:
			if len(b) < reqV3Min {
				return r, reqErr("Short version 3 request : %d bytes", len(b))
			}
			r.Version = 3
			r.Type = le.Uint32(b[8:])
			copy(r.Addr[:], b[12:12+AddrLen])
		default:
			return r, reqErr("Request for a version %d port, which this uml_switch doesn't support", int32(v))
		}
	}
	if r.Type != ReqNewControl {
		return r, reqErr("Bad request type : %d", int32(r.Type))
	}
	if r.Addr.Family() != 1 {
		return r, reqErr("Bad request : address family %d is not AF_UNIX", r.Addr.Family())
	}
	return r, nil
}

// AppendV3 appends the 124-byte version 3 request for a client whose data
// socket is addr (what the 6.1 kernel sends).
func AppendV3(dst []byte, addr *Addr) []byte {
	var b [ReqV3Len]byte
	le := binary.LittleEndian
	le.PutUint32(b[0:], Magic)
	le.PutUint32(b[4:], 3)
	le.PutUint32(b[8:], ReqNewControl)
	copy(b[12:], addr[:])
	return append(dst, b[:]...)
}

// AppendV1 appends a version 1 request (magic, type, mac, address).
func AppendV1(dst []byte, mac [6]byte, addr *Addr) []byte {
	var b [reqV1Len]byte
	le := binary.LittleEndian
	le.PutUint32(b[0:], Magic)
	le.PutUint32(b[4:], ReqNewControl)
	copy(b[8:], mac[:])
	copy(b[14:], addr[:])
	return append(dst, b[:]...)
}

// AppendV0 appends a version 0 request (type, mac, address).
func AppendV0(dst []byte, mac [6]byte, addr *Addr) []byte {
	var b [reqV0Len]byte
	binary.LittleEndian.PutUint32(b[0:], ReqNewControl)
	copy(b[4:], mac[:])
	copy(b[10:], addr[:])
	return append(dst, b[:]...)
}
