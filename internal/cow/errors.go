package cow

import (
	"errors"
	"fmt"

	"github.com/umltools/umltools/internal/errtext"
)

// Sentinels matched by *MismatchError (errors.Is).
var (
	// ErrSizeMismatch: the backing file's size differs from the header's.
	ErrSizeMismatch = errors.New("COW header size does not match the backing file")
	// ErrMtimeMismatch: the backing file's mtime differs from the header's.
	ErrMtimeMismatch = errors.New("COW header mtime does not match the backing file")
)

// MismatchError reports a backing file that does not match its COW header.
// Like the kernel, size is checked before mtime.
type MismatchError struct {
	// What is "Size" or "mtime", as the C messages spell it.
	What string
	// Header and Actual are the header's value and the backing file's.
	Header, Actual int64
	// Backing is the backing file's path.
	Backing string
}

// Error returns uml_moo's wording:
// `Size mismatch (H vs A) of COW header vs backing file "path"`.
func (e *MismatchError) Error() string {
	return fmt.Sprintf("%s \"%s\"", e.KernelMessage(), e.Backing)
}

// KernelMessage returns the kernel's wording, without the path:
// `mtime mismatch (H vs A) of COW header vs backing file`.
func (e *MismatchError) KernelMessage() string {
	return fmt.Sprintf("%s mismatch (%d vs %d) of COW header vs backing file", e.What, e.Header, e.Actual)
}

// Is matches ErrSizeMismatch or ErrMtimeMismatch.
func (e *MismatchError) Is(target error) bool {
	return (target == ErrSizeMismatch && e.What == "Size") || (target == ErrMtimeMismatch && e.What == "mtime")
}

// OpError is an I/O failure of one step of a COW operation. Op is the C
// tools' name for the step ("COW file open", "Reading data", ...), which
// they print with perror.
type OpError struct {
	Op   string
	Path string
	Err  error
}

func (e *OpError) Error() string {
	if e.Path == "" {
		return e.Op + ": " + e.Err.Error()
	}
	return e.Op + " " + e.Path + ": " + e.Err.Error()
}

// Unwrap returns the cause.
func (e *OpError) Unwrap() error { return e.Err }

// Perror returns the line the C tools print for err: for an *OpError
// "Op: Strerror", otherwise err's text.
func Perror(err error) string {
	var oe *OpError
	if errors.As(err, &oe) {
		return oe.Op + ": " + Strerror(oe.Err)
	}
	return err.Error()
}

// Strerror renders err as glibc's strerror does; see errtext.Strerror.
func Strerror(err error) string { return errtext.Strerror(err) }
