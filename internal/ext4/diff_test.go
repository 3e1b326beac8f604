package ext4

import (
	"errors"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/umltools/umltools/internal/testutil"
)

// Differential testing of the write side: the same operations go to an
// image through the driver and to a host directory through syscalls; then
// the image (reopened read-only) must show the host's tree and e2fsck -fn
// must be clean.

// wop is one operation; its fields index into small fixed tables so that
// random sequences hit existing names often.
type wop struct {
	K    byte   // kind (opCreate...)
	P, Q byte   // path indices
	V    byte   // mode, seed, xattr name...
	Off  uint32 // byte offset or size
	Len  uint32
}

const (
	opCreate = iota
	opWrite
	opTruncate
	opRename
	opUnlink
	opLink
	opMkdir
	opRmdir
	opSymlink
	opChmod
	opSetxattr
	opRmxattr
	opFallocate
	opPunch
	opMasscreate
	opMassunlink
	opRenamex // rename with RENAME_NOREPLACE or RENAME_EXCHANGE
	opCount
)

var opNames = [...]string{"create", "write", "truncate", "rename", "unlink", "link", "mkdir", "rmdir",
	"symlink", "chmod", "setxattr", "rmxattr", "fallocate", "punch", "masscreate", "massunlink", "renamex"}

// String prints the op as a Go literal for the regression table.
func (o wop) String() string {
	n := opNames[o.K%opCount]
	return fmt.Sprintf("{op%s%s, %d, %d, %d, %d, %d}", strings.ToUpper(n[:1]), n[1:], o.P, o.Q, o.V, o.Off, o.Len)
}

// diffPaths are the names operations use (up to three levels).
var diffPaths = func() []string {
	names := []string{"a", "b", "c"}
	out := []string{}
	for _, x := range names {
		out = append(out, "/"+x)
	}
	for _, x := range names {
		for _, y := range names {
			out = append(out, "/"+x+"/"+y)
		}
	}
	for _, y := range names {
		out = append(out, "/a/"+y+"/z")
	}
	return out
}()

func (o wop) p() string { return diffPaths[int(o.P)%len(diffPaths)] }
func (o wop) q() string { return diffPaths[int(o.Q)%len(diffPaths)] }

var xattrNames = []string{"user.a", "user.bb", "user.longer-name-here", "trusted.t"}

func xattrValue(v byte) []byte {
	n := []int{0, 3, 40, 300, 900}[int(v)%5]
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(int(v) + i)
	}
	return b
}

func opData(o wop) []byte {
	n := int(o.Len % 70000)
	if o.V%16 == 0 {
		n = int(o.Len%(3<<20)) + 1
	}
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(int(o.V)*31 + i*7 + i>>10)
	}
	return b
}

func opOff(o wop) int64 { return int64(o.Off % (2 << 20)) }

// decodeOps turns fuzz bytes into operations (8 bytes each).
func decodeOps(data []byte) []wop {
	var ops []wop
	for len(data) >= 8 && len(ops) < 64 {
		ops = append(ops, wop{K: data[0] % opCount, P: data[1], Q: data[2], V: data[3],
			Off: uint32(data[4]) | uint32(data[5])<<8 | uint32(data[6]&0x1F)<<16, Len: uint32(data[7])<<8 | uint32(data[6])<<3})
		data = data[8:]
	}
	return ops
}

func randomOps(r *rand.Rand, n int) []wop {
	ops := make([]wop, n)
	for i := range ops {
		k := byte(r.Intn(opCount))
		// Creation more often than removal, so trees grow.
		if r.Intn(3) == 0 {
			k = []byte{opCreate, opMkdir, opWrite, opSymlink}[r.Intn(4)]
		}
		pick := func() byte {
			if r.Intn(2) == 0 {
				return byte(r.Intn(6)) // /a /b /c /a/a /a/b /a/c: mostly present
			}
			return byte(r.Intn(256))
		}
		ops[i] = wop{K: k, P: pick(), Q: pick(), V: byte(r.Intn(256)),
			Off: uint32(r.Intn(3 << 20)), Len: uint32(r.Intn(1 << 17))}
	}
	return ops
}

