package mconsole

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestRewriteUbdPaths(t *testing.T) {
	dir := t.TempDir()
	real := filepath.Join(dir, "real")
	os.Mkdir(real, 0o755)
	os.Symlink(real, filepath.Join(dir, "link"))
	t.Chdir(dir)
	cwd, _ := unix.Getwd()
	tests := []struct{ in, out, warn string }{
		{"version", "version", ""},
		{"config ubd0", "config ubd0", ""},
		{"config con0=null", "config con0=null", ""},
		{"config ubd1=disk.img", "config ubd1=" + cwd + "/disk.img", ""},
		{"config ubd1r=cow,back", "config ubd1r=" + cwd + "/cow," + cwd + "/back", ""},
		{"config ubd1=link/a.img", "config ubd1=" + cwd + "/real/a.img", ""},
		{"config ubd1=/abs/x", "config ubd1=/abs/x", "absolutize : Can't cd to '/abs', No such file or directory\n"},
		{"config ubd1=/x", "config ubd1=/x", ""},
		// The C client mangles this into a backing file "<cwd>/".
		{"config ubd11=F,,SER", "config ubd11=" + cwd + "/F,,SER", ""},
		{"config ubd2=a:b:serial", "config ubd2=" + cwd + "/a:" + cwd + "/b:serial", ""},
		{"config  ubd3=", "config  ubd3=", ""},
	}
	for _, tt := range tests {
		var w bytes.Buffer
		if got := RewriteUbdPaths(tt.in, &w); got != tt.out || w.String() != tt.warn {
			t.Errorf("%q:\n got %q (warn %q)\nwant %q (warn %q)", tt.in, got, w.String(), tt.out, tt.warn)
		}
	}
}

func TestResolve(t *testing.T) {
	home := t.TempDir()
	t.Setenv("HOME", home)
	os.MkdirAll(home+"/.uml/m1", 0o755)
	os.WriteFile(home+"/.uml/m1/mconsole", nil, 0o644)
	os.WriteFile(home+"/.uml/m1/pid", []byte("4321\n"), 0o644)
	other := t.TempDir()
	os.WriteFile(other+"/mconsole", nil, 0o644)
	os.WriteFile(other+"/pid", []byte("99\n"), 0o644)

	tests := []struct {
		name, sock string
		pid        int
		warnings   []string
	}{
		{"m1", home + "/.uml/m1/mconsole", 4321, nil},
		{other + "/mconsole", other + "/mconsole", 99, []string{
			home + "/.uml/" + other + "/mconsole/mconsole",
			"/tmp/uml/" + other + "/mconsole/mconsole"}},
		// A name under $HOME/.uml skips attempt 1 and tries it last.
		{home + "/.uml/m1/mconsole", home + "/.uml/m1/mconsole", 4321, []string{
			"/tmp/uml/" + home + "/.uml/m1/mconsole/mconsole"}},
		{"nope", "", 0, []string{home + "/.uml/nope/mconsole", "/tmp/uml/nope/mconsole", "nope"}},
	}
	for _, tt := range tests {
		var w bytes.Buffer
		tg, err := Resolve(tt.name, &w)
		var warned []string
		for _, l := range strings.Split(strings.TrimSpace(w.String()), "\n") {
			if l != "" {
				p := strings.TrimPrefix(l, "Warning: couldn't stat file: ")
				warned = append(warned, strings.TrimSuffix(p, " - No such file or directory"))
			}
		}
		if strings.Join(warned, "|") != strings.Join(tt.warnings, "|") {
			t.Errorf("%s: warnings\n%s\nwant\n%s", tt.name, strings.Join(warned, "\n"), strings.Join(tt.warnings, "\n"))
		}
		if tt.sock == "" {
			if err == nil {
				t.Errorf("%s: resolved to %v", tt.name, tg)
			}
			continue
		}
		if err != nil || tg.Socket != tt.sock || tg.Pid != tt.pid {
			t.Errorf("%s: %+v %v", tt.name, tg, err)
		}
	}
	if Prompt("averylongumid") != "(averylongum) " || Prompt("t1") != "(t1) " {
		t.Error("prompt")
	}
}

