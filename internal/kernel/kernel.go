// Package kernel is the engine's kernel: it serves the syscalls the
// sandbox traps for guest processes (files and paths from the vfs,
// credentials, uname, mounts, exec, the machine's life) and keeps the
// process table that /proc shows. Guest fds are host fds; the kernel
// installs the host objects its filesystems return (memfds, placeholder
// directories, host devices, the console pty) and recognises them again
// by their host identity when a guest passes the fd back.
//
// Trapped syscalls reach the kernel two ways: exec (which needs register
// rewriting) at a ptrace stop on the tracer thread, everything else by
// seccomp user notification. One mutex serialises both.
package kernel

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/umltools/umltools/internal/abi"
	"github.com/umltools/umltools/internal/fs/devfs"
	"github.com/umltools/umltools/internal/fs/devpts"
	"github.com/umltools/umltools/internal/fs/hostfs"
	"github.com/umltools/umltools/internal/fs/procfs"
	"github.com/umltools/umltools/internal/fs/sysfs"
	"github.com/umltools/umltools/internal/netdev"
	"github.com/umltools/umltools/internal/sandbox"
	"github.com/umltools/umltools/internal/vfs"
)

// Console is what the kernel needs of the machine's console: a way to
// open the guest side again (for /dev/console) and its identity.
type Console interface {
	// OpenSlave opens the console's pty slave with the guest's flags.
	OpenSlave(flags int) (*os.File, error)
	// Rdev is the host device number of the slave.
	Rdev() uint64
}

// HaltMode says how the guest asked the machine to stop.
type HaltMode int

// Halt modes (reboot(2) commands).
const (
	PowerOff HaltMode = iota
	Halt
	Restart
)

// String names the mode.
func (m HaltMode) String() string {
	switch m {
	case PowerOff:
		return "power off"
	case Halt:
		return "halt"
	}
	return "restart"
}

// Config describes a machine to the kernel.
type Config struct {
	// Net is the machine's network stack; nil leaves guest sockets to
	// the host (in an empty network namespace).
	Net *netdev.Stack
	// VFS is the mount tree with the root filesystem mounted.
	VFS *vfs.VFS
	// Hostname is the initial nodename (from the image's /etc/hostname).
	Hostname string
	// Mem is the machine's memory size in bytes (mem=).
	Mem uint64
	// Cmdline is the text of /proc/cmdline.
	Cmdline string
	// Console is con0 (nil: none).
	Console Console
	// Logf writes a kernel log line (boot log, dmesg).
	Logf func(format string, a ...any)
	// Dmesg returns the kernel log so far (syslog(2)).
	Dmesg func() []byte
	// OnHalt is called (once, on a syscall handler's goroutine: it must
	// not block) when the guest powers off, halts or reboots, just before
	// the kernel kills every guest process.
	OnHalt func(HaltMode)
	// Trace, when non-nil, receives one line per served syscall.
	Trace func(line string)
	// HostFS is where guest hostfs mounts may reach (hostfs=); nil
	// refuses them.
	HostFS *hostfs.Policy
	// Disks serves mount(2) of the ubd disks' filesystems; nil: none.
	Disks Disks
	// Lines serves the consoles and serial lines other than con0: guest
	// device 4:N (/dev/ttyN, conN) and 4:64+N (/dev/ttySN, sslN). It
	// fails with ENXIO for a line that does not exist. Nil: none.
	Lines func(rdev uint64) (Console, error)
	// UserNotify, when set, receives what guest processes write to
	// /proc/mconsole (which exists only then), a write(2) at a time as
	// far as the pipe behind it keeps them apart.
	UserNotify func(b []byte)
}

