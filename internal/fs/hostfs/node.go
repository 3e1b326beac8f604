package hostfs

import (
	"encoding/binary"
	"fmt"
	"os"
	"path"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/umltools/umltools/internal/abi"
	"github.com/umltools/umltools/internal/vfs"
)

// node is what every hostfs node is: a path relative to the mount's
// directory, resolved again (beneath it) by every operation.
type node struct {
	fs  *FS
	rel string
}

// Attr stats the host file now.
func (n *node) Attr() (vfs.Attr, error) {
	st, err := n.fs.statx(n.rel)
	if err != nil {
		return vfs.Attr{}, err
	}
	return n.fs.attr(&st), nil
}

// split returns the parent's path and the last name ("" for the root).
func (n *node) split() (dir, name string) {
	if n.rel == "." {
		return ".", ""
	}
	d, name := path.Split(n.rel)
	if d == "" {
		return ".", name
	}
	return d[:len(d)-1], name
}

func (n *node) child(name string) string {
	if n.rel == "." {
		return name
	}
	return n.rel + "/" + name
}

func (n *node) writable() error {
	if n.fs.ro.Load() {
		return fmt.Errorf("hostfs: %s: %w", n.rel, syscall.EROFS)
	}
	return nil
}

// withPath runs fn on the object itself, held by an O_PATH descriptor;
// link is whether that object is a symbolic link.
func (n *node) withPath(fn func(fd int, link bool) error) error {
	fd, err := n.fs.open(n.rel, unix.O_PATH)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fmt.Errorf("hostfs: %s: %w", n.rel, err)
	}
	if err := fn(fd, st.Mode&unix.S_IFMT == unix.S_IFLNK); err != nil {
		return fmt.Errorf("hostfs: %s: %w", n.rel, err)
	}
	return nil
}

// Chmod sets the permission bits (EOPNOTSUPP on a symbolic link, as
// Linux's fchmodat2 with AT_SYMLINK_NOFOLLOW).
func (n *node) Chmod(mode uint32) error {
	if err := n.writable(); err != nil {
		return err
	}
	return n.withPath(func(fd int, link bool) error {
		if link {
			return syscall.EOPNOTSUPP
		}
		return unix.Chmod(procFd(fd), mode&0o7777)
	})
}

// Chown changes the owner as far as the host lets the engine's user.
func (n *node) Chown(uid, gid int) error {
	if err := n.writable(); err != nil {
		return err
	}
	hu, hg := n.fs.hostID(uid, n.fs.hostUid, n.fs.uid), n.fs.hostID(gid, n.fs.hostGid, n.fs.gid)
	return n.withPath(func(fd int, _ bool) error {
		return unix.Fchownat(fd, "", hu, hg, unix.AT_EMPTY_PATH|unix.AT_SYMLINK_NOFOLLOW)
	})
}

// Utimes sets the access and modification times (nil keeps one).
func (n *node) Utimes(atime, mtime *time.Time) error {
	if err := n.writable(); err != nil {
		return err
	}
	ts := func(t *time.Time) unix.Timespec {
		if t == nil {
			return unix.Timespec{Nsec: unix.UTIME_OMIT}
		}
		return unix.NsecToTimespec(t.UnixNano())
	}
	tv := []unix.Timespec{ts(atime), ts(mtime)}
	return n.withPath(func(fd int, _ bool) error {
		return unix.UtimesNanoAt(fd, "", tv, unix.AT_EMPTY_PATH|unix.AT_SYMLINK_NOFOLLOW)
	})
}

// Truncate sets a regular file's size.
func (n *node) Truncate(size int64) error {
	if err := n.writable(); err != nil {
		return err
	}
	fd, err := n.fs.open(n.rel, unix.O_WRONLY)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if err := unix.Ftruncate(fd, size); err != nil {
		return fmt.Errorf("hostfs: truncate %s: %w", n.rel, err)
	}
	return nil
}

// Sync is fsync or fdatasync of the host file.
func (n *node) Sync(dataOnly bool) error {
	fd, err := n.fs.open(n.rel, unix.O_RDONLY)
	if err != nil {
		if fd, err = n.fs.open(n.rel, unix.O_WRONLY); err != nil {
			return err
		}
	}
	defer unix.Close(fd)
	if dataOnly {
		err = unix.Fdatasync(fd)
	} else {
		err = unix.Fsync(fd)
	}
	if err != nil {
		return fmt.Errorf("hostfs: fsync %s: %w", n.rel, err)
	}
	return nil
}