// diffConfig is an image layout the differential tests use.
type diffConfig struct {
	name string
	size string
	opts []string
}

var diffConfigs = []diffConfig{
	{"1k-csum", "16M", []string{"-t", "ext4", "-b", "1024"}},
	{"4k-csum", "32M", []string{"-t", "ext4", "-b", "4096"}},
	{"1k-nocsum", "16M", []string{"-t", "ext4", "-b", "1024", "-O", "^metadata_csum"}},
	{"1k-I128-fewinodes", "16M", []string{"-t", "ext4", "-b", "1024", "-I", "128", "-N", "96", "-O", "^metadata_csum,^uninit_bg,^has_journal"}},
}

var (
	baseMu   sync.Mutex
	baseImgs = map[string][]byte{}
)

// baseImage returns the bytes of an empty image of config c (made once).
func baseImage(t testing.TB, c diffConfig) []byte {
	baseMu.Lock()
	defer baseMu.Unlock()
	if b, ok := baseImgs[c.name]; ok {
		return b
	}
	mkfs := testutil.NeedCmd(t, "mke2fs")[0]
	dir, err := os.MkdirTemp("", "ext4diff")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	img := filepath.Join(dir, "img")
	args := append([]string{"-q", "-F"}, c.opts...)
	args = append(args, img, c.size)
	if out, err := execCombined(mkfs, args...); err != nil {
		t.Fatalf("mke2fs: %v\n%s", err, out)
	}
	b, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	baseImgs[c.name] = b
	return b
}

// diffRun applies ops to a fresh image and host tree and returns the first
// difference (nil when both agree and e2fsck is clean).
func diffRun(t testing.TB, c diffConfig, ops []wop) error {
	work, err := os.MkdirTemp("", "ext4diff")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	img := filepath.Join(work, "img")
	if err := os.WriteFile(img, baseImage(t, c), 0o644); err != nil {
		return err
	}
	host := filepath.Join(work, "host")
	os.Mkdir(host, 0o755)
	fh, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer fh.Close()
	st, _ := fh.Stat()
	f, err := OpenDevice(&fileDev{File: fh}, st.Size(), &Options{Writable: true, DirtyBytes: 64 << 10})
	if err != nil {
		return err
	}
	for i, o := range ops {
		herr, ierr, skipped := applyOp(f, host, o)
		if skipped {
			continue
		}
		if errors.Is(ierr, syscall.ENOSPC) && herr == nil {
			// The host has room; undo nothing: the driver's ENOSPC
			// leaves no trace, so replay the host op backwards is not
			// needed only if it also left none. Redo the host from the
			// image's view by reverting this op there.
			diffStats.mu.Lock()
			diffStats.enospc++
			diffStats.mu.Unlock()
			if err := revertHost(host, o); err != nil {
				return fmt.Errorf("op %d %v: reverting host after ENOSPC: %v", i, o, err)
			}
			continue
		}
		if !sameErr(herr, ierr) {
			return fmt.Errorf("op %d %v: host error %v, image error %v", i, o, herr, ierr)
		}
		diffStats.mu.Lock()
		if ierr == nil {
			diffStats.ok[o.K%opCount]++
		} else {
			diffStats.failed++
		}
		diffStats.mu.Unlock()
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close: %v", err)
	}
	if rc, out := fsck(t, img, "-fn"); rc != 0 || strings.Count(strings.TrimSpace(out), "\n") != 6 {
		return fmt.Errorf("e2fsck -fn rc %d:\n%s", rc, out)
	}
	return compareDiff(t, img, host)
}

func execCombined(name string, args ...string) ([]byte, error) {
	return exec.Command(name, args...).CombinedOutput()
}

func sameErr(a, b error) bool {
	if (a == nil) != (b == nil) {
		return false
	}
	if a == nil {
		return true
	}
	var ea syscall.Errno
	if !errors.As(a, &ea) {
		return false
	}
	return errors.Is(b, ea)
}

// hostResolve: the host path of a test path.
func hp(host, p string) string { return host + p }

