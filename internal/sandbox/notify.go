package sandbox

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/umltools/umltools/internal/abi"
)

// Notifier is implemented by Handlers that serve the syscalls listed in
// Config.Notify. Notify runs on the sandbox's notification goroutine, not
// on the tracer thread: state it shares with Syscall and Event needs a
// lock. It must answer n exactly once (Return, Fail, AddFd or Continue);
// an unanswered notification fails with ENOSYS.
type Notifier interface {
	Notify(n *Notification)
}

// Notification is one syscall stopped in seccomp user notification.
type Notification struct {
	// ID identifies the notification to the kernel.
	ID uint64
	// Pid is the host tid of the calling thread.
	Pid int
	// Nr, Args and IP are the syscall number, arguments and address.
	Nr   int
	Args [6]uint64
	IP   uint64

	listener int
	answered bool
	cpus     *unix.CPUSet // the notification thread's CPUs (see AddFd); nil: not held
}

// ErrGone is returned when the notifying thread no longer waits (killed,
// or interrupted by a signal): the answer is dropped.
var ErrGone = errors.New("notification no longer valid")

func (n *Notification) ioctl(req uintptr, arg unsafe.Pointer) error {
	_, _, e := unix.RawSyscall(unix.SYS_IOCTL, uintptr(n.listener), req, uintptr(arg))
	if e == unix.ENOENT {
		return ErrGone
	}
	if e != 0 {
		return e
	}
	return nil
}

// Valid reports whether the thread still waits for this notification. Call
// it after reading guest memory and before acting on what was read: the pid
// could otherwise have been reused.
func (n *Notification) Valid() bool {
	id := n.ID
	return n.ioctl(abi.SECCOMP_IOCTL_NOTIF_ID_VALID, unsafe.Pointer(&id)) == nil
}

// Task returns a Task view of the calling thread for memory access
// (ReadMem, ReadString, WriteMem).
func (n *Notification) Task() *Task { return &Task{Tid: n.Pid, Tgid: n.Pid} }

func (n *Notification) send(val int64, errno int, flags uint32) error {
	n.answered = true
	r := abi.SeccompNotifResp{ID: n.ID, Val: val, Error: int32(-errno), Flags: flags}
	for {
		// The kernel takes the listener's lock interruptibly: EINTR
		// (a Go runtime signal on this thread) means nothing was sent.
		err := n.ioctl(abi.SECCOMP_IOCTL_NOTIF_SEND, unsafe.Pointer(&r))
		if err != unix.EINTR {
			return err
		}
	}
}

// Detach hands the answer of n to another goroutine: the returned
// Notification answers the same syscall (Return, Fail or Continue; not
// AddFd, which must run on the listener's thread), and n counts as
// answered for the notification loop, which goes on receiving. The
// calling thread stays stopped until the detached copy answers, or a
// signal interrupts the syscall (Valid then reports false and the answer
// is dropped). Use it for syscalls whose service waits, so that one
// waiting guest does not stall the others.
func (n *Notification) Detach() *Notification {
	d := *n
	d.answered = false
	n.answered = true
	return &d
}

// Return answers the syscall with result v (>= 0).
func (n *Notification) Return(v int64) error { return n.send(v, 0, 0) }

// Fail answers the syscall with errno e.
func (n *Notification) Fail(e int) error { return n.send(0, e, 0) }

// Continue lets the syscall run on the host as the guest issued it. The
// kernel reads pointer arguments again afterwards, so this is never a
// security decision on those (TOCTOU); use it for pass-through only.
func (n *Notification) Continue() error {
	return n.send(0, 0, abi.SECCOMP_USER_NOTIF_FLAG_CONTINUE)
}

