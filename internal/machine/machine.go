// Package machine is one User Mode Linux machine's life: it parses the
// kernel command line, takes the umid directory, opens the ubd disks,
// mounts the root filesystem, brings up the consoles, boots the kernel,
// and turns the guest's end (power off, halt, reboot, init's exit, a
// signal to the engine) into the engine's exit.
package machine

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	chans "github.com/umltools/umltools/internal/chan"
	"github.com/umltools/umltools/internal/cmdline"
	"github.com/umltools/umltools/internal/ext4"
	"github.com/umltools/umltools/internal/fs/extfs"
	"github.com/umltools/umltools/internal/fs/hostfs"
	"github.com/umltools/umltools/internal/fs/tmpfs"
	"github.com/umltools/umltools/internal/kernel"
	"github.com/umltools/umltools/internal/mconsole"
	"github.com/umltools/umltools/internal/netdev"
	"github.com/umltools/umltools/internal/ubd"
	"github.com/umltools/umltools/internal/umid"
	"github.com/umltools/umltools/internal/version"
	"github.com/umltools/umltools/internal/vfs"
)

// defaultInits is the init search order without init= (Linux's).
var defaultInits = []string{"/sbin/init", "/etc/init", "/bin/init", "/bin/sh"}

// IO is where the machine talks to the host.
type IO struct {
	Stdin, Stdout, Stderr *os.File
}

// PanicError is a kernel panic: the machine could not boot or lost init.
type PanicError struct{ Msg string }

func (e *PanicError) Error() string { return "Kernel panic - not syncing: " + e.Msg }

// Run boots the machine described by args (the kernel command line,
// without argv[0]) and returns the engine's exit status.
func Run(args []string, hio IO) int {
	m := &machine{io: hio, start: time.Now()}
	return m.run(args)
}

type machine struct {
	io    IO
	start time.Time
	cfg   *cmdline.Config
	quiet bool
	// procCmdline is /proc/cmdline: the whole command line.
	procCmdline string

	logMu sync.Mutex
	dmesg bytes.Buffer

	// kern is the running boot's kernel (nil between boots), for the
	// root filesystem's questions about open files and for mconsole.
	kern atomic.Pointer[kernel.Kernel]

	dir       *umid.Dir   // the machine directory
	readyDone bool        // the ready-fd= line is written
	panicked  atomic.Bool // a panic was logged: the machine ends with status 1

	// diskMu guards the disks (by unit), the ones the guest has mounted
	// (other than the root), and cfg.Ubd and cfg.Mem after boot.
	diskMu    sync.Mutex
	disks     []ubd.Device
	mounted   map[int]*extfs.FS
	rootIsUbd bool // ubd0 holds the root filesystem
	rootRW    bool // the root was mounted read-write at the first boot

	// lineMu guards lines: the consoles and serial lines beyond con0
	// that are up, by guest device number.
	lineMu sync.Mutex
	lines  map[uint64]*chans.Console
	ports  chans.Ports // port: listeners, shared by lines on one port

	net *netdev.Stack // the network: lo and the ethN devices
}

// logf writes a kernel log line: to the log buffer always, to stderr
// unless quiet.
func (m *machine) logf(format string, a ...any) { m.write(false, format, a...) }

// errorf is a message that quiet does not hide.
func (m *machine) errorf(format string, a ...any) { m.write(true, format, a...) }

func (m *machine) write(always bool, format string, a ...any) {
	msg := fmt.Sprintf(format, a...)
	m.logMu.Lock()
	defer m.logMu.Unlock()
	for _, line := range strings.Split(strings.TrimRight(msg, "\n"), "\n") {
		d := time.Since(m.start)
		fmt.Fprintf(&m.dmesg, "[%5d.%06d] %s\n", int(d/time.Second), int(d%time.Second/time.Microsecond), line)
		if always || !m.quiet {
			fmt.Fprintln(m.io.Stderr, line)
		}
	}
}

func (m *machine) log() []byte {
	m.logMu.Lock()
	defer m.logMu.Unlock()
	return append([]byte(nil), m.dmesg.Bytes()...)
}