// Kernel serves one boot of a machine.
type Kernel struct {
	cfg  Config
	vfs  *vfs.VFS
	boot time.Time

	mu       sync.Mutex
	sb       *sandbox.Sandbox
	procs    map[int]*Process      // by host tgid
	pids     atomic.Pointer[[]int] // procs' keys, for readers without mu
	threads  map[int]*Thread       // by host tid
	init     *Process
	hostname string
	domain   string
	halted   bool
	disks    []vfs.FS // filesystems mounted from Disks
	cadOff   bool     // reboot(LINUX_REBOOT_CMD_CAD_OFF): Ctrl-Alt-Del signals init

	priv      string // the guests' host root (private directory)
	execDir   *sandbox.ExecDir
	nextFile  int
	execs     map[imageKey]string    // exec images by content identity → guest-root path
	loaders   map[*vfs.Dentry]string // dynamic loaders placed in the private root
	objs      map[hostKey]*vfs.Dentry
	procObjs  map[hostKey]*vfs.Dentry
	images    map[hostKey]*vfs.Dentry // exec images and loaders in priv → the guest file
	fifos     map[hostKey]string      // guest FIFOs (mount dev, ino) → host FIFO in priv
	ttys      map[uint64]uint64       // host pty slave rdev → guest tty rdev (lines opened)
	devpts    *devpts.FS
	sysfs     *sysfs.FS
	ptyOwners map[int]devpts.Pty // ptys the guest opened /dev/ptmx for, by number
	bootID    string
	memDev    uint64 // st_dev of memfds
	phDev     uint64 // st_dev of placeholder directories
	devfs     vfs.FS
	procfs    *procfs.FS
	unix      unixNames  // AF_UNIX path bindings (sys_unix.go)
	inet      inetSocks  // TCP sockets on the machine's network (sys_inet.go)
	dgram     dgramSocks // its datagram sockets (sys_dgram.go)
	nl        nlSocks    // its route netlink sockets (sys_netlink.go)
	sysw      sysWrites  // writes to /proc/sys (proc_more.go)
}

type hostKey struct{ dev, ino uint64 }

type imageKey struct {
	dev, ino uint64
	size     int64
	mtime    int64
}

// New prepares a kernel for cfg; Start boots it.
func New(cfg Config) (*Kernel, error) {
	if cfg.Logf == nil {
		cfg.Logf = func(string, ...any) {}
	}
	k := &Kernel{cfg: cfg, vfs: cfg.VFS, boot: time.Now(), procs: map[int]*Process{}, threads: map[int]*Thread{},
		hostname: cfg.Hostname, domain: "(none)", execs: map[imageKey]string{}, loaders: map[*vfs.Dentry]string{},
		objs: map[hostKey]*vfs.Dentry{}, procObjs: map[hostKey]*vfs.Dentry{}, images: map[hostKey]*vfs.Dentry{}, fifos: map[hostKey]string{}, ttys: map[uint64]uint64{}, ptyOwners: map[int]devpts.Pty{},
		bootID: newUUID()}
	if k.hostname == "" {
		k.hostname = "(none)"
	}
	d, err := sandbox.NewExecDir(-1, -1)
	if err != nil {
		return nil, err
	}
	k.execDir, k.priv = d, d.Path
	if err := os.Mkdir(filepath.Join(k.priv, "d"), 0o700); err != nil {
		d.Close()
		return nil, fmt.Errorf("kernel: %w", err)
	}
	var st unix.Stat_t
	if err := unix.Stat(filepath.Join(k.priv, "d"), &st); err != nil {
		d.Close()
		return nil, fmt.Errorf("kernel: %w", err)
	}
	k.phDev = st.Dev
	mfd, err := unix.MemfdCreate("probe", unix.MFD_CLOEXEC)
	if err != nil {
		d.Close()
		return nil, fmt.Errorf("kernel: memfd: %w", err)
	}
	unix.Fstat(mfd, &st)
	unix.Close(mfd)
	k.memDev = st.Dev
	k.devfs = devfs.New()
	k.procfs = procfs.New(k)
	k.devpts = devpts.New(k)
	k.sysfs = sysfs.New(k)
	if cfg.UserNotify != nil {
		k.procfs.Mconsole = k.openNotify
	}
	return k, nil
}

// DevFS returns the machine's devtmpfs instance (shared by every mount of
// it, as Linux's is).
func (k *Kernel) DevFS() vfs.FS { return k.devfs }

// ProcFS returns the kernel's procfs.
func (k *Kernel) ProcFS() vfs.FS { return k.procfs }

