// Package mconsole implements the UML management console protocol: the
// request, reply and notify datagrams exchanged over AF_UNIX SOCK_DGRAM
// sockets, a client that talks to any UML (the C kernel or our engine), and
// the server half the engine runs at ~/.uml/<umid>/mconsole.
//
// All integers are host byte order (little-endian on x86-64), as the C
// kernel writes them.
package mconsole

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Protocol constants.
const (
	Magic   = 0xCAFEBABE // first word of requests and notifications
	Version = 2          // the only version the 6.1 kernel serves

	MaxData     = 512                  // size of the data field of a request or reply
	MaxChunk    = MaxData - 1          // longest text carried by one reply packet
	HeaderSize  = 12                   // magic+version+len, or err+more+len
	RequestSize = HeaderSize + MaxData // what the C client always sends: 524 bytes
	ReplySize   = HeaderSize + MaxData // largest reply datagram
)

// Version0Reply is the raw, header-less datagram the kernel sends to a
// client whose request does not start with Magic.
const Version0Reply = "ERR Version 0 mconsole clients are not supported by this driver"

var le = binary.LittleEndian

// Request is one command sent to a UML.
type Request struct {
	Magic   uint32
	Version uint32
	Text    string // the command, at most MaxChunk bytes on the wire
}

// NewRequest returns a version-2 request for text.
func NewRequest(text string) Request {
	return Request{Magic: Magic, Version: Version, Text: text}
}

// Encode returns the 524-byte datagram the C client sends: len is
// min(len(text), 511) and the text is NUL-padded.
func (r Request) Encode() []byte {
	b := make([]byte, RequestSize)
	n := len(r.Text)
	if n > MaxChunk {
		n = MaxChunk
	}
	le.PutUint32(b[0:], r.Magic)
	le.PutUint32(b[4:], r.Version)
	le.PutUint32(b[8:], uint32(n))
	copy(b[HeaderSize:], r.Text[:n])
	return b
}

// Errors returned by the decoders.
var (
	ErrShort     = errors.New("mconsole: datagram shorter than its header")
	ErrBadMagic  = errors.New("mconsole: bad magic (version 0 client)")
	ErrTooLarge  = errors.New("mconsole: request too large")
	ErrBadLength = errors.New("mconsole: length field exceeds the datagram")
)

// DecodeRequest parses a request datagram the way the kernel does: it
// reports ErrBadMagic for a non-2 magic, ErrTooLarge when len ≥ 512, and
// takes the text as the first len bytes of data (a shorter datagram is
// accepted as long as it holds len bytes). The version is returned as sent;
// checking it is the server's job, since the kernel still runs the command.
func DecodeRequest(b []byte) (Request, error) {
	if len(b) < 4 {
		return Request{}, ErrShort
	}
	r := Request{Magic: le.Uint32(b)}
	if r.Magic != Magic {
		return r, ErrBadMagic
	}
	if len(b) < HeaderSize {
		return r, ErrShort
	}
	r.Version = le.Uint32(b[4:])
	n := le.Uint32(b[8:])
	if n >= MaxData {
		return r, ErrTooLarge
	}
	if int(n) > len(b)-HeaderSize {
		return r, ErrBadLength
	}
	r.Text = string(b[HeaderSize : HeaderSize+int(n)])
	return r, nil
}

// Reply is one reply packet.
type Reply struct {
	Err  uint32 // 0 = OK; 1 or a negative errno as u32 = error
	More bool   // another packet follows
	Text string // at most MaxChunk bytes
}

// Encode returns the reply datagram: 12 + len bytes, len counting the
// terminating NUL.
func (r Reply) Encode() []byte {
	t := r.Text
	if len(t) > MaxChunk {
		t = t[:MaxChunk]
	}
	b := make([]byte, HeaderSize+len(t)+1)
	le.PutUint32(b[0:], r.Err)
	if r.More {
		le.PutUint32(b[4:], 1)
	}
	le.PutUint32(b[8:], uint32(len(t)+1))
	copy(b[HeaderSize:], t)
	return b
}

// DecodeReply parses a reply datagram. The text ends at the first NUL
// within len bytes (the C client concatenates with strcat), or after len
// bytes if there is none; a len larger than the datagram is an error. A
// non-zero more word means More.
func DecodeReply(b []byte) (Reply, error) {
	if len(b) < HeaderSize {
		return Reply{}, ErrShort
	}
	r := Reply{Err: le.Uint32(b), More: le.Uint32(b[4:]) != 0}
	n := le.Uint32(b[8:])
	if n > MaxData || int(n) > len(b)-HeaderSize {
		return r, ErrBadLength
	}
	data := b[HeaderSize : HeaderSize+int(n)]
	for i, c := range data {
		if c == 0 {
			r.Text = string(data[:i])
			return r, nil
		}
	}
	r.Text = string(data)
	return r, nil
}

// Chunk splits text into reply packets of at most MaxChunk bytes, as the
// kernel does: err rides on the first packet only, every packet but the
// last has More set, and an empty text is one empty packet.
func Chunk(text string, err uint32) []Reply {
	var out []Reply
	for {
		n := len(text)
		if n > MaxChunk {
			n = MaxChunk
		}
		r := Reply{Text: text[:n], More: n < len(text)}
		if len(out) == 0 {
			r.Err = err
		}
		out = append(out, r)
		text = text[n:]
		if len(text) == 0 {
			return out
		}
	}
}

// Notification types carried by the notify socket (mconsole=notify:<path>).
const (
	NotifySocket     = 0 // data: the mconsole socket path plus NUL
	NotifyPanic      = 1 // data: the panic message plus NUL
	NotifyHang       = 2 // sent by uml_watchdog only
	NotifyUserNotify = 3 // what a guest wrote to /proc/mconsole, no NUL added
)

// NotifyHeaderSize is magic+version+type+len.
const NotifyHeaderSize = 16

// Notify is one notification datagram.
type Notify struct {
	Type uint32
	Data []byte // at most MaxData bytes
}

// Encode returns the 16+len byte notification datagram.
func (n Notify) Encode() []byte {
	d := n.Data
	if len(d) > MaxData {
		d = d[:MaxData]
	}
	b := make([]byte, NotifyHeaderSize+len(d))
	le.PutUint32(b[0:], Magic)
	le.PutUint32(b[4:], Version)
	le.PutUint32(b[8:], n.Type)
	le.PutUint32(b[12:], uint32(len(d)))
	copy(b[NotifyHeaderSize:], d)
	return b
}

// DecodeNotify parses a notification datagram.
func DecodeNotify(b []byte) (Notify, error) {
	if len(b) < NotifyHeaderSize {
		return Notify{}, ErrShort
	}
	if le.Uint32(b) != Magic {
		return Notify{}, ErrBadMagic
	}
	if v := le.Uint32(b[4:]); v != Version {
		return Notify{}, fmt.Errorf("mconsole: notify version %d, want %d", v, Version)
	}
	n := Notify{Type: le.Uint32(b[8:])}
	l := le.Uint32(b[12:])
	if l > MaxData || int(l) > len(b)-NotifyHeaderSize {
		return n, ErrBadLength
	}
	n.Data = append([]byte(nil), b[NotifyHeaderSize:NotifyHeaderSize+int(l)]...)
	return n, nil
}
