package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/user"
	"strconv"
	"strings"

	"github.com/umltools/umltools/internal/cli"
	"github.com/umltools/umltools/internal/tuntap"
	"github.com/umltools/umltools/internal/version"
	"golang.org/x/sys/unix"
)

const helpText = `Usage: tunctl [-b] [-u owner] [-g group] [-t device-name] [-f tun-clone-device]
       tunctl -d device-name [-f tun-clone-device]

Create a persistent tap device (IFF_TAP, no packet information header)
that the given user or group may attach to without privileges, or make
one non-persistent again so it disappears.

  -b          brief output: print just the device name
  -u OWNER    user name or numeric uid allowed to use the device
              (default: the effective uid, when neither -u nor -g is given)
  -g GROUP    group name or numeric gid allowed to use the device
  -t NAME     device name; kernel formats such as "tap%d" work
              (default: the kernel picks tapN); truncated to 15 bytes
  -d NAME     make NAME non-persistent (delete it); NAME must exist
  -f FILE     tun clone device (default /dev/net/tun)
  --list      list the tap devices: name, owner, group, persistence, state
  --json      the same list as a JSON array
  -h, --help  this help
  --version   print the version

Exit status: 0 on success, 1 on any error (as the C tunctl).
`

// usage prints the C tool's usage text to stderr and returns exit 1.
func usage(prog string, stderr io.Writer) error {
	fmt.Fprintf(stderr, "Create: %s [-b] [-u owner] [-g group] [-t device-name] [-f tun-clone-device]\n", prog)
	fmt.Fprintf(stderr, "Delete: %s -d device-name [-f tun-clone-device]\n\n", prog)
	fmt.Fprintf(stderr, "The default tun clone device is /dev/net/tun - some systems use\n/dev/misc/net/tun instead\n\n")
	fmt.Fprintf(stderr, "-b will result in brief output (just the device name)\n")
	return cli.Exit(1)
}

// options is the parsed command line.
type options struct {
	brief, del   bool
	name, clone  string
	owner, group int32 // -1 when not set, as in the C tool
	help, vers   bool
	list, json   bool
}

// parse reads the command line the way glibc getopt("bd:f:t:u:g:") does:
// clustered flags, attached or separate option arguments, options after
// operands (permutation) and "--".
func parse(args []string, stderr io.Writer) (*options, error) {
	prog := cli.Prog(args)
	o := &options{clone: tuntap.DefaultClone, owner: -1, group: -1}
	var operands []string
	for i := 1; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			operands = append(operands, args[i+1:]...)
			break
		}
		if a == "--help" {
			o.help = true
			continue
		}
		if a == "--version" {
			o.vers = true
			continue
		}
		if a == "--list" || a == "--json" {
			o.list = true
			o.json = o.json || a == "--json"
			continue
		}
		if len(a) < 2 || a[0] != '-' {
			operands = append(operands, a)
			continue
		}
		for j := 1; j < len(a); j++ {
			c := a[j]
			switch c {
			case 'b':
				o.brief = true
				continue
			case 'h':
				o.help = true
				continue
			case 'd', 'f', 't', 'u', 'g':
			default:
				fmt.Fprintf(stderr, "%s: invalid option -- '%c'\n", prog, c)
				return nil, usage(prog, stderr)
			}
			val := a[j+1:]
			if val == "" {
				if i+1 >= len(args) {
					fmt.Fprintf(stderr, "%s: option requires an argument -- '%c'\n", prog, c)
					return nil, usage(prog, stderr)
				}
				i++
				val = args[i]
			}
			if err := o.set(c, val, prog, stderr); err != nil {
				return nil, err
			}
			break
		}
	}
	if o.help || o.vers || o.list && len(operands) == 0 {
		return o, nil
	}
	if len(operands) > 0 {
		return nil, usage(prog, stderr)
	}
	return o, nil
}

