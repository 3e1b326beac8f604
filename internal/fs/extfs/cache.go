package extfs

import (
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"strconv"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/umltools/umltools/internal/ext4"
	"github.com/umltools/umltools/internal/fs/memfd"
	"github.com/umltools/umltools/internal/vfs"
)

// The page cache of one inode is a memfd the guest's fds re-open. What
// the image holds is remembered as one crc32c per chunk (zero-padded to
// chunk bytes), so a write-back compares the memfd with it and writes
// only the chunks that changed: no write tracking is needed, and writes
// through shared mappings are found like write(2)s.
const chunk = 64 << 10

var (
	castagnoli = crc32.MakeTable(crc32.Castagnoli)
	zeroChunk  = make([]byte, chunk)
	zeroSum    = crc32.Checksum(zeroChunk, castagnoli)
)

// page is one inode's page cache.
type page struct {
	ino  uint32
	name string // the memfd's name, "ext4:<ino>"

	mu      sync.Mutex // serialises write-back and size changes
	f       *os.File   // the engine's descriptor of the memfd
	hostIno uint64     // with mtime, set by identify
	// identified: hostIno and mtime are known.
	identified bool
	wd         int32  // inotify watch, -1 for none
	wmask      uint32 // what the watch reports (f.mu)

	// What the image holds: its size, the memfd mtime it was last
	// written back at, and the chunk sums.
	size  int64
	mtime unix.Timespec
	sums  []uint32

	// written is set when the memfd is opened for writing, and cleared
	// by a write-back that saw the last writer gone; while it is set
	// every write-back compares the content (mmap writes leave the
	// mtime alone).
	written bool
	// writable: the memfd was ever opened for writing (or truncated).
	// Until then it cannot differ from the image, and stat and
	// write-back need not look at it.
	writable bool
	// orphan: unlinked while the guest may hold it; the driver keeps
	// the inode (Hold) until nobody does.
	orphan bool
	// used is the FS clock at the page's last open (eviction's LRU).
	used int64
	// evicted: dropped by the evictor (a new page may be made).
	evicted bool
}

// label names the page's memfd in messages ("memfd:ext4:<ino>"; a
// spare's own name has no inode number).
func (p *page) label() string { return "memfd:" + p.name }

// sumOf is the crc32c of b zero-padded to a chunk.
func sumOf(b []byte) uint32 {
	s := crc32.Checksum(b, castagnoli)
	if len(b) < chunk {
		s = crc32.Update(s, castagnoli, zeroChunk[:chunk-len(b)])
	}
	return s
}

