package kernel

import (
	"syscall"
	"time"

	"github.com/umltools/umltools/internal/abi"
	"github.com/umltools/umltools/internal/vfs"
)

// parentOf resolves the directory that will hold or loses an entry, and
// checks that the caller may change it.
func (c *call) parentOf(dirfd int, pathAddr uint64) (*vfs.Dentry, vfs.WritableDir, string, bool, int64) {
	path, r := c.str(pathAddr)
	if r < 0 {
		return nil, nil, "", false, r
	}
	w, r := c.walker(dirfd, path)
	if r < 0 {
		return nil, nil, "", false, r
	}
	dir, name, trailing, err := w.Parent(path)
	if err != nil {
		return nil, nil, "", false, errno(err)
	}
	if name == "" {
		return dir, nil, "", trailing, -abi.EEXIST
	}
	// Creators that must report EEXIST before EROFS check it themselves
	// (exists), as Linux reports an existing name first.
	if r := c.mayWrite(dir); r < 0 {
		return dir, nil, name, trailing, r
	}
	wd, ok := dir.Node.(vfs.WritableDir)
	if !ok {
		return dir, nil, name, trailing, -abi.EROFS
	}
	return dir, wd, name, trailing, 0
}

// exists reports whether dir has name (for EEXIST before EROFS).
func (c *call) exists(dir *vfs.Dentry, name string) bool {
	if dir == nil || name == "" {
		return dir != nil
	}
	w := &vfs.Walker{V: c.k.vfs, Ctx: c.ctx(), Root: c.p.FS.Root, Cwd: dir}
	_, err := w.Lookup(name, false)
	return err == nil
}

func (c *call) sysMkdir(dirfd int, pathAddr uint64, mode uint32) int64 {
	dir, wd, name, _, r := c.parentOf(dirfd, pathAddr)
	if r < 0 {
		if c.exists(dir, name) {
			return -abi.EEXIST
		}
		return r
	}
	if _, err := wd.Mkdir(name, mode&0o7777&^c.p.FS.Umask, c.p.Cred.Fsuid, c.p.Cred.Fsgid); err != nil {
		return errno(err)
	}
	c.k.vfs.Forget(dir, name)
	return 0
}

func (c *call) sysMknod(dirfd int, pathAddr uint64, mode uint32, dev uint64) int64 {
	dir, wd, name, _, r := c.parentOf(dirfd, pathAddr)
	if r < 0 {
		if c.exists(dir, name) {
			return -abi.EEXIST
		}
		return r
	}
	t := mode & syscall.S_IFMT
	if (t == syscall.S_IFCHR || t == syscall.S_IFBLK) && !c.p.Cred.root() {
		return -abi.EPERM
	}
	if t == syscall.S_IFDIR {
		return -abi.EPERM
	}
	if t == 0 {
		mode |= syscall.S_IFREG
	}
	perm := mode & 0o7777 &^ c.p.FS.Umask
	if _, err := wd.Mknod(name, mode&syscall.S_IFMT|perm, dev, c.p.Cred.Fsuid, c.p.Cred.Fsgid); err != nil {
		return errno(err)
	}
	c.k.vfs.Forget(dir, name)
	return 0
}

func (c *call) sysSymlink(targetAddr uint64, dirfd int, pathAddr uint64) int64 {
	target, r := c.str(targetAddr)
	if r < 0 {
		return r
	}
	if target == "" {
		return -abi.ENOENT
	}
	dir, wd, name, _, r := c.parentOf(dirfd, pathAddr)
	if r < 0 {
		if c.exists(dir, name) {
			return -abi.EEXIST
		}
		return r
	}
	if _, err := wd.Symlink(name, target, c.p.Cred.Fsuid, c.p.Cred.Fsgid); err != nil {
		return errno(err)
	}
	c.k.vfs.Forget(dir, name)
	return 0
}

func (c *call) sysLink(olddirfd int, oldAddr uint64, newdirfd int, newAddr uint64, flags int) int64 {
	oldPath, r := c.str(oldAddr)
	if r < 0 {
		return r
	}
	src, r := c.lookup(olddirfd, oldPath, flags&abi.AT_SYMLINK_FOLLOW != 0)
	if r < 0 {
		return r
	}
	dir, wd, name, _, r := c.parentOf(newdirfd, newAddr)
	if r < 0 {
		if c.exists(dir, name) {
			return -abi.EEXIST
		}
		return r
	}
	if src.Mount != dir.Mount {
		return -abi.EXDEV
	}
	if a, _ := src.Node.Attr(); a.IsDir() {
		return -abi.EPERM
	}
	if err := wd.Link(name, src.Node); err != nil {
		return errno(err)
	}
	c.k.vfs.Forget(dir, name)
	return 0
}

