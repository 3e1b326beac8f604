// Package chans implements the engine's console and serial line channels.
//
// Every guest console or serial line is a host pseudo-terminal: the guest
// gets the pty slave (its /dev/console, /dev/ttyN or /dev/ttySN) and the
// engine pumps the master to the channels named on the command line, so
// line discipline, echo, ^C and job control are the host kernel's.
//
// Channels:
//
//   - fd:N — input is read from host fd N, output is written to host fd N
//     (usually the pair fd:0,fd:1). Input is never dropped: when the guest
//     does not read, the pump waits. At end of input on a pipe or file the
//     guest sees end of file, as if a user typed ^D (see New). A terminal
//     given as input is put in raw mode while the console runs, and the
//     pty follows its window size.
//   - null — output is discarded (the guest never blocks writing) and
//     input never arrives.
//   - none — no console at all: the caller creates no Console for a line
//     whose cmdline.Line.None is set (or that is not Valid).
//   - pts, pty — a second host pty for the user, who attaches a terminal
//     program to its slave (UserPath, announced in the log). pty (the C
//     kernel's legacy BSD ptys) is the same as pts. See "User channels".
//   - port:N — a built-in telnet server on TCP port N. See "User
//     channels" and Ports.
//   - tty:<dev> — the host terminal <dev>, in raw mode while the console
//     runs; it behaves like fd:N on one device.
//   - xterm — a terminal emulator window (Options.Xterm) attached to a
//     pts channel; needs $DISPLAY.
//
// # User channels
//
// pts, pty, xterm and port connect to a user who may come and go. Guest
// output is queued for them: while someone is attached the queue holds at
// most 64 KiB and the guest waits when it is full (a reader that does not
// read blocks the guest, as on a real terminal); while nobody is attached
// the guest never waits and only the newest 64 KiB are kept (plus what the
// host kernel buffers in the user's pty), so a user who attaches later
// sees the latest output. When a telnet client of a port channel leaves,
// the line hangs up as the C kernel's does (SIGHUP to its session), so
// init starts a new getty for the next client; a pts or xterm user who
// detaches leaves the session running, to attach again.
//
// An input and an output channel of the same kind and argument (pts,pts;
// port:N,port:N; tty:D,tty:D; xterm,xterm) are one channel; otherwise each
// is set up on its own, as the C kernel does, and an output-only user
// channel reads and discards what the user types.
package chans

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"

	"github.com/umltools/umltools/internal/cmdline"
	"golang.org/x/sys/unix"
)

// ErrUnsupported is wrapped by the error New returns for a channel type
// that is not implemented (only an unknown or zero cmdline.ChanType now).
var ErrUnsupported = errors.New("channel type not supported yet")

// ErrNoDisplay is wrapped by the error New returns for an xterm channel
// when $DISPLAY is not set.
var ErrNoDisplay = errors.New("$DISPLAY is not set")

// outboxSize is how much guest output a user channel queues (see the
// package documentation).
const outboxSize = 64 << 10

// Console is one guest console or serial line backed by a host pty.
type Console struct {
	name string
	logf func(format string, a ...any)
	in   cmdline.Channel
	out  cmdline.Channel
	line lineName

	master int // pty master, non-blocking
	sfd    int // pty slave, owned by slave
	slave  *os.File
	path   string
	rdev   uint64
	wake   int // eventfd, readable once Close has started

	inFd, outFd int         // host fds pumped by input and emit; -1 for none
	inTerm      bool        // inFd is a terminal: no ^D at its end
	winFd       int         // host terminal whose window size the pty follows; -1 for none
	saved       []savedMode // host terminal modes New changed, in the order changed
	outFailed   bool        // output fd failed: discard (output goroutine only)

	sink     func([]byte) // where the output goroutine sends guest output
	eps      []endpoint   // user channels and tty devices, closed by Close
	userPath string

	winch       chan os.Signal
	stop        chan struct{}
	wg          sync.WaitGroup
	restoreOnce sync.Once
	closeOnce   sync.Once
	closeErr    error
}

