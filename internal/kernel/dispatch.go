package kernel

import (
	"encoding/binary"
	"syscall"

	"github.com/umltools/umltools/internal/abi"
)

// dispatch serves one notified syscall and returns its result (or
// answered/continued).
func (k *Kernel) dispatch(c *call) int64 {
	a := c.args
	fd := func(i int) int { return int(int32(a[i])) }
	id := func(i int) int64 { // a uid/gid argument: (uid_t)-1 keeps
		if uint32(a[i]) == 0xffffffff {
			return -1
		}
		return int64(uint32(a[i]))
	}
	switch c.n.Nr {
	// opening
	case abi.SYS_OPEN:
		return c.sysOpen(abi.AT_FDCWD, a[0], int(a[1]), uint32(a[2]))
	case abi.SYS_OPENAT:
		return c.sysOpen(fd(0), a[1], int(a[2]), uint32(a[3]))
	case abi.SYS_CREAT:
		return c.sysOpen(abi.AT_FDCWD, a[0], 0o1101, uint32(a[1])) // O_CREAT|O_WRONLY|O_TRUNC
	case abi.SYS_OPENAT2:
		var how [24]byte
		if a[3] < 24 {
			return -abi.EINVAL
		}
		if r := c.read(a[2], how[:]); r < 0 {
			return r
		}
		if binary.LittleEndian.Uint64(how[16:]) != 0 {
			return -abi.EINVAL // RESOLVE_* come later
		}
		return c.sysOpen(fd(0), a[1], int(binary.LittleEndian.Uint64(how[:])), uint32(binary.LittleEndian.Uint64(how[8:])))

	// stat family
	case abi.SYS_STAT:
		return c.sysStat(abi.AT_FDCWD, a[0], a[1], 0)
	case abi.SYS_LSTAT:
		return c.sysStat(abi.AT_FDCWD, a[0], a[1], abi.AT_SYMLINK_NOFOLLOW)
	case abi.SYS_FSTAT:
		st, r := c.fdStat(fd(0))
		if r < 0 {
			return r
		}
		return c.putStat(a[1], &st)
	case abi.SYS_NEWFSTATAT:
		return c.sysStat(fd(0), a[1], a[2], int(a[3]))
	case abi.SYS_STATX:
		return c.sysStatx(fd(0), a[1], int(a[2]), uint32(a[3]), a[4])
	case abi.SYS_ACCESS:
		return c.sysAccess(abi.AT_FDCWD, a[0], uint32(a[1]), 0)
	case abi.SYS_FACCESSAT:
		return c.sysAccess(fd(0), a[1], uint32(a[2]), 0)
	case abi.SYS_FACCESSAT2:
		return c.sysAccess(fd(0), a[1], uint32(a[2]), int(a[3]))
	case abi.SYS_READLINK:
		return c.sysReadlink(abi.AT_FDCWD, a[0], a[1], int(int32(a[2])))
	case abi.SYS_READLINKAT:
		return c.sysReadlink(fd(0), a[1], a[2], int(int32(a[3])))
	case abi.SYS_GETDENTS64:
		return c.sysGetdents64(fd(0), a[1], int(uint32(a[2])))
	case abi.SYS_GETDENTS:
		return -abi.ENOSYS // the old format: no libc of this century uses it
	case abi.SYS_STATFS:
		path, r := c.str(a[0])
		if r < 0 {
			return r
		}
		d, r := c.lookup(abi.AT_FDCWD, path, true)
		if r < 0 {
			return r
		}
		return c.sysStatfs(d, a[1])
	case abi.SYS_FSTATFS:
		d, r := c.fdDentry(fd(0))
		if r < 0 {
			return continued // a pipe or socket: the host answers
		}
		return c.sysStatfs(d, a[1])
	case abi.SYS_USTAT:
		return -abi.ENOSYS

	// cwd and root
	case abi.SYS_GETCWD:
		return c.sysGetcwd(a[0], int(a[1]))
	case abi.SYS_CHDIR:
		return c.sysChdir(a[0], false)
	case abi.SYS_FCHDIR:
		return c.sysFchdir(fd(0))
	case abi.SYS_CHROOT:
		return c.sysChdir(a[0], true)
	case abi.SYS_UMASK:
		old := c.p.FS.Umask
		c.p.FS.Umask = uint32(a[0]) & 0o777
		return int64(old)

	// changing the tree
	case abi.SYS_MKDIR:
		return c.sysMkdir(abi.AT_FDCWD, a[0], uint32(a[1]))
	case abi.SYS_MKDIRAT:
		return c.sysMkdir(fd(0), a[1], uint32(a[2]))
	case abi.SYS_MKNOD:
		return c.sysMknod(abi.AT_FDCWD, a[0], uint32(a[1]), a[2])
	case abi.SYS_MKNODAT:
		return c.sysMknod(fd(0), a[1], uint32(a[2]), a[3])
	case abi.SYS_RMDIR:
		return c.sysUnlink(abi.AT_FDCWD, a[0], abi.AT_REMOVEDIR)
	case abi.SYS_UNLINK:
		return c.sysUnlink(abi.AT_FDCWD, a[0], 0)
	case abi.SYS_UNLINKAT:
		return c.sysUnlink(fd(0), a[1], int(a[2]))
	case abi.SYS_RENAME:
		return c.sysRename(abi.AT_FDCWD, a[0], abi.AT_FDCWD, a[1], 0)
	case abi.SYS_RENAMEAT:
		return c.sysRename(fd(0), a[1], fd(2), a[3], 0)
	case abi.SYS_RENAMEAT2:
		return c.sysRename(fd(0), a[1], fd(2), a[3], uint(a[4]))
	case abi.SYS_LINK:
		return c.sysLink(abi.AT_FDCWD, a[0], abi.AT_FDCWD, a[1], 0)
	case abi.SYS_LINKAT:
		return c.sysLink(fd(0), a[1], fd(2), a[3], int(a[4]))
	case abi.SYS_SYMLINK:
		return c.sysSymlink(a[0], abi.AT_FDCWD, a[1])
	case abi.SYS_SYMLINKAT:
		return c.sysSymlink(a[0], fd(1), a[2])
	case abi.SYS_CHMOD:
		return c.sysChmod(abi.AT_FDCWD, a[0], uint32(a[1]), false, 0)
	case abi.SYS_FCHMOD:
		return c.sysChmod(fd(0), 0, uint32(a[1]), true, 0)
	case abi.SYS_FCHMODAT, abi.SYS_FCHMODAT2:
		if c.n.Nr == abi.SYS_FCHMODAT {
			a[3] = 0
		}
		return c.sysChmod(fd(0), a[1], uint32(a[2]), false, int(a[3]))
	case abi.SYS_CHOWN:
		return c.sysChown(abi.AT_FDCWD, a[0], int(id(1)), int(id(2)), true, false)
	case abi.SYS_LCHOWN:
		return c.sysChown(abi.AT_FDCWD, a[0], int(id(1)), int(id(2)), false, false)
	case abi.SYS_FCHOWN:
		return c.sysChown(fd(0), 0, int(id(1)), int(id(2)), true, true)
	case abi.SYS_FCHOWNAT:
		return c.sysChown(fd(0), a[1], int(id(2)), int(id(3)), a[4]&abi.AT_SYMLINK_NOFOLLOW == 0, false)
	case abi.SYS_UTIMENSAT:
		return c.sysUtimensat(fd(0), a[1], a[2], int(a[3]))
	case abi.SYS_UTIMES:
		return c.sysUtimes(abi.AT_FDCWD, a[0], a[1], false)
	case abi.SYS_FUTIMESAT:
		return c.sysUtimes(fd(0), a[1], a[2], false)
	case abi.SYS_UTIME:
		return c.sysUtimes(abi.AT_FDCWD, a[0], a[1], true)
	case abi.SYS_TRUNCATE:
		return c.sysTruncate(a[0], int64(a[1]))

	// extended attributes
	case abi.SYS_GETXATTR, abi.SYS_LGETXATTR:
		return c.sysGetxattr(c.xattrPath(a[0], c.n.Nr == abi.SYS_GETXATTR), a[1], a[2], int(a[3]))
	case abi.SYS_FGETXATTR:
		return c.sysGetxattr(c.xattrFd(fd(0)), a[1], a[2], int(a[3]))
	case abi.SYS_LISTXATTR, abi.SYS_LLISTXATTR:
		return c.sysListxattr(c.xattrPath(a[0], c.n.Nr == abi.SYS_LISTXATTR), a[1], int(a[2]))
	case abi.SYS_FLISTXATTR:
		return c.sysListxattr(c.xattrFd(fd(0)), a[1], int(a[2]))
	case abi.SYS_SETXATTR, abi.SYS_LSETXATTR:
		return c.sysSetxattr(c.xattrPath(a[0], c.n.Nr == abi.SYS_SETXATTR), a[1], a[2], int(a[3]), int(a[4]))
	case abi.SYS_FSETXATTR:
		return c.sysSetxattr(c.xattrFd(fd(0)), a[1], a[2], int(a[3]), int(a[4]))
	case abi.SYS_REMOVEXATTR, abi.SYS_LREMOVEXATTR:
		return c.sysRemovexattr(c.xattrPath(a[0], c.n.Nr == abi.SYS_REMOVEXATTR), a[1])
	case abi.SYS_FREMOVEXATTR:
		return c.sysRemovexattr(c.xattrFd(fd(0)), a[1])

	// durability
	case abi.SYS_FSYNC:
		return c.sysFsync(fd(0), false)
	case abi.SYS_FDATASYNC:
		return c.sysFsync(fd(0), true)
	case abi.SYS_SYNCFS:
		return c.sysSyncfs(fd(0))
	case abi.SYS_SYNC:
		return c.sysSync()
	case abi.SYS_INOTIFY_ADD_WATCH:
		return -abi.ENOSPC // no watches yet: callers fall back to polling

	// mounts
	case abi.SYS_MOUNT:
		return c.sysMount(a[0], a[1], a[2], a[3], a[4])
	case abi.SYS_UMOUNT2:
		return c.sysUmount(a[0], int(a[1]))
	case abi.SYS_PIVOT_ROOT:
		return -abi.EINVAL

	// sockets
	case abi.SYS_SOCKET:
		return c.sysSocket(int(int32(a[0])), int(int32(a[1])), int(int32(a[2])))
	case abi.SYS_LISTEN:
		return c.sysListen(int(int32(a[0])), int(int32(a[1])))
	case abi.SYS_GETSOCKOPT:
		return c.sysSockopt(true)
	case abi.SYS_SETSOCKOPT:
		return c.sysSockopt(false)
	case abi.SYS_BIND:
		if r := c.inetAddr(int(int32(a[0])), a[1], int(int32(a[2])), true); r != continued {
			return r
		}
		return c.sockPath(a[1], int(a[2]), true)
	case abi.SYS_CONNECT:
		if r := c.inetAddr(int(int32(a[0])), a[1], int(int32(a[2])), false); r != continued {
			return r
		}
		return c.sockPath(a[1], int(a[2]), false)
	case abi.SYS_SENDTO:
		if r := c.inetSendTo(int(int32(a[0])), a[4], int(int32(a[5])), func() ([]byte, int64) {
			if a[2] > 65535 {
				return nil, -int64(syscall.EMSGSIZE)
			}
			b := make([]byte, a[2])
			return b, c.read(a[1], b)
		}); r != continued {
			return r
		}
		return c.sockPath(a[4], int(a[5]), false)
	case abi.SYS_SENDMSG:
		return c.sendmsgPath(a[1])
	case abi.SYS_SENDMMSG:
		n := int(a[2])
		if n > 1024 {
			n = 1024
		}
		for i := 0; i < n; i++ {
			if r := c.sendmsgPath(a[1] + uint64(64*i)); r != continued {
				return r
			}
		}
		return continued

	// credentials
	case abi.SYS_GETUID:
		return int64(c.p.Cred.Uid)
	case abi.SYS_GETEUID:
		return int64(c.p.Cred.Euid)
	case abi.SYS_GETGID:
		return int64(c.p.Cred.Gid)
	case abi.SYS_GETEGID:
		return int64(c.p.Cred.Egid)
	case abi.SYS_SETUID:
		return c.sysSetuid(id(0), false)
	case abi.SYS_SETGID:
		return c.sysSetuid(id(0), true)
	case abi.SYS_SETREUID:
		return c.sysSetreuid(id(0), id(1), false)
	case abi.SYS_SETREGID:
		return c.sysSetreuid(id(0), id(1), true)
	case abi.SYS_SETRESUID:
		return c.sysSetresuid(id(0), id(1), id(2), false)
	case abi.SYS_SETRESGID:
		return c.sysSetresuid(id(0), id(1), id(2), true)
	case abi.SYS_GETRESUID:
		return c.sysGetres(a[0], a[1], a[2], false)
	case abi.SYS_GETRESGID:
		return c.sysGetres(a[0], a[1], a[2], true)
	case abi.SYS_SETFSUID:
		return c.sysSetfsuid(id(0), false)
	case abi.SYS_SETFSGID:
		return c.sysSetfsuid(id(0), true)
	case abi.SYS_GETGROUPS:
		return c.sysGetgroups(int(int32(a[0])), a[1])
	case abi.SYS_SETGROUPS:
		return c.sysSetgroups(int(int32(a[0])), a[1])

	// the machine
	case abi.SYS_UNAME:
		return c.sysUname(a[0])
	case abi.SYS_SETHOSTNAME:
		return c.sysSethostname(a[0], int(a[1]), false)
	case abi.SYS_SETDOMAINNAME:
		return c.sysSethostname(a[0], int(a[1]), true)
	case abi.SYS_SYSINFO:
		return c.sysSysinfo(a[0])
	case abi.SYS_SYSLOG:
		return c.sysSyslog(int(a[0]), a[1], int(int32(a[2])))
	case abi.SYS_REBOOT:
		return c.sysReboot(uint32(a[0]), uint32(a[1]), uint32(a[2]))
	case abi.SYS_GETPRIORITY:
		return c.sysPriority(false, int(a[0]))
	case abi.SYS_SETPRIORITY:
		return c.sysPriority(true, int(a[0]))
	}
	return -abi.ENOSYS
}
