package main

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/umltools/umltools/internal/testutil"
)

// Issue 12: Debian with sysvinit boots to a login prompt on the engine,
// and shuts down cleanly (seed 004's central scene).

// sysvMachine is an engine booted on a host pty (its console), with its
// boot log apart.
type sysvMachine struct {
	pty  *testutil.Pty
	cmd  *exec.Cmd
	log  *testutil.SyncBuffer
	dir  string // uml_dir
	done chan struct{}
}

func bootOnPty(t *testing.T, args ...string) *sysvMachine {
	t.Helper()
	pty, err := testutil.OpenPty()
	if err != nil {
		testutil.Skip(t, "no host pty: %v", err)
	}
	t.Cleanup(func() { pty.Close() })
	m := &sysvMachine{pty: pty, log: &testutil.SyncBuffer{}, dir: t.TempDir(), done: make(chan struct{})}
	m.cmd = exec.Command(testutil.Bin(t, "linux"), append([]string{"uml_dir=" + m.dir + "/"}, args...)...)
	m.cmd.Env = append(os.Environ(), "TERM=vt100")
	m.cmd.Stderr = m.log
	if err := pty.Start(m.cmd); err != nil {
		t.Fatal(err)
	}
	go func() { m.cmd.Wait(); close(m.done) }()
	t.Cleanup(func() {
		select {
		case <-m.done:
		default:
			// A machine still up when its test failed is asked where
			// it is stuck first.
			if t.Failed() {
				t.Logf("%s", testutil.Quit(m.cmd.Process))
				select {
				case <-m.done:
				case <-time.After(5 * time.Second):
				}
			}
		}
		m.cmd.Process.Kill()
		<-m.done
		if t.Failed() {
			log, dump := m.log.String(), ""
			if i := strings.Index(log, "SIGQUIT: quit"); i >= 0 {
				log, dump = log[:i], log[i:]
			}
			t.Logf("boot log:\n%s", lastLines(log, 30))
			if dump != "" {
				t.Logf("the engine's goroutines:\n%s", dump)
			}
		}
	})
	return m
}

// do sends a line and waits for want.
func (m *sysvMachine) do(t *testing.T, line, want string) {
	t.Helper()
	m.pty.Write([]byte(line + "\n"))
	if want != "" {
		if err := m.pty.Expect(want, 30*time.Second); err != nil {
			t.Fatalf("after %q: %v", line, err)
		}
	}
}

// login waits for the prompt and logs in as root (no password).
func (m *sysvMachine) login(t *testing.T, timeout time.Duration) {
	t.Helper()
	if err := m.pty.Expect("login: ", timeout); err != nil {
		t.Fatalf("login prompt: %v", err)
	}
	m.do(t, "root", "# ")
}

// wait waits for the engine to exit and returns its status.
func (m *sysvMachine) wait(t *testing.T, timeout time.Duration) int {
	t.Helper()
	select {
	case <-m.done:
	case <-time.After(timeout):
		t.Fatalf("the engine still runs %v later", timeout)
	}
	return m.cmd.ProcessState.ExitCode()
}

