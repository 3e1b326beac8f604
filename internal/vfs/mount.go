package vfs

import (
	"fmt"
	"strings"
	"sync"
	"syscall"
)

// Mount flags (the MS_* bits the engine honours).
const (
	ReadOnly = syscall.MS_RDONLY
	NoSuid   = syscall.MS_NOSUID
	NoDev    = syscall.MS_NODEV
	NoExec   = syscall.MS_NOEXEC
)

// Mount is one filesystem mounted in the tree.
type Mount struct {
	FS     FS
	Source string // the device or name in /proc/mounts ("/dev/ubda", "tmpfs")
	Flags  uintptr
	Opts   string // extra options for /proc/mounts ("mode=1777")
	Dev    uint64 // st_dev of its nodes
	ID     int

	root  *Dentry // the filesystem's root
	point *Dentry // where it is mounted (nil for the root mount)
	under *Mount  // the mount it covers at point, if stacked
}

// Root returns the mount's root dentry.
func (m *Mount) Root() *Dentry { return m.root }

// ReadOnly reports whether the mount is read-only.
func (m *Mount) ReadOnly() bool { return m.Flags&ReadOnly != 0 }

// Dentry is a name in the tree: a node reached through a parent in a mount.
type Dentry struct {
	Name   string
	Node   Node
	Mount  *Mount
	parent *Dentry // nil for a mount's root

	children map[string]*Dentry
	mounted  *Mount // the top mount on this dentry
	// Data is the kernel's per-dentry state (its placeholder directory).
	Data any
}

// Parent returns the parent dentry within the same mount (nil at the
// mount's root).
func (d *Dentry) Parent() *Dentry { return d.parent }

// Mounted returns the top mount on d, or nil.
func (d *Dentry) Mounted() *Mount { return d.mounted }

// VFS is a mount tree. Its methods are safe for concurrent use.
type VFS struct {
	mu     sync.Mutex
	root   *Mount
	mounts []*Mount // in mount order, for /proc/mounts
	nextID int
	anon   uint32 // next anonymous device minor
}

// New returns a tree with fs mounted at its root.
func New(fs FS, source string, flags uintptr, dev uint64) *VFS {
	v := &VFS{nextID: 20, anon: 20}
	m := &Mount{FS: fs, Source: source, Flags: flags, Dev: dev, ID: v.nextID}
	v.nextID++
	m.root = &Dentry{Name: "/", Node: fs.Root(), Mount: m}
	v.root = m
	v.mounts = []*Mount{m}
	return v
}

// Root returns the root of the tree.
func (v *VFS) Root() *Dentry { return v.root.root }

// RootMount returns the root mount.
func (v *VFS) RootMount() *Mount { return v.root }

// AnonDev returns a new device number for a filesystem without a device
// (major 0), as the kernel's get_anon_bdev does.
func (v *VFS) AnonDev() uint64 {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.anon++
	return mkdev(0, v.anon)
}

func mkdev(major, minor uint32) uint64 {
	return uint64(major&0xfff)<<8 | uint64(minor&0xff) | uint64(minor&^0xff)<<12 | uint64(major&^0xfff)<<32
}

// Mkdev encodes a device number as stat reports it.
func Mkdev(major, minor uint32) uint64 { return mkdev(major, minor) }

// Major and Minor split a device number.
func Major(dev uint64) uint32 { return uint32((dev>>8)&0xfff | (dev>>32)&^0xfff) }

// Minor returns the minor part of a device number.
func Minor(dev uint64) uint32 { return uint32(dev&0xff | (dev>>12)&^0xff) }

