package sandbox

import (
	"bufio"
	"bytes"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/umltools/umltools/internal/abi"
	"github.com/umltools/umltools/internal/testutil"
)

// freezeSrc is the guest of the Freeze tests:
//
//	count N [trap] N threads, each incrementing its counter, the i-th
//	               64-bit word of fd 3 mapped shared, for ever (with "trap",
//	               calling getppid at each increment)
//	waitpid        a child spins for 1 s and exits 7; the parent waits for
//	               it with WUNTRACED|WCONTINUED and prints what it got and
//	               how many SIGCHLDs told of a stop or continue
//	sleepread S    one thread sleeps S s, the main thread reads fd 0; both
//	               print their results
//	forkloop N     N rounds of fork, vfork or pthread_create, each child
//	               ending with a code the parent sums; prints the sum
//	vforkwait      a vfork child sleeps 2 s and exits 3 (the parent waits
//	               uninterruptibly in the meantime)
//	notified       calls getppid once (served by notification) and prints it
const freezeSrc = `
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static volatile unsigned long *counters;
static int trap;

static void *counter(void *arg) {
	long i = (long)arg;
	for (;;) {
		counters[i]++;
		if (trap)
			syscall(SYS_getppid);
	}
	return NULL;
}

static double now(void) {
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec + t.tv_nsec / 1e9;
}

static void *sleeper(void *arg) {
	struct timespec ts = {(long)arg, 0};
	double a = now();
	errno = 0;
	int r = nanosleep(&ts, NULL);
	printf("sleep %d %d %d\n", r, errno, now() - a >= (long)arg);
	fflush(stdout);
	return arg;
}

static void *thread_ret(void *arg) { return arg; }

static volatile int cldstops;

static void onchld(int sig, siginfo_t *si, void *uc) {
	if (si->si_code == CLD_STOPPED || si->si_code == CLD_CONTINUED || si->si_code == CLD_TRAPPED)
		cldstops++;
}

int main(int argc, char **argv) {
	setvbuf(stdout, NULL, _IONBF, 0);
	if (argc > 2 && !strcmp(argv[1], "count")) {
		long n = atol(argv[2]);
		trap = argc > 3 && !strcmp(argv[3], "trap");
		counters = mmap(NULL, 8 * n, PROT_READ | PROT_WRITE, MAP_SHARED, 3, 0);
		if (counters == MAP_FAILED) {
			printf("mmap: %s\n", strerror(errno));
			return 1;
		}
		pthread_t th;
		for (long i = 0; i < n; i++)
			pthread_create(&th, NULL, counter, (void *)i);
		for (;;)
			pause();
	}
	if (argc > 1 && !strcmp(argv[1], "waitpid")) {
		struct sigaction sa = {.sa_sigaction = onchld, .sa_flags = SA_SIGINFO | SA_RESTART};
		sigaction(SIGCHLD, &sa, NULL);
		pid_t p = fork();
		if (p == 0) {
			double a = now();
			while (now() - a < 1.0)
				;
			_exit(7);
		}
		int st;
		if (waitpid(p, &st, WUNTRACED | WCONTINUED) != p)
			printf("waitpid failed %d\n", errno);
		else if (WIFSTOPPED(st))
			printf("stopped %d\n", WSTOPSIG(st));
		else if (WIFCONTINUED(st))
			printf("continued\n");
		else if (WIFEXITED(st))
			printf("exited %d\n", WEXITSTATUS(st));
		else
			printf("status %#x\n", st);
		printf("sigchld stops %d\n", cldstops);
		return 0;
	}
	if (argc > 2 && !strcmp(argv[1], "sleepread")) {
		pthread_t th;
		pthread_create(&th, NULL, sleeper, (void *)atol(argv[2]));
		char buf[64];
		errno = 0;
		ssize_t r = read(0, buf, sizeof buf - 1);
		buf[r > 0 ? r : 0] = 0;
		printf("read %zd %d %s\n", r, errno, buf);
		pthread_join(th, NULL);
		return 0;
	}
	if (argc > 2 && !strcmp(argv[1], "forkloop")) {
		long n = atol(argv[2]), sum = 0;
		for (long i = 0; i < n; i++) {
			int st = -1;
			pid_t p;
			void *ret;
			pthread_t th;
			switch (i % 3) {
			case 0:
				if ((p = fork()) == 0)
					_exit(i & 0x7f);
				if (waitpid(p, &st, 0) != p || !WIFEXITED(st)) {
					printf("fork %ld: status %#x\n", i, st);
					return 1;
				}
				sum += WEXITSTATUS(st);
				break;
			case 1:
				if ((p = vfork()) == 0)
					_exit(i & 0x7f);
				if (waitpid(p, &st, 0) != p || !WIFEXITED(st)) {
					printf("vfork %ld: status %#x\n", i, st);
					return 1;
				}
				sum += WEXITSTATUS(st);
				break;
			default:
				if (pthread_create(&th, NULL, thread_ret, (void *)(i & 0x7f)) != 0 ||
				    pthread_join(th, &ret) != 0) {
					printf("thread %ld failed\n", i);
					return 1;
				}
				sum += (long)ret;
			}
		}
		printf("done %ld %ld\n", n, sum);
		return 0;
	}
	if (argc > 1 && !strcmp(argv[1], "vforkwait")) {
		pid_t p = vfork();
		if (p == 0) {
			struct timespec ts = {2, 0};
			nanosleep(&ts, NULL);
			_exit(3);
		}
		int st;
		waitpid(p, &st, 0);
		printf("child %d\n", WEXITSTATUS(st));
		return 0;
	}
	if (argc > 1 && !strcmp(argv[1], "notified")) {
		printf("ppid %ld\n", syscall(SYS_getppid));
		return 0;
	}
	fprintf(stderr, "usage: freeze count N [trap]|waitpid|sleepread S|forkloop N|vforkwait|notified\n");
	return 2;
}
`

