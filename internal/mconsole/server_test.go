package mconsole

import (
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/umltools/umltools/internal/testutil"
)

// fakeMachine records what the server asked of it.
type fakeMachine struct {
	mu     sync.Mutex
	calls  []string
	ubd    map[string]string
	sysrqN int // lines of console output per sysrq
}

func (f *fakeMachine) rec(s string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, s)
}

func (f *fakeMachine) Calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

func (f *fakeMachine) Uname() string   { return "Linux fake 6.1.0 #1 x86_64" }
func (f *fakeMachine) Halt()           { f.rec("halt") }
func (f *fakeMachine) Reboot()         { f.rec("reboot") }
func (f *fakeMachine) CtrlAltDel()     { f.rec("cad") }
func (f *fakeMachine) Stop()           { f.rec("stop") }
func (f *fakeMachine) Continue()       { f.rec("continue") }
func (f *fakeMachine) Log(text string) { f.rec("log:" + text) }
func (f *fakeMachine) Sysrq(key byte, w io.Writer) {
	for i := 0; i < f.sysrqN; i++ {
		fmt.Fprintf(w, "sysrq %c line %d %s\n", key, i, strings.Repeat("x", 60))
	}
}
func (f *fakeMachine) Proc(path string) ([]byte, error) {
	if path == "uptime" {
		return []byte("2.99 1.69\n"), nil
	}
	return nil, Errorf("Failed to open file")
}
func (f *fakeMachine) Stack(pid int, w io.Writer) error {
	if pid != 1 {
		return Errorf("Couldn't find that pid")
	}
	io.WriteString(w, "Call Trace:\n")
	return nil
}
func (f *fakeMachine) Devices() []Device { return []Device{fakeUbd{f}, fakeEth{}} }

type fakeUbd struct{ f *fakeMachine }

func (fakeUbd) Name() string { return "ubd" }
func (d fakeUbd) Config(spec string) (string, error) {
	id, file, _ := strings.Cut(spec, "=")
	d.f.mu.Lock()
	defer d.f.mu.Unlock()
	if _, ok := d.f.ubd[id]; ok {
		return "", &Error{Code: -16, Text: "Device is already configured"}
	}
	d.f.ubd[id] = file
	return "", nil
}
func (d fakeUbd) GetConfig(id string) (string, error) {
	d.f.mu.Lock()
	defer d.f.mu.Unlock()
	return d.f.ubd[id], nil
}
func (d fakeUbd) Remove(id string) error {
	n, err := ParseUnit(id, 15)
	if err != nil {
		return err
	}
	d.f.mu.Lock()
	defer d.f.mu.Unlock()
	if _, ok := d.f.ubd[fmt.Sprint(n)]; !ok {
		return ErrNoDevice
	}
	delete(d.f.ubd, fmt.Sprint(n))
	return nil
}

type fakeEth struct{}

func (fakeEth) Name() string                     { return "eth" }
func (fakeEth) Config(string) (string, error)    { return "", nil }
func (fakeEth) GetConfig(string) (string, error) { return "", ErrNoGet }
func (fakeEth) Remove(string) error              { return ErrDeviceBusy }