// TestSysvinitLogin is acceptance 1 (and 4's reboot of the whole system):
// boot to login:, log in as root, look around, write a file, reboot, find
// the file, power off; the engine exits 0 and the image is clean.
func TestSysvinitLogin(t *testing.T) {
	img := testutil.SysvinitImage(t)
	m := bootOnPty(t, "ubd0="+img, "umid=sysv", "con0=fd:0,fd:1", "con=null")
	start := time.Now()
	m.login(t, 90*time.Second)
	t.Logf("launch to root shell: %v", time.Since(start).Round(time.Millisecond))
	m.do(t, "runlevel", "N 2")
	m.do(t, "hostname", "uml\r\n")
	m.do(t, "df /", "/dev/ubda")
	m.do(t, "mount", "/dev/ubda on / type ext4 (rw")
	m.do(t, "tty", "/dev/console")
	m.do(t, "ps -o comm= -p 1", "init\r\n")
	// A pty of its own (devpts): script(1) runs a shell on one.
	m.do(t, "script -qc 'tty; echo in-script-$((2+2))' /dev/null", "/dev/pts/")
	if err := m.pty.Expect("in-script-4", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := m.pty.Expect("# ", 10*time.Second); err != nil { // script has let go of the console
		t.Fatal(err)
	}
	m.do(t, "echo sysv-was-$((6*7)) > /root/proof; sync", "# ")
	m.do(t, "reboot", "Will now restart")
	m.login(t, 90*time.Second)
	m.do(t, "cat /root/proof", "sysv-was-42")
	m.do(t, "poweroff", "")
	if code := m.wait(t, 60*time.Second); code != 0 {
		t.Errorf("exit %d after poweroff", code)
	}
	if n := strings.Count(m.log.String(), "Run /sbin/init as init process"); n != 2 {
		t.Errorf("init ran %d times, want 2 (boot, reboot)", n)
	}
	fsckClean(t, img)
	if got := debugfs(t, img, "cat /root/proof"); !strings.Contains(got, "sysv-was-42") {
		t.Errorf("/root/proof in the image: %q", got)
	}
	if ents, _ := os.ReadDir(m.dir); len(ents) != 0 {
		t.Errorf("machine directory left: %v", ents)
	}
}

// withGetty adds a getty on /dev/tty1 (con1) to the image's inittab.
func withGetty(t *testing.T, img string) {
	t.Helper()
	inittab := debugfs(t, img, "cat /etc/inittab")
	p := filepath.Join(t.TempDir(), "inittab")
	os.WriteFile(p, []byte(inittab+"T1:2345:respawn:/sbin/getty -L tty1 115200 vt100\n"), 0o644)
	testutil.AddFiles(t, img, map[string]string{"/etc/inittab": p})
}

// TestSysvinitPts is acceptance 2: con1=pts names its host pty in the
// log, and a program attached to it gets a login prompt.
func TestSysvinitPts(t *testing.T) {
	img := testutil.SysvinitImage(t)
	withGetty(t, img)
	m := bootOnPty(t, "ubd0="+img, "umid=sysvpts", "con0=fd:0,fd:1", "con=null", "con1=pts")
	re := regexp.MustCompile(`Virtual console 1 assigned device '(/dev/pts/[0-9]+)'`)
	var dev string
	for deadline := time.Now().Add(30 * time.Second); dev == "" && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if s := re.FindStringSubmatch(m.log.String()); s != nil {
			dev = s[1]
		}
	}
	if dev == "" {
		t.Fatal("no 'Virtual console 1 assigned device' line in the log")
	}
	f, err := os.OpenFile(dev, os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	loginThrough(t, m, img, f, dev, "\n")
}

// loginThrough logs in as root on a line reached through c (a pty or a
// socket; eol is what Enter sends), checks the shell is on /dev/tty1,
// and powers the machine off from there.
func loginThrough(t *testing.T, m *sysvMachine, img string, c interface {
	Read([]byte) (int, error)
	Write([]byte) (int, error)
	SetReadDeadline(time.Time) error
}, name, eol string) {
	t.Helper()
	if out, err := readUntil(c, "login: ", 90*time.Second); err != nil {
		t.Fatalf("on %s: %v (read %q)", name, err, out)
	}
	c.Write([]byte("root" + eol))
	c.Write([]byte("tty; echo on-$((1+1))" + eol))
	if out, err := readUntil(c, "on-2", 30*time.Second); err != nil || !strings.Contains(out, "/dev/tty1") {
		t.Fatalf("shell on %s: %v (read %q)", name, err, out)
	}
	c.Write([]byte("poweroff" + eol))
	if code := m.wait(t, 60*time.Second); code != 0 {
		t.Errorf("exit %d after poweroff", code)
	}
	fsckClean(t, img)
}

// TestSysvinitPort is acceptance 3: con1=port:N, and a TCP client on
// loopback gets the login prompt (no in.telnetd needed).
func TestSysvinitPort(t *testing.T) {
	img := testutil.SysvinitImage(t)
	withGetty(t, img)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	m := bootOnPty(t, "ubd0="+img, "umid=sysvport", "con0=fd:0,fd:1", "con=null", fmt.Sprintf("con1=port:%d", port))
	var c net.Conn
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if c, err = net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
			break
		}
	}
	if c == nil {
		t.Fatalf("no listener on port %d: %v", port, err)
	}
	// Log in and leave without logging out: the line hangs up, and the
	// next client gets a new login prompt, not the shell left behind.
	if out, err := readUntil(c, "login: ", 90*time.Second); err != nil {
		t.Fatalf("port %d: %v (read %q)", port, err, out)
	}
	c.Write([]byte("root\r\necho first-$((3+4))\r\n"))
	if out, err := readUntil(c, "first-7", 30*time.Second); err != nil {
		t.Fatalf("port %d: %v (read %q)", port, err, out)
	}
	c.Close()
	if c, err = net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port)); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	loginThrough(t, m, img, c, fmt.Sprintf("port %d", port), "\r\n")
}

