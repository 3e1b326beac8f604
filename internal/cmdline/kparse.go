package cmdline

import (
	"math"
	"strings"
)

// This file holds the small C-library primitives the kernel's option
// handlers are written with, reimplemented so that every handler accepts
// exactly what the kernel accepts.

// strtoul mimics the kernel's simple_strtoull: an optional "0x"/"0X"
// prefix (only when a hex digit follows) selects base 16, a leading 0
// selects base 8, otherwise base 10 (base 0 in C). base may also be forced
// to 8, 10 or 16. It returns the value (wrapping like the C code) and the
// number of bytes consumed; 0 bytes means no digits were found.
func strtoul(s string, base int) (uint64, int) {
	i := 0
	if base == 0 || base == 16 {
		if len(s) >= 3 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X') && hexVal(s[2]) < 16 {
			base = 16
			i = 2
		}
	}
	if base == 0 {
		if len(s) > 0 && s[0] == '0' {
			base = 8
		} else {
			base = 10
		}
	}
	var v uint64
	start := i
	for ; i < len(s); i++ {
		d := hexVal(s[i])
		if d >= base {
			break
		}
		v = v*uint64(base) + uint64(d)
	}
	if i == start {
		return 0, 0
	}
	return v, i
}

func hexVal(c byte) int {
	switch {
	case c >= '0' && c <= '9':
		return int(c - '0')
	case c >= 'a' && c <= 'f':
		return int(c-'a') + 10
	case c >= 'A' && c <= 'F':
		return int(c-'A') + 10
	}
	return 99
}

// fullUint parses all of s as a number in the given base (0 = C base
// detection), as the kernel's "simple_strtoul then *end must be NUL"
// pattern does.
func fullUint(s string, base int) (uint64, bool) {
	v, n := strtoul(s, base)
	return v, n > 0 && n == len(s)
}

// Memparse parses a size the way the kernel's memparse does: a C-style
// number (decimal, 0x hex or 0 octal) optionally followed by one of
// K, M, G, T, P, E (either case). It returns the value and the unparsed
// rest (the kernel ignores the rest for mem=).
func Memparse(s string) (uint64, string) {
	v, n := strtoul(s, 0)
	rest := s[n:]
	if rest == "" {
		return v, rest
	}
	shift := 0
	switch rest[0] {
	case 'E', 'e':
		shift = 60
	case 'P', 'p':
		shift = 50
	case 'T', 't':
		shift = 40
	case 'G', 'g':
		shift = 30
	case 'M', 'm':
		shift = 20
	case 'K', 'k':
		shift = 10
	default:
		return v, rest
	}
	return v << shift, rest[1:]
}

// splitIfSpec mimics the kernel's split_if_spec: it fills fields from the
// comma-separated s, leaving a field untouched (its default) when its text
// is empty. It returns the rest after the last field, and whether there
// was a rest (the C function returns a non-NULL pointer even for an empty
// rest when a comma follows the last field).
func splitIfSpec(s string, fields ...*string) (string, bool) {
	for _, f := range fields {
		if s == "" {
			return "", false
		}
		end := strings.IndexByte(s, ',')
		if end != 0 {
			if end < 0 {
				*f = s
			} else {
				*f = s[:end]
			}
		}
		if end < 0 {
			return "", false
		}
		s = s[end+1:]
	}
	return s, true
}

// paramEq compares kernel parameter names treating '-' and '_' as equal,
// like the kernel's parameqn.
func paramEq(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if x == '-' {
			x = '_'
		}
		if y == '-' {
			y = '_'
		}
		if x != y {
			return false
		}
	}
	return true
}

// paramHasPrefix reports whether line starts with p under paramEq rules.
func paramHasPrefix(line, p string) bool {
	return len(line) >= len(p) && paramEq(line[:len(p)], p)
}

func isSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r'
}

