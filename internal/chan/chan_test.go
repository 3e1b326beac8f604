package chans

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/umltools/umltools/internal/cmdline"
	"github.com/umltools/umltools/internal/testutil"
	"golang.org/x/sys/unix"
)

// needPty skips t when the host has no usable /dev/ptmx.
func needPty(t *testing.T) {
	t.Helper()
	m, s, _, err := openPty()
	if err != nil {
		testutil.Skip(t, "no pseudo-terminals: %v", err)
	}
	unix.Close(m)
	unix.Close(s)
}

func mustChan(t *testing.T, s string) cmdline.Channel {
	t.Helper()
	ch, err := cmdline.ParseChannel(s)
	if err != nil {
		t.Fatalf("ParseChannel(%q): %v", s, err)
	}
	return ch
}

func fdChan(t *testing.T, fd uintptr) cmdline.Channel {
	return mustChan(t, fmt.Sprintf("fd:%d", fd))
}

// pipe returns a pipe whose ends are closed at the end of the test. With
// nonblock, both ends are O_NONBLOCK.
func pipe(t *testing.T, nonblock bool) (r, w *os.File) {
	t.Helper()
	var p [2]int
	fl := unix.O_CLOEXEC
	if nonblock {
		fl |= unix.O_NONBLOCK
	}
	if err := unix.Pipe2(p[:], fl); err != nil {
		t.Fatal(err)
	}
	r, w = os.NewFile(uintptr(p[0]), "r"), os.NewFile(uintptr(p[1]), "w")
	t.Cleanup(func() { r.Close(); w.Close() })
	return r, w
}

// collect reads r to EOF in the background; the returned func waits for
// the result (the caller closes the write end first).
func collect(r *os.File) func() []byte {
	ch := make(chan []byte, 1)
	go func() { b, _ := io.ReadAll(r); ch <- b }()
	return func() []byte {
		select {
		case b := <-ch:
			return b
		case <-time.After(10 * time.Second):
			return []byte("<collect timed out>")
		}
	}
}

// readFd does one read of fd, waiting at most timeout for data. ok is false
// on timeout.
func readFd(t *testing.T, fd int, timeout time.Duration) (b []byte, ok bool) {
	t.Helper()
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	for {
		n, err := unix.Poll(fds, int(timeout.Milliseconds()))
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			t.Fatalf("poll: %v", err)
		}
		if n == 0 {
			return nil, false
		}
		break
	}
	buf := make([]byte, 64<<10)
	n, err := unix.Read(fd, buf)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return buf[:n], true
}

// readN reads exactly n bytes from fd.
func readN(t *testing.T, fd, n int) []byte {
	t.Helper()
	var got []byte
	for len(got) < n {
		b, ok := readFd(t, fd, 5*time.Second)
		if !ok {
			t.Fatalf("timed out after %d of %d bytes: %q", len(got), n, got)
		}
		got = append(got, b...)
	}
	return got
}

func setRaw(t *testing.T, fd int) {
	t.Helper()
	tm, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	makeRaw(tm)
	if err := unix.IoctlSetTermios(fd, unix.TCSETS, tm); err != nil {
		t.Fatal(err)
	}
}