// Mount mounts fs on the directory at (which must be a directory).
func (v *VFS) Mount(fs FS, at *Dentry, source string, flags uintptr, opts string, dev uint64) (*Mount, error) {
	a, err := at.Node.Attr()
	if err != nil {
		return nil, err
	}
	if !a.IsDir() {
		return nil, syscall.ENOTDIR
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	m := &Mount{FS: fs, Source: source, Flags: flags, Opts: opts, Dev: dev, ID: v.nextID, point: at, under: at.mounted}
	v.nextID++
	m.root = &Dentry{Name: at.Name, Node: fs.Root(), Mount: m}
	at.mounted = m
	v.mounts = append(v.mounts, m)
	return m, nil
}

// Unmount removes the mount whose root is d.
func (v *VFS) Unmount(d *Dentry) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	m := d.Mount
	if d != m.root {
		return syscall.EINVAL
	}
	if m.point == nil {
		return syscall.EBUSY // the root
	}
	if m.point.mounted != m {
		return syscall.EBUSY // something is mounted on top of it
	}
	for _, o := range v.mounts {
		if o != m && o.point != nil && o.point.Mount == m {
			return syscall.EBUSY
		}
	}
	m.point.mounted = m.under
	for i, o := range v.mounts {
		if o == m {
			v.mounts = append(v.mounts[:i], v.mounts[i+1:]...)
			break
		}
	}
	return nil
}

// Mounts returns the mounts in mount order.
func (v *VFS) Mounts() []*Mount {
	v.mu.Lock()
	defer v.mu.Unlock()
	return append([]*Mount(nil), v.mounts...)
}

// MountPoint returns the dentry a mount is mounted on (nil for the root).
func (m *Mount) MountPoint() *Dentry { return m.point }

// cross follows mounts stacked on d.
func cross(d *Dentry) *Dentry {
	for d.mounted != nil {
		d = d.mounted.root
	}
	return d
}

// up returns d's parent in the tree, crossing mount roots upwards, but
// never above root.
func up(d, root *Dentry) *Dentry {
	for d != root {
		if d.parent != nil {
			return cross(d.parent)
		}
		if d.Mount.point == nil {
			return d // the tree's root
		}
		d = d.Mount.point
	}
	return d
}

// child looks name up in directory d.
func (v *VFS) child(c *Ctx, d *Dentry, name string) (*Dentry, error) {
	dyn := d.Mount.FS.Dynamic()
	v.mu.Lock()
	if ch, ok := d.children[name]; ok && !dyn {
		v.mu.Unlock()
		return ch, nil
	}
	v.mu.Unlock()
	dir, ok := d.Node.(DirNode)
	if !ok {
		return nil, syscall.ENOTDIR
	}
	n, err := dir.Lookup(c, name)
	v.mu.Lock()
	defer v.mu.Unlock()
	if err != nil {
		if dyn && d.children != nil {
			delete(d.children, name)
		}
		return nil, err
	}
	if ch, ok := d.children[name]; ok {
		ch.Node = n // a dynamic node looked up again
		return ch, nil
	}
	ch := &Dentry{Name: name, Node: n, Mount: d.Mount, parent: d}
	if d.children == nil {
		d.children = map[string]*Dentry{}
	}
	d.children[name] = ch
	return ch, nil
}

// Created records node n, just made as name in directory d, and returns
// its dentry: the caller need not look the name up again.
func (v *VFS) Created(d *Dentry, name string, n Node) *Dentry {
	v.mu.Lock()
	defer v.mu.Unlock()
	ch := &Dentry{Name: name, Node: n, Mount: d.Mount, parent: d}
	if d.children == nil {
		d.children = map[string]*Dentry{}
	}
	d.children[name] = ch
	return ch
}

// Forget drops the cached child name of d (after the filesystem removed or
// renamed it).
func (v *VFS) Forget(d *Dentry, name string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	delete(d.children, name)
}

// Path returns d's absolute path as seen from root.
func (v *VFS) Path(d, root *Dentry) string {
	var parts []string
	for d != root {
		if d.parent == nil {
			if d.Mount.point == nil {
				break // above the caller's root: shown from the tree's root
			}
			d = d.Mount.point
			continue
		}
		parts = append(parts, d.Name)
		d = d.parent
	}
	if len(parts) == 0 {
		return "/"
	}
	var b strings.Builder
	for i := len(parts) - 1; i >= 0; i-- {
		b.WriteByte('/')
		b.WriteString(parts[i])
	}
	return b.String()
}