// Close removes the kernel's private host directory.
func (k *Kernel) Close() error {
	err := k.unix.close()
	if e := k.execDir.Close(); e != nil {
		err = e
	}
	return err
}

// notified are the syscalls served through user notification.
var notified = []int{
	// opening
	abi.SYS_OPEN, abi.SYS_OPENAT, abi.SYS_OPENAT2, abi.SYS_CREAT,
	// paths and metadata
	abi.SYS_STAT, abi.SYS_LSTAT, abi.SYS_FSTAT, abi.SYS_NEWFSTATAT, abi.SYS_STATX,
	abi.SYS_ACCESS, abi.SYS_FACCESSAT, abi.SYS_FACCESSAT2,
	abi.SYS_READLINK, abi.SYS_READLINKAT, abi.SYS_GETDENTS64, abi.SYS_GETDENTS,
	abi.SYS_GETCWD, abi.SYS_CHDIR, abi.SYS_FCHDIR, abi.SYS_CHROOT,
	abi.SYS_MKDIR, abi.SYS_MKDIRAT, abi.SYS_RMDIR, abi.SYS_UNLINK, abi.SYS_UNLINKAT,
	abi.SYS_RENAME, abi.SYS_RENAMEAT, abi.SYS_RENAMEAT2, abi.SYS_LINK, abi.SYS_LINKAT,
	abi.SYS_SYMLINK, abi.SYS_SYMLINKAT, abi.SYS_MKNOD, abi.SYS_MKNODAT,
	abi.SYS_CHMOD, abi.SYS_FCHMOD, abi.SYS_FCHMODAT, abi.SYS_FCHMODAT2,
	abi.SYS_CHOWN, abi.SYS_FCHOWN, abi.SYS_LCHOWN, abi.SYS_FCHOWNAT,
	abi.SYS_UTIME, abi.SYS_UTIMES, abi.SYS_FUTIMESAT, abi.SYS_UTIMENSAT,
	abi.SYS_TRUNCATE, abi.SYS_STATFS, abi.SYS_FSTATFS, abi.SYS_USTAT,
	abi.SYS_SETXATTR, abi.SYS_LSETXATTR, abi.SYS_FSETXATTR,
	abi.SYS_GETXATTR, abi.SYS_LGETXATTR, abi.SYS_FGETXATTR,
	abi.SYS_LISTXATTR, abi.SYS_LLISTXATTR, abi.SYS_FLISTXATTR,
	abi.SYS_REMOVEXATTR, abi.SYS_LREMOVEXATTR, abi.SYS_FREMOVEXATTR,
	abi.SYS_INOTIFY_ADD_WATCH,
	// durability: the page cache is written back to the image
	abi.SYS_FSYNC, abi.SYS_FDATASYNC, abi.SYS_SYNC, abi.SYS_SYNCFS,
	// mounts
	abi.SYS_MOUNT, abi.SYS_UMOUNT2, abi.SYS_PIVOT_ROOT,
	// sockets whose addresses may name paths
	abi.SYS_BIND, abi.SYS_CONNECT, abi.SYS_SENDTO, abi.SYS_SENDMSG, abi.SYS_SENDMMSG,
	// TCP sockets on the machine's network (sys_inet.go)
	abi.SYS_SOCKET, abi.SYS_GETSOCKOPT, abi.SYS_SETSOCKOPT, abi.SYS_LISTEN,
	// credentials
	abi.SYS_GETUID, abi.SYS_GETEUID, abi.SYS_GETGID, abi.SYS_GETEGID,
	abi.SYS_SETUID, abi.SYS_SETGID, abi.SYS_SETREUID, abi.SYS_SETREGID,
	abi.SYS_SETRESUID, abi.SYS_GETRESUID, abi.SYS_SETRESGID, abi.SYS_GETRESGID,
	abi.SYS_SETFSUID, abi.SYS_SETFSGID, abi.SYS_GETGROUPS, abi.SYS_SETGROUPS,
	abi.SYS_UMASK,
	// the machine
	abi.SYS_UNAME, abi.SYS_SETHOSTNAME, abi.SYS_SETDOMAINNAME, abi.SYS_SYSINFO,
	abi.SYS_SYSLOG, abi.SYS_REBOOT, abi.SYS_GETPRIORITY, abi.SYS_SETPRIORITY,
}

