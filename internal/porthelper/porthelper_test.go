package porthelper

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/umltools/umltools/internal/testutil"
	"golang.org/x/sys/unix"
)

const cHelper = "/usr/lib/uml/port-helper"

func TestMessage(t *testing.T) {
	for _, pid := range []int{1, 1234, 0x01020304, 4194304} {
		got := Message(pid)
		want := binary.LittleEndian.AppendUint32(nil, uint32(pid)) // x86_64, arm64: little-endian hosts
		if !bytes.Equal(got, want) {
			t.Errorf("Message(%d) = % x, want % x", pid, got, want)
		}
	}
}

func TestAbstractName(t *testing.T) {
	for pid, want := range map[int]string{7: "\x00    7", 6084: "\x00 6084", 12345: "\x0012345", 4194303: "\x004194303"} {
		if got := AbstractName(pid); got != want {
			t.Errorf("AbstractName(%d) = %q, want %q", pid, got, want)
		}
	}
}

// recvHandoff receives one handoff message on sock: the pid and the
// passed descriptor (closed by the test's cleanup), plus the sender's
// address.
func recvHandoff(t *testing.T, sock int) (pid int, fd int, from unix.Sockaddr) {
	t.Helper()
	buf := make([]byte, 64)
	oob := make([]byte, unix.CmsgSpace(4*4))
	n, oobn, _, from, err := unix.Recvmsg(sock, buf, oob, 0)
	if err != nil {
		t.Fatalf("recvmsg: %v", err)
	}
	if n != 4 {
		t.Fatalf("message is %d bytes (% x), want 4", n, buf[:n])
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) != 1 {
		t.Fatalf("control messages: %v %v", msgs, err)
	}
	fds, err := unix.ParseUnixRights(&msgs[0])
	if err != nil || len(fds) != 1 {
		t.Fatalf("SCM_RIGHTS: %v %v", fds, err)
	}
	t.Cleanup(func() { unix.Close(fds[0]) })
	return int(binary.LittleEndian.Uint32(buf)), fds[0], from
}

func sameFile(t *testing.T, fd int, f *os.File) {
	t.Helper()
	var a, b unix.Stat_t
	if err := unix.Fstat(fd, &a); err != nil {
		t.Fatal(err)
	}
	if err := unix.Fstat(int(f.Fd()), &b); err != nil {
		t.Fatal(err)
	}
	if a.Dev != b.Dev || a.Ino != b.Ino || a.Rdev != b.Rdev {
		t.Errorf("received fd is dev %d ino %d rdev %d, want %s: dev %d ino %d rdev %d", a.Dev, a.Ino, a.Rdev, f.Name(), b.Dev, b.Ino, b.Rdev)
	}
}

