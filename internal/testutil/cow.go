package testutil

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/umltools/umltools/internal/cli"
)

// COWSpec describes a COW file for CraftCOW. The layout arithmetic here is
// written independently of internal/cow, from the spec, so tests compare
// two implementations.
type COWSpec struct {
	Version    int    // 1, 2 or 3
	Broken     bool   // v3 in the unpacked 64-bit layout
	Backing    string // backing file path stored in the header
	Mtime      int64  // header mtime
	Size       uint64 // header size
	SectorSize int    // 0 means 512
	Align      uint32 // v3 alignment; 0 means 4096
	// Sectors maps sector numbers to their COW contents (SectorSize
	// bytes); their bits are set.
	Sectors map[int64][]byte
	// Junk fills the v3 name tail after the NUL with 0xAA, as the kernel's
	// uninitialised malloc may.
	Junk bool
}

// CraftCOW writes a COW file described by s to path and returns its data
// offset.
func CraftCOW(t testing.TB, path string, s COWSpec) int64 {
	t.Helper()
	ss := int64(s.SectorSize)
	if ss == 0 {
		ss = 512
	}
	align := int64(s.Align)
	if align == 0 {
		align = 4096
	}
	up := func(x, a int64) int64 { return (x + a - 1) / a * a }
	size := int64(s.Size)
	var hdr []byte
	var bitmapOff, bitmapLen, dataOff int64
	be, le := binary.BigEndian, binary.LittleEndian
	switch {
	case s.Version == 1:
		hdr = make([]byte, 280)
		le.PutUint32(hdr[0:], 0x4F4F4F4D)
		le.PutUint32(hdr[4:], 1)
		copy(hdr[8:263], s.Backing)
		le.PutUint32(hdr[264:], uint32(s.Mtime))
		le.PutUint64(hdr[268:], s.Size)
		le.PutUint32(hdr[276:], uint32(ss))
		bitmapOff = 280
	case s.Version == 2:
		hdr = make([]byte, 4120)
		be.PutUint32(hdr[0:], 0x4F4F4F4D)
		be.PutUint32(hdr[4:], 2)
		copy(hdr[8:4103], s.Backing)
		be.PutUint32(hdr[4104:], uint32(s.Mtime))
		be.PutUint64(hdr[4108:], s.Size)
		be.PutUint32(hdr[4116:], uint32(ss))
		bitmapOff = 4120
	case s.Broken:
		hdr = make([]byte, 4136)
		be.PutUint32(hdr[0:], 0x4F4F4F4D)
		be.PutUint32(hdr[4:], 3)
		be.PutUint32(hdr[8:], uint32(s.Mtime)) // the first 4 of 8 bytes
		be.PutUint64(hdr[16:], s.Size)
		be.PutUint32(hdr[24:], uint32(ss))
		be.PutUint32(hdr[28:], uint32(align))
		copy(hdr[36:4131], s.Backing)
		bitmapOff = up(4136, align)
	default:
		hdr = make([]byte, 4128)
		be.PutUint32(hdr[0:], 0x4F4F4F4D)
		be.PutUint32(hdr[4:], 3)
		be.PutUint32(hdr[8:], uint32(s.Mtime))
		be.PutUint64(hdr[12:], s.Size)
		be.PutUint32(hdr[20:], uint32(ss))
		be.PutUint32(hdr[24:], uint32(align))
		copy(hdr[32:4127], s.Backing)
		if s.Junk {
			for i := 32 + len(s.Backing) + 1; i < 4128; i++ {
				hdr[i] = 0xAA
			}
		}
		bitmapOff = up(4128, align)
	}
	if s.Version < 3 {
		bitmapLen = (size + ss - 1) / (8 * ss) // the old rounding bug
		dataOff = up(bitmapOff+bitmapLen, ss)
	} else {
		bitmapLen = ((size+ss-1)/ss + 7) / 8
		dataOff = up(bitmapOff+bitmapLen, align)
	}
	bitmap := make([]byte, bitmapLen)
	for n := range s.Sectors {
		if n/8 < bitmapLen {
			bitmap[n/8] |= 1 << (n % 8)
		}
	}
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	must := func(_ int, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(f.WriteAt(hdr, 0))
	must(f.WriteAt(bitmap, bitmapOff))
	for n, b := range s.Sectors {
		must(f.WriteAt(b, dataOff+n*ss))
	}
	if err := f.Truncate(dataOff + size); err != nil {
		t.Fatal(err)
	}
	return dataOff
}

// CopySparse copies src to dst keeping holes and the mtime (cp -p
// --sparse=always), so a copy of a backing file still matches its COW
// header.
func CopySparse(t testing.TB, src, dst string) {
	t.Helper()
	if b, err := exec.Command("cp", "-p", "--sparse=always", src, dst).CombinedOutput(); err != nil {
		t.Fatalf("cp %s %s: %v: %s", src, dst, err, b)
	}
}

// Result is what one run of a command printed and its exit status.
type Result struct {
	Stdout, Stderr string
	Code           int
}

// RunIn runs a binary's run function in-process as argv[0] prog, with the
// exit status cli.Main would give.
func RunIn(run cli.RunFunc, prog string, args ...string) Result {
	var o, e bytes.Buffer
	err := run(append([]string{prog}, args...), nil, &o, &e)
	code := cli.Report(prog, err, &e)
	return Result{o.String(), e.String(), code}
}

// RunC runs the C original at path with argv[0] set to its base name,
// skipping t if it is not installed. A death by signal reads as 128+sig.
func RunC(t testing.TB, path string, args ...string) Result {
	t.Helper()
	if _, err := os.Stat(path); err != nil {
		Skip(t, "%s not installed (Debian uml-utilities)", path)
	}
	cmd := exec.Command(path, args...)
	cmd.Args[0] = filepath.Base(path)
	return RunCmd(t, cmd, 0)
}

// RunCmd runs a prepared command (its Stdin, Dir and Env as the caller set
// them), capturing stdout and stderr, and returns them with the exit
// status; a death by signal reads as 128+sig. With timeout > 0 the command
// is killed after it and t fails: a tool that hangs is a defect.
func RunCmd(t testing.TB, cmd *exec.Cmd, timeout time.Duration) Result {
	t.Helper()
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	if err := cmd.Start(); err != nil {
		t.Fatalf("%s: %v", cmd.Path, err)
	}
	var timer *time.Timer
	hung := make(chan string, 1)
	if timeout > 0 {
		// A hang is asked where it is stuck before it is killed.
		timer = time.AfterFunc(timeout, func() {
			hung <- Quit(cmd.Process)
			time.AfterFunc(5*time.Second, func() { cmd.Process.Kill() })
		})
	}
	err := cmd.Wait()
	if timer != nil && !timer.Stop() {
		where := <-hung
		t.Fatalf("%s %q: hung, killed after %v\n%s\nstdout (end):\n%s\nstderr (end):\n%s",
			cmd.Path, cmd.Args[1:], timeout, where, tail(o.String(), 4<<10), tail(e.String(), 64<<10))
	}
	code := 0
	var xe *exec.ExitError
	if errors.As(err, &xe) {
		code = xe.ExitCode()
		if ws, ok := xe.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			code = 128 + int(ws.Signal())
		}
	} else if err != nil {
		t.Fatal(err)
	}
	return Result{o.String(), e.String(), code}
}
