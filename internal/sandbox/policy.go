package sandbox

import (
	"fmt"
	"sort"

	"github.com/umltools/umltools/internal/abi"
)

// Ret is a seccomp filter verdict: one of RetAllow, RetTrace, RetKill or
// RetErrno(e). Its value is the SECCOMP_RET_* word the filter returns.
type Ret uint32

// Filter verdicts.
const (
	// RetAllow runs the syscall natively, unseen by the engine.
	RetAllow Ret = abi.SECCOMP_RET_ALLOW
	// RetTrace stops the task for the tracer (PTRACE_EVENT_SECCOMP).
	RetTrace Ret = abi.SECCOMP_RET_TRACE
	// RetKill kills the whole guest process.
	RetKill Ret = abi.SECCOMP_RET_KILL_PROCESS
	// RetUserNotif sends the syscall to the engine's user-notification
	// listener (see Config.Notify).
	RetUserNotif Ret = abi.SECCOMP_RET_USER_NOTIF
)

// RetErrno fails the syscall with errno e without running it.
func RetErrno(e int) Ret { return Ret(abi.SECCOMP_RET_ERRNO | uint32(e)&abi.SECCOMP_RET_DATA) }

// String names a verdict for test output.
func (r Ret) String() string {
	switch {
	case r == RetAllow:
		return "ALLOW"
	case r == RetTrace:
		return "TRACE"
	case r == RetKill:
		return "KILL"
	case r == RetUserNotif:
		return "USER_NOTIF"
	case uint32(r)&abi.SECCOMP_RET_ACTION_FULL == abi.SECCOMP_RET_ERRNO:
		return fmt.Sprintf("ERRNO(%d)", uint32(r)&abi.SECCOMP_RET_DATA)
	}
	return fmt.Sprintf("RET(%#x)", uint32(r))
}

// Rule is the verdict for one syscall. With a zero Mask it is simply Else.
// Otherwise the filter tests argument Arg: if args[Arg]&Mask != 0 the
// verdict is IfSet, else Else. Such argument tests are what keep, for
// example, anonymous mmap native while file mmaps trap.
type Rule struct {
	Else  Ret
	Arg   int
	Mask  uint64
	IfSet Ret
}

// Policy maps syscall numbers to rules. Syscalls absent from the map, and
// numbers the table does not know, get Default (ENOSYS in DefaultPolicy;
// never ALLOW).
type Policy struct {
	Rules   map[int]Rule
	Default Ret
}

// nsCloneFlags are clone flags the engine must see: new namespaces and
// CLONE_UNTRACED (which would escape the tracer's auto-attach).
const nsCloneFlags = abi.CLONE_NEWNS | abi.CLONE_NEWUTS | abi.CLONE_NEWIPC |
	abi.CLONE_NEWUSER | abi.CLONE_NEWPID | abi.CLONE_NEWNET |
	abi.CLONE_NEWCGROUP | abi.CLONE_UNTRACED

// nativeSyscalls run on the host unseen: memory, threads, time, scheduling,
// signals, the process family (safe inside the pid namespace), SysV IPC
// (inside the engine's IPC namespace) and readiness waits on host-backed fds.
var nativeSyscalls = []string{
	// memory (mmap is conditional, below)
	"brk", "mprotect", "munmap", "madvise", "mremap", "msync", "mincore",
	"mlock", "mlock2", "munlock", "mlockall", "munlockall", "membarrier",
	"mseal", "mbind", "get_mempolicy", "set_mempolicy", "pkey_mprotect",
	"pkey_alloc", "pkey_free",
	// threads
	"futex", "futex_waitv", "futex_wake", "futex_wait", "futex_requeue",
	"set_robust_list", "get_robust_list", "rseq", "set_tid_address",
	"arch_prctl",
	// time
	"clock_gettime", "clock_getres", "clock_nanosleep", "gettimeofday",
	"time", "nanosleep", "getitimer", "setitimer", "alarm", "timer_create",
	"timer_settime", "timer_gettime", "timer_getoverrun", "timer_delete",
	// scheduling and randomness
	"sched_yield", "sched_getaffinity", "sched_setaffinity", "getcpu",
	"getrandom", "sched_getparam", "sched_getscheduler",
	"sched_get_priority_max", "sched_get_priority_min",
	"sched_rr_get_interval", "sched_getattr",
	// signals
	"rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "rt_sigpending",
	"rt_sigtimedwait", "rt_sigqueueinfo", "rt_tgsigqueueinfo",
	"rt_sigsuspend", "sigaltstack", "pause", "restart_syscall",
	// processes (clone is conditional, below)
	"fork", "vfork", "exit", "exit_group", "getpid", "gettid", "getppid",
	"getpgid", "setpgid", "getpgrp", "getsid", "setsid", "wait4", "waitid",
	"kill", "tgkill", "tkill",
	// resources (prlimit64 is conditional, below)
	"getrusage", "times", "getrlimit",
	// SysV IPC, isolated by the IPC namespace
	"shmget", "shmat", "shmctl", "shmdt", "semget", "semop", "semctl",
	"semtimedop", "msgget", "msgsnd", "msgrcv", "msgctl",
	// readiness on host-backed fds
	"poll", "ppoll", "select", "pselect6", "epoll_wait", "epoll_pwait",
	"epoll_pwait2",
}