func isZero(b []byte) bool {
	for len(b) >= 8 {
		if *(*uint64)(unsafe.Pointer(&b[0])) != 0 {
			return false
		}
		b = b[8:]
	}
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// open returns a re-open of ino's memfd for a guest open with flags,
// filling it on first use.
func (f *FS) open(ino uint32, flags int) (*os.File, error) {
	for {
		file, err := f.openPage(ino, flags)
		if err != errEvicted {
			return file, err
		}
	}
}

// errEvicted: the page went between its lookup and its open (an open
// made room meanwhile); the caller tries again.
var errEvicted = errors.New("page evicted")

func (f *FS) openPage(ino uint32, flags int) (*os.File, error) {
	p, err := f.page(ino, flags&syscall.O_TRUNC != 0 && flags&syscall.O_ACCMODE != syscall.O_RDONLY)
	if err != nil {
		return nil, err
	}
	if flags&syscall.O_ACCMODE != syscall.O_RDONLY {
		f.watch(p, watchWriters) // the last writer's close writes back
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.evicted {
		return nil, errEvicted
	}
	if p.f == nil {
		return nil, syscall.ENOENT // freed meanwhile
	}
	f.touch(p)
	if flags&syscall.O_ACCMODE != syscall.O_RDONLY {
		if err := p.markWritten(); err != nil {
			return nil, err
		}
		if flags&syscall.O_TRUNC != 0 {
			if err := p.f.Truncate(0); err != nil {
				return nil, fmt.Errorf("%s: %w", p.label(), err)
			}
		}
	}
	return memfd.Reopen(p.f, flags)
}

// page returns ino's page cache, creating and filling it when needed.
// With trunc (a first open with O_TRUNC) the image file is truncated
// instead of read.
func (f *FS) page(ino uint32, trunc bool) (*page, error) {
	if p := f.cached(ino); p != nil {
		return p, nil
	}
	drv := f.fs()
	if trunc {
		if err := drv.Truncate(ino, 0); err != nil {
			return nil, err
		}
		f.changed()
	}
	np, _, err := f.newPage(ino, true)
	if err != nil {
		return nil, err
	}
	if p := f.insert(np, nil); p != np {
		return p, nil
	}
	f.evict()
	return np, nil
}

// newPage makes ino's page, filled, not yet in the cache; in is the
// inode it was filled from. An empty file's page takes a spare memfd
// when opening asks for one (spare.go): a file just created is opened
// next, mostly for writing.
func (f *FS) newPage(ino uint32, opening bool) (*page, *ext4.Inode, error) {
	h, err := f.fs().Open(ino)
	if err != nil {
		return nil, nil, err
	}
	in := h.Inode()
	name := "ext4:" + strconv.FormatUint(uint64(ino), 10)
	if in.Size == 0 && opening {
		if s, ok := f.takeSpare(); ok {
			np := &page{ino: ino, name: name, f: s.f, wd: s.wd, wmask: watchWriters, used: f.clock.Add(1),
				hostIno: s.ino, mtime: s.mtime, identified: true}
			return np, in, nil
		}
	}
	m, err := memfd.New(name)
	if err != nil {
		return nil, nil, err
	}
	np := &page{ino: ino, name: name, f: m, wd: -1, size: int64(in.Size), used: f.clock.Add(1)}
	if err := f.fill(np, h); err != nil {
		m.Close()
		return nil, nil, err
	}
	return np, in, nil
}

// insert puts np in the cache and returns it, unless the cache has a
// page for its inode already (returned instead) or valid (called under
// f.mu) says np is stale (nil returned); np is closed when not used.
func (f *FS) insert(np *page, valid func() bool) *page {
	f.mu.Lock()
	defer f.mu.Unlock()
	p := f.cache[np.ino]
	if p == nil && valid != nil && !valid() {
		np.f.Close()
		return nil
	}
	if p != nil {
		np.f.Close() // a spare's watch goes with its inode
		return p
	}
	if np.wd >= 0 {
		f.wd[np.wd] = np // a spare's watch
	}
	f.cache[np.ino] = np
	f.bytes.Add(np.size)
	return np
}

// hostFiler is a device whose bytes are a host file's (a raw ubd).
type hostFiler interface{ HostFile() *os.File }

// fill copies the image file into the memfd, leaving holes as holes. On
// a raw device the extents go from the image file to the memfd inside
// the host kernel (sendfile: one copy, no buffer); otherwise through the
// driver, zero chunks left out. The chunk sums are computed when the
// page is first written (ensureSums): most pages are only read.
func (f *FS) fill(p *page, h *ext4.File) error {
	if p.size == 0 {
		return nil // a new or empty file: nothing to read, nothing to zero
	}
	if hf, ok := f.dev.(hostFiler); ok {
		ext, direct, err := h.Extents()
		if err != nil {
			return err
		}
		if direct {
			return p.fillDirect(hf.HostFile(), ext)
		}
	}
	return p.fillRead(h)
}

// fillDirect copies extents of src into the memfd with sendfile.
func (p *page) fillDirect(src *os.File, ext []ext4.Extent) error {
	fd, in := int(p.f.Fd()), int(src.Fd())
	end := int64(0)
	for _, e := range ext {
		if _, err := unix.Seek(fd, e.Off, io.SeekStart); err != nil {
			return fmt.Errorf("%s: %w", p.label(), err)
		}
		off, left := e.Dev, e.Len
		for left > 0 {
			n, err := unix.Sendfile(fd, in, &off, int(min(left, 1<<30)))
			if err == unix.EINTR || err == unix.EAGAIN {
				continue
			}
			if err == nil && n == 0 {
				err = io.ErrUnexpectedEOF
			}
			if err != nil {
				return fmt.Errorf("%s: copying %d bytes from %s at %d: %w", p.label(), left, src.Name(), off, err)
			}
			left -= int64(n)
		}
		end = e.Off + e.Len
	}
	if end < p.size {
		if err := p.f.Truncate(p.size); err != nil {
			return fmt.Errorf("%s: %w", p.label(), err)
		}
	}
	return nil
}

// fillRead copies the file through the driver, leaving zero chunks as
// holes. Runs of data chunks go in one write; the size is set apart only
// when the file ends in zeros.
func (p *page) fillRead(r io.ReaderAt) error {
	bp := fillBufs.Get().(*[]byte)
	defer fillBufs.Put(bp)
	buf := *bp
	end := int64(0) // the memfd's size so far
	for off := int64(0); off < p.size; off += int64(len(buf)) {
		b := buf
		if p.size-off < int64(len(b)) {
			b = b[:p.size-off]
		}
		got, err := r.ReadAt(b, off)
		if err != nil && !(errors.Is(err, io.EOF) && got == len(b)) {
			return fmt.Errorf("%s: reading at %d: %w", p.label(), off, err)
		}
		run := -1 // start of the data run being gathered
		flush := func(e int) error {
			if run < 0 {
				return nil
			}
			if _, err := p.f.WriteAt(b[run:e], off+int64(run)); err != nil {
				return fmt.Errorf("%s: %w", p.label(), err)
			}
			end, run = off+int64(e), -1
			return nil
		}
		for c := 0; c < len(b); c += chunk {
			if isZero(b[c:min(c+chunk, len(b))]) {
				if err := flush(c); err != nil {
					return err
				}
			} else if run < 0 {
				run = c
			}
		}
		if err := flush(len(b)); err != nil {
			return err
		}
	}
	if end < p.size {
		if err := p.f.Truncate(p.size); err != nil {
			return fmt.Errorf("%s: %w", p.label(), err)
		}
	}
	return nil
}

// hole reports whether memfd fd holds no data in [off, off+n).
func hole(fd int, off, n int64) bool {
	next, err := unix.Seek(fd, off, unix.SEEK_DATA)
	return errors.Is(err, syscall.ENXIO) || (err == nil && next >= off+n)
}

// fillBufs are fillRead's buffers (16 chunks), reused.
var fillBufs = sync.Pool{New: func() any { b := make([]byte, 16*chunk); return &b }}

// ensureSums computes the chunk sums from the memfd, which until the
// page's first write holds what the image holds (p.mu held).
func (p *page) ensureSums() error {
	if p.sums != nil {
		return nil
	}
	sums := make([]uint32, (p.size+chunk-1)/chunk)
	bp := fillBufs.Get().(*[]byte)
	defer fillBufs.Put(bp)
	buf := (*bp)[:chunk]
	fd := int(p.f.Fd())
	for i := range sums {
		off := int64(i) * chunk
		n := min(int64(chunk), p.size-off)
		if hole(fd, off, n) {
			sums[i] = zeroSum // zeros
			continue
		}
		if _, err := unix.Pread(fd, buf[:n], off); err != nil {
			return fmt.Errorf("%s: read at %d: %w", p.label(), off, err)
		}
		sums[i] = sumOf(buf[:n])
	}
	p.sums = sums
	return nil
}

// markWritten records an open for writing or a truncate (p.mu held):
// from now on stat and write-back look at the memfd.
func (p *page) markWritten() error {
	if err := p.identify(); err != nil {
		return err
	}
	if err := p.ensureSums(); err != nil {
		return err
	}
	p.written, p.writable = true, true
	return nil
}

// identify records the memfd's host inode and mtime, on first need (an
// open for writing, an unlink): pages only ever read do without (p.mu
// held).
func (p *page) identify() error {
	if p.identified || p.f == nil {
		return nil
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(p.f.Fd()), &st); err != nil {
		return fmt.Errorf("%s: %w", p.label(), err)
	}
	p.hostIno, p.mtime, p.identified = st.Ino, st.Mtim, true
	return nil
}

// cached returns ino's page, or nil.
func (f *FS) cached(ino uint32) *page {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.cache[ino]
}

// overlay corrects a regular file's attributes with its page cache: the
// memfd's size is the file's, and a memfd changed since its last
// write-back has the newer times.
func (f *FS) overlay(ino uint32, a *vfs.Attr) {
	p := f.cached(ino)
	if p == nil {
		return
	}
	var st unix.Stat_t
	p.mu.Lock()
	if !p.writable {
		p.mu.Unlock()
		return
	}
	if p.f == nil || unix.Fstat(int(p.f.Fd()), &st) != nil {
		p.mu.Unlock()
		return
	}
	size, mt := p.size, p.mtime
	p.mu.Unlock()
	a.Size = st.Size
	if st.Size != size || st.Mtim != mt {
		a.Mtime = time.Unix(st.Mtim.Sec, st.Mtim.Nsec)
		if c := time.Unix(st.Ctim.Sec, st.Ctim.Nsec); c.After(a.Ctime) {
			a.Ctime = c
		}
		if b := st.Blocks; b > a.Blocks {
			a.Blocks = b
		}
	}
}

// writeback writes ino's page cache to the image if it changed. all
// forces the content comparison even when no writer was seen.
func (f *FS) writeback(p *page, all bool) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.orphan || p.f == nil || !p.writable {
		return nil
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(p.f.Fd()), &st); err != nil {
		return fmt.Errorf("%s: %w", p.label(), err)
	}
	if !all && !p.written && st.Size == p.size && st.Mtim == p.mtime {
		return nil
	}
	drv := f.fs()
	if !drv.Writable() {
		return nil
	}
	f.changed()
	force := int64(-1) // a chunk to write whatever its sum says
	if st.Size != p.size {
		if err := drv.Truncate(p.ino, uint64(st.Size)); err != nil {
			return fmt.Errorf("ext4 inode %d: truncate to %d: %w", p.ino, st.Size, err)
		}
		n := int((st.Size + chunk - 1) / chunk)
		if n < len(p.sums) {
			p.sums = p.sums[:n]
		}
		// Growing adds zeros, which the zero-padded sums already count.
		for len(p.sums) < n {
			p.sums = append(p.sums, zeroSum)
		}
		// Shrinking cut the last chunk: its sum no longer says what the
		// image holds.
		if st.Size < p.size && st.Size%chunk != 0 {
			force = st.Size / chunk
		}
		f.bytes.Add(st.Size - p.size)
		p.size = st.Size
	}
	bp := f.bufs.Get().(*[]byte)
	defer f.bufs.Put(bp)
	buf := *bp
	fd := int(p.f.Fd())
	for off := int64(0); off < st.Size; off += chunk {
		i := off / chunk
		n := min(int64(chunk), st.Size-off)
		if p.sums[i] == zeroSum && i != force && hole(fd, off, n) {
			continue // a hole of the memfd where the image holds zeros
		}
		b := buf[:n]
		if _, err := unix.Pread(fd, b, off); err != nil {
			return fmt.Errorf("%s: read at %d: %w", p.label(), off, err)
		}
		s := sumOf(b)
		if s == p.sums[i] && i != force {
			continue
		}
		if err := writeRuns(drv, p.ino, b, off); err != nil {
			p.written = true // try again later
			return err
		}
		p.sums[i] = s
	}
	if st.Mtim != p.mtime {
		// The memfd's ctime is its last write's or the last Utimes'.
		mt, ct := time.Unix(st.Mtim.Sec, st.Mtim.Nsec), time.Unix(st.Ctim.Sec, st.Ctim.Nsec)
		if err := drv.SetAttr(p.ino, &ext4.Attr{Mask: ext4.AttrMtime | ext4.AttrCtime, Mtime: mt, Ctime: ct}); err != nil {
			return fmt.Errorf("ext4 inode %d: times: %w", p.ino, err)
		}
		p.mtime = st.Mtim
	}
	p.written = false
	return nil
}

// setMtime sets the memfd's mtime when the memfd was ever written (the
// next write-back stores it in the inode); a page never written to is the
// image's content, whose inode gets the time directly. So does a page
// with nothing left to write back: it stays clean (the caller sets the
// inode's time), and may be evicted.
func (p *page) setMtime(t time.Time) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.f == nil || !p.writable {
		return nil
	}
	fd := int(p.f.Fd())
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fmt.Errorf("%s: %w", p.label(), err)
	}
	clean := !p.written && st.Size == p.size && st.Mtim == p.mtime
	ts := []unix.Timespec{{Nsec: unix.UTIME_OMIT}, {Sec: t.Unix(), Nsec: int64(t.Nanosecond())}}
	// utimensat(fd, NULL, …): the memfd itself, no walk of /proc/self/fd.
	if _, _, e := unix.Syscall6(unix.SYS_UTIMENSAT, uintptr(fd), 0, uintptr(unsafe.Pointer(&ts[0])), 0, 0, 0); e != 0 {
		return fmt.Errorf("%s: setting mtime: %w", p.label(), e)
	}
	if clean && unix.Fstat(fd, &st) == nil {
		p.mtime = st.Mtim
	}
	return nil
}