// forkloopSum is what "forkloop n" prints as its sum.
func forkloopSum(n int) int {
	sum := 0
	for i := range n {
		sum += i & 0x7f
	}
	return sum
}

// guest is a started sandbox under test with its stdin and output.
type guest struct {
	*Sandbox
	in  *os.File // write end of the guest's fd 0
	out *os.File // the guest's fds 1 and 2
}

// startFreezeGuest starts the freeze probe with args; extra files become
// fds 3, 4, ….
func startFreezeGuest(t *testing.T, cfg Config, extra []*os.File, args ...string) *guest {
	t.Helper()
	cfg.Path = testutil.StaticC(t, "sandboxfreeze", freezeSrc)
	cfg.Files = extra
	return startGuest(t, cfg, append([]string{"freeze"}, args...)...)
}

// startGuest starts cfg.Path with argv, its stdin a pipe and its stdout
// and stderr a file, plus cfg.Files as fds 3, 4, …. It fails the test if
// the guest is not gone 10 s after the test ends.
func startGuest(t *testing.T, cfg Config, argv ...string) *guest {
	t.Helper()
	inR, inW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := os.CreateTemp(t.TempDir(), "out")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Argv = argv
	cfg.Files = append([]*os.File{inR, out, out}, cfg.Files...)
	if cfg.Env == nil {
		cfg.Env = []string{"PATH=/bin"}
	}
	s, err := Start(cfg)
	inR.Close()
	if err != nil {
		t.Fatal(err)
	}
	g := &guest{Sandbox: s, in: inW, out: out}
	t.Cleanup(func() {
		s.Kill()
		within(t, 10*time.Second, "Wait after Kill", func() { s.Wait() })
		inW.Close()
		out.Close()
	})
	return g
}

// output returns what the guest wrote so far.
func (g *guest) output(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(g.out.Name())
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// wait waits (at most 10 s) for the guest to end and returns its output.
func (g *guest) wait(t *testing.T) (unix.WaitStatus, string) {
	t.Helper()
	var ws unix.WaitStatus
	var err error
	// Generous: "forkloop 6000" takes 3 s alone and 15 s beside three
	// busy loops on 2 CPUs. A hang still fails, with a report.
	within(t, 60*time.Second, "Wait", func() { ws, err = g.Wait() })
	if err != nil {
		t.Fatalf("Wait: %v", err)
	}
	return ws, g.output(t)
}

// within runs f and fails the test if it does not return within d, with
// a hangReport.
func within(t *testing.T, d time.Duration, what string, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		f()
	}()
	select {
	case <-done:
	case <-time.After(d):
		t.Fatalf("%s did not return within %v\n%s", what, d, hangReport())
	}
}

// hangReport says where the guests' threads are (they are children of the
// test process) and gives the stacks of the test's goroutines, the
// tracer's among them.
func hangReport() string {
	stacks := make([]byte, 256<<10)
	stacks = stacks[:runtime.Stack(stacks, true)]
	return fmt.Sprintf("%s\ngoroutines:\n%s", testutil.ProcReport(os.Getpid()), stacks)
}

