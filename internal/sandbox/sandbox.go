// Package sandbox is the engine's host mechanism: it starts a guest program
// inside new user, pid and IPC namespaces under a seccomp filter, and traces
// it with ptrace from one locked OS thread. The guest's init is pid 1 of its
// namespace and sees uid 0. Syscalls the filter traps are handed to a
// Handler (the kernel), which emulates them, rewrites them or lets them run;
// the native set never leaves the host kernel, the refused set fails in the
// filter, and unknown numbers get ENOSYS. Syscalls listed in Config.Notify
// go through seccomp user notification instead (Notifier), which is cheaper
// and is how engine-made fds reach a guest (Notification.AddFd).
//
// Exec redirection: a Handler resolves a guest exec in its VFS, puts the
// image (PT_INTERP patched by PatchInterp for dynamic ELFs) in an ExecDir,
// and calls Task.RedirectExec, or Task.RewriteExec with the argv that
// Shebang and ShebangArgv give for "#!" scripts.
//
// Freeze, Thaw and Regs control a running guest from any goroutine: the
// tracer, asleep in wait4, is woken for them by its bell, a tiny traced
// child process (see control.go).
//
// The stub is the running binary re-executed with a marker in its
// environment; the package's init turns such a process into the stub
// before main runs, so any program importing the package can start guests.
// Where a memfd cannot be executed, the bell is the running binary too,
// with another marker.
package sandbox

import (
	"bytes"
	"encoding/gob"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/umltools/umltools/internal/abi"
)

// stubEnv marks a re-executed binary as the sandbox stub. Its value is
// "ctrl,status,exec": the stub's fds for its configuration pipe, its error
// pipe and the executable to run (-1 for a path).
const stubEnv = "UMLTOOLS_SANDBOX_STUB"

func init() {
	// The stub runs from the package's init, before any of the engine's
	// own code: importing the package is enough, and no main can forget it.
	// Its goroutine stays on the main thread, the one the engine attaches
	// to: the exec must come from a traced thread. So does the bell's: the
	// engine traces only its main thread.
	if os.Getenv(stubEnv) != "" || os.Getenv(bellEnv) != "" {
		runtime.LockOSThread()
		MaybeStub()
	}
}

// MaybeStub turns the process into the sandbox stub (or a sandbox's bell)
// when it was started as one, and never returns then; otherwise it returns
// at once. The package's init already calls it, so a main only needs to
// import the package; it is exported for mains that want the hand-over
// visible.
func MaybeStub() {
	if os.Getenv(bellEnv) != "" {
		runBell()
	}
	spec := os.Getenv(stubEnv)
	if spec == "" {
		return
	}
	err := runStub(spec)
	os.Exit(stubFailed(err))
}

// stubConfig is what the engine sends the stub over its control pipe.
type stubConfig struct {
	Filter []abi.SockFilter
	Notify []abi.SockFilter // optional second filter with a listener
	Path   string
	Argv   []string
	Env    []string
	Chroot string
}

// stubFailed reports err on the status pipe (or stderr) and returns the
// stub's exit code.
func stubFailed(err error) int {
	msg := []byte(err.Error())
	if f := strings.Split(os.Getenv(stubEnv), ","); len(f) == 3 {
		if fd, e := strconv.Atoi(f[1]); e == nil {
			if _, e := unix.Write(fd, msg); e == nil {
				return 127
			}
		}
	}
	fmt.Fprintf(os.Stderr, "sandbox stub: %v\n", err)
	return 127
}