// writeRuns writes chunk b (at off) of ino to the image by 4 KiB runs:
// runs holding data are written, all-zero runs are punched out, so that
// sparse files stay sparse.
func writeRuns(drv *ext4.FS, ino uint32, b []byte, off int64) error {
	const run = 4096
	for s := 0; s < len(b); {
		zero := isZero(b[s:min(s+run, len(b))])
		e := s
		for e < len(b) && isZero(b[e:min(e+run, len(b))]) == zero {
			e = min(e+run, len(b))
		}
		n := int64(e - s)
		if zero {
			if err := drv.Fallocate(ino, ext4.FallocPunchHole|ext4.FallocKeepSize, off+int64(s), n); err != nil {
				return fmt.Errorf("ext4 inode %d: punch %d+%d: %w", ino, off+int64(s), n, err)
			}
		} else {
			w, err := drv.WriteAt(ino, b[s:e], off+int64(s))
			if err == nil && int64(w) < n {
				err = syscall.ENOSPC
			}
			if err != nil {
				return fmt.Errorf("ext4 inode %d: write at %d: %w", ino, off+int64(s), err)
			}
		}
		s = e
	}
	return nil
}

// pages returns the cached pages.
func (f *FS) pages() []*page {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]*page, 0, len(f.cache))
	for _, p := range f.cache {
		out = append(out, p)
	}
	return out
}