// tracedSyscalls stop for the engine, which serves them or lets them run.
var tracedSyscalls = []string{
	// exec
	"execve", "execveat",
	// fds and I/O
	"read", "write", "open", "close", "lseek", "pread64", "pwrite64",
	"readv", "writev", "preadv", "pwritev", "preadv2", "pwritev2", "pipe",
	"pipe2", "dup", "dup2", "dup3", "fcntl", "flock", "ioctl", "close_range",
	"sendfile", "splice", "tee", "vmsplice", "copy_file_range",
	"fsync", "fdatasync", "sync", "syncfs", "sync_file_range", "fallocate",
	"fadvise64", "readahead", "truncate", "ftruncate", "memfd_create",
	"eventfd", "eventfd2", "signalfd", "signalfd4", "timerfd_create",
	"timerfd_settime", "timerfd_gettime", "epoll_create", "epoll_create1",
	"epoll_ctl", "inotify_init", "inotify_init1", "inotify_add_watch",
	"inotify_rm_watch", "pidfd_open", "pidfd_send_signal", "cachestat",
	// paths and metadata
	"stat", "fstat", "lstat", "newfstatat", "statx", "access", "faccessat",
	"faccessat2", "getdents", "getdents64", "getcwd", "chdir", "fchdir",
	"rename", "renameat", "renameat2", "mkdir", "mkdirat", "rmdir", "creat",
	"link", "linkat", "unlink", "unlinkat", "symlink", "symlinkat",
	"readlink", "readlinkat", "chmod", "fchmod", "fchmodat", "fchmodat2",
	"chown", "fchown", "lchown", "fchownat", "umask", "statfs", "fstatfs",
	"mknod", "mknodat", "utime", "utimes", "futimesat", "utimensat",
	"openat", "openat2", "setxattr", "lsetxattr", "fsetxattr", "getxattr",
	"lgetxattr", "fgetxattr", "listxattr", "llistxattr", "flistxattr",
	"removexattr", "lremovexattr", "fremovexattr", "setxattrat",
	"getxattrat", "listxattrat", "removexattrat", "file_getattr",
	"file_setattr", "ustat",
	// mounts
	"mount", "umount2", "chroot", "pivot_root",
	// sockets
	"socket", "socketpair", "connect", "accept", "accept4", "bind",
	"listen", "shutdown", "getsockname", "getpeername", "sendto",
	"recvfrom", "sendmsg", "recvmsg", "sendmmsg", "recvmmsg", "setsockopt",
	"getsockopt",
	// credentials
	"getuid", "geteuid", "getgid", "getegid", "setuid", "setgid",
	"setreuid", "setregid", "setresuid", "getresuid", "setresgid",
	"getresgid", "setfsuid", "setfsgid", "getgroups", "setgroups", "capget",
	"capset",
	// the machine
	"uname", "sethostname", "setdomainname", "sysinfo", "syslog", "reboot",
	"settimeofday", "clock_settime", "adjtimex", "clock_adjtime",
	"setrlimit", "prctl", "seccomp", "personality", "vhangup",
	"sched_setscheduler", "sched_setparam", "sched_setattr", "ioprio_get",
	"ioprio_set",
	// PRIO_USER reaches every host process of the mapped uid.
	"getpriority", "setpriority",
}