func TestSendSocketpair(t *testing.T) {
	sp, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(sp[0])
	defer unix.Close(sp[1])
	f, err := os.Create(filepath.Join(t.TempDir(), "tty"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := Send(sp[0], 4321, int(f.Fd())); err != nil {
		t.Fatal(err)
	}
	pid, fd, _ := recvHandoff(t, sp[1])
	if pid != 4321 {
		t.Errorf("pid %d, want 4321", pid)
	}
	sameFile(t, fd, f)
	// A closed peer is an error, not a silent success.
	unix.Close(sp[1])
	if err := Send(sp[0], 1, int(f.Fd())); err == nil || !strings.HasPrefix(err.Error(), "sendmsg: ") {
		t.Errorf("send to a closed peer: %v", err)
	}
}

// startHelper runs helper in port mode: fd 3 the given socket end, stdin
// the file tty. It returns the running command (killed at cleanup).
func startHelper(t *testing.T, helper string, sock *os.File, tty *os.File, args ...string) (*exec.Cmd, *bytes.Buffer) {
	t.Helper()
	cmd := exec.Command(helper, args...)
	cmd.Stdin = tty
	if isTTY(tty) {
		// As under telnetd: the pty is the helper's controlling terminal.
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	}
	var errb bytes.Buffer
	cmd.Stderr = &errb
	if sock != nil {
		cmd.ExtraFiles = []*os.File{sock}
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return cmd, &errb
}

func isTTY(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// openPty returns the master and slave of a new host pty.
func openPty(t *testing.T) (master, slave *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		testutil.Skip(t, "no /dev/ptmx: %v", err)
	}
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close(); s.Close() })
	return m, s
}

func socketpairFiles(t *testing.T) (*os.File, *os.File) {
	t.Helper()
	sp, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	a, b := os.NewFile(uintptr(sp[0]), "kernel"), os.NewFile(uintptr(sp[1]), "helper")
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

// TestPortMode runs our binary and Debian's the way in.telnetd does (a pty
// on stdin, the kernel's socket on fd 3): each sends its own pid and a
// descriptor for the same pty, then stays alive until killed.
func TestPortMode(t *testing.T) {
	helpers := map[string]string{"ours": testutil.Bin(t, "port-helper")}
	if _, err := os.Stat(cHelper); err == nil {
		helpers["debian"] = cHelper
	}
	for name, helper := range helpers {
		t.Run(name, func(t *testing.T) {
			_, slave := openPty(t)
			kern, end := socketpairFiles(t)
			cmd, errb := startHelper(t, helper, end, slave)
			end.Close()
			pid, fd, _ := recvHandoff(t, int(kern.Fd()))
			if pid != cmd.Process.Pid {
				t.Errorf("pid %d, want the helper's %d", pid, cmd.Process.Pid)
			}
			sameFile(t, fd, slave)
			if errb.Len() != 0 {
				t.Errorf("stderr %q, want nothing with a tty on stdin", errb)
			}
			time.Sleep(200 * time.Millisecond)
			if err := unix.Kill(cmd.Process.Pid, 0); err != nil {
				t.Errorf("helper gone after the handoff: %v", err)
			}
			if st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", cmd.Process.Pid)); err == nil {
				for _, l := range strings.Split(string(st), "\n") {
					if strings.HasPrefix(l, "VmRSS:") || strings.HasPrefix(l, "Threads:") {
						t.Logf("%s while waiting: %s", name, strings.Join(strings.Fields(l), " "))
					}
				}
			}
			// SIGHUP is ignored: the helper lives until the kernel kills it.
			unix.Kill(cmd.Process.Pid, unix.SIGHUP)
			time.Sleep(100 * time.Millisecond)
			if st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", cmd.Process.Pid)); err != nil || strings.Contains(string(st), ") Z ") {
				t.Errorf("helper died of SIGHUP")
			}
		})
	}
}

