package sandbox

import (
	"encoding/binary"
	"fmt"
	"testing"

	"github.com/umltools/umltools/internal/abi"
)

// runBPF is a classic-BPF interpreter for seccomp programs, written for the
// tests: it executes prog against one struct seccomp_data and returns the
// filter's verdict. It checks what the kernel's verifier checks for the
// instructions the generator may emit, and fails on anything else.
func runBPF(prog []abi.SockFilter, nr int32, arch uint32, args [6]uint64) (uint32, error) {
	var data [abi.SeccompDataSize]byte
	le := binary.LittleEndian
	le.PutUint32(data[abi.SeccompDataNr:], uint32(nr))
	le.PutUint32(data[abi.SeccompDataArch:], arch)
	for i, a := range args {
		le.PutUint64(data[abi.SeccompDataArgs+8*i:], a)
	}
	var a uint32
	for pc := 0; ; pc++ {
		if pc >= len(prog) {
			return 0, fmt.Errorf("pc %d ran off the end", pc)
		}
		in := prog[pc]
		target := func(off uint32) (int, error) {
			t := pc + 1 + int(off)
			if t >= len(prog) {
				return 0, fmt.Errorf("pc %d: jump to %d out of range", pc, t)
			}
			return t - 1, nil
		}
		var err error
		switch in.Code {
		case abi.BPF_LD | abi.BPF_W | abi.BPF_ABS:
			if in.K%4 != 0 || in.K+4 > abi.SeccompDataSize {
				return 0, fmt.Errorf("pc %d: bad load offset %d", pc, in.K)
			}
			a = le.Uint32(data[in.K:])
		case abi.BPF_JMP | abi.BPF_JA:
			pc, err = target(in.K)
		case abi.BPF_JMP | abi.BPF_JEQ | abi.BPF_K, abi.BPF_JMP | abi.BPF_JGE | abi.BPF_K,
			abi.BPF_JMP | abi.BPF_JGT | abi.BPF_K, abi.BPF_JMP | abi.BPF_JSET | abi.BPF_K:
			var cond bool
			switch in.Code &^ (abi.BPF_JMP | abi.BPF_K) {
			case abi.BPF_JEQ:
				cond = a == in.K
			case abi.BPF_JGE:
				cond = a >= in.K
			case abi.BPF_JGT:
				cond = a > in.K
			case abi.BPF_JSET:
				cond = a&in.K != 0
			}
			off := uint32(in.Jf)
			if cond {
				off = uint32(in.Jt)
			}
			pc, err = target(off)
		case abi.BPF_RET | abi.BPF_K:
			return in.K, nil
		default:
			return 0, fmt.Errorf("pc %d: unsupported opcode %#x", pc, in.Code)
		}
		if err != nil {
			return 0, err
		}
	}
}

// TestFilterMatchesPolicy runs the generated program in the interpreter for
// every syscall number 0..600 (with arguments that flip each conditional
// rule) and compares it with the policy evaluated in Go.
func TestFilterMatchesPolicy(t *testing.T) {
	p := DefaultPolicy()
	prog, err := p.Compile()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("filter: %d instructions", len(prog))
	argSets := [][6]uint64{
		{},
		{^uint64(0), ^uint64(0), ^uint64(0), ^uint64(0), ^uint64(0), ^uint64(0)},
		{abi.CLONE_NEWUSER, 0, 1 << 40, abi.MAP_ANONYMOUS | abi.MAP_PRIVATE},
		{abi.CLONE_VM | abi.CLONE_THREAD, 0, 0, abi.MAP_PRIVATE},
	}
	for nr := 0; nr < 600; nr++ {
		for _, args := range argSets {
			got, err := runBPF(prog, int32(nr), abi.AUDIT_ARCH_X86_64, args)
			if err != nil {
				t.Fatalf("nr %d: %v", nr, err)
			}
			if want := p.Verdict(nr, args); Ret(got) != want {
				t.Errorf("nr %d (%s) args %x: filter says %v, policy %v", nr, abi.SyscallNames[nr], args, Ret(got), want)
			}
		}
	}
}

