// Package umid manages a machine's directory under the UML base directory
// (~/.uml/<umid>/) exactly as the C kernel does: the pid file, stale
// directory takeover, refusal when the owner is alive, random umids, and
// removal on clean shutdown. The engine and uml_mconsole share it.
package umid

import (
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// MaxLen is the longest umid the kernel accepts.
const MaxLen = 63

// PidFile and SocketName are the file names inside a machine directory.
const (
	PidFile    = "pid"
	SocketName = "mconsole"
)

// ErrTooLong is returned for a umid longer than MaxLen (the kernel's E2BIG).
var ErrTooLong = errors.New("umid too long")

// InUseError reports a machine directory owned by a live process.
type InUseError struct {
	Umid string
	Pid  int
}

func (e *InUseError) Error() string {
	return fmt.Sprintf("umid \"%s\" is already in use by pid %d", e.Umid, e.Pid)
}

// DefaultBase returns the default base directory, "$HOME/.uml/".
func DefaultBase() (string, error) {
	home := os.Getenv("HOME")
	if home == "" {
		return "", errors.New("make_uml_dir : no value in environment for $HOME")
	}
	return home + "/.uml/", nil
}

// Dir is a machine directory that this process owns.
type Dir struct {
	Base string // with a trailing slash, as uml_dir= is normalised
	Umid string

	staged string // the hidden name it has until Publish ("": published)
}

// Path returns <base><umid>, or the hidden name of a staged directory.
func (d *Dir) Path() string {
	if d.staged != "" {
		return d.staged
	}
	return d.Base + d.Umid
}

// File returns the path of a file in the machine directory.
func (d *Dir) File(name string) string { return filepath.Join(d.Path(), name) }

// Socket returns the mconsole socket path.
func (d *Dir) Socket() string { return d.File(SocketName) }

// normBase applies the uml_dir= rules: default $HOME/.uml/, trailing slash.
func normBase(base string) (string, error) {
	if base == "" {
		return DefaultBase()
	}
	if !strings.HasSuffix(base, "/") {
		base += "/"
	}
	return base, nil
}

// Create makes the machine directory <base><umid>/ for process pid and
// writes its pid file ("%d\n", O_EXCL, 0644). base "" means $HOME/.uml/.
// An empty umid picks a random 6-character one. An existing directory is
// taken over when its pid file names a dead process (ESRCH), after
// removing its files; a live owner gives *InUseError.
func Create(base, umid string, pid int) (*Dir, error) {
	base, err := prepare(base, umid)
	if err != nil {
		return nil, err
	}
	random := umid == ""
	for tries := 0; ; tries++ {
		if random {
			umid = randomName()
		}
		d := &Dir{Base: base, Umid: umid}
		err := os.Mkdir(d.Path(), 0o777)
		if err == nil {
			return d, d.writePid(pid)
		}
		if !errors.Is(err, os.ErrExist) {
			return nil, fmt.Errorf("creating %s: %w", d.Path(), err)
		}
		if random {
			if tries > 100 {
				return nil, fmt.Errorf("no free random umid in %s", base)
			}
			continue
		}
		if err := d.takeOver(); err != nil {
			return nil, err
		}
		if err := os.Mkdir(d.Path(), 0o777); err != nil {
			return nil, fmt.Errorf("creating %s: %w", d.Path(), err)
		}
		return d, d.writePid(pid)
	}
}

// Stage is Create for a directory that must not be seen before it is
// ready: the directory is made under a hidden name in base (".<umid>.<pid>")
// with its pid file, for the caller to fill (the mconsole socket), and
// appears as <base><umid> only at Publish. A stale <base><umid> is taken
// over now; a live one gives *InUseError.
func Stage(base, umid string, pid int) (*Dir, error) {
	base, err := prepare(base, umid)
	if err != nil {
		return nil, err
	}
	if umid == "" {
		umid = randomName()
	}
	d := &Dir{Base: base, Umid: umid}
	if _, err := os.Lstat(d.Path()); err == nil {
		if err := d.takeOver(); err != nil {
			return nil, err
		}
	}
	d.staged = fmt.Sprintf("%s.%s.%d", base, umid, pid)
	os.RemoveAll(d.staged) // a leftover of a dead engine with this pid
	if err := os.Mkdir(d.staged, 0o777); err != nil {
		return nil, fmt.Errorf("creating %s: %w", d.staged, err)
	}
	if err := d.writePid(pid); err != nil {
		d.Remove()
		return nil, err
	}
	return d, nil
}

// Publish renames a staged directory to <base><umid>. It never replaces
// a directory that appeared meanwhile: then it fails with *InUseError (or
// the error of the rename) and the directory stays staged.
func (d *Dir) Publish() error {
	if d.staged == "" {
		return nil
	}
	err := unix.Renameat2(unix.AT_FDCWD, d.staged, unix.AT_FDCWD, d.Base+d.Umid, unix.RENAME_NOREPLACE)
	if errors.Is(err, unix.EEXIST) || errors.Is(err, unix.ENOTEMPTY) {
		pid, _ := ReadPid(d.Base + d.Umid)
		return &InUseError{Umid: d.Umid, Pid: pid}
	}
	if err != nil {
		return fmt.Errorf("publishing %s: %w", d.Base+d.Umid, err)
	}
	d.staged = ""
	return nil
}

// PublishOrRandom is Publish with the kernel's fallback: when the umid was
// taken meanwhile, logf gets the kernel's two lines and a random umid is
// published instead.
func (d *Dir) PublishOrRandom(logf func(format string, a ...any)) error {
	err := d.Publish()
	var iu *InUseError
	if !errors.As(err, &iu) {
		return err
	}
	logFallback(logf, err, d.Umid)
	for tries := 0; tries < 100; tries++ {
		d.Umid = randomName()
		if err = d.Publish(); !errors.As(err, &iu) {
			return err
		}
	}
	return err
}

// StageOrRandom is Stage with the kernel's fallback to a random umid when
// umid is in use (or unusable), logging the kernel's two lines.
func StageOrRandom(base, umid string, pid int, logf func(format string, a ...any)) (*Dir, error) {
	return orRandom(Stage, base, umid, pid, logf)
}

// prepare checks umid and makes the base directory (mkdir 0777, as the
// kernel does); it returns the normalised base.
func prepare(base, umid string) (string, error) {
	base, err := normBase(base)
	if err != nil {
		return "", err
	}
	if len(umid) > MaxLen {
		return "", fmt.Errorf("umid %q: %w", umid, ErrTooLong)
	}
	if strings.Contains(umid, "/") || umid == "." || umid == ".." {
		return "", fmt.Errorf("umid %q: must not contain '/' or be . or ..", umid)
	}
	if err := os.Mkdir(base, 0o777); err != nil && !errors.Is(err, os.ErrExist) {
		return "", fmt.Errorf("creating uml_dir %s: %w", base, err)
	}
	return base, nil
}

// takeOver removes a stale machine directory, or reports its live owner.
func (d *Dir) takeOver() error {
	if pid, ok := ReadPid(d.Path()); ok {
		err := syscall.Kill(pid, 0)
		if err == nil || !errors.Is(err, syscall.ESRCH) {
			return &InUseError{Umid: d.Umid, Pid: pid}
		}
	}
	return d.Remove()
}

func (d *Dir) writePid(pid int) error {
	f, err := os.OpenFile(d.File(PidFile), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return fmt.Errorf("creating pid file: %w", err)
	}
	_, err = fmt.Fprintf(f, "%d\n", pid)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("writing %s: %w", d.File(PidFile), err)
	}
	return nil
}