// SyncFile writes ino's data (and, unless dataOnly, its metadata with the
// rest of the driver's dirty state) to the image and flushes the device:
// fsync and fdatasync.
func (f *FS) SyncFile(ino uint32, dataOnly bool) error {
	if p := f.cached(ino); p != nil {
		if err := f.writeback(p, false); err != nil {
			return err
		}
	}
	return f.syncDriver()
}

// Sync writes every changed page and all metadata to the image and
// flushes the device: sync and syncfs.
func (f *FS) Sync() error {
	var first error
	for _, p := range f.pages() {
		if err := f.writeback(p, false); err != nil && first == nil {
			first = err
		}
	}
	if err := f.syncDriver(); err != nil && first == nil {
		first = err
	}
	return first
}

func (f *FS) syncDriver() error {
	drv := f.fs()
	if !drv.Writable() || !f.dirty.Swap(false) {
		return nil
	}
	if err := drv.Sync(); err != nil {
		f.changed()
		return err
	}
	return nil
}

// flusher is the periodic write-back.
func (f *FS) flusher(every time.Duration) {
	defer f.done.Done()
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-f.stop:
			return
		case <-t.C:
		}
		if err := f.Sync(); err != nil {
			f.opts.Logf("extfs: write-back: %v", err)
		}
		f.reapOrphans()
	}
}

