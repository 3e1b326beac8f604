package cmdline

import (
	"fmt"
	"strings"
)

// Ubd is one ubd<unit><flags>=<file>[(,|:)<backing>][(,|:)<serial>] option.
type Ubd struct {
	// Unit is the device number, 0..15 (ubda..ubdp).
	Unit int
	// Spec is the option text after "ubd", e.g. "0r=root.img".
	Spec string
	// ReadOnly (r), Sync (s, or ubd=sync given earlier), NoCOW (d: never
	// treat the file as a COW file), Shared (c: no host locking) and
	// NoTrim (t: no discard).
	ReadOnly, Sync, NoCOW, Shared, NoTrim bool
	// File is the image (or COW) file; "" means the device has no file.
	// Backing is the backing file of a COW; Serial the device serial.
	File, Backing, Serial string
}

// Name returns the guest device name, e.g. "ubda".
func (u *Ubd) Name() string { return "ubd" + string(rune('a'+u.Unit)) }

// Flags returns the flag letters in canonical order ("rsdct" subset).
func (u *Ubd) Flags() string {
	var b strings.Builder
	for _, f := range []struct {
		on bool
		c  byte
	}{{u.ReadOnly, 'r'}, {u.Sync, 's'}, {u.NoCOW, 'd'}, {u.Shared, 'c'}, {u.NoTrim, 't'}} {
		if f.on {
			b.WriteByte(f.c)
		}
	}
	return b.String()
}

// String returns the canonical option, e.g. "ubd0r=cow,backing,serial".
func (u *Ubd) String() string {
	s := fmt.Sprintf("ubd%d%s=%s", u.Unit, u.Flags(), u.File)
	if u.Backing != "" || u.Serial != "" {
		s += "," + u.Backing
	}
	if u.Serial != "" {
		s += "," + u.Serial
	}
	return s
}

// ConfigString returns what the kernel's mconsole `config ubdN` answers:
// the file, plus ",<backing>" for a COW device.
func (u *Ubd) ConfigString() string {
	if u.File == "" {
		return ""
	}
	if u.Backing != "" {
		return u.File + "," + u.Backing
	}
	return u.File
}

// ParseUbd parses one ubd option without the "ubd" prefix (e.g. "0r=img",
// the form mconsole's `config ubd0r=img` uses too). sync is the global
// ubd=sync state. The error text is the kernel's.
func ParseUbd(s string, sync bool) (*Ubd, error) {
	u := &Ubd{Spec: s, Sync: sync}
	n, rest, ok := parseUbdUnit(s)
	if !ok {
		return nil, fmt.Errorf("Couldn't parse device number")
	}
	if n >= MaxUbd {
		return nil, fmt.Errorf("Device number out of range")
	}
	u.Unit = n
	// The kernel scans sizeof("rscdt=") == 7 characters.
	const maxScan = 7
	i := 0
	for ; i < maxScan; i++ {
		if i >= len(rest) {
			return nil, fmt.Errorf("Expected '=' or flag letter (r, s, c, t or d)")
		}
		switch rest[i] {
		case 'r':
			u.ReadOnly = true
			continue
		case 's':
			u.Sync = true
			continue
		case 'd':
			u.NoCOW = true
			continue
		case 'c':
			u.Shared = true
			continue
		case 't':
			u.NoTrim = true
			continue
		case '=':
		default:
			return nil, fmt.Errorf("Expected '=' or flag letter (r, s, c, t or d)")
		}
		break
	}
	if i == maxScan {
		if i < len(rest) && rest[i] == '=' {
			return nil, fmt.Errorf("Too many flags specified")
		}
		return nil, fmt.Errorf("Missing '='")
	}
	val := rest[i+1:]
	fields := []*string{&u.File, &u.Backing, &u.Serial}
	for _, f := range fields {
		j := strings.IndexAny(val, ",:")
		if j < 0 {
			*f = val
			break
		}
		*f = val[:j]
		val = val[j+1:]
	}
	if u.Backing != "" && u.NoCOW {
		return nil, errCOWAndD
	}
	return u, nil
}

var errCOWAndD = fmt.Errorf("Can't specify both 'd' and a cow file")

// parseUbdUnit is the kernel's parse_unit: a C number or a letter a–z.
func parseUbdUnit(s string) (int, string, bool) {
	if s == "" {
		return 0, s, false
	}
	if s[0] >= '0' && s[0] <= '9' {
		v, n := strtoul(s, 0)
		// The kernel stores the unsigned long in an int.
		iv := int32(uint32(v))
		if iv < 0 {
			return 0, s, false
		}
		return int(iv), s[n:], true
	}
	if s[0] >= 'a' && s[0] <= 'z' {
		return int(s[0] - 'a'), s[1:], true
	}
	return 0, s, false
}

// ubdSetup handles one "ubd…" word (rest is the text after "ubd").
func (p *parser) ubdSetup(rest string) {
	c := p.c
	if v, ok := strings.CutPrefix(rest, "="); ok {
		if v == "sync" {
			c.UbdSync = true
		} else {
			p.warn(Warn, "", "fake major not supported any more")
		}
		return
	}
	var u *Ubd
	var err error
	if n, _, ok := parseUbdUnit(rest); ok && n < MaxUbd && c.Ubd[n] != nil && c.Ubd[n].File != "" {
		err = fmt.Errorf("Device is already configured")
	} else {
		u, err = ParseUbd(rest, c.UbdSync)
	}
	if err != nil {
		shown := rest
		if err == errCOWAndD {
			// The kernel has already split the string in place.
			eq := strings.IndexByte(rest, '=')
			if j := strings.IndexAny(rest[eq+1:], ",:"); j >= 0 {
				shown = rest[:eq+1+j]
			}
		}
		dev := ""
		if n, _, ok := parseUbdUnit(rest); ok && n < MaxUbd {
			dev = fmt.Sprintf("ubd%d", n)
		}
		p.warn(Error, dev, "Failed to initialize device with \"%s\" : %s", shown, err)
		return
	}
	c.Ubd[u.Unit] = u
}

func (p *parser) setupUbdDefaults() {
	if p.c.UbdSync {
		p.warn(Info, "", "ubd: Synchronous mode")
	}
}
