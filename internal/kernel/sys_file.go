package kernel

import (
	"encoding/binary"
	"errors"
	"os"
	"strings"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/umltools/umltools/internal/abi"
	"github.com/umltools/umltools/internal/fs/devfs"
	"github.com/umltools/umltools/internal/fs/devpts"
	"github.com/umltools/umltools/internal/vfs"
)

// Open flags the kernel looks at.
const (
	oPath      = unix.O_PATH
	oTmpfile   = unix.O_TMPFILE
	oDirectory = syscall.O_DIRECTORY
)

func (c *call) sysOpen(dirfd int, pathAddr uint64, flags int, mode uint32) int64 {
	path, r := c.str(pathAddr)
	if r < 0 {
		return r
	}
	if flags&oTmpfile == oTmpfile {
		return -abi.EOPNOTSUPP
	}
	w, r := c.walker(dirfd, path)
	if r < 0 {
		return r
	}
	cloexec := flags&syscall.O_CLOEXEC != 0
	acc := flags & syscall.O_ACCMODE
	var d *vfs.Dentry
	if flags&syscall.O_CREAT != 0 && flags&oPath == 0 {
		dir, name, trailing, err := w.Parent(path)
		if err != nil {
			return errno(err)
		}
		if name == "" || trailing {
			return -abi.EISDIR
		}
		d, err = w.Lookup(path, flags&syscall.O_EXCL == 0 && flags&syscall.O_NOFOLLOW == 0)
		switch {
		case err == nil:
			if flags&syscall.O_EXCL != 0 {
				return -abi.EEXIST
			}
		case errors.Is(err, syscall.ENOENT):
			if r := c.mayWrite(dir); r < 0 {
				return r
			}
			wd, ok := dir.Node.(vfs.WritableDir)
			if !ok {
				return -abi.EROFS
			}
			n, err := wd.Create(name, mode&0o7777&^c.p.FS.Umask, c.p.Cred.Fsuid, c.p.Cred.Fsgid)
			if err != nil {
				return errno(err)
			}
			d = c.k.vfs.Created(dir, name, n)
		default:
			return errno(err)
		}
	} else {
		var err error
		d, err = w.Lookup(path, flags&syscall.O_NOFOLLOW == 0)
		if err != nil {
			return errno(err)
		}
	}
	a, err := d.Node.Attr()
	if err != nil {
		return errno(err)
	}
	if strings.HasSuffix(path, "/") && !a.IsDir() {
		return -abi.ENOTDIR
	}
	if flags&oDirectory != 0 && !a.IsDir() {
		return -abi.ENOTDIR
	}
	if flags&oPath != 0 {
		return c.openPath(d, &a, flags, cloexec)
	}
	switch a.Type() {
	case syscall.S_IFLNK:
		return -abi.ELOOP
	case syscall.S_IFDIR:
		if acc != syscall.O_RDONLY || flags&syscall.O_TRUNC != 0 {
			return -abi.EISDIR
		}
		f, err := c.k.placeholder(d, flags)
		if err != nil {
			return errno(err)
		}
		return c.install(f, d, cloexec)
	case syscall.S_IFCHR, syscall.S_IFBLK:
		if d.Mount.Flags&vfs.NoDev != 0 {
			return -abi.EACCES
		}
		if r := c.permit(&a, accessWant(acc)); r < 0 {
			return r
		}
		f, r := c.openDevice(a.Rdev, a.Type(), flags)
		if r < 0 {
			return r
		}
		if a.Type() == syscall.S_IFCHR && (a.Rdev == devfs.Tty || a.Rdev == devfs.Tty0) {
			// Aliases of a terminal: the fd is the terminal itself,
			// known by its own node (fdObject), not by /dev/tty.
			d = nil
		}
		return c.install(f, d, cloexec)
	case syscall.S_IFREG:
		if acc != syscall.O_RDONLY || flags&syscall.O_TRUNC != 0 {
			if d.Mount.ReadOnly() {
				return -abi.EROFS
			}
		}
		if r := c.permit(&a, accessWant(acc)); r < 0 {
			return r
		}
		on, ok := d.Node.(vfs.OpenNode)
		if !ok {
			return -abi.ENXIO
		}
		f, err := on.Open(c.ctx(), flags)
		if err != nil {
			return errno(err)
		}
		r := c.install(f, d, cloexec)
		if pd := d.Parent(); pd != nil && pd.Mount == d.Mount && acc == syscall.O_RDONLY {
			if ra, ok := pd.Node.(vfs.Readaheader); ok {
				ra.Readahead(d.Name) // the guest runs already
			}
		}
		return r
	case syscall.S_IFIFO:
		if r := c.permit(&a, accessWant(acc)); r < 0 {
			return r
		}
		return c.openFifo(d, &a, flags, cloexec)
	}
	// Sockets in the filesystem are opened by connect(2), not open(2).
	return -abi.ENXIO
}

