package chans

import (
	"bytes"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/umltools/umltools/internal/cmdline"
	"golang.org/x/sys/unix"
)

// logRecorder collects Logf lines.
type logRecorder struct {
	mu    sync.Mutex
	lines []string
}

func (l *logRecorder) logf(format string, a ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, fmt.Sprintf(format, a...))
}

func (l *logRecorder) get() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.lines...)
}

// openChans calls New with Options{Name: name, Logf: logf} and closes the
// Console at the end of the test.
func openChans(t *testing.T, in, out, name string, logf func(string, ...any)) *Console {
	t.Helper()
	c, err := New(mustChan(t, in), mustChan(t, out), Options{Name: name, Logf: logf})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// openUser opens a pts channel's user side, non-blocking, closed at the
// end of the test (or earlier by the caller).
func openUser(t *testing.T, c *Console) int {
	t.Helper()
	if c.UserPath() == "" {
		t.Fatal("UserPath is empty")
	}
	fd, err := unix.Open(c.UserPath(), unix.O_RDWR|unix.O_NOCTTY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

// writeAll writes p to fd (blocking or not).
func writeAll(t *testing.T, fd int, p []byte) {
	t.Helper()
	for len(p) > 0 {
		n, err := unix.Write(fd, p)
		if n > 0 {
			p = p[n:]
		}
		if err == unix.EAGAIN {
			fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
			unix.Poll(fds, 1000)
		} else if err != nil && err != unix.EINTR {
			t.Fatalf("write: %v", err)
		}
	}
}

// expectNothing fails if fd becomes readable within d.
func expectNothing(t *testing.T, fd int, d time.Duration, what string) {
	t.Helper()
	if b, ok := readFd(t, fd, d); ok {
		t.Errorf("%s: unexpected %s", what, short(b))
	}
}

// waitFor polls cond for up to 5 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(5 * time.Second); !cond(); {
		if time.Now().After(end) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// outboxOf returns the Console's user output queue.
func outboxOf(t *testing.T, c *Console) *outbox {
	t.Helper()
	for _, ep := range c.eps {
		switch e := ep.(type) {
		case *ptsEnd:
			if e.box != nil {
				return e.box
			}
		case *portEnd:
			if e.box != nil {
				return e.box
			}
		}
	}
	t.Fatal("no user output channel")
	return nil
}

// waitAttached waits until the output endpoint sees a user (or none).
func waitAttached(t *testing.T, c *Console, want bool) {
	t.Helper()
	box := outboxOf(t, c)
	waitFor(t, fmt.Sprintf("attached = %v", want), func() bool {
		box.mu.Lock()
		defer box.mu.Unlock()
		return box.attached == want
	})
}

// waitQueued waits until n bytes in all have reached the output queue
// (a guest's write returns once its pty has the bytes, before the pump
// has moved them).
func waitQueued(t *testing.T, c *Console, n int) {
	t.Helper()
	box := outboxOf(t, c)
	waitFor(t, fmt.Sprintf("%d bytes queued", n), func() bool {
		box.mu.Lock()
		defer box.mu.Unlock()
		return box.start+uint64(len(box.buf)) == uint64(n)
	})
}

// short abbreviates b for messages.
func short(b []byte) string {
	if len(b) > 40 {
		return fmt.Sprintf("%q... (%d bytes)", b[:40], len(b))
	}
	return fmt.Sprintf("%q", b)
}

// pattern returns n bytes of varied data ending in "THE-END".
func pattern(n int) []byte {
	data := make([]byte, n)
	x := uint32(7)
	for i := range data {
		x = x*1664525 + 1013904223
		data[i] = byte(x >> 24)
	}
	copy(data[n-7:], "THE-END")
	return data
}

// guestWrite writes p to the guest's side in the background; the result
// arrives on the channel.
func guestWrite(c *Console, p []byte) <-chan error {
	done := make(chan error, 1)
	go func() { _, err := c.Slave().Write(p); done <- err }()
	return done
}

func TestPtsAnnounce(t *testing.T) {
	needPty(t)
	for _, tc := range []struct{ name, ch, want string }{
		{"con1", "pts", "Virtual console 1 assigned device '%s'"},
		{"con12", "pty", "Virtual console 12 assigned device '%s'"},
		{"ssl0", "pts", "Serial line 0 assigned device '%s'"},
		{"ssl3", "null,pty", "Serial line 3 assigned device '%s'"},
	} {
		var logs logRecorder
		in, out, _ := strings.Cut(tc.ch, ",")
		if out == "" {
			out = in
		}
		c := openChans(t, in, out, tc.name, logs.logf)
		p := c.UserPath()
		if !strings.HasPrefix(p, "/dev/pts/") || p == c.SlavePath() {
			t.Errorf("%s=%s: UserPath %q (guest's %q)", tc.name, tc.ch, p, c.SlavePath())
		}
		want := []string{fmt.Sprintf(tc.want, p)}
		if got := logs.get(); strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Errorf("%s=%s: log %q, want %q", tc.name, tc.ch, got, want)
		}
	}
}

// TestPts: the user's pty is raw; nobody attached: the guest never blocks
// and the newest 64 KiB wait for the user; attached: data both ways, with
// the guest's line discipline; window size; re-attach.
func TestPts(t *testing.T) {
	needPty(t)
	c := openChans(t, "pts", "pts", "con1", t.Logf)

	// 1 MiB with nobody attached (and nobody ever was).
	setRaw(t, slaveFd(c))
	data := pattern(1 << 20)
	select {
	case err := <-guestWrite(c, data):
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("guest blocked writing 1 MiB with nobody attached")
	}
	waitQueued(t, c, len(data))

	u := openUser(t, c)
	tm, err := unix.IoctlGetTermios(u, unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	if tm.Lflag&(unix.ICANON|unix.ECHO|unix.ISIG) != 0 || tm.Oflag&unix.OPOST != 0 || tm.Iflag&unix.ICRNL != 0 {
		t.Errorf("user pty not raw: %+v", tm)
	}
	got := readN(t, u, outboxSize)
	if want := data[len(data)-outboxSize:]; !bytes.Equal(got, want) {
		t.Errorf("on attach the user read %s, want the last %d bytes written", short(got), len(want))
	}
	expectNothing(t, u, 100*time.Millisecond, "after the queued output")

	// Canonical guest: input, echo, output.
	tm, err = unix.IoctlGetTermios(slaveFd(c), unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	tm.Lflag |= unix.ICANON | unix.ECHO | unix.ISIG
	tm.Oflag |= unix.OPOST | unix.ONLCR
	tm.Iflag |= unix.ICRNL
	if err := unix.IoctlSetTermios(slaveFd(c), unix.TCSETS, tm); err != nil {
		t.Fatal(err)
	}
	writeAll(t, u, []byte("hello\n"))
	if b, ok := readFd(t, slaveFd(c), 5*time.Second); !ok || string(b) != "hello\n" {
		t.Errorf("guest read %q, want %q", b, "hello\n")
	}
	if b := readN(t, u, 7); string(b) != "hello\r\n" {
		t.Errorf("user saw echo %q", b)
	}
	if _, err := c.Slave().Write([]byte("ok\n")); err != nil {
		t.Fatal(err)
	}
	if b := readN(t, u, 4); string(b) != "ok\r\n" {
		t.Errorf("user read %q, want %q", b, "ok\r\n")
	}

	// The guest's window follows the user's once the user types.
	if err := unix.IoctlSetWinsize(u, unix.TIOCSWINSZ, &unix.Winsize{Row: 33, Col: 99}); err != nil {
		t.Fatal(err)
	}
	writeAll(t, u, []byte("\n"))
	readN(t, slaveFd(c), 1)
	readN(t, u, 2)
	ws, err := unix.IoctlGetWinsize(slaveFd(c), unix.TIOCGWINSZ)
	if err != nil || ws.Row != 33 || ws.Col != 99 {
		t.Errorf("guest window %+v, %v; want 33x99", ws, err)
	}

	// Leave and come back: same device, still working.
	unix.Close(u)
	u2 := openUser(t, c)
	writeAll(t, u2, []byte("again\n"))
	if b, ok := readFd(t, slaveFd(c), 5*time.Second); !ok || string(b) != "again\n" {
		t.Errorf("after re-attach the guest read %q", b)
	}
	if b := readN(t, u2, 7); string(b) != "again\r\n" {
		t.Errorf("after re-attach the user saw %q", b)
	}

	// Close hangs the user's side up.
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 10)
	fds := []unix.PollFd{{Fd: int32(u2), Events: unix.POLLIN}}
	unix.Poll(fds, 1000)
	if n, err := unix.Read(u2, buf); n != 0 && err == nil {
		t.Errorf("user side after Close: read %q, %v", buf[:n], err)
	}
}

// TestPtsFlowControl: while the user is attached, output is not dropped:
// the guest waits for a user who does not read.
func TestPtsFlowControl(t *testing.T) {
	needPty(t)
	c := openChans(t, "pts", "pts", "con1", t.Logf)
	setRaw(t, slaveFd(c))
	u := openUser(t, c)
	waitAttached(t, c, true)
	data := pattern(1 << 20)
	done := guestWrite(c, data)
	select {
	case err := <-done:
		t.Fatalf("guest wrote 1 MiB to an attached user who does not read (err %v)", err)
	case <-time.After(500 * time.Millisecond):
	}
	if got := readN(t, u, len(data)); !bytes.Equal(got, data) {
		t.Errorf("user read %s, not what the guest wrote", short(got))
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestPtsOneWay: a pts channel for one direction only.
func TestPtsOneWay(t *testing.T) {
	needPty(t)
	t.Run("output only", func(t *testing.T) {
		c := openChans(t, "null", "pts", "con2", t.Logf)
		u := openUser(t, c)
		writeAll(t, u, []byte("typed\n"))
		expectNothing(t, slaveFd(c), 200*time.Millisecond, "guest input from an output-only pts")
		if _, err := c.Slave().Write([]byte("shown\n")); err != nil {
			t.Fatal(err)
		}
		if b := readN(t, u, 7); string(b) != "shown\r\n" {
			t.Errorf("user read %q", b)
		}
	})
	t.Run("input only", func(t *testing.T) {
		r, w := pipe(t, false)
		got := collect(r)
		c := openChans(t, "pts", fmt.Sprintf("fd:%d", w.Fd()), "con2", t.Logf)
		u := openUser(t, c)
		writeAll(t, u, []byte("typed\n"))
		if b, ok := readFd(t, slaveFd(c), 5*time.Second); !ok || string(b) != "typed\n" {
			t.Errorf("guest read %q", b)
		}
		if _, err := c.Slave().Write([]byte("out\n")); err != nil {
			t.Fatal(err)
		}
		expectNothing(t, u, 200*time.Millisecond, "user output from an input-only pts")
		c.Close()
		w.Close()
		if g := string(got()); g != "typed\r\nout\r\n" {
			t.Errorf("fd output %q, want the echo and the output", g)
		}
	})
	t.Run("two ptys", func(t *testing.T) {
		var logs logRecorder
		c, err := New(mustChan(t, "pts"), mustChan(t, "pty"), Options{Name: "ssl1", Logf: logs.logf})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		// pts,pty is one channel: one device, one announcement.
		if l := logs.get(); len(l) != 1 {
			t.Errorf("log %q, want one announcement", l)
		}
	})
}

// TestCloseEndpoints: no fd or goroutine-held resource left after Close,
// for every kind of endpoint.
func TestCloseEndpoints(t *testing.T) {
	_, _, hpath := hostPty(t)
	specs := []string{"pts", "null,pts", "pts,null", "port:0", "tty:" + hpath, "pts,port:0", "tty:" + hpath + ",pts"}
	open := func(spec string) *Console {
		in, out, _, err := cmdline.ParseChannelPair(spec)
		if err != nil {
			t.Fatal(err)
		}
		c, err := New(in, out, Options{Name: "con1"})
		if err != nil {
			t.Fatalf("%s: %v", spec, err)
		}
		return c
	}
	for _, spec := range specs { // warm up (netpoller, inotify)
		open(spec).Close()
	}
	n0 := openFds(t)
	for _, spec := range specs {
		c := open(spec)
		if err := c.Close(); err != nil {
			t.Errorf("%s: Close: %v", spec, err)
		}
		if n := openFds(t); n != n0 {
			t.Errorf("%s: %d fds open after Close, %d before New", spec, n, n0)
		}
	}
}