// xattrPath runs fn with a path that names the object for the host's
// l*xattr calls: the parent directory's magic link and the name (the
// final name is never followed), or the mount's directory itself.
func (n *node) xattrPath(fn func(p string, follow bool) error) error {
	dir, name := n.split()
	if name == "" {
		return n.withPath(func(fd int, _ bool) error { return fn(procFd(fd), true) })
	}
	fd, err := n.fs.open(dir, unix.O_PATH|unix.O_DIRECTORY)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if err := fn(procFd(fd)+"/"+name, false); err != nil {
		return fmt.Errorf("hostfs: %s: %w", n.rel, err)
	}
	return nil
}

// Getxattr reads an extended attribute from the host.
func (n *node) Getxattr(attr string) ([]byte, error) {
	var out []byte
	err := n.xattrPath(func(p string, follow bool) (err error) {
		get := unix.Lgetxattr
		if follow {
			get = unix.Getxattr
		}
		out, err = grow(256, func(b []byte) (int, error) { return get(p, attr, b) })
		return err
	})
	return out, err
}

// Listxattr lists the host's extended attributes.
func (n *node) Listxattr() ([]string, error) {
	var out []byte
	err := n.xattrPath(func(p string, follow bool) (err error) {
		list := unix.Llistxattr
		if follow {
			list = unix.Listxattr
		}
		out, err = grow(1024, func(b []byte) (int, error) { return list(p, b) })
		return err
	})
	return splitNul(out), err
}

// grow calls fn with larger buffers while it answers ERANGE (the value
// grew between the calls), up to the kernel's 64 KiB xattr limit and
// beyond.
func grow(size int, fn func([]byte) (int, error)) ([]byte, error) {
	for ; ; size *= 4 {
		buf := make([]byte, size)
		m, err := fn(buf)
		if err == unix.ERANGE && size < 1<<20 {
			continue
		}
		if err != nil {
			return nil, err
		}
		return buf[:m], nil
	}
}

func splitNul(b []byte) []string {
	var out []string
	for len(b) > 0 {
		i := 0
		for i < len(b) && b[i] != 0 {
			i++
		}
		if i > 0 {
			out = append(out, string(b[:i]))
		}
		if i == len(b) {
			break
		}
		b = b[i+1:]
	}
	return out
}

// Setxattr sets an extended attribute on the host.
func (n *node) Setxattr(attr string, value []byte, flags int) error {
	if err := n.writable(); err != nil {
		return err
	}
	return n.xattrPath(func(p string, follow bool) error {
		if follow {
			return unix.Setxattr(p, attr, value, flags)
		}
		return unix.Lsetxattr(p, attr, value, flags)
	})
}

// Removexattr removes an extended attribute on the host.
func (n *node) Removexattr(attr string) error {
	if err := n.writable(); err != nil {
		return err
	}
	return n.xattrPath(func(p string, follow bool) error {
		if follow {
			return unix.Removexattr(p, attr)
		}
		return unix.Lremovexattr(p, attr)
	})
}

// File is a host regular file.
type File struct{ node }

// Open opens the host file itself with the guest's flags: the guest's
// descriptor is the host's open file, so reads, writes and mmap run
// natively and reach the host file at once.
func (f *File) Open(_ *vfs.Ctx, flags int) (*os.File, error) {
	fl := flags &^ (unix.O_CREAT | unix.O_EXCL | unix.O_CLOEXEC | unix.O_PATH | unix.O_DIRECTORY | unix.O_TMPFILE)
	if fl&unix.O_ACCMODE != unix.O_RDONLY || fl&unix.O_TRUNC != 0 {
		if err := f.writable(); err != nil {
			return nil, err
		}
		if f.fs.append && fl&unix.O_ACCMODE != unix.O_RDONLY {
			fl |= unix.O_APPEND
		}
	}
	fd, err := f.fs.open(f.rel, fl)
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(fd), "hostfs:"+f.rel), nil
}

// Link is a host symbolic link; the guest's vfs follows it in the guest's
// tree.
type Link struct{ node }