func (c *call) sysUnlink(dirfd int, pathAddr uint64, flags int) int64 {
	if flags&^abi.AT_REMOVEDIR != 0 {
		return -abi.EINVAL
	}
	rmdir := flags&abi.AT_REMOVEDIR != 0
	dir, wd, name, trailing, r := c.parentOf(dirfd, pathAddr)
	if r == -abi.EEXIST && name == "" {
		if rmdir {
			return -abi.EBUSY
		}
		return -abi.EISDIR
	}
	if r < 0 {
		if !c.exists(dir, name) && dir != nil && name != "" {
			return -abi.ENOENT
		}
		return r
	}
	w := &vfs.Walker{V: c.k.vfs, Ctx: c.ctx(), Root: c.p.FS.Root, Cwd: dir}
	victim, err := w.Lookup(name, false)
	if err != nil {
		return errno(err)
	}
	if victim.Mount != dir.Mount || victim.Mounted() != nil {
		return -abi.EBUSY // a mount point
	}
	a, _ := victim.Node.Attr()
	if trailing && !a.IsDir() {
		return -abi.ENOTDIR
	}
	if rmdir {
		if !a.IsDir() {
			return -abi.ENOTDIR
		}
		if victim == c.p.FS.Root {
			return -abi.EBUSY
		}
		err = wd.Rmdir(name)
	} else {
		if a.IsDir() {
			return -abi.EISDIR
		}
		err = wd.Unlink(name)
	}
	if err != nil {
		return errno(err)
	}
	c.k.vfs.Forget(dir, name)
	return 0
}

func (c *call) sysRename(olddirfd int, oldAddr uint64, newdirfd int, newAddr uint64, flags uint) int64 {
	const noReplace, exchange = 1, 2 // RENAME_NOREPLACE, RENAME_EXCHANGE
	if flags&^(noReplace|exchange) != 0 || flags == noReplace|exchange {
		return -abi.EINVAL // RENAME_WHITEOUT is for overlayfs
	}
	odir, owd, oname, _, r := c.parentOf(olddirfd, oldAddr)
	if r < 0 {
		if odir != nil && oname != "" && !c.exists(odir, oname) {
			return -abi.ENOENT
		}
		if oname == "" {
			return -abi.EBUSY
		}
		return r
	}
	ndir, nwd, nname, _, r := c.parentOf(newdirfd, newAddr)
	if r < 0 {
		if nname == "" {
			return -abi.EBUSY
		}
		return r
	}
	if odir.Mount != ndir.Mount {
		return -abi.EXDEV
	}
	w := &vfs.Walker{V: c.k.vfs, Ctx: c.ctx(), Root: c.p.FS.Root, Cwd: odir}
	src, err := w.Lookup(oname, false)
	if err != nil {
		return errno(err)
	}
	if src.Mounted() != nil || src.Mount != odir.Mount {
		return -abi.EBUSY
	}
	// Not into itself.
	for p := ndir; p != nil; p = p.Parent() {
		if p == src {
			return -abi.EINVAL
		}
	}
	var err2 error
	if flags == 0 {
		err2 = owd.Rename(oname, nwd, nname)
	} else if rn, ok := owd.(vfs.Renamer); ok {
		err2 = rn.RenameFlags(oname, nwd, nname, uint32(flags))
	} else {
		err2 = syscall.EINVAL
	}
	if err2 != nil {
		return errno(err2)
	}
	c.k.vfs.Forget(odir, oname)
	c.k.vfs.Forget(ndir, nname)
	return 0
}

// setattrTarget resolves the node a chmod/chown/utimes acts on: a path
// (dirfd, path, follow) or, with an empty path and AT_EMPTY_PATH or for
// the f* calls (pathAddr 0), fd dirfd.
func (c *call) setattrTarget(dirfd int, pathAddr uint64, follow, byFd bool) (*vfs.Dentry, vfs.SetAttr, int64) {
	var d *vfs.Dentry
	var r int64
	if byFd {
		if d, r = c.fdDentry(dirfd); r < 0 {
			return nil, nil, r
		}
	} else {
		path, r := c.str(pathAddr)
		if r < 0 {
			return nil, nil, r
		}
		if d, r = c.lookup(dirfd, path, follow); r < 0 {
			return nil, nil, r
		}
	}
	if d.Mount.ReadOnly() {
		return nil, nil, -abi.EROFS
	}
	sa, ok := d.Node.(vfs.SetAttr)
	if !ok {
		return nil, nil, -abi.EPERM
	}
	return d, sa, 0
}