// Limits of path resolution, as Linux's.
const (
	PathMax     = 4096
	NameMax     = 255
	maxSymlinks = 40
)

// Walker resolves paths for one caller.
type Walker struct {
	V    *VFS
	Ctx  *Ctx
	Root *Dentry // the caller's root (chroot)
	Cwd  *Dentry // where relative paths start (cwd or a dirfd)
}

// Lookup resolves path. With follow, a final symlink is followed. The
// result has mounts crossed.
func (w *Walker) Lookup(path string, follow bool) (*Dentry, error) {
	links := 0
	return w.walk(path, follow, &links)
}

// Parent resolves all but the last component of path and returns that
// directory and the last name ("" for "/" or a path ending in "." or "..",
// which callers creating or removing entries refuse). trailing is true
// when path ends with '/'.
func (w *Walker) Parent(path string) (dir *Dentry, name string, trailing bool, err error) {
	if len(path) == 0 {
		return nil, "", false, syscall.ENOENT
	}
	if len(path) >= PathMax {
		return nil, "", false, syscall.ENAMETOOLONG
	}
	trimmed := strings.TrimRight(path, "/")
	trailing = len(trimmed) < len(path)
	if trimmed == "" {
		return w.Root, "", true, nil
	}
	i := strings.LastIndexByte(trimmed, '/')
	dirPath, name := trimmed[:i+1], trimmed[i+1:]
	if len(name) > NameMax {
		return nil, "", false, syscall.ENAMETOOLONG
	}
	if dirPath == "" {
		dir = w.Cwd
	} else {
		links := 0
		if dir, err = w.walk(dirPath, true, &links); err != nil {
			return nil, "", false, err
		}
	}
	a, err := dir.Node.Attr()
	if err != nil {
		return nil, "", false, err
	}
	if !a.IsDir() {
		return nil, "", false, syscall.ENOTDIR
	}
	if name == "." || name == ".." {
		d, err := w.walkFrom(dir, name, true, new(int))
		return d, "", trailing, err
	}
	return dir, name, trailing, nil
}

func (w *Walker) walk(path string, follow bool, links *int) (*Dentry, error) {
	if len(path) == 0 {
		return nil, syscall.ENOENT
	}
	if len(path) >= PathMax {
		return nil, syscall.ENAMETOOLONG
	}
	start := w.Cwd
	if path[0] == '/' {
		start = w.Root
	}
	return w.walkFrom(cross(start), path, follow, links)
}

func (w *Walker) walkFrom(d *Dentry, path string, follow bool, links *int) (*Dentry, error) {
	rest := path
	for {
		for len(rest) > 0 && rest[0] == '/' {
			rest = rest[1:]
		}
		if rest == "" {
			return d, nil
		}
		name := rest
		if i := strings.IndexByte(rest, '/'); i >= 0 {
			name, rest = rest[:i], rest[i:]
		} else {
			rest = ""
		}
		if len(name) > NameMax {
			return nil, syscall.ENAMETOOLONG
		}
		a, err := d.Node.Attr()
		if err != nil {
			return nil, err
		}
		if !a.IsDir() {
			return nil, syscall.ENOTDIR
		}
		switch name {
		case ".":
			continue
		case "..":
			d = up(d, w.Root)
			continue
		}
		ch, err := w.V.child(w.Ctx, d, name)
		if err != nil {
			return nil, err
		}
		ch = cross(ch)
		last := strings.Trim(rest, "/") == ""
		if l, ok := ch.Node.(LinkNode); ok && (!last || follow || rest != "") {
			*links++
			if *links > maxSymlinks {
				return nil, syscall.ELOOP
			}
			target, err := l.Readlink(w.Ctx)
			if err != nil {
				return nil, err
			}
			if target == "" {
				return nil, syscall.ENOENT
			}
			base := d
			if target[0] == '/' {
				base = cross(w.Root)
			}
			if ch, err = w.walkFrom(base, target, true, links); err != nil {
				return nil, err
			}
		}
		d = ch
	}
}

// String describes a dentry for messages.
func (d *Dentry) String() string { return fmt.Sprintf("dentry(%s)", d.Name) }