// TestPortModeNotATTY: with a non-tty stdin both helpers warn on stderr
// with the same text and still hand the descriptor over.
func TestPortModeNotATTY(t *testing.T) {
	want := "TIOCNOTTY failed in port-helper, check UML's exec call for xterm or telnetd: Inappropriate ioctl for device\n"
	f, err := os.Create(filepath.Join(t.TempDir(), "notatty"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	kern, end := socketpairFiles(t)
	_, errb := startHelper(t, testutil.Bin(t, "port-helper"), end, f)
	end.Close()
	_, fd, _ := recvHandoff(t, int(kern.Fd()))
	sameFile(t, fd, f)
	time.Sleep(100 * time.Millisecond)
	if errb.String() != want {
		t.Errorf("stderr %q, want %q", errb, want)
	}
}

// TestPortModeNoSocket: fd 3 is not a socket. The C helper ignores the
// failed sendmsg and pauses forever; ours reports it and exits 1.
func TestPortModeNoSocket(t *testing.T) {
	_, slave := openPty(t)
	cmd := exec.Command(testutil.Bin(t, "port-helper"))
	cmd.Stdin = slave
	cmd.ExtraFiles = []*os.File{slave} // fd 3: a tty, not a socket
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	r := testutil.RunCmd(t, cmd, 10*time.Second)
	if r.Code != 1 || r.Stderr != "sendmsg: Socket operation on non-socket\n" {
		t.Errorf("got %+v", r)
	}
}

// TestXtermMode: -uml-socket <path> sends the handoff as a datagram from a
// socket bound to the abstract name "\0%5d" of the helper's pid, exactly
// as Debian's helper does.
func TestXtermMode(t *testing.T) {
	helpers := map[string]string{"ours": testutil.Bin(t, "port-helper")}
	if _, err := os.Stat(cHelper); err == nil {
		helpers["debian"] = cHelper
	}
	for name, helper := range helpers {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "xterm-pipe")
			sock, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer unix.Close(sock)
			if err := unix.Bind(sock, &unix.SockaddrUnix{Name: path}); err != nil {
				t.Fatal(err)
			}
			_, slave := openPty(t)
			cmd, _ := startHelper(t, helper, nil, slave, "-uml-socket", path)
			// Peek at the sender's raw address first: Go's parsed
			// form cuts an abstract name at its first NUL.
			var sa unix.RawSockaddrUnix
			hdr := unix.Msghdr{Name: (*byte)(unsafe.Pointer(&sa)), Namelen: uint32(unsafe.Sizeof(sa))}
			if _, _, e := unix.Syscall(unix.SYS_RECVMSG, uintptr(sock), uintptr(unsafe.Pointer(&hdr)), unix.MSG_PEEK); e != 0 {
				t.Fatal(e)
			}
			pid, fd, _ := recvHandoff(t, sock)
			if pid != cmd.Process.Pid {
				t.Errorf("pid %d, want %d", pid, cmd.Process.Pid)
			}
			sameFile(t, fd, slave)
			// The bind covers all 108 bytes of sun_path: "\0%5d" then NULs.
			want := make([]byte, 108)
			copy(want, AbstractName(cmd.Process.Pid))
			got := make([]byte, 108)
			for i, c := range sa.Path {
				got[i] = byte(c)
			}
			if hdr.Namelen != 110 || !bytes.Equal(got, want) {
				t.Errorf("sender address len %d %q, want len 110 %q", hdr.Namelen, got, want)
			}
		})
	}
}

// TestErrors compares failures with Debian's helper where it has one.
func TestErrors(t *testing.T) {
	ours := testutil.Bin(t, "port-helper")
	missing := filepath.Join(t.TempDir(), "nosock")
	for _, tc := range []struct {
		args   []string
		code   int
		stderr string
		cToo   bool
	}{
		{[]string{"-uml-socket", missing}, 1, "connect: No such file or directory\n", true},
		{[]string{"-uml-socket", strings.Repeat("x", 200)}, 1, "connect: File name too long\n", false},
		{[]string{"-uml-socket"}, 2, "port-helper: usage: port-helper [-uml-socket <socket>] (it is run by the UML kernel)\n", false},
		{[]string{"bogus"}, 2, "port-helper: usage: port-helper [-uml-socket <socket>] (it is run by the UML kernel)\n", false},
	} {
		devnull, _ := os.Open(os.DevNull)
		cmd := exec.Command(ours, tc.args...)
		cmd.Stdin = devnull
		r := testutil.RunCmd(t, cmd, 10*time.Second)
		devnull.Close()
		if r.Code != tc.code || r.Stderr != tc.stderr || r.Stdout != "" {
			t.Errorf("ours %q: %+v, want rc %d stderr %q", tc.args, r, tc.code, tc.stderr)
		}
		if tc.cToo {
			if c := testutil.RunC(t, cHelper, tc.args...); c.Code != r.Code || c.Stderr != r.Stderr {
				t.Errorf("debian %q: %+v, ours %+v", tc.args, c, r)
			}
		}
	}
	for _, a := range []string{"--help", "-h", "--version"} {
		r := testutil.RunIn(Run, "port-helper", a)
		if r.Code != 0 || r.Stdout == "" || r.Stderr != "" {
			t.Errorf("%s: %+v", a, r)
		}
	}
}