// openPath serves O_PATH. The host cannot pass O_PATH descriptors to the
// guest (seccomp's ADDFD refuses them), so the guest gets a read-only
// stand-in that the kernel knows as d: the directory's placeholder, or
// an empty file for anything else. It is never the file's content,
// which O_PATH does not grant.
func (c *call) openPath(d *vfs.Dentry, a *vfs.Attr, flags int, cloexec bool) int64 {
	if a.Type() == syscall.S_IFLNK && flags&syscall.O_NOFOLLOW == 0 {
		return -abi.ELOOP
	}
	var f *os.File
	var err error
	if a.IsDir() {
		f, err = c.k.placeholder(d, 0)
	} else {
		f, err = c.k.placeholderFile(d)
	}
	if err != nil {
		return errno(err)
	}
	return c.install(f, d, cloexec)
}

// openDevice opens the host object behind guest device rdev.
func (c *call) openDevice(rdev uint64, typ uint32, flags int) (*os.File, int64) {
	keep := flags & (syscall.O_ACCMODE | syscall.O_APPEND | syscall.O_NONBLOCK)
	if typ == syscall.S_IFBLK {
		if c.k.cfg.Disks == nil {
			return nil, -abi.ENXIO
		}
		if flags&syscall.O_ACCMODE != syscall.O_RDONLY {
			// Mounted read-write (the root included): the filesystem
			// driver's cache would not see the guest's writes.
			for _, m := range c.k.vfs.Mounts() {
				if m.Dev == rdev && !m.ReadOnly() {
					return nil, -abi.EBUSY
				}
			}
		}
		f, err := c.k.cfg.Disks.OpenDisk(rdev, keep|flags&(syscall.O_SYNC|syscall.O_DSYNC|syscall.O_DIRECT))
		if err != nil {
			return nil, errno(err)
		}
		return f, 0
	}
	if p := devfs.HostPath(rdev); p != "" {
		// syscall.Open, not os.OpenFile: Go makes character devices it
		// opens non-blocking, and the guest would share that.
		fd, err := syscall.Open(p, keep|syscall.O_CLOEXEC, 0)
		if err != nil {
			return nil, errno(err)
		}
		return os.NewFile(uintptr(fd), p), 0
	}
	switch rdev {
	case devfs.Console, devfs.Tty0:
		return c.k.openConsole(keep)
	case devfs.Tty:
		if !c.k.hasConsoleCtty(c.th.Tid) {
			return c.k.openCtty(c.th.Tid, keep)
		}
		return c.k.openConsole(keep)
	}
	if rdev == devpts.Ptmx {
		return c.openPtmx(keep)
	}
	if n := devpts.Number(rdev); n >= 0 {
		return c.k.openPtySlave(n, keep)
	}
	if vfs.Major(rdev) == 4 {
		return c.k.openLine(rdev, keep)
	}
	return nil, -abi.ENXIO
}

// openCtty opens /dev/tty for a thread whose controlling terminal is a
// line other than the console: that line's pty.
func (k *Kernel) openCtty(tid, flags int) (*os.File, int64) {
	f := hostStat(tid)
	if len(f) < 5 || k.cfg.Lines == nil {
		return nil, -abi.ENXIO
	}
	n, _ := parseInt(f[4])
	guest, ok := k.ttys[uint64(n)]
	if !ok {
		return nil, -abi.ENXIO
	}
	return k.openLine(guest, flags)
}

