package sandbox

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/umltools/umltools/internal/abi"
)

// Control of a running guest from other goroutines (Freeze, Thaw, Regs).
//
// Only the tracer thread may issue ptrace requests, and it sleeps in
// wait4. It is woken by its bell: a child process of the tracer thread,
// which does nothing but sleep, and whose main thread the tracer traces. A
// caller queues a request and sends the bell SIGUSR1 with tgkill; the
// signal puts the bell in a signal-delivery stop, wait4 returns its pid,
// and the tracer runs the queued requests and resumes the bell without the
// signal. The guest sees nothing of it, and a trap costs no more than
// before: the tracer only compares each pid wait4 returns with the bell's.
//
// The bell is a 162-byte program (bellImage) run from a memfd: it has no
// runtime to start and stop, so it costs a sandbox's start and end next
// to nothing, where the running binary re-executed (a Go runtime's
// threads, the binary's package inits) measurably slowed down the start
// of a small guest. Where memfds may not be executed (vm.memfd_noexec=2)
// the running binary is the bell after all, re-executed with bellEnv.

// bellEnv marks a re-executed binary as a sandbox's bell.
const bellEnv = "UMLTOOLS_SANDBOX_BELL"

// bellImage returns the bell program: a static x86-64 ELF executable made
// of its ELF header, one PT_LOAD program header (the whole file, read and
// execute) and this code, at the entry point:
//
//		mov	$157, %eax		// prctl(2)
//		mov	$15, %edi		// PR_SET_NAME
//		lea	name(%rip), %rsi
//		syscall
//	loop:	mov	$34, %eax		// pause(2)
//		syscall
//		jmp	loop
//	name:	.asciz	"umltools-bell"
//
// Its parent-death signal is set by the engine's fork (SysProcAttr), and
// survives the exec.
func bellImage() []byte {
	code := []byte{
		0xb8, 157, 0, 0, 0, // mov $157, %eax
		0xbf, 15, 0, 0, 0, // mov $15, %edi
		0x48, 0x8d, 0x35, 11, 0, 0, 0, // lea 11(%rip), %rsi: name, past the next 11 bytes
		0x0f, 0x05, // syscall
		0xb8, 34, 0, 0, 0, // loop: mov $34, %eax
		0x0f, 0x05, // syscall
		0xeb, 0xf7, // jmp loop (-9)
	}
	code = append(code, "umltools-bell\x00"...)
	const base = 0x400000
	const ehsize, phsize = 64, 56
	size := uint64(ehsize + phsize + len(code))
	hdr := elf.Header64{
		Type:      uint16(elf.ET_EXEC),
		Machine:   uint16(elf.EM_X86_64),
		Version:   uint32(elf.EV_CURRENT),
		Entry:     base + ehsize + phsize,
		Phoff:     ehsize,
		Ehsize:    ehsize,
		Phentsize: phsize,
		Phnum:     1,
	}
	copy(hdr.Ident[:], elf.ELFMAG)
	hdr.Ident[elf.EI_CLASS] = byte(elf.ELFCLASS64)
	hdr.Ident[elf.EI_DATA] = byte(elf.ELFDATA2LSB)
	hdr.Ident[elf.EI_VERSION] = byte(elf.EV_CURRENT)
	prog := elf.Prog64{
		Type:   uint32(elf.PT_LOAD),
		Flags:  uint32(elf.PF_R | elf.PF_X),
		Vaddr:  base,
		Paddr:  base,
		Filesz: size,
		Memsz:  size,
		Align:  abi.PAGE_SIZE,
	}
	var b bytes.Buffer
	binary.Write(&b, binary.LittleEndian, &hdr)
	binary.Write(&b, binary.LittleEndian, &prog)
	b.Write(code)
	return b.Bytes()
}

// Errors of Freeze, Thaw and Regs.
var (
	// ErrFrozen is returned by Freeze when the guest is frozen already.
	ErrFrozen = errors.New("sandbox: guest already frozen")
	// ErrNotFrozen is returned by Thaw when the guest is not frozen.
	ErrNotFrozen = errors.New("sandbox: guest not frozen")
	// ErrEnded is returned once the guest's init has exited: there is
	// nothing left to control.
	ErrEnded = errors.New("sandbox: guest ended")
)

// request is a function to run on the tracer thread for another goroutine.
type request struct {
	fn   func() error
	done chan error // buffered: the tracer never waits for the caller
}

// runBell is the whole life of the running binary re-executed as a bell
// (bellEnv): it sleeps until killed. It dies with the tracer thread that
// started it (the parent-death signal, also set by the engine before the
// exec, and PTRACE_O_EXITKILL).
func runBell() {
	unix.RawSyscall(unix.SYS_PRCTL, abi.PR_SET_PDEATHSIG, uintptr(unix.SIGKILL), 0)
	for {
		// A blocking system call through the runtime: the scheduler sees
		// the thread in a system call and never preempts it with a
		// signal (which the tracer would have to pass on).
		unix.Pause()
	}
}

