package ubd

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/umltools/umltools/internal/cow"
)

// SectorSize is the ubd sector size.
const SectorSize = 512

// Device is a guest block device. Offsets are in bytes (any alignment;
// whole sectors are the fast path). The device size is a whole number of
// sectors: the tail of an image whose length is not a multiple of 512
// reads as zeros, as in the kernel. All methods are safe for concurrent
// use.
type Device interface {
	io.ReaderAt
	io.WriterAt
	// Size is the device size in bytes (a multiple of SectorSize).
	Size() int64
	// ReadOnly reports whether writes are refused.
	ReadOnly() bool
	// Flush makes completed writes durable (fsync).
	Flush() error
	// Discard tells the device the range is unused (TRIM).
	Discard(off, n int64) error
	Close() error
}

// ErrReadOnly is returned by WriteAt and Discard on a read-only device.
var ErrReadOnly = errors.New("ubd: device is read-only")

// ErrNoDiscard is returned by Discard when the t flag disabled it.
var ErrNoDiscard = fmt.Errorf("ubd: discard disabled: %w", unix.EOPNOTSUPP)

// Options tune Open.
type Options struct {
	// Logf receives the kernel's console messages (creating a COW file,
	// not locking, switching backing files). Nil discards them.
	Logf func(format string, a ...any)
}

// Open opens the device sp describes, as the kernel's ubd driver does:
//   - with a backing file, File is a COW file (created over Backing when it
//     does not exist);
//   - without one and without the d flag, File is a COW file when it has a
//     valid COW header, else a raw image;
//   - a writable open that fails with EROFS or EACCES is retried read-only;
//   - every file is locked (write lock when writable, read lock on backing
//     files and read-only devices) unless the c flag is set; a conflict is
//     a *cow.LockedError naming the holder's pid.
func Open(sp *Spec, o *Options) (Device, error) {
	if o == nil {
		o = &Options{}
	}
	logf := o.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	if sp.File == "" {
		return nil, fmt.Errorf("%s: no file", sp.Name())
	}
	if sp.Backing != "" {
		if _, err := os.Stat(sp.File); errors.Is(err, os.ErrNotExist) {
			logf("Creating \"%s\" as COW file for \"%s\"", sp.File, sp.Backing)
			if _, err := cow.Create(sp.File, sp.Backing, false); err != nil {
				return nil, err
			}
		}
		return openCOW(sp, logf)
	}
	if !sp.NoCOW {
		if fh, err := os.Open(sp.File); err == nil {
			_, herr := cow.ReadHeader(fh)
			fh.Close()
			if herr == nil {
				return openCOW(sp, logf)
			}
		}
	}
	return openRaw(sp, logf)
}

// locks holds the lock descriptors of a device.
type locks []*os.File

func (l locks) release() {
	for _, f := range l {
		f.Close()
	}
}

func takeLocks(sp *Spec, logf func(string, ...any), files []string, write []bool) (locks, error) {
	if sp.Shared {
		for _, f := range files {
			logf("Not locking \"%s\" on the host", f)
		}
		return nil, nil
	}
	var l locks
	for i, f := range files {
		fh, err := lockFile(f, write[i])
		if err != nil {
			l.release()
			return nil, err
		}
		l = append(l, fh)
	}
	return l, nil
}

// raw is a plain image file.
type raw struct {
	f     *os.File
	size  int64 // rounded up to a sector
	ro    bool
	trim  bool
	locks locks
}

func openRaw(sp *Spec, logf func(string, ...any)) (Device, error) {
	flag := os.O_RDWR
	ro := sp.ReadOnly
	if ro {
		flag = os.O_RDONLY
	}
	if sp.Sync {
		flag |= os.O_SYNC
	}
	f, err := os.OpenFile(sp.File, flag, 0)
	if !ro && (errors.Is(err, unix.EROFS) || errors.Is(err, unix.EACCES)) {
		ro = true
		f, err = os.OpenFile(sp.File, flag&^os.O_RDWR|os.O_RDONLY, 0)
	}
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	size := st.Size()
	if st.Mode()&os.ModeDevice != 0 {
		if size, err = f.Seek(0, io.SeekEnd); err != nil {
			f.Close()
			return nil, fmt.Errorf("%s: Couldn't determine size of device's file: %w", sp.File, err)
		}
	}
	l, err := takeLocks(sp, logf, []string{sp.File}, []bool{!ro})
	if err != nil {
		f.Close()
		return nil, err
	}
	return &raw{f: f, size: (size + SectorSize - 1) &^ (SectorSize - 1), ro: ro, trim: !sp.NoTrim, locks: l}, nil
}

// HostFile is the image file itself: a raw device's byte n is the
// file's byte n (a COW device has no such file).
func (r *raw) HostFile() *os.File { return r.f }

