// Package hostfs mounts a host directory in the guest, as User Mode
// Linux's hostfs does, but confined: the engine opens every host file
// with openat2(RESOLVE_BENEATH|RESOLVE_NO_MAGICLINKS|RESOLVE_NO_SYMLINKS)
// beneath the mounted directory, so neither "..", nor a symbolic link in
// the host tree, nor a directory swapped for a link while a lookup runs,
// reaches a host file outside it. Symbolic links are the guest's: the
// engine's vfs follows them in the guest's tree, never on the host.
//
// Nothing is cached: every lookup, stat and listing asks the host, so
// changes made on the host are seen at once. A guest's regular file
// descriptor is the host file itself (no copy): reads, writes and mmap
// run natively on it.
package hostfs

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/umltools/umltools/internal/vfs"
)

// Magic is HOSTFS_SUPER_MAGIC, statfs's f_type of a hostfs mount.
const Magic = 0x00c0ffee

// resolve confines every host path below a mount's directory and lets
// the host follow no symbolic link at all: the guest's vfs follows them.
const resolve = unix.RESOLVE_BENEATH | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_SYMLINKS

// ErrNotAllowed is returned by a nil Policy's Mount: the engine was
// started without hostfs=.
var ErrNotAllowed = errors.New("hostfs: mounts of host directories are refused: start the engine with hostfs_allow=<dir> to allow mounts of host paths beneath <dir>, or hostfs=<dir> to make mount paths relative to <dir> (hostfs_allow=/ allows the whole host, as the C kernel does without hostfs=)")

// ErrEscape is returned when a mount's host directory is not beneath the
// allowed root.
var ErrEscape = errors.New("not beneath the hostfs= directory")

// Policy is where hostfs mounts may reach: the hostfs=<dir>[,append]
// command line option (paths relative to dir), or hostfs_allow=<dir>
// (host paths beneath dir). A nil Policy refuses every mount.
type Policy struct {
	// Root is the allowed host directory; mount paths are relative to it
	// (the C kernel's prefix).
	Root string
	// Append opens every file written with O_APPEND (",append").
	Append bool
	// Absolute: mount paths are host paths, which must lie beneath Root
	// (hostfs_allow=<dir>), instead of paths relative to it.
	Absolute bool
}

// Options are a mount's own settings.
type Options struct {
	// ReadOnly refuses every change (EROFS).
	ReadOnly bool
	// Uid and Gid are the guest ids that host files owned by the engine's
	// user and group show as (default 0, root); other host ids show
	// unchanged. Guest chowns to them give the files back to the engine's
	// user.
	Uid, Gid uint32
}

// fstabWords are mount(8) and fstab words that reach the data of some
// mount programs (busybox passes what it does not know): not paths.
var fstabWords = map[string]bool{"ro": true, "rw": true, "defaults": true, "user": true, "nouser": true,
	"users": true, "owner": true, "auto": true, "noauto": true, "nofail": true, "_netdev": true}

// ParseData splits mount(2) data into the host path and the options:
// "uid=N" and "gid=N" set Options, "hostfs=<path>" names the path as the
// kernel's new mount API does, and the other words (joined again with
// commas, so a path may hold one) are the path. ro and rw come as mount
// flags, not here; they and the fstab words (user, defaults…) are
// ignored.
func ParseData(data string) (path string, o Options, err error) {
	var words []string
	for _, w := range strings.Split(data, ",") {
		k, v, hasEq := strings.Cut(w, "=")
		switch {
		case w == "" || fstabWords[w]:
		case hasEq && (k == "uid" || k == "gid"):
			n, e := strconv.ParseUint(v, 10, 32)
			if e != nil || n == 0xffffffff {
				return "", o, fmt.Errorf("hostfs: bad %s=%q", k, v)
			}
			if k == "uid" {
				o.Uid = uint32(n)
			} else {
				o.Gid = uint32(n)
			}
		case hasEq && k == "hostfs":
			words = append(words, v)
		default:
			words = append(words, w)
		}
	}
	return strings.Join(words, ","), o, nil
}

