package cow

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// CreateError is a failure to build or write the header of a new COW file.
// Msg is the line uml_mkcow prints on stdout for it; Err is the cause,
// which uml_mkcow prints as "write_cow_header: <strerror>".
type CreateError struct {
	Msg string
	Err error
}

func (e *CreateError) Error() string { return e.Msg + ": " + e.Err.Error() }

// Unwrap returns the cause.
func (e *CreateError) Unwrap() error { return e.Err }

// BackingHeader builds the v3 header for a new COW file over backing: the
// path made absolute as the C code does it (the directory part resolved
// physically, the last component kept as given), the backing file's mtime
// and its size (a block device's size is its length). Errors are
// *CreateError with the C wording.
func BackingHeader(backing string) (*Header, error) {
	if len(backing) > MaxBackingName {
		return nil, &CreateError{
			Msg: fmt.Sprintf("Backing file name \"%s\" is too long - names are limited to %d characters", backing, MaxBackingName),
			Err: syscall.ENAMETOOLONG,
		}
	}
	abs, err := Absolutize(backing)
	if err != nil {
		return nil, err
	}
	var st unix.Stat_t
	if err := unix.Stat(abs, &st); err != nil {
		return nil, &CreateError{
			Msg: fmt.Sprintf("write_cow_header - backing file '%s' mtime request failed, err = 1", abs),
			Err: err,
		}
	}
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		return nil, &CreateError{
			Msg: fmt.Sprintf("write_cow_header - backing file '%s' is a directory", abs),
			Err: syscall.EISDIR,
		}
	}
	size, err := fileSize(abs, &st)
	if err != nil {
		return nil, &CreateError{
			Msg: fmt.Sprintf("write_cow_header - couldn't get size of backing file '%s', err = %d", abs, errnoOf(err)),
			Err: err,
		}
	}
	h, err := NewHeader(abs, st.Mtim.Sec, uint64(size))
	if err != nil {
		return nil, &CreateError{Msg: "write_cow_header - " + err.Error(), Err: syscall.EINVAL}
	}
	return h, nil
}

// fileSize returns a regular file's st_size, or a block device's length.
func fileSize(path string, st *unix.Stat_t) (int64, error) {
	if st.Mode&unix.S_IFMT != unix.S_IFBLK {
		return st.Size, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	return f.Seek(0, io.SeekEnd)
}

func errnoOf(err error) int {
	var en syscall.Errno
	if errors.As(err, &en) {
		return int(en)
	}
	return int(syscall.EIO)
}

// Absolutize makes path absolute the way the C tools do before storing it
// in a header: the part before the last '/' is resolved to its physical
// directory (symbolic links and ".." resolved by the kernel, as chdir and
// getcwd do), the last component is appended unchanged; a path without '/'
// is appended to the physical working directory. Unlike the C code it
// accepts files in "/" and working directories longer than 255 bytes.
func Absolutize(path string) (string, error) {
	var dir, base string
	if i := strings.LastIndexByte(path, '/'); i >= 0 {
		dir, base = path[:i], path[i:]
		if dir == "" {
			// "/name": the C code fails to chdir("") here.
			dir = "/"
		}
	} else {
		dir, base = ".", "/"+path
	}
	phys, err := physicalDir(dir)
	if err != nil {
		return "", &CreateError{
			Msg: fmt.Sprintf("absolutize : Can't cd to '%s' - errno = %d", path, errnoOf(err)),
			Err: err,
		}
	}
	abs := phys + base // "//name" when the directory is "/", as in C
	if dir == "/" && strings.HasPrefix(path, "/") && strings.Count(path, "/") == 1 {
		abs = path
	}
	if len(abs) > MaxBackingName {
		return "", &CreateError{
			Msg: fmt.Sprintf("absolutize : unable to fit '%s' into %d chars", path, MaxBackingName+1),
			Err: syscall.ENAMETOOLONG,
		}
	}
	return abs, nil
}

// physicalDir returns the kernel's name for directory dir, without
// changing the working directory: it opens dir with O_PATH and reads the
// /proc/self/fd link, falling back to getcwd plus EvalSymlinks.
func physicalDir(dir string) (string, error) {
	fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", err
	}
	defer unix.Close(fd)
	if p, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(fd)); err == nil && strings.HasPrefix(p, "/") {
		return p, nil
	}
	if !filepath.IsAbs(dir) {
		wd, err := unix.Getwd()
		if err != nil {
			return "", err
		}
		dir = filepath.Join(wd, dir)
	}
	return filepath.EvalSymlinks(dir)
}

// Create makes a new COW file at path over backing, as uml_mkcow and the
// kernel do: a v3 header (see BackingHeader), a zero bitmap, and a sparse
// file of DataOffset + Size bytes, mode 0644.
//
// Without force an existing path is an error (EEXIST, as *OpError "open COW
// file"). With force an existing file is truncated first, so no stale
// bitmap bits survive. On any error a file Create made is removed and an
// existing one is left as it was.
func Create(path, backing string, force bool) (*Header, error) {
	f, created, err := openNew(path, force)
	if err != nil {
		return nil, &OpError{Op: "open COW file", Path: path, Err: err}
	}
	fail := func(err error) (*Header, error) {
		f.Close()
		if created {
			os.Remove(path)
		}
		return nil, err
	}
	h, err := BackingHeader(backing)
	if err != nil {
		return fail(err)
	}
	if !created {
		if err := f.Truncate(0); err != nil {
			return fail(&CreateError{Msg: fmt.Sprintf("write_cow_header - write of header to new COW file '%s' failed, err = %d", path, errnoOf(err)), Err: err})
		}
	}
	if err := WriteHeader(f, h); err != nil {
		return fail(&CreateError{Msg: fmt.Sprintf("write_cow_header - write of header to new COW file '%s' failed, err = %d", path, errnoOf(err)), Err: err})
	}
	if err := f.Truncate(h.DataOffset + int64(h.Size)); err != nil {
		return fail(&CreateError{Msg: fmt.Sprintf("Write of bitmap to new COW file '%s' failed, err = %d", path, errnoOf(err)), Err: err})
	}
	if err := f.Close(); err != nil {
		if created {
			os.Remove(path)
		}
		return nil, &CreateError{Msg: fmt.Sprintf("Write of bitmap to new COW file '%s' failed, err = %d", path, errnoOf(err)), Err: err}
	}
	return h, nil
}

// openNew opens path read-write, creating it (0644) exclusively unless
// force; with force an existing file is opened without truncation. created
// reports whether the file is new.
func openNew(path string, force bool) (f *os.File, created bool, err error) {
	f, err = os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err == nil || !force || !errors.Is(err, os.ErrExist) {
		return f, err == nil, unwrapPath(err)
	}
	f, err = os.OpenFile(path, os.O_RDWR, 0)
	return f, false, unwrapPath(err)
}

// unwrapPath strips *os.PathError so OpError carries the bare errno.
func unwrapPath(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
