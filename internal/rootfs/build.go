package rootfs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
)

// Options configures one build.
type Options struct {
	// Image is the image file to create (replaced atomically at the end).
	Image string
	// Config is the merged configuration (never nil).
	Config *Config
	// Profile picks the tree's source when neither FromTar nor FromDir
	// is set: "debian" (default) or "busybox".
	Profile string
	// FromTar packs a tar archive ("-" reads Stdin); FromDir a directory.
	FromTar, FromDir string
	// SizeMB overrides [global] initialsize.
	SizeMB int64
	// Hostname overrides the configured host name.
	Hostname string
	// RootPassword sets root's password (plain text; hashed here). A
	// value starting with '$' is taken as an already hashed password.
	RootPassword string
	// Include adds packages to a Debian bootstrap.
	Include []string
	// ModuleDirs are searched for executable modules that override the
	// built-in ones (default /etc/rootstrap/modules).
	ModuleDirs []string
	// Stdin feeds --from-tar -.
	Stdin io.Reader
	// Progress reports phases (never nil).
	Progress *Progress
	// TmpDir holds the staging tree (default: $TMPDIR).
	TmpDir string

	// noUserns disables user namespaces (tests of the fallback).
	noUserns bool
}

// PhaseError is a build failure tagged with the phase it happened in.
type PhaseError struct {
	Phase string
	Err   error
}

func (e *PhaseError) Error() string { return fmt.Sprintf("%s failed: %v", e.Phase, e.Err) }
func (e *PhaseError) Unwrap() error { return e.Err }

// builder holds one build's state.
type builder struct {
	ctx      context.Context
	o        Options
	c        *Config
	p        *Progress
	tmp      string // scratch directory (staging tree lives inside)
	noUserns bool
	env      []string // base environment for commands
}

// Build runs a whole build: resolve the modules, obtain the tree, run the
// modules, pack the image. On failure nothing is left under o.Image (an
// existing file there is untouched) and the error names the phase.
func Build(ctx context.Context, o Options) (err error) {
	p := o.Progress
	b := &builder{ctx: ctx, o: o, c: o.Config, p: p, noUserns: o.noUserns, env: os.Environ()}
	fail := func(err error) error {
		if err == nil {
			return nil
		}
		var pe *PhaseError
		if errors.As(err, &pe) {
			return err
		}
		return &PhaseError{Phase: p.Current(), Err: err}
	}
	defer func() { p.Done(err == nil) }()

	p.Phase(PhaseResolve)
	plan, err := b.plan()
	if err != nil {
		return fail(err)
	}
	fsType := strings.ToLower(b.c.GetDefault(GlobalSection, "fstype", "ext4"))
	if !validFSType(fsType) {
		return fail(fmt.Errorf("fstype %q: rootstrap makes ext2, ext3 or ext4", fsType))
	}
	size := o.SizeMB
	if size == 0 {
		if v := b.c.GetDefault(GlobalSection, "initialsize", ""); v != "" {
			if size, err = parseMB(v); err != nil {
				return fail(fmt.Errorf("[global] initialsize: %w", err))
			}
		}
	}
	var free int64
	if v := b.c.GetDefault(GlobalSection, "freespace", ""); v != "" {
		if free, err = parseMB(v); err != nil {
			return fail(fmt.Errorf("[global] freespace: %w", err))
		}
	}
	if v := b.c.GetDefault(GlobalSection, "umlargs", ""); v != "" {
		p.Debugf("umlargs ignored: rootstrap builds without booting UML")
	}

	// Claim the output name's directory early: an unwritable target
	// fails before anything is downloaded.
	img, err := filepath.Abs(o.Image)
	if err != nil {
		return fail(err)
	}
	if fi, err := os.Stat(img); err == nil && fi.IsDir() {
		return fail(fmt.Errorf("%s is a directory", o.Image))
	}
	out, err := os.CreateTemp(filepath.Dir(img), "."+filepath.Base(img)+".rootstrap-*")
	if err != nil {
		return fail(fmt.Errorf("cannot create the image: %w", err))
	}
	tmpImg := out.Name()
	out.Close()
	defer func() {
		if err != nil {
			os.Remove(tmpImg)
		}
	}()

	if b.tmp, err = os.MkdirTemp(o.TmpDir, "rootstrap-"); err != nil {
		return fail(err)
	}
	defer b.cleanup()
	stage := filepath.Join(b.tmp, "root")
	if err := os.Mkdir(stage, 0o755); err != nil {
		return fail(err)
	}
	t, err := NewTree(stage, os.Geteuid() == 0)
	if err != nil {
		return fail(err)
	}

	for i, m := range plan {
		if i == 1 || (i == 0 && !m.source) {
			p.Phase(PhaseConfigure)
		}
		p.Debugf("module %s (%s)", m.name, m.origin())
		if err := b.runModule(t, m, img); err != nil {
			return fail(fmt.Errorf("module %s: %w", m.name, err))
		}
	}

	p.Phase(PhasePack)
	label := b.c.GetDefault(GlobalSection, "label", "")
	if err := b.pack(t, PackOptions{FSType: fsType, SizeMB: size, FreeMB: free, Label: label}, tmpImg); err != nil {
		return fail(err)
	}
	if err := os.Chmod(tmpImg, 0o644&^umask()); err != nil {
		return fail(err)
	}
	if err := os.Rename(tmpImg, img); err != nil {
		return fail(err)
	}
	p.Infof("wrote %s in %.1fs", o.Image, p.Elapsed().Seconds())
	return nil
}

