package sandbox

import (
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/umltools/umltools/internal/abi"
)

// Orphans: a new task is held at its first stop until its creator's
// fork, vfork or clone event says what it is (tracer.go). Linux skips
// that event when the creator has a fatal signal pending by then (it
// was killed, or another of its threads called exit_group or exec,
// between making the child and reporting it), so such a child would
// stay in its first stop for ever, holding whatever it inherited (the
// write end of a pipe someone reads to its end, say). A thread of a
// dying group dies with it; a new process does not.
//
// A held process whose creation nobody can report any more has never
// run: the sandbox kills it, which is what the fatal signal does to a
// fork it reaches a moment earlier. Its exit is kept as an early one,
// so a creation event that comes after all still reports both.

// orphanAge is how long a task is held before it is looked at: a
// creation event comes microseconds after the child's first stop, even
// on a loaded host.
const orphanAge = 250 * time.Millisecond

// hold keeps t, a new task, in its first stop until its creation event,
// and has the orphan check look at it later.
func (s *Sandbox) hold(t *Task) {
	t.held, t.heldAt = true, time.Now()
	if !s.orphanCheck {
		s.checkOrphansLater()
	}
}

// checkOrphansLater has killOrphans run in orphanAge.
func (s *Sandbox) checkOrphansLater() {
	s.orphanCheck = true
	time.AfterFunc(orphanAge, func() { s.call(s.killOrphans) })
}

// killOrphans kills each held process no task can report the creation
// of any more (a control request: on the tracer thread), and looks again
// later while some are still held.
func (s *Sandbox) killOrphans() error {
	s.orphanCheck = false
	again := false
	for _, h := range s.tasks {
		if !h.held {
			continue
		}
		if s.frozen || time.Since(h.heldAt) < orphanAge || !s.orphaned(h) {
			again = true
			continue
		}
		h.held = false
		h.Signal(unix.SIGKILL) // its exit is reported as an early one
	}
	if again {
		s.checkOrphansLater()
	}
	return nil
}

// orphaned reports whether no task can still report h's creation: h is
// a process (a thread dies with its group) and none of the tasks that
// could have made it (its parent's threads and, for CLONE_PARENT, their
// siblings' threads) has the event on its way: one kept to be handled,
// or one in a fork, vfork, clone or clone3 it has not reported yet.
func (s *Sandbox) orphaned(h *Task) bool {
	ppid, tgid := hostIDs(h.Tid)
	if tgid != h.Tid || ppid <= 0 {
		return false // a thread, or gone: its exit settles it
	}
	for _, t := range s.tasks {
		if t.held || t == h {
			continue
		}
		if t.Tgid != ppid {
			if p, _ := hostIDs(t.Tgid); p != ppid {
				continue
			}
		}
		if t.queued {
			return false
		}
		if ending(hostState(t.Tid)) {
			continue
		}
		switch nr, known := hostSyscall(t.Tid); {
		case !known: // running: perhaps between making h and reporting it
			return false
		case nr == abi.SYS_CLONE || nr == abi.SYS_FORK || nr == abi.SYS_VFORK || nr == abi.SYS_CLONE3:
			return false
		}
	}
	return true
}

// hostIDs returns the parent pid and the thread group of host thread tid
// (/proc/<tid>/status), or 0s when it is gone.
func hostIDs(tid int) (ppid, tgid int) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(tid) + "/status")
	if err != nil {
		return 0, 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		k, v, _ := strings.Cut(l, ":")
		switch k {
		case "Tgid":
			tgid, _ = strconv.Atoi(strings.TrimSpace(v))
		case "PPid":
			ppid, _ = strconv.Atoi(strings.TrimSpace(v))
		}
	}
	return ppid, tgid
}

// hostSyscall returns the number of the system call host thread tid is
// blocked in (-1 when blocked outside any), and false when that cannot be
// told: the thread runs, or is gone.
func hostSyscall(tid int) (uint64, bool) {
	var regs abi.Regs
	if blockedRegs(tid, &regs) != nil {
		return 0, false
	}
	return regs.OrigRax, true
}
