// Package abi holds the x86-64 Linux ABI the engine speaks: syscall
// numbers, errno values, seccomp and classic BPF encodings, ptrace requests
// and events, and the layouts of the structs the engine reads from or writes
// into guest memory. It is data only: no logic lives here.
package abi

// Errno values (asm-generic/errno-base.h and errno.h) the engine returns.
const (
	EPERM        = 1
	ENOENT       = 2
	ESRCH        = 3
	EINTR        = 4
	EIO          = 5
	ENXIO        = 6
	E2BIG        = 7
	ENOEXEC      = 8
	EBADF        = 9
	ECHILD       = 10
	EAGAIN       = 11
	ENOMEM       = 12
	EACCES       = 13
	EFAULT       = 14
	ENOTBLK      = 15
	EBUSY        = 16
	EEXIST       = 17
	EXDEV        = 18
	ENODEV       = 19
	ENOTDIR      = 20
	EISDIR       = 21
	EINVAL       = 22
	ENFILE       = 23
	EMFILE       = 24
	ENOTTY       = 25
	ETXTBSY      = 26
	EFBIG        = 27
	ENOSPC       = 28
	ESPIPE       = 29
	EROFS        = 30
	EMLINK       = 31
	EPIPE        = 32
	ERANGE       = 34
	EDEADLK      = 35
	ENAMETOOLONG = 36
	ENOSYS       = 38
	ENOTEMPTY    = 39
	ELOOP        = 40
	ENODATA      = 61
	EOVERFLOW    = 75
	ENOTSOCK     = 88
	EOPNOTSUPP   = 95
	EAFNOSUPPORT = 97
	EADDRINUSE   = 98
	ECONNREFUSED = 111
	ERESTARTSYS  = 512 // kernel-internal; never returned to the guest
)

// Seccomp return actions and filter flags (linux/seccomp.h).
const (
	SECCOMP_RET_KILL_PROCESS = 0x80000000
	SECCOMP_RET_KILL_THREAD  = 0x00000000
	SECCOMP_RET_TRAP         = 0x00030000
	SECCOMP_RET_ERRNO        = 0x00050000
	SECCOMP_RET_USER_NOTIF   = 0x7fc00000
	SECCOMP_RET_TRACE        = 0x7ff00000
	SECCOMP_RET_LOG          = 0x7ffc0000
	SECCOMP_RET_ALLOW        = 0x7fff0000
	SECCOMP_RET_ACTION_FULL  = 0xffff0000
	SECCOMP_RET_DATA         = 0x0000ffff

	SECCOMP_SET_MODE_FILTER                = 1
	SECCOMP_FILTER_FLAG_TSYNC              = 1
	SECCOMP_FILTER_FLAG_LOG                = 2
	SECCOMP_FILTER_FLAG_NEW_LISTENER       = 8
	SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV = 32
)

// AUDIT_ARCH_X86_64 is seccomp_data.arch for native x86-64 syscalls
// (EM_X86_64 | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE).
const AUDIT_ARCH_X86_64 = 0xc000003e

// X32_SYSCALL_BIT marks x32-ABI syscall numbers on x86-64.
const X32_SYSCALL_BIT = 0x40000000

// Offsets of the fields of struct seccomp_data, which is what a seccomp
// filter's BPF_ABS loads index: int nr; u32 arch; u64 instruction_pointer;
// u64 args[6].
const (
	SeccompDataNr   = 0
	SeccompDataArch = 4
	SeccompDataIP   = 8
	SeccompDataArgs = 16 // + 8*i; the low 32 bits first (little-endian)
	SeccompDataSize = 64
)

