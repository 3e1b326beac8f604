package sandbox

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/umltools/umltools/internal/abi"
	"github.com/umltools/umltools/internal/testutil"
)

// probeSrc is a static test program: "probe" tries syscalls a guest must
// not reach and prints "name result errno"; "x32" makes an x32-ABI call;
// "loop N NR" makes syscall NR N times and prints the last result
// ("tloop" also prints ns per call); "exec
// PATH ARGS…" execs; "argv" prints its arguments; "forkexec N PATH ARGS…"
// runs PATH N times with fork+exec+wait and prints "ok" and ns per run;
// "spawn N PATH…" does it with posix_spawn (clone(CLONE_VM|CLONE_VFORK));
// "threads" runs 4 threads making 100 getuid calls each; "clones" tries
// namespace and CLONE_UNTRACED clones and a seccomp listener;
// "threadexec PATH…" execs from a second thread (failing, it says
// whether the leader runs on meanwhile); "freeze" calls getuid
// while a second thread spins ("freeze traps": 50 times, while the second
// thread loops on getgid); "holdsleep" sleeps 400 ms while a second
// thread counts, then says whether the count goes on.
const probeSrc = `
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <pthread.h>
#include <spawn.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void *worker(void *arg) {
	for (int i = 0; i < 100; i++)
		syscall(SYS_getuid);
	return arg;
}

static volatile int stop, spinning;

static void *spin(void *arg) {
	spinning = 1;
	while (!stop)
		if (arg)
			syscall(SYS_getgid);
	return arg;
}

static volatile unsigned long spins;

static void *count(void *arg) {
	spinning = 1;
	while (!stop)
		spins++;
	return arg;
}

static volatile int execfailed, leaderran;

static void *execer(void *arg) {
	char **av = arg;
	execv(av[0], av);
	execfailed = 1;
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	do
		clock_gettime(CLOCK_MONOTONIC, &t1);
	while (!leaderran && t1.tv_sec - t0.tv_sec < 10);
	printf(leaderran ? "leader ran\n" : "leader stuck\n");
	return NULL;
}

int main(int argc, char **argv) {
	if (argc > 1 && !strcmp(argv[1], "probe")) {
		struct { const char *name; long nr; } t[] = {
			{"io_uring_setup", 425}, {"bpf", 321}, {"ptrace", 101},
			{"clone3", 435}, {"unshare", 272}, {"setns", 308},
			{"process_vm_readv", 310}, {"userfaultfd", 323},
			{"perf_event_open", 298}, {"kexec_load", 246},
			{"finit_module", 313}, {"pidfd_getfd", 438},
			{"afs_syscall", 183}, {"nr_1000", 1000},
			{"nr_0x3fffffff", 0x3fffffff}, {"nr_minus1", -1},
		};
		for (unsigned i = 0; i < sizeof t / sizeof t[0]; i++) {
			errno = 0;
			long r = syscall(t[i].nr, 0, 0, 0, 0, 0, 0);
			printf("%s %ld %d\n", t[i].name, r, r < 0 ? errno : 0);
		}
		return 0;
	}
	if (argc > 1 && !strcmp(argv[1], "clones")) {
		errno = 0;
		long r = syscall(SYS_clone, CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0);
		if (r == 0)
			_exit(0);
		printf("newuser %ld %d\n", r, r < 0 ? errno : 0);
		errno = 0;
		r = syscall(SYS_clone, CLONE_NEWNET | SIGCHLD, 0, 0, 0, 0);
		if (r == 0)
			_exit(0);
		printf("newnet %ld %d\n", r, r < 0 ? errno : 0);
		r = syscall(SYS_clone, CLONE_UNTRACED | SIGCHLD, 0, 0, 0, 0);
		if (r == 0)
			_exit(syscall(SYS_getuid) == 4242 ? 0 : 1);
		int st;
		waitpid(r, &st, 0);
		printf("untraced_child_exit 0 %d\n", WEXITSTATUS(st));
		unsigned long prog[2] = {0x7fff000000000006UL, 0}; /* ret ALLOW */
		struct { unsigned short len; void *f; } fprog = {1, prog};
		prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
		errno = 0;
		r = syscall(SYS_seccomp, 1, 8, &fprog);
		printf("seccomp_listener %ld %d\n", r, r < 0 ? errno : 0);
		errno = 0;
		r = syscall(SYS_seccomp, 1, 0, &fprog);
		printf("seccomp_plain %ld %d\n", r, r < 0 ? errno : 0);
		return 0;
	}
	if (argc > 1 && !strcmp(argv[1], "x32")) {
		syscall(0x40000000 | 39);
		printf("survived\n");
		return 0;
	}
	if (argc > 3 && !strcmp(argv[1], "loop")) {
		long n = atol(argv[2]), nr = atol(argv[3]), r = 0;
		for (long i = 0; i < n; i++)
			r = syscall(nr);
		printf("%ld\n", r);
		return 0;
	}
	if (argc > 3 && !strcmp(argv[1], "tloop")) {
		long n = atol(argv[2]), nr = atol(argv[3]), r = 0;
		struct timespec a, b;
		clock_gettime(CLOCK_MONOTONIC, &a);
		for (long i = 0; i < n; i++)
			r = syscall(nr);
		clock_gettime(CLOCK_MONOTONIC, &b);
		printf("%ld %.1f\n", r, ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / n);
		return 0;
	}
	if (argc > 3 && !strcmp(argv[1], "spawn")) {
		long n = atol(argv[2]);
		for (long i = 0; i < n; i++) {
			pid_t p;
			int st;
			if (posix_spawn(&p, argv[3], NULL, NULL, argv + 3, NULL) != 0 ||
			    waitpid(p, &st, 0) != p || st != 0) {
				printf("spawn failed\n");
				return 1;
			}
		}
		printf("spawned %ld\n", n);
		return 0;
	}
	if (argc > 2 && !strcmp(argv[1], "threadexec")) {
		pthread_t th;
		pthread_create(&th, NULL, execer, argv + 2);
		int traps = getenv("PROBE_TRAPS") != NULL;
		while (!execfailed)
			if (traps)
				syscall(SYS_getuid);
		leaderran = 1;
		pthread_join(th, NULL);
		return 3;
	}
	if (argc > 1 && !strcmp(argv[1], "freeze")) {
		pthread_t th;
		pthread_create(&th, NULL, spin, argc > 2 ? argv : NULL);
		while (!spinning)
			;
		for (int i = 0; i < (argc > 2 ? 50 : 1); i++)
			syscall(SYS_getuid);
		stop = 1;
		pthread_join(th, NULL);
		printf("joined\n");
		return 0;
	}
	if (argc > 1 && !strcmp(argv[1], "holdsleep")) {
		pthread_t th;
		pthread_create(&th, NULL, count, NULL);
		while (!spinning)
			;
		struct timespec ts = {0, 400000000}, t0, t1;
		syscall(SYS_nanosleep, &ts, NULL);
		unsigned long c = spins;
		clock_gettime(CLOCK_MONOTONIC, &t0);
		do
			clock_gettime(CLOCK_MONOTONIC, &t1);
		while (spins == c && t1.tv_sec - t0.tv_sec < 10);
		printf(spins != c ? "resumed\n" : "stuck\n");
		stop = 1;
		pthread_join(th, NULL);
		printf("joined\n");
		return 0;
	}
	if (argc > 1 && !strcmp(argv[1], "threads")) {
		pthread_t th[4];
		for (int i = 0; i < 4; i++)
			pthread_create(&th[i], NULL, worker, NULL);
		for (int i = 0; i < 4; i++)
			pthread_join(th[i], NULL);
		printf("joined %d\n", (int)syscall(SYS_getuid));
		return 0;
	}
	if (argc > 2 && !strcmp(argv[1], "exec")) {
		execv(argv[2], argv + 2);
		printf("exec failed: %s\n", strerror(errno));
		return 1;
	}
	if (argc > 1 && !strcmp(argv[1], "argv")) {
		for (int i = 0; i < argc; i++)
			printf("%s%c", argv[i], i + 1 < argc ? ' ' : '\n');
		return 0;
	}
	if (argc > 3 && !strcmp(argv[1], "forkexec")) {
		long n = atol(argv[2]);
		struct timespec a, b;
		clock_gettime(CLOCK_MONOTONIC, &a);
		for (long i = 0; i < n; i++) {
			pid_t p = fork();
			if (p == 0) {
				execv(argv[3], argv + 3);
				_exit(127);
			}
			int st;
			if (waitpid(p, &st, 0) != p || st != 0) {
				printf("child failed: %d\n", st);
				return 1;
			}
		}
		clock_gettime(CLOCK_MONOTONIC, &b);
		printf("ok %.1f\n", ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / n);
		return 0;
	}
	fprintf(stderr, "usage: probe probe|x32|loop N NR|exec PATH...|argv...|forkexec N PATH...\n");
	return 2;
}
`

