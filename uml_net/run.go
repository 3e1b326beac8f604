package main

import (
	"fmt"
	"io"
	"log/syslog"
	"os"
	"strings"

	"github.com/umltools/umltools/internal/cli"
	"github.com/umltools/umltools/internal/version"
	"golang.org/x/sys/unix"
)

const helpText = `Usage: uml_net <version> <transport> <arguments...>

uml_net is the privileged network helper of User Mode Linux. The UML kernel
runs it (found on PATH) when a guest interface needs host set-up; running it
by hand is not useful. Protocol version 4 (Linux 6.1) is supported:

  uml_net 4 tuntap up [<gate ip>]          create a tap for the caller, send
                                           its name and descriptor on fd 1
  uml_net 4 add|del <tap> <ip> <netmask>   host route + proxy ARP for a guest
                                           address (also: 4 tuntap add|del ...)
  uml_net 4 ethertap <tapN> <data fd> [<gate ip>]
  uml_net 4 slip up <gate ip>  |  uml_net 4 slip down <name>

It must be setuid root or hold CAP_NET_ADMIN as a file capability; it acts
only on tap devices it created for the calling user, runs no other program
and logs each action to syslog. See uml_net(8).
`

const badArgs = "uml_net : bad argument list - if you're running uml_net by\n" +
	"hand, don't bother.  uml_net is run automatically by UML when\n" +
	"necessary.\n"

// env is what run needs from the process besides its arguments: the
// caller's identity, stderr and a logger.
type env struct {
	who    caller
	stderr io.Writer
	log    func(format string, a ...any)
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	e := &env{who: currentCaller(), stderr: stderr, log: newLogger(stderr)}
	return e.run(args, stdin, stdout, stderr)
}

// newLogger logs to syslog (facility authpriv, tag uml_net) when a syslog
// daemon listens, else to stderr.
func newLogger(stderr io.Writer) func(string, ...any) {
	if w, err := syslog.New(syslog.LOG_AUTHPRIV|syslog.LOG_NOTICE, "uml_net"); err == nil {
		return func(format string, a ...any) { w.Notice(fmt.Sprintf(format, a...)) }
	}
	return func(format string, a ...any) { fmt.Fprintf(stderr, "uml_net: "+format+"\n", a...) }
}

func (e *env) run(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) == 2 && (cli.IsHelp(args[1]) || cli.IsVersion(args[1])) {
		if cli.IsHelp(args[1]) {
			io.WriteString(stdout, helpText)
		} else {
			fmt.Fprintln(stdout, version.String(cli.Prog(args)))
		}
		return nil
	}
	if len(args) < 3 {
		io.WriteString(stderr, badArgs)
		return cli.Exit(1)
	}
	v, numeric, err := parseVersion(args[1])
	if err != nil {
		fmt.Fprintf(stderr, "uml_net : %v\n", err)
		return cli.Exit(1)
	}
	transport, rest := args[2], args[3:]
	if !numeric {
		transport, rest = args[1], args[2:]
	}
	if v > maxVersion {
		fmt.Fprintf(stderr, "Version mismatch - requested version %d, uml_net supports up to version %d\n", v, maxVersion)
		return cli.Exit(1)
	}
	switch transport {
	case "ethertap", "slip", "tuntap", "add", "del":
	default:
		fmt.Fprintf(stdout, "Unknown transport : '%s'\n", transport)
		return cli.Exit(1)
	}
	if v != maxVersion {
		// The C helper kept handlers for the protocols of 2.4-era
		// kernels; no kernel this toolchain supports sends them.
		fmt.Fprintf(stdout, "No version #%d handler for '%s'\n", v, transport)
		return cli.Exit(1)
	}
	out := fdOf(stdout)
	switch transport {
	case "tuntap":
		if len(rest) < 1 {
			var o output
			o.line("uml_net : too few arguments to tuntap_v4")
			return e.replyBlob(out, &o, 1)
		}
		switch rest[0] {
		case "up":
			return e.tuntapUp(out, rest[1:])
		case "add", "del":
			if len(rest) < 4 {
				var o output
				o.line("uml_net : too few arguments to tuntap change_addr")
				return e.replyBlob(out, &o, 1)
			}
			return e.change(out, rest[0], rest[1:])
		}
		fmt.Fprintf(stderr, "Bad tuntap op : '%s'\n", rest[0])
		return cli.Exit(1)
	case "add", "del":
		return e.change(out, transport, rest)
	case "ethertap":
		return e.ethertap(out, rest)
	default: // slip
		return e.slip(out, stdin, stdout, rest)
	}
}

// fdOf returns the descriptor behind w, or -1 when w is not a file (the
// reply then cannot be sent and the call is refused).
func fdOf(w any) int {
	if f, ok := w.(*os.File); ok {
		return int(f.Fd())
	}
	return -1
}

// refusal returns the fail function of one mode: it adds the message to o,
// logs it, hands o back to the kernel with send, and yields exit 1.
func (e *env) refusal(mode string, o *output, send func()) func(format string, a ...any) error {
	return func(format string, a ...any) error {
		msg := fmt.Sprintf(format, a...)
		o.line(msg)
		e.log("%s for uid %d refused: %s", mode, e.who.uid, strings.TrimSpace(msg))
		send()
		return cli.Exit(1)
	}
}

// replyBlob writes o as an output blob on fd (when it is a usable reply
// channel) and returns an exit code as an error (0 gives nil).
func (e *env) replyBlob(fd int, o *output, code int) error {
	if fd >= 0 && needReplyFD(fd, 0, true) == nil {
		if _, err := unix.Write(fd, o.blob()); err != nil {
			e.log("writing reply: %v", err)
			code = 1
		}
	} else {
		e.log("not replying on descriptor %d: %s", fd, o.String())
	}
	if code == 0 {
		return nil
	}
	return cli.Exit(code)
}
