// Package tmpfs is an in-memory writable filesystem: directories and
// symlinks live in the engine, regular files are memfds (guest reads,
// writes and mmaps of them run natively on the host).
package tmpfs

import (
	"os"
	"sort"
	"sync"
	"syscall"
	"time"

	"github.com/umltools/umltools/internal/fs/memfd"
	"github.com/umltools/umltools/internal/vfs"
)

// Magic is TMPFS_MAGIC.
const Magic = 0x01021994

// FS is one tmpfs instance.
type FS struct {
	mu      sync.Mutex
	typ     string
	magic   int64
	nextIno uint64
	root    *Dir
}

// New returns an empty tmpfs whose root has mode (permission bits) and is
// owned by uid:gid. typ names it in /proc/mounts ("tmpfs"; also used for
// the engine's empty sysfs and devpts for now) and magic is its f_type.
func New(typ string, magic int64, mode, uid, gid uint32) *FS {
	f := &FS{typ: typ, magic: magic, nextIno: 1}
	f.root = &Dir{inode: f.newInode(syscall.S_IFDIR|mode&0o7777, uid, gid), kids: map[string]vfs.Node{}}
	f.root.nlink = 2
	return f
}

// Root returns the root directory.
func (f *FS) Root() vfs.DirNode { return f.root }

// Type returns the filesystem's name.
func (f *FS) Type() string { return f.typ }

// Dynamic is false.
func (f *FS) Dynamic() bool { return false }

// Statfs reports a tmpfs of half the host's memory, as the kernel's
// default size is.
func (f *FS) Statfs() vfs.Statfs {
	var si syscall.Sysinfo_t
	syscall.Sysinfo(&si)
	blocks := si.Totalram * uint64(si.Unit) / 2 / 4096
	return vfs.Statfs{Type: f.magic, Bsize: 4096, Blocks: blocks, Bfree: blocks, Bavail: blocks,
		Files: blocks, Ffree: blocks, NameLen: 255}
}

type inode struct {
	fs    *FS
	mu    sync.Mutex
	ino   uint64
	mode  uint32
	uid   uint32
	gid   uint32
	nlink uint32
	rdev  uint64
	atime time.Time
	mtime time.Time
	ctime time.Time
	btime time.Time
}

func (f *FS) newInode(mode, uid, gid uint32) inode {
	f.mu.Lock()
	ino := f.nextIno
	f.nextIno++
	f.mu.Unlock()
	now := time.Now()
	return inode{fs: f, ino: ino, mode: mode, uid: uid, gid: gid, nlink: 1, atime: now, mtime: now, ctime: now, btime: now}
}

func (i *inode) attr() vfs.Attr {
	i.mu.Lock()
	defer i.mu.Unlock()
	return vfs.Attr{Ino: i.ino, Mode: i.mode, Nlink: i.nlink, Uid: i.uid, Gid: i.gid, Rdev: i.rdev,
		Blksize: 4096, Atime: i.atime, Mtime: i.mtime, Ctime: i.ctime, Btime: i.btime}
}

func (i *inode) Attr() (vfs.Attr, error) { return i.attr(), nil }

func (i *inode) Chmod(mode uint32) error {
	i.mu.Lock()
	defer i.mu.Unlock()
	i.mode = i.mode&syscall.S_IFMT | mode&0o7777
	i.ctime = time.Now()
	return nil
}

func (i *inode) Chown(uid, gid int) error {
	i.mu.Lock()
	defer i.mu.Unlock()
	if uid >= 0 {
		i.uid = uint32(uid)
	}
	if gid >= 0 {
		i.gid = uint32(gid)
	}
	i.ctime = time.Now()
	return nil
}

func (i *inode) Utimes(atime, mtime *time.Time) error {
	i.mu.Lock()
	defer i.mu.Unlock()
	if atime != nil {
		i.atime = *atime
	}
	if mtime != nil {
		i.mtime = *mtime
	}
	i.ctime = time.Now()
	return nil
}

func (i *inode) Truncate(int64) error { return syscall.EINVAL }

func (i *inode) base() *inode { return i }

type baser interface{ base() *inode }

// Dir is a tmpfs directory.
type Dir struct {
	inode
	kids map[string]vfs.Node
}

// Attr adds the directory's size.
func (d *Dir) Attr() (vfs.Attr, error) {
	a := d.attr()
	d.mu.Lock()
	a.Size = int64(len(d.kids)+2) * 20
	d.mu.Unlock()
	return a, nil
}

// Lookup finds a child.
func (d *Dir) Lookup(_ *vfs.Ctx, name string) (vfs.Node, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if n, ok := d.kids[name]; ok {
		return n, nil
	}
	return nil, syscall.ENOENT
}