// savedMode is a host terminal's modes before New changed them.
type savedMode struct {
	fd   int
	t    *unix.Termios
	what string // for messages, e.g. "input fd:0"
}

// endpoint is a channel with its own resources: a tty device, a user pty,
// a port. Its goroutines, if any, are counted in Console.wg and stop when
// Console.wake is signalled or after interrupt.
type endpoint interface {
	// start starts the endpoint's goroutines.
	start()
	// interrupt is called when Close starts, before waiting for the
	// goroutines: it unblocks those that do not watch Console.wake.
	interrupt()
	// close releases the endpoint once its goroutines have ended,
	// first handing queued output over as far as it goes without
	// waiting long.
	close() error
}

// Options tune New.
type Options struct {
	// Name is the line's name, e.g. "con0" or "ssl1". It prefixes
	// messages and, when it is "con" or "ssl" and a number, gives the
	// C kernel's texts ("Virtual console N", "Serial line N") for the
	// pts announcement, the port message and the xterm title.
	Name string
	// Logf receives one-line messages (may be nil).
	Logf func(format string, a ...any)
	// Xterm is the xterm= setting used by the xterm channel; an empty
	// field takes its default (x-terminal-emulator, -T, -e).
	Xterm cmdline.Xterm
	// Umid, when not empty, is appended to the xterm title as
	// " (<umid>)", like the C kernel does.
	Umid string
	// Ports, when not nil, lets lines whose port channels name the same
	// TCP port share one listener (ssl=port:9000: each telnet client
	// gets the next free line). Without it every port channel listens
	// on its own and a second line on the same port fails.
	Ports *Ports
}

