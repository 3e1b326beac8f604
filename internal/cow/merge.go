package cow

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// MergeOptions configures NewMerge.
type MergeOptions struct {
	// Backing overrides the backing file named in the header (uml_moo
	// -b). It is checked against the header's size and mtime only.
	Backing string
	// Output is the new image to write. Empty means an in-place merge
	// into the backing file (uml_moo -d).
	Output string
	// Log receives the notes the C reader prints on stdout
	// ("read_cow_header - ..."), one per line. May be nil.
	Log io.Writer
	// NoLock skips the fcntl locks (a read lock on the COW file, and a
	// write lock on the backing file for an in-place merge) that refuse
	// to merge disks a running UML has open.
	NoLock bool
	// Warnf, if set, receives warnings (an in-place merge that cannot
	// create its marker file and so cannot be resumed).
	Warnf func(format string, a ...any)

	// abortAfter, for tests, fails Run after that many writes, leaving
	// the state a crash would leave.
	abortAfter int
}

// MergeStats summarises a finished merge.
type MergeStats struct {
	// Sectors is the number of whole sectors merged (Size/SectorSize).
	Sectors int64
	// FromCOW is how many of them came from the COW file.
	FromCOW int64
	// Written is the number of bytes written to the output.
	Written int64
	// Read is the number of bytes read (holes are skipped unread).
	Read int64
}

// Merge is a prepared uml_moo merge: the files are open and checked; Run
// does the copy.
type Merge struct {
	hdr     *Header
	opt     MergeOptions
	cowPath string
	backing string
	cow     *os.File
	back    *os.File
	out     *os.File
	bitmap  []byte
	resumed bool
	created bool // Output did not exist before
	marker  string
	ss      int64
	sectors int64
	writes  int
	stats   MergeStats
	buf     []byte
	zbuf    []byte
	zeros   []byte
	blk     int64 // output block size: the granularity of holes
	ext     map[*os.File]*extents
}

// ErrSameFile is wrapped in the *OpError returned when the output of a
// non-destructive merge is the COW or the backing file itself (the C tool
// would truncate it and lose the data).
var ErrSameFile = errors.New("output is the same file as an input")

// NewMerge opens and checks everything a merge needs, in the order and with
// the errors of the C uml_moo: "COW file open" (*OpError), the header
// (*HeaderError, its note also written to Log), "Stating backing file",
// the size then mtime check (*MismatchError), "Opening backing file",
// "Output file open", "Reading COW bitmap". The COW file is only read.
//
// An in-place merge that was interrupted left a marker file next to the
// backing file (see MarkerPath); re-running it passes the mtime check and
// finishes the merge with the same bytes (Resumed reports it).
func NewMerge(cowPath string, o MergeOptions) (*Merge, error) {
	m := &Merge{opt: o, cowPath: cowPath, ext: map[*os.File]*extents{}}
	if err := m.open(); err != nil {
		m.discard()
		return nil, err
	}
	return m, nil
}

func (m *Merge) logf(format string, a ...any) {
	if m.opt.Log != nil {
		fmt.Fprintf(m.opt.Log, format+"\n", a...)
	}
}

