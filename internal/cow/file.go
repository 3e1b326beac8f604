package cow

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// ErrReadOnly is returned by WriteAt on a File opened read-only.
var ErrReadOnly = errors.New("COW device is read-only")

// ErrNoBit is returned by WriteAt for a sector that has no bit in the
// on-disk bitmap (only possible in v1/v2 files, whose bitmap length is
// rounded down by an old bug).
var ErrNoBit = errors.New("sector has no bit in the COW bitmap")

// LockedError reports that another process (usually a running UML) holds a
// conflicting fcntl lock on a file, as the kernel's
// "F_SETLK failed, file already locked by pid N".
type LockedError struct {
	Path string
	Pid  int
}

func (e *LockedError) Error() string {
	return fmt.Sprintf("%s: F_SETLK failed, file already locked by pid %d", e.Path, e.Pid)
}

// Options configures Open.
type Options struct {
	// Backing is the backing file requested besides the COW file, like
	// the second field of ubdN=cow,backing, and is treated as the kernel
	// does: if it is another file than the header's (by device and
	// inode; both must exist to tell) and matches the header's size and
	// mtime, it is used ("Switching backing file to '...'"); otherwise
	// the header's backing file is used and must match.
	Backing string
	// Switch rewrites the header to name Backing when it is used instead
	// of the header's file, as the kernel does. Only v3 headers are
	// rewritten (the kernel would corrupt v1 and v2 files).
	Switch bool
	// Logf, if set, receives the kernel's messages about the backing
	// file ("Backing file mismatch - ...", "Switching backing file to ...").
	Logf func(format string, a ...any)
	// ReadOnly opens the COW file read-only (the ubd 'r' flag).
	ReadOnly bool
	// Lock takes fcntl locks as the kernel does: a write lock on the COW
	// file (read lock when ReadOnly) and a read lock on the backing file.
	Lock bool
}

// File is the block-device view of a COW file over its backing file: the
// virtual disk the kernel's ubd driver presents. Reads take each sector
// from the COW file when its bitmap bit is set, else from the backing file;
// writes go to the COW file, set the bits and write the changed bitmap
// words back in the kernel's units. File is safe for concurrent use.
type File struct {
	hdr     *Header
	path    string
	backing string
	cow     *os.File
	back    *os.File
	ro      bool
	size    int64 // device size: backing size rounded up to 512

	mu     sync.RWMutex
	bitmap []byte // BitmapLen bytes from disk, zero-padded to whole words + 1 word
	words  int64  // ceil(BitmapLen/8): the kernel's bitmap length in words
	limit  int64  // bytes of bitmap area that may be written: DataOffset-BitmapOffset
}