func TestConsoleLocalCommands(t *testing.T) {
	m := newFake()
	s := startServer(t, m)
	var out, errb bytes.Buffer
	c := &Console{Out: &out, Err: &errb}
	if err := c.Switch(s.Path()); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	long := strings.Repeat("y", 600)
	tests := []struct {
		line string
		out  string
		code uint32
		logs []string
	}{
		{"version   ", "OK Linux fake 6.1.0 #1 x86_64\n", 0, nil},
		{"mconsole-versionXX", "uml_mconsole client version 2\n", 0, nil},
		{"log hello", "OK \nOK \n", 0, []string{"log:hello", "log:\n"}},
		{"login", "OK \nOK \n", 0, []string{"log:in", "log:\n"}},
		// Trailing whitespace is stripped first, so a `log \n` follows.
		{"log a\n", "OK \nOK \n", 0, []string{"log:a", "log:\n"}},
		{"log " + long, "OK \nOK \nOK \n", 0, []string{"log:" + long[:506], "log:" + long[506:], "log:\n"}},
		{"help", "OK " + HelpText + "\n" + LocalHelp, 0, nil},
		{"int", "Cannot determine the PID of your UML session, not sending signal.\n", 0, nil},
		{"remove ubd9", "ERR Device doesn't exist\n", 0xffffffed, nil},
		{"frob", "ERR Unknown command\n", 1, nil},
	}
	for _, tt := range tests {
		out.Reset()
		before := len(m.Calls())
		code, err := c.Exec(tt.line)
		if err != nil || out.String() != tt.out || code != tt.code {
			t.Errorf("%q: %q code %d err %v", tt.line, out.String(), code, err)
		}
		if tt.logs != nil {
			got := m.Calls()[before:]
			if strings.Join(got, "|") != strings.Join(tt.logs, "|") {
				t.Errorf("%q: machine saw %q", tt.line, got)
			}
		}
	}
	if _, err := c.Exec("quitnow"); err != ErrQuit {
		t.Errorf("quitnow: %v", err)
	}
	// switch to a missing machine fails and keeps the old target.
	out.Reset()
	if code, _ := c.Exec("switch /nonexistent"); code != 1 || out.Len() != 0 {
		t.Errorf("switch: %d %q", code, out.String())
	}
	if code, _ := c.Exec("version"); code != 0 {
		t.Errorf("old target lost")
	}
	out.Reset()
	if code, _ := c.Exec("switch " + s.Path()); code != 0 || out.String() != "Switched to '"+s.Path()+"'\n" {
		t.Errorf("switch: %d %q", code, out.String())
	}
	// log -f of a missing file: the C client exits 1.
	errb.Reset()
	if code, err := c.Exec("log -f /nonexistent"); code != 1 || err != ErrQuit ||
		errb.String() != "opening file: No such file or directory\n" {
		t.Errorf("log -f: %d %v %q", code, err, errb.String())
	}
	// JSON.
	out.Reset()
	c.JSON = true
	c.Exec("remove ubd9")
	if out.String() != `{"ok":false,"err":-19,"text":"Device doesn't exist"}`+"\n" {
		t.Errorf("json: %q", out.String())
	}
}

func TestConsoleDeadMachine(t *testing.T) {
	// A socket file nobody serves: the C client's "Sending command" line.
	p := filepath.Join(t.TempDir(), "mconsole")
	fd, _ := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM, 0)
	unix.Bind(fd, &unix.SockaddrUnix{Name: p})
	unix.Close(fd)
	var out, errb bytes.Buffer
	c := &Console{Out: &out, Err: &errb}
	if err := c.Switch(p); err != nil {
		t.Fatal(err)
	}
	errb.Reset()
	if code, _ := c.Exec("version"); code != 1 || out.Len() != 0 ||
		errb.String() != "Sending command to '"+p+"' : Connection refused\n" {
		t.Errorf("%d %q %q", code, out.String(), errb.String())
	}
}