// freeze calls Freeze, failing the test on an error or a hang.
func (g *guest) freeze(t *testing.T) {
	t.Helper()
	var err error
	within(t, 5*time.Second, "Freeze", func() { err = g.Freeze() })
	if err != nil {
		t.Fatalf("Freeze: %v", err)
	}
}

// thaw calls Thaw, failing the test on an error or a hang.
func (g *guest) thaw(t *testing.T) {
	t.Helper()
	var err error
	within(t, 5*time.Second, "Thaw", func() { err = g.Thaw() })
	if err != nil {
		t.Fatalf("Thaw: %v", err)
	}
}

// threads returns the host tids of the guest's init process, its main
// thread first (none once it is gone).
func (g *guest) threads() []int {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", g.Pid))
	if err != nil {
		return nil
	}
	tids := []int{g.Pid}
	for _, e := range ents {
		if tid, err := strconv.Atoi(e.Name()); err == nil && tid != g.Pid {
			tids = append(tids, tid)
		}
	}
	return tids
}

// waitFor polls cond every 5 ms for up to 5 s.
// waitFor polls cond until it holds, and fails t with a hangReport if it
// does not within 15 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s\n%s", what, hangReport())
}

// counters reads the n counters of "count n" from f.
func counters(t *testing.T, f *os.File, n int) []uint64 {
	t.Helper()
	b := make([]byte, 8*n)
	if _, err := f.ReadAt(b, 0); err != nil {
		t.Fatal(err)
	}
	c := make([]uint64, n)
	for i := range c {
		c[i] = binary.LittleEndian.Uint64(b[8*i:])
	}
	return c
}

// getppidTraced is the default policy with getppid trapped, so the
// counting threads are often in a seccomp stop when frozen.
func getppidTraced() *Policy {
	p := DefaultPolicy()
	p.Rules[abi.SYS_GETPPID] = Rule{Else: RetTrace}
	return p
}

// counterFile returns a file of n zero counters for "count n".
func counterFile(t *testing.T, n int) *os.File {
	t.Helper()
	f, err := os.CreateTemp(t.TempDir(), "counters")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	if err := f.Truncate(int64(8 * n)); err != nil {
		t.Fatal(err)
	}
	return f
}

