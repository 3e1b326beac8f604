// Package jail is jail_uml: run a command (normally a User Mode Linux
// kernel) chrooted into a directory as an unprivileged user, a drop-in
// replacement for uml-utilities' jail_uml.
package jail

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"syscall"

	"github.com/umltools/umltools/internal/cli"
	"github.com/umltools/umltools/internal/errtext"
)

// NumericGID is the group (and only supplementary group) a numeric uid
// runs with, as in the C tool.
const NumericGID = 99

const usage = `Usage : jail_uml jail-directory user uml-command-line ...
    or: jail_uml jail-directory uid uml-command-line ...

If the user is not found, it's assumed to be a uid.
`

const help = `Usage: jail_uml <jail directory> <user|uid> <command> [args...]

Run <command> chrooted into <jail directory> as an unprivileged user:
chdir to the directory, chroot("."), set the supplementary groups, the
gid and the uid, then exec <command> (a path inside the jail; PATH is not
searched) with the remaining arguments and the caller's environment.

A user name found in /etc/passwd runs with its uid, gid and groups (its
primary group plus its /etc/group memberships). Anything else must be a
number (decimal, 0x hex or 0 octal) and runs as that uid with gid 99 and
groups {99}. Must be run as root.

  -h, --help   show this help
  --version    show the version

Exit status: 1 on any error (the C tool's code); otherwise the command's.
`

// Creds are the credentials the command runs with.
type Creds struct {
	UID, GID int
	Groups   []int
}

// Files names the account databases Resolve reads.
type Files struct {
	Passwd, Group string
}

// System returns the host's account database files.
func System() Files { return Files{Passwd: "/etc/passwd", Group: "/etc/group"} }

// Resolve turns the user argument into credentials: a user name in the
// passwd file gives its uid and gid and its groups as initgroups(3)
// would set them (the primary gid first, then each group listing the user,
// in file order); otherwise a number gives that uid with gid 99 and groups
// {99}. ok is false when neither applies. Unlike the C tool, an empty
// argument and numbers beyond 4294967294 (which wrap, some to root) are
// refused, as are signs.
func Resolve(arg string, f Files) (c Creds, ok bool, err error) {
	uid, gid, found, err := lookupUser(arg, f.Passwd)
	if err != nil {
		return c, false, err
	}
	if found {
		groups, err := groupsOf(arg, gid, f.Group)
		if err != nil {
			return c, false, err
		}
		return Creds{UID: uid, GID: gid, Groups: groups}, true, nil
	}
	uid, ok = ParseUID(arg)
	if !ok {
		return c, false, nil
	}
	return Creds{UID: uid, GID: NumericGID, Groups: []int{NumericGID}}, true, nil
}

// ParseUID reads s like strtoul(s, &end, 0) with nothing left over
// (leading blanks allowed; decimal, 0x hex, 0 octal) and accepts
// 0..4294967294 only: not empty, no sign, not (uid_t)-1.
func ParseUID(s string) (int, bool) {
	s = strings.TrimLeft(s, " \t\n\v\f\r")
	base := 10
	switch {
	case len(s) > 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X'):
		base, s = 16, s[2:]
	case len(s) > 1 && s[0] == '0':
		base, s = 8, s[1:]
	}
	if s == "" || s[0] == '+' || s[0] == '-' {
		return 0, false
	}
	v, err := strconv.ParseUint(s, base, 32)
	if err != nil || v == 1<<32-1 {
		return 0, false
	}
	return int(v), true
}

// fields splits the database file at path into colon-separated records,
// calling fn for each until it returns true.
func fields(path string, fn func(f []string) bool) error {
	fh, err := os.Open(path)
	if err != nil {
		return err
	}
	defer fh.Close()
	sc := bufio.NewScanner(fh)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' || line[0] == '+' || line[0] == '-' {
			continue
		}
		if fn(strings.Split(line, ":")) {
			return nil
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

// lookupUser finds name in the passwd file.
func lookupUser(name, path string) (uid, gid int, found bool, err error) {
	if name == "" {
		return 0, 0, false, nil
	}
	err = fields(path, func(f []string) bool {
		if len(f) < 4 || f[0] != name {
			return false
		}
		u, err1 := strconv.ParseUint(f[2], 10, 32)
		g, err2 := strconv.ParseUint(f[3], 10, 32)
		if err1 != nil || err2 != nil {
			return false
		}
		uid, gid, found = int(u), int(g), true
		return true
	})
	return uid, gid, found, err
}

// groupsOf is initgroups(3): gid, then every group whose member list
// names user, without repeats.
func groupsOf(user string, gid int, path string) ([]int, error) {
	groups := []int{gid}
	seen := map[int]bool{gid: true}
	err := fields(path, func(f []string) bool {
		if len(f) < 4 {
			return false
		}
		g, err := strconv.ParseUint(f[2], 10, 32)
		if err != nil || seen[int(g)] {
			return false
		}
		for _, m := range strings.Split(f[3], ",") {
			if strings.TrimSpace(m) == user {
				groups = append(groups, int(g))
				seen[int(g)] = true
				break
			}
		}
		return false
	})
	if errors.Is(err, os.ErrNotExist) {
		err = nil // no group file: the primary group only
	}
	return groups, err
}

// Jail does the privileged steps in the C tool's order: setgroups,
// chdir(dir), chroot("."), setgid, setuid. Each failure names its step
// like perror ("chdir: No such file or directory"). Go applies the
// credential calls to every thread of the process.
func Jail(dir string, c Creds) error {
	steps := []struct {
		name string
		fn   func() error
	}{
		{"setgroups", func() error { return syscall.Setgroups(c.Groups) }},
		{"chdir", func() error { return syscall.Chdir(dir) }},
		{"chroot", func() error { return syscall.Chroot(".") }},
		{"setgid", func() error { return syscall.Setgid(c.GID) }},
		{"setuid", func() error { return syscall.Setuid(c.UID) }},
	}
	for _, s := range steps {
		if err := s.fn(); err != nil {
			return fmt.Errorf("%s: %s", s.name, errtext.Strerror(err))
		}
	}
	return nil
}

// Run is jail_uml's main. It returns only on an error: on success the
// process has become the command.
func Run(args []string, _ io.Reader, stdout, stderr io.Writer) error {
	return run(args, stdout, stderr, System(), syscall.Geteuid)
}

func run(args []string, stdout, stderr io.Writer, f Files, geteuid func() int) error {
	if len(args) == 0 {
		args = []string{"jail_uml"}
	}
	if cli.Standard(args[:min(len(args), 2)], stdout, help) {
		return nil
	}
	if geteuid() != 0 {
		fmt.Fprintln(stderr, "jail_uml must be run as root")
		return cli.Exit(1)
	}
	a := args[1:]
	if len(a) < 3 {
		io.WriteString(stderr, usage)
		return cli.Exit(1)
	}
	c, ok, err := Resolve(a[1], f)
	if err != nil {
		fmt.Fprintf(stderr, "jail_uml: %v\n", err)
		return cli.Exit(1)
	}
	if !ok {
		io.WriteString(stderr, usage)
		return cli.Exit(1)
	}
	if err := Jail(a[0], c); err != nil {
		fmt.Fprintln(stderr, err)
		return cli.Exit(1)
	}
	err = syscall.Exec(a[2], a[2:], os.Environ())
	fmt.Fprintf(stderr, "execve of %s failed : %s\n", a[2], errtext.Strerror(err))
	return cli.Exit(1)
}
