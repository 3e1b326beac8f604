// Package ubd provides the block devices behind the guest's /dev/ubdX:
// a raw image file or a COW file over a backing image (internal/cow), the
// flags of the kernel's ubdN[rsdct]=file[,backing] option, and host fcntl
// locks on the files so that two machines can never write one image.
package ubd

import (
	"fmt"
	"strconv"
	"strings"
)

// MaxDevices is the number of ubd units the kernel supports (ubd0..ubd15,
// ubda..ubdp).
const MaxDevices = 16

// Spec is one parsed ubdN…=… option.
type Spec struct {
	Unit     int
	ReadOnly bool   // r: open read-only
	Sync     bool   // s: O_SYNC writes
	NoCOW    bool   // d: never treat the file as a COW file
	Shared   bool   // c: no host locking ("Not locking ... on the host")
	NoTrim   bool   // t: no discard
	File     string // the image, or the COW file when Backing is set
	Backing  string
	Serial   string
}

// SpecError is a malformed ubd option. Msg is the kernel's wording.
type SpecError struct {
	Arg string
	Msg string
}

func (e *SpecError) Error() string {
	return fmt.Sprintf("Failed to initialize device with \"%s\" : %s", e.Arg, e.Msg)
}

// Parse parses the part of a kernel command-line word after "ubd", e.g.
// "0r=img" or "b=cow,backing" (as the kernel's ubd_setup sees it). The
// global form "ubd=sync" is not a device and is left to the caller.
func Parse(arg string) (*Spec, error) {
	fail := func(msg string) (*Spec, error) { return nil, &SpecError{Arg: arg, Msg: msg} }
	s := arg
	sp := &Spec{}
	switch {
	case s == "":
		return fail("Couldn't parse device number")
	case s[0] >= '0' && s[0] <= '9':
		end := 0
		for end < len(s) && strings.IndexByte("0123456789abcdefABCDEFxX", s[end]) >= 0 {
			end++
		}
		// strtoul base 0: take the longest prefix that parses.
		for ; end > 0; end-- {
			if n, err := strconv.ParseUint(s[:end], 0, 32); err == nil {
				sp.Unit = int(n)
				break
			}
		}
		if end == 0 {
			return fail("Couldn't parse device number")
		}
		s = s[end:]
	case s[0] >= 'a' && s[0] <= 'z':
		sp.Unit = int(s[0] - 'a')
		s = s[1:]
	default:
		return fail("Couldn't parse device number")
	}
	if sp.Unit >= MaxDevices {
		return fail("Device number out of range")
	}
	i := 0
	for ; ; i++ {
		if i == len("rscdt=")+1 { // the kernel scans sizeof("rscdt=") chars
			if strings.HasPrefix(s, "=") {
				return fail("Too many flags specified")
			}
			return fail("Missing '='")
		}
		if s == "" {
			return fail("Expected '=' or flag letter (r, s, c, t or d)")
		}
		c := s[0]
		s = s[1:]
		switch c {
		case 'r':
			sp.ReadOnly = true
		case 's':
			sp.Sync = true
		case 'd':
			sp.NoCOW = true
		case 'c':
			sp.Shared = true
		case 't':
			sp.NoTrim = true
		case '=':
			return sp.fields(arg, s)
		default:
			return fail("Expected '=' or flag letter (r, s, c, t or d)")
		}
	}
}

// fields splits file[(,|:)backing][(,|:)serial].
func (sp *Spec) fields(arg, s string) (*Spec, error) {
	file, rest, hasBacking := cut(s)
	sp.File = file
	if hasBacking {
		if sp.NoCOW {
			return nil, &SpecError{Arg: arg, Msg: "Can't specify both 'd' and a cow file"}
		}
		sp.Backing, sp.Serial, _ = cut(rest)
	}
	return sp, nil
}

func cut(s string) (before, after string, found bool) {
	if i := strings.IndexAny(s, ",:"); i >= 0 {
		return s[:i], s[i+1:], true
	}
	return s, "", false
}

// Name is the guest device name: ubda, ubdb, ...
func (sp *Spec) Name() string { return "ubd" + string(rune('a'+sp.Unit)) }
