package sandbox

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/umltools/umltools/internal/abi"
)

// Task is one traced guest thread. Tid and Tgid are host (engine-side)
// ids; the guest sees the ids of the sandbox's pid namespace (NsTid).
type Task struct {
	Tid  int
	Tgid int
	// Data is the kernel's per-task state; the sandbox never touches it.
	Data any

	sb        *Sandbox
	queued    bool // has a stop in Sandbox.pending
	stub      bool // still the engine's stub, before its exec
	started   bool // its first stop has been seen and resumed
	announced bool // EvClone has been delivered (or it needs none)
	held      bool // stopped at its first stop, waiting for EvClone
	heldAt    time.Time
	inSyscall bool    // resumed with PTRACE_SYSCALL: an exit stop is due
	paused    bool    // stopped for a sibling (StopSiblings, HoldSiblings)
	stopped   bool    // paused, in a stop only the release resumes
	holding   []*Task // siblings held until this task's next stop
	nsTid     int
}

// ErrFault is returned when guest memory is not mapped.
var ErrFault = errors.New("bad guest address")

// maxIov bounds the iovecs of one process_vm call (UIO_MAXIOV).
const maxIov = 1024

// vmCall runs process_vm_readv (write=false) or process_vm_writev on
// [addr, addr+len(b)), with the remote side split at page boundaries so a
// fault part way through gives a page-exact partial count.
func (t *Task) vmCall(addr uint64, b []byte, write bool) (int, error) {
	nr := uintptr(abi.SYS_PROCESS_VM_READV)
	if write {
		nr = abi.SYS_PROCESS_VM_WRITEV
	}
	done := 0
	for done < len(b) {
		var remote [maxIov]unix.RemoteIovec
		n, a, total := 0, addr+uint64(done), 0
		for n < maxIov && done+total < len(b) {
			l := int(abi.PAGE_SIZE - a%abi.PAGE_SIZE)
			if l > len(b)-done-total {
				l = len(b) - done - total
			}
			remote[n] = unix.RemoteIovec{Base: uintptr(a), Len: l}
			n++
			a += uint64(l)
			total += l
		}
		local := unix.Iovec{Base: &b[done]}
		local.SetLen(total)
		r, _, e := unix.RawSyscall6(nr, uintptr(t.Tid), uintptr(unsafe.Pointer(&local)), 1,
			uintptr(unsafe.Pointer(&remote[0])), uintptr(n), 0)
		if e != 0 {
			if e == unix.EFAULT {
				return done, ErrFault
			}
			return done, fmt.Errorf("process_vm on task %d: %w", t.Tid, e)
		}
		done += int(r)
		if int(r) < total {
			return done, ErrFault
		}
	}
	return done, nil
}

// ReadMem reads len(b) bytes of guest memory at addr. It returns the count
// read and ErrFault if the range is not all mapped.
func (t *Task) ReadMem(addr uint64, b []byte) (int, error) { return t.vmCall(addr, b, false) }

// WriteMem writes b into guest memory at addr (writable mappings only).
// Other threads sharing the memory may see the write at any moment.
func (t *Task) WriteMem(addr uint64, b []byte) (int, error) { return t.vmCall(addr, b, true) }

// ErrTooLong is returned by ReadString when no NUL is found within the limit.
var ErrTooLong = errors.New("guest string too long")

// ReadString reads a NUL-terminated string of at most max bytes (without
// the NUL) at addr, a page at a time.
func (t *Task) ReadString(addr uint64, max int) (string, error) {
	var out []byte
	buf := make([]byte, abi.PAGE_SIZE)
	for len(out) <= max {
		l := int(abi.PAGE_SIZE - addr%abi.PAGE_SIZE)
		if rem := max + 1 - len(out); l > rem {
			l = rem
		}
		n, err := t.ReadMem(addr, buf[:l])
		if i := bytes.IndexByte(buf[:n], 0); i >= 0 {
			return string(append(out, buf[:i]...)), nil
		}
		if err != nil {
			return "", err
		}
		out = append(out, buf[:n]...)
		addr += uint64(n)
	}
	return "", ErrTooLong
}

// NsTid returns the task's tid as the guest sees it (in the sandbox's pid
// namespace), read once from /proc/<tid>/status.
func (t *Task) NsTid() (int, error) {
	if t.nsTid != 0 {
		return t.nsTid, nil
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(t.Tid) + "/status")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 1 && f[0] == "NSpid:" {
			n, err := strconv.Atoi(f[len(f)-1])
			if err != nil {
				return 0, fmt.Errorf("/proc/%d/status: %q: %w", t.Tid, line, err)
			}
			t.nsTid = n
			return n, nil
		}
	}
	return 0, fmt.Errorf("/proc/%d/status: no NSpid line", t.Tid)
}

// Signal sends sig to this thread (tgkill).
func (t *Task) Signal(sig unix.Signal) error {
	return unix.Tgkill(t.Tgid, t.Tid, sig)
}

// RedirectExec rewrites a trapped execve or execveat so that the host
// executes hostPath instead of the guest's path; argv and envp are kept.
// hostPath must be reachable by the guest's host identity: an ExecDir
// file, not /proc/<engine>/fd/N (refused across user namespaces). Return
// Native() afterwards: the host builds the new image.
//
// Hold the other threads first (HoldSiblings) so none can change the
// written path before the host reads it.
func (t *Task) RedirectExec(regs *abi.Regs, hostPath string) error {
	return t.RewriteExec(regs, hostPath, nil, 0)
}

