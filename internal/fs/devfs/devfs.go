// Package devfs is the engine's devtmpfs: a tmpfs holding the device
// nodes of the machine, and the table that says which host object backs
// each guest device number.
package devfs

import (
	"syscall"

	"github.com/umltools/umltools/internal/fs/devpts"
	"github.com/umltools/umltools/internal/fs/tmpfs"
	"github.com/umltools/umltools/internal/vfs"
)

// Device numbers the engine serves.
var (
	Null    = vfs.Mkdev(1, 3)
	Zero    = vfs.Mkdev(1, 5)
	Full    = vfs.Mkdev(1, 7)
	Random  = vfs.Mkdev(1, 8)
	Urandom = vfs.Mkdev(1, 9)
	Tty     = vfs.Mkdev(5, 0)
	Console = vfs.Mkdev(5, 1)
	Tty0    = vfs.Mkdev(4, 0)
	Ptmx    = devpts.Ptmx
)

// HostPath returns the host device that backs a guest memory-class device
// (null, zero, full, random, urandom), or "".
func HostPath(rdev uint64) string {
	switch rdev {
	case Null:
		return "/dev/null"
	case Zero:
		return "/dev/zero"
	case Full:
		return "/dev/full"
	case Random:
		return "/dev/random"
	case Urandom:
		return "/dev/urandom"
	}
	return ""
}

// Node is one device node of a fresh devtmpfs.
type Node struct {
	Name string
	Mode uint32
	Rdev uint64
}

// nodes are the nodes a fresh devtmpfs holds (modes as udev sets them).
var nodes = []Node{
	{"null", syscall.S_IFCHR | 0o666, Null},
	{"zero", syscall.S_IFCHR | 0o666, Zero},
	{"full", syscall.S_IFCHR | 0o666, Full},
	{"random", syscall.S_IFCHR | 0o666, Random},
	{"urandom", syscall.S_IFCHR | 0o666, Urandom},
	{"tty", syscall.S_IFCHR | 0o666, Tty},
	{"console", syscall.S_IFCHR | 0o600, Console},
	{"tty0", syscall.S_IFCHR | 0o620, Tty0},
	{"ptmx", syscall.S_IFCHR | 0o666, Ptmx},
}

// New returns a devtmpfs holding the machine's device nodes.
func New() *tmpfs.FS {
	fs := tmpfs.New("devtmpfs", tmpfs.Magic, 0o755, 0, 0)
	root := fs.Root().(*tmpfs.Dir)
	for _, n := range nodes {
		root.Mknod(n.Name, n.Mode, n.Rdev, 0, 0)
	}
	root.Mkdir("pts", 0o755, 0, 0)
	root.Mkdir("shm", 0o1777, 0, 0)
	return fs
}