// Mount opens the host directory path (relative to the policy's root;
// a leading "/" is the root itself) and returns it as a filesystem. The
// path is resolved beneath the root: ".." above it and symbolic links
// leading out are refused with ErrEscape.
func (p *Policy) Mount(path string, o Options) (*FS, error) {
	if p == nil || p.Root == "" {
		return nil, ErrNotAllowed
	}
	base, err := unix.Open(p.Root, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("hostfs: %s: %w", p.Root, err)
	}
	defer unix.Close(base)
	rel := strings.TrimLeft(path, "/")
	if p.Absolute {
		// A host path, as the C kernel takes it without hostfs=: "" is
		// the host's root. It must name a place beneath Root.
		host := filepath.Clean("/" + path)
		r, err := filepath.Rel(filepath.Clean(p.Root), host)
		if err != nil || r == ".." || strings.HasPrefix(r, "../") {
			return nil, fmt.Errorf("hostfs: %s: %w %s (hostfs_allow=): %w", host, ErrEscape, p.Root, syscall.EPERM)
		}
		rel = r
	}
	if rel == "" {
		rel = "."
	}
	// The mount path may use relative symbolic links that stay beneath
	// the root (it is the administrator's); after it, none.
	fd, err := unix.Openat2(base, rel, &unix.OpenHow{
		Flags:   unix.O_RDONLY | unix.O_DIRECTORY | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_MAGICLINKS,
	})
	if errors.Is(err, unix.EXDEV) {
		return nil, fmt.Errorf("hostfs: %s: %w %s: %w", path, ErrEscape, p.Root, syscall.EPERM)
	}
	if err != nil {
		return nil, fmt.Errorf("hostfs: %s (beneath %s): %w", path, p.Root, err)
	}
	host := filepath.Join(p.Root, rel)
	return newFS(fd, host, p.Append, o), nil
}

// FS is one mounted host directory.
type FS struct {
	// mu is held (shared) while root is used, so that Close cannot free
	// the descriptor's number for reuse under an openat2.
	mu      sync.RWMutex
	root    int    // the directory, O_RDONLY: dirfd of every openat2
	host    string // its host path, for messages
	ro      atomic.Bool
	append  bool
	uid     uint32 // the guest ids of hostUid and hostGid
	gid     uint32
	hostUid uint32 // the engine's user and group on the host
	hostGid uint32
	closed  bool // under mu
}

func newFS(fd int, host string, appendMode bool, o Options) *FS {
	f := &FS{root: fd, host: host, append: appendMode, uid: o.Uid, gid: o.Gid,
		hostUid: uint32(os.Geteuid()), hostGid: uint32(os.Getegid())}
	f.ro.Store(o.ReadOnly)
	return f
}

// HostPath returns the host directory the filesystem shows.
func (f *FS) HostPath() string { return f.host }

// Root returns the mounted directory.
func (f *FS) Root() vfs.DirNode { return &Dir{node{fs: f, rel: "."}} }

// Type is "hostfs".
func (f *FS) Type() string { return "hostfs" }

// Dynamic is true: the host changes the tree behind the engine's back,
// so the vfs caches no lookup.
func (f *FS) Dynamic() bool { return true }

// Writable reports whether the mount is read-write.
func (f *FS) Writable() bool { return !f.ro.Load() }

// Remount switches between read-only and read-write.
func (f *FS) Remount(readOnly bool) error {
	f.ro.Store(readOnly)
	return nil
}

// Statfs reports the host filesystem's numbers with hostfs's magic.
func (f *FS) Statfs() vfs.Statfs {
	var st unix.Statfs_t
	f.mu.RLock()
	err := unix.Fstatfs(f.root, &st)
	f.mu.RUnlock()
	if err != nil {
		return vfs.Statfs{Type: Magic, Bsize: 4096, NameLen: 255}
	}
	return vfs.Statfs{Type: Magic, Bsize: st.Bsize, Blocks: st.Blocks, Bfree: st.Bfree, Bavail: st.Bavail,
		Files: st.Files, Ffree: st.Ffree, NameLen: st.Namelen}
}

// Sync is syncfs(2) of the host filesystem.
func (f *FS) Sync() error {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.closed {
		return nil
	}
	if err := unix.Syncfs(f.root); err != nil {
		return fmt.Errorf("hostfs: syncfs %s: %w", f.host, err)
	}
	return nil
}

// Close releases the host directory. Nodes used after it fail with EBADF.
func (f *FS) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return nil
	}
	f.closed = true
	return unix.Close(f.root)
}