func runStub(spec string) error {
	var fds [3]int
	f := strings.Split(spec, ",")
	if len(f) != 3 {
		return fmt.Errorf("bad %s=%q", stubEnv, spec)
	}
	for i := range fds {
		n, err := strconv.Atoi(f[i])
		if err != nil {
			return fmt.Errorf("bad %s=%q", stubEnv, spec)
		}
		fds[i] = n
	}
	ctrl, execfd := fds[0], fds[2] // fds[1], the status pipe, is found by stubFailed
	// The parent-death signal first: if the engine is already gone, the
	// control pipe reads EOF below.
	if _, _, e := unix.RawSyscall(unix.SYS_PRCTL, abi.PR_SET_PDEATHSIG, uintptr(unix.SIGKILL), 0); e != 0 {
		return fmt.Errorf("prctl(PR_SET_PDEATHSIG): %w", e)
	}
	data, err := io.ReadAll(os.NewFile(uintptr(ctrl), "sandbox-ctrl"))
	if err != nil {
		return fmt.Errorf("reading configuration: %w", err)
	}
	var cfg stubConfig
	if err := gob.NewDecoder(bytes.NewReader(data)).Decode(&cfg); err != nil {
		return fmt.Errorf("decoding configuration: %w", err)
	}
	// Nothing but the guest's own fds (numbered below the control pipe)
	// survives the exec: not the engine's stray inherited fds either.
	if err := unix.CloseRange(uint(ctrl), ^uint(0), unix.CLOSE_RANGE_CLOEXEC); err != nil {
		for fd := ctrl; fd < 1024; fd++ {
			unix.CloseOnExec(fd)
		}
	}
	argv, err := syscall.SlicePtrFromStrings(cfg.Argv)
	if err != nil {
		return err
	}
	envv, err := syscall.SlicePtrFromStrings(cfg.Env)
	if err != nil {
		return err
	}
	path, err := syscall.BytePtrFromString(cfg.Path)
	if err != nil {
		return err
	}
	empty := []byte{0}
	if cfg.Chroot != "" {
		// The guest's host root: a private directory, so that nothing a
		// guest could get past the engine names a host path.
		if err := unix.Chroot(cfg.Chroot); err != nil {
			return fmt.Errorf("chroot %s: %w", cfg.Chroot, err)
		}
		if err := unix.Chdir("/"); err != nil {
			return fmt.Errorf("chdir / in %s: %w", cfg.Chroot, err)
		}
	}
	if _, _, e := unix.RawSyscall6(unix.SYS_PRCTL, abi.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0, 0); e != 0 {
		return fmt.Errorf("prctl(PR_SET_NO_NEW_PRIVS): %w", e)
	}
	prog := abi.SockFprog{Len: uint16(len(cfg.Filter)), Filter: &cfg.Filter[0]}
	if _, _, e := unix.RawSyscall(unix.SYS_SECCOMP, abi.SECCOMP_SET_MODE_FILTER,
		abi.SECCOMP_FILTER_FLAG_TSYNC, uintptr(unsafe.Pointer(&prog))); e != 0 {
		return fmt.Errorf("seccomp: %w", e)
	}
	if len(cfg.Notify) > 0 {
		// The listener fd is O_CLOEXEC; the engine takes a copy with
		// pidfd_getfd at the stub's exec stop, before it is closed.
		nprog := abi.SockFprog{Len: uint16(len(cfg.Notify)), Filter: &cfg.Notify[0]}
		// WAIT_KILLABLE_RECV (5.19): once the engine has received a
		// notification, only a fatal signal ends the wait, so a served
		// syscall is never abandoned half way (an open whose fd was
		// added) and restarted; signals are delivered right after it.
		flags := uintptr(abi.SECCOMP_FILTER_FLAG_NEW_LISTENER | abi.SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV)
		_, _, e := unix.RawSyscall(unix.SYS_SECCOMP, abi.SECCOMP_SET_MODE_FILTER, flags, uintptr(unsafe.Pointer(&nprog)))
		if e == unix.EINVAL {
			_, _, e = unix.RawSyscall(unix.SYS_SECCOMP, abi.SECCOMP_SET_MODE_FILTER,
				abi.SECCOMP_FILTER_FLAG_NEW_LISTENER, uintptr(unsafe.Pointer(&nprog)))
		}
		if e != 0 {
			return fmt.Errorf("seccomp listener: %w", e)
		}
	}
	// From here on every syscall of this thread goes through the filter;
	// the tracer lets the stub's own traced syscalls run.
	var e syscall.Errno
	if execfd >= 0 {
		_, _, e = unix.RawSyscall6(unix.SYS_EXECVEAT, uintptr(execfd), uintptr(unsafe.Pointer(&empty[0])),
			uintptr(unsafe.Pointer(&argv[0])), uintptr(unsafe.Pointer(&envv[0])), abi.AT_EMPTY_PATH, 0)
	} else {
		_, _, e = unix.RawSyscall(unix.SYS_EXECVE, uintptr(unsafe.Pointer(path)),
			uintptr(unsafe.Pointer(&argv[0])), uintptr(unsafe.Pointer(&envv[0])))
	}
	runtime.KeepAlive(argv)
	runtime.KeepAlive(envv)
	runtime.KeepAlive(empty)
	return fmt.Errorf("exec %s: %w", cfg.Path, e)
}

