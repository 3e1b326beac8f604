package extfs

import (
	"syscall"
	"time"

	"github.com/umltools/umltools/internal/ext4"
	"github.com/umltools/umltools/internal/vfs"
)

// The vfs's WritableDir, SetAttr, Renamer and Xattrs on the driver. The
// kernel has checked permissions and the read-only mount flag; the
// driver checks the rest in the order Linux does.

func (d *dir) made(ino uint32, err error) (vfs.Node, error) {
	if err != nil {
		return nil, err
	}
	d.fs.changed()
	return d.fs.node(ino)
}

// Create makes a regular file.
func (d *dir) Create(name string, mode, uid, gid uint32) (vfs.Node, error) {
	return d.made(d.fs.fs().Create(d.ino, name, uint16(mode&0o7777), uid, gid))
}

// Mkdir makes a directory.
func (d *dir) Mkdir(name string, mode, uid, gid uint32) (vfs.Node, error) {
	return d.made(d.fs.fs().Mkdir(d.ino, name, uint16(mode&0o7777), uid, gid))
}

// Symlink makes a symbolic link.
func (d *dir) Symlink(name, target string, uid, gid uint32) (vfs.Node, error) {
	return d.made(d.fs.fs().Symlink(d.ino, name, target, uid, gid))
}

// Mknod makes a device, fifo, socket or regular file (mode has the type).
func (d *dir) Mknod(name string, mode uint32, rdev uint64, uid, gid uint32) (vfs.Node, error) {
	return d.made(d.fs.fs().Mknod(d.ino, name, uint16(mode), uid, gid, rdev))
}

// inoOf is the inode of a node of this filesystem.
func (f *FS) inoOf(n vfs.Node) (uint32, bool) {
	var b *node
	switch t := n.(type) {
	case *node:
		b = t
	case *file:
		b = &t.node
	case *dir:
		b = &t.node
	case *link:
		b = &t.node
	default:
		return 0, false
	}
	return b.ino, b.fs == f
}

// Link adds name as another link to target.
func (d *dir) Link(name string, target vfs.Node) error {
	ino, ok := d.fs.inoOf(target)
	if !ok {
		return syscall.EXDEV
	}
	if err := d.fs.fs().Link(ino, d.ino, name); err != nil {
		return err
	}
	d.fs.changed()
	return nil
}

// lastLink holds the regular file name of dir (if it has a page cache and
// this is its last link) so that a guest that has it open keeps it.
func (f *FS) lastLink(dir uint32, name string) (uint32, bool) {
	ino, err := f.fs().Lookup(dir, name)
	if err != nil {
		return 0, false
	}
	in, err := f.fs().Inode(ino)
	if err != nil || !in.IsRegular() || in.Nlink > 1 {
		return 0, false
	}
	return ino, f.orphan(ino)
}

// unheld undoes lastLink after a failed removal, or tries to free the
// orphan at once after a successful one.
func (f *FS) unheld(ino uint32, held bool, err error) error {
	if !held {
		if err == nil {
			f.changed()
		}
		return err
	}
	p := f.cached(ino)
	if err != nil {
		if p != nil {
			p.mu.Lock()
			p.orphan = false
			p.mu.Unlock()
		}
		f.fs().Forget(ino)
		return err
	}
	f.changed()
	if p != nil {
		f.reapSoon()
	}
	return nil
}

// Unlink removes a non-directory.
func (d *dir) Unlink(name string) error {
	ino, held := d.fs.lastLink(d.ino, name)
	return d.fs.unheld(ino, held, d.fs.fs().Unlink(d.ino, name))
}

// Rmdir removes an empty directory.
func (d *dir) Rmdir(name string) error {
	if err := d.fs.fs().Rmdir(d.ino, name); err != nil {
		return err
	}
	d.fs.changed()
	return nil
}

// Rename is rename(2) without flags.
func (d *dir) Rename(name string, to vfs.WritableDir, newname string) error {
	return d.RenameFlags(name, to, newname, 0)
}