// notStopped returns the threads of pid and its descendants that are not
// in a ptrace stop, with their states.
// frozenNot returns, after Freeze, the threads of pid's tree that are
// not in a ptrace stop, waiting up to 2 s for them to get there: a child
// forked just before the freeze is still on its way to its first stop,
// which the frozen tracer then keeps (a loaded machine takes that long).
// A thread that escaped the freeze keeps running and is returned.
func frozenNot(pid int) []string {
	deadline := time.Now().Add(2 * time.Second)
	for {
		ns := notStopped(pid)
		if len(ns) == 0 || time.Now().After(deadline) {
			return ns
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func notStopped(pid int) []string {
	var out []string
	for _, p := range descendants(pid) {
		ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", p))
		for _, e := range ents {
			tid, _ := strconv.Atoi(e.Name())
			if st := state(tid); st != 't' {
				out = append(out, fmt.Sprintf("%d:%c", tid, st))
			}
		}
	}
	return out
}

// TestFreezeCounters: counting threads (in user space only, or trapping
// at each count) make no progress while frozen (1.5 s), are all in a
// ptrace stop then, and count on after Thaw; the traps kept meanwhile are
// all served.
func TestFreezeCounters(t *testing.T) {
	for _, c := range []struct {
		threads int
		trap    bool
	}{{1, false}, {4, false}, {4, true}} {
		t.Run(fmt.Sprintf("%d threads, trap %v", c.threads, c.trap), func(t *testing.T) {
			n := c.threads
			f := counterFile(t, n)
			cfg := Config{}
			args := []string{"count", strconv.Itoa(n)}
			if c.trap {
				cfg.Policy = getppidTraced()
				cfg.Handler = &testHandler{emulate: map[int]int64{abi.SYS_GETPPID: 1}}
				args = append(args, "trap")
			}
			g := startFreezeGuest(t, cfg, []*os.File{f}, args...)
			waitFor(t, "every counter to move", func() bool {
				for _, c := range counters(t, f, n) {
					if c == 0 {
						return false
					}
				}
				return len(g.threads()) == n+1
			})
			for round := range 2 {
				g.freeze(t)
				before := counters(t, f, n)
				if ns := frozenNot(g.Pid); len(ns) > 0 {
					t.Errorf("round %d: threads not in a ptrace stop while frozen: %v", round, ns)
				}
				time.Sleep(1500 * time.Millisecond)
				if after := counters(t, f, n); fmt.Sprint(after) != fmt.Sprint(before) {
					t.Errorf("round %d: counters moved while frozen: %v → %v", round, before, after)
				}
				g.thaw(t)
				waitFor(t, "every counter to move after Thaw", func() bool {
					after := counters(t, f, n)
					for i := range after {
						if after[i] <= before[i] {
							return false
						}
					}
					return true
				})
			}
		})
	}
}

// TestFreezeInvisible: a parent waiting with WUNTRACED|WCONTINUED for a
// spinning child that is frozen sees no stop (nor continue), neither in
// waitpid nor as SIGCHLD, only the child's exit; a sleep and a
// pipe read across a freeze end as without it (no EINTR), the read
// returning what was written after Thaw; a job-control stop (LISTEN)
// survives a freeze.
func TestFreezeInvisible(t *testing.T) {
	cases := []struct {
		name  string
		args  []string
		ready func(g *guest) bool // the guest is where the freeze should hit
		after func(g *guest)      // after Thaw
		want  string
	}{
		{
			name: "waitpid",
			args: []string{"waitpid"},
			ready: func(g *guest) bool {
				kids := descendants(g.Pid)
				return len(kids) == 2 && state(kids[1]) == 'R'
			},
			want: "exited 7\nsigchld stops 0\n",
		},
		{
			name: "sleep and read",
			args: []string{"sleepread", "1"},
			ready: func(g *guest) bool {
				tids := g.threads()
				return len(tids) == 2 && state(tids[0]) == 'S' && state(tids[1]) == 'S'
			},
			// The sleep ends at once, long before the read.
			after: func(g *guest) {
				time.Sleep(100 * time.Millisecond)
				g.in.Write([]byte("hello"))
			},
			want: "sleep 0 0 1\nread 5 0 hello\n",
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			g := startFreezeGuest(t, Config{}, nil, c.args...)
			waitFor(t, "the guest to be ready", func() bool { return c.ready(g) })
			g.freeze(t)
			if ns := frozenNot(g.Pid); len(ns) > 0 {
				t.Errorf("threads not in a ptrace stop while frozen: %v", ns)
			}
			time.Sleep(1500 * time.Millisecond)
			if out := g.output(t); out != "" {
				t.Errorf("output while frozen: %q", out)
			}
			g.thaw(t)
			if c.after != nil {
				c.after(g)
			}
			ws, out := g.wait(t)
			if out != c.want || ws.ExitStatus() != 0 {
				t.Errorf("output %q status %v, want %q", out, ws, c.want)
			}
		})
	}
	t.Run("group stop", func(t *testing.T) {
		needBusybox(t)
		inR, inW, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		defer inW.Close()
		out, err := os.CreateTemp(t.TempDir(), "out")
		if err != nil {
			t.Fatal(err)
		}
		defer out.Close()
		s, err := Start(Config{Path: "/bin/busybox", Env: []string{"PATH=/bin"}, Files: []*os.File{inR, out, out},
			Argv: []string{"sh", "-c", "sleep 30 & p=$!; kill -STOP $p; read x; kill -CONT $p; kill $p; wait $p; echo $?"}})
		inR.Close()
		if err != nil {
			t.Fatal(err)
		}
		defer s.Kill()
		g := &guest{Sandbox: s, in: inW, out: out}
		var sleepPid int
		waitFor(t, "the sleep to stop", func() bool {
			kids := descendants(s.Pid)
			if len(kids) == 2 && state(kids[1]) == 't' {
				sleepPid = kids[1]
				return true
			}
			return false
		})
		// Regs of a group-stopped (listening) task leaves it stopped.
		if regs, err := g.Regs(sleepPid); err != nil || regs.Rsp == 0 {
			t.Errorf("Regs of the stopped sleep: %v (rsp %#x)", err, regs.Rsp)
		}
		g.freeze(t)
		if ns := frozenNot(s.Pid); len(ns) > 0 {
			t.Errorf("threads not in a ptrace stop while frozen: %v", ns)
		}
		time.Sleep(200 * time.Millisecond)
		g.thaw(t)
		time.Sleep(200 * time.Millisecond)
		if kids := descendants(s.Pid); len(kids) != 2 || state(kids[1]) != 't' {
			t.Fatalf("the stopped sleep runs again after Thaw")
		}
		inW.Write([]byte("go\n"))
		ws, got := g.wait(t)
		// The shell reports the job ("Terminated") only when it notices
		// the death before wait reaps it: a race in the shell itself.
		if (got != "Terminated\n143\n" && got != "143\n") || ws.ExitStatus() != 0 {
			t.Errorf("output %q status %v, want 143", got, ws)
		}
	})
}

// TestFreezeThawErrors: Freeze when frozen and Thaw when not are errors
// (ErrFrozen, ErrNotFrozen) that change nothing.
func TestFreezeThawErrors(t *testing.T) {
	f := counterFile(t, 1)
	g := startFreezeGuest(t, Config{}, []*os.File{f}, "count", "1")
	waitFor(t, "the counter to move", func() bool { return counters(t, f, 1)[0] > 0 })
	steps := []struct {
		op     string
		want   error
		frozen bool // the counter must stand still afterwards
	}{
		{"thaw", ErrNotFrozen, false},
		{"freeze", nil, true},
		{"freeze", ErrFrozen, true},
		{"thaw", nil, false},
		{"thaw", ErrNotFrozen, false},
		{"freeze", nil, true},
		{"thaw", nil, false},
	}
	for i, st := range steps {
		var err error
		within(t, 5*time.Second, st.op, func() {
			if st.op == "freeze" {
				err = g.Freeze()
			} else {
				err = g.Thaw()
			}
		})
		if !errors.Is(err, st.want) || (st.want == nil) != (err == nil) {
			t.Fatalf("step %d (%s): err %v, want %v", i, st.op, err, st.want)
		}
		a := counters(t, f, 1)[0]
		time.Sleep(50 * time.Millisecond)
		b := counters(t, f, 1)[0]
		if moved := b != a; moved == st.frozen {
			t.Errorf("step %d (%s): counter moved %v, want %v", i, st.op, moved, !st.frozen)
		}
	}
}

// state is the state letter of host thread tid.
func state(tid int) byte {
	st, _ := hostState(tid)
	return st
}

// mapped reports whether addr lies in a mapping of tid, and whether that
// mapping is executable.
func mapped(t *testing.T, tid int, addr uint64) (inMapped, inExec bool) {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/maps", tid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		lo, hi, ok := strings.Cut(fields[0], "-")
		if !ok || len(fields) < 2 {
			continue
		}
		a, _ := strconv.ParseUint(lo, 16, 64)
		b, _ := strconv.ParseUint(hi, 16, 64)
		if addr >= a && addr < b {
			return true, strings.Contains(fields[1], "x")
		}
	}
	return false, false
}

// TestRegs: registers of running, blocked and frozen threads have rip in
// executable memory and rsp in mapped memory; the thread runs on after;
// tids that are no guest threads are errors.
func TestRegs(t *testing.T) {
	f := counterFile(t, 1)
	counting := startFreezeGuest(t, Config{}, []*os.File{f}, "count", "1")
	blocked := startFreezeGuest(t, Config{}, nil, "sleepread", "60")
	waitFor(t, "the guests to start", func() bool {
		return counters(t, f, 1)[0] > 0 && len(counting.threads()) == 2 && len(blocked.threads()) == 2
	})
	cases := []struct {
		name   string
		g      *guest
		thread int // index in threads()
		frozen bool
	}{
		{"running", counting, 1, false},
		{"running, frozen", counting, 1, true},
		{"main thread in pause", counting, 0, false},
		{"blocked in read", blocked, 0, false},
		{"blocked in nanosleep, frozen", blocked, 1, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.frozen {
				c.g.freeze(t)
				defer c.g.thaw(t)
			}
			tids := c.g.threads()
			if len(tids) <= c.thread {
				t.Fatalf("guest threads %v", tids)
			}
			tid := tids[c.thread]
			for i := range 20 {
				var regs abi.Regs
				var err error
				within(t, 5*time.Second, "Regs", func() { regs, err = c.g.Regs(tid) })
				if err != nil {
					t.Fatalf("Regs(%d): %v", tid, err)
				}
				if regs.Rsp == 0 || regs.Rip == 0 {
					t.Fatalf("Regs(%d) #%d: rsp %#x rip %#x", tid, i, regs.Rsp, regs.Rip)
				}
				if _, x := mapped(t, tid, regs.Rip); !x {
					t.Errorf("Regs(%d) #%d: rip %#x not in an executable mapping", tid, i, regs.Rip)
				}
				if m, _ := mapped(t, tid, regs.Rsp); !m {
					t.Errorf("Regs(%d) #%d: rsp %#x not mapped", tid, i, regs.Rsp)
				}
			}
		})
	}
	// The counting thread still counts, the blocked ones still block,
	// and the read ends as it should.
	a := counters(t, f, 1)[0]
	waitFor(t, "the counter to move", func() bool { return counters(t, f, 1)[0] > a })
	time.Sleep(100 * time.Millisecond)
	if out := blocked.output(t); out != "" {
		t.Errorf("blocked guest wrote %q", out)
	}
	if st := state(blocked.threads()[0]); st != 'S' {
		t.Errorf("reading thread in state %c, want S", st)
	}
	blocked.in.Write([]byte("x"))
	waitFor(t, "the read to end", func() bool { return blocked.output(t) == "read 1 0 x\n" })
	for _, tid := range []int{0, -1, os.Getpid(), unix.Gettid(), counting.Pid + 1<<20} {
		if _, err := counting.Regs(tid); !errors.Is(err, unix.ESRCH) {
			t.Errorf("Regs(%d) = %v, want ESRCH", tid, err)
		}
	}
}