// Readlink reads the link's target.
func (l *Link) Readlink(*vfs.Ctx) (string, error) {
	fd, err := l.fs.open(l.rel, unix.O_PATH)
	if err != nil {
		return "", err
	}
	defer unix.Close(fd)
	for size := 256; ; size *= 4 {
		buf := make([]byte, size)
		m, err := unix.Readlinkat(fd, "", buf)
		if err != nil {
			return "", fmt.Errorf("hostfs: readlink %s: %w", l.rel, err)
		}
		if m < size || size >= vfs.PathMax {
			return string(buf[:m]), nil
		}
	}
}

// Special is a host device, FIFO or socket node: the guest sees its
// attributes; opening devices is the engine's business (by number).
type Special struct{ node }

// Dir is a host directory.
type Dir struct{ node }

// Lookup stats the child called name.
func (d *Dir) Lookup(_ *vfs.Ctx, name string) (vfs.Node, error) {
	if err := validName(name); err != nil {
		return nil, err
	}
	rel := d.child(name)
	st, err := d.fs.statx(rel)
	if err != nil {
		return nil, err
	}
	return d.fs.node(rel, uint32(st.Mode)), nil
}

// ReadDir lists the host directory in the host's order.
func (d *Dir) ReadDir(*vfs.Ctx) ([]vfs.Dirent, error) {
	fd, err := d.fs.open(d.rel, unix.O_RDONLY|unix.O_DIRECTORY)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	var out []vfs.Dirent
	buf := make([]byte, 32<<10)
	for {
		m, err := unix.Getdents(fd, buf)
		if err != nil {
			return nil, fmt.Errorf("hostfs: getdents %s: %w", d.rel, err)
		}
		if m <= 0 {
			return out, nil
		}
		for b := buf[:m]; len(b) >= abi.Dirent64NameOffset; {
			reclen := int(binary.LittleEndian.Uint16(b[16:]))
			if reclen < abi.Dirent64NameOffset || reclen > len(b) {
				return nil, fmt.Errorf("hostfs: getdents %s: bad record: %w", d.rel, syscall.EIO)
			}
			name := b[abi.Dirent64NameOffset:reclen]
			for i, c := range name {
				if c == 0 {
					name = name[:i]
					break
				}
			}
			if s := string(name); s != "." && s != ".." {
				out = append(out, vfs.Dirent{Name: s, Ino: binary.LittleEndian.Uint64(b), Type: b[18]})
			}
			b = b[reclen:]
		}
	}
}

// dirFd opens the directory for the *at calls that change it.
func (d *Dir) dirFd() (int, error) { return d.fs.open(d.rel, unix.O_PATH|unix.O_DIRECTORY) }

// change runs fn on the directory's descriptor and the checked name.
func (d *Dir) change(name string, fn func(dfd int) error) error {
	if err := d.writable(); err != nil {
		return err
	}
	if err := validName(name); err != nil {
		return err
	}
	dfd, err := d.dirFd()
	if err != nil {
		return err
	}
	defer unix.Close(dfd)
	if err := fn(dfd); err != nil {
		return fmt.Errorf("hostfs: %s: %w", d.child(name), err)
	}
	return nil
}

// own gives a new object (held by fd, O_PATH or not) the guest's mode and
// owner: the engine's umask is not the guest's, and the engine's user may
// not be the guest's (a chown the host refuses leaves the engine's user).
func (d *Dir) own(fd int, mode uint32, link bool, uid, gid uint32) error {
	if !link {
		if err := unix.Chmod(procFd(fd), mode&0o7777); err != nil {
			return err
		}
	}
	hu, hg := d.fs.hostID(int(uid), d.fs.hostUid, d.fs.uid), d.fs.hostID(int(gid), d.fs.hostGid, d.fs.gid)
	if uint32(hu) == d.fs.hostUid && uint32(hg) == d.fs.hostGid {
		return nil
	}
	if err := unix.Fchownat(fd, "", hu, hg, unix.AT_EMPTY_PATH|unix.AT_SYMLINK_NOFOLLOW); err != nil && err != unix.EPERM {
		return err
	}
	return nil
}

// made opens what fn just made, gives it its mode and owner and returns
// its node.
func (d *Dir) made(name string, mode uint32, uid, gid uint32, fn func(dfd int) error) (vfs.Node, error) {
	var n vfs.Node
	err := d.change(name, func(dfd int) error {
		if err := fn(dfd); err != nil {
			return err
		}
		fd, err := unix.Openat(dfd, name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			return err
		}
		if err := d.own(fd, mode, st.Mode&unix.S_IFMT == unix.S_IFLNK, uid, gid); err != nil {
			return err
		}
		n = d.fs.node(d.child(name), st.Mode)
		return nil
	})
	return n, err
}

