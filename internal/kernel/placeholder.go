package kernel

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"

	"github.com/umltools/umltools/internal/vfs"
)

// placeholder opens the host directory standing for guest directory d:
// an empty directory of the kernel's private tree, one per dentry. Native
// read gives EISDIR, lseek keeps the getdents position, and the kernel
// recognises it by its inode.
func (k *Kernel) placeholder(d *vfs.Dentry, flags int) (*os.File, error) {
	p, ok := d.Data.(string)
	if !ok {
		k.nextFile++
		p = filepath.Join(k.priv, "d", strconv.Itoa(k.nextFile))
		if err := os.Mkdir(p, 0o755); err != nil {
			return nil, fmt.Errorf("placeholder: %w", err)
		}
		d.Data = p
	}
	fl := syscall.O_RDONLY | syscall.O_DIRECTORY | syscall.O_CLOEXEC | flags&syscall.O_NONBLOCK
	fd, err := syscall.Open(p, fl, 0)
	if err != nil {
		return nil, fmt.Errorf("placeholder %s: %w", p, err)
	}
	return os.NewFile(uintptr(fd), p), nil
}

// placeholderFile is a read-only stand-in for a non-directory opened
// with O_PATH: an empty, already unlinked file of the private tree.
func (k *Kernel) placeholderFile(d *vfs.Dentry) (*os.File, error) {
	k.nextFile++
	p := filepath.Join(k.priv, "d", "f"+strconv.Itoa(k.nextFile))
	f, err := os.OpenFile(p, os.O_CREATE|os.O_EXCL|os.O_RDONLY|syscall.O_CLOEXEC, 0o400)
	if err != nil {
		return nil, fmt.Errorf("placeholder: %w", err)
	}
	os.Remove(p)
	return f, nil
}