// imgResolve walks p in the image without following symlinks at the end:
// it returns the parent directory and the last name.
func imgParent(f *FS, p string) (uint32, string, error) {
	parts := strings.Split(strings.Trim(p, "/"), "/")
	dir := uint32(RootIno)
	for _, c := range parts[:len(parts)-1] {
		ino, err := f.Lookup(dir, c)
		if err != nil {
			return 0, "", err
		}
		in, err := f.Inode(ino)
		if err != nil {
			return 0, "", err
		}
		if in.IsSymlink() {
			// Symlink targets never exist in these tests: the host's
			// path walk fails with ENOENT.
			return 0, "", fmt.Errorf("%w", syscall.ENOENT)
		}
		if !in.IsDir() {
			return 0, "", fmt.Errorf("%w", syscall.ENOTDIR)
		}
		dir = ino
	}
	return dir, parts[len(parts)-1], nil
}

func imgLookup(f *FS, p string) (uint32, error) {
	d, n, err := imgParent(f, p)
	if err != nil {
		return 0, err
	}
	return f.Lookup(d, n)
}

// applyOp runs o on both sides. skipped means it was not applicable (to
// keep the comparison about the driver, not about symlink following).
func applyOp(f *FS, host string, o wop) (herr, ierr error, skipped bool) {
	p, q := o.p(), o.q()
	var st unix.Stat_t
	lst := unix.Lstat(hp(host, p), &st)
	isReg := lst == nil && st.Mode&unix.S_IFMT == unix.S_IFREG
	isDirOrReg := lst == nil && (isReg || st.Mode&unix.S_IFMT == unix.S_IFDIR)
	switch o.K % opCount {
	case opCreate:
		fd, err := unix.Open(hp(host, p), unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_NOFOLLOW, 0o640)
		if err == nil {
			unix.Close(fd)
		}
		d, n, e := imgParent(f, p)
		if e == nil {
			_, e = f.Create(d, n, 0o640, 0, 0)
		}
		return err, e, false
	case opWrite, opTruncate, opFallocate, opPunch:
		if !isReg {
			return nil, nil, true
		}
		ino, e := imgLookup(f, p)
		if e != nil {
			return nil, e, false
		}
		fd, err := unix.Open(hp(host, p), unix.O_WRONLY, 0)
		if err != nil {
			return err, nil, false
		}
		defer unix.Close(fd)
		switch o.K % opCount {
		case opWrite:
			data := opData(o)
			if len(data) == 0 {
				return nil, nil, true
			}
			var n int
			n, e = f.WriteAt(ino, data, opOff(o))
			if e == nil {
				// A short write (the image is full) goes to the host as
				// written.
				_, err = unix.Pwrite(fd, data[:n], opOff(o))
			}
		case opTruncate:
			size := int64(o.Off % (3 << 20))
			if o.V%2 == 0 {
				size %= 5000
			}
			e = f.Truncate(ino, uint64(size))
			if e == nil {
				err = unix.Ftruncate(fd, size)
			}
		case opFallocate:
			mode := uint32(0)
			if o.V%2 == 1 {
				mode = FallocKeepSize
			}
			n := int64(o.Len%200000) + 1
			e = f.Fallocate(ino, mode, opOff(o), n)
			if e == nil {
				err = unix.Fallocate(fd, mode, opOff(o), n)
			}
		case opPunch:
			mode := uint32(FallocPunchHole | FallocKeepSize)
			if o.V%3 == 0 {
				mode = FallocZeroRange
			}
			n := int64(o.Len%200000) + 1
			e = f.Fallocate(ino, mode, opOff(o), n)
			if e == nil {
				err = unix.Fallocate(fd, mode, opOff(o), n)
			}
		}
		if errors.Is(e, syscall.ENOSPC) {
			return nil, e, false
		}
		return err, e, false
	case opRename, opRenamex:
		flags := uint32(0)
		if o.K%opCount == opRenamex {
			flags = RenameNoReplace
			if o.V%2 == 1 {
				flags = RenameExchange
			}
		}
		// Renames into or out of a missing parent fail on both sides the
		// same way; nothing to skip.
		err := unix.Renameat2(unix.AT_FDCWD, hp(host, p), unix.AT_FDCWD, hp(host, q), uint(flags))
		od, on, e := imgParent(f, p)
		if e == nil {
			var nd uint32
			var nn string
			nd, nn, e = imgParent(f, q)
			if e == nil {
				e = f.Rename(od, on, nd, nn, flags)
			}
		}
		return err, e, false
	case opUnlink, opRmdir:
		var err error
		if o.K%opCount == opUnlink {
			err = unix.Unlink(hp(host, p))
		} else {
			err = unix.Rmdir(hp(host, p))
		}
		d, n, e := imgParent(f, p)
		if e == nil {
			if o.K%opCount == opUnlink {
				e = f.Unlink(d, n)
			} else {
				e = f.Rmdir(d, n)
			}
		}
		return err, e, false
	case opLink:
		err := unix.Link(hp(host, p), hp(host, q))
		ino, e := imgLookup(f, p)
		if e == nil {
			var d uint32
			var n string
			if d, n, e = imgParent(f, q); e == nil {
				e = f.Link(ino, d, n)
			}
		}
		return err, e, false
	case opMkdir:
		err := unix.Mkdir(hp(host, p), 0o750)
		d, n, e := imgParent(f, p)
		if e == nil {
			_, e = f.Mkdir(d, n, 0o750, 0, 0)
		}
		return err, e, false
	case opSymlink:
		target := fmt.Sprintf("tgt-%d", o.V)
		if o.V%2 == 1 {
			target = strings.Repeat("long-target/", 5+int(o.V%40))
		}
		err := unix.Symlink(target, hp(host, p))
		d, n, e := imgParent(f, p)
		if e == nil {
			_, e = f.Symlink(d, n, target, 0, 0)
		}
		return err, e, false
	case opChmod:
		if !isDirOrReg {
			return nil, nil, true
		}
		mode := uint32(o.V)<<1&0o777 | 0o700
		err := unix.Chmod(hp(host, p), mode)
		ino, e := imgLookup(f, p)
		if e == nil {
			e = f.SetAttr(ino, &Attr{Mask: AttrMode, Mode: uint16(mode)})
		}
		return err, e, false
	case opSetxattr, opRmxattr:
		if !isDirOrReg {
			return nil, nil, true
		}
		name := xattrNames[int(o.Q)%len(xattrNames)]
		ino, e := imgLookup(f, p)
		if e != nil {
			return nil, e, false
		}
		var err error
		if o.K%opCount == opSetxattr {
			v := xattrValue(o.V)
			e = f.SetXattr(ino, name, v, 0)
			if e == nil {
				err = unix.Lsetxattr(hp(host, p), name, v, 0)
			}
			if errors.Is(e, syscall.ENOSPC) {
				return nil, e, false
			}
		} else {
			err = unix.Lremovexattr(hp(host, p), name)
			e = f.RemoveXattr(ino, name)
		}
		return err, e, false
	case opMasscreate, opMassunlink:
		if lst != nil || st.Mode&unix.S_IFMT != unix.S_IFDIR {
			return nil, nil, true
		}
		dir, e := imgLookup(f, p)
		if e != nil {
			return nil, e, false
		}
		n := 40 + int(o.V)%120
		for i := 0; i < n; i++ {
			name := fmt.Sprintf("mass-entry-with-a-long-name-%04d", i)
			if o.K%opCount == opMassunlink {
				if i%2 == 1 {
					continue
				}
				herr := unix.Unlink(hp(host, p) + "/" + name)
				ierr := f.Unlink(dir, name)
				if !sameErr(herr, ierr) {
					return herr, ierr, false
				}
				continue
			}
			fd, herr := unix.Open(hp(host, p)+"/"+name, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY, 0o600)
			if herr == nil {
				unix.Close(fd)
			}
			_, ierr := f.Create(dir, name, 0o600, 0, 0)
			if errors.Is(ierr, syscall.ENOSPC) && herr == nil {
				unix.Unlink(hp(host, p) + "/" + name)
				return nil, nil, true
			}
			if !sameErr(herr, ierr) {
				return herr, ierr, false
			}
		}
		return nil, nil, false
	}
	return nil, nil, true
}