func (m *machine) run(args []string) int {
	cfg, warns, err := cmdline.Parse(args)
	dashes := -1
	for i, a := range args {
		if a == "--" {
			dashes = i
			break
		}
	}
	if err != nil && dashes >= 0 {
		// The words after "--" reach init intact (below), so the
		// kernel's limit on re-split init words does not apply to them.
		var perr error
		if cfg, warns, perr = cmdline.Parse(args[:dashes]); perr == nil {
			err = nil
			line := cfg.ProcCmdline()
			tail := " " + cmdline.DefaultRootArg + " " + cmdline.DefaultConsArg
			after := " -- " + strings.Join(args[dashes+1:], " ")
			if strings.HasSuffix(line, tail) {
				line = strings.TrimSuffix(line, tail) + after + tail
			} else {
				line += after
			}
			m.procCmdline = line
		}
	}
	if err != nil {
		fmt.Fprintf(m.io.Stderr, "linux: %v\n", err)
		return 2
	}
	if len(args) == 1 && args[0] == "-h" {
		cfg.Help = true
	}
	switch {
	case cfg.Help:
		fmt.Fprint(m.io.Stdout, Help)
		return 0
	case cfg.Version:
		fmt.Fprintf(m.io.Stdout, "%s\n%s\n", kernel.Release, version.String("linux"))
		return 0
	case cfg.ShowConfig:
		fmt.Fprintf(m.io.Stdout, "# umltools engine %s\nCONFIG_UML=y\nCONFIG_64BIT=y\nCONFIG_DEVTMPFS=y\nCONFIG_DEVTMPFS_MOUNT=y\nCONFIG_EXT4_FS=y\nCONFIG_TMPFS=y\nCONFIG_PROC_FS=y\n", version.Version)
		return 0
	}
	if m.procCmdline == "" {
		m.procCmdline = cfg.ProcCmdline()
	}
	// Init's argv follows the kernel's rules, except that the argv
	// elements after a bare "--" reach init intact, and the words before
	// it configure the machine (the C kernel re-splits them at spaces and
	// loses its default root= to init's argv, then panics).
	initArgs := cfg.InitArgs
	if dashes >= 0 {
		if pre, _, err := cmdline.Parse(args[:dashes]); err == nil {
			cfg = pre
			initArgs = append(append([]string(nil), pre.InitArgs...), args[dashes+1:]...)
		}
	}
	initEnv := cfg.InitEnv
	m.cfg = cfg
	m.quiet = cfg.Quiet
	m.logf("Linux version %s (umltools engine) %s", kernel.Release, kernel.UnameVersion())
	m.logf("Kernel command line: %s", m.procCmdline)
	for _, w := range warns {
		if w.Level == cmdline.Error {
			m.errorf("%s", w.Msg)
		} else {
			m.logf("%s", w.Msg)
		}
	}
	if l := cfg.UnknownLine(); l != "" {
		m.logf("%s", l)
	}
	st, err := m.startNet()
	if err != nil {
		m.errorf("network: %v", err)
		return 1
	}
	defer st.Close()
	m.net = st

	base := cfg.UMLDir
	if base == "" {
		if base, err = umid.DefaultBase(); err != nil {
			m.errorf("%v", err)
			return 1
		}
	}
	// The machine directory appears (under its umid) only once its
	// mconsole socket answers: scripts may wait for it.
	dir, err := umid.StageOrRandom(base, cfg.Umid, os.Getpid(), m.logf)
	if err != nil {
		m.errorf("Failed to initialize umid: %v", err)
		return 1
	}
	m.dir = dir
	defer dir.Remove()
	srv := m.startMconsole(dir.Socket())
	if err := dir.PublishOrRandom(m.logf); err != nil {
		m.errorf("Failed to initialize umid: %v", err)
		if srv != nil {
			srv.Close()
		}
		return 1
	}
	if srv != nil {
		defer srv.Close()
		m.logf("mconsole (version 2) initialized on %s", dir.Socket())
		m.notify(mconsole.NotifySocket, append([]byte(dir.Socket()), 0))
	}

	m.mounted = map[int]*extfs.FS{}
	root, code := m.openDisks()
	defer m.closeDisks()
	if code >= 0 {
		return code
	}
	// A clean unmount at every end but the engine's own death: the
	// page cache is written back and the filesystem marked clean.
	defer func() {
		if err := root.Close(); err != nil {
			m.errorf("%s: unmount: %v", root.source(), err)
		}
	}()

	con, err := m.console()
	if err != nil {
		m.errorf("con0: %v", err)
		return 1
	}
	if con != nil {
		defer con.Close()
	}
	m.startPorts()
	defer m.closeLines()

	// Signals to the engine shut the machine down.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)

	for {
		status, again := m.boot(root, con, initArgs, initEnv, sigs)
		if !again {
			return status
		}
		m.logf("reboot: restarting")
	}
}

