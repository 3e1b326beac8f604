package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/umltools/umltools/internal/cli"
	"github.com/umltools/umltools/internal/switchd"
	"github.com/umltools/umltools/internal/tuntap"
)

const usageText = "Usage : %s [ -unix control-socket ] [ -hub ] [ -tap tap-device ]\n" +
	"or : %s -compat-v0 [ -unix control-socket data-socket ] [ -hub ] [ -tap tap-device ]\n"

const helpText = `Usage: uml_switch [ -unix control-socket ] [ -hub ] [ -tap tap-device ] [options]
   or: uml_switch -compat-v0 [ -unix control-socket data-socket ] [ -hub ] [ -tap tap-device ]

A virtual Ethernet switch for User Mode Linux machines started with
eth<N>=daemon,<mac>,unix,<control-socket>. Options are processed left to right.

  -unix <ctl>        control socket (default /tmp/uml.ctl)
  -hub               flood every frame to every port (a hub, not a switch)
  -tap <dev>         attach host tap device <dev> as a port
  -compat-v0         also accept protocol 0; -unix then takes a data socket too
  -daemon            detach into the background once the sockets are bound
  -mode <octal>      permissions of the control socket (default 0660)
  -group <group>     group of the control socket
  -pidfile <file>    write the process id to <file>
  -pcap <file>       write every forwarded frame to <file> (pcap format)
  -vlan <id>:<ctl>   another control socket whose ports are in VLAN <id>
  -tap-vlan <id>     put the tap port in VLAN <id>
  -trunk             make the tap port an 802.1Q trunk carrying every VLAN
  --json             SIGUSR1 statistics dumps are JSON
  -h, --help         this help;  --version  the version

SIGUSR1 prints the ports, their counters and the learned addresses on stdout.
SIGINT and SIGTERM remove the sockets and exit.
`

// options is the parsed command line.
type options struct {
	ctl      string
	data     string
	hub      bool
	compat   bool
	tap      string
	daemon   bool
	mode     os.FileMode
	gid      int
	pidfile  string
	pcap     string
	vlans    []vlanSock
	tapVLAN  uint16
	trunk    bool
	jsonDump bool
}

type vlanSock struct {
	id   uint16
	path string
}

// daemonEnv marks the re-executed child of -daemon; its value is the
// descriptor of the pipe that reports start-up to the parent.
const daemonEnv = "UML_SWITCH_DAEMON_FD"

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if cli.Standard(args, stdout, helpText) {
		return nil
	}
	prog := cli.Prog(args)
	o, err := parse(args, stdout)
	if err != nil {
		if err == errUsage {
			fmt.Fprintf(stderr, usageText, prog, prog)
		} else {
			fmt.Fprintf(stderr, "%s: %v\n", prog, err)
		}
		return cli.Exit(1)
	}
	if o.daemon && os.Getenv(daemonEnv) == "" {
		return daemonize(args, stderr)
	}
	return serve(prog, o, stdin, stdout, stderr)
}

var errUsage = errors.New("usage")

// parse reads the options left to right as the C switch does: -hub and
// -compat-v0 print their line as soon as they are seen.
func parse(args []string, stdout io.Writer) (*options, error) {
	o := &options{ctl: "/tmp/uml.ctl", gid: -1, mode: 0o660}
	a := args[1:]
	next := func() (string, bool) {
		if len(a) == 0 {
			return "", false
		}
		v := a[0]
		a = a[1:]
		return v, true
	}
	for len(a) > 0 {
		opt, _ := next()
		switch opt {
		case "-unix":
			v, ok := next()
			if !ok {
				return nil, errUsage
			}
			o.ctl = v
			if o.compat {
				if o.data, ok = next(); !ok {
					return nil, errUsage
				}
			}
		case "-hub":
			fmt.Fprintf(stdout, "%s will be a hub instead of a switch\n", cli.Prog(args))
			o.hub = true
		case "-compat-v0":
			fmt.Fprintf(stdout, "Control protocol 0 compatibility\n")
			o.compat = true
			o.data = switchd.DefaultDataPath
		case "-tap":
			v, ok := next()
			if !ok {
				return nil, errUsage
			}
			o.tap = v
		case "-daemon":
			o.daemon = true
		case "--json", "-json":
			o.jsonDump = true
		case "-trunk":
			o.trunk = true
		case "-mode", "-group", "-pidfile", "-pcap", "-vlan", "-tap-vlan":
			v, ok := next()
			if !ok {
				return nil, errUsage
			}
			if err := o.setValue(opt, v); err != nil {
				return nil, err
			}
		default:
			return nil, errUsage
		}
	}
	return o, nil
}