// openLine opens the pty of console or serial line rdev (4:N, 4:64+N)
// and notes which guest device its host pty is.
func (k *Kernel) openLine(rdev uint64, flags int) (*os.File, int64) {
	if k.cfg.Lines == nil {
		return nil, -abi.ENXIO
	}
	con, err := k.cfg.Lines(rdev)
	if err != nil {
		return nil, errno(err)
	}
	k.ttys[con.Rdev()] = rdev
	f, err := con.OpenSlave(flags | syscall.O_NOCTTY)
	if err != nil {
		return nil, errno(err)
	}
	return f, 0
}

func (k *Kernel) openConsole(flags int) (*os.File, int64) {
	if k.cfg.Console == nil {
		return nil, -abi.ENODEV
	}
	f, err := k.cfg.Console.OpenSlave(flags | syscall.O_NOCTTY)
	if err != nil {
		return nil, errno(err)
	}
	return f, 0
}

// hasConsoleCtty reports whether the console is host task tid's
// controlling terminal (/proc/<tid>/stat field 7).
func (k *Kernel) hasConsoleCtty(tid int) bool {
	if k.cfg.Console == nil {
		return false
	}
	f := hostStat(tid)
	if len(f) < 5 {
		return false
	}
	n, _ := parseInt(f[4])
	return uint64(n) == k.cfg.Console.Rdev()
}

func accessWant(acc int) uint32 {
	switch acc {
	case syscall.O_WRONLY:
		return 2
	case syscall.O_RDWR:
		return 6
	}
	return 4
}

// permit checks want (rwx bits, 4/2/1) against a node's mode for the
// caller's fs credentials; root passes except for exec without any x bit.
func (c *call) permit(a *vfs.Attr, want uint32) int64 {
	cr := c.p.Cred
	if cr.Fsuid == 0 {
		if want&1 != 0 && !a.IsDir() && a.Mode&0o111 == 0 {
			return -abi.EACCES
		}
		return 0
	}
	m := a.Mode & 7
	switch {
	case a.Uid == cr.Fsuid:
		m = a.Mode >> 6 & 7
	case a.Gid == cr.Fsgid || contains(cr.Groups, a.Gid):
		m = a.Mode >> 3 & 7
	}
	if want&^m != 0 {
		return -abi.EACCES
	}
	return 0
}

func contains(l []uint32, v uint32) bool {
	for _, x := range l {
		if x == v {
			return true
		}
	}
	return false
}

// mayWrite checks that entries can be added to or removed from dir.
func (c *call) mayWrite(dir *vfs.Dentry) int64 {
	if dir.Mount.ReadOnly() {
		return -abi.EROFS
	}
	a, err := dir.Node.Attr()
	if err != nil {
		return errno(err)
	}
	return c.permit(&a, 3)
}

// statOf builds struct stat for a dentry.
func statOf(d *vfs.Dentry) (abi.Stat, int64) {
	a, err := d.Node.Attr()
	if err != nil {
		return abi.Stat{}, errno(err)
	}
	return attrStat(&a, d.Mount.Dev), 0
}

func attrStat(a *vfs.Attr, dev uint64) abi.Stat {
	bs := int64(a.Blksize)
	if bs == 0 {
		bs = 4096
	}
	return abi.Stat{Dev: dev, Ino: a.Ino, Nlink: uint64(a.Nlink), Mode: a.Mode, Uid: a.Uid, Gid: a.Gid,
		Rdev: a.Rdev, Size: a.Size, Blksize: bs, Blocks: a.Blocks,
		Atime: a.Atime.Unix(), AtimeNsec: int64(a.Atime.Nanosecond()),
		Mtime: a.Mtime.Unix(), MtimeNsec: int64(a.Mtime.Nanosecond()),
		Ctime: a.Ctime.Unix(), CtimeNsec: int64(a.Ctime.Nanosecond())}
}