// revertHost undoes on the host an operation the image refused with
// ENOSPC (only operations that can run out of space reach here).
func revertHost(host string, o wop) error {
	p := hp(host, o.p())
	switch o.K % opCount {
	case opCreate:
		return os.Remove(p)
	case opMkdir:
		return os.Remove(p)
	case opSymlink:
		return os.Remove(p)
	case opLink:
		return os.Remove(hp(host, o.q()))
	case opWrite, opFallocate, opPunch, opSetxattr, opTruncate:
		return nil // not applied on the host
	case opRename, opRenamex:
		return unix.Renameat2(unix.AT_FDCWD, hp(host, o.q()), unix.AT_FDCWD, p, 0)
	}
	return fmt.Errorf("cannot revert %v", o)
}

// compareDiff compares the image (fresh read-only Open) with the host tree.
func compareDiff(t testing.TB, img, host string) error {
	fh, err := os.Open(img)
	if err != nil {
		return err
	}
	defer fh.Close()
	st, _ := fh.Stat()
	f, err := Open(fh, st.Size(), nil)
	if err != nil {
		return err
	}
	ct := &collectT{TB: t}
	got := walkImage(ct, f, true)
	want := walkHost(ct, host, true)
	if ct.failed != "" {
		return fmt.Errorf("%s", ct.failed)
	}
	for _, m := range []map[string]rec{got, want} {
		for p, r := range m {
			r.mtime = 0
			r.uid, r.gid = 0, 0
			if r.isDir {
				r.size = 0
			}
			m[p] = r
		}
	}
	delete(got, "/lost+found")
	var diffs []string
	for p, w := range want {
		if g, ok := got[p]; !ok {
			diffs = append(diffs, p+": missing from the image")
		} else if g != w {
			diffs = append(diffs, fmt.Sprintf("%s:\n host  %v\n image %v", p, w, g))
		}
	}
	for p := range got {
		if _, ok := want[p]; !ok {
			diffs = append(diffs, p+": only in the image")
		}
	}
	if len(diffs) > 0 {
		if len(diffs) > 10 {
			diffs = diffs[:10]
		}
		return fmt.Errorf("trees differ:\n%s", strings.Join(diffs, "\n"))
	}
	return nil
}

