package ext4

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Device is what a writable filesystem needs from its block device. A
// ubd.Device satisfies it; when the device also has a
// Discard(off, n int64) error method and Options.Discard is set, the host
// blocks of freed extents are discarded.
type Device interface {
	io.ReaderAt
	io.WriterAt
	// Flush makes completed writes durable.
	Flush() error
}

type discarder interface {
	Discard(off, n int64) error
}

// ErrReadOnly is returned (wrapped, matching syscall.EROFS) by every write
// method of a filesystem opened read-only, and by writes the driver refuses
// because the filesystem uses a feature it cannot write.
var ErrReadOnly = fmt.Errorf("read-only filesystem: %w", syscall.EROFS)

// Superblock state bits and the ext4 limits the write side enforces.
const (
	stateValid  = 0x1
	linkMax     = 65000
	maxNameLen  = 255
	bgBlkUninit = 0x2
	bgZeroed    = 0x4
)

// writer is the write side's state; every field is guarded by FS.mu held
// for writing, except dirty, which readers consult under FS.mu.RLock.
type writer struct {
	dev      Device
	discard  discarder
	logf     func(string, ...any)
	sbRaw    []byte // the primary superblock as last written
	gd       []gdesc
	gdDirty  map[uint32]bool
	bbDirty  map[uint32]bool // block bitmaps whose checksum must be redone
	ibDirty  map[uint32]bool
	dirty    map[uint64][]byte // metadata blocks not yet on the device
	maxDirty int
	holds    map[uint32]int  // inodes the VFS holds open
	orphans  map[uint32]bool // unlinked while held: freed by Forget/Close
	nextGen  uint32
	closed   bool
	notClean bool // the filesystem was not clean when mounted
	now      func() time.Time
}

// OpenDevice opens the filesystem on dev (size bytes) like Open and, with
// opts.Writable, mounts it read-write. A read-write mount refuses, with an
// error wrapping ErrReadOnly that names the feature, filesystems this
// driver cannot write: no extent feature (ext2/ext3), inline_data,
// bigalloc, and a dirty journal (an error wrapping ErrNeedsRecovery: run
// e2fsck -fy). The superblock is then marked not clean on the device
// until Close. A filesystem that was not cleanly unmounted is mounted
// anyway, as the kernel mounts one without a journal, with a warning
// through opts.Logf; like the kernel, Close then leaves it not clean.
func OpenDevice(dev Device, size int64, opts *Options) (*FS, error) {
	if opts == nil {
		opts = &Options{}
	}
	if !opts.Writable {
		return Open(dev, size, opts)
	}
	o := *opts
	o.NoReplay = true
	f, err := Open(dev, size, &o)
	if err != nil {
		return nil, err
	}
	if err := f.writableCheck(); err != nil {
		return nil, err
	}
	w := &writer{
		dev: dev, logf: opts.Logf,
		gdDirty: map[uint32]bool{}, bbDirty: map[uint32]bool{}, ibDirty: map[uint32]bool{},
		dirty: map[uint64][]byte{}, holds: map[uint32]int{}, orphans: map[uint32]bool{},
		now: (&coarseClock{}).now,
	}
	if w.logf == nil {
		w.logf = func(string, ...any) {}
	}
	if d, ok := dev.(discarder); ok && opts.Discard {
		w.discard = d
	}
	db := opts.DirtyBytes
	if db <= 0 {
		db = 16 << 20
	}
	w.maxDirty = max(db/int(f.bs), 64)
	w.sbRaw = make([]byte, superSize)
	if err := f.readRaw(w.sbRaw, superOffset); err != nil {
		return nil, err
	}
	if err := f.loadFullGroups(w); err != nil {
		return nil, err
	}
	w.nextGen = uint32(time.Now().UnixNano())
	f.w = w
	if f.sb.State&stateValid == 0 {
		w.notClean = true
		w.logf("ext4: mounting a filesystem that was not cleanly unmounted; running e2fsck is recommended")
	}
	// Mark the filesystem in use, as the kernel does at a read-write mount.
	now := w.now()
	f.sb.State &^= stateValid
	putLE16(w.sbRaw, 0x34, le16(w.sbRaw, 0x34)+1) // s_mnt_count
	putTime32(w.sbRaw, 0x2C, 0x275, now)          // s_mtime
	if err := f.writeSuper(); err != nil {
		return nil, err
	}
	if err := dev.Flush(); err != nil {
		return nil, fmt.Errorf("flush: %w", err)
	}
	return f, nil
}