// HostAttr maps the host stat of a guest's open file (which follows the
// file across renames and unlinks) to what the guest sees.
func (f *FS) HostAttr(st *unix.Stat_t) vfs.Attr {
	return vfs.Attr{Ino: st.Ino, Mode: st.Mode, Nlink: uint32(st.Nlink),
		Uid: f.guestID(st.Uid, f.hostUid, f.uid), Gid: f.guestID(st.Gid, f.hostGid, f.gid),
		Rdev: st.Rdev, Size: st.Size, Blocks: st.Blocks, Blksize: int32(st.Blksize),
		Atime: time.Unix(st.Atim.Sec, st.Atim.Nsec), Mtime: time.Unix(st.Mtim.Sec, st.Mtim.Nsec),
		Ctime: time.Unix(st.Ctim.Sec, st.Ctim.Nsec)}
}

func (f *FS) guestID(id, host, guest uint32) uint32 {
	if id == host {
		return guest
	}
	return id
}

// hostID maps a guest id (-1: unchanged) to the host's.
func (f *FS) hostID(id int, host, guest uint32) int {
	if id >= 0 && uint32(id) == guest {
		return int(host)
	}
	return id
}

func (f *FS) attr(st *unix.Statx_t) vfs.Attr {
	ts := func(t unix.StatxTimestamp) time.Time { return time.Unix(t.Sec, int64(t.Nsec)) }
	a := vfs.Attr{Ino: st.Ino, Mode: uint32(st.Mode), Nlink: st.Nlink,
		Uid: f.guestID(st.Uid, f.hostUid, f.uid), Gid: f.guestID(st.Gid, f.hostGid, f.gid),
		Rdev: vfs.Mkdev(st.Rdev_major, st.Rdev_minor), Size: int64(st.Size), Blocks: int64(st.Blocks),
		Blksize: int32(st.Blksize), Atime: ts(st.Atime), Mtime: ts(st.Mtime), Ctime: ts(st.Ctime)}
	if st.Mask&unix.STATX_BTIME != 0 {
		a.Btime = ts(st.Btime)
	}
	return a
}

// open opens rel beneath the mount's directory; it never follows a
// symbolic link (a final one comes back as an O_PATH descriptor of the
// link with O_PATH, as ELOOP otherwise).
func (f *FS) open(rel string, flags int) (int, error) {
	f.mu.RLock()
	if f.closed {
		f.mu.RUnlock()
		return -1, fmt.Errorf("hostfs: %s: %w", rel, syscall.EBADF)
	}
	fd, err := unix.Openat2(f.root, rel, &unix.OpenHow{Flags: uint64(flags | unix.O_NOFOLLOW | unix.O_CLOEXEC), Resolve: resolve})
	f.mu.RUnlock()
	if err != nil {
		return -1, fmt.Errorf("hostfs: %s: %w", rel, err)
	}
	return fd, nil
}

// statx stats rel without following it.
func (f *FS) statx(rel string) (unix.Statx_t, error) {
	var st unix.Statx_t
	fd, err := f.open(rel, unix.O_PATH)
	if err != nil {
		return st, err
	}
	defer unix.Close(fd)
	if err := unix.Statx(fd, "", unix.AT_EMPTY_PATH|unix.AT_SYMLINK_NOFOLLOW, unix.STATX_BASIC_STATS|unix.STATX_BTIME, &st); err != nil {
		return st, fmt.Errorf("hostfs: stat %s: %w", rel, err)
	}
	return st, nil
}

// node makes the vfs node of rel, by its host type.
func (f *FS) node(rel string, mode uint32) vfs.Node {
	n := node{fs: f, rel: rel}
	switch mode & unix.S_IFMT {
	case unix.S_IFDIR:
		return &Dir{n}
	case unix.S_IFLNK:
		return &Link{n}
	case unix.S_IFREG:
		return &File{n}
	}
	return &Special{n}
}

// validName checks a single path component from the vfs.
func validName(name string) error {
	if name == "" || name == "." || name == ".." || len(name) > vfs.NameMax || strings.ContainsAny(name, "/\x00") {
		return fmt.Errorf("hostfs: bad name %q: %w", name, syscall.EINVAL)
	}
	return nil
}

// procFd names a descriptor of the engine by its magic link, for the
// calls that take no descriptor of an O_PATH open (chmod, xattrs).
func procFd(fd int) string { return "/proc/self/fd/" + strconv.Itoa(fd) }