// Create makes an empty regular file.
func (d *Dir) Create(name string, mode, uid, gid uint32) (vfs.Node, error) {
	return d.made(name, mode, uid, gid, func(dfd int) error {
		return unix.Mknodat(dfd, name, unix.S_IFREG|mode&0o7777, 0)
	})
}

// Mkdir makes a directory.
func (d *Dir) Mkdir(name string, mode, uid, gid uint32) (vfs.Node, error) {
	return d.made(name, mode, uid, gid, func(dfd int) error {
		return unix.Mkdirat(dfd, name, mode&0o7777)
	})
}

// Symlink makes a symbolic link. Its target is only text to the host:
// the engine never follows it there.
func (d *Dir) Symlink(name, target string, uid, gid uint32) (vfs.Node, error) {
	return d.made(name, 0o777, uid, gid, func(dfd int) error {
		return unix.Symlinkat(target, dfd, name)
	})
}

// Mknod makes a device, FIFO or socket node (devices as far as the host
// lets the engine).
func (d *Dir) Mknod(name string, mode uint32, rdev uint64, uid, gid uint32) (vfs.Node, error) {
	return d.made(name, mode, uid, gid, func(dfd int) error {
		return unix.Mknodat(dfd, name, mode, int(rdev))
	})
}

// Link makes name a hard link to target, a node of the same mount.
func (d *Dir) Link(name string, target vfs.Node) error {
	var t *node
	switch n := target.(type) {
	case *File:
		t = &n.node
	case *Link:
		t = &n.node
	case *Special:
		t = &n.node
	case *Dir:
		return fmt.Errorf("hostfs: link %s: %w", n.rel, syscall.EPERM)
	}
	if t == nil || t.fs != d.fs {
		return fmt.Errorf("hostfs: link %s: %w", d.child(name), syscall.EXDEV)
	}
	tdir, tname := t.split()
	sfd, err := d.fs.open(tdir, unix.O_PATH|unix.O_DIRECTORY)
	if err != nil {
		return err
	}
	defer unix.Close(sfd)
	return d.change(name, func(dfd int) error { return unix.Linkat(sfd, tname, dfd, name, 0) })
}

// Unlink removes a non-directory.
func (d *Dir) Unlink(name string) error {
	return d.change(name, func(dfd int) error { return unix.Unlinkat(dfd, name, 0) })
}

// Rmdir removes an empty directory.
func (d *Dir) Rmdir(name string) error {
	return d.change(name, func(dfd int) error { return unix.Unlinkat(dfd, name, unix.AT_REMOVEDIR) })
}

// Rename moves name to newname in to, a directory of the same mount.
func (d *Dir) Rename(name string, to vfs.WritableDir, newname string) error {
	return d.RenameFlags(name, to, newname, 0)
}

// RenameFlags is renameat2 with RENAME_NOREPLACE or RENAME_EXCHANGE.
func (d *Dir) RenameFlags(name string, to vfs.WritableDir, newname string, flags uint32) error {
	td, ok := to.(*Dir)
	if !ok || td.fs != d.fs {
		return fmt.Errorf("hostfs: rename %s: %w", d.child(name), syscall.EXDEV)
	}
	if err := validName(newname); err != nil {
		return err
	}
	tfd, err := td.dirFd()
	if err != nil {
		return err
	}
	defer unix.Close(tfd)
	return d.change(name, func(dfd int) error { return unix.Renameat2(dfd, name, tfd, newname, uint(flags)) })
}

// Interfaces the vfs and the kernel look for.
var (
	_ vfs.WritableDir = (*Dir)(nil)
	_ vfs.Renamer     = (*Dir)(nil)
	_ vfs.OpenNode    = (*File)(nil)
	_ vfs.LinkNode    = (*Link)(nil)
	_ vfs.SetAttr     = (*File)(nil)
	_ vfs.Xattrs      = (*File)(nil)
	_ vfs.Syncer      = (*File)(nil)
	_ vfs.Remounter   = (*FS)(nil)
	_ vfs.SyncFS      = (*FS)(nil)
)
