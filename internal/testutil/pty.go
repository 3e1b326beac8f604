package testutil

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Pty is a host pseudo-terminal a test drives like a user at a terminal.
type Pty struct {
	master, slave *os.File

	mu   sync.Mutex
	buf  bytes.Buffer // output not yet consumed by Expect
	more chan struct{}
	done bool
}

// OpenPty allocates a pty pair.
func OpenPty() (*Pty, error) {
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		return nil, err
	}
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		m.Close()
		return nil, fmt.Errorf("unlockpt: %w", err)
	}
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		m.Close()
		return nil, fmt.Errorf("ptsname: %w", err)
	}
	s, err := os.OpenFile("/dev/pts/"+strconv.Itoa(n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		m.Close()
		return nil, err
	}
	p := &Pty{master: m, slave: s, more: make(chan struct{}, 1)}
	go p.pump()
	return p, nil
}

func (p *Pty) pump() {
	b := make([]byte, 4096)
	for {
		n, err := p.master.Read(b)
		p.mu.Lock()
		p.buf.Write(b[:n])
		if err != nil {
			p.done = true
		}
		p.mu.Unlock()
		select {
		case p.more <- struct{}{}:
		default:
		}
		if err != nil {
			return
		}
	}
}

// Start runs cmd in a new session with the pty's slave as its controlling
// terminal and standard files (standard error only when cmd has none).
func (p *Pty) Start(cmd *exec.Cmd) error {
	cmd.Stdin, cmd.Stdout = p.slave, p.slave
	if cmd.Stderr == nil {
		cmd.Stderr = p.slave
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	return cmd.Start()
}

// Write types b.
func (p *Pty) Write(b []byte) (int, error) { return p.master.Write(b) }

// Expect waits until s appears in the output and consumes the output up to
// and including it.
func (p *Pty) Expect(s string, timeout time.Duration) error {
	end := time.After(timeout)
	for {
		p.mu.Lock()
		if i := bytes.Index(p.buf.Bytes(), []byte(s)); i >= 0 {
			p.buf.Next(i + len(s))
			p.mu.Unlock()
			return nil
		}
		done, have := p.done, p.buf.String()
		p.mu.Unlock()
		if done {
			return fmt.Errorf("terminal closed before %q; last output %q", s, tailBytes(have, 400))
		}
		select {
		case <-p.more:
		case <-end:
			return fmt.Errorf("no %q within %v; last output %q", s, timeout, tailBytes(have, 400))
		}
	}
}

func tailBytes(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// Close releases both ends.
func (p *Pty) Close() error {
	p.slave.Close()
	return p.master.Close()
}