func (o *options) setValue(opt, v string) error {
	switch opt {
	case "-mode":
		m, err := strconv.ParseUint(v, 8, 32)
		if err != nil || m > 0o777 || m == 0 {
			return fmt.Errorf("-mode %q: want octal permissions such as 0660", v)
		}
		o.mode = os.FileMode(m)
	case "-group":
		gid, err := lookupGroup(v)
		if err != nil {
			return fmt.Errorf("-group %q: %w", v, err)
		}
		o.gid = gid
	case "-pidfile":
		// Absolute, so that it can be removed after -daemon's chdir.
		abs, err := filepath.Abs(v)
		if err != nil {
			return fmt.Errorf("-pidfile %q: %w", v, err)
		}
		o.pidfile = abs
	case "-pcap":
		o.pcap = v
	case "-vlan":
		id, path, ok := strings.Cut(v, ":")
		n, err := parseVLAN(id)
		if !ok || err != nil || path == "" {
			return fmt.Errorf("-vlan %q: want <id>:<control socket> with id 1-4094", v)
		}
		o.vlans = append(o.vlans, vlanSock{n, path})
	case "-tap-vlan":
		n, err := parseVLAN(v)
		if err != nil {
			return fmt.Errorf("-tap-vlan %q: want a VLAN id 1-4094", v)
		}
		o.tapVLAN = n
	}
	return nil
}

func parseVLAN(s string) (uint16, error) {
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil || n < 1 || n > 4094 {
		return 0, fmt.Errorf("bad VLAN id %q", s)
	}
	return uint16(n), nil
}

func lookupGroup(g string) (int, error) {
	if n, err := strconv.Atoi(g); err == nil && n >= 0 {
		return n, nil
	}
	gr, err := user.LookupGroup(g)
	if err != nil {
		return -1, err
	}
	return strconv.Atoi(gr.Gid)
}

// serve binds the sockets, prints the start-up line and forwards frames
// until a signal (or EOF on a terminal stdin) stops it.
func serve(prog string, o *options, stdin io.Reader, stdout, stderr io.Writer) error {
	cfg := switchd.Config{Hub: o.hub, CompatV0: o.compat, DataPath: o.data, Out: stdout, SocketMode: o.mode}
	if o.gid >= 0 {
		cfg.SocketGroup = &o.gid
	}
	var pcapFile *os.File
	if o.pcap != "" {
		f, err := os.Create(o.pcap)
		if err != nil {
			return failStart(stderr, prog, fmt.Errorf("pcap: %w", err))
		}
		pcapFile = f
		defer pcapFile.Close()
		cfg.Pcap = f
	}
	sw := switchd.New(cfg)
	if err := sw.Listen(o.ctl, 0); err != nil {
		return bindFailed(stderr, prog, err)
	}
	for _, v := range o.vlans {
		if err := sw.Listen(v.path, v.id); err != nil {
			sw.Close()
			return bindFailed(stderr, prog, err)
		}
	}
	if err := sw.Start(); err != nil {
		sw.Close()
		return bindFailed(stderr, prog, err)
	}
	if o.tap != "" {
		f, name, err := tuntap.Open("", o.tap)
		if err != nil {
			sw.Close()
			return failStart(stderr, prog, err)
		}
		if _, err := sw.AddTap(f, name, o.tapVLAN, o.trunk); err != nil {
			sw.Close()
			return failStart(stderr, prog, err)
		}
	}
	if o.pidfile != "" {
		if err := os.WriteFile(o.pidfile, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
			sw.Close()
			return failStart(stderr, prog, fmt.Errorf("pidfile: %w", err))
		}
		defer os.Remove(o.pidfile)
	}
	// Signals are caught before the start-up line, so whoever waits for
	// it can stop the switch cleanly at once.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGUSR1)
	defer signal.Stop(sigs)

	if o.compat {
		fmt.Fprintf(stdout, "%s attached to unix sockets '%s' and '%s'", prog, o.ctl, o.data)
	} else {
		fmt.Fprintf(stdout, "%s attached to unix socket '%s'", prog, o.ctl)
	}
	if o.tap != "" {
		fmt.Fprintf(stdout, " tap device '%s'", o.tap)
	}
	fmt.Fprintf(stdout, "\n")
	for _, v := range o.vlans {
		fmt.Fprintf(stdout, "%s attached to unix socket '%s' for VLAN %d\n", prog, v.path, v.id)
	}
	if fd := os.Getenv(daemonEnv); fd != "" {
		reportReady(fd)
	}
	sdNotify("READY=1")

	eof := make(chan struct{})
	if f, ok := stdin.(*os.File); ok && isTerminal(f) {
		go func() {
			io.Copy(io.Discard, f)
			close(eof)
		}()
	}
	for {
		select {
		case sig := <-sigs:
			if sig == syscall.SIGUSR1 {
				dumpStats(sw, o.jsonDump, stdout)
				continue
			}
			n := int(sig.(syscall.Signal))
			fmt.Fprintf(stdout, "Caught signal %d, cleaning up and exiting\n", n)
			sdNotify("STOPPING=1")
			cleanup(sw, stdout)
			if o.pidfile != "" {
				os.Remove(o.pidfile)
			}
			if pcapFile != nil {
				pcapFile.Close()
			}
			// Die of the signal, as the C switch does.
			signal.Reset(sig)
			unix.Kill(os.Getpid(), sig.(syscall.Signal))
			return cli.Exit(128 + n)
		case <-eof:
			fmt.Fprintf(stdout, "EOF on stdin, cleaning up and exiting\n")
			sdNotify("STOPPING=1")
			cleanup(sw, stdout)
			return nil
		}
	}
}

