package chans

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// ptsEnd is a pts (or pty) channel: a second host pty whose slave the user
// opens (screen, minicom, a program, or the xterm channel's window) and
// whose master the engine pumps to and from the guest's pty.
//
// The user's pty is in raw mode (set on the slave, as cfmakeraw), so bytes
// pass unchanged: the guest's own pty does line discipline and echo. The
// engine does not keep the user's slave open, so the master reports
// POLLHUP while nobody has it open: that is "detached". An inotify watch
// for IN_OPEN on the slave's path wakes the pump when someone opens it (a
// poll every 100 ms stands in when inotify is unavailable).
type ptsEnd struct {
	c     *Console
	um    int // the user pty's master, non-blocking
	path  string
	ino   int // inotify fd watching path for IN_OPEN; -1 if none
	kick  int // eventfd the outbox signals when output arrives; -1 if no output
	box   *outbox
	input bool // user input goes to the guest (else it is read and discarded)
	win   bool // the guest's window size follows the user's pty
	ws    unix.Winsize
	proc  *xtermProc // the xterm channel's terminal emulator, or nil
}

// openPts allocates the user's pty (see ptsEnd).
func (c *Console) openPts(input, output, win bool) (*ptsEnd, error) {
	um, sfd, path, err := openPty()
	if err != nil {
		return nil, err
	}
	e := &ptsEnd{c: c, um: um, path: path, ino: -1, kick: -1, input: input, win: win}
	t, err := unix.IoctlGetTermios(sfd, unix.TCGETS)
	if err == nil {
		makeRaw(t)
		err = unix.IoctlSetTermios(sfd, unix.TCSETS, t)
	}
	// Closing our only slave fd puts the master in the hung-up state
	// that means "nobody attached".
	unix.Close(sfd)
	if err != nil {
		e.close()
		return nil, fmt.Errorf("%s: set raw mode: %w", path, err)
	}
	if output {
		if e.kick, err = unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK); err != nil {
			e.close()
			return nil, fmt.Errorf("eventfd: %w", err)
		}
		e.box = newOutbox(outboxSize, e.signal)
		c.sink = e.box.put
	}
	if ino, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK); err == nil {
		if _, err := unix.InotifyAddWatch(ino, path, unix.IN_OPEN); err == nil {
			e.ino = ino
		} else {
			unix.Close(ino)
		}
	}
	if c.userPath == "" {
		c.userPath = path
	}
	return e, nil
}

// signal wakes run after output arrived in an empty outbox.
func (e *ptsEnd) signal() {
	var one [8]byte
	one[0] = 1
	_, _ = unix.Write(e.kick, one[:])
}

func (e *ptsEnd) start() {
	e.c.wg.Add(1)
	go e.run()
}

// run moves bytes between the user's pty and the guest's until Close: user
// input to the guest's master (holding at most one read's worth while the
// guest does not read), queued output to the user while attached.
func (e *ptsEnd) run() {
	defer e.c.wg.Done()
	c := e.c
	buf := make([]byte, 32<<10)
	var inq []byte // user input the guest's pty has not taken yet
	attached := false
	var gen uint64
	detach := func() {
		attached = false
		if e.box != nil {
			e.box.detach(gen)
		}
	}
	loggedIn := false
	for {
		if !attached && e.peerOpen() {
			attached = true
			if e.box != nil {
				gen = e.box.attach()
			}
			e.copyWinsize()
		}
		// 0 wake, 1 kick, 2 user master, 3 inotify, 4 guest master
		fds := []unix.PollFd{{Fd: int32(c.wake), Events: unix.POLLIN},
			{Fd: int32(e.kick), Events: unix.POLLIN}, {Fd: -1}, {Fd: -1}, {Fd: -1}}
		timeout := -1
		if attached {
			var ev int16 // POLLHUP is reported even for no events
			if len(inq) == 0 {
				ev |= unix.POLLIN
			}
			if e.box != nil && e.box.pending() > 0 {
				ev |= unix.POLLOUT
			}
			fds[2] = unix.PollFd{Fd: int32(e.um), Events: ev}
		} else if e.ino >= 0 {
			fds[3] = unix.PollFd{Fd: int32(e.ino), Events: unix.POLLIN}
			timeout = 1000 // only a safety net
		} else {
			timeout = 100
		}
		if len(inq) > 0 {
			fds[4] = unix.PollFd{Fd: int32(c.master), Events: unix.POLLOUT}
		}
		if _, err := unix.Poll(fds, timeout); err != nil && err != unix.EINTR {
			c.logf("%s: %s: poll: %v", c.name, e.path, err)
			return
		}
		if fds[0].Revents != 0 {
			return
		}
		if fds[1].Revents != 0 {
			drain(e.kick, buf)
		}
		if fds[3].Revents != 0 {
			drain(e.ino, buf)
		}
		if r := fds[2].Revents; attached && r != 0 {
			if r&unix.POLLNVAL != 0 {
				return
			}
			if r&unix.POLLOUT != 0 {
				off, p := e.box.peek(32 << 10)
				if n, _ := unix.Write(e.um, p); n > 0 {
					e.box.consume(off, n)
				}
			}
			switch {
			case r&unix.POLLIN != 0:
				n, err := unix.Read(e.um, buf)
				switch {
				case n > 0 && e.input:
					inq = append(inq, buf[:n]...)
					e.copyWinsize()
				case n > 0: // output-only channel: discard
				case err == unix.EAGAIN || err == unix.EINTR:
				default: // EIO: the last opener closed it
					detach()
				}
			case r&(unix.POLLHUP|unix.POLLERR) != 0:
				detach()
			}
		}
		if len(inq) > 0 {
			n, err := unix.Write(c.master, inq)
			if n > 0 {
				inq = inq[n:]
			}
			if err != nil && err != unix.EAGAIN && err != unix.EINTR {
				if !loggedIn {
					c.logf("%s: write pty master: %v (input discarded)", c.name, err)
					loggedIn = true
				}
				inq = nil
			}
		}
	}
}

