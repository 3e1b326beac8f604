package main

import (
	"bytes"
	"io"
	"path/filepath"
	"strings"
	"testing"

	"github.com/umltools/umltools/internal/cli"
	"github.com/umltools/umltools/internal/mconsole"
)

// machine is a minimal mconsole.Machine for exercising run without exec.
type machine struct{ stopped bool }

func (m *machine) Uname() string               { return "Linux test 6.1.0 #1 x86_64" }
func (m *machine) Halt()                       {}
func (m *machine) Reboot()                     {}
func (m *machine) CtrlAltDel()                 {}
func (m *machine) Stop()                       { m.stopped = true }
func (m *machine) Continue()                   { m.stopped = false }
func (m *machine) Log(string)                  {}
func (m *machine) Sysrq(byte, io.Writer)       {}
func (m *machine) Proc(string) ([]byte, error) { return nil, mconsole.Errorf("Failed to open file") }
func (m *machine) Stack(int, io.Writer) error  { return mconsole.Errorf("Couldn't find that pid") }
func (m *machine) Devices() []mconsole.Device  { return nil }

func serve(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "mconsole")
	s, err := mconsole.Listen(p, &machine{})
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve()
	t.Cleanup(func() { s.Close() })
	return p
}

func TestRun(t *testing.T) {
	sock := serve(t)
	t.Setenv("HOME", t.TempDir())
	tests := []struct {
		name   string
		args   []string
		stdin  string
		code   int
		out    string
		errSub string
	}{
		{"no args", nil, "", 1, "", "Usage : uml_mconsole socket-name [command]\n"},
		{"help", []string{"--help"}, "", 0, "Usage: uml_mconsole [options]", ""},
		{"-h", []string{"-h"}, "", 0, "Usage: uml_mconsole [options]", ""},
		{"version", []string{"--version"}, "", 0, "uml_mconsole (umltools) ", ""},
		{"bad option", []string{"--frob", sock}, "", 2, "", "unknown option"},
		{"bad timeout", []string{"--timeout", "x", sock}, "", 2, "", "--timeout"},
		{"timeout needs value", []string{"--timeout"}, "", 2, "", "needs a duration"},
		{"one shot", []string{sock, "version"}, "", 0, "OK Linux test 6.1.0 #1 x86_64\n", ""},
		{"words joined", []string{sock, "stack", "9"}, "", 1, "ERR Couldn't find that pid\n", ""},
		{"help word is remote", []string{sock, "log", "--help"}, "", 0, "OK \nOK \n", ""},
		{"json", []string{"--json", "--timeout=2s", sock, "go"}, "", 1, `{"ok":false,"err":1,"text":"Not stopped"}` + "\n", ""},
		{"missing machine", []string{"/nonexistent/sock", "version"}, "", 1, "", "no mconsole socket found for '/nonexistent/sock'"},
		{"interactive", []string{sock}, "stop\nversion\n\ngo\nquit\nversion\n", 0,
			"(" + sock[:11] + ") stop\nOK stopped\n" +
				"(" + sock[:11] + ") version\nOK Linux test 6.1.0 #1 x86_64\n" +
				"(" + sock[:11] + ") \nERR Unknown command\n" +
				"(" + sock[:11] + ") go\nOK \n" +
				"(" + sock[:11] + ") quit\n", ""},
		{"interactive EOF", []string{sock}, "version", 0,
			"(" + sock[:11] + ") version\nOK Linux test 6.1.0 #1 x86_64\n(" + sock[:11] + ") \n", ""},
		{"interactive no machine", []string{"/nonexistent/x"}, "version\n", 0,
			"([None]) version\n([None]) \n", "no machine selected"},
	}
	for _, tt := range tests {
		var out, errb bytes.Buffer
		err := run(append([]string{"uml_mconsole"}, tt.args...), strings.NewReader(tt.stdin), &out, &errb)
		code := cli.Report("uml_mconsole", err, &errb)
		if code != tt.code {
			t.Errorf("%s: exit %d, want %d (stderr %q)", tt.name, code, tt.code, errb.String())
		}
		// --help and --version are checked by prefix, everything else exactly.
		prefix := tt.code == 0 && len(tt.args) == 1 && strings.HasPrefix(tt.args[0], "-")
		if got := out.String(); got != tt.out && !(prefix && strings.HasPrefix(got, tt.out)) {
			t.Errorf("%s: stdout %q, want %q", tt.name, got, tt.out)
		}
		if !strings.Contains(errb.String(), tt.errSub) {
			t.Errorf("%s: stderr %q, want %q", tt.name, errb.String(), tt.errSub)
		}
	}
}