// startBell starts the bell on the tracer thread and runs the requests
// queued meanwhile. Without a bell the guest runs all the same; only
// control requests fail.
func (s *Sandbox) startBell() {
	pid, err := s.spawnBell()
	if err != nil {
		s.stopControl(fmt.Errorf("sandbox: no control of the guest: %w", err))
		return
	}
	s.mu.Lock()
	s.bell = pid
	s.mu.Unlock()
	s.serve()
}

// spawnBell starts the bell process and attaches to its main thread.
func (s *Sandbox) spawnBell() (int, error) {
	// No environment, and no files but the program (fd 0, which the
	// bell never reads). A session of its own: a terminal's signals
	// (Ctrl-C, hang-up) for the engine's process group do not kill it.
	attr := &os.ProcAttr{Sys: &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setsid: true}}
	argv := []string{"umltools-sandbox-bell"}
	var proc *os.Process
	f, err := ExecMemfd("umltools-sandbox-bell", bellImage())
	if err == nil {
		attr.Files = []*os.File{f}
		proc, err = os.StartProcess("/proc/self/fd/0", argv, attr)
		f.Close()
	}
	if err != nil {
		// The running binary, which turns into a bell in the package's
		// init (the runtime opens /dev/null for its fds 0-2).
		attr.Files, attr.Env = nil, []string{bellEnv + "=1"}
		var err2 error
		if proc, err2 = os.StartProcess("/proc/self/exe", argv, attr); err2 != nil {
			return 0, fmt.Errorf("starting the bell: %w (from a memfd: %v)", err2, err)
		}
	}
	pid := proc.Pid
	proc.Release() // the tracer reaps it with wait4
	if err := ptrace(abi.PTRACE_SEIZE, pid, 0, abi.PTRACE_O_EXITKILL); err != nil {
		unix.Kill(pid, unix.SIGKILL)
		reap(pid)
		return 0, fmt.Errorf("PTRACE_SEIZE of the bell %d: %w", pid, err)
	}
	return pid, nil
}

// reap waits for the end of pid, a child of the tracer thread.
func reap(pid int) {
	for {
		var ws unix.WaitStatus
		_, err := unix.Wait4(pid, &ws, abi.WALL, nil)
		if err != unix.EINTR {
			return
		}
	}
}

// bellEvent handles a wait status of the bell: at any stop it runs the
// queued requests, then resumes the bell, suppressing SIGUSR1 (the ring)
// and passing on any other signal.
func (s *Sandbox) bellEvent(ws unix.WaitStatus) {
	if ws.Exited() || ws.Signaled() {
		s.mu.Lock()
		s.bell = 0
		s.mu.Unlock()
		s.stopControl(fmt.Errorf("sandbox: no control of the guest: the bell died (%v)", ws))
		return
	}
	if !ws.Stopped() {
		return
	}
	s.serve()
	sig := 0
	if uint32(ws)>>16 == 0 && ws.StopSignal() != unix.SIGUSR1 {
		sig = int(ws.StopSignal())
	}
	resume(s.bell, sig)
}

// serve runs the queued requests (on the tracer thread).
func (s *Sandbox) serve() {
	s.mu.Lock()
	reqs := s.reqs
	s.reqs = nil
	s.mu.Unlock()
	for _, r := range reqs {
		s.mu.Lock()
		err := s.reqErr
		s.mu.Unlock()
		if err == nil {
			err = r.fn()
		}
		r.done <- err
	}
}

// stopControl makes every queued and later request fail with err (the
// first such error stays), and kills the bell: from the guest's end on,
// the bell must not keep the tracer's wait4 from reporting ECHILD.
func (s *Sandbox) stopControl(err error) {
	s.mu.Lock()
	if s.reqErr == nil {
		s.reqErr = err
	}
	err = s.reqErr
	reqs := s.reqs
	s.reqs = nil
	bell := s.bell
	s.mu.Unlock()
	for _, r := range reqs {
		r.done <- err
	}
	if bell != 0 {
		unix.Kill(bell, unix.SIGKILL) // reaped by the loop, silently
	}
}

// endControl runs when the tracer ends: requests fail from now on, and a
// bell not reaped yet (the loop ended on an error) is.
func (s *Sandbox) endControl() {
	s.stopControl(ErrEnded)
	s.mu.Lock()
	bell := s.bell
	s.bell = 0
	s.mu.Unlock()
	if bell != 0 {
		reap(bell)
	}
}