// Notified returns the syscalls the kernel serves through user
// notification (a copy): the benchmarks' floor sends the same ones to a
// supervisor that answers at once.
func Notified() []int { return append([]int(nil), notified...) }

// native are syscalls the default policy traps but that are safe to run
// on the host here: they act on host fds the guest already holds (every
// guest fd is a real host object), or inside the guest's namespaces.
var native = []string{
	"read", "write", "close", "lseek", "pread64", "pwrite64", "readv", "writev",
	"preadv", "pwritev", "preadv2", "pwritev2", "pipe", "pipe2", "dup", "dup2",
	"dup3", "fcntl", "flock", "ioctl", "close_range", "sendfile", "splice", "tee",
	"vmsplice", "copy_file_range", "sync_file_range", "fallocate", "fadvise64", "readahead", "ftruncate",
	"memfd_create", "eventfd", "eventfd2", "signalfd", "signalfd4",
	"timerfd_create", "timerfd_settime", "timerfd_gettime", "epoll_create",
	"epoll_create1", "epoll_ctl", "inotify_init", "inotify_init1",
	"inotify_rm_watch", "pidfd_open", "pidfd_send_signal",
	"socketpair", "accept", "accept4", "shutdown", "getsockname",
	"getpeername", "recvfrom", "recvmsg", "recvmmsg",
	"setrlimit", "prctl", "personality", "vhangup", "sched_setscheduler",
	"sched_setparam", "sched_setattr", "ioprio_get", "ioprio_set",
	"settimeofday", "clock_settime", "adjtimex", "clock_adjtime", "capget", "capset",
}

// Policy returns the kernel's seccomp policy: the sandbox's default, with
// the fd-only syscalls above native. (Syscalls in the notification set
// are decided by the second filter.)
func Policy() *sandbox.Policy {
	p := sandbox.DefaultPolicy()
	for _, name := range native {
		nr, ok := sandbox.Nr(name)
		if !ok {
			panic("kernel: unknown syscall " + name)
		}
		p.Rules[nr] = sandbox.Rule{Else: sandbox.RetAllow}
	}
	// File mmaps act on the memfd the guest holds.
	p.Rules[abi.SYS_MMAP] = sandbox.Rule{Else: sandbox.RetAllow}
	// ioctls run natively on the host object, but those whose number has
	// bit 0x800 (the console's KD* requests, socket SIOC*) come to the
	// kernel first (sys_tty.go).
	p.Rules[abi.SYS_IOCTL] = sandbox.Rule{Else: sandbox.RetAllow, Arg: 1, Mask: ioctlTrapBit, IfSet: sandbox.RetTrace}
	unixPolicy(p)
	return p
}

// Start boots the guest: init is the guest path of the program, argv and
// env its vectors, files its fds 0, 1 and 2.
func (k *Kernel) Start(init string, argv, env []string, files []*os.File) (*sandbox.Sandbox, error) {
	k.mu.Lock()
	root := k.vfs.Root()
	cred := &Cred{}
	p := &Process{pid: 1, FS: &FSContext{Root: root, Cwd: root, Umask: 0o022}, Cred: cred, threads: map[int]*Thread{}}
	w := &vfs.Walker{V: k.vfs, Ctx: &vfs.Ctx{Who: func() (int, int) { return 1, 1 }}, Root: root, Cwd: root}
	host, hargv, err := k.prepareExec(w, p, init, argv)
	k.mu.Unlock()
	if err != nil {
		return nil, err
	}
	p.Comm = commOf(init)
	k.init = p
	sb, err := sandbox.Start(sandbox.Config{
		Path:    host,
		Argv:    hargv,
		Env:     env,
		Files:   files,
		Policy:  Policy(),
		Handler: k,
		Notify:  notified,
		Chroot:  k.priv,
		Setsid:  true,
		// A network namespace of its own: until the engine's network
		// lands, guest sockets reach nothing on the host.
		Cloneflags: unix.CLONE_NEWNET,
	})
	if err != nil {
		return nil, err
	}
	k.mu.Lock()
	k.sb = sb
	k.mu.Unlock()
	return sb, nil
}

