// Package extfs presents an ext2/3/4 image (internal/ext4) as a vfs
// filesystem, read-only (New) or read-write (Mount).
//
// A regular file opened by a guest is the inode's page cache: a memfd
// filled with the file's content on first open and re-opened for each
// guest open, so guest reads, writes and mmaps run natively on the host.
// On a read-write mount the page cache is written back to the image
// (cache.go) on fsync and sync, when the last writer closes the file, every
// few seconds, at remount read-only and at unmount; metadata changes go
// to the driver at once and reach the image at the same points.
package extfs

import (
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/umltools/umltools/internal/ext4"
	"github.com/umltools/umltools/internal/vfs"
)

// Magic is EXT4_SUPER_MAGIC, statfs's f_type for ext2/3/4.
const Magic = 0xef53

// Options configure a read-write mount.
type Options struct {
	// ReadOnly mounts read-only (a later Remount may make it writable).
	ReadOnly bool
	// Discard frees the host blocks behind freed extents (ubdN without t).
	Discard bool
	// Writeback is the period of the background write-back (default 5 s;
	// negative disables it).
	Writeback time.Duration
	// Logf receives the driver's warnings and write-back errors.
	Logf func(format string, a ...any)
	// Held returns the host inode numbers of the page cache's memfds
	// that guests still hold (fds or mappings), or nil when it cannot
	// tell. An unlinked file that was open is freed once it is not in
	// the set; nil Held keeps such files until unmount.
	Held func() map[uint64]bool
	// MaxPages and MaxBytes bound the page cache (evict.go); 0 takes
	// three quarters of the open-file limit and 512 MiB.
	MaxPages int
	MaxBytes int64
	// Dropped is told the host inode number of each memfd the cache
	// drops, which the host may now reuse. It is called from the open
	// that makes room, in the kernel's syscall.
	Dropped func(hostIno uint64)
}

// FS is a mounted ext4 image.
type FS struct {
	drv  atomic.Pointer[ext4.FS]
	dev  ext4.Device // nil for a read-only New
	size int64
	opts Options

	mu      sync.Mutex
	cache   map[uint32]*page // page cache by inode
	wd      map[int32]*page  // inotify watch → page
	ino     int              // inotify fd (-1 when none)
	inoWake int              // eventfd that ends the watch loop (-1 when none)

	dirty atomic.Bool   // metadata changed since the last driver Sync
	gen   atomic.Uint64 // bumped by every change: nodes reload their inode
	stop  chan struct{}
	reapc chan struct{} // wakes the reaper: an orphan may be free
	clock atomic.Int64  // ticks at every open: pages' recency
	bytes atomic.Int64  // the cached pages' sizes
	// the cache's bounds (Options.bounds)
	maxPages int
	maxBytes int64
	ra       readahead  // readahead.go
	evictMu  sync.Mutex // one eviction pass at a time; guards stuck
	stuck    int        // opens before the next try, after a pass that fell short
	bufs     sync.Pool  // write-back's chunk buffers, reused
	done     sync.WaitGroup
	// spare memfds for new files' pages (spare.go); nil without close
	// notifications
	spares    chan spare
	spareKick chan struct{}
	closed    bool
}

// New wraps a filesystem opened read-only.
func New(f *ext4.FS) *FS {
	fs := newFS(nil, 0, Options{})
	fs.drv.Store(f)
	return fs
}

// newFS is an FS with its maps and buffer pool, no driver and no
// goroutines yet.
func newFS(dev ext4.Device, size int64, o Options) *FS {
	f := &FS{dev: dev, size: size, opts: o, cache: map[uint32]*page{}, wd: map[int32]*page{}, ino: -1, inoWake: -1}
	f.maxPages, f.maxBytes = o.bounds()
	f.bufs.New = func() any { b := make([]byte, chunk); return &b }
	return f
}

// Mount opens the filesystem on dev (size bytes) read-write, unless
// o.ReadOnly, and starts its write-back.
func Mount(dev ext4.Device, size int64, o Options) (*FS, error) {
	if o.Logf == nil {
		o.Logf = func(string, ...any) {}
	}
	if o.Writeback == 0 {
		o.Writeback = 5 * time.Second
	}
	drv, err := ext4.OpenDevice(dev, size, &ext4.Options{Writable: !o.ReadOnly, Discard: o.Discard, Logf: o.Logf})
	if err != nil {
		return nil, err
	}
	f := newFS(dev, size, o)
	f.stop = make(chan struct{})
	f.drv.Store(drv)
	if err := f.startWatch(); err != nil {
		o.Logf("extfs: no close notifications (%v): files are written back at sync and periodically only", err)
	} else {
		f.startSpares()
	}
	if o.Writeback > 0 {
		f.done.Add(1)
		go f.flusher(o.Writeback)
	}
	if o.Held != nil {
		f.reapc = make(chan struct{}, 1)
		f.done.Add(1)
		go f.reaper()
	}
	return f, nil
}

