// Package memfd makes the host files that back guest regular files: a
// memfd holding a file's content (the page cache of one inode), and
// re-opens of it with a guest's access mode, each its own open file
// description with its own offset.
package memfd

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"strconv"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// maxName is the longest memfd name the kernel takes (249 bytes).
const maxName = 249

// New creates an empty memfd named name (shown in /proc/<pid>/maps). The
// descriptor is close-on-exec in the engine.
func New(name string) (*os.File, error) {
	if len(name) > maxName {
		name = name[len(name)-maxName:]
	}
	fd, err := unix.MemfdCreate(name, unix.MFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("memfd %s: %w", name, err)
	}
	return os.NewFile(uintptr(fd), "memfd:"+name), nil
}

// Fill copies size bytes of r into f from offset 0, leaving all-zero
// chunks as holes so a sparse file stays sparse.
func Fill(f *os.File, r io.ReaderAt, size int64) error {
	if err := f.Truncate(size); err != nil {
		return fmt.Errorf("%s: %w", f.Name(), err)
	}
	buf := make([]byte, 1<<20)
	zero := make([]byte, len(buf))
	for off := int64(0); off < size; {
		n := int64(len(buf))
		if size-off < n {
			n = size - off
		}
		got, err := r.ReadAt(buf[:n], off)
		if err != nil && !(err == io.EOF && int64(got) == n) {
			return fmt.Errorf("%s: reading at %d: %w", f.Name(), off, err)
		}
		if !bytes.Equal(buf[:n], zero[:n]) {
			if _, err := f.WriteAt(buf[:n], off); err != nil {
				return fmt.Errorf("%s: %w", f.Name(), err)
			}
		}
		off += n
	}
	return nil
}

// FromBytes returns a new memfd holding b, re-opened read-only.
func FromBytes(name string, b []byte) (*os.File, error) {
	f, err := New(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if _, err := f.Write(b); err != nil {
		return nil, fmt.Errorf("%s: %w", f.Name(), err)
	}
	return Reopen(f, syscall.O_RDONLY)
}

// ProcPath names the engine's descriptor of f by its /proc/self/fd link,
// for the calls that take a path (reopen, inotify, utimensat).
func ProcPath(f *os.File) string { return "/proc/self/fd/" + strconv.Itoa(int(f.Fd())) }

// selfFdDir is an O_PATH descriptor of this process's /proc/self/fd,
// opened once (it stays valid for the process's life): a reopen through
// it does not walk /proc/self/fd each time, which is most of its cost.
var selfFdDir = sync.OnceValues(func() (int, error) {
	return syscall.Open("/proc/self/fd", unix.O_PATH|syscall.O_DIRECTORY|syscall.O_CLOEXEC, 0)
})

// Reopen opens f again through /proc/self/fd with the access mode and
// status flags of a guest's open (O_APPEND, O_NONBLOCK, …; O_CREAT,
// O_EXCL, O_TRUNC and O_CLOEXEC are dropped: the caller handles them). The
// new file has its own offset.
func Reopen(f *os.File, flags int) (*os.File, error) {
	keep := syscall.O_ACCMODE | syscall.O_APPEND | syscall.O_DSYNC | syscall.O_SYNC | syscall.O_NOATIME | syscall.O_DIRECT
	fl := flags&keep | syscall.O_CLOEXEC
	var fd int
	var err error
	if dir, derr := selfFdDir(); derr == nil {
		fd, err = syscall.Openat(dir, strconv.Itoa(int(f.Fd())), fl, 0)
	} else {
		fd, err = syscall.Open(ProcPath(f), fl, 0)
	}
	if err != nil {
		return nil, fmt.Errorf("reopen %s: %w", f.Name(), err)
	}
	// O_NONBLOCK after os.NewFile: given a non-blocking fd, NewFile
	// tries to add it to the runtime's poller (epoll refuses memfds), a
	// cost in every guest open of such a file (GNU tar opens with it).
	nf := os.NewFile(uintptr(fd), f.Name())
	if flags&syscall.O_NONBLOCK != 0 {
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFL, fl|syscall.O_NONBLOCK); err != nil {
			nf.Close()
			return nil, fmt.Errorf("reopen %s: O_NONBLOCK: %w", f.Name(), err)
		}
	}
	return nf, nil
}