// Syscall serves a ptrace-trapped syscall: exec; the rest run natively.
func (k *Kernel) Syscall(t *sandbox.Task, regs *abi.Regs) sandbox.Action {
	switch regs.OrigRax {
	case abi.SYS_EXECVE, abi.SYS_EXECVEAT:
		k.mu.Lock()
		defer k.mu.Unlock()
		return k.sysExec(t, regs)
	case abi.SYS_CLONE, abi.SYS_SECCOMP:
		return sandbox.Native() // the sandbox has enforced its rules
	case abi.SYS_IOCTL:
		return k.ioctlTrap(t, regs)
	case abi.SYS_PRLIMIT64:
		// Setting limits runs natively: the pid is a guest pid (its own
		// namespace). The host refuses to raise a hard limit even for
		// the guest's root, which lacks CAP_SYS_RESOURCE on the host.
		return sandbox.Native()
	}
	if regs.OrigRax == abi.SYS_GETSOCKNAME || regs.OrigRax == abi.SYS_GETPEERNAME {
		if a, ok := k.inetNameTrap(t, regs); ok {
			return a
		}
	}
	if isUnixTrap(regs.OrigRax) {
		a := k.unixTrap(t, regs)
		if (regs.OrigRax == abi.SYS_ACCEPT || regs.OrigRax == abi.SYS_ACCEPT4) && k.inetAcceptTrap(t, regs) {
			return sandbox.NativeExit()
		}
		if (regs.OrigRax == abi.SYS_RECVFROM || regs.OrigRax == abi.SYS_RECVMSG) && k.dgramRecvTrap(t, regs) {
			return sandbox.NativeExit()
		}
		return a
	}
	// A syscall the filter traps but nobody serves: never let it run.
	return sandbox.Fail(abi.ENOSYS)
}

// SyscallExit puts guest names in the socket addresses unixTrap asked
// to see.
func (k *Kernel) SyscallExit(t *sandbox.Task, regs *abi.Regs) {
	k.unixTrapExit(t, regs)
	switch regs.OrigRax {
	case abi.SYS_ACCEPT, abi.SYS_ACCEPT4:
		k.inetAcceptExit(t, regs)
	case abi.SYS_RECVFROM, abi.SYS_RECVMSG:
		k.dgramRecvExit(t, regs)
	}
}

// Event keeps the process table.
func (k *Kernel) Event(t *sandbox.Task, ev sandbox.Event) {
	k.mu.Lock()
	defer k.mu.Unlock()
	switch ev.Kind {
	case sandbox.EvExec:
		th, _ := t.Data.(*Thread)
		if ev.Init {
			p := k.init
			p.Tgid = t.Tid
			p.Start = k.ticks()
			th = &Thread{Tid: t.Tid, nsID: 1, Proc: p}
			p.threads[t.Tid] = th
			k.procs[t.Tid] = p
			k.snapshotPids()
			k.threads[t.Tid] = th
			t.Data = th
			return
		}
		if th == nil {
			return
		}
		th.closeFdDir()
		if ev.OldTid != t.Tid {
			delete(k.threads, ev.OldTid)
			delete(th.Proc.threads, ev.OldTid)
			th.Tid = t.Tid
			th.nsID = th.Proc.pid
		}
		p := th.Proc
		for tid, o := range p.threads {
			if o != th {
				o.closeFdDir()
				delete(k.threads, tid)
				delete(p.threads, tid)
			}
		}
		p.threads[t.Tid] = th
		k.threads[t.Tid] = th
		if th.pendingExe != "" {
			p.Exe, p.Comm = th.pendingExe, th.pendingComm
			th.pendingExe, th.pendingComm = "", ""
		}
	case sandbox.EvClone:
		parent, _ := t.Data.(*Thread)
		if parent == nil {
			return
		}
		c := ev.Child
		th := &Thread{Tid: c.Tid}
		if ev.Flags&abi.CLONE_THREAD != 0 {
			th.Proc = parent.Proc
		} else {
			pp := parent.Proc
			p := &Process{Tgid: c.Tid, Parent: pp, Exe: pp.Exe, Comm: pp.Comm,
				Start: k.ticks(), threads: map[int]*Thread{}}
			if ev.Flags&abi.CLONE_FS != 0 {
				p.FS = pp.FS
			} else {
				f := *pp.FS
				p.FS = &f
			}
			p.Cred = pp.Cred.clone()
			k.procs[c.Tid] = p
			k.snapshotPids()
			th.Proc = p
		}
		th.Proc.threads[c.Tid] = th
		k.threads[c.Tid] = th
		c.Data = th
	case sandbox.EvExit:
		th, _ := t.Data.(*Thread)
		if th == nil {
			return
		}
		th.closeFdDir()
		delete(k.threads, th.Tid)
		p := th.Proc
		delete(p.threads, th.Tid)
		if len(p.threads) == 0 {
			delete(k.procs, p.Tgid)
			k.snapshotPids()
		}
	}
}