func (c *call) owner(d *vfs.Dentry) int64 {
	if c.p.Cred.root() {
		return 0 // root may change any file's attributes
	}
	a, err := d.Node.Attr()
	if err != nil {
		return errno(err)
	}
	if a.Uid != c.p.Cred.Fsuid {
		return -abi.EPERM
	}
	return 0
}

func (c *call) sysChmod(dirfd int, pathAddr uint64, mode uint32, byFd bool, flags int) int64 {
	d, sa, r := c.setattrTarget(dirfd, pathAddr, flags&abi.AT_SYMLINK_NOFOLLOW == 0, byFd)
	if r < 0 {
		return r
	}
	if r := c.owner(d); r < 0 {
		return r
	}
	return errno(sa.Chmod(mode & 0o7777))
}

func (c *call) sysChown(dirfd int, pathAddr uint64, uid, gid int, follow, byFd bool) int64 {
	d, sa, r := c.setattrTarget(dirfd, pathAddr, follow, byFd)
	if r < 0 {
		return r
	}
	if !c.p.Cred.root() {
		return -abi.EPERM
	}
	_ = d
	return errno(sa.Chown(uid, gid))
}

// sysUtimensat serves utimensat (times is a timespec[2] or NULL).
func (c *call) sysUtimensat(dirfd int, pathAddr, times uint64, flags int) int64 {
	byFd := pathAddr == 0
	d, sa, r := c.setattrTarget(dirfd, pathAddr, flags&abi.AT_SYMLINK_NOFOLLOW == 0, byFd)
	if r < 0 {
		return r
	}
	now := time.Now()
	at, mt := &now, &now
	if times != 0 {
		var ts [2]abi.Timespec
		b := make([]byte, 32)
		if r := c.read(times, b); r < 0 {
			return r
		}
		for i := range ts {
			ts[i].Sec = int64(le64(b[16*i:]))
			ts[i].Nsec = int64(le64(b[16*i+8:]))
		}
		pick := func(t abi.Timespec) (*time.Time, int64) {
			switch t.Nsec {
			case utimeNow:
				return &now, 0
			case utimeOmit:
				return nil, 0
			}
			if t.Nsec < 0 || t.Nsec >= 1e9 {
				return nil, -abi.EINVAL
			}
			v := time.Unix(t.Sec, t.Nsec)
			return &v, 0
		}
		if at, r = pick(ts[0]); r < 0 {
			return r
		}
		if mt, r = pick(ts[1]); r < 0 {
			return r
		}
		if (at != nil && at != &now) || (mt != nil && mt != &now) {
			if r := c.owner(d); r < 0 {
				return r
			}
		}
	}
	return errno(sa.Utimes(at, mt))
}

const (
	utimeNow  = (1 << 30) - 1
	utimeOmit = (1 << 30) - 2
)

func le64(b []byte) uint64 {
	return uint64(b[0]) | uint64(b[1])<<8 | uint64(b[2])<<16 | uint64(b[3])<<24 |
		uint64(b[4])<<32 | uint64(b[5])<<40 | uint64(b[6])<<48 | uint64(b[7])<<56
}

func (c *call) sysTruncate(pathAddr uint64, size int64) int64 {
	if size < 0 {
		return -abi.EINVAL
	}
	d, sa, r := c.setattrTarget(abi.AT_FDCWD, pathAddr, true, false)
	if r < 0 {
		return r
	}
	if a, _ := d.Node.Attr(); a.IsDir() {
		return -abi.EISDIR
	}
	return errno(sa.Truncate(size))
}

// sysUtimes serves utimes/futimesat (timeval[2]) and utime (utimbuf).
func (c *call) sysUtimes(dirfd int, pathAddr, times uint64, utimbuf bool) int64 {
	d, sa, r := c.setattrTarget(dirfd, pathAddr, true, false)
	if r < 0 {
		return r
	}
	now := time.Now()
	at, mt := now, now
	if times != 0 {
		b := make([]byte, 32)
		n := 32
		if utimbuf {
			n = 16
		}
		if r := c.read(times, b[:n]); r < 0 {
			return r
		}
		if utimbuf {
			at = time.Unix(int64(le64(b)), 0)
			mt = time.Unix(int64(le64(b[8:])), 0)
		} else {
			at = time.Unix(int64(le64(b)), int64(le64(b[8:]))*1000)
			mt = time.Unix(int64(le64(b[16:])), int64(le64(b[24:]))*1000)
		}
		if r := c.owner(d); r < 0 {
			return r
		}
	}
	return errno(sa.Utimes(&at, &mt))
}