func (o *options) set(c byte, val, prog string, stderr io.Writer) error {
	switch c {
	case 'd':
		o.del, o.name = true, val
	case 't':
		o.name = val
	case 'f':
		o.clone = val
	case 'u':
		id, ok := lookupID(val, func(s string) (string, error) {
			u, err := user.Lookup(s)
			if err != nil {
				return "", err
			}
			return u.Uid, nil
		})
		if !ok {
			fmt.Fprintf(stderr, "'%s' is neither a username nor a numeric uid.\n", val)
			return usage(prog, stderr)
		}
		o.owner = id
	case 'g':
		id, ok := lookupID(val, func(s string) (string, error) {
			g, err := user.LookupGroup(s)
			if err != nil {
				return "", err
			}
			return g.Gid, nil
		})
		if !ok {
			fmt.Fprintf(stderr, "'%s' is neither a groupname nor a numeric group.\n", val)
			return usage(prog, stderr)
		}
		o.group = id
	}
	return nil
}

// lookupID resolves a user or group: by name first, then as a C integer
// (strtol base 0). The result wraps to 32 bits like uid_t/gid_t.
func lookupID(s string, byName func(string) (string, error)) (int32, bool) {
	if s == "" {
		return 0, false
	}
	if id, err := byName(s); err == nil {
		if n, err := strconv.ParseUint(id, 10, 32); err == nil {
			return int32(uint32(n)), true
		}
	}
	n, ok := parseCInt(s)
	return int32(n), ok
}

// parseCInt parses s like strtol(s, &end, 0) with *end required to be NUL:
// optional leading white space and sign, then 0x hex, 0 octal or decimal.
func parseCInt(s string) (int64, bool) {
	s = strings.TrimLeft(s, " \t\n\v\f\r")
	neg := false
	if s != "" && (s[0] == '+' || s[0] == '-') {
		neg = s[0] == '-'
		s = s[1:]
	}
	base := 10
	switch {
	case len(s) > 2 && (s[:2] == "0x" || s[:2] == "0X"):
		base, s = 16, s[2:]
	case len(s) > 1 && s[0] == '0':
		base, s = 8, s[1:]
	}
	if s == "" || s[0] == '+' || s[0] == '-' || strings.Contains(s, "_") {
		return 0, false
	}
	n, err := strconv.ParseUint(s, base, 64)
	if err != nil {
		return 0, false
	}
	if neg {
		return -int64(n), true
	}
	return int64(n), true
}

func run(args []string, _ io.Reader, stdout, stderr io.Writer) error {
	o, err := parse(args, stderr)
	if err != nil {
		return err
	}
	if o.help || o.vers {
		if o.help {
			io.WriteString(stdout, helpText)
		} else {
			fmt.Fprintln(stdout, version.String(cli.Prog(args)))
		}
		return nil
	}
	if o.list {
		return list(o.json, stdout, stderr)
	}
	name := o.name
	if len(name) > unix.IFNAMSIZ-1 {
		name = name[:unix.IFNAMSIZ-1] // the C tool truncates silently
	}
	if o.del {
		if err := checkExists(name); err != nil {
			fmt.Fprintf(stderr, "%s: %v\n", cli.Prog(args), err)
			return cli.Exit(1)
		}
	}
	f, got, err := tuntap.Open(o.clone, name)
	if err != nil {
		var errno unix.Errno
		if !errors.As(err, &errno) {
			fmt.Fprintf(stderr, "%s: %v\n", cli.Prog(args), err)
		} else if strings.HasPrefix(err.Error(), "open ") {
			fmt.Fprintf(stderr, "Failed to open '%s' : %s\n", o.clone, tuntap.Strerror(err))
		} else {
			fmt.Fprintf(stderr, "TUNSETIFF: %s\n", tuntap.Strerror(err))
		}
		return cli.Exit(1)
	}
	defer f.Close()
	if o.del {
		if err := tuntap.SetPersist(f, false); err != nil {
			fmt.Fprintf(stderr, "TUNSETPERSIST: %s\n", tuntap.Strerror(err))
			return cli.Exit(1)
		}
		fmt.Fprintf(stdout, "Set '%s' nonpersistent\n", got)
		return nil
	}
	if err := tuntap.SetPersist(f, true); err != nil {
		fmt.Fprintf(stderr, "TUNSETPERSIST: %s\n", tuntap.Strerror(err))
		return cli.Exit(1)
	}
	owner, group := o.owner, o.group
	if owner == -1 && group == -1 {
		owner = int32(unix.Geteuid())
	}
	if owner != -1 {
		if err := tuntap.SetOwner(f, int(uint32(owner))); err != nil {
			fmt.Fprintf(stderr, "TUNSETOWNER: %s\n", tuntap.Strerror(err))
			return cli.Exit(1)
		}
	}
	if group != -1 {
		if err := tuntap.SetGroup(f, int(uint32(group))); err != nil {
			fmt.Fprintf(stderr, "TUNSETGROUP: %s\n", tuntap.Strerror(err))
			return cli.Exit(1)
		}
	}
	if o.brief {
		fmt.Fprintf(stdout, "%s\n", got)
		return nil
	}
	line := fmt.Sprintf("Set '%s' persistent and owned by", got)
	if owner != -1 {
		line += fmt.Sprintf(" uid %d", owner)
	}
	if group != -1 {
		line += fmt.Sprintf(" gid %d", group)
	}
	fmt.Fprintln(stdout, line)
	return nil
}

