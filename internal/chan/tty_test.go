package chans

import (
	"errors"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// hostPty is a pty pair standing for a host terminal (tty:<path>),
// closed when the test ends: the user's side, the device's fd and path.
func hostPty(t *testing.T) (master, slave int, path string) {
	t.Helper()
	needPty(t)
	m, s, p, err := openPty()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		unix.Close(m)
		unix.Close(s)
	})
	return m, s, p
}

// TestTTY uses a pty pair made by the test as the host terminal <dev>:
// raw mode while running, data both ways, window size, exact restore.
func TestTTY(t *testing.T) {
	hm, hs, hpath := hostPty(t) // hm: the user's side; hpath: the device
	if err := unix.IoctlSetWinsize(hs, unix.TIOCSWINSZ, &unix.Winsize{Row: 41, Col: 101}); err != nil {
		t.Fatal(err)
	}
	before, err := unix.IoctlGetTermios(hs, unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	var logs logRecorder
	c := openChans(t, "tty:"+hpath, "tty:"+hpath, "con4", logs.logf)
	if c.UserPath() != "" {
		t.Errorf("UserPath %q for a tty channel", c.UserPath())
	}
	tm, err := unix.IoctlGetTermios(hs, unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	if tm.Lflag&(unix.ICANON|unix.ECHO|unix.ISIG) != 0 || tm.Iflag&(unix.IXON|unix.ICRNL) != 0 || tm.Oflag&unix.OPOST != 0 {
		t.Errorf("device not raw: %+v", tm)
	}
	if ws, err := unix.IoctlGetWinsize(slaveFd(c), unix.TIOCGWINSZ); err != nil || ws.Row != 41 || ws.Col != 101 {
		t.Errorf("guest window %+v, %v; want 41x101", ws, err)
	}

	if _, err := unix.Write(hm, []byte("ls\r")); err != nil {
		t.Fatal(err)
	}
	if b, ok := readFd(t, slaveFd(c), 5*time.Second); !ok || string(b) != "ls\n" {
		t.Errorf("guest read %q, want %q", b, "ls\n")
	}
	if b := readN(t, hm, 4); string(b) != "ls\r\n" {
		t.Errorf("user saw echo %q", b)
	}
	if _, err := c.Slave().Write([]byte("ok\n")); err != nil {
		t.Fatal(err)
	}
	if b := readN(t, hm, 4); string(b) != "ok\r\n" {
		t.Errorf("user read %q", b)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	after, err := unix.IoctlGetTermios(hs, unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	if *after != *before {
		t.Errorf("after Close: device modes %+v, want %+v", after, before)
	}
	if l := logs.get(); len(l) != 0 {
		t.Errorf("messages %q", l)
	}
}

// TestTTYOneWay: tty:<dev> as output only (input from null), then as input
// only.
func TestTTYOneWay(t *testing.T) {
	hm, hs, hpath := hostPty(t)
	c := openChans(t, "null", "tty:"+hpath, "ssl1", t.Logf)
	if _, err := unix.Write(hm, []byte("typed\r")); err != nil {
		t.Fatal(err)
	}
	expectNothing(t, slaveFd(c), 200*time.Millisecond, "guest input from an output-only tty")
	if _, err := c.Slave().Write([]byte("out\n")); err != nil {
		t.Fatal(err)
	}
	if b := readN(t, hm, 5); string(b) != "out\r\n" {
		t.Errorf("device got %q", b)
	}
	c.Close()
	// Forget the unread "typed\r".
	if err := unix.IoctlSetInt(hs, unix.TCFLSH, unix.TCIFLUSH); err != nil {
		t.Fatal(err)
	}
	c = openChans(t, "tty:"+hpath, "null", "ssl1", t.Logf)
	if _, err := unix.Write(hm, []byte("x\r")); err != nil {
		t.Fatal(err)
	}
	if b, ok := readFd(t, slaveFd(c), 5*time.Second); !ok || string(b) != "x\n" {
		t.Errorf("guest read %q from an input-only tty, want %q", b, "x\n")
	}
	expectNothing(t, hm, 100*time.Millisecond, "echo to an input-only tty")
	if err := c.Close(); err != nil { // before hm goes
		t.Error(err)
	}
}

func TestTTYErrors(t *testing.T) {
	needPty(t)
	for _, tc := range []struct {
		dev, want string
		is        error
	}{
		{"/nonexistent/tty", "con5: tty:/nonexistent/tty: no such file or directory", unix.ENOENT},
		{"/dev/null", "con5: tty:/dev/null: not a terminal: inappropriate ioctl for device", unix.ENOTTY},
	} {
		c, err := New(mustChan(t, "tty:"+tc.dev), mustChan(t, "tty:"+tc.dev), Options{Name: "con5"})
		if c != nil || err == nil || err.Error() != tc.want || !errors.Is(err, tc.is) {
			t.Errorf("tty:%s: %v, %v; want %q", tc.dev, c, err, tc.want)
			if c != nil {
				c.Close()
			}
		}
	}
}