// collectT turns Fatal/Error of the walk helpers into a recorded failure.
type collectT struct {
	testing.TB
	failed string
}

func (c *collectT) Fatalf(format string, a ...any) {
	c.failed += fmt.Sprintf(format, a...) + "\n"
	panic(collectAbort{})
}
func (c *collectT) Fatal(a ...any) {
	c.failed += fmt.Sprint(a...) + "\n"
	panic(collectAbort{})
}
func (c *collectT) Errorf(format string, a ...any) { c.failed += fmt.Sprintf(format, a...) + "\n" }
func (c *collectT) Helper()                        {}

type collectAbort struct{}

// shrink reduces a failing sequence (delta debugging: drop chunks while it
// still fails).
func shrink(t testing.TB, c diffConfig, ops []wop) []wop {
	fails := func(o []wop) bool { return safeDiffRun(t, c, o) != nil }
	for n := len(ops) / 2; n >= 1; {
		removed := false
		for i := 0; i+n <= len(ops); {
			cand := append(append([]wop{}, ops[:i]...), ops[i+n:]...)
			if fails(cand) {
				ops = cand
				removed = true
			} else {
				i += n
			}
		}
		if !removed {
			n /= 2
		}
	}
	return ops
}

func safeDiffRun(t testing.TB, c diffConfig, ops []wop) (err error) {
	defer func() {
		if r := recover(); r != nil {
			if _, ok := r.(collectAbort); ok {
				err = fmt.Errorf("walk aborted")
				return
			}
			err = fmt.Errorf("panic: %v", r)
		}
	}()
	return diffRun(t, c, ops)
}

var diffStats struct {
	mu     sync.Mutex
	ok     [opCount]int
	failed int
	enospc int
}