// peerOpen reports whether someone has the user's slave open.
func (e *ptsEnd) peerOpen() bool {
	fds := []unix.PollFd{{Fd: int32(e.um)}}
	for {
		_, err := unix.Poll(fds, 0)
		if err != unix.EINTR {
			return err == nil && fds[0].Revents&(unix.POLLHUP|unix.POLLNVAL) == 0
		}
	}
}

// copyWinsize copies the user's window size to the guest's pty when it
// changed (and is set at all).
func (e *ptsEnd) copyWinsize() {
	if !e.win {
		return
	}
	ws, err := unix.IoctlGetWinsize(e.um, unix.TIOCGWINSZ)
	if err != nil || (ws.Row == 0 && ws.Col == 0) || *ws == e.ws {
		return
	}
	e.ws = *ws
	if err := unix.IoctlSetWinsize(e.c.master, unix.TIOCSWINSZ, ws); err != nil {
		e.c.logf("%s: copy window size: %v", e.c.name, err)
	}
}

func (e *ptsEnd) interrupt() {
	if e.box != nil {
		e.box.close()
	}
}

// close hands what output is queued to the user's pty as far as it takes
// it now, stops the xterm, and closes the user's pty.
func (e *ptsEnd) close() error {
	if e.box != nil {
		p := e.box.rest()
		for len(p) > 0 {
			n, err := unix.Write(e.um, p)
			if n <= 0 || err != nil {
				break
			}
			p = p[n:]
		}
	}
	if e.proc != nil {
		e.proc.stop()
	}
	for _, fd := range []int{e.um, e.ino, e.kick} {
		if fd >= 0 {
			unix.Close(fd)
		}
	}
	return nil
}

// drain reads a non-blocking fd until it has nothing more.
func drain(fd int, buf []byte) {
	for {
		n, err := unix.Read(fd, buf)
		if n <= 0 && err != unix.EINTR {
			return
		}
	}
}

// ttyEnd is a tty:<dev> channel: the host terminal device, opened by New
// and pumped like an fd (Console.inFd/outFd).
type ttyEnd struct{ fd int }

// openTTY opens the device for the directions used (like the C kernel's
// tty channel) and puts it in raw mode until Close or Restore.
func (c *Console) openTTY(dev string, input, output, win bool) (*ttyEnd, error) {
	acc := unix.O_RDWR
	what := "tty:" + dev
	switch {
	case !output:
		acc = unix.O_RDONLY
		what = "input " + what
	case !input:
		acc = unix.O_WRONLY
		what = "output " + what
	}
	// O_NONBLOCK: do not wait for a modem's carrier; the pumps poll.
	fd, err := unix.Open(dev, acc|unix.O_NOCTTY|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	t, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("not a terminal: %w", err)
	}
	raw := *t
	makeRaw(&raw)
	if err := unix.IoctlSetTermios(fd, unix.TCSETS, &raw); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("set raw mode: %w", err)
	}
	c.saved = append(c.saved, savedMode{fd, t, what})
	if input {
		c.inFd, c.inTerm = fd, true
	}
	if output {
		c.outFd = fd
	}
	if win && c.winFd < 0 {
		c.winFd = fd
	}
	return &ttyEnd{fd}, nil
}

func (e *ttyEnd) start()     {}
func (e *ttyEnd) interrupt() {}
func (e *ttyEnd) close() error {
	return unix.Close(e.fd)
}