// Config describes a guest to start.
type Config struct {
	// Path is the host path of the program to run as the guest's init (a
	// static ELF for now). Ignored when File is set.
	Path string
	// File is an open executable (typically from ExecMemfd) to run
	// instead of Path, with execveat(AT_EMPTY_PATH).
	File *os.File
	// Argv and Env are the guest init's argument and environment vectors.
	Argv []string
	Env  []string
	// Files become the guest's fds 0, 1, 2, …; nil entries are closed.
	Files []*os.File
	// Policy is the seccomp policy; nil means DefaultPolicy().
	Policy *Policy
	// Handler serves trapped syscalls and receives events; nil means
	// PassThrough.
	Handler Handler
	// Notify lists syscalls served through seccomp user notification
	// instead of ptrace: cheaper per call, and the only way to install an
	// engine-made fd in the guest (Notification.AddFd). Handler must then
	// implement Notifier. Exec cannot be among them.
	Notify []int
	// HostUID and HostGID are the host ids the guest's uid 0 and gid 0 map
	// to. Zero values mean the engine's own effective ids; set them to an
	// unprivileged id (e.g. 65534) to run guests as nobody on the host.
	HostUID, HostGID int
	// Cloneflags adds namespaces (e.g. unix.CLONE_NEWNET) to the default
	// CLONE_NEWUSER|CLONE_NEWPID|CLONE_NEWIPC.
	Cloneflags uintptr
	// Setsid, Setctty and Ctty are passed to the stub's fork (see
	// syscall.SysProcAttr); Ctty is a guest fd.
	Setsid, Setctty bool
	Ctty            int
	// Chroot, when set, is the host directory the guest's processes
	// see as their host root (the stub chroots there before exec), and
	// Path is then relative to it. Exec redirection targets must lie
	// inside it (see ExecDir.Guest).
	Chroot string
	// Pin puts the tracer thread and the guest (which inherits it) on
	// host CPU number CPU: a trap then needs no cross-CPU wake-up, which
	// is much cheaper on hosts with slow wake-ups, but it serialises
	// multi-process guests. Off by default.
	Pin bool
	CPU int
}

// Sandbox is a running guest.
type Sandbox struct {
	// Pid is the host pid of the guest's init (pid 1 inside).
	Pid int

	cfg     Config
	handler Handler
	filter  []abi.SockFilter
	notify  []abi.SockFilter
	notifs  chan struct{} // closed when the notification loop ends
	started chan error
	done    chan struct{}
	status  unix.WaitStatus
	err     error
	tasks   map[int]*Task
	early   map[int]int // tid → wait status of tasks that died unannounced
	// orphanCheck: a killOrphans request is on its way (orphan.go)
	orphanCheck bool
	// pending holds stops collected out of turn (by StopSiblings, Regs,
	// or while frozen), handled in order before the next wait4 unless
	// frozen; a task's exit follows its own kept stop there.
	pending   []waitEvent
	statR     *os.File // the stub's status pipe
	execed    bool     // the stub has exec'd the guest's init
	frozen    bool     // Freeze is in effect: stops are kept, not handled
	tracerTid int      // the tracer's OS thread

	// Control requests (Freeze, Thaw, Regs) wait in reqs until the
	// tracer collects a stop of the bell, which rings it (control.go).
	mu     sync.Mutex
	reqs   []*request
	reqErr error // once set, requests fail with it: the guest ended, or no bell
	bell   int   // host pid of the bell; 0 before it starts and once it is gone
}

// ErrExec is wrapped by Wait's error when the stub could not exec the
// guest program.
var ErrExec = errors.New("guest exec failed")

// Start starts the guest and its tracer and returns once the guest is
// attached and released into its exec.
func Start(cfg Config) (*Sandbox, error) {
	if len(cfg.Argv) == 0 {
		return nil, errors.New("sandbox: empty argv")
	}
	if cfg.File == nil && cfg.Path == "" {
		return nil, errors.New("sandbox: no program to run")
	}
	p := cfg.Policy
	if p == nil {
		p = DefaultPolicy()
	}
	filter, err := p.Compile()
	if err != nil {
		return nil, err
	}
	var notify []abi.SockFilter
	if len(cfg.Notify) > 0 {
		if _, ok := cfg.Handler.(Notifier); !ok {
			return nil, errors.New("sandbox: Config.Notify needs a Handler that implements Notifier")
		}
		if notify, err = NotifyFilter(cfg.Notify); err != nil {
			return nil, err
		}
	}
	s := &Sandbox{cfg: cfg, handler: cfg.Handler, filter: filter, notify: notify,
		started: make(chan error, 1), done: make(chan struct{}), tasks: map[int]*Task{}, early: map[int]int{}}
	if s.handler == nil {
		s.handler = PassThrough{}
	}
	go s.tracer()
	if err := <-s.started; err != nil {
		return nil, err
	}
	return s, nil
}

// Run starts the guest and waits for its init to end.
func Run(cfg Config) (unix.WaitStatus, error) {
	s, err := Start(cfg)
	if err != nil {
		return 0, err
	}
	return s.Wait()
}

// Wait waits until every guest task is gone and returns the wait status of
// the guest's init.
func (s *Sandbox) Wait() (unix.WaitStatus, error) {
	<-s.done
	return s.status, s.err
}

// Kill kills the guest's init, and with it every guest process (the pid
// namespace dies with its init). Safe from any goroutine.
func (s *Sandbox) Kill() error {
	return unix.Kill(s.Pid, unix.SIGKILL)
}