// maxArgs bounds the argv pointers RewriteExec reads.
const maxArgs = 1 << 17

// RewriteExec is RedirectExec with a new argv: prefix, then the guest's
// original arguments from index skip on (which stay where they are in guest
// memory). A "#!" script runs as RewriteExec(regs, hostInterp,
// []string{interp, arg, script}, 1) (without arg when there is none). The
// new strings and pointer array are written below the red zone.
func (t *Task) RewriteExec(regs *abi.Regs, hostPath string, prefix []string, skip int) error {
	var argvReg *uint64
	switch regs.OrigRax {
	case abi.SYS_EXECVE:
		argvReg = &regs.Rsi
	case abi.SYS_EXECVEAT:
		argvReg = &regs.Rdx
	default:
		return fmt.Errorf("exec rewrite: syscall %d is not an exec", regs.OrigRax)
	}
	var old []uint64
	if prefix != nil || skip != 0 {
		var err error
		if old, err = t.readPtrs(*argvReg); err != nil {
			return fmt.Errorf("exec rewrite of task %d: argv: %w", t.Tid, err)
		}
		if skip > len(old) {
			skip = len(old)
		}
		old = old[skip:]
	}
	// Layout, from low to high: pointer array (16-aligned), strings.
	var strs []byte
	offs := make([]int, 0, len(prefix)+1)
	for _, s := range append([]string{hostPath}, prefix...) {
		if strings.IndexByte(s, 0) >= 0 {
			return fmt.Errorf("exec rewrite: NUL in %q", s)
		}
		offs = append(offs, len(strs))
		strs = append(append(strs, s...), 0)
	}
	nptr := 0
	if prefix != nil || skip != 0 {
		nptr = len(prefix) + len(old) + 1
	}
	size := uint64(8*nptr+len(strs)+15) &^ 15
	base := (regs.Rsp - abi.RedZone - 512 - size) &^ 15
	block := make([]byte, size)
	strBase := base + uint64(8*nptr)
	copy(block[8*nptr:], strs)
	if nptr > 0 {
		ptrs := make([]uint64, 0, nptr)
		for _, o := range offs[1:] {
			ptrs = append(ptrs, strBase+uint64(o))
		}
		ptrs = append(append(ptrs, old...), 0)
		for i, p := range ptrs {
			binary.LittleEndian.PutUint64(block[8*i:], p)
		}
	}
	if _, err := t.WriteMem(base, block); err != nil {
		return fmt.Errorf("exec rewrite of task %d: %w", t.Tid, err)
	}
	if regs.OrigRax == abi.SYS_EXECVE {
		regs.Rdi = strBase
	} else {
		fdcwd := int64(abi.AT_FDCWD)
		regs.Rdi = uint64(fdcwd)
		regs.Rsi = strBase
		regs.R8 &^= abi.AT_EMPTY_PATH
	}
	if nptr > 0 {
		*argvReg = base
	}
	return nil
}

// readPtrs reads a NULL-terminated array of guest pointers (argv, envp),
// without the NULL. A NULL array address is an empty array.
func (t *Task) readPtrs(addr uint64) ([]uint64, error) {
	var out []uint64
	if addr == 0 {
		return nil, nil
	}
	buf := make([]byte, abi.PAGE_SIZE)
	for len(out) < maxArgs {
		l := int(abi.PAGE_SIZE - addr%abi.PAGE_SIZE)
		l -= l % 8
		if l == 0 {
			l = 8
		}
		n, err := t.ReadMem(addr, buf[:l])
		for i := 0; i+8 <= n; i += 8 {
			p := binary.LittleEndian.Uint64(buf[i:])
			if p == 0 {
				return out, nil
			}
			out = append(out, p)
		}
		if err != nil {
			return nil, err
		}
		addr += uint64(n)
	}
	return nil, ErrTooLong
}

// ExecMemfd copies an executable image into a new memfd and returns a
// read-only descriptor of it, suitable for Config.File (the stub execs it
// with execveat). The writable descriptor is
// closed so that exec does not fail with ETXTBSY.
func ExecMemfd(name string, image []byte) (*os.File, error) {
	fd, err := unix.MemfdCreate(name, abi.MFD_CLOEXEC|abi.MFD_EXEC)
	if err == unix.EINVAL { // kernels before 6.3 lack MFD_EXEC
		fd, err = unix.MemfdCreate(name, abi.MFD_CLOEXEC)
	}
	if err != nil {
		return nil, fmt.Errorf("memfd for %s: %w", name, err)
	}
	w := os.NewFile(uintptr(fd), name)
	defer w.Close()
	if _, err := w.Write(image); err != nil {
		return nil, fmt.Errorf("memfd for %s: %w", name, err)
	}
	r, err := os.Open("/proc/self/fd/" + strconv.Itoa(fd))
	if err != nil {
		return nil, fmt.Errorf("memfd for %s: %w", name, err)
	}
	return r, nil
}

func uintptrOf(p *uintptr) uintptr { return uintptr(unsafe.Pointer(p)) }
