package sandbox

import (
	"slices"
	"time"

	"golang.org/x/sys/unix"

	"github.com/umltools/umltools/internal/abi"
)

// Siblings: a handler that writes guest memory the host kernel reads
// afterwards (an exec's rewritten path and argv) first stops the caller's
// other threads, so that none can change what was written before the host
// reads it (TOCTOU). A stopped sibling is paused: the tracer resumes none
// of its stops until it is released, and Freeze leaves it alone.

// StopSiblings stops every other thread of t's thread group and returns a
// function that releases them. Call it from a Handler method (the tracer
// thread) and call the returned function before the handler returns.
// Stops the siblings report meanwhile are kept and handled after the
// current one. A sibling held in the host kernel (waiting for the
// engine's answer to a syscall, say) is not waited for: it stops before
// it runs guest code again, and stays stopped until released.
//
// While the sandbox is frozen (a Handler's EvExit then), no guest code
// runs and StopSiblings does nothing.
func (t *Task) StopSiblings() (release func()) {
	paused := t.pauseSiblings()
	return func() { t.sb.release(paused) }
}

// HoldSiblings stops t's other threads like StopSiblings, but keeps them
// stopped until the host has run t's current syscall: they are released
// at t's next stop (its exec event, or the syscall's exit) or its exit.
// Call it from Handler.Syscall before writing what the host will read
// (RedirectExec, RewriteExec). If the handler's action does not let the
// syscall run on the host, they are released when the handler returns.
func (t *Task) HoldSiblings() {
	t.holding = append(t.holding, t.pauseSiblings()...)
}

// pauseSiblings pauses every other thread of t's thread group and returns
// them: running ones are interrupted and their interrupt stops collected
// (other stops they report first are kept); ones already in a kept stop,
// or not started yet, are only marked.
func (t *Task) pauseSiblings() []*Task {
	s := t.sb
	if s == nil || s.frozen {
		return nil
	}
	var paused []*Task
	want := map[int]*Task{}
	for _, o := range s.tasks {
		if o == t || o.Tgid != t.Tgid || o.paused || o.stub {
			continue
		}
		switch {
		case o.held || o.queued || !o.started:
			// Stopped already, with its next step in the tracer's
			// hands (its creator's event, a kept stop, its first
			// stop), which waits until the release.
		case ptrace(abi.PTRACE_INTERRUPT, o.Tid, 0, 0) == nil:
			want[o.Tid] = o
		default:
			continue // gone
		}
		o.paused = true
		paused = append(paused, o)
	}
	var b backoff
	for len(want) > 0 {
		for tid, o := range want {
			var ws unix.WaitStatus
			got, err := unix.Wait4(tid, &ws, abi.WALL|abi.WNOTHREAD|unix.WNOHANG, nil)
			switch {
			case err == unix.EINTR:
			case err != nil: // gone
				delete(want, tid)
			case got == tid:
				delete(want, tid)
				if ws == interruptStop {
					o.stopped = true // ours: the release resumes it
				} else {
					// Another stop (or its exit) came first: kept,
					// and handled after the release.
					s.keep(tid, ws)
				}
			case b.waited >= time.Millisecond && parked(tid):
				// Held in the host kernel, for example waiting for
				// the engine's answer to a syscall, which may need
				// what the caller holds: the interrupt is pending,
				// so it stops before it runs guest code again, and
				// that stop is not resumed before the release.
				delete(want, tid)
			}
		}
		if len(want) > 0 {
			b.sleep()
		}
	}
	return paused
}

// release lets paused tasks go on: one in a stop nobody else resumes is
// resumed (or, frozen meanwhile, its stop is kept for after Thaw); the
// kept stops of the others are handled in turn from now on.
func (s *Sandbox) release(paused []*Task) {
	for _, o := range paused {
		if s.tasks[o.Tid] != o || !o.paused {
			continue // gone (its tid may be someone else's now)
		}
		o.paused = false
		if !o.stopped {
			continue
		}
		o.stopped = false
		if s.frozen {
			s.keep(o.Tid, interruptStop)
			continue
		}
		resume(o.Tid, 0)
	}
}

// releaseHeld releases the siblings t holds (HoldSiblings).
func (s *Sandbox) releaseHeld(t *Task) {
	if len(t.holding) > 0 {
		held := t.holding
		t.holding = nil
		s.release(held)
	}
}

// nextPending takes the first kept stop or exit whose task is not paused.
func (s *Sandbox) nextPending() (waitEvent, bool) {
	for i, ev := range s.pending {
		t := s.tasks[ev.tid]
		if t != nil && t.paused {
			continue
		}
		if i == 0 {
			s.pending = s.pending[1:]
		} else {
			s.pending = slices.Delete(s.pending, i, i+1)
		}
		if t != nil {
			t.queued = false
		}
		return ev, true
	}
	return waitEvent{}, false
}