// RenameFlags is renameat2: flags RENAME_NOREPLACE and RENAME_EXCHANGE.
func (d *dir) RenameFlags(name string, to vfs.WritableDir, newname string, flags uint32) error {
	td, ok := to.(*dir)
	if !ok || td.fs != d.fs {
		return syscall.EXDEV
	}
	if flags&^(ext4.RenameNoReplace|ext4.RenameExchange) != 0 {
		return syscall.EINVAL
	}
	var ino uint32
	var held bool
	if flags&(ext4.RenameNoReplace|ext4.RenameExchange) == 0 {
		// Replacing a file drops its last link.
		if src, err := d.fs.fs().Lookup(d.ino, name); err == nil {
			if dst, err := d.fs.fs().Lookup(td.ino, newname); err == nil && dst != src {
				ino, held = d.fs.lastLink(td.ino, newname)
			}
		}
	}
	return d.fs.unheld(ino, held, d.fs.fs().Rename(d.ino, name, td.ino, newname, flags))
}

func (n *node) setAttr(a *ext4.Attr) error {
	if err := n.fs.fs().SetAttr(n.ino, a); err != nil {
		return err
	}
	n.fs.changed()
	return nil
}

// Chmod sets the permission bits.
func (n *node) Chmod(mode uint32) error {
	return n.setAttr(&ext4.Attr{Mask: ext4.AttrMode, Mode: uint16(mode & 0o7777)})
}

// Chown sets the owner and group; -1 keeps one.
func (n *node) Chown(uid, gid int) error {
	a := &ext4.Attr{}
	if uid >= 0 {
		a.Mask |= ext4.AttrUid
		a.Uid = uint32(uid)
	}
	if gid >= 0 {
		a.Mask |= ext4.AttrGid
		a.Gid = uint32(gid)
	}
	return n.setAttr(a)
}

// Utimes sets the access and modification times (nil keeps one). A file
// whose page cache was written to gets the mtime on its memfd too, so
// that the write-back still to come (at the last writer's close) stores
// this mtime and not the time of the data's last write; the data itself
// is not written back here.
func (n *node) Utimes(atime, mtime *time.Time) error {
	if p := n.fs.cached(n.ino); p != nil && mtime != nil {
		if err := p.setMtime(*mtime); err != nil {
			return err
		}
	}
	a := &ext4.Attr{}
	if atime != nil {
		a.Mask |= ext4.AttrAtime
		a.Atime = *atime
	}
	if mtime != nil {
		a.Mask |= ext4.AttrMtime
		a.Mtime = *mtime
	}
	return n.setAttr(a)
}

// Truncate sets a regular file's size: its page cache's, when it has one
// (written back like any change to it), else the image's.
func (n *node) Truncate(size int64) error {
	if n.in.Mode&syscall.S_IFMT != syscall.S_IFREG {
		return syscall.EINVAL
	}
	if p := n.fs.cached(n.ino); p != nil {
		p.mu.Lock()
		defer p.mu.Unlock()
		if p.f == nil {
			return syscall.ENOENT
		}
		if err := p.markWritten(); err != nil {
			return err
		}
		return p.f.Truncate(size)
	}
	return n.setAttr(&ext4.Attr{Mask: ext4.AttrSize, Size: uint64(size)})
}

// Getxattr returns one extended attribute's value.
func (n *node) Getxattr(name string) ([]byte, error) { return n.fs.fs().GetXattr(n.ino, name) }

// Listxattr returns the attribute names.
func (n *node) Listxattr() ([]string, error) { return n.fs.fs().ListXattr(n.ino) }

// Setxattr sets an attribute (flags XATTR_CREATE, XATTR_REPLACE).
func (n *node) Setxattr(name string, value []byte, flags int) error {
	if err := n.fs.fs().SetXattr(n.ino, name, value, flags); err != nil {
		return err
	}
	n.fs.changed()
	return nil
}

// Removexattr removes an attribute.
func (n *node) Removexattr(name string) error {
	if err := n.fs.fs().RemoveXattr(n.ino, name); err != nil {
		return err
	}
	n.fs.changed()
	return nil
}

// Sync is fsync (dataOnly: fdatasync) of this node.
func (n *node) Sync(dataOnly bool) error { return n.fs.SyncFile(n.ino, dataOnly) }
