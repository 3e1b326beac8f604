// Package extfs presents an ext2/3/4 image (internal/ext4) as a vfs
// filesystem, read-only for now. A regular file opened by a guest is a
// memfd filled with the file's content once per inode (the inode's page
// cache), re-opened for each guest open.
package extfs

import (
	"os"
	"strconv"
	"sync"
	"syscall"

	"github.com/umltools/umltools/internal/ext4"
	"github.com/umltools/umltools/internal/fs/memfd"
	"github.com/umltools/umltools/internal/vfs"
)

// Magic is EXT4_SUPER_MAGIC, statfs's f_type for ext2/3/4.
const Magic = 0xef53

// FS is a mounted ext4 image.
type FS struct {
	fs    *ext4.FS
	mu    sync.Mutex
	cache map[uint32]*os.File // page cache memfds by inode
}

// New wraps an opened ext4 filesystem.
func New(f *ext4.FS) *FS { return &FS{fs: f, cache: map[uint32]*os.File{}} }

// Root returns the root directory (inode 2).
func (f *FS) Root() vfs.DirNode {
	n, err := f.node(2)
	if err != nil {
		return &dir{node{fs: f, ino: 2, in: &ext4.Inode{Ino: 2, Mode: syscall.S_IFDIR | 0o755, Nlink: 2}}}
	}
	if d, ok := n.(*dir); ok {
		return d
	}
	return &dir{node{fs: f, ino: 2, in: &ext4.Inode{Ino: 2, Mode: syscall.S_IFDIR | 0o755, Nlink: 2}}}
}

// Type returns "ext4".
func (f *FS) Type() string { return "ext4" }

// Dynamic is false: the image changes only through the vfs.
func (f *FS) Dynamic() bool { return false }

// Statfs reports the superblock's counts.
func (f *FS) Statfs() vfs.Statfs {
	s := f.fs.Statfs()
	return vfs.Statfs{Type: Magic, Bsize: s.BlockSize, Blocks: s.Blocks, Bfree: s.FreeBlocks,
		Bavail: s.AvailBlocks, Files: s.Inodes, Ffree: s.FreeInodes, NameLen: int64(s.NameLen)}
}

// Close releases the page cache.
func (f *FS) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	for ino, m := range f.cache {
		m.Close()
		delete(f.cache, ino)
	}
	return nil
}

func (f *FS) node(ino uint32) (vfs.Node, error) {
	in, err := f.fs.Inode(ino)
	if err != nil {
		return nil, err
	}
	n := node{fs: f, ino: ino, in: in}
	switch in.Mode & syscall.S_IFMT {
	case syscall.S_IFDIR:
		return &dir{n}, nil
	case syscall.S_IFLNK:
		return &link{n}, nil
	case syscall.S_IFREG:
		return &file{n}, nil
	}
	return &n, nil
}

type node struct {
	fs  *FS
	ino uint32
	in  *ext4.Inode
}

func (n *node) Attr() (vfs.Attr, error) {
	in := n.in
	a := vfs.Attr{Ino: uint64(in.Ino), Mode: uint32(in.Mode), Nlink: uint32(in.Nlink), Uid: in.Uid, Gid: in.Gid,
		Size: int64(in.Size), Blocks: int64(in.Blocks), Blksize: int32(n.fs.fs.BlockSize()),
		Atime: in.Atime, Mtime: in.Mtime, Ctime: in.Ctime, Btime: in.Crtime}
	if t := in.Mode & syscall.S_IFMT; t == syscall.S_IFCHR || t == syscall.S_IFBLK {
		a.Rdev = vfs.Mkdev(in.RdevMajor, in.RdevMinor)
	}
	return a, nil
}

type dir struct{ node }

func (d *dir) Lookup(_ *vfs.Ctx, name string) (vfs.Node, error) {
	ino, err := d.fs.fs.Lookup(d.ino, name)
	if err != nil {
		return nil, err
	}
	return d.fs.node(ino)
}

func (d *dir) ReadDir(_ *vfs.Ctx) ([]vfs.Dirent, error) {
	var out []vfs.Dirent
	err := d.fs.fs.ReadDir(d.ino, 0, func(e ext4.DirEntry) bool {
		if e.Name != "." && e.Name != ".." {
			out = append(out, vfs.Dirent{Name: e.Name, Ino: uint64(e.Ino), Type: e.Type})
		}
		return true
	})
	return out, err
}

type link struct{ node }

func (l *link) Readlink(_ *vfs.Ctx) (string, error) { return l.fs.fs.Readlink(l.ino) }

type file struct{ node }

// Open returns a re-open of the inode's page cache memfd.
func (fl *file) Open(_ *vfs.Ctx, flags int) (*os.File, error) {
	if flags&syscall.O_ACCMODE != syscall.O_RDONLY || flags&syscall.O_TRUNC != 0 {
		return nil, syscall.EROFS
	}
	f := fl.fs
	f.mu.Lock()
	m := f.cache[fl.ino]
	f.mu.Unlock()
	if m == nil {
		h, err := f.fs.Open(fl.ino)
		if err != nil {
			return nil, err
		}
		nm, err := memfd.New("ext4:" + strconv.FormatUint(uint64(fl.ino), 10))
		if err != nil {
			return nil, err
		}
		if err := memfd.Fill(nm, h, h.Size()); err != nil {
			nm.Close()
			return nil, err
		}
		f.mu.Lock()
		if m = f.cache[fl.ino]; m == nil {
			f.cache[fl.ino] = nm
			m = nm
		} else {
			nm.Close()
		}
		f.mu.Unlock()
	}
	return memfd.Reopen(m, flags)
}