// New creates the pty and starts pumping for a line whose input and output
// channels are in and out. Every cmdline channel type is supported;
// ErrUnsupported is wrapped only for an unknown type (e.g. the zero
// Channel). An xterm channel without $DISPLAY fails with an error
// wrapping ErrNoDisplay; a port that cannot be listened on (in use) fails
// with an error naming it.
//
// Host fds are checked to be open (for reading or writing as needed) but
// are never closed or made non-blocking. When the input fd reaches end of
// file and is not a terminal, the slave's VEOF character (c_cc[VEOF],
// normally ^D) is written to the master once, or twice when the last input
// byte was not a newline: in canonical mode the first ^D delivers the
// partial line and the second makes read return 0. A guest in raw mode sees
// those bytes as data, like a user typing ^D.
//
// When the input fd is a terminal it is put in raw mode (as cfmakeraw)
// until Close or Restore; so is a tty:<dev> device. The pty's window size
// follows the input channel, or the output channel when the input has
// none: a terminal fd or tty device (copied at start and on every
// SIGWINCH), the user's pty of a pts or xterm channel (copied when the
// user attaches and whenever the user types), or a port client's NAWS
// reports.
func New(in, out cmdline.Channel, o Options) (*Console, error) {
	name := o.Name
	if name == "" {
		name = "console"
	}
	for _, ch := range []cmdline.Channel{in, out} {
		if !known(ch.Type) {
			return nil, fmt.Errorf("%s: %s: %w", name, chanText(ch), ErrUnsupported)
		}
	}
	if in.Type == cmdline.ChanXterm || out.Type == cmdline.ChanXterm {
		if os.Getenv("DISPLAY") == "" {
			return nil, fmt.Errorf("xterm channel for %s: %w", name, ErrNoDisplay)
		}
	}
	c := &Console{name: name, logf: o.Logf, in: in, out: out, line: parseLineName(name),
		master: -1, sfd: -1, wake: -1, inFd: -1, outFd: -1, winFd: -1,
		stop: make(chan struct{})}
	if c.logf == nil {
		c.logf = func(string, ...any) {}
	}
	c.sink = c.emit
	if in.Type == cmdline.ChanFD {
		if err := checkFd(in.FD, unix.O_WRONLY); err != nil {
			return nil, fmt.Errorf("%s: input %s: %w", name, chanText(in), err)
		}
		c.inFd = in.FD
	}
	if out.Type == cmdline.ChanFD {
		if err := checkFd(out.FD, unix.O_RDONLY); err != nil {
			return nil, fmt.Errorf("%s: output %s: %w", name, chanText(out), err)
		}
		c.outFd = out.FD
	}
	var err error
	if c.master, c.sfd, c.path, err = openPty(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	c.slave = os.NewFile(uintptr(c.sfd), c.path)
	var st unix.Stat_t
	if err = unix.Fstat(c.sfd, &st); err == nil {
		c.rdev = uint64(st.Rdev)
		c.wake, err = unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	}
	if err != nil {
		c.closeFds()
		return nil, fmt.Errorf("%s: %s: %w", name, c.path, err)
	}

	if c.inFd >= 0 {
		if t, err := unix.IoctlGetTermios(c.inFd, unix.TCGETS); err == nil {
			raw := *t
			makeRaw(&raw)
			// TCSETS, not TCSETSF: keep what the user typed ahead.
			if err := unix.IoctlSetTermios(c.inFd, unix.TCSETS, &raw); err != nil {
				c.closeFds()
				return nil, fmt.Errorf("%s: input %s: set raw mode: %w", name, chanText(in), err)
			}
			c.saved = append(c.saved, savedMode{c.inFd, t, "input " + chanText(in)})
			c.inTerm = true
			c.winFd = c.inFd
		}
	}
	if err := c.openEndpoints(o); err != nil {
		c.abort()
		return nil, err
	}
	if c.winFd < 0 && c.outFd >= 0 && !c.inTerm && !hasWindow(in.Type) && isTerminal(c.outFd) {
		c.winFd = c.outFd
	}
	if c.winFd >= 0 {
		c.copyWinsize()
		c.winch = make(chan os.Signal, 1)
		signal.Notify(c.winch, unix.SIGWINCH)
		c.wg.Add(1)
		go c.followWinsize()
	}
	c.wg.Add(1)
	go c.output()
	if c.inFd >= 0 {
		c.wg.Add(1)
		go c.input()
	}
	for _, ep := range c.eps {
		ep.start()
	}
	return c, nil
}

// known reports whether t is a channel type New handles.
func known(t cmdline.ChanType) bool {
	switch t {
	case cmdline.ChanFD, cmdline.ChanNull, cmdline.ChanPort, cmdline.ChanPty,
		cmdline.ChanPts, cmdline.ChanTTY, cmdline.ChanXterm:
		return true
	}
	return false
}

// hasWindow reports whether a channel of type t has a window size of its
// own (a terminal fd is decided at run time and is not counted here).
func hasWindow(t cmdline.ChanType) bool {
	switch t {
	case cmdline.ChanPort, cmdline.ChanPty, cmdline.ChanPts, cmdline.ChanTTY, cmdline.ChanXterm:
		return true
	}
	return false
}

// kindOf maps pty to pts: the C kernel's pty channel uses legacy BSD ptys
// (/dev/ptyXY), which modern hosts do not have (it fails there with
// "getmaster - no usable host pty devices"); here it gets a Unix98 pty
// like pts.
func kindOf(t cmdline.ChanType) cmdline.ChanType {
	if t == cmdline.ChanPty {
		return cmdline.ChanPts
	}
	return t
}

// sameEndpoint reports whether the input and output channels are one
// endpoint: same kind and argument, for the kinds New opens itself.
func sameEndpoint(a, b cmdline.Channel) bool {
	ka, kb := kindOf(a.Type), kindOf(b.Type)
	if ka != kb {
		return false
	}
	switch ka {
	case cmdline.ChanPts, cmdline.ChanXterm:
		return true
	case cmdline.ChanPort:
		return a.Port == b.Port
	case cmdline.ChanTTY:
		return a.Dev == b.Dev
	}
	return false
}

// openEndpoints opens the channels that are not host fds or null. The
// window size follows the input channel when it has one (a terminal fd, a
// tty device, a user pty, a port client), else the output channel.
func (c *Console) openEndpoints(o Options) error {
	shared := sameEndpoint(c.in, c.out)
	if hasWindow(c.in.Type) {
		if err := c.openEndpoint(c.in, true, shared, true, o); err != nil {
			return err
		}
	}
	if hasWindow(c.out.Type) && !shared {
		win := !hasWindow(c.in.Type) && !c.inTerm
		if err := c.openEndpoint(c.out, false, true, win, o); err != nil {
			return err
		}
	}
	return nil
}

// openEndpoint opens one endpoint for input, output or both; win tells
// whether the guest's window size follows it.
func (c *Console) openEndpoint(ch cmdline.Channel, input, output, win bool, o Options) error {
	var dir string
	switch {
	case input && output:
	case input:
		dir = "input "
	default:
		dir = "output "
	}
	var ep endpoint
	var err error
	switch kindOf(ch.Type) {
	case cmdline.ChanTTY:
		ep, err = c.openTTY(ch.Dev, input, output, win)
	case cmdline.ChanPts:
		var p *ptsEnd
		if p, err = c.openPts(input, output, win); err == nil {
			c.logf("%s", c.line.assigned(p.path))
			ep = p
		}
	case cmdline.ChanXterm:
		ep, err = c.openXterm(input, output, win, o)
		if err != nil {
			return fmt.Errorf("xterm channel for %s: %w", c.name, err)
		}
	case cmdline.ChanPort:
		var p *portEnd
		if p, err = c.openPort(ch.Port, input, output, win, o.Ports); err == nil {
			c.logf("%s", c.line.listening(p.l.port))
			ep = p
		}
	}
	if err != nil {
		return fmt.Errorf("%s: %s%s: %w", c.name, dir, chanText(ch), err)
	}
	c.eps = append(c.eps, ep)
	return nil
}

// abort undoes a New that failed after creating the pty.
func (c *Console) abort() {
	c.Restore()
	for i := len(c.eps) - 1; i >= 0; i-- {
		c.eps[i].close()
	}
	c.closeFds()
}

// Slave returns the pty slave (the guest's side), opened
// O_RDWR|O_NOCTTY (and close-on-exec), in blocking mode. The Console keeps
// it open until Close, so the master never reads EIO while the guest has
// closed all its copies.
func (c *Console) Slave() *os.File { return c.slave }

// SlavePath returns the host path of the slave, e.g. "/dev/pts/5".
func (c *Console) SlavePath() string { return c.path }

// UserPath returns the host path of the pty slave a user attaches to for
// a pts or pty channel, e.g. "/dev/pts/7" (for an xterm channel, the pty
// the terminal window is attached to); "" for other channels. When input
// and output are two different user ptys (e.g. pts,xterm) it is the
// input's.
func (c *Console) UserPath() string { return c.userPath }

// Rdev returns the slave's device number (st_rdev) for recognising it in
// fstat results.
func (c *Console) Rdev() uint64 { return c.rdev }

// Close stops the pumps, first copying every byte the guest has already
// written to the master out to the output channel (drain: non-blocking
// reads until EAGAIN or EIO; this waits while an output fd or tty device
// accepts no data; a user channel gets what it accepts without waiting
// long), restores host terminals New changed, and closes the pty and
// every endpoint New opened (user ptys, port listeners and clients, tty
// devices; an xterm window is terminated). Input not yet read by the guest
// is discarded. Host fds stay open. Safe to call more than once and from
// any goroutine; every call returns the first call's result.
func (c *Console) Close() error {
	c.closeOnce.Do(func() {
		var one [8]byte
		one[0] = 1 // eventfd counter += 1 (little-endian hosts; any non-zero value wakes)
		_, _ = unix.Write(c.wake, one[:])
		if c.winch != nil {
			signal.Stop(c.winch)
		}
		close(c.stop)
		for _, ep := range c.eps {
			ep.interrupt()
		}
		c.wg.Wait()
		c.Restore()
		var errs []error
		for i := len(c.eps) - 1; i >= 0; i-- {
			errs = append(errs, c.eps[i].close())
		}
		if err := c.closeFds(); err != nil {
			errs = append(errs, fmt.Errorf("%s: close %s: %w", c.name, c.path, err))
		}
		c.closeErr = errors.Join(errs...)
	})
	return c.closeErr
}

// Restore restores the host terminal modes only (for paths that must exit
// quickly, e.g. a fatal signal); idempotent. The pumps keep running.
func (c *Console) Restore() {
	c.restoreOnce.Do(func() {
		// In reverse order, in case two refer to one device.
		for i := len(c.saved) - 1; i >= 0; i-- {
			s := c.saved[i]
			if err := unix.IoctlSetTermios(s.fd, unix.TCSETS, s.t); err != nil {
				c.logf("%s: %s: restore terminal modes: %v", c.name, s.what, err)
			}
		}
	})
}

// closeFds closes the pty and the wake eventfd.
func (c *Console) closeFds() error {
	var errs []error
	if c.slave != nil {
		errs = append(errs, c.slave.Close())
	} else if c.sfd >= 0 {
		errs = append(errs, unix.Close(c.sfd))
	}
	for _, fd := range []int{c.master, c.wake} {
		if fd >= 0 {
			errs = append(errs, unix.Close(fd))
		}
	}
	return errors.Join(errs...)
}

// output copies the master to the output channel until Close, then drains.
func (c *Console) output() {
	defer c.wg.Done()
	buf := make([]byte, 32<<10)
	logged := false
	for {
		stop, err := c.wait(c.master, unix.POLLIN, -1)
		if stop {
			break
		}
		if err == nil {
			err = c.copyOut(buf)
		}
		if err != nil {
			// Cannot happen while we hold the slave; do not spin.
			if !logged {
				c.logf("%s: read pty master: %v", c.name, err)
				logged = true
			}
			if stop, _ := c.wait(-1, 0, 100); stop {
				break
			}
		}
	}
	// Drain: each non-blocking read of a pty master first waits for the
	// slave's pending flip buffer work, so EAGAIN means nothing is left.
	_ = c.copyOut(buf)
}

// copyOut copies what the master holds now to the output channel. It
// returns nil at EAGAIN (or EIO: no slave open), else the read error.
func (c *Console) copyOut(buf []byte) error {
	for {
		n, err := unix.Read(c.master, buf)
		switch {
		case err == unix.EINTR:
		case err == unix.EAGAIN || err == unix.EIO:
			return nil
		case err != nil:
			return err
		case n == 0:
			return nil
		default:
			c.sink(buf[:n])
		}
	}
}

// emit writes p to the output fd, or discards it for null or after the
// output fd failed.
func (c *Console) emit(p []byte) {
	for len(p) > 0 && c.outFd >= 0 && !c.outFailed {
		n, err := unix.Write(c.outFd, p)
		if n > 0 {
			p = p[n:]
		}
		switch {
		case err == unix.EINTR:
		case err == unix.EAGAIN: // a non-blocking output fd: wait for room
			fds := []unix.PollFd{{Fd: int32(c.outFd), Events: unix.POLLOUT}}
			_, _ = unix.Poll(fds, -1)
		case err != nil || n <= 0:
			if err == nil {
				err = errors.New("short write")
			}
			c.logf("%s: output %s: %v (discarding further output)", c.name, chanText(c.out), err)
			c.outFailed = true
		}
	}
}

// input copies the input fd to the master until end of file, an error or
// Close.
func (c *Console) input() {
	defer c.wg.Done()
	buf := make([]byte, 32<<10)
	last := byte('\n') // no input yet: at the start of a line
	for {
		stop, err := c.wait(c.inFd, unix.POLLIN, -1)
		if stop {
			return
		}
		n := 0
		if err == nil {
			n, err = unix.Read(c.inFd, buf)
		}
		switch {
		case err == unix.EINTR || err == unix.EAGAIN:
			continue
		case err == unix.EIO && c.inTerm: // terminal hung up
			return
		case err != nil:
			c.logf("%s: input %s: %v", c.name, chanText(c.in), err)
			return
		case n == 0:
			if !c.inTerm {
				c.sendEOF(last)
			}
			return
		}
		if !c.writeMaster(buf[:n]) {
			return
		}
		last = buf[n-1]
	}
}

// sendEOF writes the slave's VEOF character to the master: once, or twice
// when last (the last input byte) is not a newline.
func (c *Console) sendEOF(last byte) {
	t, err := unix.IoctlGetTermios(c.sfd, unix.TCGETS)
	if err != nil {
		c.logf("%s: end of input: read slave modes: %v", c.name, err)
		return
	}
	eof := t.Cc[unix.VEOF]
	if eof == 0 { // _POSIX_VDISABLE
		c.logf("%s: end of input: VEOF is disabled on the guest's side", c.name)
		return
	}
	seq := []byte{eof}
	if last != '\n' {
		seq = append(seq, eof)
	}
	c.writeMaster(seq)
}

// writeMaster writes all of p to the master, waiting while the guest's
// input buffer is full. It returns false on Close or an error.
func (c *Console) writeMaster(p []byte) bool {
	for len(p) > 0 {
		n, err := unix.Write(c.master, p)
		if n > 0 {
			p = p[n:]
		}
		switch {
		case err == nil || err == unix.EINTR:
		case err == unix.EAGAIN:
			// Event-driven; the timeout only guards against a missed wakeup.
			if stop, _ := c.wait(c.master, unix.POLLOUT, 100); stop {
				return false
			}
		default:
			c.logf("%s: write pty master: %v (input stopped)", c.name, err)
			return false
		}
	}
	return true
}

// wait polls fd (ignored when negative) for events, or until Close starts
// (stop) or timeout milliseconds pass (-1: none). A closed fd is an error.
func (c *Console) wait(fd int, events int16, timeout int) (stop bool, err error) {
	fds := []unix.PollFd{{Fd: int32(fd), Events: events}, {Fd: int32(c.wake), Events: unix.POLLIN}}
	for {
		_, err = unix.Poll(fds, timeout)
		if err != unix.EINTR {
			break
		}
	}
	if fds[1].Revents != 0 {
		return true, nil
	}
	if err == nil && fds[0].Revents&unix.POLLNVAL != 0 {
		err = unix.EBADF
	}
	return false, err
}

// followWinsize copies the host terminal's window size on every SIGWINCH.
func (c *Console) followWinsize() {
	defer c.wg.Done()
	for {
		select {
		case <-c.winch:
			c.copyWinsize()
		case <-c.stop:
			return
		}
	}
}

// copyWinsize copies the host terminal's window size to the pty.
func (c *Console) copyWinsize() {
	ws, err := unix.IoctlGetWinsize(c.winFd, unix.TIOCGWINSZ)
	if err == nil {
		err = unix.IoctlSetWinsize(c.master, unix.TIOCSWINSZ, ws)
	}
	if err != nil {
		c.logf("%s: copy window size: %v", c.name, err)
	}
}

// openPty opens a new pty pair: the master non-blocking, the slave
// blocking, both close-on-exec and neither becoming the controlling
// terminal. The slave keeps Linux's default modes.
func openPty() (master, slave int, path string, err error) {
	master, err = unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return -1, -1, "", fmt.Errorf("open /dev/ptmx: %w", err)
	}
	fail := func(what string, err error) (int, int, string, error) {
		unix.Close(master)
		return -1, -1, "", fmt.Errorf("%s: %w", what, err)
	}
	if err := unix.IoctlSetPointerInt(master, unix.TIOCSPTLCK, 0); err != nil {
		return fail("unlock pty", err)
	}
	n, err := unix.IoctlGetUint32(master, unix.TIOCGPTN)
	if err != nil {
		return fail("get pty number", err)
	}
	path = "/dev/pts/" + strconv.FormatUint(uint64(n), 10)
	const flags = unix.O_RDWR | unix.O_NOCTTY | unix.O_CLOEXEC
	// TIOCGPTPEER (Linux 4.13) opens the right slave even when /dev/pts
	// is another devpts instance; older kernels answer EINVAL.
	r, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(master), unix.TIOCGPTPEER, flags)
	if errno == 0 {
		return master, int(r), path, nil
	}
	slave, err = unix.Open(path, flags, 0)
	if err != nil {
		return fail("open "+path, err)
	}
	return master, slave, path, nil
}