// Classic BPF instruction classes, sizes, modes and operations
// (linux/filter.h, linux/bpf_common.h).
const (
	BPF_LD   = 0x00
	BPF_LDX  = 0x01
	BPF_ST   = 0x02
	BPF_STX  = 0x03
	BPF_ALU  = 0x04
	BPF_JMP  = 0x05
	BPF_RET  = 0x06
	BPF_MISC = 0x07

	BPF_W = 0x00
	BPF_H = 0x08
	BPF_B = 0x10

	BPF_IMM = 0x00
	BPF_ABS = 0x20
	BPF_IND = 0x40
	BPF_MEM = 0x60
	BPF_LEN = 0x80

	BPF_ADD = 0x00
	BPF_SUB = 0x10
	BPF_MUL = 0x20
	BPF_DIV = 0x30
	BPF_OR  = 0x40
	BPF_AND = 0x50
	BPF_LSH = 0x60
	BPF_RSH = 0x70
	BPF_NEG = 0x80
	BPF_MOD = 0x90
	BPF_XOR = 0xa0

	BPF_JA   = 0x00
	BPF_JEQ  = 0x10
	BPF_JGT  = 0x20
	BPF_JGE  = 0x30
	BPF_JSET = 0x40

	BPF_K = 0x00
	BPF_X = 0x08
	BPF_A = 0x10

	BPF_TAX = 0x00
	BPF_TXA = 0x80

	BPF_MAXINSNS = 4096
)

// SockFilter is one classic BPF instruction (struct sock_filter).
type SockFilter struct {
	Code uint16
	Jt   uint8
	Jf   uint8
	K    uint32
}

// SockFprog is struct sock_fprog: a program length and a pointer to it.
type SockFprog struct {
	Len    uint16
	_      [6]byte
	Filter *SockFilter
}

// prctl options the stub uses (linux/prctl.h).
const (
	PR_SET_PDEATHSIG    = 1
	PR_SET_DUMPABLE     = 4
	PR_SET_SECCOMP      = 22
	PR_SET_NO_NEW_PRIVS = 38
)

// ptrace requests (linux/ptrace.h, asm/ptrace-abi.h).
const (
	PTRACE_TRACEME          = 0
	PTRACE_PEEKDATA         = 2
	PTRACE_PEEKUSER         = 3
	PTRACE_POKEDATA         = 5
	PTRACE_CONT             = 7
	PTRACE_KILL             = 8
	PTRACE_SINGLESTEP       = 9
	PTRACE_GETREGS          = 12
	PTRACE_SETREGS          = 13
	PTRACE_ATTACH           = 16
	PTRACE_DETACH           = 17
	PTRACE_SYSCALL          = 24
	PTRACE_SYSEMU           = 31
	PTRACE_SETOPTIONS       = 0x4200
	PTRACE_GETEVENTMSG      = 0x4201
	PTRACE_GETSIGINFO       = 0x4202
	PTRACE_SETSIGINFO       = 0x4203
	PTRACE_SEIZE            = 0x4206
	PTRACE_INTERRUPT        = 0x4207
	PTRACE_LISTEN           = 0x4208
	PTRACE_GET_SYSCALL_INFO = 0x420e
)

// ptrace options.
const (
	PTRACE_O_TRACESYSGOOD    = 0x1
	PTRACE_O_TRACEFORK       = 0x2
	PTRACE_O_TRACEVFORK      = 0x4
	PTRACE_O_TRACECLONE      = 0x8
	PTRACE_O_TRACEEXEC       = 0x10
	PTRACE_O_TRACEVFORKDONE  = 0x20
	PTRACE_O_TRACEEXIT       = 0x40
	PTRACE_O_TRACESECCOMP    = 0x80
	PTRACE_O_EXITKILL        = 0x100000
	PTRACE_O_SUSPEND_SECCOMP = 0x200000
)

// ptrace stop events (status>>16 of a wait status).
const (
	PTRACE_EVENT_FORK       = 1
	PTRACE_EVENT_VFORK      = 2
	PTRACE_EVENT_CLONE      = 3
	PTRACE_EVENT_EXEC       = 4
	PTRACE_EVENT_VFORK_DONE = 5
	PTRACE_EVENT_EXIT       = 6
	PTRACE_EVENT_SECCOMP    = 7
	PTRACE_EVENT_STOP       = 128
)

