package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"

	"github.com/umltools/umltools/internal/tuntap"
)

// output collects the text uml_net hands back to the UML kernel, which
// printk's it. The C helper fills it with "* <command>" lines and the
// commands' output; we run no commands, so each line names the netlink or
// /proc step taken in the same "* ..." style.
type output struct{ b strings.Builder }

// step records an action that was done.
func (o *output) step(format string, a ...any) {
	o.b.WriteString("* ")
	fmt.Fprintf(&o.b, format, a...)
	o.b.WriteString("\n")
}

// fail records an error: "<what> : <strerror>".
func (o *output) fail(what string, err error) {
	fmt.Fprintf(&o.b, "%s : %s\n", what, tuntap.Strerror(err))
}

// line records free text (a newline is added when missing).
func (o *output) line(s string) {
	o.b.WriteString(s)
	if !strings.HasSuffix(s, "\n") {
		o.b.WriteString("\n")
	}
}

func (o *output) String() string { return o.b.String() }

// text is the text as the C helper sends it: NUL-terminated, or nothing at
// all when empty.
func (o *output) text() []byte {
	if o.b.Len() == 0 {
		return nil
	}
	return append([]byte(o.b.String()), 0)
}

// blob is the v3/v4 "output" wire format: a native-endian int length
// (counting the NUL), then the NUL-terminated text.
func (o *output) blob() []byte {
	t := o.text()
	b := binary.NativeEndian.AppendUint32(nil, uint32(len(t)))
	return append(b, t...)
}

// parseBlob decodes one output blob from the front of b, returning the text
// (without its NUL) and the rest. It is the reader side of blob, used by
// tests and the fuzz target.
func parseBlob(b []byte) (text string, rest []byte, err error) {
	if len(b) < 4 {
		return "", b, errors.New("output blob: short length")
	}
	n := int32(binary.NativeEndian.Uint32(b))
	b = b[4:]
	if n < 0 || int(n) > len(b) {
		return "", b, fmt.Errorf("output blob: length %d with %d bytes left", n, len(b))
	}
	t := b[:n]
	if n > 0 {
		if t[n-1] != 0 {
			return "", b, errors.New("output blob: text not NUL-terminated")
		}
		t = t[:n-1]
	}
	return string(t), b[n:], nil
}

// ethertapChange is the 12-byte v4 address-change message the kernel sends
// on the ethertap control socket: {int what (0 add, 1 del); u8 addr[4];
// u8 netmask[4]}.
type ethertapChange struct {
	Del     bool
	Addr    [4]byte
	Netmask [4]byte
}

const ethertapChangeLen = 12

// parseEthertapChange decodes one control message.
func parseEthertapChange(b []byte) (ethertapChange, error) {
	if len(b) != ethertapChangeLen {
		return ethertapChange{}, fmt.Errorf("ethertap control message: %d bytes, want %d", len(b), ethertapChangeLen)
	}
	var c ethertapChange
	switch what := int32(binary.NativeEndian.Uint32(b)); what {
	case 0:
	case 1:
		c.Del = true
	default:
		return ethertapChange{}, fmt.Errorf("ethertap control message: bad operation %d", what)
	}
	copy(c.Addr[:], b[4:8])
	copy(c.Netmask[:], b[8:12])
	return c, nil
}

// encode is the inverse of parseEthertapChange.
func (c ethertapChange) encode() []byte {
	var what uint32
	if c.Del {
		what = 1
	}
	b := binary.NativeEndian.AppendUint32(nil, what)
	b = append(b, c.Addr[:]...)
	return append(b, c.Netmask[:]...)
}
