package sandbox

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/umltools/umltools/internal/abi"
	"github.com/umltools/umltools/internal/testutil"
)

func TestMain(m *testing.M) {
	MaybeStub() // a no-op: the package's init already ran the stub
	if os.Getenv(helperEnv) != "" {
		deathHelper()
	}
	os.Exit(m.Run())
}

// helperEnv makes the test binary a short-lived engine for TestEngineDeath.
const helperEnv = "UMLTOOLS_SANDBOX_TEST_HELPER"

// deathHelper starts a guest with a background child, prints the guest
// init's host pid and waits to be killed.
func deathHelper() {
	s, err := Start(Config{Path: "/bin/busybox", Argv: []string{"sh", "-c", "sleep 100 & sleep 100; echo"},
		Env: []string{"PATH=/bin"}, Files: []*os.File{nil, os.Stderr, os.Stderr}})
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	fmt.Println(s.Pid)
	s.Wait()
	os.Exit(0)
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

// descendants returns pid and all its descendants (host pids).
func descendants(pid int) []int {
	out := []int{pid}
	tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	for _, tk := range tasks {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/children", pid, tk.Name()))
		for _, f := range strings.Fields(string(b)) {
			if c, err := strconv.Atoi(f); err == nil {
				out = append(out, descendants(c)...)
			}
		}
	}
	return out
}

// alive reports whether pid exists and is not a zombie.
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := strings.LastIndexByte(string(b), ')')
	return i < 0 || i+2 >= len(b) || b[i+2] != 'Z'
}

// TestEngineDeath: when the engine dies (SIGKILL, no cleanup), every guest
// process dies with it (PDEATHSIG on init, EXITKILL on tracees, and the pid
// namespace dying with its init).
func TestEngineDeath(t *testing.T) {
	needBusybox(t)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), helperEnv+"=1")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatalf("helper: %v", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil {
		t.Fatalf("helper said %q", line)
	}
	var pids []int
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if pids = descendants(pid); len(pids) >= 3 {
			break
		}
	}
	if len(pids) < 3 {
		t.Fatalf("guest processes %v, want init and two sleeps", pids)
	}
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		n := 0
		for _, p := range pids {
			if alive(p) {
				n++
			}
		}
		if n == 0 {
			return
		}
	}
	for _, p := range pids {
		if alive(p) {
			t.Errorf("guest process %d survived the engine", p)
			syscall.Kill(p, syscall.SIGKILL)
		}
	}
}

// TestMapToNobody: a root engine can map the guest's root to an
// unprivileged host uid; inside it is still uid 0.
func TestMapToNobody(t *testing.T) {
	testutil.NeedRoot(t)
	needBusybox(t)
	h := &uidHandler{}
	ws, out := runGuest(t, Config{Handler: h, HostUID: 65534, HostGID: 65534, Argv: []string{"sh", "-c", "id -u; id -g"}})
	if out != "0\n0\n" || ws.ExitStatus() != 0 {
		t.Errorf("output %q status %v", out, ws)
	}
	if !strings.HasPrefix(h.uidLine, "Uid:\t65534\t65534\t65534\t65534") {
		t.Errorf("guest host uids %q, want 65534", h.uidLine)
	}
}

// uidHandler records the host Uid line of the guest at its first exec.
type uidHandler struct {
	PassThrough
	uidLine string
}

func (h *uidHandler) Event(t *Task, ev Event) {
	if ev.Kind != EvExec || h.uidLine != "" {
		return
	}
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", t.Tid))
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "Uid:") {
			h.uidLine = l
		}
	}
}