// TestFilterTable checks named syscalls against the architecture's sets.
func TestFilterTable(t *testing.T) {
	prog, err := DefaultPolicy().Compile()
	if err != nil {
		t.Fatal(err)
	}
	enosys, eperm := RetErrno(abi.ENOSYS), RetErrno(abi.EPERM)
	for _, c := range []struct {
		nr   int32
		arch uint32
		args [6]uint64
		want Ret
	}{
		{abi.SYS_GETPID, abi.AUDIT_ARCH_X86_64, [6]uint64{}, RetAllow},
		{abi.SYS_GETPPID, abi.AUDIT_ARCH_X86_64, [6]uint64{}, RetAllow},
		{abi.SYS_FUTEX, abi.AUDIT_ARCH_X86_64, [6]uint64{}, RetAllow},
		{abi.SYS_OPENAT, abi.AUDIT_ARCH_X86_64, [6]uint64{}, RetTrace},
		{abi.SYS_EXECVE, abi.AUDIT_ARCH_X86_64, [6]uint64{}, RetTrace},
		{abi.SYS_UNAME, abi.AUDIT_ARCH_X86_64, [6]uint64{}, RetTrace},
		{abi.SYS_MMAP, abi.AUDIT_ARCH_X86_64, [6]uint64{0, 4096, 3, abi.MAP_PRIVATE | abi.MAP_ANONYMOUS, ^uint64(0)}, RetAllow},
		{abi.SYS_MMAP, abi.AUDIT_ARCH_X86_64, [6]uint64{0, 4096, 1, abi.MAP_PRIVATE, 3}, RetTrace},
		{abi.SYS_CLONE, abi.AUDIT_ARCH_X86_64, [6]uint64{abi.CLONE_VM | abi.CLONE_THREAD | abi.CLONE_SETTLS}, RetAllow},
		{abi.SYS_CLONE, abi.AUDIT_ARCH_X86_64, [6]uint64{abi.CLONE_NEWNET}, RetTrace},
		{abi.SYS_CLONE, abi.AUDIT_ARCH_X86_64, [6]uint64{abi.CLONE_UNTRACED}, RetTrace},
		{abi.SYS_PRLIMIT64, abi.AUDIT_ARCH_X86_64, [6]uint64{0, 7, 0, 0x7ffe0000}, RetAllow},
		{abi.SYS_PRLIMIT64, abi.AUDIT_ARCH_X86_64, [6]uint64{0, 7, 1 << 33, 0}, RetTrace},
		{abi.SYS_PRLIMIT64, abi.AUDIT_ARCH_X86_64, [6]uint64{0, 7, 8, 0}, RetTrace},
		{abi.SYS_CLONE3, abi.AUDIT_ARCH_X86_64, [6]uint64{}, enosys},
		{abi.SYS_IO_URING_SETUP, abi.AUDIT_ARCH_X86_64, [6]uint64{}, enosys},
		{abi.SYS_BPF, abi.AUDIT_ARCH_X86_64, [6]uint64{}, eperm},
		{abi.SYS_PTRACE, abi.AUDIT_ARCH_X86_64, [6]uint64{}, eperm},
		{abi.SYS_PROCESS_VM_READV, abi.AUDIT_ARCH_X86_64, [6]uint64{}, eperm},
		{abi.SYS_UNSHARE, abi.AUDIT_ARCH_X86_64, [6]uint64{}, eperm},
		{abi.SYS_FINIT_MODULE, abi.AUDIT_ARCH_X86_64, [6]uint64{}, eperm},
		{abi.SYS_KEXEC_LOAD, abi.AUDIT_ARCH_X86_64, [6]uint64{}, eperm},
		{abi.SYS_USERFAULTFD, abi.AUDIT_ARCH_X86_64, [6]uint64{}, enosys},
		{abi.SYS_PERF_EVENT_OPEN, abi.AUDIT_ARCH_X86_64, [6]uint64{}, enosys},
		{abi.SYS_AFS_SYSCALL, abi.AUDIT_ARCH_X86_64, [6]uint64{}, enosys},
		{1000, abi.AUDIT_ARCH_X86_64, [6]uint64{}, enosys},
		{0x3fffffff, abi.AUDIT_ARCH_X86_64, [6]uint64{}, enosys},
		{-1, abi.AUDIT_ARCH_X86_64, [6]uint64{}, enosys},
		{abi.X32_SYSCALL_BIT | abi.SYS_GETPID, abi.AUDIT_ARCH_X86_64, [6]uint64{}, RetKill},
		{abi.SYS_GETPID, 0x40000003 /* AUDIT_ARCH_I386 */, [6]uint64{}, RetKill},
	} {
		got, err := runBPF(prog, c.nr, c.arch, c.args)
		if err != nil {
			t.Fatal(err)
		}
		if Ret(got) != c.want {
			t.Errorf("nr %d (%s) arch %#x: got %v, want %v", c.nr, abi.SyscallNames[int(c.nr)], c.arch, Ret(got), c.want)
		}
	}
}

// TestCompileRejects checks the generator refuses unsafe or invalid input.
func TestCompileRejects(t *testing.T) {
	for name, p := range map[string]*Policy{
		"allow default": {Rules: map[int]Rule{}, Default: RetAllow},
		"x32 number":    {Rules: map[int]Rule{abi.X32_SYSCALL_BIT: {Else: RetAllow}}, Default: RetKill},
		"bad arg":       {Rules: map[int]Rule{1: {Else: RetAllow, Arg: 6, Mask: 1}}, Default: RetKill},
	} {
		if _, err := p.Compile(); err == nil {
			t.Errorf("%s: compiled", name)
		}
	}
}

// TestFilterLongJumps forces spans far apart so JA hops are needed.
func TestFilterLongJumps(t *testing.T) {
	p := &Policy{Rules: map[int]Rule{}, Default: RetErrno(abi.ENOSYS)}
	for nr := 0; nr < 1200; nr++ {
		switch nr % 3 {
		case 0:
			p.Rules[nr] = Rule{Else: RetAllow}
		case 1:
			p.Rules[nr] = Rule{Else: RetTrace, Arg: 1, Mask: 1 << 35, IfSet: RetErrno(nr % 100)}
		}
	}
	prog, err := p.Compile()
	if err != nil {
		t.Fatal(err)
	}
	for nr := 0; nr < 1300; nr++ {
		for _, args := range [][6]uint64{{}, {0, 1 << 35}} {
			got, err := runBPF(prog, int32(nr), abi.AUDIT_ARCH_X86_64, args)
			if err != nil {
				t.Fatal(err)
			}
			if want := p.Verdict(nr, args); Ret(got) != want {
				t.Fatalf("nr %d: got %v want %v", nr, Ret(got), want)
			}
		}
	}
}
