package kernel

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/umltools/umltools/internal/abi"
	"github.com/umltools/umltools/internal/sandbox"
)

// The address-reporting syscalls stop for the tracer only when they can
// report an address.
func TestUnixPolicy(t *testing.T) {
	p := Policy()
	for _, c := range []struct {
		name string
		args [6]uint64
		want sandbox.Ret
	}{
		{"accept", [6]uint64{3, 0, 0}, sandbox.RetAllow},
		{"accept", [6]uint64{3, 0x1000, 0x2000}, sandbox.RetTrace},
		{"accept4", [6]uint64{3, 0, 0, 0}, sandbox.RetAllow},
		{"accept4", [6]uint64{3, 0x1000, 0x2000, 0}, sandbox.RetTrace},
		{"recvfrom", [6]uint64{3, 0x1000, 10, 0, 0, 0}, sandbox.RetAllow},
		{"recvfrom", [6]uint64{3, 0x1000, 10, 0, 0x2000, 0x3000}, sandbox.RetTrace},
		{"getsockname", [6]uint64{3, 0x1000, 0x2000}, sandbox.RetTrace},
		{"getpeername", [6]uint64{3, 0x1000, 0x2000}, sandbox.RetTrace},
		{"recvmsg", [6]uint64{3, 0x1000, 0}, sandbox.RetTrace},
		{"recvmmsg", [6]uint64{3, 0x1000, 2}, sandbox.RetTrace},
		{"sendto", [6]uint64{3, 0x1000, 10, 0, 0, 0}, sandbox.RetTrace}, // notified: the listener outranks TRACE
	} {
		nr, _ := sandbox.Nr(c.name)
		if got := p.Verdict(nr, c.args); got != c.want {
			t.Errorf("%s%v: %v, want %v", c.name, c.args, got, c.want)
		}
		if c.want == sandbox.RetTrace && c.name != "sendto" && !isUnixTrap(uint64(nr)) {
			t.Errorf("%s is traced but the kernel does not serve it", c.name)
		}
	}
}

// sockaddrUn encodes an AF_UNIX address as the host reports it.
func sockaddrUn(path string) []byte {
	b := make([]byte, 2, 2+len(path)+1)
	binary.LittleEndian.PutUint16(b, afUnix)
	return append(append(b, path...), 0)
}

// The engine's table of bindings: host paths back to the guest's names,
// also from a name cut to a short buffer; dead bindings swept.
func TestUnixNames(t *testing.T) {
	var u unixNames
	defer u.close()
	h1, err := u.newHost()
	if err != nil {
		t.Fatal(err)
	}
	h2, _ := u.newHost()
	if h1 == h2 || !strings.HasPrefix(h1, u.dir+"/") || len(h1) > 107 {
		t.Fatalf("host paths %q %q in %q", h1, h2, u.dir)
	}
	if st, err := os.Stat(u.dir); err != nil || st.Mode().Perm() != 0o700 {
		t.Fatalf("socket directory: %v %v", st, err)
	}
	u.add(&unixBinding{host: h1, guest: "/run/a.sock", node: unixNode{1, 10}})
	u.add(&unixBinding{host: h2, guest: "rel.sock", node: unixNode{1, 11}})
	if h, ok := u.host(unixNode{1, 10}); !ok || h != h1 {
		t.Errorf("host(node 10) = %q %v", h, ok)
	}
	if _, ok := u.host(unixNode{2, 10}); ok {
		t.Error("a node of another mount is bound")
	}
	if u.count.Load() != 2 {
		t.Errorf("count %d", u.count.Load())
	}
	for _, c := range []struct {
		host string
		full bool
		want string
		ok   bool
	}{
		{h1, true, "/run/a.sock", true},
		{h2, true, "rel.sock", true},
		{u.dir + "/9", true, "", false},    // a full name that is not bound
		{u.dir + "/", false, "", false},    // cut: both bindings start so
		{"/elsewhere/x", false, "", false}, // not ours
		{h1 + "0", true, "", false},        // another number
		{"/elsewhere/x", true, "", false},  // not ours, in full
	} {
		got, ok := u.guestName(c.host, c.full)
		if got != c.want || ok != c.ok {
			t.Errorf("guestName(%q, %v) = %q %v, want %q %v", c.host, c.full, got, ok, c.want, c.ok)
		}
	}
	// A new binding of the same node replaces the old one.
	h3, _ := u.newHost()
	u.add(&unixBinding{host: h3, guest: "/run/a.sock", node: unixNode{1, 10}})
	if _, ok := u.guestName(h1, true); ok {
		t.Error("the replaced binding still answers")
	}

	// Sweep: only host paths some socket is still bound to survive
	// (the host's /proc/<pid>/net/unix of this process's namespace).
	live := boundSocket(t, h3)
	defer unix.Close(live)
	u.live = -8 // sweep now
	u.sweep(os.Getpid())
	if _, ok := u.guestName(h3, true); !ok {
		t.Error("sweep dropped a live binding")
	}
	if _, ok := u.guestName(h2, true); ok {
		t.Error("sweep kept a dead binding")
	}
	if u.count.Load() != 1 || u.live != 1 {
		t.Errorf("after sweep: count %d live %d", u.count.Load(), u.live)
	}
	dir := u.dir
	if err := u.close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("socket directory left: %v", err)
	}
}