// rootFS is the root filesystem: an ext4 image on ubd0, or a host
// directory (rootfstype=hostfs).
type rootFS interface {
	vfs.FS
	Writable() bool
	Sync() error
	Close() error
}

// ext4Root is the ubd0 image's filesystem.
type ext4Root struct{ *extfs.FS }

func (ext4Root) source() string { return "EXT4-fs (ubda)" }

// hostRoot is a host directory as the root.
type hostRoot struct{ *hostfs.FS }

func (hostRoot) source() string { return "hostfs" }

// policy is where guest hostfs mounts may reach: beneath hostfs= (paths
// relative to it), else host paths beneath hostfs_allow=, else nowhere.
func (m *machine) policy() *hostfs.Policy {
	switch {
	case m.cfg.HostFS != "":
		return &hostfs.Policy{Root: m.cfg.HostFS, Append: m.cfg.HostFSAppend}
	case m.cfg.HostFSAllow != "":
		return &hostfs.Policy{Root: m.cfg.HostFSAllow, Absolute: true, Append: m.cfg.HostFSAppend}
	}
	return nil
}

// mountHostRoot mounts rootflags= as the root: beneath hostfs= when it is
// given (the C kernel's prefix), else the directory itself, which then
// confines the guest's root.
func (m *machine) mountHostRoot() (*hostfs.FS, error) {
	path, o, err := hostfs.ParseData(m.cfg.RootFlags)
	if err != nil {
		return nil, err
	}
	o.ReadOnly = m.cfg.ReadOnly
	p := m.policy()
	if p == nil {
		if path == "" {
			return nil, errors.New("rootfstype=hostfs needs rootflags=<host directory>")
		}
		p, path = &hostfs.Policy{Root: path}, "/"
	}
	return p.Mount(path, o)
}