// call runs fn on the tracer thread and returns its error.
func (s *Sandbox) call(fn func() error) error {
	if unix.Gettid() == s.tracerTid {
		// A Handler method: the tracer would wait for itself.
		return errors.New("sandbox: control request from the tracer thread (a Handler method)")
	}
	r := &request{fn: fn, done: make(chan error, 1)}
	s.mu.Lock()
	if s.reqErr != nil {
		err := s.reqErr
		s.mu.Unlock()
		return err
	}
	s.reqs = append(s.reqs, r)
	// Ring only for the first request: the others ride on its stop.
	// Before the bell is up, the tracer serves the queue right after
	// starting it. The signal goes out under the lock, so never after
	// the tracer killed the bell (stopControl sets reqErr first); only
	// a bell killed by someone else is reaped before s.bell is cleared,
	// and its pid is not handed out again within microseconds.
	if len(s.reqs) == 1 && s.bell != 0 {
		if err := unix.Tgkill(s.bell, s.bell, unix.SIGUSR1); err != nil {
			s.reqs = nil
			s.mu.Unlock()
			return fmt.Errorf("sandbox: ringing the tracer: %w", err)
		}
	}
	s.mu.Unlock()
	select {
	case err := <-r.done:
		return err
	case <-s.done:
		// The tracer fails every queued request before it ends.
		select {
		case err := <-r.done:
			return err
		default:
			return ErrEnded
		}
	}
}

// Freeze stops every guest thread until Thaw, invisibly to the guest: no
// stop signal, so no parent or shell sees a stopped child. The threads
// are held in ptrace stops (PTRACE_INTERRUPT); threads created meanwhile
// stay in their first stop. Stops the tracer collects while frozen
// (syscall traps, creation events, signals) are kept and handled after
// Thaw in the order they came; a task that exits while frozen is reaped
// at once, and its exit reported after the stop it kept, if any.
//
// Freeze returns once every guest thread is in a ptrace stop or gone, or
// is blocked uninterruptibly in the host kernel (a vfork parent, a
// syscall the engine serves by notification); such a thread can no longer
// run guest code: it stops as soon as it leaves the kernel. It returns
// ErrFrozen when the guest is frozen already, ErrEnded after the guest's
// init exited. Safe from any goroutine but the tracer's (not from a
// Handler method).
func (s *Sandbox) Freeze() error { return s.call(s.freeze) }

// Thaw resumes what Freeze stopped: the stops kept meanwhile are handled in
// order, each resuming its task. It returns ErrNotFrozen when the guest is
// not frozen, ErrEnded after the guest's init exited. Safe from any
// goroutine but the tracer's.
func (s *Sandbox) Thaw() error { return s.call(s.thaw) }

// Regs returns the registers of guest thread tid (a host tid). A thread in
// a stop (frozen, or in a trap) is read as it is; a running one is
// interrupted, read and let go on. A thread blocked uninterruptibly in the
// host kernel cannot reach a stop: its registers are then what
// /proc/<tid>/syscall shows (OrigRax and the six arguments, Rsp and Rip;
// the rest zero). Safe from any goroutine but the tracer's.
func (s *Sandbox) Regs(tid int) (abi.Regs, error) {
	var regs abi.Regs
	err := s.call(func() error { return s.regs(tid, &regs) })
	return regs, err
}

// freeze is Freeze on the tracer thread.
func (s *Sandbox) freeze() error {
	if s.frozen {
		return ErrFrozen
	}
	s.frozen = true
	want := map[int]bool{}
	for tid, t := range s.tasks {
		// Not the stub (the engine's, not the guest's, though its stops
		// are kept too), nor tasks stopped already: with a stop in
		// pending, at their first stop (or not there yet), held
		// there for their parent's creation event, or paused for a
		// sibling in a stop of their own.
		if t.stub || t.queued || !t.started || t.held || t.stopped {
			continue
		}
		if ptrace(abi.PTRACE_INTERRUPT, tid, 0, 0) == nil {
			want[tid] = true
		}
	}
	s.settle(want, -1)
	return nil
}

// thaw is Thaw on the tracer thread: the loop handles pending from now on.
func (s *Sandbox) thaw() error {
	if !s.frozen {
		return ErrNotFrozen
	}
	s.frozen = false
	return nil
}

// regs is Regs on the tracer thread.
func (s *Sandbox) regs(tid int, regs *abi.Regs) error {
	if t := s.tasks[tid]; t == nil || t.stub {
		return fmt.Errorf("sandbox: no guest thread %d: %w", tid, unix.ESRCH)
	}
	if getRegs(tid, regs) == nil {
		return nil // in a stop
	}
	if err := ptrace(abi.PTRACE_INTERRUPT, tid, 0, 0); err != nil {
		return fmt.Errorf("sandbox: interrupting thread %d: %w", tid, err)
	}
	// Its stop is kept: the loop handles it (an interrupt stop: resumes
	// it) once this request is done.
	s.settle(map[int]bool{tid: true}, tid)
	if getRegs(tid, regs) == nil {
		return nil
	}
	if _, ok := s.tasks[tid]; !ok {
		return fmt.Errorf("sandbox: thread %d exited: %w", tid, unix.ESRCH)
	}
	return blockedRegs(tid, regs)
}