func hostToStat(st *unix.Stat_t) abi.Stat {
	return abi.Stat{Dev: st.Dev, Ino: st.Ino, Nlink: st.Nlink, Mode: st.Mode, Uid: st.Uid, Gid: st.Gid,
		Rdev: st.Rdev, Size: st.Size, Blksize: st.Blksize, Blocks: st.Blocks,
		Atime: st.Atim.Sec, AtimeNsec: st.Atim.Nsec, Mtime: st.Mtim.Sec, MtimeNsec: st.Mtim.Nsec,
		Ctime: st.Ctim.Sec, CtimeNsec: st.Ctim.Nsec}
}

// fdStat is fstat of guest fd n.
func (c *call) fdStat(n int) (abi.Stat, int64) {
	o, r := c.fd(n)
	if r < 0 {
		return abi.Stat{}, r
	}
	if o.d == nil {
		return hostToStat(&o.st), 0
	}
	if ha, ok := o.d.Mount.FS.(vfs.HostAttrs); ok && o.st.Dev != c.k.phDev {
		a := ha.HostAttr(&o.st) // the open host file itself (hostfs)
		return attrStat(&a, o.d.Mount.Dev), 0
	}
	st, r := statOf(o.d)
	if r == 0 && o.st.Mode&syscall.S_IFMT == syscall.S_IFREG && st.Mode&syscall.S_IFMT == syscall.S_IFREG {
		// The memfd is the page cache: its size is the file's.
		st.Size = o.st.Size
	}
	return st, r
}

func (c *call) putStat(addr uint64, st *abi.Stat) int64 {
	return c.write(addr, unsafe.Slice((*byte)(unsafe.Pointer(st)), unsafe.Sizeof(*st)))
}

// sysStat serves stat, lstat, newfstatat and fstat.
func (c *call) sysStat(dirfd int, pathAddr uint64, buf uint64, flags int) int64 {
	st, r := c.statAt(dirfd, pathAddr, flags)
	if r < 0 {
		return r
	}
	return c.putStat(buf, &st)
}

func (c *call) statAt(dirfd int, pathAddr uint64, flags int) (abi.Stat, int64) {
	path, r := c.str(pathAddr)
	if r < 0 {
		return abi.Stat{}, r
	}
	if path == "" {
		if flags&abi.AT_EMPTY_PATH == 0 {
			return abi.Stat{}, -abi.ENOENT
		}
		if dirfd == abi.AT_FDCWD {
			return statOf(c.p.FS.Cwd)
		}
		return c.fdStat(dirfd)
	}
	d, r := c.lookup(dirfd, path, flags&abi.AT_SYMLINK_NOFOLLOW == 0)
	if r < 0 {
		return abi.Stat{}, r
	}
	return statOf(d)
}

// lookup resolves a path argument (with the trailing-slash rule).
func (c *call) lookup(dirfd int, path string, follow bool) (*vfs.Dentry, int64) {
	w, r := c.walker(dirfd, path)
	if r < 0 {
		return nil, r
	}
	d, err := w.Lookup(path, follow)
	if err != nil {
		return nil, errno(err)
	}
	if strings.HasSuffix(path, "/") {
		if a, err := d.Node.Attr(); err != nil || !a.IsDir() {
			return nil, -abi.ENOTDIR
		}
	}
	return d, 0
}

func (c *call) sysStatx(dirfd int, pathAddr uint64, flags int, mask uint32, buf uint64) int64 {
	st, r := c.statAt(dirfd, pathAddr, flags)
	if r < 0 {
		return r
	}
	x := abi.Statx{Mask: abi.STATX_BASIC_STATS, Blksize: uint32(st.Blksize), Nlink: uint32(st.Nlink),
		Uid: st.Uid, Gid: st.Gid, Mode: uint16(st.Mode), Ino: st.Ino, Size: uint64(st.Size), Blocks: uint64(st.Blocks),
		Atime:     abi.StatxTimestamp{Sec: st.Atime, Nsec: uint32(st.AtimeNsec)},
		Mtime:     abi.StatxTimestamp{Sec: st.Mtime, Nsec: uint32(st.MtimeNsec)},
		Ctime:     abi.StatxTimestamp{Sec: st.Ctime, Nsec: uint32(st.CtimeNsec)},
		RdevMajor: vfs.Major(st.Rdev), RdevMinor: vfs.Minor(st.Rdev),
		DevMajor: vfs.Major(st.Dev), DevMinor: vfs.Minor(st.Dev)}
	return c.write(buf, unsafe.Slice((*byte)(unsafe.Pointer(&x)), unsafe.Sizeof(x)))
}