// Wait flags.
const (
	WNOHANG   = 0x1
	WUNTRACED = 0x2
	WNOWAIT   = 0x1000000
	WNOTHREAD = 0x20000000 // __WNOTHREAD
	WALL      = 0x40000000 // __WALL
	WCLONE    = 0x80000000 // __WCLONE
)

// clone flags the engine inspects.
const (
	CLONE_VM             = 0x00000100
	CLONE_FS             = 0x00000200
	CLONE_FILES          = 0x00000400
	CLONE_SIGHAND        = 0x00000800
	CLONE_PIDFD          = 0x00001000
	CLONE_PTRACE         = 0x00002000
	CLONE_VFORK          = 0x00004000
	CLONE_PARENT         = 0x00008000
	CLONE_THREAD         = 0x00010000
	CLONE_NEWNS          = 0x00020000
	CLONE_SYSVSEM        = 0x00040000
	CLONE_SETTLS         = 0x00080000
	CLONE_PARENT_SETTID  = 0x00100000
	CLONE_CHILD_CLEARTID = 0x00200000
	CLONE_UNTRACED       = 0x00800000
	CLONE_CHILD_SETTID   = 0x01000000
	CLONE_NEWCGROUP      = 0x02000000
	CLONE_NEWUTS         = 0x04000000
	CLONE_NEWIPC         = 0x08000000
	CLONE_NEWUSER        = 0x10000000
	CLONE_NEWPID         = 0x20000000
	CLONE_NEWNET         = 0x40000000
	CLONE_IO             = 0x80000000
)

// mmap flags the filter inspects.
const (
	MAP_SHARED    = 0x01
	MAP_PRIVATE   = 0x02
	MAP_FIXED     = 0x10
	MAP_ANONYMOUS = 0x20
)

// Misc constants for the exec path.
const (
	AT_FDCWD            = -100
	AT_EMPTY_PATH       = 0x1000
	AT_SYMLINK_NOFOLLOW = 0x100
	AT_REMOVEDIR        = 0x200
	AT_SYMLINK_FOLLOW   = 0x400
	AT_EACCESS          = 0x200
	MFD_CLOEXEC         = 0x1
	MFD_EXEC            = 0x10
	PAGE_SIZE           = 4096
	RedZone             = 128 // x86-64 SysV red zone below rsp
)

// Regs is struct user_regs_struct on x86-64, the PTRACE_GETREGS layout. On
// a syscall stop OrigRax is the syscall number, Rax the return value (or
// -ENOSYS on entry), and the arguments are Rdi, Rsi, Rdx, R10, R8, R9.
type Regs struct {
	R15, R14, R13, R12, Rbp, Rbx, R11, R10 uint64
	R9, R8, Rax, Rcx, Rdx, Rsi, Rdi        uint64
	OrigRax, Rip, Cs, Eflags, Rsp, Ss      uint64
	FsBase, GsBase, Ds, Es, Fs, Gs         uint64
}

// Utsname is struct new_utsname (uname(2)): six 65-byte fields.
type Utsname struct {
	Sysname    [65]byte
	Nodename   [65]byte
	Release    [65]byte
	Version    [65]byte
	Machine    [65]byte
	Domainname [65]byte
}

// Stat is struct stat on x86-64 (fstat, newfstatat), 144 bytes.
type Stat struct {
	Dev       uint64
	Ino       uint64
	Nlink     uint64
	Mode      uint32
	Uid       uint32
	Gid       uint32
	_         int32
	Rdev      uint64
	Size      int64
	Blksize   int64
	Blocks    int64
	Atime     int64
	AtimeNsec int64
	Mtime     int64
	MtimeNsec int64
	Ctime     int64
	CtimeNsec int64
	_         [3]int64
}

// Dirent64Header is the fixed part of struct linux_dirent64 (getdents64);
// the NUL-terminated name follows, and Reclen rounds the record up to 8.
type Dirent64Header struct {
	Ino    uint64
	Off    int64
	Reclen uint16
	Type   uint8
}

// Dirent64NameOffset is the offset of d_name in struct linux_dirent64.
const Dirent64NameOffset = 19

// Timespec is struct timespec on x86-64.
type Timespec struct {
	Sec  int64
	Nsec int64
}