// openDisks opens every configured ubd device, as the C kernel does at
// boot (so their locks are taken), and mounts ubd0 (or the hostfs
// directory) as the root. code is the exit status when the machine
// cannot boot, -1 otherwise.
func (m *machine) openDisks() (root interface {
	rootFS
	source() string
}, code int) {
	disks := make([]ubd.Device, cmdline.MaxUbd)
	m.disks = disks
	for i, sp := range m.cfg.Ubd {
		if sp == nil || sp.File == "" {
			continue
		}
		d, err := m.openDisk(sp)
		if err != nil {
			m.errorf("Failed to initialize ubd device %d :%v", i, err)
			continue
		}
		disks[i] = d
	}
	if m.cfg.RootFSType == "hostfs" {
		hf, err := m.mountHostRoot()
		if err != nil {
			m.errorf("%v", err)
			m.panic("VFS: Unable to mount root fs on hostfs")
			return nil, 1
		}
		ro := ""
		if !hf.Writable() {
			ro = " readonly"
		}
		m.logf("VFS: Mounted root (hostfs filesystem)%s on %s.", ro, hf.HostPath())
		m.rootRW = hf.Writable()
		return hostRoot{hf}, -1
	}
	if m.cfg.RootFSType != "" && m.cfg.RootFSType != "ext4" && m.cfg.RootFSType != "ext3" && m.cfg.RootFSType != "ext2" {
		m.panic(fmt.Sprintf("VFS: Unable to mount root fs of type %s (not supported yet)", m.cfg.RootFSType))
		return nil, 1
	}
	if m.cfg.Root != "98:0" && m.cfg.Root != "/dev/ubda" && m.cfg.Root != "/dev/ubd0" && m.cfg.Root != "/dev/root" {
		m.panic(fmt.Sprintf("VFS: Unable to mount root fs on %s (only ubd0 is supported)", m.cfg.Root))
		return nil, 1
	}
	d := disks[0]
	if d == nil {
		m.panic("VFS: Unable to mount root fs on unknown-block(98,0)")
		return nil, 1
	}
	ro := m.cfg.ReadOnly || d.ReadOnly()
	if !m.cfg.ReadOnly && d.ReadOnly() {
		m.logf("ubda: write-protected, mounting read-only")
	}
	// Freed blocks are punched out of the image only with rootflags=discard
	// (ext4's online discard, off by default as in Linux) and no ubd0t.
	opts := extfs.Options{ReadOnly: ro, Discard: !m.cfg.Ubd[0].NoTrim && hasFlag(m.cfg.RootFlags, "discard"), Logf: m.logf, Held: m.held, Dropped: m.dropped}
	fs, err := extfs.Mount(d, d.Size(), opts)
	if err != nil && !ro && errors.Is(err, ext4.ErrReadOnly) {
		// A filesystem this driver reads but cannot write (ext2/ext3
		// block maps, inline data…): mounted read-only, with the reason.
		m.logf("EXT4-fs (ubda): %v; mounting read-only", err)
		opts.ReadOnly = true
		fs, err = extfs.Mount(d, d.Size(), opts)
	}
	if err != nil {
		m.errorf("EXT4-fs (ubda): %v", err)
		m.panic("VFS: Unable to mount root fs on unknown-block(98,0)")
		return nil, 1
	}
	if fs.Writable() {
		m.logf("EXT4-fs (ubda): mounted filesystem without journal (read-write; written back on sync, close and every 5 s).")
		m.logf("VFS: Mounted root (ext4 filesystem) on device 98:0.")
	} else {
		m.logf("EXT4-fs (ubda): mounted filesystem without journal (read-only).")
		m.logf("VFS: Mounted root (ext4 filesystem) readonly on device 98:0.")
	}
	m.rootIsUbd = true
	m.rootRW = fs.Writable()
	return ext4Root{fs}, -1
}

// console brings up con0 (nil when it is "none").
func (m *machine) console() (*chans.Console, error) {
	l := m.cfg.Con[0]
	if l.None {
		return nil, nil
	}
	c, err := chans.New(l.In, l.Out, m.chanOptions("con0"))
	if err != nil {
		return nil, err
	}
	return c, nil
}

// ttyConsole adapts a Console to the kernel.
type ttyConsole struct{ c *chans.Console }

func (t ttyConsole) OpenSlave(flags int) (*os.File, error) {
	// Not os.OpenFile: it would make the guest's console non-blocking.
	fd, err := syscall.Open(t.c.SlavePath(), flags|syscall.O_CLOEXEC|syscall.O_NOCTTY, 0)
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(fd), t.c.SlavePath()), nil
}

func (t ttyConsole) Rdev() uint64 { return t.c.Rdev() }

