package kernel

import (
	"bytes"
	"strings"
	"syscall"

	"github.com/umltools/umltools/internal/abi"
	"github.com/umltools/umltools/internal/vfs"
)

// Extended attributes, with the VFS's checks before the filesystem's:
// namespaces, sizes, permissions and the read-only mount.

const (
	xattrNameMax = 255
	xattrSizeMax = 65536
	xattrCreate  = 1
	xattrReplace = 2
)

// xattrTarget is what an xattr call acts on: a dentry, or a host object
// (a pipe or socket) the host answers for.
type xattrTarget struct {
	d    *vfs.Dentry
	host bool
	r    int64
}

func (c *call) xattrPath(pathAddr uint64, follow bool) xattrTarget {
	path, r := c.str(pathAddr)
	if r < 0 {
		return xattrTarget{r: r}
	}
	d, r := c.lookup(abi.AT_FDCWD, path, follow)
	return xattrTarget{d: d, r: r}
}

func (c *call) xattrFd(fd int) xattrTarget {
	o, r := c.fd(fd)
	if r < 0 {
		return xattrTarget{r: r}
	}
	if o.d == nil {
		return xattrTarget{host: true}
	}
	return xattrTarget{d: o.d}
}

// xattrName reads and checks an attribute name: its length and a known
// namespace (others are EOPNOTSUPP, as on ext4).
func (c *call) xattrName(addr uint64) (string, int64) {
	name, r := c.str(addr)
	if r < 0 {
		return "", r
	}
	if name == "" || len(name) > xattrNameMax {
		return "", -abi.ERANGE
	}
	for _, ns := range []string{"user.", "trusted.", "security.", "system."} {
		if strings.HasPrefix(name, ns) && len(name) > len(ns) {
			return name, 0
		}
	}
	return "", -abi.EOPNOTSUPP
}

// xattrAccess checks that the caller may read (want 4) or write (2) name
// on d, as xattr_permission does.
func (c *call) xattrAccess(d *vfs.Dentry, name string, want uint32) int64 {
	a, err := d.Node.Attr()
	if err != nil {
		return errno(err)
	}
	root := c.p.Cred.root()
	switch {
	case strings.HasPrefix(name, "trusted."):
		if !root {
			if want == 4 {
				return -abi.ENODATA
			}
			return -abi.EPERM
		}
		return 0
	case strings.HasPrefix(name, "security."), strings.HasPrefix(name, "system."):
		if want == 2 && !root && !(strings.HasPrefix(name, "system.posix_acl") && a.Uid == c.p.Cred.Fsuid) {
			return -abi.EPERM
		}
		return 0
	}
	// user.*: only regular files and directories (sticky directories
	// only for their owner).
	t := a.Type()
	if t != syscall.S_IFREG && t != syscall.S_IFDIR {
		if want == 4 {
			return -abi.ENODATA
		}
		return -abi.EPERM
	}
	if want == 2 && t == syscall.S_IFDIR && a.Mode&syscall.S_ISVTX != 0 && !root && a.Uid != c.p.Cred.Fsuid {
		return -abi.EPERM
	}
	return c.permit(&a, want)
}

func (c *call) sysGetxattr(t xattrTarget, nameAddr, value uint64, size int) int64 {
	if t.r < 0 || t.host {
		return t.result()
	}
	name, r := c.xattrName(nameAddr)
	if r < 0 {
		return r
	}
	if r := c.xattrAccess(t.d, name, 4); r < 0 {
		return r
	}
	x, ok := t.d.Node.(vfs.Xattrs)
	if !ok {
		return -abi.ENODATA
	}
	v, err := x.Getxattr(name)
	if err != nil {
		return errno(err)
	}
	if size == 0 {
		return int64(len(v))
	}
	if size < len(v) {
		return -abi.ERANGE
	}
	if r := c.write(value, v); r < 0 {
		return r
	}
	return int64(len(v))
}

func (c *call) sysListxattr(t xattrTarget, list uint64, size int) int64 {
	if t.r < 0 || t.host {
		return t.result()
	}
	var buf bytes.Buffer
	if x, ok := t.d.Node.(vfs.Xattrs); ok {
		names, err := x.Listxattr()
		if err != nil {
			return errno(err)
		}
		for _, n := range names {
			if strings.HasPrefix(n, "trusted.") && !c.p.Cred.root() {
				continue
			}
			buf.WriteString(n)
			buf.WriteByte(0)
		}
	}
	if size == 0 {
		return int64(buf.Len())
	}
	if size < buf.Len() {
		return -abi.ERANGE
	}
	if r := c.write(list, buf.Bytes()); r < 0 {
		return r
	}
	return int64(buf.Len())
}

func (c *call) sysSetxattr(t xattrTarget, nameAddr, value uint64, size, flags int) int64 {
	if flags&^(xattrCreate|xattrReplace) != 0 && t.r == 0 && !t.host {
		return -abi.EINVAL
	}
	return c.changeXattr(t, nameAddr, func(x vfs.Xattrs, name string) int64 {
		if size < 0 || size > xattrSizeMax {
			return -abi.E2BIG
		}
		v := make([]byte, size)
		if size > 0 {
			if r := c.read(value, v); r < 0 {
				return r
			}
		}
		return errno(x.Setxattr(name, v, flags))
	})
}

func (c *call) sysRemovexattr(t xattrTarget, nameAddr uint64) int64 {
	return c.changeXattr(t, nameAddr, func(x vfs.Xattrs, name string) int64 {
		return errno(x.Removexattr(name))
	})
}

// changeXattr runs the checks of setxattr and removexattr, then do.
func (c *call) changeXattr(t xattrTarget, nameAddr uint64, do func(x vfs.Xattrs, name string) int64) int64 {
	if t.r < 0 || t.host {
		return t.result()
	}
	name, r := c.xattrName(nameAddr)
	if r < 0 {
		return r
	}
	if t.d.Mount.ReadOnly() {
		return -abi.EROFS
	}
	if r := c.xattrAccess(t.d, name, 2); r < 0 {
		return r
	}
	x, ok := t.d.Node.(vfs.Xattrs)
	if !ok {
		return -abi.EOPNOTSUPP
	}
	return do(x, name)
}

func (t xattrTarget) result() int64 {
	if t.host {
		return continued
	}
	return t.r
}