// ReadPid reads <dir>/pid as the kernel does: at most 10 bytes, parsed as
// an unsigned number in base 0 (decimal, 0x hex, 0 octal), ignoring
// anything after the digits. ok is false when there is no number.
func ReadPid(dir string) (int, bool) {
	f, err := os.Open(filepath.Join(dir, PidFile))
	if err != nil {
		return 0, false
	}
	defer f.Close()
	buf := make([]byte, 10)
	n, _ := f.Read(buf)
	return parseUlong(string(buf[:n]))
}

// parseUlong mimics strtoul(s, &end, 0) for a pid: leading blanks, then
// the longest decimal, 0x-hex or 0-octal number; ok is false for no
// number, zero, or a value too large for a pid.
func parseUlong(s string) (int, bool) {
	s = strings.TrimLeft(s, " \t\n\v\f\r")
	base, digits, start := 10, "0123456789", 0
	switch {
	case len(s) > 2 && (s[:2] == "0x" || s[:2] == "0X") && strings.ContainsRune("0123456789abcdefABCDEF", rune(s[2])):
		base, digits, start = 16, "0123456789abcdefABCDEF", 2
	case len(s) > 0 && s[0] == '0':
		base, digits = 8, "01234567"
	}
	end := start
	for end < len(s) && strings.IndexByte(digits, s[end]) >= 0 {
		end++
	}
	v, err := strconv.ParseUint(s[start:end], base, 31)
	if err != nil || v == 0 {
		return 0, false
	}
	return int(v), true
}

// CreateOrRandom is Create with the kernel's fallback: when umid is in use
// (or unusable) it logs, through logf, the kernel's two lines and takes a
// random umid instead.
func CreateOrRandom(base, umid string, pid int, logf func(format string, a ...any)) (*Dir, error) {
	return orRandom(Create, base, umid, pid, logf)
}

// orRandom calls mk for umid, and again for a random one (after the
// kernel's two log lines) when that fails.
func orRandom(mk func(base, umid string, pid int) (*Dir, error), base, umid string, pid int, logf func(format string, a ...any)) (*Dir, error) {
	d, err := mk(base, umid, pid)
	if err == nil || umid == "" {
		return d, err
	}
	logFallback(logf, err, umid)
	return mk(base, "", pid)
}

// logFallback logs the kernel's two lines for a umid it cannot take.
func logFallback(logf func(format string, a ...any), err error, umid string) {
	logf("%v", err)
	logf("Failed to initialize umid \"%s\", trying with a random umid", umid)
}

// Remove deletes every file in the machine directory and the directory
// itself, as the kernel does on clean shutdown.
func (d *Dir) Remove() error {
	ents, err := os.ReadDir(d.Path())
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("removing %s: %w", d.Path(), err)
	}
	for _, e := range ents {
		if err := os.Remove(d.File(e.Name())); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("removing %s: %w", d.File(e.Name()), err)
		}
	}
	if err := os.Remove(d.Path()); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("removing %s: %w", d.Path(), err)
	}
	return nil
}

const randChars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"

// randomName returns 6 random characters, like mkstemp's XXXXXX.
func randomName() string {
	b := make([]byte, 6)
	rand.Read(b)
	for i := range b {
		b[i] = randChars[int(b[i])%len(randChars)]
	}
	return string(b)
}