// diffRegressions are shrunk sequences that once failed.
var diffRegressions = []struct {
	cfg int
	ops []wop
}{
	// A dangling symlink in the middle of a path: ENOENT (harness).
	{0, []wop{{opSymlink, 211, 68, 245, 2850511, 7417}, {opRmdir, 98, 69, 20, 735956, 3439}}},
	// link(2) onto an existing name: EEXIST before EPERM for a directory.
	{0, []wop{{opMkdir, 165, 70, 122, 497549, 86474}, {opSymlink, 243, 68, 226, 3459, 19306}, {opMkdir, 47, 186, 166, 2201032, 6105}, {opRename, 168, 116, 143, 2331847, 71089}, {opLink, 182, 206, 132, 1993428, 115919}}},
	// rename of a directory into itself: EINVAL before the type checks.
	{2, []wop{{opMkdir, 46, 76, 198, 2248364, 60434}, {opSymlink, 217, 190, 173, 393104, 80664}, {opRename, 46, 217, 14, 424786, 120443}}},
	// rename over an ancestor of the source: ENOTEMPTY.
	{0, []wop{{opMkdir, 121, 61, 189, 1136639, 93310}, {opCreate, 52, 29, 240, 2881940, 115863}, {opRename, 217, 31, 57, 1354874, 7585}}},
	// link with no free inode left must not fail with ENOSPC.
	{3, []wop{{opMkdir, 1, 115, 206, 1869522, 68572}, {opMasscreate, 1, 2, 204, 3057562, 75567}, {opLink, 1, 2, 119, 2496743, 26144}}},
}

func TestWriteDiffRegressions(t *testing.T) {
	for i, r := range diffRegressions {
		if err := safeDiffRun(t, diffConfigs[r.cfg], r.ops); err != nil {
			t.Errorf("regression %d (%s): %v", i, diffConfigs[r.cfg].name, err)
		}
	}
}

// TestWriteDiffRandom runs seeded random sequences on every config,
// shrinking and printing any failing one.
func TestWriteDiffRandom(t *testing.T) {
	testutil.NeedCmd(t, "mke2fs", "e2fsck")
	seqs := 25
	if testing.Short() {
		seqs = 3
	}
	if s := os.Getenv("EXT4_DIFF_SEQS"); s != "" {
		fmt.Sscan(s, &seqs)
	}
	defer func() {
		var parts []string
		for k, n := range diffStats.ok {
			parts = append(parts, fmt.Sprintf("%s %d", opNames[k], n))
		}
		t.Logf("succeeded: %s; failed alike on both sides: %d; ENOSPC on the image: %d", strings.Join(parts, ", "), diffStats.failed, diffStats.enospc)
	}()
	for ci, c := range diffConfigs {
		t.Run(c.name, func(t *testing.T) {
			for s := 0; s < seqs; s++ {
				r := rand.New(rand.NewSource(int64(1000*ci + s)))
				ops := randomOps(r, 60+r.Intn(100))
				if err := safeDiffRun(t, c, ops); err != nil {
					if p := os.Getenv("EXT4_DIFF_FAILLOG"); p != "" {
						os.WriteFile(p, []byte(fmt.Sprintf("seed %d cfg %d\n%v\nops %v\n", s, ci, err, ops)), 0o644)
					}
					small := shrink(t, c, ops)
					t.Fatalf("seed %d: %v\nshrunk to %d ops (cfg %d): %v\nerror: %v", s, err, len(small), ci, small, safeDiffRun(t, c, small))
				}
			}
		})
	}
}

// FuzzWriteOps: fuzz bytes -> an operation sequence on a small image,
// compared with the host and checked by e2fsck.
func FuzzWriteOps(f *testing.F) {
	testutil.NeedCmd(f, "mke2fs", "e2fsck")
	r := rand.New(rand.NewSource(7))
	for i := 0; i < 4; i++ {
		b := make([]byte, 1+8*30)
		r.Read(b)
		b[0] = byte(i)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) < 1 {
			return
		}
		c := diffConfigs[int(data[0])%len(diffConfigs)]
		if err := safeDiffRun(t, c, decodeOps(data[1:])); err != nil {
			t.Fatal(err)
		}
	})
}