func cleanup(sw *switchd.Switch, stdout io.Writer) {
	if err := sw.Close(); err != nil {
		fmt.Fprintf(stdout, "%v\n", err)
	}
}

func dumpStats(sw *switchd.Switch, asJSON bool, w io.Writer) {
	st := sw.Stats()
	if asJSON {
		b, _ := json.Marshal(st)
		fmt.Fprintf(w, "%s\n", b)
		return
	}
	st.WriteText(w)
}

// bindFailed prints the C switch's messages for a socket it cannot bind.
func bindFailed(stderr io.Writer, prog string, err error) error {
	var be *switchd.BindError
	if !errors.As(err, &be) {
		return failStart(stderr, prog, err)
	}
	kind := "control"
	if be.Data {
		kind = "data"
	}
	if be.InUse {
		fmt.Fprintf(stderr, "The %s socket '%s' has another server attached to it\n", kind, be.Path)
		fmt.Fprintf(stderr, "You can either\n\tremove '%s'\n\tor rerun with a different, unused filename for a socket\n", be.Path)
	} else {
		fmt.Fprintf(stderr, "The %s socket '%s' exists, isn't used, but couldn't be removed\n", kind, be.Path)
		if be.Err != nil {
			fmt.Fprintf(stderr, "%s: bind %s: %v\n", prog, be.Path, be.Err)
		}
	}
	return failStart(stderr, prog, nil)
}

func failStart(stderr io.Writer, prog string, err error) error {
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", prog, err)
	}
	if fd := os.Getenv(daemonEnv); fd != "" {
		reportFailed(fd)
	}
	return cli.Exit(1)
}

func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// sdNotify sends a state line to systemd when NOTIFY_SOCKET is set.
func sdNotify(state string) {
	p := os.Getenv("NOTIFY_SOCKET")
	if p == "" {
		return
	}
	if p[0] == '@' {
		p = "\x00" + p[1:]
	}
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return
	}
	defer unix.Close(fd)
	unix.Sendto(fd, []byte(state), 0, &unix.SockaddrUnix{Name: p})
}

// daemonize re-executes the program in a new session with the same
// arguments and standard streams, working directory / once bound (like
// daemon(0,1)), and exits with 0 once the child reports that its sockets
// are bound, or 1 if it failed.
func daemonize(args []string, stderr io.Writer) error {
	exe, err := os.Executable()
	if err != nil {
		fmt.Fprintf(stderr, "%s: -daemon: %v\n", cli.Prog(args), err)
		return cli.Exit(1)
	}
	r, w, err := os.Pipe()
	if err != nil {
		fmt.Fprintf(stderr, "%s: -daemon: %v\n", cli.Prog(args), err)
		return cli.Exit(1)
	}
	defer r.Close()
	cmd := exec.Command(exe, args[1:]...)
	cmd.Args[0] = args[0]
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.ExtraFiles = []*os.File{w}
	cmd.Env = append(os.Environ(), daemonEnv+"=3")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		w.Close()
		fmt.Fprintf(stderr, "%s: -daemon: %v\n", cli.Prog(args), err)
		return cli.Exit(1)
	}
	w.Close()
	var b [1]byte
	n, _ := r.Read(b[:])
	cmd.Process.Release()
	if n == 1 && b[0] == 'R' {
		return nil
	}
	return cli.Exit(1)
}

func reportReady(fd string) {
	n, err := strconv.Atoi(fd)
	if err != nil {
		return
	}
	unix.Write(n, []byte{'R'})
	unix.Close(n)
	os.Unsetenv(daemonEnv)
	os.Chdir("/")
}

func reportFailed(fd string) {
	if n, err := strconv.Atoi(fd); err == nil {
		unix.Close(n)
	}
}