// settle collects wait statuses of pid (-1: of every child and tracee)
// without blocking, until every task in want has reported a stop or an
// exit, or can run no more guest code without reporting one: it sits
// uninterruptibly in the host kernel (state D), which a PTRACE_INTERRUPT
// does not end (it stops once it leaves the kernel), or it is exiting (a
// zombie leader waiting for its other threads, a namespace's init waiting
// for the rest of the namespace). Stops are kept; exits and the bell's
// statuses are handled as usual.
func (s *Sandbox) settle(want map[int]bool, pid int) {
	var b backoff
	for len(want) > 0 {
		var ws unix.WaitStatus
		tid, err := unix.Wait4(pid, &ws, abi.WALL|abi.WNOTHREAD|unix.WNOHANG, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return // ECHILD: nothing left to wait for
		}
		if tid > 0 {
			delete(want, tid)
			if tid != s.bell && ws.Stopped() {
				s.keep(tid, ws)
			} else {
				s.collect(tid, ws)
			}
			continue
		}
		// Nothing to collect. An interrupted thread stops within
		// microseconds unless the host kernel holds it: look at /proc
		// only once that is likely.
		if b.waited >= time.Millisecond {
			for tid := range want {
				if parked(tid) {
					delete(want, tid)
				}
			}
			if len(want) == 0 {
				return
			}
		}
		b.sleep()
	}
}

// backoff paces a loop that polls for stops: 10 µs, doubling up to 1 ms.
// An interrupted thread stops within microseconds unless the host
// kernel holds it.
type backoff struct{ pause, waited time.Duration }

func (b *backoff) sleep() {
	if b.pause == 0 {
		b.pause = 10 * time.Microsecond
	}
	time.Sleep(b.pause)
	b.waited += b.pause
	b.pause = min(2*b.pause, time.Millisecond)
}

// parked reports whether host thread tid can run no more guest code
// without first reporting a stop or its exit: it sits uninterruptibly in
// the host kernel (state D), which a PTRACE_INTERRUPT does not end, or it
// is exiting or gone.
func parked(tid int) bool {
	st, flags := hostState(tid)
	return st == 'D' || ending(st, flags)
}

// ending reports whether a thread of that hostState is exiting or gone.
func ending(st byte, flags uint64) bool {
	return st == 'Z' || st == 'X' || st == 0 || flags&pfExiting != 0
}

// pfExiting is the kernel's PF_EXITING task flag.
const pfExiting = 0x4

// hostState returns the state letter and the kernel's flags of host thread
// tid (/proc/<tid>/stat), or 0 if there is no such thread.
func hostState(tid int) (state byte, flags uint64) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(tid) + "/stat")
	if err != nil {
		return 0, 0
	}
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, 0
	}
	// state ppid pgrp session tty_nr tpgid flags …
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 7 || len(f[0]) != 1 {
		return 0, 0
	}
	flags, _ = strconv.ParseUint(f[6], 10, 64)
	return f[0][0], flags
}

// blockedRegs fills regs from /proc/<tid>/syscall for a thread blocked in
// a system call: "nr arg1 … arg6 sp pc" (or "-1 sp pc" when blocked
// elsewhere in the kernel).
func blockedRegs(tid int, regs *abi.Regs) error {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(tid) + "/syscall")
	if err != nil {
		return fmt.Errorf("sandbox: registers of thread %d: %w", tid, err)
	}
	f := strings.Fields(string(b))
	if len(f) != 9 && len(f) != 3 {
		return fmt.Errorf("sandbox: registers of thread %d: not stopped (/proc/%d/syscall: %q)", tid, tid, b)
	}
	var v [9]uint64
	for i, s := range f {
		n, err := strconv.ParseInt(s, 0, 64)
		if err != nil {
			u, uerr := strconv.ParseUint(s, 0, 64)
			if uerr != nil {
				return fmt.Errorf("sandbox: registers of thread %d: /proc/%d/syscall: %w", tid, tid, err)
			}
			n = int64(u)
		}
		v[i] = uint64(n)
	}
	*regs = abi.Regs{OrigRax: v[0]}
	if len(f) == 9 {
		regs.Rdi, regs.Rsi, regs.Rdx, regs.R10, regs.R8, regs.R9 = v[1], v[2], v[3], v[4], v[5], v[6]
	}
	regs.Rsp, regs.Rip = v[len(f)-2], v[len(f)-1]
	return nil
}