// TestFreezeForkLoop: guests forking, vforking, making threads and
// exec-ing in a loop while frozen and thawed 20 times quickly: no hang, no
// child lost, the handler sees every creation and exit.
func TestFreezeForkLoop(t *testing.T) {
	const n = 6000
	cases := []struct {
		name string
		cfg  Config
		args []string
		want string
	}{
		{"fork, vfork, threads", Config{}, []string{"forkloop", strconv.Itoa(n)}, fmt.Sprintf("done %d %d\n", n, forkloopSum(n))},
		{"shell pipelines", Config{Path: "/bin/busybox"}, []string{"sh", "-c",
			"i=0; while [ $i -lt 300 ]; do i=$((i+1)); echo $i | /bin/busybox cat >/dev/null; done; echo done $i"}, "done 300\n"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := &testHandler{}
			c.cfg.Handler = h
			var g *guest
			if c.cfg.Path != "" {
				needBusybox(t)
				g = startGuest(t, c.cfg, c.args...)
			} else {
				g = startFreezeGuest(t, c.cfg, nil, c.args...)
			}
			for i := range 20 {
				time.Sleep(time.Duration(1+i%4) * time.Millisecond)
				g.freeze(t)
				time.Sleep(time.Duration(1+i%3) * time.Millisecond)
				g.thaw(t)
			}
			ws, out := g.wait(t)
			if out != c.want || ws.ExitStatus() != 0 {
				t.Errorf("output %q status %v, want %q", out, ws, c.want)
			}
			if h.events[EvClone] == 0 || h.events[EvExit] != h.events[EvClone]+1 {
				t.Errorf("events %v: want as many exits as clones, and the init's", h.events)
			}
		})
	}
}