// ticks is the time since boot in clock ticks (USER_HZ = 100).
func (k *Kernel) ticks() int64 { return int64(time.Since(k.boot) / (10 * time.Millisecond)) }

// Notify serves a syscall stopped in user notification.
func (k *Kernel) Notify(n *sandbox.Notification) {
	k.mu.Lock()
	defer k.mu.Unlock()
	th := k.threads[n.Pid]
	if th == nil || k.halted {
		n.Fail(abi.ENOSYS)
		return
	}
	c := &call{k: k, n: n, mem: n.Task(), th: th, p: th.Proc, args: n.Args}
	r := k.dispatch(c)
	if r == answered {
		if k.cfg.Trace != nil && !c.detached {
			k.trace(c, int64(c.newfd))
		}
		return
	}
	if r == continued {
		// Only syscalls without path arguments get here: the host runs
		// them on objects the guest holds, in the guest's namespaces.
		if k.cfg.Trace != nil {
			k.traceLine(c.th.NsID(), c.n.Nr, c.args, c.strs, "(run by the host)")
		}
		n.Continue()
		return
	}
	if k.cfg.Trace != nil {
		k.trace(c, r)
	}
	if r < 0 {
		n.Fail(int(-r))
	} else {
		n.Return(r)
	}
}

func (k *Kernel) trace(c *call, r int64) {
	res := strconv.FormatInt(r, 10)
	if r < 0 {
		res = "-1 " + unix.ErrnoName(syscall.Errno(-r)) + " (" + syscall.Errno(-r).Error() + ")"
	}
	k.traceLine(c.th.NsID(), c.n.Nr, c.args, c.strs, res)
}

// traceLine writes one trace line: the guest tid, the syscall with its
// six arguments (strings the kernel read shown quoted) and the result.
func (k *Kernel) traceLine(tid, nr int, args [6]uint64, strs map[uint64]string, res string) {
	name := abi.SyscallNames[nr]
	if name == "" {
		name = "syscall_" + strconv.Itoa(nr)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%d %s(", tid, name)
	for i, a := range args {
		if i > 0 {
			b.WriteString(", ")
		}
		if s, ok := strs[a]; ok && a != 0 {
			b.WriteString(strconv.Quote(s))
		} else {
			fmt.Fprintf(&b, "%#x", a)
		}
	}
	b.WriteString(") = " + res)
	k.cfg.Trace(b.String())
}

// answered is returned by handlers that answered the notification
// themselves (AddFd).
const answered = int64(1) << 62

// continued is returned by handlers that let the syscall run natively.
const continued = int64(1) << 61

// halt stops the machine: every guest process is killed, then OnHalt runs.
func (k *Kernel) halt(mode HaltMode) {
	if k.halted {
		return
	}
	k.halted = true
	// The mode first: once init is killed, the machine may see its end
	// before anything else, and must not take it for init's death.
	if k.cfg.OnHalt != nil {
		k.cfg.OnHalt(mode)
	}
	for tgid := range k.procs {
		unix.Kill(tgid, unix.SIGKILL)
	}
	if k.sb != nil {
		k.sb.Kill()
	}
}
