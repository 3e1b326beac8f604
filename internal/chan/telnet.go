package chans

import (
	"bytes"

	"golang.org/x/sys/unix"
)

// Telnet protocol bytes (RFC 854) and options.
const (
	tnSE   = 240
	tnSB   = 250
	tnWILL = 251
	tnWONT = 252
	tnDO   = 253
	tnDONT = 254
	tnIAC  = 255

	optEcho = 1  // RFC 857
	optSGA  = 3  // suppress go-ahead, RFC 858
	optNAWS = 31 // window size, RFC 1073
)

// telnetHello is what the port channel sends a new client: IAC WILL ECHO,
// IAC WILL SUPPRESS-GO-AHEAD, IAC DO SUPPRESS-GO-AHEAD (together they put
// clients in character mode without local echo: the guest's pty echoes),
// then IAC DO NAWS (the client reports its window size).
const telnetHello = "\xff\xfb\x01\xff\xfb\x03\xff\xfd\x03\xff\xfd\x1f"

// telnet decodes what a telnet client sends.
type telnet struct {
	state tnState
	verb  byte   // WILL/WONT/DO/DONT awaiting its option
	sb    []byte // subnegotiation: option, then data (at most maxSB bytes)
	us    [256]bool
	him   [256]bool
}

type tnState int

const (
	tsData  tnState = iota
	tsCR            // after CR: a NUL or LF is dropped
	tsIAC           // after IAC
	tsOpt           // after IAC WILL/WONT/DO/DONT
	tsSB            // in a subnegotiation
	tsSBIAC         // after IAC in a subnegotiation
)

const maxSB = 64

// newTelnet returns a decoder in the state telnetHello asks for.
func newTelnet() *telnet {
	t := &telnet{}
	t.us[optEcho], t.us[optSGA] = true, true
	t.him[optSGA], t.him[optNAWS] = true, true
	return t
}

// feed decodes p: data for the guest (IAC IAC is 0xFF; CR NUL and CR LF
// are CR), replies to send back (option negotiation), and the last window
// size the client reported (nil if none). Other commands (NOP, GA, IP,
// AYT, ...) are ignored: a client in character mode sends ^C and friends
// as data. State is kept across calls.
func (t *telnet) feed(p []byte) (data, reply []byte, ws *unix.Winsize) {
	for _, b := range p {
		switch t.state {
		case tsData, tsCR:
			if t.state == tsCR {
				t.state = tsData
				if b == 0 || b == '\n' {
					continue
				}
			}
			switch b {
			case tnIAC:
				t.state = tsIAC
			case '\r':
				data = append(data, b)
				t.state = tsCR
			default:
				data = append(data, b)
			}
		case tsIAC:
			t.state = tsData
			switch b {
			case tnIAC:
				data = append(data, tnIAC)
			case tnWILL, tnWONT, tnDO, tnDONT:
				t.verb, t.state = b, tsOpt
			case tnSB:
				t.sb, t.state = t.sb[:0], tsSB
			}
		case tsOpt:
			reply = t.negotiate(reply, t.verb, b)
			t.state = tsData
		case tsSB:
			if b == tnIAC {
				t.state = tsSBIAC
			} else if len(t.sb) < maxSB {
				t.sb = append(t.sb, b)
			}
		case tsSBIAC:
			switch b {
			case tnIAC:
				if len(t.sb) < maxSB {
					t.sb = append(t.sb, b)
				}
				t.state = tsSB
			case tnSE:
				t.state = tsData
				if len(t.sb) == 5 && t.sb[0] == optNAWS {
					s := t.sb
					ws = &unix.Winsize{Col: uint16(s[1])<<8 | uint16(s[2]), Row: uint16(s[3])<<8 | uint16(s[4])}
				}
			default: // malformed: end the subnegotiation at this command
				t.state = tsIAC
				d, r, w := t.feed([]byte{b})
				data, reply = append(data, d...), append(reply, r...)
				if w != nil {
					ws = w
				}
			}
		}
	}
	return data, reply, ws
}

// negotiate answers one option request. We do ECHO and SGA and want the
// client to do SGA and NAWS; everything else is refused. A request for
// the state an option is already in is not answered (RFC 854), so two
// parties cannot loop.
func (t *telnet) negotiate(reply []byte, verb, opt byte) []byte {
	switch verb {
	case tnDO:
		switch {
		case opt == optEcho || opt == optSGA:
			if !t.us[opt] {
				t.us[opt] = true
				reply = append(reply, tnIAC, tnWILL, opt)
			}
		default:
			reply = append(reply, tnIAC, tnWONT, opt)
		}
	case tnDONT:
		if t.us[opt] {
			t.us[opt] = false
			reply = append(reply, tnIAC, tnWONT, opt)
		}
	case tnWILL:
		switch {
		case opt == optSGA || opt == optNAWS:
			if !t.him[opt] {
				t.him[opt] = true
				reply = append(reply, tnIAC, tnDO, opt)
			}
		default:
			reply = append(reply, tnIAC, tnDONT, opt)
		}
	case tnWONT:
		if t.him[opt] {
			t.him[opt] = false
			reply = append(reply, tnIAC, tnDONT, opt)
		}
	}
	return reply
}

// telnetEscape doubles every IAC (0xFF) in guest output.
func telnetEscape(p []byte) []byte {
	n := bytes.Count(p, []byte{tnIAC})
	if n == 0 {
		return p
	}
	q := make([]byte, 0, len(p)+n)
	for _, b := range p {
		q = append(q, b)
		if b == tnIAC {
			q = append(q, tnIAC)
		}
	}
	return q
}