func probe(t *testing.T) string {
	t.Helper()
	return testutil.StaticC(t, "sandboxprobe", probeSrc)
}

func parseProbe(t *testing.T, out string) map[string][2]int {
	t.Helper()
	m := map[string][2]int{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Fields(line)
		if len(f) != 3 {
			t.Fatalf("probe line %q", line)
		}
		r, _ := strconv.Atoi(f[1])
		e, _ := strconv.Atoi(f[2])
		m[f[0]] = [2]int{r, e}
	}
	return m
}

// TestHostileSyscalls: the refused set fails with its errno and unknown
// numbers with ENOSYS, where natively several of them succeed or fail
// differently (the native run proves the probe really reaches the kernel).
func TestHostileSyscalls(t *testing.T) {
	p := probe(t)
	h := &testHandler{}
	ws, out := runGuest(t, Config{Path: p, Argv: []string{"probe", "probe"}, Handler: h})
	if ws.ExitStatus() != 0 {
		t.Fatalf("status %v output %q", ws, out)
	}
	got := parseProbe(t, out)
	nativeOut, err := exec.Command(p, "probe").Output()
	if err != nil {
		t.Fatal(err)
	}
	native := parseProbe(t, string(nativeOut))
	want := map[string]int{
		"io_uring_setup": abi.ENOSYS, "bpf": abi.EPERM, "ptrace": abi.EPERM,
		"clone3": abi.ENOSYS, "unshare": abi.EPERM, "setns": abi.EPERM,
		"process_vm_readv": abi.EPERM, "userfaultfd": abi.ENOSYS,
		"perf_event_open": abi.ENOSYS, "kexec_load": abi.EPERM,
		"finit_module": abi.EPERM, "pidfd_getfd": abi.EPERM,
		"afs_syscall": abi.ENOSYS, "nr_1000": abi.ENOSYS,
		"nr_0x3fffffff": abi.ENOSYS, "nr_minus1": abi.ENOSYS,
	}
	for name, e := range want {
		if g := got[name]; g != [2]int{-1, e} {
			t.Errorf("%s: got result %d errno %d, want -1 errno %d (native: %v)", name, g[0], g[1], e, native[name])
		}
	}
	// Natively unshare(0) succeeds and clone3(NULL, 0) is EINVAL: the
	// sandbox's answers are its own.
	if native["unshare"] != [2]int{0, 0} || native["clone3"][1] != abi.EINVAL {
		t.Errorf("native probe: unshare %v clone3 %v", native["unshare"], native["clone3"])
	}
	// None of the refused or unknown calls reached the tracer.
	for _, nr := range []int{abi.SYS_IO_URING_SETUP, abi.SYS_BPF, abi.SYS_PTRACE, abi.SYS_CLONE3, abi.SYS_UNSHARE, 1000} {
		if h.traps[nr] != 0 {
			t.Errorf("syscall %d (%s) trapped", nr, abi.SyscallNames[nr])
		}
	}
}