func (c *call) sysAccess(dirfd int, pathAddr uint64, mode uint32, flags int) int64 {
	path, r := c.str(pathAddr)
	if r < 0 {
		return r
	}
	if mode&^7 != 0 {
		return -abi.EINVAL
	}
	var d *vfs.Dentry
	if path == "" && flags&abi.AT_EMPTY_PATH != 0 {
		o, r := c.fd(dirfd)
		if r < 0 {
			return r
		}
		if o.d == nil {
			return 0
		}
		d = o.d
	} else if d, r = c.lookup(dirfd, path, flags&abi.AT_SYMLINK_NOFOLLOW == 0); r < 0 {
		return r
	}
	if mode == 0 {
		return 0
	}
	a, err := d.Node.Attr()
	if err != nil {
		return errno(err)
	}
	if mode&2 != 0 && d.Mount.ReadOnly() && a.Type() != syscall.S_IFCHR && a.Type() != syscall.S_IFBLK {
		return -abi.EROFS
	}
	return c.permit(&a, mode)
}

func (c *call) sysReadlink(dirfd int, pathAddr, buf uint64, size int) int64 {
	path, r := c.str(pathAddr)
	if r < 0 {
		return r
	}
	if size <= 0 {
		return -abi.EINVAL
	}
	var d *vfs.Dentry
	if path == "" {
		o, r := c.fd(dirfd)
		if r < 0 {
			return r
		}
		if o.d == nil {
			return -abi.ENOENT
		}
		d = o.d
	} else if d, r = c.lookup(dirfd, path, false); r < 0 {
		return r
	}
	l, ok := d.Node.(vfs.LinkNode)
	if !ok {
		return -abi.EINVAL
	}
	t, err := l.Readlink(c.ctx())
	if err != nil {
		return errno(err)
	}
	if len(t) > size {
		t = t[:size]
	}
	if r := c.write(buf, []byte(t)); r < 0 {
		return r
	}
	return int64(len(t))
}

// sysGetdents64 lists a directory from the position kept in the host
// placeholder's file offset (so lseek, rewinddir and fork sharing work
// natively). Entry i of ".", "..", children… has d_off i+1.
func (c *call) sysGetdents64(fd int, buf uint64, count int) int64 {
	o, r := c.fd(fd)
	if r < 0 {
		return r
	}
	if o.d == nil || o.st.Dev != c.k.phDev || o.st.Mode&syscall.S_IFMT != syscall.S_IFDIR {
		return -abi.ENOTDIR
	}
	d := o.d
	dn, ok := d.Node.(vfs.DirNode)
	if !ok {
		return -abi.ENOTDIR
	}
	hf, err := c.k.takeFd(c.th.Tid, fd)
	if err != nil {
		return errno(err)
	}
	defer unix.Close(hf)
	pos, err := unix.Seek(hf, 0, 1)
	if err != nil {
		return errno(err)
	}
	ents, err := dn.ReadDir(c.ctx())
	if err != nil {
		return errno(err)
	}
	a, _ := d.Node.Attr()
	parent := d
	if d != c.p.FS.Root {
		w := &vfs.Walker{V: c.k.vfs, Ctx: c.ctx(), Root: c.p.FS.Root, Cwd: d}
		if p, err := w.Lookup("..", true); err == nil {
			parent = p
		}
	}
	pa, _ := parent.Node.Attr()
	all := make([]vfs.Dirent, 0, len(ents)+2)
	all = append(all, vfs.Dirent{Name: ".", Ino: a.Ino, Type: syscall.DT_DIR}, vfs.Dirent{Name: "..", Ino: pa.Ino, Type: syscall.DT_DIR})
	all = append(all, ents...)
	out := make([]byte, 0, count)
	i := int(pos)
	for ; i < len(all); i++ {
		e := all[i]
		rec := (abi.Dirent64NameOffset + len(e.Name) + 1 + 7) &^ 7
		if len(out)+rec > count {
			break
		}
		b := make([]byte, rec)
		binary.LittleEndian.PutUint64(b[0:], e.Ino)
		binary.LittleEndian.PutUint64(b[8:], uint64(i+1))
		binary.LittleEndian.PutUint16(b[16:], uint16(rec))
		b[18] = e.Type
		copy(b[abi.Dirent64NameOffset:], e.Name)
		out = append(out, b...)
	}
	if i < len(all) && len(out) == 0 {
		return -abi.EINVAL // buffer too small for one entry
	}
	if r := c.write(buf, out); r < 0 {
		return r
	}
	if _, err := unix.Seek(hf, int64(i), 0); err != nil {
		return errno(err)
	}
	return int64(len(out))
}

