package cmdline

import (
	"errors"
	"fmt"
	"strings"
)

// Default channels. The C kernel gives con0 "fd:0,fd:1", every other
// console CONFIG_CON_CHAN and every serial line CONFIG_SSL_CHAN. Debian
// sets CONFIG_CON_CHAN to "x-terminal-emulator", which is not a channel:
// each console without an explicit setting logs "setup_one_line failed for
// device N : failed to parse channel pair" and is not created. We default
// those consoles to "null" instead: the devices exist (a getty on tty1 in
// the image's inittab neither fails nor spins), output is discarded and
// input never arrives, and nothing is logged. Serial lines keep Debian's
// "pty".
const (
	DefaultCon0 = "fd:0,fd:1"
	DefaultCon  = "null"
	DefaultSsl  = "pty"
)

// ChanType is a channel type.
type ChanType int

// Channel types, in the kernel's table order.
const (
	ChanFD ChanType = iota + 1
	ChanNull
	ChanPort
	ChanPty
	ChanPts
	ChanTTY
	ChanXterm
)

var chanNames = []struct {
	name string
	t    ChanType
}{{"fd", ChanFD}, {"null", ChanNull}, {"port", ChanPort}, {"pty", ChanPty}, {"pts", ChanPts}, {"tty", ChanTTY}, {"xterm", ChanXterm}}

// String returns the channel type's name as written on the command line.
func (t ChanType) String() string {
	for _, c := range chanNames {
		if c.t == t {
			return c.name
		}
	}
	return fmt.Sprintf("chan(%d)", int(t))
}

// Channel is one host channel of a console or serial line.
type Channel struct {
	Type ChanType
	// FD is the host file descriptor of fd:N.
	FD int
	// Port is the TCP port of port:N.
	Port int
	// Dev is the host tty of tty:<dev>.
	Dev string
	// Text is the channel's text as given, e.g. "fd:0".
	Text string
}

// String returns the channel text as given.
func (ch Channel) String() string { return ch.Text }

// ParseChannel parses one channel the way the kernel's parse_chan does:
// the type is matched as a prefix (so "nullx" is null), and fd, port and
// tty need ":<arg>". The error carries the kernel's message.
func ParseChannel(s string) (Channel, error) {
	ch := Channel{Text: s}
	for _, c := range chanNames {
		if !strings.HasPrefix(s, c.name) {
			continue
		}
		ch.Type = c.t
		arg := s[len(c.name):]
		switch c.t {
		case ChanFD:
			a, ok := strings.CutPrefix(arg, ":")
			if !ok {
				return ch, fmt.Errorf("fd_init : channel type 'fd' must specify a file descriptor")
			}
			v, full := fullUint(a, 0)
			if !full || v > 1<<31-1 {
				return ch, fmt.Errorf("fd_init : couldn't parse file descriptor '%s'", a)
			}
			ch.FD = int(v)
		case ChanPort:
			a, ok := strings.CutPrefix(arg, ":")
			if !ok {
				return ch, fmt.Errorf("port_init : channel type 'port' must specify a port number")
			}
			v, full := fullUint(a, 0)
			if !full {
				return ch, fmt.Errorf("port_init : couldn't parse port '%s'", a)
			}
			// The kernel keeps the low 16 bits (htons of an int).
			ch.Port = int(v & 0xffff)
		case ChanTTY:
			a, ok := strings.CutPrefix(arg, ":")
			if !ok {
				return ch, fmt.Errorf("tty_init : channel type 'tty' must specify a device")
			}
			ch.Dev = a
		}
		return ch, nil
	}
	return ch, fmt.Errorf("No match for configured backends")
}

// Source tells where a line's setting came from.
type Source int

// Where a line's channel setting came from.
const (
	FromDefault Source = iota // the built-in default
	FromAll                   // con= or ssl=
	FromUnit                  // conN= or sslN=
)

// Line is a console (con) or serial line (ssl) with its effective channels.
type Line struct {
	// Kind is "con" or "ssl"; Unit its number.
	Kind string
	Unit int
	// Spec is the channel-pair text in effect (the kernel's init_str).
	Spec   string
	Source Source
	// None is true for "none": the device is not created.
	None bool
	// In and Out are the input and output channels (the same channel
	// when only one was given).
	In, Out Channel
	// Err is the reason the spec was refused (the device then does not
	// exist, like the C kernel); "" when it is valid.
	Err string
}

// Valid reports whether the device exists.
func (l *Line) Valid() bool { return !l.None && l.Err == "" }

// Name returns the option name, e.g. "con1".
func (l *Line) Name() string { return fmt.Sprintf("%s%d", l.Kind, l.Unit) }

// GuestDev returns the guest's device path: /dev/ttyN or /dev/ttySN.
func (l *Line) GuestDev() string {
	if l.Kind == "ssl" {
		return fmt.Sprintf("/dev/ttyS%d", l.Unit)
	}
	return fmt.Sprintf("/dev/tty%d", l.Unit)
}

// String returns the option, e.g. "con1=fd:0,fd:1" ("con1=none" when the
// device does not exist).
func (l *Line) String() string {
	if !l.Valid() {
		return l.Name() + "=none"
	}
	return l.Name() + "=" + l.Spec
}