// TestX32Killed: an x32-ABI syscall kills the process (SIGSYS).
func TestX32Killed(t *testing.T) {
	ws, out := runGuest(t, Config{Path: probe(t), Argv: []string{"probe", "x32"}})
	if !ws.Signaled() || ws.Signal() != unix.SIGSYS || out != "" {
		t.Errorf("status %v output %q, want death by SIGSYS", ws, out)
	}
}

// TestEmulatedTrap: a traced syscall answered by the handler returns the
// handler's value, and every call traps.
func TestEmulatedTrap(t *testing.T) {
	pol := DefaultPolicy()
	pol.Rules[abi.SYS_GETPPID] = Rule{Else: RetTrace}
	h := &testHandler{emulate: map[int]int64{abi.SYS_GETPPID: 4242}}
	ws, out := runGuest(t, Config{Path: probe(t), Policy: pol, Handler: h,
		Argv: []string{"probe", "loop", "1000", strconv.Itoa(abi.SYS_GETPPID)}})
	if out != "4242\n" || ws.ExitStatus() != 0 {
		t.Errorf("output %q status %v, want 4242", out, ws)
	}
	if h.traps[abi.SYS_GETPPID] != 1000 {
		t.Errorf("%d getppid traps, want 1000", h.traps[abi.SYS_GETPPID])
	}
}