// fixAddr rewrites addresses in (this process's) memory as the tracer
// does in a stopped guest's: the guest's name, cut to the buffer, with
// its full length.
func TestFixAddr(t *testing.T) {
	var u unixNames
	defer u.close()
	h1, _ := u.newHost()
	h2, _ := u.newHost()
	u.add(&unixBinding{host: h1, guest: "/tmp/server.sock", node: unixNode{1, 1}})
	u.add(&unixBinding{host: h2, guest: "c", node: unixNode{1, 2}})
	self := &sandbox.Task{Tid: os.Getpid(), Tgid: os.Getpid()}
	for _, c := range []struct {
		name    string
		report  []byte // what the host wrote
		size    uint32 // the caller's buffer
		again   string // the full name asked again ("" none)
		want    []byte
		wantLen uint32
	}{
		{"full", sockaddrUn(h1), 110, "", sockaddrUn("/tmp/server.sock"), 19},
		{"short guest name", sockaddrUn(h2), 110, "", sockaddrUn("c"), 4},
		{"cut, asked again", sockaddrUn(h1)[:12], 12, h1, sockaddrUn("/tmp/server.sock")[:12], 19},
		{"cut, not asked", sockaddrUn(h1)[:12], 12, "", sockaddrUn(h1)[:12], uint32(len(h1) + 3)},
		{"unknown", sockaddrUn("/run/other"), 110, "", sockaddrUn("/run/other"), 13},
		{"abstract", append([]byte{1, 0, 0}, "abs"...), 110, "", append([]byte{1, 0, 0}, "abs"...), 6},
		{"unnamed", []byte{1, 0}, 110, "", []byte{1, 0}, 2},
	} {
		buf := heapBytes(110)
		copy(buf, c.report)
		l := heapBytes(4)
		full := uint32(len(c.report))
		if c.size < 110 {
			full = uint32(len(h1) + 3)
		}
		binary.LittleEndian.PutUint32(l, full)
		var again func() string
		if c.again != "" {
			again = func() string { return c.again }
		}
		u.fixAddr(self, pendingAddr{addr: uint64(uintptr(unsafe.Pointer(&buf[0]))), lenAddr: uint64(uintptr(unsafe.Pointer(&l[0]))), size: c.size}, again)
		if got := buf[:len(c.want)]; string(got) != string(c.want) {
			t.Errorf("%s: address %q, want %q", c.name, got, c.want)
		}
		if got := binary.LittleEndian.Uint32(l); got != c.wantLen {
			t.Errorf("%s: length %d, want %d", c.name, got, c.wantLen)
		}
		if c.size < 110 && buf[c.size] != 0 {
			t.Errorf("%s: wrote past the buffer", c.name)
		}
	}
}

// boundSocket is a host stream socket bound to path.
func boundSocket(t *testing.T, path string) int {
	t.Helper()
	s, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Bind(s, &unix.SockaddrUnix{Name: path}); err != nil {
		unix.Close(s)
		t.Fatal(err)
	}
	return s
}

// sockName asks the host for a socket's names through pidfd_getfd, as
// the exit of a cut getsockname does.
func TestSockName(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "s")
	s := boundSocket(t, p)
	defer unix.Close(s)
	unix.Listen(s, 1)
	c, _ := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM, 0)
	defer unix.Close(c)
	if err := unix.Connect(c, &unix.SockaddrUnix{Name: p}); err != nil {
		t.Fatal(err)
	}
	if got := sockName(unix.Gettid(), s, unix.SYS_GETSOCKNAME); got != p {
		t.Errorf("getsockname: %q, want %q", got, p)
	}
	if got := sockName(unix.Gettid(), c, unix.SYS_GETPEERNAME); got != p {
		t.Errorf("getpeername: %q, want %q", got, p)
	}
	if got := sockName(unix.Gettid(), c, unix.SYS_GETSOCKNAME); got != "" {
		t.Errorf("unnamed client: %q", got)
	}
	if !bound(s) || bound(c) {
		t.Errorf("bound: server %v client %v", bound(s), bound(c))
	}
}

// heapKeep holds heapBytes' buffers: memory written by process_vm
// calls must not be on a goroutine stack, which moves when it grows.
var heapKeep [][]byte

func heapBytes(n int) []byte {
	b := make([]byte, n)
	heapKeep = append(heapKeep, b)
	return b
}

// The credentials a guest may pass: its own, or anyone's as root.
func TestCheckCreds(t *testing.T) {
	k := &Kernel{procs: map[int]*Process{}}
	other := &Process{Tgid: 4242, pid: 9, Cred: &Cred{}}
	k.procs[4242] = other
	ucred := func(pid int32, uid, gid uint32) []byte {
		b := make([]byte, 12)
		binary.LittleEndian.PutUint32(b, uint32(pid))
		binary.LittleEndian.PutUint32(b[4:], uid)
		binary.LittleEndian.PutUint32(b[8:], gid)
		return b
	}
	user := &Cred{Uid: 1000, Euid: 1000, Suid: 1000, Fsuid: 1000, Gid: 100, Egid: 100, Sgid: 100, Fsgid: 100}
	for _, c := range []struct {
		cred *Cred
		d    []byte
		want int64
	}{
		{user, ucred(5, 1000, 100), 0},
		{user, ucred(6, 1000, 100), -abi.EPERM},
		{user, ucred(5, 0, 100), -abi.EPERM},
		{user, ucred(5, 1000, 0), -abi.EPERM},
		{&Cred{}, ucred(9, 7, 7), 0},
		{&Cred{}, ucred(77, 0, 0), -abi.ESRCH},
	} {
		cl := &call{k: k, p: &Process{Tgid: 1234, pid: 5, Cred: c.cred}}
		if got := cl.checkCreds(c.d); got != c.want {
			t.Errorf("cred %+v, ucred %v: %d, want %d", c.cred, c.d, got, c.want)
		}
	}
}
