package sandbox

import (
	"fmt"
	"io"
	"runtime"
	"slices"

	"golang.org/x/sys/unix"

	"github.com/umltools/umltools/internal/abi"
)

// tracer is the sandbox's ptrace loop. It runs on one OS thread for its
// whole life (ptrace requests are bound to the attaching thread), starts
// the stub and the bell from that thread, and serves stops until no guest
// task is left. The thread is never unlocked, so it exits with the
// goroutine.
func (s *Sandbox) tracer() {
	runtime.LockOSThread()
	defer close(s.done)
	defer s.endControl()
	s.tracerTid = unix.Gettid()
	if s.cfg.Pin {
		var set unix.CPUSet
		set.Set(s.cfg.CPU)
		if err := unix.SchedSetaffinity(0, &set); err != nil {
			s.err = fmt.Errorf("sandbox: pinning to CPU %d: %w", s.cfg.CPU, err)
			s.started <- s.err
			return
		}
	}
	statR, err := s.spawn()
	s.started <- err
	if err != nil {
		s.err = err
		return
	}
	s.statR = statR
	defer statR.Close()
	defer func() {
		if s.notifs != nil {
			<-s.notifs
		}
	}()
	s.startBell()
	for {
		if !s.frozen {
			// Stops collected out of turn come first, but not those of
			// paused tasks (see HoldSiblings).
			if ev, ok := s.nextPending(); ok {
				s.handle(&ev)
				continue
			}
		}
		// __WNOTHREAD: only this thread's children and tracees, so the
		// engine's other children (os/exec elsewhere) are never reaped
		// here.
		var ws unix.WaitStatus
		tid, err := unix.Wait4(-1, &ws, abi.WALL|abi.WNOTHREAD, nil)
		if err == unix.EINTR {
			continue
		}
		if err == unix.ECHILD {
			if len(s.pending) > 0 {
				// Every task is gone while frozen (or paused): what
				// was kept is handled now, so the handler sees every
				// exit.
				s.frozen = false
				for _, t := range s.tasks {
					t.paused, t.holding = false, nil
				}
				continue
			}
			break
		}
		if err != nil {
			s.err = fmt.Errorf("sandbox: wait4: %w", err)
			unix.Kill(s.Pid, unix.SIGKILL)
			break
		}
		s.collect(tid, ws)
	}
}

// collect takes one wait status from wait4: the bell's, an exit, or a stop
// (handled now, or kept while frozen).
func (s *Sandbox) collect(tid int, ws unix.WaitStatus) {
	if tid == s.bell {
		s.bellEvent(ws)
		return
	}
	if ws.Exited() || ws.Signaled() {
		if tid == s.Pid {
			// The guest is ending: no more control requests.
			s.stopControl(ErrEnded)
		}
		if t := s.tasks[tid]; t != nil && t.queued {
			// Reaped now, reported after the stop it has kept.
			s.pending = append(s.pending, waitEvent{tid: tid, ws: ws})
			return
		}
		s.exited(tid, ws)
		return
	}
	if !ws.Stopped() {
		return
	}
	if s.frozen {
		s.keep(tid, ws)
		return
	}
	if s.stopped(tid, uint32(ws), nil) {
		s.execed = true
	}
}

// handle handles a wait status taken from pending.
func (s *Sandbox) handle(ev *waitEvent) {
	switch {
	case ev.ws.Exited() || ev.ws.Signaled():
		s.exited(ev.tid, ev.ws)
	case ev.ws.Stopped():
		if s.stopped(ev.tid, uint32(ev.ws), ev) {
			s.execed = true
		}
	}
}

// exited handles the exit of tid.
func (s *Sandbox) exited(tid int, ws unix.WaitStatus) {
	t := s.tasks[tid]
	delete(s.tasks, tid)
	if t != nil {
		s.releaseHeld(t)
	}
	switch {
	case t == nil || !t.announced:
		// A new task killed before its parent's creation event
		// (perhaps before its first stop): report both when that event
		// comes.
		s.early[tid] = int(ws)
	case t != nil && !t.stub:
		s.handler.Event(t, Event{Kind: EvExit, Status: int(ws)})
	}
	if tid == s.Pid {
		s.status = ws
		if t != nil && t.stub && !s.execed {
			msg, _ := io.ReadAll(s.statR)
			s.err = fmt.Errorf("sandbox: %w: %s", ErrExec, msg)
		}
	}
}

