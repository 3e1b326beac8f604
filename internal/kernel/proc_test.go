package kernel

import (
	"os"
	"syscall"
	"testing"

	"github.com/umltools/umltools/internal/fs/memfd"
)

// Writes to /proc/sys: what a guest writes to the file it opened is the
// value the kernel shows next (uname, a read back), as in Linux.
func TestSysWrites(t *testing.T) {
	k := &Kernel{hostname: "box", domain: "(none)"}
	open := func(path string) *os.File {
		t.Helper()
		f, err := memfd.New("proc:" + path)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if err := k.SysWrite(nil, path, f); err != nil {
			t.Fatal(err)
		}
		g, err := memfd.Reopen(f, syscall.O_WRONLY)
		if err != nil {
			t.Fatal(err)
		}
		return g
	}
	read := func(path string) string {
		t.Helper()
		b, err := k.Sys(nil, path)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		return string(b)
	}
	for _, c := range []struct {
		path, write, want string
	}{
		{"kernel/hostname", "foo\n", "foo\n"},
		{"kernel/hostname", "bar", "bar\n"},
		{"kernel/hostname", "two\nlines\n", "two\n"},
		{"kernel/domainname", "example.org\n", "example.org\n"},
		{"vm/swappiness", "10\n", "10\n"},
		{"vm/overcommit_memory", "  1 \n", "1\n"},
		{"net/ipv4/ip_local_port_range", "1024    65000\n", "1024\t65000\n"},
		{"kernel/core_pattern", "|/bin/false %p\n", "|/bin/false %p\n"},
		{"kernel/panic", "5", "5\n"},
	} {
		f := open(c.path)
		if _, err := f.WriteString(c.write); err != nil {
			t.Fatal(err)
		}
		if got := read(c.path); got != c.want {
			t.Errorf("write %q to %s: reads back %q, want %q", c.write, c.path, got, c.want)
		}
		f.Close()
	}
	if _, n, _, _, _ := k.Uname(); n != "two" {
		t.Errorf("uname nodename %q", n)
	}
	long := open("kernel/hostname")
	long.WriteString("a123456789b123456789c123456789d123456789e123456789f123456789g1234567\n")
	if _, n, _, _, _ := k.Uname(); len(n) != 64 {
		t.Errorf("a long name: %q (%d bytes), want 64", n, len(n))
	}
	// A number that is not one is refused: the value stays.
	bad := open("vm/swappiness")
	bad.WriteString("many\n")
	if got := read("vm/swappiness"); got != "10\n" {
		t.Errorf("after a bad write: %q", got)
	}
	// A later sethostname wins over an earlier write, and the write is
	// not applied again.
	hn := open("kernel/hostname")
	hn.WriteString("early\n")
	k.applySysWrites() // as sethostname does first
	k.hostname = "set"
	if _, n, _, _, _ := k.Uname(); n != "set" {
		t.Errorf("after sethostname: %q", n)
	}
	// Nothing written (an open and close) changes nothing.
	open("kernel/domainname").Close()
	if got := read("kernel/domainname"); got != "example.org\n" {
		t.Errorf("domainname %q", got)
	}
	// The opens kept are bounded.
	for i := 0; i < 2*maxSysWriters; i++ {
		open("vm/swappiness").Close()
	}
	if len(k.sysw.open) > maxSysWriters {
		t.Errorf("%d opens kept", len(k.sysw.open))
	}
}
