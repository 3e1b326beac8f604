package kernel

import (
	"errors"
	"fmt"
	"os"
	"syscall"
	"testing"

	"github.com/umltools/umltools/internal/abi"
	"github.com/umltools/umltools/internal/sandbox"
)

func TestTmpfsOpts(t *testing.T) {
	for _, c := range []struct {
		data           string
		mode, uid, gid uint32
		bad            bool
	}{
		{"", 0o1777, 0, 0, false},
		{"mode=755", 0o755, 0, 0, false},
		{"size=10m,mode=0700,uid=1000,gid=100,nr_inodes=5", 0o700, 1000, 100, false},
		{"mode=9", 0, 0, 0, true},
		{"uid=x", 0, 0, 0, true},
	} {
		mode, uid, gid, err := tmpfsOpts(mountOpts(c.data))
		if (err != nil) != c.bad || (!c.bad && (mode != c.mode || uid != c.uid || gid != c.gid)) {
			t.Errorf("tmpfsOpts(%q) = %o %d %d %v", c.data, mode, uid, gid, err)
		}
	}
}

func TestCommAndEscape(t *testing.T) {
	for in, want := range map[string]string{
		"/bin/sh": "sh", "sh": "sh", "/usr/lib/a-very-long-program-name": "a-very-long-pro", "/": "",
	} {
		if got := commOf(in); got != want {
			t.Errorf("commOf(%q) = %q, want %q", in, got, want)
		}
	}
	if got := escapeMount("/a b\tc\\d"); got != `/a\040b\011c\134d` {
		t.Errorf("escapeMount = %q", got)
	}
}

func TestErrno(t *testing.T) {
	for _, c := range []struct {
		err  error
		want int64
	}{
		{nil, 0},
		{syscall.ENOENT, -abi.ENOENT},
		{fmt.Errorf("wrapped: %w", syscall.EROFS), -abi.EROFS},
		{sandbox.ErrFault, -abi.EFAULT},
		{sandbox.ErrTooLong, -abi.ENAMETOOLONG},
		{os.ErrNotExist, -abi.ENOENT},
		{errors.New("anything else"), -abi.EIO},
	} {
		if got := errno(c.err); got != c.want {
			t.Errorf("errno(%v) = %d, want %d", c.err, got, c.want)
		}
	}
}

// The kernel's policy never lets an unknown syscall run, keeps path
// syscalls away from the host, and sends every syscall it serves by
// notification to the engine.
func TestPolicy(t *testing.T) {
	p := Policy()
	if p.Default == sandbox.RetAllow {
		t.Fatal("unknown syscalls are allowed")
	}
	for _, name := range []string{"open", "openat", "stat", "execve", "mkdir", "chdir", "mount", "connect", "bind"} {
		nr, _ := sandbox.Nr(name)
		if v := p.Verdict(nr, [6]uint64{}); v == sandbox.RetAllow {
			t.Errorf("%s runs on the host", name)
		}
	}
	trapped := map[int]bool{}
	for _, nr := range notified {
		trapped[nr] = true
		if v := p.Verdict(nr, [6]uint64{}); v != sandbox.RetTrace {
			t.Errorf("%s is served by notification but the main filter says %v (want TRACE, which the listener outranks)", abi.SyscallNames[nr], v)
		}
	}
	for _, name := range native {
		nr, _ := sandbox.Nr(name)
		if trapped[nr] {
			t.Errorf("%s is both native and notified", name)
		}
	}
}