// redirectHandler sends exec of /guest/prog to a file of an ExecDir.
type redirectHandler struct {
	PassThrough
	target string
	seen   []string
}

func (h *redirectHandler) Syscall(t *Task, r *abi.Regs) Action {
	if r.OrigRax != abi.SYS_EXECVE {
		return Native()
	}
	path, err := t.ReadString(r.Rdi, 4096)
	if err != nil {
		return Fail(abi.EFAULT)
	}
	h.seen = append(h.seen, path)
	if path == "/guest/prog" {
		if err := t.RedirectExec(r, h.target); err != nil {
			return Fail(abi.EFAULT)
		}
	}
	return Native()
}

// TestExecRedirect: a guest exec of a path that does not exist on the host
// runs the engine's copy with the guest's argv.
func TestExecRedirect(t *testing.T) {
	p := probe(t)
	img, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	d, err := NewExecDir(-1, -1)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	target, err := d.Add("prog", img)
	if err != nil {
		t.Fatal(err)
	}
	h := &redirectHandler{target: target}
	ws, out := runGuest(t, Config{Path: p, Handler: h, Argv: []string{"probe", "exec", "/guest/prog", "argv", "a b", "c"}})
	if want := "/guest/prog argv a b c\n"; out != want || ws.ExitStatus() != 0 {
		t.Errorf("output %q status %v, want %q", out, ws, want)
	}
	if len(h.seen) != 1 || h.seen[0] != "/guest/prog" {
		t.Errorf("execs seen %q", h.seen)
	}
}

// exitHandler lets getuid run natively and rewrites its result at the
// syscall-exit stop; it records which tasks (tid → tgid) made it.
type exitHandler struct {
	PassThrough
	tasks map[int]int
	exits int
	kinds map[EventKind]int
}

func (h *exitHandler) Syscall(t *Task, r *abi.Regs) Action {
	if r.OrigRax == abi.SYS_GETUID {
		h.tasks[t.Tid] = t.Tgid
		return NativeExit()
	}
	return Native()
}

func (h *exitHandler) SyscallExit(t *Task, r *abi.Regs) {
	h.exits++
	r.Rax = 1234
}

func (h *exitHandler) Event(t *Task, ev Event) { h.kinds[ev.Kind]++ }

// TestThreadsAndExitStops: threads are tasks of one thread group, and a
// NativeExit syscall's result can be rewritten at its exit stop.
func TestThreadsAndExitStops(t *testing.T) {
	h := &exitHandler{tasks: map[int]int{}, kinds: map[EventKind]int{}}
	ws, out := runGuest(t, Config{Path: probe(t), Handler: h, Argv: []string{"probe", "threads"}})
	if out != "joined 1234\n" || ws.ExitStatus() != 0 {
		t.Errorf("output %q status %v", out, ws)
	}
	if h.exits != 401 {
		t.Errorf("%d exit stops, want 401", h.exits)
	}
	if len(h.tasks) != 5 {
		t.Errorf("getuid from %d tasks, want 5: %v", len(h.tasks), h.tasks)
	}
	tgids := map[int]bool{}
	for _, g := range h.tasks {
		tgids[g] = true
	}
	if len(tgids) != 1 {
		t.Errorf("tasks %v: want one thread group", h.tasks)
	}
	if h.kinds[EvClone] != 4 || h.kinds[EvExit] != 5 {
		t.Errorf("events %v: want 4 clones, 5 exits", h.kinds)
	}
}

// TestVforkSpawn: posix_spawn (clone with CLONE_VM|CLONE_VFORK) works and
// is reported as a clone with those flags.
func TestVforkSpawn(t *testing.T) {
	needBusybox(t)
	h := &cloneFlagsHandler{}
	ws, out := runGuest(t, Config{Path: probe(t), Handler: h, Argv: []string{"probe", "spawn", "20", "/bin/busybox", "true"}})
	if out != "spawned 20\n" || ws.ExitStatus() != 0 {
		t.Errorf("output %q status %v", out, ws)
	}
	if h.vfork != 20 {
		t.Errorf("%d CLONE_VFORK clones, want 20", h.vfork)
	}
}

type cloneFlagsHandler struct {
	PassThrough
	vfork int
}

