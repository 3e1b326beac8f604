// Package watchdog is uml_watchdog, the host half of a User Mode Linux
// kernel's harddog driver (/dev/watchdog in the guest). The kernel starts
// it with pipes on stdin and stdout (stderr is the same pipe as stdout),
// waits for one ready byte, and then writes one byte per ping. If no ping
// arrives within the timeout the helper kills the kernel (-pid) or sends a
// HANG notification to the notify socket (-mconsole).
package watchdog

import (
	"io"
	"math"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/umltools/umltools/internal/cli"
	"github.com/umltools/umltools/internal/mconsole"
	"golang.org/x/sys/unix"
)

// DefaultTimeout is the time without a ping after which the helper acts,
// as in Debian's uml_watchdog.
const DefaultTimeout = 60 * time.Second

// Grace is the pause after each SIGINT in -pid mode before the next
// signal (SIGINT, then SIGKILL).
const Grace = time.Second

// TimeoutEnv names the environment variable that overrides DefaultTimeout
// (in seconds, fractions allowed). It exists for tests; the kernel's
// command line to the helper is unchanged, and the helper inherits the
// kernel's environment.
const TimeoutEnv = "UML_WATCHDOG_TIMEOUT"

const help = `Usage: uml_watchdog -pid <UML pid>
       uml_watchdog -mconsole <notify socket>

The host helper of a User Mode Linux kernel's /dev/watchdog (harddog). It
is run by the kernel, not by hand: it writes one ready byte to stdout and
then expects a byte on stdin at least every 60 seconds. Otherwise

  -pid <pid>            it sends the kernel SIGINT, again after 1 s, and
                        SIGKILL after one more second;
  -mconsole <socket>    it sends a HANG notification (the kernel's 16-byte
                        mconsole notify header, type 2) to <socket>;

and exits 1. End of file on stdin (the guest closed the device) exits 0.
Bad arguments exit 1 without output, as the C tool does.

  UML_WATCHDOG_TIMEOUT  seconds instead of 60 (for tests)
  -h, --help            show this help
  --version             show the version
`

// Config is a parsed command line.
type Config struct {
	Pid    int    // -pid: the kernel's host pid (0 in -mconsole mode)
	Socket string // -mconsole: the notify socket path
}

// ParseArgs parses the helper's arguments (after argv[0]) the way the C
// tool does: only the first option and its value count, later words are
// ignored; a -pid value is read like strtoul(…, 0) (decimal, 0x hex or 0
// octal, leading blanks allowed) and must name a process that kill(pid, 0)
// reaches. Unlike the C tool it refuses pid 0, negative pids and empty
// values, which would make the timeout signal a process group or every
// process. ok is false for anything else.
func ParseArgs(a []string) (c Config, ok bool) {
	if len(a) < 2 {
		return c, false
	}
	switch a[0] {
	case "-pid":
		pid, ok := parsePid(a[1])
		if !ok || unix.Kill(pid, 0) != nil {
			return c, false
		}
		c.Pid = pid
	case "-mconsole":
		c.Socket = a[1]
	default:
		return c, false
	}
	return c, true
}

// parsePid reads s like strtoul(s, &end, 0) with *end required to be NUL,
// and accepts only 1..MaxInt32.
func parsePid(s string) (int, bool) {
	s = strings.TrimLeft(s, " \t\n\v\f\r")
	s = strings.TrimPrefix(s, "+")
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
	v, err := strconv.ParseUint(s, base, 64)
	if err != nil || v == 0 || v > math.MaxInt32 {
		return 0, false
	}
	return int(v), true
}

// ParseTimeout reads a TimeoutEnv value: a positive number of seconds.
// Anything else (including "") gives DefaultTimeout, so a typo can never
// disable the watchdog.
func ParseTimeout(s string) time.Duration {
	f, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
	if err != nil || !(f > 0) || f > 1e6 {
		return DefaultTimeout
	}
	return time.Duration(f * float64(time.Second))
}

// Hang returns the notification sent in -mconsole mode: the kernel's notify
// header (u32 magic 0xcafebabe, version 2, type, len; host byte order)
// with type MCONSOLE_HANG and no data, 16 bytes. The C tool sends 24
// bytes instead (an 8-byte magic, then 4 bytes of padding), which no
// listener for the kernel's own notifications parses.
func Hang() mconsole.Notify { return mconsole.Notify{Type: mconsole.NotifyHang} }

// Watchdog is one run of the helper.
type Watchdog struct {
	Config
	Timeout time.Duration // DefaultTimeout when zero
	Grace   time.Duration // Grace when zero
	// Kill sends a signal; syscall.Kill when nil (tests replace it).
	Kill func(pid int, sig syscall.Signal) error
}

// Run writes the ready byte to stdout, then reads pings from stdin until
// end of file (exit status 0), a read error (1), or a timeout, when it
// acts as configured and returns 1.
func (w *Watchdog) Run(stdin io.Reader, stdout io.Writer) int {
	timeout, grace, kill := w.settings()
	if stdin == nil {
		stdin = strings.NewReader("")
	}
	if _, err := stdout.Write([]byte{0}); err != nil {
		return 1
	}
	pings := make(chan error, 1)
	go func() {
		b := make([]byte, 1)
		for {
			n, err := stdin.Read(b)
			if n > 0 {
				pings <- nil
				continue
			}
			if err == nil {
				continue
			}
			pings <- err
			return
		}
	}()
	timer := time.NewTimer(timeout)
	for {
		select {
		case err := <-pings:
			if err == io.EOF {
				return 0
			}
			if err != nil {
				return 1
			}
			timer.Reset(timeout)
		case <-timer.C:
			w.fire(grace, kill)
			return 1
		}
	}
}

// settings returns the timeout, grace and kill function in effect.
func (w *Watchdog) settings() (time.Duration, time.Duration, func(int, syscall.Signal) error) {
	timeout, grace, kill := w.Timeout, w.Grace, w.Kill
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	if grace <= 0 {
		grace = Grace
	}
	if kill == nil {
		kill = syscall.Kill
	}
	return timeout, grace, kill
}

// fire is the timeout action.
func (w *Watchdog) fire(grace time.Duration, kill func(int, syscall.Signal) error) {
	if w.Socket != "" {
		mconsole.SendNotify(w.Socket, Hang())
		return
	}
	kill(w.Pid, syscall.SIGINT)
	time.Sleep(grace)
	kill(w.Pid, syscall.SIGINT)
	time.Sleep(grace)
	kill(w.Pid, syscall.SIGKILL)
}

// Main is uml_watchdog's run function. getenv reads the environment
// (os.Getenv in the binary).
func Main(getenv func(string) string) cli.RunFunc {
	return func(args []string, stdin io.Reader, stdout, _ io.Writer) error {
		if cli.Standard(args, stdout, help) {
			return nil
		}
		c, ok := ParseArgs(args[1:])
		if !ok {
			return cli.Exit(1)
		}
		w := &Watchdog{Config: c, Timeout: ParseTimeout(getenv(TimeoutEnv))}
		if rc := w.Run(stdin, stdout); rc != 0 {
			return cli.Exit(rc)
		}
		return nil
	}
}