// writableCheck refuses filesystems the write side cannot keep consistent.
func (f *FS) writableCheck() error {
	s := f.sb
	var missing []string
	if s.FeatureIncompat&incompatExtents == 0 {
		missing = append(missing, "writing needs the extent feature (ext2/ext3 block maps are read-only)")
	}
	if s.FeatureIncompat&incompatInlineData != 0 {
		missing = append(missing, "inline_data is not written")
	}
	if s.FeatureRoCompat&roCompatBigalloc != 0 {
		missing = append(missing, "bigalloc is not written")
	}
	if s.FeatureIncompat&incompatMMP != 0 {
		missing = append(missing, "mmp is not written")
	}
	// Unknown read-only-compatible features must not be written either.
	const knownRoCompat = 0x1 | roCompatLargeFile | 0x4 | roCompatHugeFile | roCompatGdtCsum |
		roCompatDirNlink | roCompatExtraIsize | 0x100 /* quota */ | roCompatMetadataCsum |
		0x2000 /* project */ | 0x10000 /* orphan_present */
	if bad := s.FeatureRoCompat &^ knownRoCompat; bad != 0 {
		missing = append(missing, fmt.Sprintf("read-only-compatible features %#x are not written", bad))
	}
	if s.FeatureRoCompat&0x100 != 0 {
		missing = append(missing, "quota is not written")
	}
	if s.FeatureRoCompat&0x10000 != 0 {
		missing = append(missing, "orphan_present is set (run e2fsck -fy)")
	}
	if len(missing) > 0 {
		return fmt.Errorf("cannot mount read-write: %s: %w", strings.Join(missing, "; "), ErrReadOnly)
	}
	return nil
}

// Writable reports whether the filesystem was mounted read-write (and is
// not closed).
func (f *FS) Writable() bool {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.w != nil && !f.w.closed
}

// WasNotClean reports whether a read-write mount found the filesystem not
// cleanly unmounted.
func (f *FS) WasNotClean() bool {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.w != nil && f.w.notClean
}

// wlock takes the write lock for one operation; the returned func ends it.
func (f *FS) wlock() (func(), error) {
	f.mu.Lock()
	if f.w == nil || f.w.closed {
		f.mu.Unlock()
		return nil, ErrReadOnly
	}
	return func() {
		f.wgen++
		var err error
		if len(f.w.dirty) > f.w.maxDirty {
			err = f.writeback()
		}
		f.mu.Unlock()
		if err != nil {
			f.w.logf("ext4: writeback: %v", err)
		}
	}, nil
}

func putLE16(b []byte, off int, v uint16) { binary.LittleEndian.PutUint16(b[off:], v) }
func putLE32(b []byte, off int, v uint32) { binary.LittleEndian.PutUint32(b[off:], v) }

// putTime32 stores a superblock time (low 32 bits at lo, high byte at hi).
func putTime32(b []byte, lo, hi int, t time.Time) {
	s := t.Unix()
	putLE32(b, lo, uint32(s))
	b[hi] = byte(s >> 32)
}

// mblock returns block blk for modification: the dirty copy, made dirty if
// it was not. Writers only (FS.mu held).
func (f *FS) mblock(blk uint64) ([]byte, error) {
	if b, ok := f.w.dirty[blk]; ok {
		return b, nil
	}
	b, err := f.block(blk)
	if err != nil {
		return nil, err
	}
	f.w.dirty[blk] = b // the cached slice itself: readers are locked out
	return b, nil
}

// newMeta returns a zeroed dirty buffer for block blk, replacing whatever
// was cached for it.
func (f *FS) newMeta(blk uint64) []byte {
	b := make([]byte, f.bs)
	f.cache.drop(blk)
	f.w.dirty[blk] = b
	return b
}

// forget drops blocks [blk, blk+n) from the cache and the dirty set
// (they were freed: their old contents must never be written back).
func (f *FS) forget(blk, n uint64) {
	for i := uint64(0); i < n; i++ {
		delete(f.w.dirty, blk+i)
		f.cache.drop(blk + i)
	}
}

func (c *blockCache) drop(blk uint64) {
	s := &c.shards[blk%cacheShards]
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.items[blk]; ok {
		s.lru.Remove(e)
		delete(s.items, blk)
	}
}

// writeData writes file data straight to the device.
func (f *FS) writeData(p []byte, off int64) error {
	if _, err := f.w.dev.WriteAt(p, off); err != nil {
		return fmt.Errorf("device write of %d bytes at %d: %w", len(p), off, err)
	}
	return nil
}

// writeback writes every dirty metadata block, the bitmaps' checksums,
// the group descriptors and the superblock (no flush).
func (f *FS) writeback() error {
	w := f.w
	if err := f.encodeGroups(); err != nil {
		return err
	}
	blks := make([]uint64, 0, len(w.dirty))
	for b := range w.dirty {
		blks = append(blks, b)
	}
	slices.Sort(blks)
	bs := int64(f.bs)
	for i := 0; i < len(blks); {
		// Coalesce consecutive blocks into one write.
		j := i + 1
		for j < len(blks) && blks[j] == blks[j-1]+1 && j-i < 256 {
			j++
		}
		var buf []byte
		if j-i == 1 {
			buf = w.dirty[blks[i]]
		} else {
			buf = make([]byte, 0, int64(j-i)*bs)
			for _, b := range blks[i:j] {
				buf = append(buf, w.dirty[b]...)
			}
		}
		if _, err := w.dev.WriteAt(buf, int64(blks[i])*bs); err != nil {
			return fmt.Errorf("writing metadata block %d: %w", blks[i], err)
		}
		for _, b := range blks[i:j] {
			f.cache.put(b, w.dirty[b])
			delete(w.dirty, b)
		}
		i = j
	}
	return f.writeSuper()
}

