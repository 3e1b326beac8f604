package chans

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/umltools/umltools/internal/cmdline"
	"golang.org/x/sys/unix"
)

func TestXtermNoDisplay(t *testing.T) {
	needPty(t)
	t.Setenv("DISPLAY", "")
	os.Unsetenv("DISPLAY")
	for _, pair := range [][2]string{{"xterm", "xterm"}, {"null", "xterm"}, {"xterm", "fd:1"}} {
		c, err := New(mustChan(t, pair[0]), mustChan(t, pair[1]), Options{Name: "con1"})
		const want = "xterm channel for con1: $DISPLAY is not set"
		if c != nil || err == nil || err.Error() != want || !errors.Is(err, ErrNoDisplay) {
			t.Errorf("New(%s,%s) = %v, %v; want %q", pair[0], pair[1], c, err, want)
			if c != nil {
				c.Close()
			}
		}
	}
}

// fakeXterm is an emulator script that records its arguments (NUL
// separated) in $XT_ARGS, then runs its exec switch's command (after the
// three switch arguments) on the terminal $XT_TTY, like a window would.
const fakeXterm = `#!/bin/sh
printf '%s\0' "$@" >"$XT_ARGS.tmp" && mv "$XT_ARGS.tmp" "$XT_ARGS"
shift 3
exec "$@" <"$XT_TTY" >"$XT_TTY" 2>&1
`