// AddFd installs a copy of f in the calling process at its lowest free fd
// and answers the syscall with that number: the way open-like syscalls
// return an engine-made object.
//
// The calling thread installs the fd itself: ADDFD wakes it, and it
// wakes this thread back, with ordinary wake-ups (SEND's are
// synchronous). This thread runs on the CPU the caller last ran on, so
// the scheduler sends the caller to another CPU, and on a virtual machine
// each wake-up of a halted vCPU costs tens of µs (an open of a cached
// file took 60 µs on our 2-CPU VMs, 19 µs with everything on one CPU).
// So, where the guest waits for its answer killably (Linux 6.6 here:
// WAIT_KILLABLE_RECV, so no signal can end the syscall between the
// install and the answer), both threads are held on this CPU for the
// ADDFD, each wake-up is a switch on one CPU, and both CPU sets are back
// before the answer (SEND) lets the caller go on: the guest never runs
// with the changed set.
func (n *Notification) AddFd(f *os.File, cloexec bool) (int, error) {
	a := abi.SeccompNotifAddfd{ID: n.ID, Srcfd: uint32(f.Fd())}
	if cloexec {
		a.NewfdFlags = unix.O_CLOEXEC
	}
	var guest unix.CPUSet
	held := n.cpus != nil && n.holdOnThisCPU(&guest)
	if !held {
		// Install and answer at once (ADDFD|SEND).
		n.answered = true
		a.Flags = abi.SECCOMP_ADDFD_FLAG_SEND
	}
	r, _, e := unix.RawSyscall(unix.SYS_IOCTL, uintptr(n.listener), abi.SECCOMP_IOCTL_NOTIF_ADDFD, uintptr(unsafe.Pointer(&a)))
	if held {
		unix.SchedSetaffinity(n.Pid, &guest)
		unix.SchedSetaffinity(0, n.cpus)
	}
	if e == unix.ENOENT {
		n.answered = true
		return -1, ErrGone
	}
	if e != 0 {
		if held {
			n.Fail(int(e)) // nothing was installed
		}
		return -1, fmt.Errorf("seccomp ADDFD: %w", e)
	}
	if held {
		if err := n.Return(int64(r)); err != nil {
			return -1, err // killed meanwhile
		}
	}
	return int(r), nil
}

// holdOnThisCPU restricts the calling thread and this thread to the CPU
// this thread runs on, and returns the calling thread's CPU set in old. It
// reports false, with nothing changed, when it could not.
func (n *Notification) holdOnThisCPU(old *unix.CPUSet) bool {
	var cpu uint32
	if _, _, e := unix.RawSyscall(unix.SYS_GETCPU, uintptr(unsafe.Pointer(&cpu)), 0, 0); e != 0 {
		return false
	}
	if unix.SchedGetaffinity(n.Pid, old) != nil || !old.IsSet(int(cpu)) {
		return false // gone, or the guest keeps itself off this CPU
	}
	var one unix.CPUSet
	one.Set(int(cpu))
	if unix.SchedSetaffinity(n.Pid, &one) != nil {
		return false
	}
	if unix.SchedSetaffinity(0, &one) != nil {
		unix.SchedSetaffinity(n.Pid, old)
		return false
	}
	return true
}

// AddFdAt installs a copy of f at fd number target in the calling process
// (replacing what is there, as dup2 does) without answering the syscall.
func (n *Notification) AddFdAt(f *os.File, target int, cloexec bool) error {
	a := abi.SeccompNotifAddfd{ID: n.ID, Flags: abi.SECCOMP_ADDFD_FLAG_SETFD, Srcfd: uint32(f.Fd()), Newfd: uint32(target)}
	if cloexec {
		a.NewfdFlags = unix.O_CLOEXEC
	}
	return n.ioctl(abi.SECCOMP_IOCTL_NOTIF_ADDFD, unsafe.Pointer(&a))
}