func (h *cloneFlagsHandler) Event(t *Task, ev Event) {
	if ev.Kind == EvClone && ev.Flags&abi.CLONE_VFORK != 0 && ev.Flags&abi.CLONE_VM != 0 && ev.Child.Tgid == ev.Child.Tid {
		h.vfork++
	}
}

// TestSandboxInvariants: whatever the handler, clone cannot create
// namespaces, CLONE_UNTRACED children stay traced, and a guest cannot
// install a seccomp listener (a plain guest filter is fine).
func TestSandboxInvariants(t *testing.T) {
	h := &testHandler{emulate: map[int]int64{abi.SYS_GETUID: 4242}}
	ws, out := runGuest(t, Config{Path: probe(t), Handler: h, Argv: []string{"probe", "clones"}})
	if ws.ExitStatus() != 0 {
		t.Fatalf("status %v output %q", ws, out)
	}
	got := parseProbe(t, out)
	for name, want := range map[string][2]int{
		"newuser":             {-1, abi.EPERM},
		"newnet":              {-1, abi.EPERM},
		"untraced_child_exit": {0, 0}, // its getuid was emulated: traced
		"seccomp_listener":    {-1, abi.EINVAL},
		"seccomp_plain":       {0, 0},
	} {
		if got[name] != want {
			t.Errorf("%s: got %v, want %v", name, got[name], want)
		}
	}
}

// killHandler kills any process that calls getuid.
type killHandler struct{ PassThrough }

func (killHandler) Syscall(t *Task, r *abi.Regs) Action {
	if r.OrigRax == abi.SYS_GETUID {
		return KillProcess()
	}
	return Native()
}

// TestKillAction: KillProcess ends the calling process with SIGKILL
// before its syscall runs.
func TestKillAction(t *testing.T) {
	ws, out := runGuest(t, Config{Path: probe(t), Handler: killHandler{}, Argv: []string{"probe", "threads"}})
	if !ws.Signaled() || ws.Signal() != unix.SIGKILL || out != "" {
		t.Errorf("status %v output %q, want SIGKILL and no output", ws, out)
	}
}

// execHandler records exec events.
type execHandler struct {
	PassThrough
	delay time.Duration // before HoldSiblings: a trapping sibling stops in a trap
	execs []Event
	tids  []int
}

// Syscall holds an exec's siblings until it has run, as the kernel does.
func (h *execHandler) Syscall(t *Task, r *abi.Regs) Action {
	if r.OrigRax == abi.SYS_EXECVE {
		time.Sleep(h.delay)
		t.HoldSiblings()
	}
	return Native()
}

func (h *execHandler) Event(t *Task, ev Event) {
	if ev.Kind == EvExec {
		h.execs = append(h.execs, ev)
		h.tids = append(h.tids, t.Tid)
	}
}

// TestExecFromThread: an exec from a non-leader thread, which holds the
// leader stopped meanwhile, is reported with the thread's old tid and the
// leader's tid, and the new program runs.
func TestExecFromThread(t *testing.T) {
	needBusybox(t)
	h := &execHandler{}
	ws, out := runGuest(t, Config{Path: probe(t), Handler: h, Argv: []string{"probe", "threadexec", "/bin/busybox", "echo", "replaced"}})
	if out != "replaced\n" || ws.ExitStatus() != 0 {
		t.Errorf("output %q status %v", out, ws)
	}
	if len(h.execs) != 2 || !h.execs[0].Init || h.execs[1].Init {
		t.Fatalf("exec events %+v, want init's then the thread's", h.execs)
	}
	if h.execs[1].OldTid == h.tids[1] || h.tids[1] != h.tids[0] {
		t.Errorf("thread exec: old tid %d, tid %d (init %d): want a different old tid and the leader's tid", h.execs[1].OldTid, h.tids[1], h.tids[0])
	}
	// The leader traps (getuid) meanwhile, and is in a trap when the
	// exec's handler holds it: that trap is dropped with it.
	for i := range 10 {
		h = &execHandler{delay: 5 * time.Millisecond}
		ws, out = runGuest(t, Config{Path: probe(t), Handler: h, Env: []string{"PROBE_TRAPS=1"},
			Argv: []string{"probe", "threadexec", "/bin/busybox", "echo", "replaced"}})
		if out != "replaced\n" || ws.ExitStatus() != 0 || len(h.execs) != 2 {
			t.Errorf("run %d with a trapping leader: output %q status %v, %d exec events", i, out, ws, len(h.execs))
		}
	}
	// A failing exec releases the held leader as it returns: the leader
	// runs while the thread waits for it.
	h = &execHandler{}
	ws, out = runGuest(t, Config{Path: probe(t), Handler: h, Argv: []string{"probe", "threadexec", "/nonexistent"}})
	if out != "leader ran\n" || ws.ExitStatus() != 3 || len(h.execs) != 1 {
		t.Errorf("failed exec: output %q status %v, %d exec events", out, ws, len(h.execs))
	}
}