// ConfigString returns what mconsole `config conN` answers: the channel
// text, or "none" when the device does not exist. For a two-channel spec
// the 6.1 kernel answers only the input channel (it cut its copy at the
// ','), except for con0.
func (l *Line) ConfigString() string {
	if !l.Valid() {
		return "none"
	}
	if l.Kind == "con" && l.Unit == 0 {
		return l.Spec
	}
	in, _, _ := strings.Cut(l.Spec, ",")
	return in
}

// ParseChannelPair parses "<chan>[,<chan>]" (the kernel's
// parse_chan_pair, after the whole-string "none" check of setup_one_line).
// The first channel is input, the second output.
func ParseChannelPair(spec string) (in, out Channel, none bool, err error) {
	if spec == "none" {
		return in, out, true, nil
	}
	a, b, two := strings.Cut(spec, ",")
	in, err = ParseChannel(a)
	if err != nil {
		return in, out, false, err
	}
	if !two {
		return in, in, false, nil
	}
	out, err = ParseChannel(b)
	return in, out, false, err
}

// splitLineUnit parses "<n>=<spec>" as the kernel's line_setup and
// line_config do (n is a C number below max).
func splitLineUnit(rest string, max int) (int, string, error) {
	v, n := strtoul(rest, 0)
	if n == 0 || n >= len(rest) || rest[n] != '=' {
		return 0, "", errors.New("Couldn't parse device number")
	}
	if v >= uint64(max) {
		return 0, "", errors.New("Device number out of range")
	}
	return int(v), rest[n+1:], nil
}

// lineSetup is the kernel's line_setup for a "con…"/"ssl…" word (rest is
// the text after "con"/"ssl").
func (p *parser) lineSetup(kind, rest string) {
	name, max := "console", MaxCon
	if kind == "ssl" {
		name, max = "serial line", MaxSsl
	}
	if v, ok := strings.CutPrefix(rest, "="); ok {
		if kind == "con" {
			p.c.ConAll = &v
		} else {
			p.c.SslAll = &v
		}
		return
	}
	unit, spec, err := splitLineUnit(rest, max)
	if err != nil {
		p.warn(Error, "", "Failed to set up %s with configuration string \"%s\" : %s", name, rest, err)
		return
	}
	if kind == "con" {
		p.conConf[unit] = &spec
	} else {
		p.sslConf[unit] = &spec
	}
}

// ParseLineConfig parses the argument of an mconsole `config conN=<spec>`
// or `config sslN=<spec>` (rest is the text after "con"/"ssl"; kind is
// "con" or "ssl"), with the kernel's line_config error texts. A refused
// channel spec gives the error "failed to parse channel pair".
func ParseLineConfig(kind, rest string) (Line, error) {
	max := MaxCon
	if kind == "ssl" {
		max = MaxSsl
	}
	if strings.HasPrefix(rest, "=") {
		return Line{}, errors.New("Can't configure all devices from mconsole")
	}
	unit, spec, err := splitLineUnit(rest, max)
	if err != nil {
		return Line{}, err
	}
	l := Line{Kind: kind, Unit: unit, Spec: spec, Source: FromUnit}
	var cerr error
	l.In, l.Out, l.None, cerr = ParseChannelPair(spec)
	if cerr != nil {
		l.Err = cerr.Error()
		return l, errors.New("failed to parse channel pair")
	}
	return l, nil
}

// setupLines applies defaults and parses every line's channels (the
// kernel's console and serial-line initcalls).
func (p *parser) setupLines() {
	c := p.c
	for i := range c.Con {
		spec, src := DefaultCon, FromDefault
		if i == 0 {
			spec = DefaultCon0
		}
		if c.ConAll != nil {
			spec, src = *c.ConAll, FromAll
		}
		if p.conConf[i] != nil {
			spec, src = *p.conConf[i], FromUnit
		}
		c.Con[i] = p.oneLine("con", i, spec, src)
	}
	for i := range c.Ssl {
		spec, src := DefaultSsl, FromDefault
		if c.SslAll != nil {
			spec, src = *c.SslAll, FromAll
		}
		if p.sslConf[i] != nil {
			spec, src = *p.sslConf[i], FromUnit
		}
		c.Ssl[i] = p.oneLine("ssl", i, spec, src)
	}
}

func (p *parser) oneLine(kind string, unit int, spec string, src Source) Line {
	l := Line{Kind: kind, Unit: unit, Spec: spec, Source: src}
	in, out, none, err := ParseChannelPair(spec)
	l.In, l.Out, l.None = in, out, none
	if none {
		// The C kernel logs this (as an error) for every "none" line.
		p.warn(Info, l.Name(), "setup_one_line failed for device %d : configured as 'none'", unit)
	}
	if err != nil {
		l.Err = err.Error()
		msg := "setup_one_line failed for device %d : failed to parse channel pair"
		if strings.Contains(l.Err, " : ") {
			// fd_init/port_init/tty_init print their own line first.
			msg = l.Err + "\n" + msg
		}
		p.warn(Error, l.Name(), msg, unit)
	}
	return l
}