func umask() os.FileMode {
	m := syscall.Umask(0)
	syscall.Umask(m)
	return os.FileMode(m)
}

// parseMB parses a size in megabytes ("150", "150M", "2G").
func parseMB(s string) (int64, error) {
	s = strings.TrimSpace(s)
	mult := int64(1)
	switch {
	case strings.HasSuffix(s, "G"), strings.HasSuffix(s, "g"):
		mult, s = 1024, s[:len(s)-1]
	case strings.HasSuffix(s, "M"), strings.HasSuffix(s, "m"):
		s = s[:len(s)-1]
	}
	var n int64
	if s == "" {
		return 0, fmt.Errorf("bad size %q", s)
	}
	for _, r := range s {
		if r < '0' || r > '9' {
			return 0, fmt.Errorf("bad size %q: want megabytes, e.g. 512 or 2G", s)
		}
		n = n*10 + int64(r-'0')
		if n > 1<<30 {
			return 0, fmt.Errorf("size %q is too large", s)
		}
	}
	return n * mult, nil
}

// ParseMB parses a size in megabytes as -s/--image-size takes it.
func ParseMB(s string) (int64, error) {
	n, err := parseMB(s)
	if err == nil && n <= 0 {
		err = fmt.Errorf("bad size %q: must be positive", s)
	}
	return n, err
}

// cleanup removes the scratch directory, first unmounting anything a
// failed bootstrap left mounted inside it (never following it across).
func (b *builder) cleanup() {
	if b.tmp == "" {
		return
	}
	if os.Geteuid() == 0 {
		for _, m := range mountsUnder(b.tmp) {
			syscall.Unmount(m, syscall.MNT_DETACH)
		}
		if len(mountsUnder(b.tmp)) > 0 {
			b.p.Warnf("leaving %s: still has mounts", b.tmp)
			return
		}
	}
	// Unprivileged trees may hold directories without write permission.
	filepath.WalkDir(b.tmp, func(path string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			os.Chmod(path, 0o700)
		}
		return nil
	})
	if err := os.RemoveAll(b.tmp); err != nil {
		b.p.Warnf("removing %s: %v", b.tmp, err)
	}
}

// mountsUnder lists mount points below dir, deepest first.
func mountsUnder(dir string) []string {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	var out []string
	for _, l := range strings.Split(string(data), "\n") {
		f := strings.Fields(l)
		if len(f) > 4 && strings.HasPrefix(f[4], dir+"/") {
			out = append(out, f[4])
		}
	}
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return out
}

// runSpec describes a command run by the builder.
type runSpec struct {
	name   string // for messages
	path   string
	args   []string
	dir    string
	env    []string // replaces the builder's environment when set
	stdin  io.Reader
	userns bool
	hook   func(line string)
}

// run runs a command, streaming its output into the log (and to the screen
// with -v). A failure carries the command's last error line.
func (b *builder) run(s runSpec) error {
	cmd := exec.CommandContext(b.ctx, s.path, s.args...)
	cmd.Dir = s.dir
	cmd.Env = b.env
	if s.env != nil {
		cmd.Env = s.env
	}
	cmd.Stdin = s.stdin
	lw := &lineWriter{p: b.p, hook: s.hook}
	cmd.Stdout, cmd.Stderr = lw, lw
	if s.userns {
		cmd.SysProcAttr = usernsAttr()
	}
	b.p.Debugf("run: %s %s", s.path, strings.Join(s.args, " "))
	if err := cmd.Start(); err != nil {
		return &startErr{fmt.Errorf("%s: %w", s.name, err)}
	}
	err := cmd.Wait()
	lw.flush()
	if err != nil {
		if msg := lw.lastError(); msg != "" {
			return fmt.Errorf("%s: %v: %s", s.name, err, msg)
		}
		return fmt.Errorf("%s: %w", s.name, err)
	}
	return nil
}

// BuildDefault writes the project's default guest image to path: the
// busybox profile with the built-in configuration only (no configuration
// files are read), quietly, its full log going to log (may be nil). Boot
// it with /sbin/init for a console shell, or init=/init umlrun=DIR to run
// DIR/run.sh from the host and power off.
func BuildDefault(ctx context.Context, path string, log io.Writer) error {
	return Build(ctx, Options{
		Image:      path,
		Config:     NewConfig(),
		Profile:    "busybox",
		ModuleDirs: []string{},
		Progress:   NewProgress(io.Discard, false, true, false, log),
	})
}