// siblingStates is the state letter /proc shows for each of t's other
// threads.
func siblingStates(t *Task) string {
	ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", t.Tgid))
	var st []byte
	for _, e := range ents {
		if tid, _ := strconv.Atoi(e.Name()); tid != t.Tid {
			c, _ := procState(tid)
			st = append(st, c)
		}
	}
	return string(st)
}

// freezeHandler stops the siblings of the getuid caller and records the
// state of each as /proc shows it before, during and after.
type freezeHandler struct {
	PassThrough
	states []string
}

func (h *freezeHandler) Syscall(t *Task, r *abi.Regs) Action {
	if r.OrigRax != abi.SYS_GETUID {
		return Native()
	}
	h.states = append(h.states, siblingStates(t))
	resume := t.StopSiblings()
	h.states = append(h.states, siblingStates(t))
	resume()
	h.states = append(h.states, siblingStates(t))
	return Emulate(0)
}

// TestStopSiblings: a spinning sibling thread is stopped while the handler
// works and runs again afterwards.
func TestStopSiblings(t *testing.T) {
	h := &freezeHandler{}
	ws, out := runGuest(t, Config{Path: probe(t), Handler: h, Argv: []string{"probe", "freeze"}})
	if out != "joined\n" || ws.ExitStatus() != 0 {
		t.Errorf("output %q status %v", out, ws)
	}
	if len(h.states) != 3 || h.states[0] != "R" || h.states[1] != "t" || h.states[2] == "t" {
		t.Errorf("sibling states before/during/after %q, want R, t, running", h.states)
	}
	// The sibling traps too: its stops collected while freezing are
	// handled afterwards, and nothing is lost or hangs.
	h = &freezeHandler{}
	ws, out = runGuest(t, Config{Path: probe(t), Handler: h, Argv: []string{"probe", "freeze", "traps"}})
	if out != "joined\n" || ws.ExitStatus() != 0 {
		t.Errorf("with traps: output %q status %v", out, ws)
	}
	for i := 1; i < len(h.states); i += 3 {
		if h.states[i] != "t" {
			t.Errorf("with traps, freeze %d: sibling state %q", i/3, h.states[i])
		}
	}
	if len(h.states) != 150 {
		t.Errorf("with traps: %d states, want 150", len(h.states))
	}
}

// holdHandler holds the nanosleep caller's siblings (HoldSiblings) and
// records the state of the other thread 150 ms into the 400 ms sleep.
type holdHandler struct {
	PassThrough
	emulate bool // answer the sleep instead of letting it run
	mid     chan string
}

func (h *holdHandler) Syscall(t *Task, r *abi.Regs) Action {
	if r.OrigRax != abi.SYS_NANOSLEEP {
		return Native()
	}
	t.HoldSiblings()
	if h.emulate {
		return Emulate(0)
	}
	go func() {
		time.Sleep(150 * time.Millisecond)
		h.mid <- siblingStates(t)
	}()
	return Native()
}

// TestHoldSiblings: the other threads of a task whose syscall the handler
// lets run stay stopped until the host has run it, then run again; when
// the handler answers the syscall itself, they go on at once.
func TestHoldSiblings(t *testing.T) {
	pol := DefaultPolicy()
	pol.Rules[abi.SYS_NANOSLEEP] = Rule{Else: RetTrace}
	for _, emulate := range []bool{false, true} {
		h := &holdHandler{emulate: emulate, mid: make(chan string, 1)}
		ws, out := runGuest(t, Config{Path: probe(t), Handler: h, Policy: pol, Argv: []string{"probe", "holdsleep"}})
		if out != "resumed\njoined\n" || ws.ExitStatus() != 0 {
			t.Errorf("emulate %v: output %q status %v", emulate, out, ws)
		}
		if !emulate {
			if got := <-h.mid; got != "t" {
				t.Errorf("the sibling's state in the sleep %q, want t (stopped)", got)
			}
		}
	}
}