// Open opens the COW file at path and its backing file. The header must be
// valid; the backing file (from the header, or o.Backing) must match its
// size and then its mtime (*MismatchError). The header's sector size must
// be 512, the only one the kernel's driver supports.
func Open(path string, o Options) (*File, error) {
	flag := os.O_RDWR
	if o.ReadOnly {
		flag = os.O_RDONLY
	}
	cf, err := os.OpenFile(path, flag, 0)
	if err != nil {
		return nil, err
	}
	f := &File{path: path, cow: cf, ro: o.ReadOnly}
	if err := f.init(o); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

func (f *File) init(o Options) error {
	h, err := ReadHeader(f.cow)
	if err != nil {
		return fmt.Errorf("%s: %w", f.path, err)
	}
	if h.SectorSize != SectorSize {
		return fmt.Errorf("%s: %w: sector size %d (only 512 is supported)", f.path, ErrGeometry, h.SectorSize)
	}
	f.hdr = h
	if o.Lock {
		if err := lockFile(f.cow, f.path, !o.ReadOnly); err != nil {
			return err
		}
	}
	if err := f.chooseBacking(o); err != nil {
		return err
	}
	if f.back, err = os.Open(f.backing); err != nil {
		return err
	}
	if o.Lock {
		if err := lockFile(f.back, f.backing, false); err != nil {
			return err
		}
	}
	f.size = roundUp(int64(h.Size), SectorSize)
	f.words = (h.BitmapLen + 7) / 8
	f.limit = h.DataOffset - h.BitmapOffset
	f.bitmap = make([]byte, 8*(f.words+1))
	if _, err := f.cow.ReadAt(f.bitmap[:h.BitmapLen], h.BitmapOffset); err != nil {
		return &OpError{Op: "Reading COW bitmap", Path: f.path, Err: err}
	}
	return nil
}

// chooseBacking picks and validates the backing file as the kernel's
// open_ubd_file does, switching (and maybe rewriting the header) when a
// different, matching file is requested.
func (f *File) chooseBacking(o Options) error {
	h := f.hdr
	logf := o.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	f.backing = h.BackingFile
	if o.Backing == "" || sameBacking(o.Backing, h.BackingFile) {
		return CheckBacking(h, f.backing)
	}
	logf("Backing file mismatch - \"%s\" requested, \"%s\" specified in COW header of \"%s\"", o.Backing, h.BackingFile, f.path)
	if CheckBacking(h, o.Backing) != nil {
		return CheckBacking(h, f.backing)
	}
	logf("Switching backing file to '%s'", o.Backing)
	f.backing = o.Backing
	if !o.Switch || f.ro || h.Version != 3 || h.Broken {
		return nil
	}
	nh, err := BackingHeader(o.Backing)
	if err != nil {
		return fmt.Errorf("%s: switching backing file: %w", f.path, err)
	}
	nh.SectorSize, nh.Alignment = h.SectorSize, h.Alignment
	if err := nh.layout(); err != nil || nh.DataOffset != h.DataOffset {
		return fmt.Errorf("%s: switching backing file: layout would change", f.path)
	}
	if err := WriteHeader(f.cow, nh); err != nil {
		return &OpError{Op: "Switching backing file", Path: f.path, Err: err}
	}
	f.hdr = nh
	return nil
}

// sameBacking reports whether the requested backing file is the header's:
// the same name, or the same device and inode. As in the kernel, a file
// that cannot be stat'ed counts as the same.
func sameBacking(requested, header string) bool {
	if requested == header {
		return true
	}
	var a, b unix.Stat_t
	if unix.Stat(requested, &a) != nil || unix.Stat(header, &b) != nil {
		return true
	}
	return a.Dev == b.Dev && a.Ino == b.Ino
}

// lockFile takes a whole-file fcntl lock (write or read) without waiting.
func lockFile(fh *os.File, path string, write bool) error {
	lk := unix.Flock_t{Type: unix.F_RDLCK, Whence: io.SeekStart}
	if write {
		lk.Type = unix.F_WRLCK
	}
	if err := unix.FcntlFlock(fh.Fd(), unix.F_SETLK, &lk); err != nil {
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EACCES) {
			q := lk
			if unix.FcntlFlock(fh.Fd(), unix.F_GETLK, &q) == nil && q.Type != unix.F_UNLCK {
				return &LockedError{Path: path, Pid: int(q.Pid)}
			}
			return &LockedError{Path: path}
		}
		return fmt.Errorf("locking %s: %w", path, err)
	}
	return nil
}

// CheckBacking validates the backing file at path against h the way the
// kernel and uml_moo do: size first (a block device's size is its length),
// then mtime. It returns a *MismatchError, or the stat error.
func CheckBacking(h *Header, path string) error {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return &OpError{Op: "Stating backing file", Path: path, Err: err}
	}
	return checkStat(h, path, &st)
}

func checkStat(h *Header, path string, st *unix.Stat_t) error {
	size, err := fileSize(path, st)
	if err != nil {
		return &OpError{Op: "Stating backing file", Path: path, Err: err}
	}
	if uint64(size) != h.Size {
		return &MismatchError{What: "Size", Header: int64(h.Size), Actual: size, Backing: path}
	}
	if st.Mtim.Sec != h.Mtime {
		return &MismatchError{What: "mtime", Header: h.Mtime, Actual: st.Mtim.Sec, Backing: path}
	}
	return nil
}

// Header returns the COW file's header (do not modify it).
func (f *File) Header() *Header { return f.hdr }

// BackingFile returns the path of the backing file in use.
func (f *File) BackingFile() string { return f.backing }

// Size returns the device size in bytes: the backing file's size rounded
// up to a whole sector, as the kernel sizes a COW device.
func (f *File) Size() int64 { return f.size }

// Present reports whether sector n (512 bytes) is stored in the COW file.
func (f *File) Present(n int64) bool {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return TestBit(f.bitmap[:f.hdr.BitmapLen], n)
}

// ReadAt reads len(p) bytes of the virtual disk at off. Bytes past the end
// of an underlying file read as zeros; reading past Size returns io.EOF
// with the bytes before it.
func (f *File) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("%s: negative offset", f.path)
	}
	var eof error
	if off >= f.size {
		return 0, io.EOF
	}
	if rem := f.size - off; int64(len(p)) > rem {
		p, eof = p[:rem], io.EOF
	}
	f.mu.RLock()
	defer f.mu.RUnlock()
	bm := f.bitmap[:f.hdr.BitmapLen]
	done := 0
	for done < len(p) {
		pos := off + int64(done)
		sec := pos / SectorSize
		in := TestBit(bm, sec)
		// Extend the run while sectors come from the same file.
		end := (sec + 1) * SectorSize
		for end < off+int64(len(p)) && TestBit(bm, end/SectorSize) == in {
			end += SectorSize
		}
		n := int(min(end, off+int64(len(p))) - pos)
		src, at := f.back, pos
		if in {
			src, at = f.cow, f.hdr.DataOffset+pos
		}
		if err := readFull(src, p[done:done+n], at); err != nil {
			return done, &OpError{Op: "Reading data", Path: src.Name(), Err: err}
		}
		done += n
	}
	return done, eof
}

