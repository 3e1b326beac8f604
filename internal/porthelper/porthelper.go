// Package porthelper is the host helper that hands a terminal to a User
// Mode Linux kernel: the kernel's port channel runs it under
// `in.telnetd -L <helper>` (the helper's stdin is then the telnet pty and
// fd 3 the kernel's socket), and the xterm channel runs it in a terminal
// emulator with `-uml-socket <path>`. Either way it sends the kernel its own
// pid and fd 0, then waits until the kernel kills it.
package porthelper

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"unsafe"

	"github.com/umltools/umltools/internal/cli"
	"github.com/umltools/umltools/internal/errtext"
	"golang.org/x/sys/unix"
)

// KernelFD is the descriptor on which the port channel's helper finds the
// kernel's end of the socketpair.
const KernelFD = 3

// sockaddrLen is the address length the C helper passes to bind and
// connect: the whole struct sockaddr_un (2 + 108 bytes).
const sockaddrLen = 110

const help = `Usage: port-helper
       port-helper -uml-socket <socket>

Hand this process's terminal (fd 0) to a User Mode Linux kernel. It is
run by the kernel, not by hand:

  (no arguments)        the port channel (con<N>=port:<tcp port>): the
                        kernel runs "in.telnetd -L port-helper"; the pid and
                        fd 0 are sent on fd 3
  -uml-socket <socket>  the xterm channel: they are sent as a datagram to
                        the kernel's <socket>

The helper then waits until the kernel kills it when the console closes.
The kernel finds it at /usr/lib/uml/port-helper, or at $UML_PORT_HELPER
(port channel only).

  -h, --help            show this help
  --version             show the version
`

// Message returns the data the kernel expects with the descriptor: the
// helper's pid as a native-endian 4-byte int.
func Message(pid int) []byte {
	b := make([]byte, 4)
	*(*int32)(unsafe.Pointer(&b[0])) = int32(pid)
	return b
}

// AbstractName returns the abstract socket name ("\0" + "%5d" of pid) the
// xterm helper binds, as the bytes that follow the family in sun_path.
func AbstractName(pid int) string { return "\x00" + fmt.Sprintf("%5d", pid) }

// Send sends pid and the descriptor fd over the connected socket sock in
// one sendmsg: the message of Message plus an SCM_RIGHTS control message.
func Send(sock, pid, fd int) error {
	if err := unix.Sendmsg(sock, Message(pid), unix.UnixRights(fd), nil, 0); err != nil {
		return fmt.Errorf("sendmsg: %w", err)
	}
	return nil
}

// rawSockaddr builds a full 110-byte sockaddr_un whose sun_path starts
// with name (zero-padded), the layout the C helper passes.
func rawSockaddr(name string) (*unix.RawSockaddrUnix, error) {
	var sa unix.RawSockaddrUnix
	if len(name) >= len(sa.Path) {
		return nil, fmt.Errorf("socket path too long: %q", name)
	}
	sa.Family = unix.AF_UNIX
	for i := 0; i < len(name); i++ {
		sa.Path[i] = int8(name[i])
	}
	return &sa, nil
}

// DialXterm creates the xterm channel's datagram socket: bound to
// AbstractName(pid) and connected to path, both with the full-size
// address the C helper uses. The step that failed names the error
// ("socket", "bind", "connect").
func DialXterm(path string, pid int) (int, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM, 0)
	if err != nil {
		return -1, fmt.Errorf("socket: %w", err)
	}
	sa, err := rawSockaddr(AbstractName(pid))
	if err == nil {
		err = sockcall(unix.SYS_BIND, fd, sa, "bind")
	}
	if err == nil {
		sa, err = rawSockaddr(path)
		if err != nil {
			err = fmt.Errorf("connect: %w", unix.ENAMETOOLONG)
		}
	}
	if err == nil {
		err = sockcall(unix.SYS_CONNECT, fd, sa, "connect")
	}
	if err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

func sockcall(nr uintptr, fd int, sa *unix.RawSockaddrUnix, what string) error {
	_, _, e := unix.Syscall(nr, uintptr(fd), uintptr(unsafe.Pointer(sa)), sockaddrLen)
	if e != 0 {
		return fmt.Errorf("%s: %w", what, e)
	}
	return nil
}

// Handoff does what both modes share once the socket sock is ready: it
// ignores SIGHUP (the telnet session's hangup must not kill the console
// before the kernel closes it), gives up fd 0 as controlling terminal
// (TIOCNOTTY; a failure is reported on stderr and is not fatal, as in the
// C helper), and sends the pid and fd 0 on sock.
func Handoff(sock int, stderr io.Writer) error {
	signal.Ignore(syscall.SIGHUP)
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, 0, unix.TIOCNOTTY, 0); e != 0 {
		fmt.Fprintf(stderr, "TIOCNOTTY failed in port-helper, check UML's exec call for xterm or telnetd: %s\n", errtext.Strerror(e))
	}
	return Send(sock, os.Getpid(), 0)
}

// Run is port-helper's main: parse the arguments, hand off fd 0, then
// wait (pause) until killed. It returns only on an error.
func Run(args []string, _ io.Reader, stdout, stderr io.Writer) error {
	if cli.Standard(args, stdout, help) {
		return nil
	}
	sock := KernelFD
	switch a := args[1:]; {
	case len(a) == 0:
	case len(a) == 2 && a[0] == "-uml-socket":
		fd, err := DialXterm(a[1], os.Getpid())
		if err != nil {
			return perror(stderr, err)
		}
		sock = fd
	default:
		return cli.Usagef("usage: port-helper [-uml-socket <socket>] (it is run by the UML kernel)")
	}
	if err := Handoff(sock, stderr); err != nil {
		return perror(stderr, err)
	}
	for {
		unix.Pause()
	}
}

// perror prints err as perror(3) would ("connect: No such file or
// directory") and returns exit status 1.
func perror(stderr io.Writer, err error) error {
	msg := err.Error()
	var en syscall.Errno
	if errors.As(err, &en) {
		msg = strings.TrimSuffix(msg, en.Error()) + errtext.Strerror(en)
	}
	fmt.Fprintln(stderr, msg)
	return cli.Exit(1)
}