// refusedSyscalls are never reachable by a guest, with the errno it sees.
var refusedSyscalls = map[string]int{
	// clone3 keeps its flags in memory; libc falls back to clone on ENOSYS.
	"clone3": abi.ENOSYS,
	// io_uring bypasses seccomp for the operations it submits.
	"io_uring_setup": abi.ENOSYS, "io_uring_enter": abi.ENOSYS,
	"io_uring_register": abi.ENOSYS,
	// The engine is the only tracer; guests may not inspect each other's
	// memory behind its back.
	"ptrace": abi.EPERM, "process_vm_readv": abi.EPERM,
	"process_vm_writev": abi.EPERM, "pidfd_getfd": abi.EPERM,
	"process_madvise": abi.EPERM, "kcmp": abi.EPERM,
	"bpf": abi.EPERM, "userfaultfd": abi.ENOSYS,
	"perf_event_open": abi.ENOSYS,
	"kexec_load":      abi.EPERM, "kexec_file_load": abi.EPERM,
	"init_module": abi.EPERM, "finit_module": abi.EPERM,
	"delete_module":     abi.EPERM,
	"open_by_handle_at": abi.EPERM, "name_to_handle_at": abi.EOPNOTSUPP,
	"add_key": abi.ENOSYS, "request_key": abi.ENOSYS, "keyctl": abi.ENOSYS,
	"fanotify_init": abi.ENOSYS, "fanotify_mark": abi.ENOSYS,
	"iopl": abi.EPERM, "ioperm": abi.EPERM, "modify_ldt": abi.ENOSYS,
	"swapon": abi.EPERM, "swapoff": abi.EPERM, "acct": abi.EPERM,
	"quotactl": abi.EPERM, "quotactl_fd": abi.EPERM,
	"unshare": abi.EPERM, "setns": abi.EPERM,
	"lookup_dcookie": abi.EPERM,
}

// DefaultPolicy returns the engine's filter policy: the native set allowed,
// the engine's set traced, the refused set failing with its errno, and
// every other syscall number failing with ENOSYS.
func DefaultPolicy() *Policy {
	p := &Policy{Rules: map[int]Rule{}, Default: RetErrno(abi.ENOSYS)}
	for _, n := range nativeSyscalls {
		p.Rules[mustNr(n)] = Rule{Else: RetAllow}
	}
	for _, n := range tracedSyscalls {
		p.Rules[mustNr(n)] = Rule{Else: RetTrace}
	}
	for n, e := range refusedSyscalls {
		p.Rules[mustNr(n)] = Rule{Else: RetErrno(e)}
	}
	// mmap is native only when anonymous; file mappings go to the engine.
	p.Rules[abi.SYS_MMAP] = Rule{Else: RetTrace, Arg: 3, Mask: abi.MAP_ANONYMOUS, IfSet: RetAllow}
	// clone is native unless it asks for namespaces or CLONE_UNTRACED.
	p.Rules[abi.SYS_CLONE] = Rule{Else: RetAllow, Arg: 0, Mask: nsCloneFlags, IfSet: RetTrace}
	// prlimit64 is native when it only reads (new_limit == NULL).
	p.Rules[abi.SYS_PRLIMIT64] = Rule{Else: RetAllow, Arg: 2, Mask: ^uint64(0), IfSet: RetTrace}
	return p
}

// Nr returns the x86-64 number of the named syscall.
func Nr(name string) (int, bool) {
	for nr, n := range abi.SyscallNames {
		if n == name {
			return nr, true
		}
	}
	return 0, false
}

func mustNr(name string) int {
	nr, ok := Nr(name)
	if !ok {
		panic("sandbox: unknown syscall " + name)
	}
	return nr
}

// Verdict evaluates the policy in Go for a syscall and its arguments, the
// reference the generated filter is tested against.
func (p *Policy) Verdict(nr int, args [6]uint64) Ret {
	r, ok := p.Rules[nr]
	if !ok {
		return p.Default
	}
	if r.Mask != 0 && args[r.Arg]&r.Mask != 0 {
		return r.IfSet
	}
	return r.Else
}

// sortedNrs returns the policy's syscall numbers in order.
func (p *Policy) sortedNrs() []int {
	nrs := make([]int, 0, len(p.Rules))
	for nr := range p.Rules {
		nrs = append(nrs, nr)
	}
	sort.Ints(nrs)
	return nrs
}
