package sandbox

import (
	"github.com/umltools/umltools/internal/abi"
)

// Handler is the seam between the sandbox and the kernel above it. The
// tracer calls it on its own locked thread, one stop at a time, so a
// handler needs no locking for state only the tracer touches. It must not
// block: anything that waits belongs to a host fd the guest blocks on.
type Handler interface {
	// Syscall is called at every traced syscall (a PTRACE_EVENT_SECCOMP
	// stop). regs are the task's registers: OrigRax is the number, Rdi,
	// Rsi, Rdx, R10, R8, R9 the arguments. A handler may change regs
	// (they are written back when changed) and says how to go on.
	// Returning Native after inspecting pointer arguments decides nothing:
	// another thread can change that memory before the host reads it.
	Syscall(t *Task, regs *abi.Regs) Action
	// SyscallExit is called at the syscall-exit stop of a syscall for
	// which Syscall returned NativeExit; regs.Rax holds the result and
	// may be changed.
	SyscallExit(t *Task, regs *abi.Regs)
	// Event reports a process event: a new task, an exec, a signal about
	// to be delivered, or an exit.
	Event(t *Task, ev Event)
}

// actionKind says how a trapped syscall goes on.
type actionKind uint8

const (
	actNative actionKind = iota
	actNativeExit
	actEmulate
	actKill
)

// Action is a Handler's answer for one syscall.
type Action struct {
	kind actionKind
	val  int64
}

// Native lets the (possibly rewritten) syscall run on the host.
func Native() Action { return Action{kind: actNative} }

// NativeExit lets the syscall run on the host and calls SyscallExit when it
// returns (for fd-creating syscalls whose result the kernel records).
func NativeExit() Action { return Action{kind: actNativeExit} }

// Emulate skips the syscall and makes it return v (a result >= 0, or
// -errno).
func Emulate(v int64) Action { return Action{kind: actEmulate, val: v} }

// Fail skips the syscall and makes it fail with errno e.
func Fail(e int) Action { return Action{kind: actEmulate, val: -int64(e)} }

// Result says whether the action lets the syscall run on the host, and
// otherwise the value it makes the syscall return.
func (a Action) Result() (native bool, val int64) {
	return a.kind == actNative || a.kind == actNativeExit, a.val
}

// KillProcess kills the task's whole thread group with SIGKILL.
func KillProcess() Action { return Action{kind: actKill} }

// EventKind names a process event.
type EventKind uint8

// Process events.
const (
	// EvClone: t created Child by fork, vfork or clone. Flags holds the
	// clone flags (SIGCHLD for fork, CLONE_VM|CLONE_VFORK|SIGCHLD for
	// vfork). Delivered before the child runs.
	EvClone EventKind = iota + 1
	// EvExec: t completed an execve. OldTid is its tid before the exec,
	// different from t.Tid when a non-leader thread exec'd (the other
	// threads are gone; their EvExit events follow or preceded it). The
	// first event of a sandbox is the EvExec of its init (Init set).
	EvExec
	// EvSignal: signal Sig is about to be delivered to t.
	EvSignal
	// EvExit: t is gone. Status is its wait status.
	EvExit
)

// Event describes one process event.
type Event struct {
	Kind   EventKind
	Child  *Task  // EvClone
	Flags  uint64 // EvClone
	OldTid int    // EvExec
	Init   bool   // EvExec: the stub's exec of the guest init
	Sig    int    // EvSignal
	Status int    // EvExit: the raw wait status
}

// PassThrough is a Handler that lets every syscall run natively and ignores
// events. Embed it to override only what you serve.
type PassThrough struct{}

// Syscall lets the syscall run.
func (PassThrough) Syscall(*Task, *abi.Regs) Action { return Native() }

// SyscallExit does nothing.
func (PassThrough) SyscallExit(*Task, *abi.Regs) {}

// Event does nothing.
func (PassThrough) Event(*Task, Event) {}