// takeFd copies guest fd n of host task tid into the engine.
func (k *Kernel) takeFd(tid, n int) (int, error) {
	pidfd, err := unix.PidfdOpen(tid, 0)
	if err != nil {
		return -1, err
	}
	defer unix.Close(pidfd)
	return unix.PidfdGetfd(pidfd, n, 0)
}

func (c *call) sysGetcwd(buf uint64, size int) int64 {
	p := c.k.vfs.Path(c.p.FS.Cwd, c.p.FS.Root)
	if len(p)+1 > size {
		return -abi.ERANGE
	}
	if r := c.write(buf, append([]byte(p), 0)); r < 0 {
		return r
	}
	return int64(len(p) + 1)
}

func (c *call) sysChdir(pathAddr uint64, root bool) int64 {
	path, r := c.str(pathAddr)
	if r < 0 {
		return r
	}
	d, r := c.lookup(abi.AT_FDCWD, path, true)
	if r < 0 {
		return r
	}
	return c.setDir(d, root)
}

func (c *call) setDir(d *vfs.Dentry, root bool) int64 {
	a, err := d.Node.Attr()
	if err != nil {
		return errno(err)
	}
	if !a.IsDir() {
		return -abi.ENOTDIR
	}
	if r := c.permit(&a, 1); r < 0 {
		return r
	}
	if root {
		if !c.p.Cred.root() {
			return -abi.EPERM
		}
		c.p.FS.Root = d
		return 0
	}
	c.p.FS.Cwd = d
	return 0
}

func (c *call) sysFchdir(fd int) int64 {
	o, r := c.fd(fd)
	if r < 0 {
		return r
	}
	if o.d == nil {
		return -abi.ENOTDIR
	}
	return c.setDir(o.d, false)
}

// sysStatfs serves statfs and fstatfs.
func (c *call) sysStatfs(d *vfs.Dentry, buf uint64) int64 {
	s := d.Mount.FS.Statfs()
	var st unix.Statfs_t
	st.Type = s.Type
	st.Bsize = s.Bsize
	st.Frsize = s.Bsize
	st.Blocks, st.Bfree, st.Bavail, st.Files, st.Ffree = s.Blocks, s.Bfree, s.Bavail, s.Files, s.Ffree
	st.Namelen = s.NameLen
	st.Fsid.Val = [2]int32{int32(d.Mount.Dev), int32(d.Mount.Dev >> 32)}
	st.Flags = int64(d.Mount.Flags&(vfs.ReadOnly|vfs.NoSuid|vfs.NoDev|vfs.NoExec)) | 0x20 // ST_VALID
	return c.write(buf, unsafe.Slice((*byte)(unsafe.Pointer(&st)), unsafe.Sizeof(st)))
}

func (c *call) fdDentry(fd int) (*vfs.Dentry, int64) {
	o, r := c.fd(fd)
	if r < 0 {
		return nil, r
	}
	if o.d == nil {
		return nil, -abi.EBADF
	}
	return o.d, 0
}