// TestSysvinitSingleUser is acceptance 4: init=/bin/sh gives a shell; a
// reboot inside boots again.
func TestSysvinitSingleUser(t *testing.T) {
	img := testutil.SysvinitImage(t)
	m := bootOnPty(t, "ubd0="+img, "umid=sysvsh", "con0=fd:0,fd:1", "con=null", "init=/bin/sh")
	m.do(t, "echo single-$((3*3))", "single-9")
	m.do(t, "echo was-$((5*5)) > /single; sync; reboot -f", "")
	for deadline := time.Now().Add(60 * time.Second); strings.Count(m.log.String(), "Run /bin/sh as init process") < 2; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no second boot after reboot -f")
		}
	}
	m.do(t, "cat /single; echo second-$((4*4))", "was-25")
	if err := m.pty.Expect("second-16", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	m.do(t, "poweroff -f", "")
	if code := m.wait(t, 60*time.Second); code != 0 {
		t.Errorf("exit %d after poweroff -f", code)
	}
	fsckClean(t, img)
}

// readUntil reads r until want appears.
func readUntil(r interface {
	Read([]byte) (int, error)
	SetReadDeadline(time.Time) error
}, want string, timeout time.Duration) (string, error) {
	var out strings.Builder
	br := bufio.NewReader(r)
	deadline := time.Now().Add(timeout)
	buf := make([]byte, 4096)
	for !strings.Contains(out.String(), want) {
		if time.Now().After(deadline) {
			return out.String(), fmt.Errorf("no %q within %v", want, timeout)
		}
		r.SetReadDeadline(time.Now().Add(time.Second))
		n, err := br.Read(buf)
		out.Write(buf[:n])
		if err != nil && !os.IsTimeout(err) {
			return out.String(), err
		}
	}
	return out.String(), nil
}

// TestSysvinitFstabDisk: a second disk in /etc/fstab (/dev/ubdb /data
// ext4, fsck pass 2) is checked by checkfs, mounted by mountall, written,
// and unmounted cleanly at poweroff.
func TestSysvinitFstabDisk(t *testing.T) {
	img := testutil.SysvinitImage(t)
	tree := t.TempDir()
	os.WriteFile(filepath.Join(tree, "hello"), []byte("from-the-data-disk\n"), 0o644)
	data := testutil.MkfsImage(t, tree, "16M", "-t", "ext4")
	fstab := debugfs(t, img, "cat /etc/fstab") + "/dev/ubdb\t/data\text4\tdefaults\t0\t2\n"
	p := filepath.Join(t.TempDir(), "fstab")
	os.WriteFile(p, []byte(fstab), 0o644)
	testutil.AddFiles(t, img, map[string]string{"/etc/fstab": p})
	if out, err := exec.Command("debugfs", "-w", "-R", "mkdir /data", img).CombinedOutput(); err != nil {
		t.Fatalf("debugfs mkdir /data: %v\n%s", err, out)
	}
	m := bootOnPty(t, "ubd0="+img, "ubd1="+data, "umid=sysvdata", "con0=fd:0,fd:1", "con=null")
	m.login(t, 90*time.Second)
	m.do(t, "df /data | tail -1", "/dev/ubdb")
	m.do(t, "cat /data/hello", "from-the-data-disk")
	m.do(t, "lsblk -no NAME,SIZE,MOUNTPOINTS /dev/ubdb", "ubdb") // /sys/dev/block, /sys/block
	if err := m.pty.Expect("16M /data", 10*time.Second); err != nil {
		t.Fatalf("lsblk: %v", err)
	}
	m.do(t, "echo written-in-guest > /data/new", "# ")
	m.do(t, "poweroff", "")
	if code := m.wait(t, 60*time.Second); code != 0 {
		t.Errorf("exit %d after poweroff", code)
	}
	if !strings.Contains(m.log.String(), "EXT4-fs (ubdb): unmounting filesystem.") {
		t.Errorf("/data was not unmounted by the guest's shutdown")
	}
	fsckClean(t, img)
	fsckClean(t, data)
	if got := debugfs(t, data, "cat /new"); !strings.Contains(got, "written-in-guest") {
		t.Errorf("/new on the data disk: %q", got)
	}
}