// TestFreezeAtStart: a Freeze right after Start (the bell may not be up
// yet, the stub not exec'd yet) holds the guest back until Thaw.
func TestFreezeAtStart(t *testing.T) {
	for i := range 5 {
		h := &testHandler{}
		g := startFreezeGuest(t, Config{Handler: h}, nil, "forkloop", "30")
		g.freeze(t)
		time.Sleep(100 * time.Millisecond)
		if out := g.output(t); out != "" {
			t.Fatalf("run %d: output while frozen: %q", i, out)
		}
		g.thaw(t)
		if ws, out := g.wait(t); out != fmt.Sprintf("done 30 %d\n", forkloopSum(30)) || ws.ExitStatus() != 0 {
			t.Errorf("run %d: output %q status %v", i, out, ws)
		}
	}
}

// TestFreezeBlockedInKernel: threads the host kernel holds uninterruptibly
// (a vfork parent whose child is frozen; a syscall the engine serves by
// notification) do not keep Freeze waiting, and run no guest code until
// Thaw even when the kernel lets them go meanwhile.
func TestFreezeBlockedInKernel(t *testing.T) {
	t.Run("vfork parent", func(t *testing.T) {
		g := startFreezeGuest(t, Config{}, nil, "vforkwait")
		waitFor(t, "the vfork parent to wait", func() bool {
			kids := descendants(g.Pid)
			return len(kids) == 2 && state(g.Pid) == 'D'
		})
		g.freeze(t)
		regs, err := g.Regs(g.Pid)
		if err != nil {
			t.Fatalf("Regs of the vfork parent: %v", err)
		}
		if regs.OrigRax != abi.SYS_VFORK && regs.OrigRax != abi.SYS_CLONE {
			t.Errorf("vfork parent's syscall %d, want vfork", regs.OrigRax)
		}
		if _, x := mapped(t, g.Pid, regs.Rip); !x {
			t.Errorf("vfork parent's rip %#x not in an executable mapping", regs.Rip)
		}
		time.Sleep(2500 * time.Millisecond) // the child's sleep is over, but it is frozen
		if out := g.output(t); out != "" {
			t.Errorf("output while frozen: %q", out)
		}
		g.thaw(t)
		if _, out := g.wait(t); out != "child 3\n" {
			t.Errorf("output %q, want child 3", out)
		}
	})
	t.Run("notification", func(t *testing.T) {
		h := &heldHandler{release: make(chan struct{})}
		g := startFreezeGuest(t, Config{Handler: h, Notify: []int{abi.SYS_GETPPID}}, nil, "notified")
		waitFor(t, "getppid to wait for the engine", func() bool {
			b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/syscall", g.Pid))
			return strings.HasPrefix(string(b), strconv.Itoa(abi.SYS_GETPPID)+" ") && state(g.Pid) != 'R'
		})
		// The interrupt moves the wait from interruptible to killable
		// (SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV), where it stays.
		g.freeze(t)
		regs, err := g.Regs(g.Pid)
		if err != nil {
			t.Fatalf("Regs of a thread in a notification: %v", err)
		}
		if regs.OrigRax != abi.SYS_GETPPID {
			t.Errorf("syscall %d, want getppid", regs.OrigRax)
		}
		close(h.release) // answered: the thread leaves the kernel, and stops
		waitFor(t, "the notified thread to stop", func() bool { return state(g.Pid) == 't' })
		time.Sleep(300 * time.Millisecond)
		if out := g.output(t); out != "" {
			t.Errorf("output while frozen: %q", out)
		}
		g.thaw(t)
		if _, out := g.wait(t); out != "ppid 4242\n" {
			t.Errorf("output %q, want ppid 4242", out)
		}
	})
}