// stopped handles one ptrace stop of tid; it reports whether it was the
// stub's exec into the guest. kept is the stop's record when it was
// collected earlier (nil for a stop just collected).
func (s *Sandbox) stopped(tid int, status uint32, kept *waitEvent) (stubExec bool) {
	sig := int(status>>8) & 0xff
	event := int(status >> 16)
	t := s.tasks[tid]
	if t == nil {
		// A new task whose creation event has not been seen yet.
		t = &Task{Tid: tid, Tgid: tid, sb: s}
		s.tasks[tid] = t
	}
	s.releaseHeld(t) // the syscall it held its siblings for has run
	switch {
	case event == abi.PTRACE_EVENT_STOP:
		switch {
		case !t.started:
			t.started = true
			if !t.announced {
				s.hold(t) // resumed once its parent's event is handled
				return false
			}
			s.resumeUnlessPaused(t)
		case isStopSignal(sig):
			// Group stop: stay stopped but keep reporting (SIGCONT).
			ptrace(abi.PTRACE_LISTEN, tid, 0, 0)
		default:
			s.resumeUnlessPaused(t)
		}
	case sig == int(unix.SIGTRAP) && event == abi.PTRACE_EVENT_SECCOMP:
		s.syscall(t)
	case sig == int(unix.SIGTRAP) && (event == abi.PTRACE_EVENT_FORK ||
		event == abi.PTRACE_EVENT_VFORK || event == abi.PTRACE_EVENT_CLONE):
		s.cloned(t, event, kept)
	case sig == int(unix.SIGTRAP) && event == abi.PTRACE_EVENT_EXEC:
		var old uintptr
		if kept != nil {
			old = kept.msg
		} else {
			ptrace(abi.PTRACE_GETEVENTMSG, tid, 0, uintptrOf(&old))
		}
		if int(old) != tid {
			// A non-leader thread exec'd and took over the leader's tid.
			// Stops the old leader reported before it died (kept while
			// it was paused) would now be taken for the new leader's:
			// they are dropped. A child its kept fork event would have
			// announced is never resumed, and is killed as an orphan,
			// as if the exec had come first.
			s.dropStops(tid)
			if ot := s.tasks[int(old)]; ot != nil {
				delete(s.tasks, int(old))
				ot.Tid, ot.nsTid = tid, 0
				s.tasks[tid] = ot
				t = ot
				s.releaseHeld(t) // the exec has run: its siblings are gone
			}
		}
		t.started, t.announced = true, true
		stubExec = t.stub
		t.stub = false
		s.handler.Event(t, Event{Kind: EvExec, OldTid: int(old), Init: stubExec})
		resume(tid, 0)
	case sig == int(unix.SIGTRAP)|0x80:
		// Syscall-exit stop after NativeExit.
		if t.inSyscall {
			t.inSyscall = false
			var regs abi.Regs
			if getRegs(tid, &regs) == nil {
				save := regs
				s.handler.SyscallExit(t, &regs)
				if regs != save {
					setRegs(tid, &regs)
				}
			}
		}
		resume(tid, 0)
	case event != 0:
		resume(tid, 0)
	default:
		// Signal-delivery stop: deliver the signal.
		t.started = true
		if !t.stub {
			s.handler.Event(t, Event{Kind: EvSignal, Sig: sig})
		}
		resume(tid, sig)
	}
	return stubExec
}

// syscall serves a PTRACE_EVENT_SECCOMP stop.
func (s *Sandbox) syscall(t *Task) {
	var regs abi.Regs
	if getRegs(t.Tid, &regs) != nil {
		return // gone (ESRCH): its exit is reported by wait4
	}
	if t.stub {
		// The engine's own stub: its exec and runtime calls run. At its
		// exec the notification listener (if any) is taken over.
		if (regs.OrigRax == abi.SYS_EXECVE || regs.OrigRax == abi.SYS_EXECVEAT) && len(s.notify) > 0 && s.notifs == nil {
			if err := s.takeListener(t.Tid); err != nil {
				s.err = err
				unix.Kill(s.Pid, unix.SIGKILL)
			}
		}
		resume(t.Tid, 0)
		return
	}
	save := regs
	act, ok := enforce(&regs)
	if !ok {
		act = s.handler.Syscall(t, &regs)
	}
	switch act.kind {
	case actEmulate:
		regs.OrigRax = ^uint64(0) // skip the syscall
		regs.Rax = uint64(act.val)
		setRegs(t.Tid, &regs)
	case actKill:
		unix.Kill(t.Tgid, unix.SIGKILL)
	default:
		if regs != save {
			setRegs(t.Tid, &regs)
		}
	}
	native := act.kind == actNative || act.kind == actNativeExit
	if !native {
		s.releaseHeld(t) // the host does not run the syscall
	}
	if act.kind == actNativeExit || native && len(t.holding) > 0 {
		// Stop again when the syscall returns: to call SyscallExit,
		// or to release the siblings once the host has run it (an exec
		// that succeeds stops first at its exec event).
		t.inSyscall = act.kind == actNativeExit
		ptrace(abi.PTRACE_SYSCALL, t.Tid, 0, 0)
		return
	}
	resume(t.Tid, 0)
}

// resumeUnlessPaused resumes t from an interrupt stop, or keeps it
// stopped for the release when it is paused.
func (s *Sandbox) resumeUnlessPaused(t *Task) {
	if t.paused {
		t.stopped = true
		return
	}
	resume(t.Tid, 0)
}