func (m *Merge) open() error {
	var err error
	if m.cow, err = os.Open(m.cowPath); err != nil {
		return &OpError{Op: "COW file open", Path: m.cowPath, Err: unwrapPath(err)}
	}
	h, err := ReadHeader(m.cow)
	if h != nil && h.Broken {
		m.logf("%s", MsgBrokenV3)
	}
	var he *HeaderError
	if errors.As(err, &he) {
		if he.Broken {
			m.logf("%s", MsgBrokenV3)
		}
		if he.Msg != "" {
			m.logf("%s", he.Msg)
		}
		return fmt.Errorf("%s: %w", m.cowPath, err)
	}
	if err != nil {
		return &OpError{Op: "Reading COW header", Path: m.cowPath, Err: err}
	}
	m.hdr = h
	m.ss = int64(h.SectorSize)
	m.sectors = h.Sectors()
	if !m.opt.NoLock {
		if err := lockFile(m.cow, m.cowPath, false); err != nil {
			return err
		}
	}
	m.backing = h.BackingFile
	if m.opt.Backing != "" {
		m.backing = m.opt.Backing
	}
	var st unix.Stat_t
	if err := unix.Stat(m.backing, &st); err != nil {
		return &OpError{Op: "Stating backing file", Path: m.backing, Err: err}
	}
	inPlace := m.opt.Output == ""
	if inPlace {
		m.marker = MarkerPath(m.backing)
	}
	if err := checkStat(h, m.backing, &st); err != nil {
		if !errors.Is(err, ErrMtimeMismatch) || !inPlace || !m.markerMatches() {
			return err
		}
		m.resumed = true
	}
	flag := os.O_RDONLY
	if inPlace {
		flag = os.O_RDWR
	}
	if m.back, err = os.OpenFile(m.backing, flag, 0); err != nil {
		return &OpError{Op: "Opening backing file", Path: m.backing, Err: unwrapPath(err)}
	}
	if inPlace {
		if !m.opt.NoLock {
			if err := lockFile(m.back, m.backing, true); err != nil {
				return err
			}
		}
		m.out = m.back
	} else {
		if err := m.checkOutput(); err != nil {
			return err
		}
		if _, err := os.Lstat(m.opt.Output); errors.Is(err, os.ErrNotExist) {
			m.created = true
		}
		if m.out, err = os.OpenFile(m.opt.Output, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644); err != nil {
			return &OpError{Op: "Output file open", Path: m.opt.Output, Err: unwrapPath(err)}
		}
	}
	m.bitmap = make([]byte, h.BitmapLen)
	if n, err := m.cow.ReadAt(m.bitmap, h.BitmapOffset); n != len(m.bitmap) {
		if err == nil || err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return &OpError{Op: "Reading COW bitmap", Path: m.cowPath, Err: err}
	}
	return nil
}

// checkOutput refuses an output that is the COW or the backing file.
func (m *Merge) checkOutput() error {
	var so unix.Stat_t
	if unix.Stat(m.opt.Output, &so) != nil {
		return nil
	}
	for i, f := range []*os.File{m.cow, m.back} {
		var s unix.Stat_t
		if unix.Fstat(int(f.Fd()), &s) == nil && s.Dev == so.Dev && s.Ino == so.Ino {
			return &OpError{Op: "Output file open", Path: m.opt.Output,
				Err: &sameFileError{m.opt.Output, [2]string{"COW", "backing"}[i]}}
		}
	}
	return nil
}

type sameFileError struct{ path, role string }

func (e *sameFileError) Error() string        { return e.path + " is the " + e.role + " file" }
func (e *sameFileError) Is(target error) bool { return target == ErrSameFile }

// Header returns the COW header.
func (m *Merge) Header() *Header { return m.hdr }

// BackingFile returns the backing file in use.
func (m *Merge) BackingFile() string { return m.backing }

// Resumed reports that this in-place merge finishes an interrupted one.
func (m *Merge) Resumed() bool { return m.resumed }

// Total returns the number of bytes of the merged image (whole sectors).
func (m *Merge) Total() int64 { return m.sectors * m.ss }

// MarkerPath returns the file an in-place merge of backing keeps while it
// runs: backing + ".uml_moo-merge".
func MarkerPath(backing string) string { return backing + ".uml_moo-merge" }

// markerText identifies this merge: the COW file (device and inode, never
// modified) and the header's mtime and size, which the backing file had
// before the merge started.
func (m *Merge) markerText() (string, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(m.cow.Fd()), &st); err != nil {
		return "", err
	}
	abs, _ := filepath.Abs(m.cowPath)
	return fmt.Sprintf("uml_moo in-place merge in progress; run uml_moo -d again to finish it\ncow %s\ncow-id %d:%d\nmtime %d\nsize %d\n",
		abs, st.Dev, st.Ino, m.hdr.Mtime, m.hdr.Size), nil
}

func (m *Merge) markerMatches() bool {
	b, err := os.ReadFile(m.marker)
	if err != nil {
		return false
	}
	want, err := m.markerText()
	if err != nil {
		return false
	}
	// The COW path may differ (moved, relative); identity is the rest.
	strip := func(s string) string {
		var keep []string
		sc := bufio.NewScanner(strings.NewReader(s))
		for sc.Scan() {
			if !strings.HasPrefix(sc.Text(), "cow ") {
				keep = append(keep, sc.Text())
			}
		}
		return strings.Join(keep, "\n")
	}
	return strip(string(b)) == strip(want)
}

