package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/umltools/umltools/internal/testutil"
)

// unixPy is a Python AF_UNIX workout in directory argv[1]: a stream
// server thread and a client, the names the kernel reports, the node,
// datagrams both ways between bound sockets, and the name after unlink.
const unixPy = `import errno, os, socket, stat, sys, threading
d = sys.argv[1]
path = d + "/s"
srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
srv.bind(path)
srv.listen(1)
print("name", srv.getsockname() == path)
seen = []
def serve():
    c, a = srv.accept()
    seen.append(repr(a))
    c.sendall(c.recv(100).upper())
    c.close()
t = threading.Thread(target=serve)
t.start()
cl = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
cl.connect(path)
print("peer", cl.getpeername() == path)
cl.sendall(b"hello")
print("reply", cl.recv(100))
cl.close()
t.join()
print("accepted", seen)
print("socket node", stat.S_ISSOCK(os.stat(path).st_mode))
a = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
a.bind(d + "/d")
b = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
b.bind(d + "/c")
b.sendto(b"ping", d + "/d")
data, frm = a.recvfrom(100)
print("dgram", data, frm == d + "/c")
a.sendto(b"pong", frm)
data, frm = b.recvfrom(100)
print("dgram reply", data, frm == d + "/d")
os.unlink(path)
try:
    socket.socket(socket.AF_UNIX).connect(path)
except OSError as e:
    print("after unlink", errno.errorcode[e.errno])
srv.close()
`

// Python's socket.AF_UNIX on the Debian image, in /run (tmpfs) and on the
// ext4 root, prints what it prints natively.
func TestDebianUnixSockets(t *testing.T) {
	py := testutil.NeedCmd(t, "python3")[0]
	dir := t.TempDir()
	script := filepath.Join(dir, "unix.py")
	if err := os.WriteFile(script, []byte(unixPy), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(py, script, dir).CombinedOutput()
	if err != nil {
		t.Fatalf("natively: %v\n%s", err, out)
	}
	native := string(out)
	if !strings.Contains(native, "reply b'HELLO'") {
		t.Fatalf("natively:\n%s", native)
	}

	img := testutil.DebianImage(t)
	r := debianBoot(t, img, strings.Join([]string{
		quietShell,
		"cat > /root/unix.py <<'PY'\n" + unixPy + "PY",
		mark("run"), "python3 /root/unix.py /run",
		mark("root"), "mkdir -p /srv/u && python3 /root/unix.py /srv/u",
		mark("nodes"), "stat -c '%F %a' /srv/u/c /srv/u/d; test -e /srv/u/s || echo unlinked",
		mark("end"),
	}, "\n"), 2*time.Minute)
	got := marked(r.stdout)
	if got["run"] != native {
		t.Errorf("in /run: got\n%s\nnatively\n%s\nstderr: %s", got["run"], native, r.stderr)
	}
	if got["root"] != native {
		t.Errorf("on the ext4 root: got\n%s\nnatively\n%s", got["root"], native)
	}
	// The nodes stay behind, as in Linux; the unlinked one is gone.
	if want := "socket 755\nsocket 755\nunlinked\n"; got["nodes"] != want {
		t.Errorf("nodes: got %q, want %q", got["nodes"], want)
	}
	if st := debugfs(t, img, "stat /srv/u/c"); !strings.Contains(st, "Type: socket") {
		t.Errorf("debugfs stat /srv/u/c:\n%s", st)
	}
	fsckClean(t, img)
}