// boot runs the guest once. again is true for a reboot.
func (m *machine) boot(root rootFS, con *chans.Console, initArgs, initEnv []string, sigs chan os.Signal) (status int, again bool) {
	if rm, ok := root.(vfs.Remounter); ok && m.rootRW && !root.Writable() {
		// A reboot mounts the root afresh: read-write again after the
		// guest's shutdown remounted it read-only (umountroot).
		if err := rm.Remount(false); err != nil {
			m.logf("root: remount read-write: %v", err)
		}
	}
	var rflags uintptr
	if !root.Writable() {
		rflags = vfs.ReadOnly
	}
	source, dev := "/dev/ubda", vfs.Mkdev(98, 0)
	if _, ok := root.(hostRoot); ok {
		source, dev = "/dev/root", vfs.Mkdev(0, 15)
	}
	v := vfs.New(root, source, rflags, dev)
	halted := make(chan kernel.HaltMode, 1)
	kcfg := kernel.Config{VFS: v, Hostname: imageHostname(v), Mem: m.cfg.Mem, Cmdline: m.procCmdline,
		Logf: m.logf, Dmesg: m.log, OnHalt: func(h kernel.HaltMode) { halted <- h }, HostFS: m.policy(), Disks: m, Lines: m.line, Net: m.net}
	if m.cfg.MconsoleNotify != "" {
		kcfg.UserNotify = func(b []byte) { m.notify(mconsole.NotifyUserNotify, b) }
	}
	var files []*os.File
	if con != nil {
		kcfg.Console = ttyConsole{con}
		files = []*os.File{con.Slave(), con.Slave(), con.Slave()}
	} else {
		m.errorf("Warning: unable to open an initial console.")
	}
	tr := m.cfg.Trace
	if tr == "" {
		tr = os.Getenv("UMLTOOLS_TRACE")
	}
	if tr != "" {
		f, err := os.OpenFile(tr, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
		if err != nil {
			m.errorf("trace: %v", err)
		} else {
			defer f.Close()
			var mu sync.Mutex
			kcfg.Trace = func(line string) {
				mu.Lock()
				fmt.Fprintln(f, line)
				mu.Unlock()
			}
		}
	}
	k, err := kernel.New(kcfg)
	if err != nil {
		m.errorf("%v", err)
		return 1, false
	}
	defer k.Close()
	m.kern.Store(k)
	defer m.kern.Store(nil)
	// Whatever ends this boot, what the guest wrote reaches the image,
	// and disks it left mounted are unmounted cleanly.
	defer root.Sync()
	defer m.unmountDisks()
	// devtmpfs is mounted on /dev, as the C kernel (CONFIG_DEVTMPFS_MOUNT)
	// does, when the image has a /dev directory.
	if d, err := (&vfs.Walker{V: v, Root: v.Root(), Cwd: v.Root()}).Lookup("/dev", true); err == nil {
		if _, err := v.Mount(k.DevFS(), d, "devtmpfs", 0, "", v.AnonDev()); err == nil {
			m.logf("devtmpfs: mounted")
		}
	}
	m.addDiskNodes(k)
	m.addLineNodes(k)
	m.mountScratch(k, v)
	init, err := m.pickInit(v)
	if err != nil {
		var pe *PanicError
		if errors.As(err, &pe) {
			m.panic(pe.Msg)
		} else {
			m.errorf("%v", err)
		}
		return 1, false
	}
	argv := append([]string{init}, initArgs...)
	m.logf("Run %s as init process", init)
	sb, err := k.Start(init, argv, initEnv, files)
	if err != nil {
		m.panic(fmt.Sprintf("Requested init %s failed (%v).", init, err))
		return 1, false
	}
	m.ready()
	done := make(chan struct{})
	var ws unix.WaitStatus
	var werr error
	go func() {
		ws, werr = sb.Wait()
		close(done)
	}()
	var sig os.Signal
	for {
		select {
		case sig = <-sigs:
			m.errorf("linux: received %v, shutting the machine down", sig)
			sb.Kill()
			continue
		case <-done:
		}
		break
	}
	if s, ok := sig.(syscall.Signal); ok {
		// A signal to the engine ends the machine, even one that was
		// rebooting when it came.
		return 128 + int(s), false
	}
	select {
	case h := <-halted:
		if m.panicked.Load() {
			return 1, false // sysrq c: the panic ends the machine
		}
		switch h {
		case kernel.Restart:
			if m.cfg.NoReboot {
				return 0, false
			}
			return 0, true
		default:
			return 0, false
		}
	default:
	}
	if werr != nil {
		m.errorf("%v", werr)
		return 1, false
	}
	code := ws.ExitStatus()
	if ws.Signaled() {
		code = 128 + int(ws.Signal())
	}
	m.panic(fmt.Sprintf("Attempted to kill init! exitcode=0x%08x", code<<8))
	return code, false
}

// pickInit returns init= or the first of defaultInits that exists.
func (m *machine) pickInit(v *vfs.VFS) (string, error) {
	if m.cfg.Init != "" {
		return m.cfg.Init, nil
	}
	w := &vfs.Walker{V: v, Root: v.Root(), Cwd: v.Root()}
	for _, p := range defaultInits {
		if d, err := w.Lookup(p, true); err == nil {
			if a, err := d.Node.Attr(); err == nil && a.Type() == syscall.S_IFREG {
				return p, nil
			}
		}
	}
	return "", &PanicError{kernel.ErrNoInit.Error()}
}

// imageHostname reads the image's /etc/hostname.
func imageHostname(v *vfs.VFS) string {
	w := &vfs.Walker{V: v, Root: v.Root(), Cwd: v.Root()}
	d, err := w.Lookup("/etc/hostname", true)
	if err != nil {
		return ""
	}
	on, ok := d.Node.(vfs.OpenNode)
	if !ok {
		return ""
	}
	f, err := on.Open(nil, syscall.O_RDONLY)
	if err != nil {
		return ""
	}
	defer f.Close()
	line, _ := bufio.NewReader(io.LimitReader(f, 65)).ReadString('\n')
	return strings.TrimSpace(line)
}

// Help is the engine's --help text.
const Help = `User Mode Linux engine (umltools)
	a Go re-implementation; see linux(1)

Usage: linux [options] [-- init arguments]

Common options (the C kernel's syntax):
    ubd<N><flags>=<file>[,<backing file>]
        A block device; ubd0 is the root filesystem (ext2/3/4 image).
        Flags: r read-only, s synchronous, d not a COW file, c shared
        (no host locking), t no discard.
    con[N]=<channel>[,<channel>]   ssl[N]=...
        Console and serial line channels: fd:<n>, null, none, pts (and
        pty: a host pty, named in the log), port:<n> (a built-in telnet
        server), tty:<dev>, xterm (needs $DISPLAY). conN is the guest's
        /dev/ttyN, sslN its /dev/ttySN.
    mem=<size>       memory size (K, M, G suffixes)
    umid=<name>      machine id (default: random)
    uml_dir=<dir>    directory for machine ids (default: ~/.uml)
    root=<dev>  ro  rw  init=<path>  rootfstype=<type>  quiet  noreboot
    hostfs=<dir>[,append]
        Allow guest hostfs mounts beneath <dir> only, paths relative to it.
    hostfs_allow=<dir>
        Allow guest hostfs mounts of host paths beneath <dir> only.
        (Without either, hostfs mounts are refused.)
    rootfstype=hostfs rootflags=<dir>
        Boot from the host directory <dir> instead of ubd0.
    mconsole=notify:<socket>
        Send mconsole notifications (socket, panic, /proc/mconsole
        writes) to a SOCK_DGRAM socket.
    ready-fd=<n>
        When init has started, write "<umid> <mconsole socket>" to the
        engine's fd n and close it.
    eth<N>=<transport>,...  network devices (parsed; the network comes
        in a later version)
    --help  --version  --showconfig

Other words go to init: name=value to its environment, the rest to its
argv; arguments after a bare "--" reach init unchanged.
`

// mountScratch mounts tmpfs on /tmp and /run while the root filesystem is
// read-only (the engine cannot write ext4 yet), so that programs that
// need scratch space work. Each must be a directory in the image.
func (m *machine) mountScratch(k *kernel.Kernel, v *vfs.VFS) {
	if !v.RootMount().ReadOnly() {
		return
	}
	for _, s := range []struct {
		at   string
		mode uint32
	}{{"/tmp", 0o1777}, {"/run", 0o755}} {
		d, err := (&vfs.Walker{V: v, Root: v.Root(), Cwd: v.Root()}).Lookup(s.at, true)
		if err != nil {
			continue
		}
		if a, err := d.Node.Attr(); err != nil || !a.IsDir() {
			continue
		}
		fs := tmpfs.New("tmpfs", tmpfs.Magic, s.mode, 0, 0)
		opts := fmt.Sprintf("mode=%o", s.mode)
		if _, err := v.Mount(fs, d, "tmpfs", vfs.NoSuid|vfs.NoDev, opts, v.AnonDev()); err == nil {
			m.logf("tmpfs: mounted on %s (the root filesystem is read-only)", s.at)
		}
	}
}

// hasFlag reports whether the comma-separated mount options opts hold
// word (the last of word and no<word> wins, as mount(8) takes them).
func hasFlag(opts, word string) bool {
	on := false
	for _, o := range strings.Split(opts, ",") {
		switch o {
		case word:
			on = true
		case "no" + word:
			on = false
		}
	}
	return on
}