// writeMarker durably records that the merge started.
func (m *Merge) writeMarker() error {
	text, err := m.markerText()
	if err != nil {
		return err
	}
	f, err := os.OpenFile(m.marker, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	_, err = f.WriteString(text)
	if e := f.Sync(); err == nil {
		err = e
	}
	if e := f.Close(); err == nil {
		err = e
	}
	if err == nil {
		err = syncDir(filepath.Dir(m.marker))
	}
	return err
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// Run merges. progress, if not nil, is called now and then with the number
// of bytes of the image processed so far.
//
// A non-destructive merge writes every sector that is not all zeros to the
// output and sets its length to Sectors*SectorSize, leaving holes for zero
// sectors like the C tool (the output is byte-identical to its output). An
// in-place merge writes only the sectors present in the COW file; a zero
// one only where the backing sector is not already zero. Holes of the
// inputs are found with SEEK_DATA/SEEK_HOLE and never read.
//
// An in-place merge first writes the marker file (synced), then the data,
// syncs the backing file and removes the marker. The merge only ever
// writes sector i of the COW file to sector i of the backing file, and
// never reads back what it wrote except through that rule, so running it
// again over a partly merged backing file produces the same bytes: the
// marker lets the re-run pass the mtime check the first writes broke.
func (m *Merge) Run(progress func(done int64)) (st MergeStats, err error) {
	defer func() {
		if err != nil {
			m.discard()
		}
	}()
	m.stats = MergeStats{Sectors: m.sectors}
	chunk := max(int64(1<<20)/m.ss*m.ss, m.ss)
	m.buf = make([]byte, chunk)
	m.zeros = make([]byte, chunk)
	m.blk = m.ss
	var ost unix.Stat_t
	if unix.Fstat(int(m.out.Fd()), &ost) == nil {
		// Holes exist in whole file system blocks (st_blksize, capped at
		// 4096 as some file systems report a larger preferred I/O size).
		if bs := min(int64(ost.Blksize), 4096); bs > m.ss && bs%m.ss == 0 {
			m.blk = bs
		}
	}
	inPlace := m.opt.Output == ""
	if inPlace && !m.resumed {
		if err := m.writeMarker(); err != nil {
			if !errors.Is(err, os.ErrPermission) && !errors.Is(err, unix.EROFS) {
				return m.stats, &OpError{Op: "Writing merge marker", Path: m.marker, Err: err}
			}
			// A directory we may not write to: merge like the C tool,
			// without the means to resume.
			os.Remove(m.marker)
			m.marker = ""
			if m.opt.Warnf != nil {
				m.opt.Warnf("cannot create %s (%v): if this merge is interrupted it cannot be resumed", MarkerPath(m.backing), unwrapPath(err))
			}
		}
	}
	var cst unix.Stat_t
	if err := unix.Fstat(int(m.cow.Fd()), &cst); err != nil {
		return m.stats, &OpError{Op: "Reading data", Path: m.cowPath, Err: err}
	}
	bm := m.bitmap
	for i := int64(0); i < m.sectors; {
		set := TestBit(bm, i)
		j := i + 1
		for j < m.sectors && TestBit(bm, j) == set {
			j++
		}
		var err error
		if set && m.hdr.DataOffset+j*m.ss > cst.Size {
			// The C tool fails the same way ("Reading data").
			return m.stats, &OpError{Op: "Reading data", Path: m.cowPath, Err: io.ErrUnexpectedEOF}
		}
		if set {
			m.stats.FromCOW += j - i
			err = m.copyRun(m.cow, m.hdr.DataOffset+i*m.ss, i*m.ss, (j-i)*m.ss, inPlace, progress)
		} else if !inPlace {
			err = m.copyRun(m.back, i*m.ss, i*m.ss, (j-i)*m.ss, false, progress)
		}
		if err != nil {
			return m.stats, err
		}
		i = j
		if progress != nil {
			progress(i * m.ss)
		}
	}
	if inPlace {
		if err := m.back.Sync(); err != nil {
			return m.stats, &OpError{Op: "Writing data", Path: m.backing, Err: err}
		}
		if m.marker != "" {
			if err := os.Remove(m.marker); err != nil && !errors.Is(err, os.ErrNotExist) {
				return m.stats, &OpError{Op: "Removing merge marker", Path: m.marker, Err: err}
			}
			syncDir(filepath.Dir(m.marker))
		}
	} else if err := m.out.Truncate(m.sectors * m.ss); err != nil {
		return m.stats, &OpError{Op: "Writing data", Path: m.opt.Output, Err: err}
	}
	return m.stats, nil
}

// copyRun copies n bytes from src at soff to the output at doff, skipping
// zero sectors. With cmpBacking (in-place merge) a zero sector is written
// as zeros where the backing file's sector is not zero.
func (m *Merge) copyRun(src *os.File, soff, doff, n int64, cmpBacking bool, progress func(int64)) error {
	ext := m.extents(src)
	end := soff + n
	pos := soff
	for pos < end {
		ds, de, err := ext.data(pos, end)
		if err != nil {
			return &OpError{Op: "Reading data", Path: src.Name(), Err: err}
		}
		// Align the data range to sectors of the run.
		ds = soff + (ds-soff)/m.ss*m.ss
		de = min(soff+(de-soff+m.ss-1)/m.ss*m.ss, end)
		if cmpBacking && ds > pos {
			if err := m.zeroRun(doff+pos-soff, ds-pos); err != nil {
				return err
			}
		}
		for p := ds; p < de; {
			l := min(int64(len(m.buf)), de-p)
			b := m.buf[:l]
			if err := m.readAt(src, b, p); err != nil {
				return err
			}
			if err := m.emit(b, doff+p-soff, cmpBacking); err != nil {
				return err
			}
			p += l
			if progress != nil {
				progress(doff + p - soff)
			}
		}
		pos = max(de, pos)
		if de <= ds {
			break
		}
	}
	return nil
}

// pieces splits b, the image bytes at off, at multiples of the output's
// block size and calls fn for each maximal stretch [start, end) of b whose
// blocks are all zero or all not.
func (m *Merge) pieces(b []byte, off int64, fn func(start, end int, zero bool) error) error {
	blk := m.blk
	run, runZero := 0, false
	for s := 0; s < len(b); {
		e := min(len(b), s+int(blk-(off+int64(s))%blk))
		zero := bytes.Equal(b[s:e], m.zeros[:e-s])
		if s > run && zero != runZero {
			if err := fn(run, s, runZero); err != nil {
				return err
			}
			run = s
		}
		runZero = zero
		s = e
	}
	if len(b) > run {
		return fn(run, len(b), runZero)
	}
	return nil
}

// emit writes b (image offset off) to the output, skipping blocks that
// are all zero. A block with any non-zero sector is allocated by the C
// tool too, so writing it whole (zero sectors included) keeps the output
// exactly as sparse with far fewer writes. With cmpBacking (in-place
// merge) zero blocks go through zeroRun.
func (m *Merge) emit(b []byte, off int64, cmpBacking bool) error {
	return m.pieces(b, off, func(s, e int, zero bool) error {
		switch {
		case !zero:
			return m.writeAt(b[s:e], off+int64(s))
		case cmpBacking:
			return m.zeroRun(off+int64(s), int64(e-s))
		}
		return nil
	})
}

// zeroRun makes n bytes of the backing file at off zero (in-place merge of
// zero COW sectors): it writes zeros only over blocks that are not zero
// already, and never reads holes.
func (m *Merge) zeroRun(off, n int64) error {
	ext := m.extents(m.back)
	if m.zbuf == nil {
		m.zbuf = make([]byte, len(m.buf))
	}
	end := off + n
	for pos := off; pos < end; {
		ds, de, err := ext.data(pos, end)
		if err != nil {
			return &OpError{Op: "Checking backing file for zeros", Path: m.backing, Err: err}
		}
		if de <= ds {
			return nil
		}
		// Whole sectors of the run, starting on a block boundary where
		// possible so blocks are judged whole.
		ds = max(off, ds/m.blk*m.blk)
		ds = off + (ds-off)/m.ss*m.ss
		de = min(off+(de-off+m.ss-1)/m.ss*m.ss, end)
		for p := ds; p < de; {
			l := min(int64(len(m.zbuf)), de-p)
			b := m.zbuf[:l]
			if err := m.readAt(m.back, b, p); err != nil {
				var oe *OpError
				if errors.As(err, &oe) {
					oe.Op = "Checking backing file for zeros"
				}
				return err
			}
			err := m.pieces(b, p, func(s, e int, zero bool) error {
				if zero {
					return nil
				}
				return m.writeAt(m.zeros[:e-s], p+int64(s))
			})
			if err != nil {
				return err
			}
			p += l
		}
		pos = de
	}
	return nil
}

func (m *Merge) readAt(f *os.File, b []byte, off int64) error {
	n, err := f.ReadAt(b, off)
	m.stats.Read += int64(n)
	if n == len(b) {
		return nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return &OpError{Op: "Reading data", Path: f.Name(), Err: err}
}

func (m *Merge) writeAt(b []byte, off int64) error {
	if m.opt.abortAfter > 0 && m.writes >= m.opt.abortAfter {
		return &OpError{Op: "Writing data", Path: m.out.Name(), Err: errAborted}
	}
	m.writes++
	if _, err := m.out.WriteAt(b, off); err != nil {
		return &OpError{Op: "Writing data", Path: m.out.Name(), Err: unwrapPath(err)}
	}
	m.stats.Written += int64(len(b))
	return nil
}

var errAborted = errors.New("aborted by test")

// discard closes the files and removes an output file the merge created
// (a failed merge leaves no partial new image behind).
func (m *Merge) discard() {
	created := m.created && m.out != nil && m.out != m.back
	m.Close()
	if created {
		os.Remove(m.opt.Output)
	}
}

// Close closes the files; calling it again does nothing. It does not
// remove a partial output.
func (m *Merge) Close() error {
	var err error
	for _, f := range []*os.File{m.cow, m.back, m.out} {
		if f == nil || (f == m.out && m.out == m.back) {
			continue
		}
		if e := f.Close(); e != nil && err == nil {
			err = &OpError{Op: "Writing data", Path: f.Name(), Err: unwrapPath(e)}
		}
	}
	m.cow, m.back, m.out = nil, nil, nil
	return err
}

func (m *Merge) extents(f *os.File) *extents {
	e := m.ext[f]
	if e == nil {
		e = &extents{fd: int(f.Fd()), ds: -1}
		m.ext[f] = e
	}
	return e
}

// extents finds data ranges of a file with SEEK_DATA/SEEK_HOLE, caching
// the last answer so a walk with many short runs costs few lseeks.
type extents struct {
	fd     int
	q      int64 // position of the last query
	ds, de int64 // its answer: no data in [q, ds), data in [ds, de); ds = -1: none yet
	noSeek bool  // the file system does not support SEEK_DATA: all data
}

// data returns the first data range [ds, de) intersecting [pos, end),
// clipped to it; ds == de == end when there is none.
func (e *extents) data(pos, end int64) (int64, int64, error) {
	if e.noSeek {
		return pos, end, nil
	}
	if e.ds < 0 || pos < e.q || pos >= e.de {
		if err := e.seek(pos); err != nil {
			return 0, 0, err
		}
		if e.noSeek {
			return pos, end, nil
		}
	}
	ds, de := max(e.ds, pos), min(e.de, end)
	if ds >= end {
		return end, end, nil
	}
	return ds, de, nil
}

func (e *extents) seek(pos int64) error {
	e.q = pos
	ds, err := unix.Seek(e.fd, pos, unix.SEEK_DATA)
	if err != nil {
		if errors.Is(err, unix.ENXIO) { // no data at or after pos
			e.ds, e.de = math.MaxInt64, math.MaxInt64
			return nil
		}
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EOPNOTSUPP) {
			e.noSeek = true
			return nil
		}
		return err
	}
	de, err := unix.Seek(e.fd, ds, unix.SEEK_HOLE)
	if err != nil {
		return err
	}
	e.ds, e.de = ds, de
	return nil
}

// ParseMarker returns the "key value" lines of a marker file (for tests and
// uml_moo --info).
func ParseMarker(text string) map[string]string {
	kv := map[string]string{}
	for _, l := range strings.Split(text, "\n") {
		if k, v, ok := strings.Cut(l, " "); ok && k != "" && !strings.HasPrefix(k, "uml_moo") {
			kv[k] = v
		}
	}
	return kv
}