// cloned handles a fork, vfork or clone event of parent t (kept: its
// record, when collected earlier).
func (s *Sandbox) cloned(t *Task, event int, kept *waitEvent) {
	var msg uintptr
	if kept != nil {
		if !kept.msgOK {
			return
		}
		msg = kept.msg
	} else if ptrace(abi.PTRACE_GETEVENTMSG, t.Tid, 0, uintptrOf(&msg)) != nil {
		return
	}
	ctid := int(msg)
	var flags uint64
	switch event {
	case abi.PTRACE_EVENT_FORK:
		flags = uint64(unix.SIGCHLD)
	case abi.PTRACE_EVENT_VFORK:
		flags = abi.CLONE_VM | abi.CLONE_VFORK | uint64(unix.SIGCHLD)
	default:
		var regs abi.Regs
		if kept != nil {
			flags = kept.flags
		} else if getRegs(t.Tid, &regs) == nil {
			flags = regs.Rdi
		}
	}
	c := s.tasks[ctid]
	status, gone := s.early[ctid]
	delete(s.early, ctid)
	if c == nil {
		c = &Task{Tid: ctid, sb: s}
		if !gone {
			s.tasks[ctid] = c
		}
	}
	c.Tgid = ctid
	if flags&abi.CLONE_THREAD != 0 {
		c.Tgid = t.Tgid
	}
	c.stub = t.stub
	if !t.stub {
		s.handler.Event(t, Event{Kind: EvClone, Child: c, Flags: flags})
		if gone {
			s.handler.Event(c, Event{Kind: EvExit, Status: status})
		}
	}
	c.announced = true
	if c.held {
		c.held = false
		resume(ctid, 0)
	}
	resume(t.Tid, 0)
}

// resume continues a stopped task, delivering sig if non-zero. ESRCH (the
// task was killed meanwhile) is expected and ignored.
func resume(tid, sig int) {
	ptrace(abi.PTRACE_CONT, tid, 0, uintptr(sig))
}

func isStopSignal(sig int) bool {
	switch unix.Signal(sig) {
	case unix.SIGSTOP, unix.SIGTSTP, unix.SIGTTIN, unix.SIGTTOU:
		return true
	}
	return false
}

// enforce applies the sandbox's own invariants to a trapped syscall before
// the handler sees it, whatever the handler does: no new namespaces by
// clone, no CLONE_UNTRACED (a child that escapes the tracer), and no guest
// seccomp listener (a guest USER_NOTIF filter outranks our TRACE, and its
// supervisor could let a host path syscall through). It reports whether it
// decided; it may also rewrite regs and leave the decision to the handler.
func enforce(regs *abi.Regs) (Action, bool) {
	switch regs.OrigRax {
	case abi.SYS_CLONE:
		if regs.Rdi&(nsCloneFlags&^abi.CLONE_UNTRACED) != 0 {
			return Fail(abi.EPERM), true
		}
		regs.Rdi &^= abi.CLONE_UNTRACED
	case abi.SYS_SECCOMP:
		if regs.Rdi == abi.SECCOMP_SET_MODE_FILTER && regs.Rsi&abi.SECCOMP_FILTER_FLAG_NEW_LISTENER != 0 {
			return Fail(abi.EINVAL), true
		}
	}
	return Action{}, false
}

// waitEvent is a wait status collected out of order. The message of a
// creation or exec event (and a clone's flags) is read when the stop is
// collected: the task may be gone when the stop is handled.
type waitEvent struct {
	tid   int
	ws    unix.WaitStatus
	msg   uintptr // PTRACE_GETEVENTMSG
	msgOK bool
	flags uint64 // clone flags of a PTRACE_EVENT_CLONE
}

// keep puts a stop (or, from StopSiblings, an exit) of tid in pending, to
// be handled in turn. The stopped task stays stopped until then.
func (s *Sandbox) keep(tid int, ws unix.WaitStatus) {
	ev := waitEvent{tid: tid, ws: ws}
	t := s.tasks[tid]
	if ws.Stopped() {
		switch event := uint32(ws) >> 16; event {
		case abi.PTRACE_EVENT_FORK, abi.PTRACE_EVENT_VFORK, abi.PTRACE_EVENT_CLONE, abi.PTRACE_EVENT_EXEC:
			ev.msgOK = ptrace(abi.PTRACE_GETEVENTMSG, tid, 0, uintptrOf(&ev.msg)) == nil
			var regs abi.Regs
			if event == abi.PTRACE_EVENT_CLONE && getRegs(tid, &regs) == nil {
				ev.flags = regs.Rdi
			}
		}
		if t == nil {
			// A new task's first stop: known from now on, so that its
			// exit waits behind this stop.
			t = &Task{Tid: tid, Tgid: tid, sb: s}
			s.tasks[tid] = t
		}
	}
	if t != nil {
		t.queued = true
	}
	s.pending = append(s.pending, ev)
}

// dropStops removes the kept stops of tid from pending; its kept exit,
// if any, stays.
func (s *Sandbox) dropStops(tid int) {
	s.pending = slices.DeleteFunc(s.pending, func(ev waitEvent) bool {
		return ev.tid == tid && ev.ws.Stopped()
	})
}

// interruptStop is the wait status of a PTRACE_INTERRUPT stop.
const interruptStop = unix.WaitStatus(abi.PTRACE_EVENT_STOP<<16 | int(unix.SIGTRAP)<<8 | 0x7f)
