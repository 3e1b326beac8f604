// Package chans implements the engine's console and serial line channels.
//
// Every guest console or serial line is a host pseudo-terminal: the guest
// gets the pty slave (its /dev/console, /dev/ttyN or /dev/ttySN) and the
// engine pumps the master to the channel named on the command line, so line
// discipline, echo, ^C and job control are the host kernel's.
//
// Channels supported so far:
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
//
// Other types make New fail with an error wrapping ErrUnsupported.
package chans

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"sync"

	"github.com/umltools/umltools/internal/cmdline"
	"golang.org/x/sys/unix"
)

// ErrUnsupported is wrapped by the error New returns for a channel type
// that is not implemented.
var ErrUnsupported = errors.New("channel type not supported yet")

// Console is one guest console or serial line backed by a host pty.
type Console struct {
	name string
	logf func(format string, a ...any)
	in   cmdline.Channel
	out  cmdline.Channel

	master int // pty master, non-blocking
	sfd    int // pty slave, owned by slave
	slave  *os.File
	path   string
	rdev   uint64
	wake   int // eventfd, readable once Close has started

	inFd, outFd int           // host fds; -1 for null
	winFd       int           // host terminal whose window size the pty follows; -1 for none
	saved       *unix.Termios // host terminal modes New changed; nil if none
	outFailed   bool          // output fd failed: discard (output goroutine only)

	winch       chan os.Signal
	stop        chan struct{}
	wg          sync.WaitGroup
	restoreOnce sync.Once
	closeOnce   sync.Once
	closeErr    error
}

// Options tune New.
type Options struct {
	// Name is the line's name for messages, e.g. "con0".
	Name string
	// Logf receives one-line messages (may be nil).
	Logf func(format string, a ...any)
}

// New creates the pty and starts pumping for a line whose input and output
// channels are in and out. Supported types: fd, null. Any other type
// returns an error wrapping ErrUnsupported.
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
// until Close or Restore. The pty's window size follows the input terminal,
// or the output fd when only that is a terminal: it is copied at start and
// on every SIGWINCH.
func New(in, out cmdline.Channel, o Options) (*Console, error) {
	name := o.Name
	if name == "" {
		name = "console"
	}
	for _, ch := range []cmdline.Channel{in, out} {
		if ch.Type != cmdline.ChanFD && ch.Type != cmdline.ChanNull {
			return nil, fmt.Errorf("%s: %s: %w", name, chanText(ch), ErrUnsupported)
		}
	}
	c := &Console{name: name, logf: o.Logf, in: in, out: out,
		master: -1, sfd: -1, wake: -1, inFd: -1, outFd: -1, winFd: -1,
		stop: make(chan struct{})}
	if c.logf == nil {
		c.logf = func(string, ...any) {}
	}
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
			c.saved = t
			c.winFd = c.inFd
		}
	}
	if c.winFd < 0 && c.outFd >= 0 && isTerminal(c.outFd) {
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
	return c, nil
}

// Slave returns the pty slave (the guest's side), opened
// O_RDWR|O_NOCTTY (and close-on-exec), in blocking mode. The Console keeps
// it open until Close, so the master never reads EIO while the guest has
// closed all its copies.
func (c *Console) Slave() *os.File { return c.slave }

// SlavePath returns the host path of the slave, e.g. "/dev/pts/5".
func (c *Console) SlavePath() string { return c.path }

// Rdev returns the slave's device number (st_rdev) for recognising it in
// fstat results.
func (c *Console) Rdev() uint64 { return c.rdev }

// Close stops the pumps, first copying every byte the guest has already
// written to the master out to the output channel (drain: non-blocking
// reads until EAGAIN or EIO; this waits while the output fd accepts no
// data), restores the host terminal if New changed it, and closes the pty.
// Input not yet read by the guest is discarded. Host fds stay open. Safe to
// call more than once and from any goroutine; every call returns the first
// call's result.
func (c *Console) Close() error {
	c.closeOnce.Do(func() {
		var one [8]byte
		one[0] = 1 // eventfd counter += 1 (little-endian hosts; any non-zero value wakes)
		_, _ = unix.Write(c.wake, one[:])
		if c.winch != nil {
			signal.Stop(c.winch)
		}
		close(c.stop)
		c.wg.Wait()
		c.Restore()
		if err := c.closeFds(); err != nil {
			c.closeErr = fmt.Errorf("%s: close %s: %w", c.name, c.path, err)
		}
	})
	return c.closeErr
}

// Restore restores the host terminal modes only (for paths that must exit
// quickly, e.g. a fatal signal); idempotent. The pumps keep running.
func (c *Console) Restore() {
	c.restoreOnce.Do(func() {
		if c.saved == nil {
			return
		}
		if err := unix.IoctlSetTermios(c.inFd, unix.TCSETS, c.saved); err != nil {
			c.logf("%s: input %s: restore terminal modes: %v", c.name, chanText(c.in), err)
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
			c.emit(buf[:n])
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
		case err == unix.EIO && c.saved != nil: // terminal hung up
			return
		case err != nil:
			c.logf("%s: input %s: %v", c.name, chanText(c.in), err)
			return
		case n == 0:
			if c.saved == nil {
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