// spawn starts the stub on the calling (tracer) thread and attaches to it.
func (s *Sandbox) spawn() (statusR *os.File, err error) {
	ctrlR, ctrlW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer ctrlR.Close()
	sent := false
	defer func() {
		if !sent {
			ctrlW.Close()
		}
	}()
	statR, statW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer statW.Close()
	files := append([]*os.File(nil), s.cfg.Files...)
	for len(files) < 3 {
		files = append(files, nil)
	}
	execfd := -1
	spec := fmt.Sprintf("%d,%d,", len(files), len(files)+1)
	files = append(files, ctrlR, statW)
	if s.cfg.File != nil {
		execfd = len(files)
		files = append(files, s.cfg.File)
	}
	spec += strconv.Itoa(execfd)
	uid, gid := s.cfg.HostUID, s.cfg.HostGID
	if uid == 0 {
		uid = os.Geteuid()
	}
	if gid == 0 {
		gid = os.Getegid()
	}
	attr := &os.ProcAttr{
		Env:   []string{stubEnv + "=" + spec},
		Files: files,
		Sys: &syscall.SysProcAttr{
			Cloneflags:  unix.CLONE_NEWUSER | unix.CLONE_NEWPID | unix.CLONE_NEWIPC | s.cfg.Cloneflags,
			UidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: uid, Size: 1}},
			GidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: gid, Size: 1}},
			// Unprivileged gid maps need setgroups denied; the guest's
			// setgroups is the engine's business anyway.
			GidMappingsEnableSetgroups: false,
			Setsid:                     s.cfg.Setsid,
			Setctty:                    s.cfg.Setctty,
			Ctty:                       s.cfg.Ctty,
		},
	}
	if uid != os.Geteuid() || gid != os.Getegid() {
		// Mapping to another host id: become uid/gid 0 inside the new
		// namespace after the maps are written, which is that host id.
		attr.Sys.Credential = &syscall.Credential{Uid: 0, Gid: 0, NoSetGroups: true}
	}
	proc, err := os.StartProcess("/proc/self/exe", []string{"umltools-sandbox-stub"}, attr)
	if err != nil {
		statR.Close()
		return nil, fmt.Errorf("sandbox: starting stub: %w", err)
	}
	s.Pid = proc.Pid
	proc.Release() // the tracer reaps it with wait4
	opts := abi.PTRACE_O_TRACESECCOMP | abi.PTRACE_O_TRACEFORK | abi.PTRACE_O_TRACEVFORK |
		abi.PTRACE_O_TRACECLONE | abi.PTRACE_O_TRACEEXEC | abi.PTRACE_O_EXITKILL | abi.PTRACE_O_TRACESYSGOOD
	if err := ptrace(abi.PTRACE_SEIZE, s.Pid, 0, uintptr(opts)); err != nil {
		unix.Kill(s.Pid, unix.SIGKILL)
		statR.Close()
		return nil, fmt.Errorf("sandbox: PTRACE_SEIZE of stub %d: %w", s.Pid, err)
	}
	s.tasks[s.Pid] = &Task{Tid: s.Pid, Tgid: s.Pid, stub: true, started: true, announced: true, sb: s}
	var buf bytes.Buffer
	if err := gob.NewEncoder(&buf).Encode(stubConfig{Filter: s.filter, Notify: s.notify, Path: s.cfg.Path, Argv: s.cfg.Argv, Env: s.cfg.Env, Chroot: s.cfg.Chroot}); err != nil {
		unix.Kill(s.Pid, unix.SIGKILL)
		statR.Close()
		return nil, err
	}
	// Another goroutine writes the configuration: a large one fills the
	// pipe, and the stub may then need the tracer (a runtime thread's clone
	// event) before it reads on. If the stub dies, the write fails and the
	// tracer sees the exit.
	sent = true
	go func() {
		ctrlW.Write(buf.Bytes())
		ctrlW.Close()
	}()
	return statR, nil
}

// ptrace issues a non-blocking ptrace request with RawSyscall6: the x/sys
// wrappers go through the scheduler and cost several times more per trap.
func ptrace(req int, pid int, addr, data uintptr) error {
	_, _, e := unix.RawSyscall6(unix.SYS_PTRACE, uintptr(req), uintptr(pid), addr, data, 0, 0)
	if e != 0 {
		return e
	}
	return nil
}

func getRegs(tid int, r *abi.Regs) error {
	return ptrace(abi.PTRACE_GETREGS, tid, 0, uintptr(unsafe.Pointer(r)))
}

func setRegs(tid int, r *abi.Regs) error {
	return ptrace(abi.PTRACE_SETREGS, tid, 0, uintptr(unsafe.Pointer(r)))
}
