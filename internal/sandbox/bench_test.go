package sandbox

import (
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/umltools/umltools/internal/abi"
	"github.com/umltools/umltools/internal/testutil"
)

// timedRun runs the probe with args in the sandbox (cfg) and natively and
// returns the last number each printed (ns per operation).
func timedRun(t *testing.T, cfg Config, args ...string) (sandboxed, native float64) {
	t.Helper()
	p := probe(t)
	cfg.Path = p
	cfg.Argv = append([]string{"probe"}, args...)
	_, out := runGuest(t, cfg)
	nout, err := exec.Command(p, args...).Output()
	if err != nil {
		t.Fatal(err)
	}
	return lastFloat(t, out), lastFloat(t, string(nout))
}

func lastFloat(t *testing.T, s string) float64 {
	t.Helper()
	f := strings.Fields(s)
	if len(f) == 0 {
		t.Fatalf("no output")
	}
	v, err := strconv.ParseFloat(f[len(f)-1], 64)
	if err != nil {
		t.Fatalf("output %q: %v", s, err)
	}
	return v
}

// TestBenchEmulatedTrap: the cost of one trapped syscall the engine
// answers (seccomp RET_TRACE → GETREGS → SETREGS → CONT), and one it lets
// run natively, against a native getppid.
func TestBenchEmulatedTrap(t *testing.T) {
	testutil.NeedBench(t)
	pol := DefaultPolicy()
	pol.Rules[abi.SYS_GETPPID] = Rule{Else: RetTrace}
	const n = "100000"
	nr := strconv.Itoa(abi.SYS_GETPPID)
	emu, nat := timedRun(t, Config{Policy: pol, Handler: &testHandler{emulate: map[int]int64{abi.SYS_GETPPID: 7}}}, "tloop", n, nr)
	pass, _ := timedRun(t, Config{Policy: pol}, "tloop", n, nr)
	pinned, _ := timedRun(t, Config{Policy: pol, Pin: true, Handler: &testHandler{emulate: map[int]int64{abi.SYS_GETPPID: 7}}}, "tloop", n, nr)
	notif, _ := timedRun(t, Config{Handler: &notifHandler{}, Notify: []int{abi.SYS_GETPPID}}, "tloop", n, nr)
	t.Logf("BENCH: 100k getppid traps: ptrace-emulated %.1f µs/trap (pinned to one CPU %.1f), traced+native %.1f µs, user-notif-emulated %.1f µs; native %.0f ns; ptrace ratio %.0fx", emu/1000, pinned/1000, pass/1000, notif/1000, nat, emu/nat)
}

// TestBenchNativeGetppid: 1M getppid allowed by the filter against no
// filter at all (target ≤ 2×).
func TestBenchNativeGetppid(t *testing.T) {
	testutil.NeedBench(t)
	sb, nat := timedRun(t, Config{}, "tloop", "1000000", strconv.Itoa(abi.SYS_GETPPID))
	t.Logf("BENCH: 1M getppid under the filter %.0f ns/call, native %.0f ns/call, ratio %.2fx (target ≤ 2x)", sb, nat, sb/nat)
}

// TestBenchForkExec: 2,000 fork+exec+wait of busybox true inside the
// sandbox (execve traps and runs natively) against native.
func TestBenchForkExec(t *testing.T) {
	testutil.NeedBench(t)
	needBusybox(t)
	sb, nat := timedRun(t, Config{}, "forkexec", "2000", "/bin/busybox", "true")
	pinned, _ := timedRun(t, Config{Pin: true}, "forkexec", "2000", "/bin/busybox", "true")
	t.Logf("BENCH: 2000 fork+exec+wait of busybox true: sandbox %.2f ms each (pinned %.2f), native %.2f ms each, ratio %.2fx", sb/1e6, pinned/1e6, nat/1e6, sb/nat)
}

// TestBenchStart: starting a sandbox (stub re-exec, namespaces, filter,
// exec) and running busybox true to its end, against running it natively.
func TestBenchStart(t *testing.T) {
	testutil.NeedBench(t)
	needBusybox(t)
	const n = 50
	start := time.Now()
	for i := 0; i < n; i++ {
		if ws, err := Run(Config{Path: "/bin/busybox", Argv: []string{"true"}}); err != nil || ws.ExitStatus() != 0 {
			t.Fatalf("run: %v %v", ws, err)
		}
	}
	sb := time.Since(start) / n
	start = time.Now()
	for i := 0; i < n; i++ {
		if err := exec.Command("/bin/busybox", "true").Run(); err != nil {
			t.Fatal(err)
		}
	}
	nat := time.Since(start) / n
	t.Logf("BENCH: sandbox start to exit of busybox true %.2f ms, native %.2f ms, ratio %.1fx", sb.Seconds()*1e3, nat.Seconds()*1e3, sb.Seconds()/nat.Seconds())
}