// TestUnprivileged reruns the main tests as uid 65534: the design must not
// need root.
func TestUnprivileged(t *testing.T) {
	if os.Getenv("UMLTOOLS_SANDBOX_UNPRIV") != "" {
		t.Skip("already the unprivileged run")
	}
	testutil.NeedRoot(t) // as non-root, every other test already is this one
	needBusybox(t)
	probe(t) // build it while we can write the cache
	if out, err := exec.Command("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "unshare", "-Urp", "-f", "true").CombinedOutput(); err != nil {
		testutil.Skip(t, "unprivileged user namespaces unavailable: %v %s", err, out)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "sandboxunpriv")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	os.Chmod(dir, 0o755)
	b, err := os.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "sandbox.test")
	if err := os.WriteFile(bin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	tests := []string{"TestGuestIdentity", "TestExitStatus", "TestSignals", "TestPipeline", "TestMemfdInit",
		"TestHostileSyscalls", "TestX32Killed", "TestEmulatedTrap", "TestExecRedirect", "TestEngineDeath",
		"TestGroupStop", "TestThreadsAndExitStops", "TestVforkSpawn", "TestSandboxInvariants",
		"TestKillAction", "TestExecFromThread", "TestDynamicExecRedirect", "TestScriptExec",
		"TestNotifyAddFd", "TestNotifyEmulate", "TestManyProcesses", "TestLargeConfig",
		"TestBell", "TestFreezeThawErrors", "TestFreezeAtStart", "TestFreezeFromHandler"}
	cmd := exec.Command(bin, "-test.v", "-test.count=1", "-test.run", "^("+strings.Join(tests, "|")+")$")
	cmd.Dir = dir
	cmd.Env = []string{"UMLTOOLS_SANDBOX_UNPRIV=1", "PATH=/usr/bin:/bin", "TMPDIR=/tmp", "HOME=" + dir}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err != nil || strings.Contains(string(out), "SKIP") || strings.Count(string(out), "--- PASS") != len(tests) {
		t.Fatalf("unprivileged run: %v\n%s", err, out)
	}
}

// procState returns the state letter of /proc/<pid>/stat and the command.
func procState(pid int) (byte, string) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, ""
	}
	s := string(b)
	i, j := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if i < 0 || j < 0 || j+2 >= len(s) {
		return 0, ""
	}
	return s[j+2], s[i+1 : j]
}

// TestGroupStop: a guest process stopped by SIGSTOP stays stopped under the
// tracer (PTRACE_LISTEN) until SIGCONT, then dies of SIGTERM as usual.
func TestGroupStop(t *testing.T) {
	needBusybox(t)
	inR, inW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer inR.Close()
	defer inW.Close()
	out, err := os.CreateTemp(t.TempDir(), "out")
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	s, err := Start(Config{Path: "/bin/busybox", Env: []string{"PATH=/bin"}, Files: []*os.File{inR, out, out},
		Argv: []string{"sh", "-c", "sleep 30 & p=$!; kill -STOP $p; read x; kill -CONT $p; kill $p; wait $p; echo $?"}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Kill()
	sleepPid := 0
	for deadline := time.Now().Add(5 * time.Second); sleepPid == 0 && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		for _, p := range descendants(s.Pid)[1:] {
			if st, _ := procState(p); st == 'T' || st == 't' {
				sleepPid = p
			}
		}
	}
	if sleepPid == 0 {
		t.Fatal("the guest's sleep never stopped")
	}
	time.Sleep(300 * time.Millisecond)
	if st, _ := procState(sleepPid); st != 'T' && st != 't' {
		t.Fatalf("stopped sleep is in state %c after 300ms", st)
	}
	inW.Write([]byte("go\n"))
	ws, err := s.Wait()
	if err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(out.Name())
	if string(b) != "Terminated\n143\n" || ws.ExitStatus() != 0 {
		t.Errorf("output %q status %v, want 143", b, ws)
	}
}

// TestLargeConfig: an environment far larger than a pipe buffer reaches
// the guest.
func TestLargeConfig(t *testing.T) {
	needBusybox(t)
	big := strings.Repeat("x", 60<<10) // one string may not exceed 128 KiB
	env := []string{"A=" + big, "B=" + big, "C=" + big, "D=" + big}
	ws, out := runGuest(t, Config{Env: env, Argv: []string{"sh", "-c", "echo $((${#A}+${#B}+${#C}+${#D}))"}})
	if out != "245760\n" || ws.ExitStatus() != 0 {
		t.Errorf("output %q status %v", out, ws)
	}
}

// TestManyProcesses: hundreds of concurrent short-lived processes (the
// creation-event/first-stop race happens both ways) all get announced and
// reaped; the handler sees as many exits as clones plus the init.
func TestManyProcesses(t *testing.T) {
	needBusybox(t)
	h := &testHandler{}
	ws, out := runGuest(t, Config{Handler: h, Argv: []string{"sh", "-c",
		"for i in $(seq 1 300); do (echo $i | cat >/dev/null) & done; wait; echo done"}})
	if out != "done\n" || ws.ExitStatus() != 0 {
		t.Fatalf("output %q status %v", out, ws)
	}
	if h.events[EvClone] < 600 || h.events[EvExit] != h.events[EvClone]+1 {
		t.Errorf("events %v: want ≥ 600 clones and one more exit", h.events)
	}
}