// TestXterm runs the xterm channel with a fake emulator: its arguments,
// and the bridge between the "window" (a pty of the test) and the guest.
func TestXterm(t *testing.T) {
	needPty(t)
	for _, prog := range []string{"/bin/sh", "stty", "cat", "mv"} {
		if _, err := exec.LookPath(prog); err != nil {
			t.Skip(err)
		}
	}
	dir := t.TempDir()
	emu := filepath.Join(dir, "fake-xterm")
	if err := os.WriteFile(emu, []byte(fakeXterm), 0o755); err != nil {
		t.Fatal(err)
	}
	wm, ws, wpath, err := openPty() // the window: wm is the screen and keyboard
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(wm)
	wsOpen := true
	defer func() {
		if wsOpen {
			unix.Close(ws)
		}
	}()
	if err := unix.IoctlSetWinsize(ws, unix.TIOCSWINSZ, &unix.Winsize{Row: 30, Col: 90}); err != nil {
		t.Fatal(err)
	}
	args := filepath.Join(dir, "args")
	t.Setenv("DISPLAY", ":99")
	t.Setenv("XT_ARGS", args)
	t.Setenv("XT_TTY", wpath)

	var logs logRecorder
	c, err := New(mustChan(t, "xterm"), mustChan(t, "xterm"), Options{Name: "ssl2", Logf: logs.logf,
		Xterm: cmdline.Xterm{Emulator: emu}, Umid: "vm7"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	b := emulatorArgs(t, args)
	got := strings.Split(strings.TrimSuffix(string(b), "\x00"), "\x00")
	want := []string{"-T", "Serial Line #2 (vm7)", "-e", "/bin/sh", "-c", xtermBridge, "sh", c.UserPath()}
	if strings.Join(got, "|") != strings.Join(want, "|") || c.UserPath() == "" {
		t.Errorf("emulator arguments %q,\nwant %q", got, want)
	}

	// Once the bridge has opened both ptys, the window is its alone;
	// wait for its stty raw -echo before typing.
	waitAttached(t, c, true)
	unix.Close(ws)
	wsOpen = false
	waitFor(t, "the window in raw mode", func() bool {
		tm, err := unix.IoctlGetTermios(wm, unix.TCGETS)
		return err == nil && tm.Lflag&(unix.ECHO|unix.ICANON) == 0
	})

	// The "user" types in the window: the guest (canonical) reads a
	// line, the echo shows in the window; keys pass raw (^C too).
	writeAll(t, wm, []byte("ls\r"))
	if b, ok := readFd(t, slaveFd(c), 5*time.Second); !ok || string(b) != "ls\n" {
		t.Errorf("guest read %q, want %q", b, "ls\n")
	}
	if b := readN(t, wm, 4); string(b) != "ls\r\n" {
		t.Errorf("window shows %q, want the echo", b)
	}
	if _, err := c.Slave().Write([]byte("ok\n")); err != nil {
		t.Fatal(err)
	}
	if b := readN(t, wm, 4); string(b) != "ok\r\n" {
		t.Errorf("window shows %q", b)
	}
	if w, err := unix.IoctlGetWinsize(slaveFd(c), unix.TIOCGWINSZ); err != nil || w.Row != 30 || w.Col != 90 {
		t.Errorf("guest window %+v, %v; want the window's 30x90", w, err)
	}
	setRaw(t, slaveFd(c))
	writeAll(t, wm, []byte("\x03\x1a\xff"))
	if b := readN(t, slaveFd(c), 3); !bytes.Equal(b, []byte("\x03\x1a\xff")) {
		t.Errorf("raw guest read %q", b)
	}

	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	// The emulator's process group is gone: the window's pty has no
	// process left, so its master reads EIO once drained.
	waitFor(t, "the bridge to end", func() bool {
		buf := make([]byte, 100)
		_, err := unix.Read(wm, buf)
		return err == unix.EIO
	})
	if l := logs.get(); len(l) != 0 {
		t.Errorf("messages %q", l)
	}
}

// TestXtermSwitches: xterm=<emulator>,<title switch>,<exec switch>, a
// missing emulator, an emulator that fails.
func TestXtermSwitches(t *testing.T) {
	needPty(t)
	dir := t.TempDir()
	emu := filepath.Join(dir, "fake-xterm")
	if err := os.WriteFile(emu, []byte("#!/bin/sh\nprintf '%s\\0' \"$@\" >\"$XT_ARGS.tmp\" && mv \"$XT_ARGS.tmp\" \"$XT_ARGS\"\necho cannot open display >&2\nexit 3\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	args := filepath.Join(dir, "args")
	t.Setenv("DISPLAY", "bogus:0")
	t.Setenv("XT_ARGS", args)
	var logs logRecorder
	c, err := New(mustChan(t, "null"), mustChan(t, "xterm"), Options{Name: "con3", Logf: logs.logf,
		Xterm: cmdline.Xterm{Emulator: emu, TitleSwitch: "-t", ExecSwitch: "-x"}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	b := emulatorArgs(t, args)
	if got := strings.Split(string(b), "\x00"); len(got) < 4 || got[0] != "-t" || got[1] != "Virtual Console #3" || got[2] != "-x" || got[3] != "/bin/sh" {
		t.Errorf("emulator arguments %q", got)
	}
	wantLogs := []string{"xterm channel for con3: " + emu + ": cannot open display", "xterm channel for con3: " + emu + ": exit status 3"}
	waitFor(t, "the emulator's messages", func() bool { return len(logs.get()) == 2 })
	if l := logs.get(); strings.Join(l, "\n") != strings.Join(wantLogs, "\n") {
		t.Errorf("messages %q, want %q", l, wantLogs)
	}

	c2, err := New(mustChan(t, "xterm"), mustChan(t, "xterm"), Options{Name: "con4",
		Xterm: cmdline.Xterm{Emulator: filepath.Join(dir, "no-such-emulator")}})
	if c2 != nil || err == nil || !strings.HasPrefix(err.Error(), "xterm channel for con4: ") || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing emulator: %v, %v", c2, err)
		if c2 != nil {
			c2.Close()
		}
	}
}

// emulatorArgs waits for the fake emulator to write its arguments to
// path and returns them (NUL-separated).
func emulatorArgs(t *testing.T, path string) []byte {
	t.Helper()
	var b []byte
	waitFor(t, "the emulator's arguments", func() bool {
		var err error
		b, err = os.ReadFile(path)
		return err == nil
	})
	return b
}