// takeListener copies the stub's listener fd into the engine (it is the
// stub's only "anon_inode:seccomp notify" fd) and starts the notification
// loop.
func (s *Sandbox) takeListener(tid int) error {
	dir := "/proc/" + strconv.Itoa(tid) + "/fd"
	ents, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("sandbox: listener: %w", err)
	}
	num := -1
	for _, e := range ents {
		if l, err := os.Readlink(dir + "/" + e.Name()); err == nil && l == "anon_inode:seccomp notify" {
			num, _ = strconv.Atoi(e.Name())
		}
	}
	if num < 0 {
		return fmt.Errorf("sandbox: the stub has no seccomp listener")
	}
	pidfd, err := unix.PidfdOpen(tid, 0)
	if err != nil {
		return fmt.Errorf("sandbox: pidfd_open of stub: %w", err)
	}
	defer unix.Close(pidfd)
	fd, err := unix.PidfdGetfd(pidfd, num, 0)
	if err != nil {
		return fmt.Errorf("sandbox: pidfd_getfd of the listener: %w", err)
	}
	unix.CloseOnExec(fd)
	// Synchronous wake-ups (Linux 6.6): each trap is a direct switch to
	// the engine and back. Older kernels refuse the flag; traps then
	// take ordinary wake-ups.
	_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), abi.SECCOMP_IOCTL_NOTIF_SET_FLAGS, abi.SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP)
	s.notifs = make(chan struct{})
	go s.notifyLoop(fd, s.handler.(Notifier), e == 0)
	return nil
}

// notifyLoop receives notifications until no guest process uses the filter
// any more (the listener then polls POLLHUP).
func (s *Sandbox) notifyLoop(fd int, h Notifier, recvWakes bool) {
	// One thread, with the Go runtime's preemption signal blocked: an
	// ADDFD ioctl interrupted by SIGURG is restarted by the kernel, and
	// the restarted request finds its notification already answered or
	// gone, so the guest's open could come back with a stale result.
	runtime.LockOSThread()
	var set, old [1]uint64
	set[0] = 1 << (uint(unix.SIGURG) - 1)
	unix.RawSyscall6(unix.SYS_RT_SIGPROCMASK, unix.SIG_BLOCK, uintptr(unsafe.Pointer(&set[0])), uintptr(unsafe.Pointer(&old[0])), 8, 0, 0)
	defer close(s.notifs)
	defer unix.Close(fd)
	// AddFd holds the caller and this thread on one CPU where the guest
	// waits killably, which the synchronous wake-up flag (6.6) implies
	// (WAIT_KILLABLE_RECV is 5.19), and where there is more than one.
	var cpus *unix.CPUSet
	if set := new(unix.CPUSet); recvWakes && unix.SchedGetaffinity(0, set) == nil && set.Count() > 1 {
		cpus = set
	}
	for {
		// Since Linux 6.6 (which took the synchronous wake-up flag) RECV
		// waits by itself and also returns when no process uses the
		// filter any more: no poll first, one system call less per trap.
		// Older kernels only tell that to poll.
		if !recvWakes {
			if ready, gone := pollListener(fd, -1); !ready {
				if gone {
					return
				}
				continue
			}
		}
		var req abi.SeccompNotif
		_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), abi.SECCOMP_IOCTL_NOTIF_RECV, uintptr(unsafe.Pointer(&req)))
		if e != 0 {
			// The guest went away between the wake-up and the receive,
			// or the filter's last user did: a poll tells which.
			if e == unix.EINTR {
				continue
			}
			if _, gone := pollListener(fd, 0); gone {
				return
			}
			continue
		}
		n := &Notification{ID: req.ID, Pid: int(req.Pid), Nr: int(req.Data.Nr), Args: req.Data.Args, IP: req.Data.IP, listener: fd, cpus: cpus}
		h.Notify(n)
		if !n.answered {
			n.Fail(abi.ENOSYS)
		}
	}
}

// pollListener waits up to timeout ms (-1: for ever) on the listener:
// whether a notification waits, and whether the filter has no user left
// (or the poll itself failed).
func pollListener(fd, timeout int) (ready, gone bool) {
	pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	if _, err := unix.Poll(pfd, timeout); err != nil {
		return false, err != unix.EINTR
	}
	return pfd[0].Revents&unix.POLLIN != 0, pfd[0].Revents&(unix.POLLHUP|unix.POLLERR|unix.POLLNVAL) != 0
}