// makeRaw sets t like cfmakeraw(3).
func makeRaw(t *unix.Termios) {
	t.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON
	t.Oflag &^= unix.OPOST
	t.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
	t.Cflag &^= unix.CSIZE | unix.PARENB
	t.Cflag |= unix.CS8
	t.Cc[unix.VMIN] = 1
	t.Cc[unix.VTIME] = 0
}

// checkFd checks that fd is open and not open only for bad (O_RDONLY or
// O_WRONLY).
func checkFd(fd, bad int) error {
	fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	if err != nil {
		return err
	}
	if fl&unix.O_ACCMODE == bad {
		if bad == unix.O_WRONLY {
			return errors.New("fd not open for reading")
		}
		return errors.New("fd not open for writing")
	}
	return nil
}

// isTerminal reports whether fd is a terminal. (cli.IsTerminal takes an
// *os.File; New needs the termios anyway.)
func isTerminal(fd int) bool {
	_, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	return err == nil
}

// chanText returns a channel's text for messages.
func chanText(ch cmdline.Channel) string {
	if ch.Text != "" {
		return ch.Text
	}
	if ch.Type == cmdline.ChanFD {
		return "fd:" + strconv.Itoa(ch.FD)
	}
	return ch.Type.String()
}

// lineName is a line's kind and number as parsed from Options.Name.
type lineName struct {
	name string // Options.Name as given
	kind string // "con", "ssl", or "" when Name is neither followed by a number
	unit int
}