// readFull reads len(b) bytes at off, zero-filling past the end of file.
func readFull(r *os.File, b []byte, off int64) error {
	n, err := r.ReadAt(b, off)
	if err == io.EOF {
		clear(b[n:])
		return nil
	}
	return err
}

// WriteAt writes p to the virtual disk at off. The data goes to the COW
// file; a partial sector not yet in the COW file is first filled from the
// backing file. Then the sectors' bits are set and the changed bitmap
// words are written: 16 bytes (two 64-bit words) at BitmapOffset +
// 8*floor(sector/64), one word back at the end of the bitmap, exactly the
// kernel's update unit, repeated over the words a long write touches. Data
// is written before the bitmap, so a crash never exposes unwritten data.
func (f *File) WriteAt(p []byte, off int64) (int, error) {
	if f.ro {
		return 0, ErrReadOnly
	}
	if off < 0 || off+int64(len(p)) > f.size {
		return 0, fmt.Errorf("%s: write of %d bytes at %d beyond the device size %d", f.path, len(p), off, f.size)
	}
	if len(p) == 0 {
		return 0, nil
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	first := off / SectorSize
	last := (off + int64(len(p)) - 1) / SectorSize
	if last >= 8*f.hdr.BitmapLen {
		return 0, fmt.Errorf("%s: sector %d: %w", f.path, last, ErrNoBit)
	}
	bm := f.bitmap
	// Widen to whole sectors, filling the edges from the current contents
	// when they are not already in the COW file.
	start, end := first*SectorSize, (last+1)*SectorSize
	buf := p
	if start != off || end != off+int64(len(p)) {
		buf = make([]byte, end-start)
		if start != off {
			if err := f.fillEdge(buf[:SectorSize], start, first); err != nil {
				return 0, err
			}
		}
		if end != off+int64(len(p)) && (last != first || start == off) {
			if err := f.fillEdge(buf[len(buf)-SectorSize:], end-SectorSize, last); err != nil {
				return 0, err
			}
		}
		copy(buf[off-start:], p)
	}
	if _, err := f.cow.WriteAt(buf, f.hdr.DataOffset+start); err != nil {
		return 0, &OpError{Op: "Writing data", Path: f.path, Err: err}
	}
	lo, hi := int64(-1), int64(-1) // changed words
	for s := first; s <= last; s++ {
		if !TestBit(bm, s) {
			SetBit(bm, s)
			w := s / 64
			if lo < 0 {
				lo = w
			}
			hi = w
		}
	}
	if lo >= 0 {
		if err := f.writeBitmap(lo, hi); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

// fillEdge reads the current contents of sector sec (at byte pos of the
// disk) into b: from the COW file if its bit is set, else the backing file.
func (f *File) fillEdge(b []byte, pos, sec int64) error {
	src, at := f.back, pos
	if TestBit(f.bitmap, sec) {
		src, at = f.cow, f.hdr.DataOffset+pos
	}
	if err := readFull(src, b, at); err != nil {
		return &OpError{Op: "Reading data", Path: src.Name(), Err: err}
	}
	return nil
}

// writeBitmap writes the kernel's 16-byte units covering words lo..hi.
func (f *File) writeBitmap(lo, hi int64) error {
	for w := lo; w <= hi; w += 2 {
		u := w
		if u == f.words-1 && u > 0 {
			u-- // at the end of the bitmap the unit moves one word back
		}
		from, to := 8*u, 8*u+16
		if to > f.limit {
			to = f.limit
		}
		if from >= to {
			continue
		}
		if _, err := f.cow.WriteAt(f.bitmap[from:to], f.hdr.BitmapOffset+from); err != nil {
			return &OpError{Op: "Writing COW bitmap", Path: f.path, Err: err}
		}
	}
	return nil
}

// Sync flushes the COW file to stable storage.
func (f *File) Sync() error {
	if f.ro {
		return nil
	}
	return f.cow.Sync()
}

// Close closes both files (releasing their locks).
func (f *File) Close() error {
	var err error
	if f.back != nil {
		err = f.back.Close()
	}
	if e := f.cow.Close(); e != nil {
		err = e
	}
	return err
}
