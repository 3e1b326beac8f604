// Package vfs is the engine's virtual filesystem: the node interfaces that
// filesystems (ext4 images, tmpfs, procfs, devtmpfs) implement, the mount
// tree, and path resolution with Linux's rules (symlinks, "..", mount
// crossing, trailing slashes, ENAMETOOLONG, ELOOP).
//
// Guest file descriptors are host fds: a filesystem's Open returns a host
// file (a memfd page cache, a host device, a pty) that the kernel installs
// in the guest. The vfs never touches a host path of the guest's choosing.
package vfs

import (
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Attr is what stat reports about a node. Dev is filled in by the mount.
type Attr struct {
	Ino     uint64
	Mode    uint32 // S_IF* | permission bits
	Nlink   uint32
	Uid     uint32
	Gid     uint32
	Rdev    uint64 // device number (unix.Mkdev encoding) of device nodes
	Size    int64
	Blocks  int64 // 512-byte units
	Blksize int32
	Atime   time.Time
	Mtime   time.Time
	Ctime   time.Time
	Btime   time.Time // zero when unknown
}

// Type returns the S_IFMT bits of the mode.
func (a *Attr) Type() uint32 { return a.Mode & syscall.S_IFMT }

// IsDir reports whether the node is a directory.
func (a *Attr) IsDir() bool { return a.Type() == syscall.S_IFDIR }

// Dirent is one directory entry as ReadDir lists it ("." and ".." are
// added by the vfs).
type Dirent struct {
	Name string
	Ino  uint64
	Type uint8 // DT_*
}

// Ctx is the calling guest task, for nodes whose content depends on the
// caller (/proc/self).
type Ctx struct {
	// Who returns the caller's guest (namespace) pid and tid; it may be
	// costly, so nodes call it only when they need it.
	Who func() (pid, tid int)
}

// Self returns Who's answer, or zeros without a caller.
func (c *Ctx) Self() (pid, tid int) {
	if c == nil || c.Who == nil {
		return 0, 0
	}
	return c.Who()
}

// Node is a filesystem object.
type Node interface {
	Attr() (Attr, error)
}

// DirNode is a directory.
type DirNode interface {
	Node
	// Lookup returns the child called name (never "." or ".."), or an
	// error wrapping syscall.ENOENT.
	Lookup(c *Ctx, name string) (Node, error)
	// ReadDir lists the children (without "." and "..").
	ReadDir(c *Ctx) ([]Dirent, error)
}

// LinkNode is a symbolic link.
type LinkNode interface {
	Node
	Readlink(c *Ctx) (string, error)
}

// OpenNode is a node whose content a guest can open: regular files and
// devices. Open returns a host file the guest's fd will refer to; flags
// are the guest's open flags (the access mode, O_APPEND, O_NONBLOCK,
// O_TRUNC …; O_CLOEXEC is the installer's business).
type OpenNode interface {
	Node
	Open(c *Ctx, flags int) (*os.File, error)
}

// Readaheader is a directory that can fill caches ahead of a reader:
// Readahead is told that its regular file name was just opened for
// reading, and may prepare the files that follow it.
type Readaheader interface {
	Readahead(name string)
}

// WritableDir is a directory that can be changed. A read-only mount
// refuses these with EROFS before they are called.
type WritableDir interface {
	DirNode
	// Create makes a regular file (mode is the permission bits after
	// umask) and returns it.
	Create(name string, mode, uid, gid uint32) (Node, error)
	Mkdir(name string, mode, uid, gid uint32) (Node, error)
	Symlink(name, target string, uid, gid uint32) (Node, error)
	Mknod(name string, mode uint32, rdev uint64, uid, gid uint32) (Node, error)
	Link(name string, target Node) error
	// Unlink removes a non-directory; Rmdir an empty directory.
	Unlink(name string) error
	Rmdir(name string) error
	// Rename moves the child name to newname in dir to (of the same
	// filesystem), replacing what is there as rename(2) does.
	Rename(name string, to WritableDir, newname string) error
}

// SetAttr is a node whose attributes can be changed.
type SetAttr interface {
	Chmod(mode uint32) error
	Chown(uid, gid int) error // -1 keeps the id
	Utimes(atime, mtime *time.Time) error
	Truncate(size int64) error
}

// Statfs is what statfs(2) reports for a filesystem.
type Statfs struct {
	Type    int64 // f_type magic
	Bsize   int64
	Blocks  uint64
	Bfree   uint64
	Bavail  uint64
	Files   uint64
	Ffree   uint64
	NameLen int64
}

// FS is a mounted filesystem's driver.
type FS interface {
	// Root is the filesystem's root directory.
	Root() DirNode
	// Type is the name in /proc/mounts ("ext4", "tmpfs", "proc").
	Type() string
	Statfs() Statfs
	// Dynamic filesystems (procfs) change without the vfs seeing it:
	// their lookups and listings are never cached.
	Dynamic() bool
}

// Renamer is a directory whose renames take renameat2's flags
// (RENAME_NOREPLACE, RENAME_EXCHANGE). Directories without it take none.
type Renamer interface {
	RenameFlags(name string, to WritableDir, newname string, flags uint32) error
}

// Xattrs is a node with extended attributes. Nodes without it have none
// (getxattr: ENODATA; setxattr: EOPNOTSUPP).
type Xattrs interface {
	Getxattr(name string) ([]byte, error)
	Listxattr() ([]string, error)
	// Setxattr's flags are XATTR_CREATE and XATTR_REPLACE.
	Setxattr(name string, value []byte, flags int) error
	Removexattr(name string) error
}

// Syncer is a node whose data can be made durable: fsync, fdatasync.
type Syncer interface {
	Sync(dataOnly bool) error
}

// SyncFS is a filesystem that can be made durable: sync, syncfs.
type SyncFS interface {
	Sync() error
}

// Remounter is a filesystem that can switch between read-write and
// read-only (mount -o remount,ro|rw). Others cannot become writable.
type Remounter interface {
	Remount(readOnly bool) error
}

// HostAttrs is a filesystem whose regular files a guest opens are the
// host's own files (hostfs): fstat of such a descriptor maps the open
// file's host stat, which follows the file across renames and unlinks,
// rather than stat its name again.
type HostAttrs interface {
	HostAttr(st *unix.Stat_t) Attr
}