// parseLineName parses "con<N>" or "ssl<N>" (N decimal).
func parseLineName(name string) lineName {
	l := lineName{name: name}
	for _, k := range []string{"con", "ssl"} {
		rest, ok := strings.CutPrefix(name, k)
		if !ok || rest == "" || len(rest) > 6 || strings.TrimLeft(rest, "0123456789") != "" {
			continue
		}
		n, err := strconv.Atoi(rest)
		if err == nil {
			l.kind, l.unit = k, n
		}
	}
	return l
}

// who is how the C kernel's messages name the line: "Virtual console N"
// (stdio_console.c), "Serial line N" (ssl.c), else its name.
func (l lineName) who() string {
	switch l.kind {
	case "con":
		return fmt.Sprintf("Virtual console %d", l.unit)
	case "ssl":
		return fmt.Sprintf("Serial line %d", l.unit)
	}
	return l.name
}

// assigned is the C kernel's announcement of a pts channel (stdio_announce
// in arch/um/drivers/stdio_console.c, ssl_announce in ssl.c).
func (l lineName) assigned(dev string) string {
	return fmt.Sprintf("%s assigned device '%s'", l.who(), dev)
}

// listening is logged for a port channel. The C kernel logs nothing when
// it starts listening (port_kern.c, port_user.c); this text is the
// engine's own, worded like assigned.
func (l lineName) listening(port int) string {
	return fmt.Sprintf("%s listening on port %d", l.who(), port)
}

// xtermTitle is the C kernel's xterm title (chan_opts.xterm_title of
// stdio_console.c and ssl.c), with " (<umid>)" added by add_xterm_umid in
// line.c when umid is set.
func (l lineName) xtermTitle(umid string) string {
	var t string
	switch l.kind {
	case "con":
		t = fmt.Sprintf("Virtual Console #%d", l.unit)
	case "ssl":
		t = fmt.Sprintf("Serial Line #%d", l.unit)
	default:
		t = l.name
	}
	if umid != "" {
		t += " (" + umid + ")"
	}
	return t
}

// hangup does to the guest's terminal what a hang-up does in Linux:
// SIGHUP, then SIGCONT, to its session and its foreground process group,
// so that a shell left logged in ends and init starts a new getty.
func (c *Console) hangup() {
	if sid, err := unix.IoctlGetInt(c.master, unix.TIOCGSID); err == nil && sid > 1 {
		unix.Kill(-sid, unix.SIGHUP)
		unix.Kill(-sid, unix.SIGCONT)
	}
	unix.IoctlSetInt(c.master, unix.TIOCSIG, int(unix.SIGHUP))
}