func (r *raw) Size() int64    { return r.size }
func (r *raw) ReadOnly() bool { return r.ro }

func (r *raw) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("%s: negative offset", r.f.Name())
	}
	if off >= r.size {
		return 0, io.EOF
	}
	var eof error
	if rem := r.size - off; int64(len(p)) > rem {
		p, eof = p[:rem], io.EOF
	}
	n, err := r.f.ReadAt(p, off)
	if err == io.EOF {
		// The partial last sector past the end of the file reads as zeros.
		clear(p[n:])
		n, err = len(p), nil
	}
	if err != nil {
		return n, err
	}
	return n, eof
}

func (r *raw) WriteAt(p []byte, off int64) (int, error) {
	if r.ro {
		return 0, ErrReadOnly
	}
	if off < 0 || off+int64(len(p)) > r.size {
		return 0, fmt.Errorf("%s: write of %d bytes at %d beyond the device size %d: %w", r.f.Name(), len(p), off, r.size, unix.ENOSPC)
	}
	return r.f.WriteAt(p, off)
}

func (r *raw) Flush() error {
	if r.ro {
		return nil
	}
	return r.f.Sync()
}

func (r *raw) Discard(off, n int64) error {
	switch {
	case r.ro:
		return ErrReadOnly
	case !r.trim:
		return ErrNoDiscard
	case off < 0 || n < 0 || off+n > r.size:
		return fmt.Errorf("%s: discard beyond the device: %w", r.f.Name(), unix.EINVAL)
	}
	err := unix.Fallocate(int(r.f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n)
	if err != nil {
		return fmt.Errorf("%s: discard: %w", r.f.Name(), err)
	}
	return nil
}

func (r *raw) Close() error {
	err := r.f.Close()
	r.locks.release()
	return err
}

// cowDev is a COW file over its backing file (internal/cow's view).
type cowDev struct {
	*cow.File
	ro    bool
	sync  bool
	locks locks
}

func openCOW(sp *Spec, logf func(string, ...any)) (Device, error) {
	ro := sp.ReadOnly
	open := func(ro bool) (*cow.File, error) {
		return cow.Open(sp.File, cow.Options{Backing: sp.Backing, Switch: true, Logf: logf, ReadOnly: ro})
	}
	cf, err := open(ro)
	if !ro && (errors.Is(err, unix.EROFS) || errors.Is(err, unix.EACCES)) {
		ro = true
		cf, err = open(true)
	}
	if err != nil {
		return nil, err
	}
	l, err := takeLocks(sp, logf, []string{sp.File, cf.BackingFile()}, []bool{!ro, false})
	if err != nil {
		cf.Close()
		return nil, err
	}
	return &cowDev{File: cf, ro: ro, sync: sp.Sync, locks: l}, nil
}

func (c *cowDev) ReadOnly() bool { return c.ro }

func (c *cowDev) WriteAt(p []byte, off int64) (int, error) {
	if c.ro {
		return 0, ErrReadOnly
	}
	n, err := c.File.WriteAt(p, off)
	if err == nil && c.sync {
		err = c.File.Sync()
	}
	return n, err
}

func (c *cowDev) Flush() error { return c.File.Sync() }

// Discard is accepted and ignored: the sectors keep their contents, which
// discard semantics allow (the COW bitmap cannot express "zero").
func (c *cowDev) Discard(off, n int64) error {
	if c.ro {
		return ErrReadOnly
	}
	if off < 0 || n < 0 || off+n > c.Size() {
		return fmt.Errorf("discard beyond the device: %w", unix.EINVAL)
	}
	return nil
}

func (c *cowDev) Close() error {
	err := c.File.Close()
	c.locks.release()
	return err
}

// ErrNotRaw is returned by Reopen for a COW device: its contents are two
// files merged, with no single host file to hand out.
var ErrNotRaw = errors.New("ubd: a COW device has no single host file")

// Reopen opens a raw image's host file again with flags (O_RDONLY or
// O_RDWR, plus O_NONBLOCK, O_SYNC…), for a guest that opens the block
// device node itself (fsck, dumpe2fs). Writing needs a writable device.
func Reopen(d Device, flags int) (*os.File, error) {
	r, ok := d.(*raw)
	if !ok {
		return nil, ErrNotRaw
	}
	if flags&unix.O_ACCMODE != unix.O_RDONLY && r.ro {
		return nil, unix.EROFS
	}
	p := "/proc/self/fd/" + strconv.Itoa(int(r.f.Fd()))
	fd, err := unix.Open(p, flags|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("reopening %s: %w", r.f.Name(), err)
	}
	return os.NewFile(uintptr(fd), r.f.Name()), nil
}