// heldHandler answers getppid with 4242 once release is closed.
type heldHandler struct {
	PassThrough
	release chan struct{}
}

func (h *heldHandler) Notify(n *Notification) {
	if n.Nr != abi.SYS_GETPPID {
		n.Continue()
		return
	}
	later := n.Detach()
	go func() {
		<-h.release
		later.Return(4242)
	}()
}

// TestFreezeGuestEnds: a guest killed while frozen, or ending while
// Freeze, Thaw and Regs are being called from several goroutines, does not
// hang Wait or the callers; afterwards they fail with ErrEnded.
func TestFreezeGuestEnds(t *testing.T) {
	cases := []struct {
		name   string
		args   []string
		frozen bool // Freeze before the end
		hammer bool // call Freeze, Thaw and Regs from 4 goroutines meanwhile
		kill   bool // end it with Kill
	}{
		{"killed while frozen", []string{"count", "4", "trap"}, true, false, true},
		{"killed while frozen and hammered", []string{"count", "4", "trap"}, true, true, true},
		{"killed while hammered", []string{"count", "4", "trap"}, false, true, true},
		{"exits while hammered", []string{"forkloop", "300"}, false, true, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := counterFile(t, 4)
			g := startFreezeGuest(t, Config{Policy: getppidTraced()}, []*os.File{f}, c.args...)
			if c.args[0] == "count" {
				// Killed before its exec, the guest would end with
				// ErrExec (a loaded machine takes that long).
				waitFor(t, "the guest to count", func() bool { return counters(t, f, 4)[0] > 0 })
			}
			if c.frozen {
				time.Sleep(50 * time.Millisecond)
				g.freeze(t)
			}
			stop := make(chan struct{})
			var wg sync.WaitGroup
			for i := range 4 {
				if !c.hammer {
					break
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						select {
						case <-stop:
							return
						default:
						}
						switch i {
						case 0:
							g.Freeze()
						case 1:
							g.Thaw()
						default:
							for _, tid := range g.threads() {
								g.Regs(tid)
							}
						}
						// Paced, so that the guest gets on between a
						// Thaw and the next Freeze.
						time.Sleep(time.Duration(100*(i+1)) * time.Microsecond)
					}
				}()
			}
			if c.kill {
				time.Sleep(100 * time.Millisecond)
				g.Kill()
			}
			var err2 error
			within(t, 10*time.Second, "Wait", func() { _, err2 = g.Wait() })
			close(stop)
			within(t, 5*time.Second, "the control callers", wg.Wait)
			if err2 != nil {
				t.Errorf("Wait: %v", err2)
			}
			if c.kill {
				g.Thaw() // frozen or not: an error or nil, no panic
			}
			for name, f := range map[string]func() error{"Freeze": g.Freeze, "Thaw": g.Thaw} {
				if err := f(); !errors.Is(err, ErrEnded) {
					t.Errorf("%s after the end: %v, want ErrEnded", name, err)
				}
			}
			if _, err := g.Regs(g.Pid); !errors.Is(err, ErrEnded) {
				t.Errorf("Regs after the end: %v, want ErrEnded", err)
			}
		})
	}
}