// checkExists refuses to "delete" a device that is not an existing tap:
// the C tool would create it and drop it again. When netlink cannot
// answer (no such socket family), the check is skipped.
func checkExists(name string) error {
	if name == "" {
		return fmt.Errorf("-d needs a device name")
	}
	nl, err := tuntap.DialNetlink()
	if err != nil {
		return nil
	}
	defer nl.Close()
	l, err := nl.LinkByName(name)
	switch {
	case errors.Is(err, unix.ENODEV):
		return fmt.Errorf("%s: no such device", name)
	case err != nil:
		return nil
	case l.Kind != "tun" && l.Kind != "":
		return fmt.Errorf("%s: not a tap device (it is a %s device)", name, l.Kind)
	case l.Kind != "tun":
		return fmt.Errorf("%s: not a tap device", name)
	case l.Tun != nil && !l.Tun.Tap:
		return fmt.Errorf("%s: a tun device, not a tap (tunctl handles taps only)", name)
	}
	return nil
}

// tapEntry is one line of --list / one object of --json.
type tapEntry struct {
	Name    string `json:"name"`
	Index   int    `json:"index"`
	Owner   int64  `json:"owner"` // -1: none
	Group   int64  `json:"group"` // -1: none
	Persist bool   `json:"persist"`
	Up      bool   `json:"up"`
}

// list prints the host's tap devices (tun devices in tap mode).
func list(asJSON bool, stdout, stderr io.Writer) error {
	nl, err := tuntap.DialNetlink()
	if err != nil {
		fmt.Fprintf(stderr, "tunctl: %v\n", err)
		return cli.Exit(1)
	}
	defer nl.Close()
	links, err := nl.Links()
	if err != nil {
		fmt.Fprintf(stderr, "tunctl: %v\n", err)
		return cli.Exit(1)
	}
	taps := []tapEntry{}
	for _, l := range links {
		if l.Tun == nil || !l.Tun.Tap {
			continue
		}
		taps = append(taps, tapEntry{l.Name, l.Index, l.Tun.Owner, l.Tun.Group, l.Tun.Persist, l.Up()})
	}
	if asJSON {
		b, _ := json.MarshalIndent(taps, "", "  ")
		fmt.Fprintf(stdout, "%s\n", b)
		return nil
	}
	id := func(v int64) string {
		if v < 0 {
			return "-"
		}
		return strconv.FormatInt(v, 10)
	}
	onOff := map[bool]string{true: "on", false: "off"}
	upDown := map[bool]string{true: "up", false: "down"}
	for _, t := range taps {
		fmt.Fprintf(stdout, "%s owner %s group %s persist %s %s\n", t.Name, id(t.Owner), id(t.Group), onOff[t.Persist], upDown[t.Up])
	}
	return nil
}