// changed records a change to the filesystem: metadata to Sync, and
// inodes that nodes must read again.
func (f *FS) changed() {
	f.dirty.Store(true)
	f.gen.Add(1)
}

// fs returns the current driver (Remount replaces it).
func (f *FS) fs() *ext4.FS { return f.drv.Load() }

// Writable reports whether the filesystem is mounted read-write.
func (f *FS) Writable() bool { return f.fs().Writable() }

// Root returns the root directory (inode 2).
func (f *FS) Root() vfs.DirNode {
	n, err := f.node(ext4.RootIno)
	if d, ok := n.(*dir); ok && err == nil {
		return d
	}
	return &dir{node{fs: f, ino: ext4.RootIno, in: &ext4.Inode{Ino: ext4.RootIno, Mode: syscall.S_IFDIR | 0o755, Nlink: 2}}}
}

// Type returns "ext4".
func (f *FS) Type() string { return "ext4" }

// Dynamic is false: the image changes only through the vfs.
func (f *FS) Dynamic() bool { return false }

// Statfs reports the superblock's counts.
func (f *FS) Statfs() vfs.Statfs {
	f.reapOrphans() // true counts: what rm just freed is free
	s := f.fs().Statfs()
	return vfs.Statfs{Type: Magic, Bsize: s.BlockSize, Blocks: s.Blocks, Bfree: s.FreeBlocks,
		Bavail: s.AvailBlocks, Files: s.Inodes, Ffree: s.FreeInodes, NameLen: int64(s.NameLen)}
}

func (f *FS) node(ino uint32) (vfs.Node, error) {
	g := f.gen.Load()
	in, err := f.fs().Inode(ino)
	if err != nil {
		return nil, err
	}
	n := node{fs: f, ino: ino, in: in, gen: g}
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

// Ino is the node's inode number (tests, and identity across lookups).
func (n *node) Ino() uint32 { return n.ino }

type node struct {
	fs  *FS
	ino uint32
	in  *ext4.Inode // as loaded at generation gen
	gen uint64
}

// inode returns the node's current inode, read again only when the
// filesystem changed since it was loaded.
func (n *node) inode() (*ext4.Inode, error) {
	g := n.fs.gen.Load()
	if g == n.gen {
		return n.in, nil
	}
	in, err := n.fs.fs().Inode(n.ino)
	if err != nil {
		return nil, err
	}
	n.in, n.gen = in, g
	return in, nil
}

func (n *node) Attr() (vfs.Attr, error) {
	in, err := n.inode()
	if err != nil {
		return vfs.Attr{}, err
	}
	a := vfs.Attr{Ino: uint64(in.Ino), Mode: uint32(in.Mode), Nlink: uint32(in.Nlink), Uid: in.Uid, Gid: in.Gid,
		Size: int64(in.Size), Blocks: int64(in.Blocks), Blksize: int32(n.fs.fs().BlockSize()),
		Atime: in.Atime, Mtime: in.Mtime, Ctime: in.Ctime, Btime: in.Crtime}
	if t := in.Mode & syscall.S_IFMT; t == syscall.S_IFCHR || t == syscall.S_IFBLK {
		a.Rdev = vfs.Mkdev(in.RdevMajor, in.RdevMinor)
	}
	if t := in.Mode & syscall.S_IFMT; t == syscall.S_IFREG {
		n.fs.overlay(n.ino, &a)
	}
	return a, nil
}

type dir struct{ node }

func (d *dir) Lookup(_ *vfs.Ctx, name string) (vfs.Node, error) {
	ino, err := d.fs.fs().Lookup(d.ino, name)
	if err != nil {
		return nil, err
	}
	return d.fs.node(ino)
}

func (d *dir) ReadDir(_ *vfs.Ctx) ([]vfs.Dirent, error) {
	var out []vfs.Dirent
	err := d.fs.fs().ReadDir(d.ino, 0, func(e ext4.DirEntry) bool {
		if e.Name != "." && e.Name != ".." {
			out = append(out, vfs.Dirent{Name: e.Name, Ino: uint64(e.Ino), Type: e.Type})
		}
		return true
	})
	return out, err
}

type link struct{ node }

func (l *link) Readlink(_ *vfs.Ctx) (string, error) { return l.fs.fs().Readlink(l.ino) }

type file struct{ node }

// Open returns a re-open of the inode's page cache memfd.
func (fl *file) Open(_ *vfs.Ctx, flags int) (*os.File, error) {
	write := flags&syscall.O_ACCMODE != syscall.O_RDONLY
	if (write || flags&syscall.O_TRUNC != 0) && !fl.fs.fs().Writable() {
		return nil, syscall.EROFS
	}
	return fl.fs.open(fl.ino, flags)
}