func newConsole(t *testing.T, in, out cmdline.Channel, logf func(string, ...any)) *Console {
	t.Helper()
	c, err := New(in, out, Options{Name: "con0", Logf: logf})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func slaveFd(c *Console) int { return int(c.Slave().Fd()) }

func TestSlaveDevice(t *testing.T) {
	needPty(t)
	c := newConsole(t, mustChan(t, "null"), mustChan(t, "null"), nil)
	if !strings.HasPrefix(c.SlavePath(), "/dev/pts/") {
		t.Errorf("SlavePath = %q", c.SlavePath())
	}
	var st, fst unix.Stat_t
	if err := unix.Stat(c.SlavePath(), &st); err != nil {
		t.Fatal(err)
	}
	if err := unix.Fstat(slaveFd(c), &fst); err != nil {
		t.Fatal(err)
	}
	if uint64(st.Rdev) != c.Rdev() || uint64(fst.Rdev) != c.Rdev() || c.Rdev() == 0 {
		t.Errorf("Rdev = %#x, stat(SlavePath) %#x, fstat(Slave) %#x", c.Rdev(), st.Rdev, fst.Rdev)
	}
	fl, err := unix.FcntlInt(c.Slave().Fd(), unix.F_GETFL, 0)
	if err != nil || fl&unix.O_ACCMODE != unix.O_RDWR || fl&unix.O_NONBLOCK != 0 {
		t.Errorf("slave flags %#x, %v; want O_RDWR, blocking", fl, err)
	}
	// Linux's defaults for a new pty.
	tm, err := unix.IoctlGetTermios(slaveFd(c), unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	if tm.Lflag&(unix.ICANON|unix.ECHO|unix.ISIG) != unix.ICANON|unix.ECHO|unix.ISIG ||
		tm.Oflag&(unix.OPOST|unix.ONLCR) != unix.OPOST|unix.ONLCR || tm.Iflag&unix.ICRNL == 0 || tm.Cc[unix.VEOF] != 4 {
		t.Errorf("slave modes are not Linux's pty defaults: %+v", tm)
	}
}

func TestOutput(t *testing.T) {
	needPty(t)
	for _, tc := range []struct{ write, want string }{
		{"hello\n", "hello\r\n"},
		{"a\r\nb", "a\r\r\nb"},
		{"\x00\xff\t", "\x00\xff\t"},
	} {
		r, w := pipe(t, false)
		got := collect(r)
		c := newConsole(t, mustChan(t, "null"), fdChan(t, w.Fd()), nil)
		if _, err := c.Slave().Write([]byte(tc.write)); err != nil {
			t.Fatal(err)
		}
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
		w.Close()
		if g := got(); string(g) != tc.want {
			t.Errorf("guest wrote %q: output %q, want %q", tc.write, g, tc.want)
		}
	}
}

// TestInput covers fd input into a canonical-mode and a raw-mode guest,
// the echo it produces, and end of input.
func TestInput(t *testing.T) {
	needPty(t)
	for _, tc := range []struct {
		name     string
		raw      bool // guest side in raw mode
		nonblock bool // host input pipe is O_NONBLOCK
		input    string
		eof      bool     // close the input after writing it
		reads    []string // successive guest reads; "" is EOF
		echo     string
	}{
		{"line", false, false, "hello\n", false, []string{"hello\n"}, "hello\r\n"},
		{"line EOF", false, false, "hello\n", true, []string{"hello\n", ""}, "hello\r\n"},
		{"partial line EOF", false, false, "abc", true, []string{"abc", ""}, "abc"},
		{"two lines EOF", false, false, "a\nb\n", true, []string{"a\n", "b\n", ""}, "a\r\nb\r\n"},
		{"empty EOF", false, false, "", true, []string{""}, ""},
		{"nonblocking pipe EOF", false, true, "x\ny", true, []string{"x\n", "y", ""}, "x\r\ny"},
		{"raw", true, false, "x\r\ny", false, []string{"x\r\ny"}, ""},
		// In raw mode the guest sees end of input as ^D bytes.
		{"raw EOF", true, false, "x\n", true, []string{"x\n\x04"}, ""},
		{"raw EOF partial", true, false, "x", true, []string{"x\x04\x04"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ir, iw := pipe(t, tc.nonblock)
			or, ow := pipe(t, false)
			echo := collect(or)
			c := newConsole(t, fdChan(t, ir.Fd()), fdChan(t, ow.Fd()), t.Logf)
			if tc.raw {
				setRaw(t, slaveFd(c))
			}
			if _, err := iw.Write([]byte(tc.input)); err != nil {
				t.Fatal(err)
			}
			if tc.eof {
				iw.Close()
			}
			for i, want := range tc.reads {
				var got []byte
				if tc.raw {
					got = readN(t, slaveFd(c), len(want))
				} else if b, ok := readFd(t, slaveFd(c), 5*time.Second); ok {
					got = b
				} else {
					t.Fatalf("read %d: timed out, want %q", i, want)
				}
				if string(got) != want {
					t.Fatalf("read %d = %q, want %q", i, got, want)
				}
			}
			if b, ok := readFd(t, slaveFd(c), 50*time.Millisecond); ok {
				t.Errorf("unexpected extra input %q", b)
			}
			c.Close()
			ow.Close()
			if g := echo(); string(g) != tc.echo {
				t.Errorf("echo %q, want %q", g, tc.echo)
			}
		})
	}
}

// TestLargeInput writes 1 MiB before the guest reads anything; a slow
// guest must receive all of it, in order.
func TestLargeInput(t *testing.T) {
	needPty(t)
	ir, iw := pipe(t, false)
	c := newConsole(t, fdChan(t, ir.Fd()), mustChan(t, "null"), t.Logf)
	setRaw(t, slaveFd(c))
	data := make([]byte, 1<<20)
	x := uint32(1)
	for i := range data {
		x = x*1664525 + 1013904223
		data[i] = byte(x >> 24)
	}
	data[len(data)-1] = 'x'
	werr := make(chan error, 1)
	go func() { _, err := iw.Write(data); werr <- err }()
	time.Sleep(300 * time.Millisecond) // let the pty fill up
	var got []byte
	buf := make([]byte, 1000)
	deadline := time.Now().Add(30 * time.Second)
	for len(got) < len(data) && time.Now().Before(deadline) {
		fds := []unix.PollFd{{Fd: int32(slaveFd(c)), Events: unix.POLLIN}}
		if n, err := unix.Poll(fds, 2000); n == 0 && err == nil {
			break // lost input: nothing more will come
		}
		n, err := unix.Read(slaveFd(c), buf)
		if err != nil && err != unix.EINTR {
			t.Fatal(err)
		}
		if n > 0 {
			got = append(got, buf[:n]...)
			if len(got)%(64<<10) < n {
				time.Sleep(20 * time.Millisecond)
			}
		}
	}
	select {
	case err := <-werr:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("input writer blocked")
	}
	if !bytes.Equal(got, data) {
		i := 0
		for i < len(got) && i < len(data) && got[i] == data[i] {
			i++
		}
		t.Fatalf("got %d bytes, want %d; first difference at %d", len(got), len(data), i)
	}
	iw.Close()
	if tail := readN(t, slaveFd(c), 2); string(tail) != "\x04\x04" {
		t.Errorf("after EOF the raw guest read %q, want two ^D", tail)
	}
}

// TestDrain: output written right before Close must all arrive.
func TestDrain(t *testing.T) {
	needPty(t)
	var data []byte
	for i := 0; len(data) < 100<<10; i++ {
		data = fmt.Appendf(data, "%05d %s\n", i, strings.Repeat("x", 73))
	}
	want := bytes.ReplaceAll(data, []byte("\n"), []byte("\r\n"))
	for i := range 5 {
		r, w := pipe(t, false)
		got := collect(r)
		c := newConsole(t, mustChan(t, "null"), fdChan(t, w.Fd()), t.Logf)
		if _, err := c.Slave().Write(data); err != nil {
			t.Fatal(err)
		}
		c.Close()
		w.Close()
		if g := got(); !bytes.Equal(g, want) {
			t.Fatalf("run %d: output has %d bytes, want %d", i, len(g), len(want))
		}
	}
}

// TestDiscard: with null output, or an output fd that fails, the guest
// never blocks writing.
func TestDiscard(t *testing.T) {
	needPty(t)
	for _, tc := range []struct {
		name   string
		broken bool // output to a pipe with no reader (EPIPE)
	}{{"null", false}, {"EPIPE", true}} {
		t.Run(tc.name, func(t *testing.T) {
			out := mustChan(t, "null")
			if tc.broken {
				r, w := pipe(t, false)
				r.Close()
				out = fdChan(t, w.Fd())
			}
			var mu sync.Mutex
			var logs []string
			logf := func(f string, a ...any) {
				mu.Lock()
				logs = append(logs, fmt.Sprintf(f, a...))
				mu.Unlock()
			}
			c := newConsole(t, mustChan(t, "null"), out, logf)
			done := make(chan error, 1)
			go func() { _, err := c.Slave().Write(make([]byte, 1<<20)); done <- err }()
			select {
			case err := <-done:
				if err != nil {
					t.Fatal(err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("guest blocked writing 1 MiB")
			}
			// null input never arrives.
			if b, ok := readFd(t, slaveFd(c), 50*time.Millisecond); ok {
				t.Errorf("null input delivered %q", b)
			}
			c.Close()
			mu.Lock()
			defer mu.Unlock()
			if tc.broken != (len(logs) == 1 && strings.Contains(logs[0], "con0: output fd:") && strings.Contains(logs[0], "broken pipe")) {
				t.Errorf("messages %q", logs)
			}
		})
	}
}

// TestTerminal uses a second pty as the host terminal: raw mode while
// running, window size followed, exact restore.
func TestTerminal(t *testing.T) {
	needPty(t)
	hm, hs, _, err := openPty() // hm: the user's side, hs: the host terminal
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(hm)
	defer unix.Close(hs)
	if err := unix.IoctlSetWinsize(hs, unix.TIOCSWINSZ, &unix.Winsize{Row: 40, Col: 100}); err != nil {
		t.Fatal(err)
	}
	before, err := unix.IoctlGetTermios(hs, unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	c := newConsole(t, fdChan(t, uintptr(hs)), fdChan(t, uintptr(hs)), t.Logf)

	tm, err := unix.IoctlGetTermios(hs, unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	if tm.Lflag&(unix.ICANON|unix.ECHO|unix.ISIG) != 0 || tm.Iflag&(unix.IXON|unix.ICRNL) != 0 ||
		tm.Oflag&unix.OPOST != 0 || tm.Cc[unix.VMIN] != 1 || tm.Cc[unix.VTIME] != 0 {
		t.Errorf("host terminal not raw: %+v", tm)
	}
	winsize := func() unix.Winsize {
		ws, err := unix.IoctlGetWinsize(slaveFd(c), unix.TIOCGWINSZ)
		if err != nil {
			t.Fatal(err)
		}
		return *ws
	}
	if ws := winsize(); ws.Row != 40 || ws.Col != 100 {
		t.Errorf("slave window %dx%d, want 40x100", ws.Row, ws.Col)
	}
	if err := unix.IoctlSetWinsize(hs, unix.TIOCSWINSZ, &unix.Winsize{Row: 50, Col: 120}); err != nil {
		t.Fatal(err)
	}
	syscall.Kill(os.Getpid(), syscall.SIGWINCH)
	for end := time.Now().Add(5 * time.Second); winsize().Row != 50 && time.Now().Before(end); {
		time.Sleep(10 * time.Millisecond)
	}
	if ws := winsize(); ws.Row != 50 || ws.Col != 120 {
		t.Errorf("after SIGWINCH slave window %dx%d, want 50x120", ws.Row, ws.Col)
	}

	// The user types "ls" Return: the guest reads "ls\n" (the guest's
	// ICRNL) and its echo "ls\r\n" reaches the user unchanged (OPOST off).
	if _, err := unix.Write(hm, []byte("ls\r")); err != nil {
		t.Fatal(err)
	}
	if b, ok := readFd(t, slaveFd(c), 5*time.Second); !ok || string(b) != "ls\n" {
		t.Errorf("guest read %q, want %q", b, "ls\n")
	}
	if b := readN(t, hm, 4); string(b) != "ls\r\n" {
		t.Errorf("user saw echo %q, want %q", b, "ls\r\n")
	}
	if _, err := c.Slave().Write([]byte("ok\n")); err != nil {
		t.Fatal(err)
	}
	if b := readN(t, hm, 4); string(b) != "ok\r\n" {
		t.Errorf("user saw %q, want %q", b, "ok\r\n")
	}

	c.Restore()
	c.Restore()
	check := func(when string) {
		after, err := unix.IoctlGetTermios(hs, unix.TCGETS)
		if err != nil {
			t.Fatal(err)
		}
		if *after != *before {
			t.Errorf("%s: host terminal %+v, want %+v", when, after, before)
		}
	}
	check("after Restore")
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	check("after Close")
}

// TestUnsupported: only an unknown channel type (e.g. the zero Channel)
// is refused with ErrUnsupported.
func TestUnsupported(t *testing.T) {
	needPty(t)
	null := mustChan(t, "null")
	for _, ch := range []cmdline.Channel{{}, {Type: 99, Text: "bogus"}} {
		for _, pair := range [][2]cmdline.Channel{{ch, null}, {null, ch}} {
			c, err := New(pair[0], pair[1], Options{Name: "con1"})
			if c != nil || !errors.Is(err, ErrUnsupported) || !strings.HasPrefix(err.Error(), "con1: ") {
				t.Errorf("New(%q, %q) = %v, %v; want ErrUnsupported", pair[0], pair[1], c, err)
				if c != nil {
					c.Close()
				}
			}
		}
	}
}

func TestBadFd(t *testing.T) {
	needPty(t)
	r, w := pipe(t, false)
	for _, tc := range []struct {
		in, out cmdline.Channel
		want    string
	}{
		{mustChan(t, "fd:987654"), mustChan(t, "null"), "con2: input fd:987654: bad file descriptor"},
		{mustChan(t, "null"), mustChan(t, "fd:987654"), "con2: output fd:987654: bad file descriptor"},
		{fdChan(t, w.Fd()), mustChan(t, "null"), "not open for reading"},
		{mustChan(t, "null"), fdChan(t, r.Fd()), "not open for writing"},
	} {
		c, err := New(tc.in, tc.out, Options{Name: "con2"})
		if c != nil || err == nil || !strings.Contains(err.Error(), tc.want) || errors.Is(err, ErrUnsupported) {
			t.Errorf("New(%q, %q) = %v, %v; want error %q", tc.in, tc.out, c, err, tc.want)
		}
	}
}

// openFds counts this process's open fds (skipping t without /proc).
func openFds(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip(err)
	}
	return len(ents)
}

// TestClose: Close twice and concurrently, and no fd left open.
func TestClose(t *testing.T) {
	needPty(t)
	ir, iw := pipe(t, false)
	_, ow := pipe(t, false)
	in, out := fdChan(t, ir.Fd()), fdChan(t, ow.Fd())
	warm, err := New(in, out, Options{})
	if err != nil {
		t.Fatal(err)
	}
	warm.Close()
	n0 := openFds(t)
	c, err := New(in, out, Options{})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() {
			if err := c.Close(); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if err := c.Close(); err != nil {
		t.Error(err)
	}
	if n := openFds(t); n != n0 {
		t.Errorf("%d fds open after Close, %d before New", n, n0)
	}
	if _, err := c.Slave().Write([]byte("x")); err == nil {
		t.Error("slave still open after Close")
	}
	// The host fds stay open.
	if _, err := iw.Write([]byte("x")); err != nil {
		t.Errorf("input pipe: %v", err)
	}
	if _, err := ow.Write([]byte("x")); err != nil {
		t.Errorf("output pipe: %v", err)
	}
}
