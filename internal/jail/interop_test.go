package jail

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/umltools/umltools/internal/testutil"
	"golang.org/x/sys/unix"
)

// guestInitC is the jailed kernel's init (pid 1, static): it reports what
// the jail lets the kernel do on its hostfs root, which is the jail
// directory, then powers off.
const guestInitC = `
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <sys/reboot.h>
static void try(const char *p) {
	int fd = open(p, O_WRONLY | O_CREAT | O_EXCL, 0644);
	if (fd < 0) { printf("JAIL-CREATE %s: %s\n", p, strerror(errno)); return; }
	write(fd, "written by the jailed guest\n", 28);
	close(fd);
	printf("JAIL-CREATE %s: ok\n", p);
}
int main(void) {
	printf("JAIL-INIT-MARKER pid=%d\n", (int)getpid());
	try("/out/created");
	try("/rootonly/created");
	printf("JAIL-HOST-PASSWD %s\n", access("/etc/passwd", F_OK) ? "absent" : "present");
	fflush(stdout);
	sync();
	reboot(RB_POWER_OFF);
	return 0;
}
`

// copyTo copies the host file src to dir+src (same path inside the jail).
func copyTo(t *testing.T, dir, src string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(dir, src)
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, 0o755); err != nil {
		t.Fatal(err)
	}
}

// libsOf lists the shared objects ldd names for bin (nothing for a
// static binary).
func libsOf(t *testing.T, bin string) []string {
	t.Helper()
	out, _ := exec.Command("ldd", bin).Output()
	var libs []string
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		for _, f := range strings.Fields(sc.Text()) {
			if strings.HasPrefix(f, "/") {
				libs = append(libs, f)
			}
		}
	}
	return libs
}

// TestJailedKernel is issue 15's jail_uml acceptance: our jail_uml runs
// the C kernel chrooted as nobody in a directory holding only the kernel,
// its libraries, the xstate wrapper when this host needs it, and a static
// init. The kernel boots a hostfs root (the jail), init prints its
// marker, and the host side shows the kernel ran as nobody inside the jail:
// it could create a file in a directory nobody owns, not in one root owns,
// and saw no /etc/passwd.
func TestJailedKernel(t *testing.T) {
	testutil.NeedRoot(t)
	kern := testutil.NeedCmd(t, "linux.uml")[0]
	init := testutil.StaticC(t, "jailinit", guestInitC)
	nobody, ok, err := Resolve("nobody", System())
	if !ok || err != nil {
		testutil.Skip(t, "no user nobody in /etc/passwd")
	}
	jail := t.TempDir()
	os.Chmod(jail, 0o755)
	copyTo(t, jail, kern)
	for _, l := range libsOf(t, kern) {
		copyTo(t, jail, l)
	}
	b, err := os.ReadFile(init)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(jail, "init"), b, 0o755)
	for _, d := range []struct {
		name string
		mode os.FileMode
		uid  int
	}{{"dev", 0o755, 0}, {"tmp", 0o1777, 0}, {"uml", 0o700, nobody.UID}, {"out", 0o755, nobody.UID}, {"rootonly", 0o755, 0}} {
		p := filepath.Join(jail, d.name)
		if err := os.Mkdir(p, d.mode); err != nil {
			t.Fatal(err)
		}
		os.Chmod(p, d.mode)
		os.Chown(p, d.uid, nobody.GID)
	}
	if err := unix.Mknod(filepath.Join(jail, "dev", "console"), unix.S_IFCHR|0o600, int(unix.Mkdev(5, 1))); err != nil {
		t.Fatal(err)
	}
	jk := filepath.Join("/", filepath.Base(kern)) // the kernel's path inside the jail
	if err := os.Rename(filepath.Join(jail, kern), filepath.Join(jail, jk)); err != nil {
		t.Fatal(err)
	}
	testutil.UMLUnderWorkaround(kern) // decide about the wrapper with the host's kernel first
	argv := testutil.UMLArgv(t, jail, jk, "mem=64M", "rootfstype=hostfs", "rootflags=/", "rw", "init=/init",
		"con0=fd:0,fd:1", "con=null", "ssl=null", "umid=jailed", "uml_dir=/uml/")
	// UMLArgv's words: environment assignments, then the program (a host
	// path under the jail for the wrapper), then its arguments.
	var env []string
	for len(argv) > 0 && strings.Contains(argv[0], "=") && !strings.HasPrefix(argv[0], "/") {
		env, argv = append(env, argv[0]), argv[1:]
	}
	if rel, err := filepath.Rel(jail, argv[0]); err == nil && !strings.HasPrefix(rel, "..") {
		argv[0] = "/" + rel
	}
	boot := func() testutil.Result {
		os.Remove(filepath.Join(jail, "out", "created"))
		cmd := exec.Command(testutil.Bin(t, "jail_uml"), append([]string{jail, "nobody"}, argv...)...)
		cmd.Env = append(os.Environ(), env...)
		devnull, _ := os.Open(os.DevNull)
		defer devnull.Close()
		cmd.Stdin = devnull // a pipe at EOF hangs the C kernel
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		defer func() {
			if cmd.Process != nil {
				syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			}
		}()
		return testutil.RunCmd(t, cmd, 90*time.Second)
	}
	t.Logf("jail_uml %s nobody %q (env %q)", jail, argv, env)
	r := boot()
	if r.Code == 128+int(syscall.SIGABRT) {
		// The 6.1 C kernel now and then aborts on its own under load
		// (see testutil.UML.bootAgain); one more boot, not more.
		t.Logf("the jailed kernel aborted (rc %d), booting it again; its output:\n%s", r.Code, r.Stdout+r.Stderr)
		r = boot()
	}
	out := r.Stdout + r.Stderr
	if !strings.Contains(out, "JAIL-INIT-MARKER pid=1") {
		testutil.SkipIfUnusableUML(t, out)
		t.Fatalf("no init marker from the jailed kernel (rc %d):\n%s", r.Code, out)
	}
	for _, want := range []string{
		"JAIL-CREATE /out/created: ok",
		"JAIL-CREATE /rootonly/created: Permission denied",
		"JAIL-HOST-PASSWD absent",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("guest output lacks %q:\n%s", want, out)
		}
	}
	var st unix.Stat_t
	if err := unix.Stat(filepath.Join(jail, "out", "created"), &st); err != nil {
		t.Fatalf("the guest's file is not in the jail on the host: %v", err)
	} else if int(st.Uid) != nobody.UID || int(st.Gid) != nobody.GID {
		t.Errorf("the guest's file is owned by %d:%d, want nobody %d:%d: the kernel did not run as nobody", st.Uid, st.Gid, nobody.UID, nobody.GID)
	}
	if r.Code != 0 {
		t.Errorf("jailed kernel exited %d after poweroff:\n%s", r.Code, out)
	}
}
