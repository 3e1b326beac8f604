package chans

import (
	"bytes"
	"os/exec"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/umltools/umltools/internal/cmdline"
)

// xtermBridge is the shell program the terminal emulator runs (its exec
// switch, e.g. -e, takes it as "/bin/sh -c <xtermBridge> sh <pts path>").
// The C kernel runs port-helper there, which passes the emulator's pty
// back over a socket; here the emulator's pty is instead joined to a pts
// channel's slave ($1) by two cats, so no helper program is needed:
//
//   - stty raw -echo makes the window's pty pass every byte unchanged
//     (^C, ^Z, Return and echo are the guest's pty's business);
//   - size copies the window's size to the pts slave, at start and on
//     every SIGWINCH (the engine copies it on to the guest when the user
//     next types);
//   - one cat copies the pts slave to the window, the other the keyboard
//     to the pts slave. A non-interactive shell gives background commands
//     /dev/null as input, hence the keyboard's copy on fd 3;
//   - wait is restarted after a trapped SIGWINCH and returns when both
//     cats end. Closing the window hangs its pty up, which ends all three.
const xtermBridge = `stty raw -echo
p=$1
size() { set -- $(stty size) && stty rows "$1" cols "$2" <"$p"; }
size 2>/dev/null
trap 'size 2>/dev/null' WINCH
exec 3<&0
cat <"$p" &
cat <&3 >"$p" &
exec 3<&-
until wait; do :; done`

// xtermProc is a running terminal emulator.
type xtermProc struct {
	cmd      *exec.Cmd
	done     chan struct{} // closed once it has been waited for
	stopping atomic.Bool
}

// openXterm opens a pts channel and starts the terminal emulator on it:
// <emulator> <title switch> <title> <exec switch> /bin/sh -c ... (see
// xtermBridge). The emulator runs in a process group of its own; its
// standard error goes to Logf line by line. New does not wait for the
// window; an emulator that fails later is logged.
func (c *Console) openXterm(input, output, win bool, o Options) (*ptsEnd, error) {
	x := o.Xterm
	if x.Emulator == "" {
		x.Emulator = cmdline.DefaultXterm
	}
	if x.TitleSwitch == "" {
		x.TitleSwitch = "-T"
	}
	if x.ExecSwitch == "" {
		x.ExecSwitch = "-e"
	}
	e, err := c.openPts(input, output, win)
	if err != nil {
		return nil, err
	}
	prefix := "xterm channel for " + c.name + ": "
	cmd := exec.Command(x.Emulator, x.TitleSwitch, c.line.xtermTitle(o.Umid), x.ExecSwitch,
		"/bin/sh", "-c", xtermBridge, "sh", e.path)
	cmd.Stderr = &lineLog{logf: c.logf, prefix: prefix + x.Emulator + ": "}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.WaitDelay = time.Second
	if err := cmd.Start(); err != nil {
		e.close()
		return nil, err
	}
	p := &xtermProc{cmd: cmd, done: make(chan struct{})}
	go func() {
		err := cmd.Wait()
		if err != nil && !p.stopping.Load() {
			c.logf("%s%s: %v", prefix, x.Emulator, err)
		}
		close(p.done)
	}()
	e.proc = p
	return e, nil
}

// stop terminates the emulator's process group (SIGTERM, then SIGKILL
// after 2 s) and waits for the emulator. Its group is signalled only while
// the emulator has not been waited for, so the group id is still its own.
func (p *xtermProc) stop() {
	p.stopping.Store(true)
	pg := -p.cmd.Process.Pid
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL} {
		select {
		case <-p.done:
			return
		default:
		}
		_ = syscall.Kill(pg, sig)
		select {
		case <-p.done:
			return
		case <-time.After(2 * time.Second):
		}
	}
	<-p.done
}

// lineLog is an io.Writer that logs each line written to it.
type lineLog struct {
	mu     sync.Mutex
	logf   func(format string, a ...any)
	prefix string
	buf    []byte
}

func (l *lineLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf = append(l.buf, p...)
	for {
		i := bytes.IndexByte(l.buf, '\n')
		if i < 0 {
			break
		}
		if line := bytes.TrimRight(l.buf[:i], "\r"); len(line) > 0 {
			l.logf("%s%s", l.prefix, line)
		}
		l.buf = l.buf[i+1:]
	}
	if len(l.buf) > 4096 { // a runaway line: log what there is
		l.logf("%s%s", l.prefix, l.buf)
		l.buf = nil
	}
	return len(p), nil
}