func startServer(t *testing.T, m Machine) *Server {
	t.Helper()
	path := filepath.Join(t.TempDir(), "mconsole")
	s, err := Listen(path, m)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve() }()
	t.Cleanup(func() {
		s.Close()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return s
}

func newFake() *fakeMachine { return &fakeMachine{ubd: map[string]string{"0": "root_fs"}} }

func TestClientServer(t *testing.T) {
	m := newFake()
	m.sysrqN = 40 // 40 more=1 packets in one burst: past max_dgram_qlen
	s := startServer(t, m)
	c, err := Dial(s.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	tests := []struct {
		cmd     string
		out     string
		lastErr uint32
	}{
		{"version", "OK Linux fake 6.1.0 #1 x86_64", 0},
		{"versionXYZ", "OK Linux fake 6.1.0 #1 x86_64", 0},
		{" version", "ERR Unknown command", 1},
		{"", "ERR Unknown command", 1},
		{"frob", "ERR Unknown command", 1},
		{"help", "OK " + HelpText, 0},
		{"go", "ERR Not stopped", 1},
		{"stop", "OK stopped", 0},
		{"stop", "ERR Already stopped", 1},
		{"version", "OK Linux fake 6.1.0 #1 x86_64", 0},
		{"go", "OK ", 0},
		{"proc uptime", "OK \n2.99 1.69\n", 0},
		{"proc nonexist", "ERR Failed to open file", 1},
		{"config ubd0", "OK root_fs", 0},
		{"config ubd1", "OK ", 0},
		{"config ubd1=/x.img", "OK ", 0},
		{"config ubd1", "OK /x.img", 0},
		{"config ubd1=/y.img", "ERR Device is already configured", uint32(0xfffffff0)},
		{"config eth0", "ERR No get_config routine defined", 1},
		{"config", "ERR Bad configuration option", 1},
		{"config frob0", "ERR Bad configuration option", 1},
		{"remove ubd9", "ERR Device doesn't exist", uint32(0xffffffed)},
		{"remove ubdx", "ERR Couldn't parse device number", 1},
		{"remove ubd16", "ERR Invalid device number - must be between 0 and 15", 1},
		{"remove ubd1", "OK ", 0},
		{"remove eth0", "ERR Device is currently open", uint32(0xfffffff0)},
		{"remove frob", "ERR Bad remove option", 1},
		{"stack", "ERR Please specify a pid", 1},
		{"stack 7", "ERR Couldn't find that pid", 1},
		{"stack 1", "OK Call Trace:\n", 0},
		{"log hello", "OK ", 0},
		{"halt", "OK ", 0},
		{"cad", "OK ", 0},
	}
	for _, tt := range tests {
		r, err := c.Command(tt.cmd)
		if err != nil {
			t.Fatalf("%q: %v", tt.cmd, err)
		}
		if got := r.String(); got != tt.out || r.LastErr() != tt.lastErr {
			t.Errorf("%q: got %q (last err %d), want %q (%d)", tt.cmd, got, r.LastErr(), tt.out, tt.lastErr)
		}
	}
	r, err := c.Command("sysrq m")
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Packets) != 41 || strings.Count(r.Text, "\n") != 40 || r.Packets[40].More {
		t.Errorf("sysrq: %d packets, %d lines", len(r.Packets), strings.Count(r.Text, "\n"))
	}
	want := []string{"stop", "continue", "log:hello", "halt", "cad"}
	if got := strings.Join(m.Calls(), ","); got != strings.Join(want, ",") {
		t.Errorf("machine calls %s, want %s", got, strings.Join(want, ","))
	}
}

// TestServerBadRequests sends raw datagrams the way a broken or hostile
// client would; the server answers as the kernel does and keeps serving.
func TestServerBadRequests(t *testing.T) {
	m := newFake()
	s := startServer(t, m)
	c, err := Dial(s.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	tests := []struct {
		name string
		b    []byte
		want string
		n    int // packets
	}{
		{"version 0", req(0x1234, 2, 7, "version", 524), "ERR Version 0 mconsole clients are not supported by this driver", 1},
		{"too large", req(Magic, 2, 600, "", 524), "ERR Request too large", 1},
		{"version 1", req(Magic, 1, 7, "version", 524), "ERR This driver only supports version 2 clients", 1},
		{"bad len", req(Magic, 2, 400, "x", 20), "ERR Bad request", 1},
	}
	for _, tt := range tests {
		r, err := c.send(tt.b)
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		if r.String() != tt.want || len(r.Packets) != tt.n {
			t.Errorf("%s: %q in %d packets", tt.name, r.String(), len(r.Packets))
		}
		if tt.name == "version 1" {
			// The kernel still runs the command: a second reply follows.
			r2, err := c.receive()
			if err != nil || r2.String() != "OK Linux fake 6.1.0 #1 x86_64" {
				t.Errorf("version 1: second reply %v, %v", r2, err)
			}
		}
	}
}

// TestCClientAgainstServer runs Debian's uml_mconsole against our server:
// its bound 110-byte abstract address must get every reply.
func TestCClientAgainstServer(t *testing.T) {
	cl := testutil.NeedCmd(t, "uml_mconsole")[0]
	m := newFake()
	s := startServer(t, m)
	for _, tt := range []struct{ args, out string }{
		{"version", "OK Linux fake 6.1.0 #1 x86_64\n"},
		{"help", "OK " + HelpText + "\n" + "Additional local mconsole commands:\n"},
		{"remove ubd9", "ERR Device doesn't exist\n"},
	} {
		cmd := exec.Command(cl, append([]string{s.Path()}, strings.Fields(tt.args)...)...)
		done := make(chan struct{})
		var out []byte
		go func() { out, _ = cmd.Output(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			t.Fatalf("C client hung on %q", tt.args)
		}
		if !strings.HasPrefix(string(out), tt.out) {
			t.Errorf("%q: got %q", tt.args, out)
		}
	}
}

func FuzzServerHandle(f *testing.F) {
	f.Add(NewRequest("config ubd0=x").Encode())
	f.Add(NewRequest("remove ubd0x").Encode())
	f.Add(NewRequest("stack 99999999999999999999").Encode())
	f.Add(NewRequest("sysrq").Encode())
	m := newFake()
	s := &Server{fd: -1, m: m} // replies to fd -1 fail silently
	f.Fuzz(func(t *testing.T, b []byte) {
		s.handle(b, rawAddr(make([]byte, 110)))
	})
}
