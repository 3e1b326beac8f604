// Package devpts is the engine's devpts: /dev/pts lists the pseudo-
// terminals the guest has allocated through /dev/ptmx, which are host
// ptys (the guest's master fd is the host's), under their host numbers.
// Nodes are only names: opening /dev/pts/N is the kernel's business (it
// opens the host's /dev/pts/N for ptys of this machine only).
package devpts

import (
	"strconv"
	"syscall"
	"time"

	"github.com/umltools/umltools/internal/vfs"
)

// Magic is DEVPTS_SUPER_MAGIC.
const Magic = 0x1cd1

// Major is the first major number of Unix98 pty slaves.
const Major = 136

// Ptmx is /dev/ptmx's device number (5:2).
var Ptmx = vfs.Mkdev(5, 2)

// Pty is one allocated pseudo-terminal: its number and its slave's owner.
type Pty struct {
	N        int
	Uid, Gid uint32
}

// Source lists the machine's live ptys.
type Source interface {
	Ptys() []Pty
}

// FS is the devpts instance of a machine (every mount shares it, as
// Linux's single instance).
type FS struct {
	src  Source
	boot time.Time
}

// New returns a devpts over src.
func New(src Source) *FS { return &FS{src: src, boot: time.Now()} }

// Root returns the /dev/pts directory.
func (f *FS) Root() vfs.DirNode { return &root{f} }

// Type returns "devpts".
func (f *FS) Type() string { return "devpts" }

// Dynamic is true: ptys come and go.
func (f *FS) Dynamic() bool { return true }

// Statfs reports devpts's numbers.
func (f *FS) Statfs() vfs.Statfs { return vfs.Statfs{Type: Magic, Bsize: 4096, NameLen: 255} }

func (f *FS) attr(ino uint64, mode, uid, gid uint32, rdev uint64) vfs.Attr {
	n := uint32(1)
	if mode&syscall.S_IFMT == syscall.S_IFDIR {
		n = 2
	}
	return vfs.Attr{Ino: ino, Mode: mode, Nlink: n, Uid: uid, Gid: gid, Rdev: rdev, Blksize: 1024,
		Atime: f.boot, Mtime: f.boot, Ctime: f.boot}
}

type root struct{ f *FS }

func (r *root) Attr() (vfs.Attr, error) {
	return r.f.attr(1, syscall.S_IFDIR|0o755, 0, 0, 0), nil
}

func (r *root) Lookup(c *vfs.Ctx, name string) (vfs.Node, error) {
	if name == "ptmx" {
		return &node{r.f.attr(2, syscall.S_IFCHR, 0, 0, Ptmx)}, nil
	}
	n, err := strconv.Atoi(name)
	if err != nil || strconv.Itoa(n) != name {
		return nil, syscall.ENOENT
	}
	for _, p := range r.f.src.Ptys() {
		if p.N == n {
			return &node{r.f.attr(uint64(n)+3, syscall.S_IFCHR|0o620, p.Uid, p.Gid, Dev(n))}, nil
		}
	}
	return nil, syscall.ENOENT
}

func (r *root) ReadDir(c *vfs.Ctx) ([]vfs.Dirent, error) {
	out := []vfs.Dirent{{Name: "ptmx", Ino: 2, Type: syscall.DT_CHR}}
	for _, p := range r.f.src.Ptys() {
		out = append(out, vfs.Dirent{Name: strconv.Itoa(p.N), Ino: uint64(p.N) + 3, Type: syscall.DT_CHR})
	}
	return out, nil
}

// Dev is the device number of pty slave n.
func Dev(n int) uint64 { return vfs.Mkdev(uint32(Major+n/256), uint32(n%256)) }

// Number is the pty number of slave device rdev, or -1.
func Number(rdev uint64) int {
	maj := int(vfs.Major(rdev))
	if maj < Major || maj >= Major+8 {
		return -1
	}
	return (maj-Major)*256 + int(vfs.Minor(rdev))
}

// node is a device node (ptmx or a slave).
type node struct{ a vfs.Attr }

func (n *node) Attr() (vfs.Attr, error) { return n.a, nil }