// Remount switches between read-write and read-only. Going read-only
// writes everything back and marks the filesystem clean.
func (f *FS) Remount(readOnly bool) error {
	if f.dev == nil {
		if readOnly {
			return nil
		}
		return syscall.EROFS
	}
	drv := f.fs()
	if readOnly == !drv.Writable() {
		return nil
	}
	if readOnly {
		if err := f.Sync(); err != nil {
			return err
		}
		defer f.gen.Add(1) // orphans freed
		return drv.Close()
	}
	nd, err := ext4.OpenDevice(f.dev, f.size, &ext4.Options{Writable: true, Discard: f.opts.Discard, Logf: f.opts.Logf})
	if err != nil {
		return err
	}
	f.drv.Store(nd)
	f.gen.Add(1)
	return nil
}

// Close writes everything back, frees the orphans, marks the filesystem
// clean and releases the page cache: a clean unmount.
func (f *FS) Close() error {
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return nil
	}
	f.closed = true
	f.mu.Unlock()
	if f.stop != nil {
		close(f.stop)
	}
	f.stopWatch()
	f.done.Wait()
	var first error
	if f.fs().Writable() {
		first = f.Sync()
		if err := f.fs().Close(); err != nil && first == nil {
			first = err
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for ino, p := range f.cache {
		p.mu.Lock()
		p.f.Close()
		p.f = nil
		p.mu.Unlock()
		delete(f.cache, ino)
	}
	return first
}

// Abandon drops the filesystem without writing anything (tests: a crash).
func (f *FS) Abandon() {
	f.mu.Lock()
	f.closed = true
	f.mu.Unlock()
	if f.stop != nil {
		close(f.stop)
	}
	f.stopWatch()
	f.done.Wait()
	f.fs().Abandon()
}
