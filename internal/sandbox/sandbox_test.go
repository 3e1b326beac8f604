package sandbox

import (
	"os"
	"strings"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/umltools/umltools/internal/abi"
	"github.com/umltools/umltools/internal/testutil"
)

func TestMain(m *testing.M) {
	MaybeStub()
	os.Exit(m.Run())
}

// testHandler emulates uname with a fake nodename, counts traps and lets
// everything else run natively (on host files: this is a test of the
// mechanism, not of the kernel).
type testHandler struct {
	PassThrough
	nodename string
	traps    map[int]int
	events   map[EventKind]int
	emulate  map[int]int64 // syscall → fixed result
}

func (h *testHandler) Syscall(t *Task, r *abi.Regs) Action {
	if h.traps == nil {
		h.traps = map[int]int{}
	}
	h.traps[int(r.OrigRax)]++
	if v, ok := h.emulate[int(r.OrigRax)]; ok {
		return Emulate(v)
	}
	if r.OrigRax == abi.SYS_UNAME && h.nodename != "" {
		var u abi.Utsname
		copy(u.Sysname[:], "Linux")
		copy(u.Nodename[:], h.nodename)
		copy(u.Release[:], "6.1.0-umltools")
		copy(u.Version[:], "#1")
		copy(u.Machine[:], "x86_64")
		b := unsafe.Slice((*byte)(unsafe.Pointer(&u)), unsafe.Sizeof(u))
		if _, err := t.WriteMem(r.Rdi, b); err != nil {
			return Fail(abi.EFAULT)
		}
		return Emulate(0)
	}
	return Native()
}

func (h *testHandler) Event(t *Task, ev Event) {
	if h.events == nil {
		h.events = map[EventKind]int{}
	}
	h.events[ev.Kind]++
}

// runGuest runs argv under the sandbox with h and returns the wait status
// and what the guest wrote to fds 1 and 2.
func runGuest(t *testing.T, cfg Config) (unix.WaitStatus, string) {
	t.Helper()
	out, err := os.CreateTemp(t.TempDir(), "out")
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	devnull, err := os.Open("/dev/null")
	if err != nil {
		t.Fatal(err)
	}
	defer devnull.Close()
	errf, err := os.CreateTemp(t.TempDir(), "err")
	if err != nil {
		t.Fatal(err)
	}
	defer errf.Close()
	if cfg.Files == nil {
		cfg.Files = []*os.File{devnull, out, errf}
	}
	if cfg.Path == "" && cfg.File == nil {
		cfg.Path = "/bin/busybox"
	}
	if cfg.Env == nil {
		cfg.Env = []string{"PATH=/bin:/usr/bin", "HOME=/"}
	}
	ws, err := Run(cfg)
	if err != nil {
		t.Fatalf("%q: %v", cfg.Argv, err)
	}
	if b, _ := os.ReadFile(errf.Name()); len(b) > 0 {
		t.Logf("%q stderr: %s", cfg.Argv, b)
	}
	b, err := os.ReadFile(out.Name())
	if err != nil {
		t.Fatal(err)
	}
	return ws, string(b)
}

func needBusybox(t *testing.T) {
	t.Helper()
	if _, err := os.Stat("/bin/busybox"); err != nil {
		testutil.Skip(t, "/bin/busybox (busybox-static) not installed")
	}
}

// TestGuestIdentity: init is pid 1 and uid/gid 0, uname is emulated.
func TestGuestIdentity(t *testing.T) {
	needBusybox(t)
	h := &testHandler{nodename: "guestbox"}
	ws, out := runGuest(t, Config{Handler: h, Argv: []string{"sh", "-c", "echo pid=$$; id -u; id -g; uname -n; echo ppid=$PPID; /bin/busybox true"}})
	if ws.ExitStatus() != 0 {
		t.Errorf("exit status %v", ws)
	}
	if want := "pid=1\n0\n0\nguestbox\nppid=0\n"; out != want {
		t.Errorf("output %q, want %q", out, want)
	}
	if h.traps[abi.SYS_UNAME] == 0 || h.traps[abi.SYS_EXECVE] == 0 {
		t.Errorf("traps %v: uname and execve should have trapped", h.traps)
	}
	if h.traps[abi.SYS_GETPID] != 0 {
		t.Errorf("getpid trapped; it is native")
	}
	if h.events[EvExec] == 0 || h.events[EvClone] == 0 || h.events[EvExit] == 0 {
		t.Errorf("events %v: want exec, clone and exit", h.events)
	}
}

// TestExitStatus: the init's exit status comes back.
func TestExitStatus(t *testing.T) {
	needBusybox(t)
	ws, _ := runGuest(t, Config{Argv: []string{"sh", "-c", "exit 3"}})
	if !ws.Exited() || ws.ExitStatus() != 3 {
		t.Errorf("status %v, want exit 3", ws)
	}
}

// TestSignals: a traced child killed by SIGTERM reports 143, job control
// stops and continues work, and signals re-injected through the tracer
// reach their handlers.
func TestSignals(t *testing.T) {
	needBusybox(t)
	for _, c := range []struct{ script, want string }{
		{"sleep 1 & kill $!; wait $!; echo $?", "143\n"},
		{"sleep 5 & kill -9 $!; wait $!; echo $?", "137\n"},
		{"trap 'echo got' USR1; kill -USR1 $$; echo after", "got\nafter\n"},
		{"sleep 1 & p=$!; kill -STOP $p; kill -CONT $p; wait $p; echo $?", "0\n"},
		{"sh -c 'kill -TERM $$; sleep 3'; echo $?", "143\n"},
		// pid 1 ignores signals it has no handler for, as init does.
		{"kill -TERM $$; echo init survives", "init survives\n"},
	} {
		start := time.Now()
		ws, out := runGuest(t, Config{Argv: []string{"sh", "-c", c.script}})
		if out != c.want {
			t.Errorf("%q: output %q (status %v), want %q", c.script, out, ws, c.want)
		}
		if d := time.Since(start); d > 4*time.Second {
			t.Errorf("%q took %v", c.script, d)
		}
	}
}

// TestPipeline: five processes in a pipeline.
func TestPipeline(t *testing.T) {
	needBusybox(t)
	ws, out := runGuest(t, Config{Argv: []string{"sh", "-c",
		"seq 1 1000 | grep 7 | sort -r | head -n 3 | tr 0-9 a-j; echo done"}})
	if want := "jjh\njih\njhj\ndone\n"; out != want || ws.ExitStatus() != 0 {
		t.Errorf("output %q status %v, want %q", out, ws, want)
	}
}

// TestExecFailure: a missing program is an ErrExec error, not a hang.
func TestExecFailure(t *testing.T) {
	_, err := Run(Config{Path: "/nonexistent/prog", Argv: []string{"prog"}})
	if err == nil || !strings.Contains(err.Error(), "guest exec failed") {
		t.Fatalf("err = %v, want ErrExec", err)
	}
}

// TestMemfdInit: the guest init runs from a memfd.
func TestMemfdInit(t *testing.T) {
	needBusybox(t)
	img, err := os.ReadFile("/bin/busybox")
	if err != nil {
		t.Fatal(err)
	}
	f, err := ExecMemfd("busybox", img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ws, out := runGuest(t, Config{File: f, Argv: []string{"echo", "from", "memfd"}})
	if out != "from memfd\n" || ws.ExitStatus() != 0 {
		t.Errorf("output %q status %v", out, ws)
	}
}