// nextArg mimics the kernel's next_arg on the command line text: one
// parameter, honouring double quotes, with quotes around the value (or the
// whole word) removed. It returns the parameter name, its value, whether it
// had an '=', and the rest of the line with leading spaces skipped.
func nextArg(args string) (param, val string, hasVal bool, rest string) {
	inQuote, quoted := false, false
	if len(args) > 0 && args[0] == '"' {
		args = args[1:]
		inQuote, quoted = true, true
	}
	i, equals := 0, -1
	for ; i < len(args); i++ {
		if isSpace(args[i]) && !inQuote {
			break
		}
		if equals < 0 && args[i] == '=' {
			equals = i
		}
		if args[i] == '"' {
			inQuote = !inQuote
		}
	}
	word := args[:i]
	if i < len(args) {
		rest = args[i+1:]
	} else {
		rest = ""
	}
	rest = strings.TrimLeft(rest, " \t\n\v\f\r")
	// The C code strips a closing quote at word end in two independent
	// steps (value quote, whole-word quote); emulate on a byte slice.
	b := []byte(word)
	end := len(b)
	if equals >= 0 {
		hasVal = true
		vstart := equals + 1
		if vstart < len(b) && b[vstart] == '"' {
			vstart++
			if end > 0 && b[end-1] == '"' && end-1 >= vstart {
				end--
			}
		}
		if quoted && end > 0 && end == len(b) && b[end-1] == '"' {
			end--
		}
		if vstart > end {
			vstart = end
		}
		return string(b[:equals]), string(b[vstart:end]), true, rest
	}
	if quoted && end > 0 && b[end-1] == '"' {
		end--
	}
	return string(b[:end]), "", false, rest
}

// Kstrtoull is the kernel's kstrtoull: an optional '+', base 0 (0x hex,
// leading 0 octal, else decimal), every byte a digit (one trailing
// newline allowed), no overflow.
func Kstrtoull(s string) (uint64, bool) {
	s = strings.TrimPrefix(s, "+")
	base := uint64(10)
	switch {
	case len(s) >= 3 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X') && hexVal(s[2]) < 16:
		base, s = 16, s[2:]
	case len(s) >= 1 && s[0] == '0':
		base = 8
	}
	s = strings.TrimSuffix(s, "\n")
	if s == "" {
		return 0, false
	}
	var v uint64
	for i := 0; i < len(s); i++ {
		d := uint64(hexVal(s[i]))
		if d >= base {
			return 0, false
		}
		if v > (math.MaxUint64-d)/base {
			return 0, false
		}
		v = v*base + d
	}
	return v, true
}

// Kstrtoint is the kernel's kstrtoint (base 0): a signed int.
func Kstrtoint(s string) (int32, bool) {
	neg := strings.HasPrefix(s, "-")
	if neg {
		s = s[1:]
		if strings.HasPrefix(s, "+") {
			return 0, false
		}
	}
	v, ok := Kstrtoull(s)
	if !ok {
		return 0, false
	}
	if neg {
		if v > 1<<31 {
			return 0, false
		}
		return int32(-int64(v)), true
	}
	if v > math.MaxInt32 {
		return 0, false
	}
	return int32(v), true
}

// Strtol10 is C's strtol(s, NULL, 10): leading blanks, a sign, then as
// many digits as there are (clamped on overflow); 0 without any.
func Strtol10(s string) int64 {
	s = strings.TrimLeft(s, " \t\n\v\f\r")
	neg := false
	if s != "" && (s[0] == '+' || s[0] == '-') {
		neg = s[0] == '-'
		s = s[1:]
	}
	var v int64
	for i := 0; i < len(s) && s[i] >= '0' && s[i] <= '9'; i++ {
		if v > (math.MaxInt64-int64(s[i]-'0'))/10 {
			if neg {
				return math.MinInt64
			}
			return math.MaxInt64
		}
		v = v*10 + int64(s[i]-'0')
	}
	if neg {
		return -v
	}
	return v
}