// writeSuper encodes the counters and state into the primary superblock
// and writes it.
func (f *FS) writeSuper() error {
	w, s, b := f.w, f.sb, f.w.sbRaw
	putLE32(b, 0xC, uint32(s.FreeBlocks))
	if s.FeatureIncompat&incompat64bit != 0 {
		putLE32(b, 0x158, uint32(s.FreeBlocks>>32))
	}
	putLE32(b, 0x10, s.FreeInodes)
	putLE16(b, 0x3A, s.State)
	putLE32(b, 0x64, s.FeatureRoCompat)
	putLE32(b, 0x60, s.FeatureIncompat)
	putTime32(b, 0x30, 0x274, w.now()) // s_wtime
	if f.csum {
		putLE32(b, 0x3FC, crc32c(^uint32(0), b[:0x3FC]))
	}
	if _, err := w.dev.WriteAt(b, superOffset); err != nil {
		return fmt.Errorf("writing the superblock: %w", err)
	}
	// Keep the cached block holding the superblock coherent.
	blk := uint64(superOffset) / uint64(f.bs)
	if c := f.cache.get(blk); c != nil {
		nc := append([]byte(nil), c...)
		copy(nc[superOffset%int(f.bs):], b)
		f.cache.drop(blk)
		f.cache.put(blk, nc)
	}
	return nil
}

// Sync writes every dirty metadata block and the superblock, then flushes
// the device. File data is written through at WriteAt already.
func (f *FS) Sync() error {
	unlock, err := f.wlock()
	if err != nil {
		return err
	}
	defer unlock()
	return f.sync()
}

func (f *FS) sync() error {
	if err := f.writeback(); err != nil {
		return err
	}
	if err := f.w.dev.Flush(); err != nil {
		return fmt.Errorf("flush: %w", err)
	}
	return nil
}

// Close frees the inodes still orphaned (unlinked while held), writes
// everything, marks the filesystem clean (unless it was not clean at
// mount: then it stays marked for e2fsck, as the kernel leaves it) and
// flushes. The FS is read-only
// afterwards. Close of a read-only FS does nothing.
func (f *FS) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.w == nil || f.w.closed {
		return nil
	}
	var errs []error
	for _, ino := range sortedKeys(f.w.orphans) {
		if err := f.evict(ino); err != nil {
			errs = append(errs, err)
		}
	}
	f.w.orphans = map[uint32]bool{}
	// As the kernel: the state found at mount comes back, so a
	// filesystem mounted not clean stays marked for e2fsck.
	if len(errs) == 0 && !f.w.notClean {
		f.sb.State |= stateValid
	}
	if err := f.sync(); err != nil {
		errs = append(errs, err)
	}
	f.w.closed = true
	f.wgen++
	return errors.Join(errs...)
}

func sortedKeys[V any](m map[uint32]V) []uint32 {
	out := make([]uint32, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// Abandon drops the filesystem without writing anything more, as a crash
// would: dirty metadata in memory is lost and the superblock stays marked
// not clean. Tests use it; the FS is unusable afterwards.
func (f *FS) Abandon() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.w != nil {
		f.w.closed = true
		f.w.dirty = map[uint64][]byte{}
	}
	f.cache = newBlockCache(1<<20, f.bs)
	f.wgen++
}

// coarseNow is the time as the kernel stamps inodes and superblocks: the
// coarse realtime clock, which is also what glibc's time() reads. With the
// precise clock, a superblock written just after a second boundary looks
// "in the future" to an e2fsck started a few milliseconds later.
func coarseNow() time.Time {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_REALTIME_COARSE, &ts); err != nil {
		return time.Now()
	}
	return time.Unix(ts.Unix())
}

// coarseClock serves coarseNow without a system call each time (the
// coarse clock is not in Go's vDSO path, and on some virtual machines a
// system call costs microseconds): the coarse clock moves only at the
// kernel's tick, so a reading less than a millisecond old by the
// monotonic clock, which the vDSO serves, is as good. A stale reading is
// older, never newer, than the coarse clock.
type coarseClock struct {
	last atomic.Pointer[clockReading]
}

type clockReading struct{ at, v time.Time }

func (c *coarseClock) now() time.Time {
	t := time.Now()
	if r := c.last.Load(); r != nil {
		if d := t.Sub(r.at); d >= 0 && d < time.Millisecond {
			return r.v
		}
	}
	v := coarseNow()
	c.last.Store(&clockReading{at: t, v: v})
	return v
}

// errf wraps an errno with context.
func errf(errno syscall.Errno, format string, a ...any) error {
	return fmt.Errorf("%s: %w", fmt.Sprintf(format, a...), errno)
}