// TestFreezeFromHandler: a Handler method calling Freeze gets an error
// instead of a deadlock.
func TestFreezeFromHandler(t *testing.T) {
	h := &freezingHandler{}
	g := startFreezeGuest(t, Config{Policy: getppidTraced(), Handler: h}, []*os.File{counterFile(t, 1)}, "count", "1", "trap")
	h.mu.Lock()
	h.sb = g.Sandbox
	h.mu.Unlock()
	waitFor(t, "a getppid trap", func() bool {
		h.mu.Lock()
		defer h.mu.Unlock()
		return h.err != nil
	})
}

// freezingHandler calls Freeze at a getppid trap and records the error.
type freezingHandler struct {
	PassThrough
	mu  sync.Mutex
	sb  *Sandbox
	err error
}

func (h *freezingHandler) Syscall(t *Task, r *abi.Regs) Action {
	h.mu.Lock()
	defer h.mu.Unlock()
	if r.OrigRax == abi.SYS_GETPPID && h.sb != nil && h.err == nil {
		h.err = h.sb.Freeze()
	}
	return Native()
}

// TestBell: the bell program is a valid x86-64 executable; started, it is
// named, in a session of its own, traced by the starting thread, sleeps,
// and a ring (SIGUSR1) puts it in a signal-delivery stop.
func TestBell(t *testing.T) {
	f, err := elf.NewFile(bytes.NewReader(bellImage()))
	if err != nil {
		t.Fatalf("bell image: %v", err)
	}
	if f.Machine != elf.EM_X86_64 || f.Type != elf.ET_EXEC || len(f.Progs) != 1 || f.Progs[0].Type != elf.PT_LOAD ||
		f.Entry < f.Progs[0].Vaddr || f.Entry >= f.Progs[0].Vaddr+f.Progs[0].Filesz {
		t.Errorf("bell image: %v %v, %d programs, entry %#x", f.Machine, f.Type, len(f.Progs), f.Entry)
	}
	runtime.LockOSThread() // the bell's tracer is this thread
	defer runtime.UnlockOSThread()
	pid, err := (&Sandbox{}).spawnBell()
	if err != nil {
		t.Fatal(err)
	}
	defer reap(pid)
	defer unix.Kill(pid, unix.SIGKILL)
	waitFor(t, "the bell to sleep", func() bool { return state(pid) == 'S' })
	if sid, _ := unix.Getsid(pid); sid != pid {
		t.Errorf("bell in session %d, want its own", sid)
	}
	status, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for _, want := range []string{"Name:\tumltools-bell\n", fmt.Sprintf("TracerPid:\t%d\n", unix.Gettid())} {
		if !strings.Contains(string(status), want) {
			t.Errorf("bell status lacks %q:\n%s", want, status)
		}
	}
	for range 3 {
		if err := unix.Tgkill(pid, pid, unix.SIGUSR1); err != nil {
			t.Fatal(err)
		}
		var ws unix.WaitStatus
		if _, err := unix.Wait4(pid, &ws, abi.WALL, nil); err != nil || !ws.Stopped() || ws.StopSignal() != unix.SIGUSR1 {
			t.Fatalf("after a ring: status %v, %v", ws, err)
		}
		resume(pid, 0)
	}
	waitFor(t, "the bell to sleep again", func() bool { return state(pid) == 'S' })
}