// ReadDir lists the children sorted by name.
func (d *Dir) ReadDir(_ *vfs.Ctx) ([]vfs.Dirent, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]vfs.Dirent, 0, len(d.kids))
	for name, n := range d.kids {
		b := n.(baser).base()
		out = append(out, vfs.Dirent{Name: name, Ino: b.ino, Type: uint8(b.mode >> 12 & 0xf)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

func (d *Dir) add(name string, n vfs.Node) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, ok := d.kids[name]; ok {
		return syscall.EEXIST
	}
	d.kids[name] = n
	now := time.Now()
	d.mtime, d.ctime = now, now
	if _, ok := n.(*Dir); ok {
		d.nlink++
	}
	return nil
}

// Create makes a regular file.
func (d *Dir) Create(name string, mode, uid, gid uint32) (vfs.Node, error) {
	m, err := memfd.New("tmpfs:" + name)
	if err != nil {
		return nil, err
	}
	f := &File{inode: d.fs.newInode(syscall.S_IFREG|mode&0o7777, uid, gid), mem: m}
	if err := d.add(name, f); err != nil {
		m.Close()
		return nil, err
	}
	return f, nil
}

// Mkdir makes a directory.
func (d *Dir) Mkdir(name string, mode, uid, gid uint32) (vfs.Node, error) {
	n := &Dir{inode: d.fs.newInode(syscall.S_IFDIR|mode&0o7777, uid, gid), kids: map[string]vfs.Node{}}
	n.nlink = 2
	return n, d.add(name, n)
}

// Symlink makes a symbolic link.
func (d *Dir) Symlink(name, target string, uid, gid uint32) (vfs.Node, error) {
	n := &Link{inode: d.fs.newInode(syscall.S_IFLNK|0o777, uid, gid), target: target}
	return n, d.add(name, n)
}

// Mknod makes a device, fifo or socket node.
func (d *Dir) Mknod(name string, mode uint32, rdev uint64, uid, gid uint32) (vfs.Node, error) {
	if mode&syscall.S_IFMT == syscall.S_IFREG || mode&syscall.S_IFMT == 0 {
		return d.Create(name, mode, uid, gid)
	}
	n := &Special{inode: d.fs.newInode(mode, uid, gid)}
	n.rdev = rdev
	return n, d.add(name, n)
}

// Link adds a hard link to target (a node of this filesystem).
func (d *Dir) Link(name string, target vfs.Node) error {
	b, ok := target.(baser)
	if !ok || b.base().fs != d.fs {
		return syscall.EXDEV
	}
	if _, isDir := target.(*Dir); isDir {
		return syscall.EPERM
	}
	if err := d.add(name, target); err != nil {
		return err
	}
	i := b.base()
	i.mu.Lock()
	i.nlink++
	i.ctime = time.Now()
	i.mu.Unlock()
	return nil
}

func (d *Dir) remove(name string, wantDir bool) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	n, ok := d.kids[name]
	if !ok {
		return syscall.ENOENT
	}
	sub, isDir := n.(*Dir)
	switch {
	case wantDir && !isDir:
		return syscall.ENOTDIR
	case !wantDir && isDir:
		return syscall.EISDIR
	case isDir:
		sub.mu.Lock()
		empty := len(sub.kids) == 0
		sub.mu.Unlock()
		if !empty {
			return syscall.ENOTEMPTY
		}
		d.nlink--
	}
	delete(d.kids, name)
	now := time.Now()
	d.mtime, d.ctime = now, now
	i := n.(baser).base()
	i.mu.Lock()
	if isDir {
		i.nlink = 0
	} else {
		i.nlink--
	}
	i.ctime = now
	i.mu.Unlock()
	return nil
}

// Unlink removes a non-directory.
func (d *Dir) Unlink(name string) error { return d.remove(name, false) }

// Rmdir removes an empty directory.
func (d *Dir) Rmdir(name string) error { return d.remove(name, true) }

// Rename moves name to newname in to, replacing a compatible target. The
// caller (the vfs user) refuses moving a directory below itself.
func (d *Dir) Rename(name string, to vfs.WritableDir, newname string) error {
	td, ok := to.(*Dir)
	if !ok || td.fs != d.fs {
		return syscall.EXDEV
	}
	n, err := d.Lookup(nil, name)
	if err != nil {
		return err
	}
	if old, err := td.Lookup(nil, newname); err == nil {
		if old == n {
			return nil
		}
		_, oldDir := old.(*Dir)
		_, newDir := n.(*Dir)
		switch {
		case oldDir && !newDir:
			return syscall.EISDIR
		case !oldDir && newDir:
			return syscall.ENOTDIR
		}
		if err := td.remove(newname, oldDir); err != nil {
			return err
		}
	}
	d.mu.Lock()
	delete(d.kids, name)
	if _, isDir := n.(*Dir); isDir {
		d.nlink--
	}
	d.mu.Unlock()
	return td.add(newname, n)
}

// File is a tmpfs regular file backed by a memfd.
type File struct {
	inode
	mem *os.File
}

// Attr adds the memfd's size.
func (f *File) Attr() (vfs.Attr, error) {
	a := f.attr()
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.mem.Fd()), &st); err == nil {
		a.Size, a.Blocks = st.Size, st.Blocks
		a.Mtime = time.Unix(st.Mtim.Sec, st.Mtim.Nsec)
		if c := time.Unix(st.Ctim.Sec, st.Ctim.Nsec); c.After(a.Ctime) {
			a.Ctime = c
		}
	}
	return a, nil
}

// Open re-opens the memfd with the guest's flags.
func (f *File) Open(_ *vfs.Ctx, flags int) (*os.File, error) {
	if flags&syscall.O_TRUNC != 0 && flags&syscall.O_ACCMODE != syscall.O_RDONLY {
		if err := f.mem.Truncate(0); err != nil {
			return nil, err
		}
	}
	return memfd.Reopen(f.mem, flags)
}

// Truncate sets the size.
func (f *File) Truncate(size int64) error { return f.mem.Truncate(size) }

// Link is a tmpfs symbolic link.
type Link struct {
	inode
	target string
}

// Attr adds the target's length as the size.
func (l *Link) Attr() (vfs.Attr, error) {
	a := l.attr()
	a.Size = int64(len(l.target))
	return a, nil
}

// Readlink returns the target.
func (l *Link) Readlink(*vfs.Ctx) (string, error) { return l.target, nil }

// Special is a device, fifo or socket node.
type Special struct{ inode }