// StatxTimestamp is struct statx_timestamp.
type StatxTimestamp struct {
	Sec  int64
	Nsec uint32
	_    int32
}

// Statx is struct statx (statx(2)), 256 bytes.
type Statx struct {
	Mask           uint32
	Blksize        uint32
	Attributes     uint64
	Nlink          uint32
	Uid            uint32
	Gid            uint32
	Mode           uint16
	_              uint16
	Ino            uint64
	Size           uint64
	Blocks         uint64
	AttributesMask uint64
	Atime          StatxTimestamp
	Btime          StatxTimestamp
	Ctime          StatxTimestamp
	Mtime          StatxTimestamp
	RdevMajor      uint32
	RdevMinor      uint32
	DevMajor       uint32
	DevMinor       uint32
	MntID          uint64
	DioMemAlign    uint32
	DioOffsetAlign uint32
	_              [12]uint64
}

// statx mask bits.
const (
	STATX_TYPE        = 0x1
	STATX_MODE        = 0x2
	STATX_NLINK       = 0x4
	STATX_UID         = 0x8
	STATX_GID         = 0x10
	STATX_ATIME       = 0x20
	STATX_MTIME       = 0x40
	STATX_CTIME       = 0x80
	STATX_INO         = 0x100
	STATX_SIZE        = 0x200
	STATX_BLOCKS      = 0x400
	STATX_BASIC_STATS = 0x7ff
	STATX_BTIME       = 0x800
	STATX_MNT_ID      = 0x1000
)

// Sysinfo is struct sysinfo (sysinfo(2)) on x86-64, 112 bytes.
type Sysinfo struct {
	Uptime    int64
	Loads     [3]uint64
	Totalram  uint64
	Freeram   uint64
	Sharedram uint64
	Bufferram uint64
	Totalswap uint64
	Freeswap  uint64
	Procs     uint16
	_         [6]byte
	Totalhigh uint64
	Freehigh  uint64
	Unit      uint32
	_         [4]byte
}

// Rlimit is struct rlimit64 (prlimit64(2)).
type Rlimit struct {
	Cur, Max uint64
}

// seccomp user-notification ioctls and flags (linux/seccomp.h).
const (
	SECCOMP_IOCTL_NOTIF_RECV      = 0xc0502100
	SECCOMP_IOCTL_NOTIF_SEND      = 0xc0182101
	SECCOMP_IOCTL_NOTIF_ID_VALID  = 0x40082102
	SECCOMP_IOCTL_NOTIF_ADDFD     = 0x40182103
	SECCOMP_IOCTL_NOTIF_SET_FLAGS = 0x40082104 // Linux 6.6

	SECCOMP_USER_NOTIF_FLAG_CONTINUE = 1
	SECCOMP_ADDFD_FLAG_SETFD         = 1
	SECCOMP_ADDFD_FLAG_SEND          = 2

	// SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP (NOTIF_SET_FLAGS): the kernel
	// hands the CPU straight from the trapping thread to the handler
	// and back, instead of two ordinary wake-ups.
	SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP = 1
)

// SeccompData is struct seccomp_data, what a filter and a notification see.
type SeccompData struct {
	Nr   int32
	Arch uint32
	IP   uint64
	Args [6]uint64
}

// SeccompNotif is struct seccomp_notif (SECCOMP_IOCTL_NOTIF_RECV).
type SeccompNotif struct {
	ID    uint64
	Pid   uint32
	Flags uint32
	Data  SeccompData
}

// SeccompNotifResp is struct seccomp_notif_resp (SECCOMP_IOCTL_NOTIF_SEND).
type SeccompNotifResp struct {
	ID    uint64
	Val   int64
	Error int32
	Flags uint32
}

// SeccompNotifAddfd is struct seccomp_notif_addfd (SECCOMP_IOCTL_NOTIF_ADDFD).
type SeccompNotifAddfd struct {
	ID         uint64
	Flags      uint32
	Srcfd      uint32
	Newfd      uint32
	NewfdFlags uint32
}
