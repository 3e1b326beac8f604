package ext4

import (
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"syscall"
)

// Errors a VFS maps to errno values. They wrap the syscall errno so that
// errors.Is(err, syscall.ENOENT) and errors.Is(err, fs.ErrNotExist) both hold.
var (
	// ErrNotExist: no such directory entry.
	ErrNotExist = fmt.Errorf("%w", syscall.ENOENT)
	// ErrNotDir: the inode is not a directory.
	ErrNotDir = fmt.Errorf("%w", syscall.ENOTDIR)
	// ErrIsDir: the inode is a directory where a file was expected.
	ErrIsDir = fmt.Errorf("%w", syscall.EISDIR)
	// ErrInvalid: wrong kind of inode for the call (e.g. readlink on a file).
	ErrInvalid = fmt.Errorf("%w", syscall.EINVAL)
	// ErrNoData: no such extended attribute.
	ErrNoData = fmt.Errorf("%w", syscall.ENODATA)
)

var _ = fs.ErrNotExist // syscall.ENOENT.Is(fs.ErrNotExist) holds

// ChecksumError is a metadata checksum mismatch (metadata_csum, gdt_csum or
// jbd2 checksums). Block is the filesystem (or journal) block holding the
// structure.
type ChecksumError struct {
	What      string
	Block     uint64
	Want, Got uint32
}

func (e *ChecksumError) Error() string {
	return fmt.Sprintf("%s checksum mismatch at block %d (stored %#08x, computed %#08x)", e.What, e.Block, e.Want, e.Got)
}

// Is makes a checksum error match syscall.EBADMSG (the kernel's EFSBADCRC).
func (e *ChecksumError) Is(target error) bool { return target == syscall.EBADMSG }

// CorruptError is on-disk metadata that cannot be right. Block is where it
// was found (0 when not tied to one block).
type CorruptError struct {
	What  string
	Block uint64
}

func (e *CorruptError) Error() string {
	if e.Block == 0 {
		return "corrupt " + e.What
	}
	return fmt.Sprintf("corrupt %s at block %d", e.What, e.Block)
}

// Is makes a corruption error match syscall.EUCLEAN (the kernel's
// EFSCORRUPTED).
func (e *CorruptError) Is(target error) bool { return target == syscall.EUCLEAN }

func corrupt(block uint64, format string, a ...any) error {
	return &CorruptError{What: fmt.Sprintf(format, a...), Block: block}
}

// FeatureError refuses a filesystem that uses incompatible features this
// driver does not implement.
type FeatureError struct{ Names []string }

func (e *FeatureError) Error() string {
	return "unsupported incompatible feature(s): " + strings.Join(e.Names, ", ")
}

// ErrNeedsRecovery is returned (wrapped) when a dirty journal cannot be
// replayed.
var ErrNeedsRecovery = errors.New("filesystem needs journal recovery: run e2fsck -fy")
