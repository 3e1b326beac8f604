package main

import (
	"bytes"
	"crypto/md5"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/umltools/umltools/internal/testutil"
)

// run is one engine boot's result.
type run struct {
	stdout, stderr string
	code           int
}

// boot runs bin/linux with args (plus a private uml_dir=) and stdin, and
// waits at most timeout.
func boot(t *testing.T, stdin string, timeout time.Duration, args ...string) run {
	t.Helper()
	dir := t.TempDir()
	cmd := exec.Command(testutil.Bin(t, "linux"), append([]string{"uml_dir=" + dir + "/"}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	res := testutil.RunCmd(t, cmd, timeout)
	r := run{stdout: strings.ReplaceAll(res.Stdout, "\r\n", "\n"), stderr: res.Stderr, code: res.Code}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("umid directory left behind: %v", ents)
	}
	return r
}

// imageWithC returns a copy of the default image with the C program src,
// built static, as /bin/<name>.
func imageWithC(t *testing.T, name, src string) string {
	t.Helper()
	img := testutil.DefaultImage(t)
	testutil.AddFiles(t, img, map[string]string{"/bin/" + name: testutil.StaticC(t, name, src)})
	return img
}

// lines returns the non-empty output lines.
func lines(s string) []string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			out = append(out, l)
		}
	}
	return out
}

func hasLine(s, want string) bool {
	for _, l := range lines(s) {
		if l == want {
			return true
		}
	}
	return false
}

// fsckClean checks that the image is untouched and consistent.
func fsckClean(t *testing.T, img string) {
	t.Helper()
	e2fsck := testutil.NeedCmd(t, "e2fsck")[0]
	if b, err := exec.Command(e2fsck, "-fn", img).CombinedOutput(); err != nil {
		t.Errorf("e2fsck -fn %s: %v\n%s", img, err, b)
	}
}

func debugfs(t *testing.T, img, req string) string {
	t.Helper()
	d := testutil.NeedCmd(t, "debugfs")[0]
	b, err := exec.Command(d, "-R", req, img).Output()
	if err != nil {
		t.Fatalf("debugfs -R %q: %v", req, err)
	}
	return string(b)
}

// Acceptance 1: a piped shell session; the guest's count of /bin matches
// debugfs, and the shell's exit status is the engine's.
func TestPipedShell(t *testing.T) {
	img := testutil.DefaultImage(t)
	r := boot(t, "echo ok\nls /bin | wc -l\nexit 3\n", time.Minute, "ubd0="+img, "init=/bin/sh", "con0=fd:0,fd:1", "con=null")
	want := 0
	for _, l := range lines(debugfs(t, img, "ls -l /bin")) {
		if f := strings.Fields(l); len(f) > 0 && f[len(f)-1] != "." && f[len(f)-1] != ".." {
			want++
		}
	}
	if want < 10 {
		t.Fatalf("debugfs lists only %d entries in /bin", want)
	}
	if !hasLine(r.stdout, "ok") || !hasLine(r.stdout, strconv.Itoa(want)) {
		t.Errorf("stdout lacks \"ok\" and %d:\n%s", want, r.stdout)
	}
	if r.code != 3 {
		t.Errorf("exit status %d, want 3; stderr:\n%s", r.code, r.stderr)
	}
	if !strings.Contains(r.stderr, "Run /bin/sh as init process") {
		t.Errorf("no boot log on stderr:\n%s", r.stderr)
	}
	fsckClean(t, img)
}

// Acceptance 2: init's argv and environment from the command line.
func TestInitArgs(t *testing.T) {
	img := testutil.DefaultImage(t)
	script := "echo $$; mount -t proc proc /proc; cat /proc/cmdline; grep -c root /etc/passwd; echo FOO=$FOO; echo args=$#"
	args := []string{"ubd0=" + img, "con0=fd:0,fd:1", "con=null", "quiet", "FOO=bar", "init=/bin/sh", "--", "-c", script}
	r := boot(t, "", time.Minute, args...)
	got := lines(r.stdout)
	passwd := debugfs(t, img, "cat /etc/passwd")
	nroot := 0
	for _, l := range strings.Split(passwd, "\n") {
		if strings.Contains(l, "root") {
			nroot++
		}
	}
	wantCmdline := "uml_dir=" // the rest is checked below
	if len(got) < 5 || got[0] != "1" || !strings.HasPrefix(got[1], wantCmdline) || got[2] != strconv.Itoa(nroot) || got[3] != "FOO=bar" {
		t.Fatalf("guest printed %q, want 1, the command line, %d, FOO=bar", got, nroot)
	}
	if !strings.HasSuffix(got[1], "-- -c "+script+" root=98:0 console=tty0") || !strings.Contains(got[1], " FOO=bar init=/bin/sh ") {
		t.Errorf("/proc/cmdline = %q", got[1])
	}
	// "-c script" reached sh as two arguments: $0 is unset, $# is 0.
	if got[4] != "args=0" {
		t.Errorf("got %q, want args=0", got[4])
	}
	if r.code != 0 {
		t.Errorf("exit status %d; stderr:\n%s", r.code, r.stderr)
	}
	if strings.Contains(r.stderr, "Linux version") || !strings.Contains(r.stderr, "Attempted to kill init") {
		t.Errorf("quiet boot log:\n%s", r.stderr)
	}
	// A network interface whose transport is not implemented yet is
	// parsed, and skipped with one line.
	r = boot(t, "", time.Minute, "ubd0="+img, "con0=fd:0,fd:1", "con=null", "quiet", "eth0=pcap,lo", "init=/bin/sh", "--", "-c", "echo up")
	if r.code != 0 || !hasLine(r.stdout, "up") || strings.Count(r.stderr, "eth0: the pcap transport is not implemented") != 1 {
		t.Errorf("eth0=pcap: exit %d, stdout %q, stderr:\n%s", r.code, r.stdout, r.stderr)
	}
}

// Acceptance 3: every file read in the guest equals the image's content.
func TestReadEveryFile(t *testing.T) {
	img := testutil.DefaultImage(t)
	r := boot(t, "", 2*time.Minute, "ubd0="+img, "con0=fd:0,fd:1", "con=null", "quiet", "init=/bin/sh", "--", "-c",
		"find / -xdev -type f | xargs md5sum")
	guest := map[string]string{}
	for _, l := range lines(r.stdout) {
		f := strings.Fields(l)
		if len(f) == 2 {
			guest[f[1]] = f[0]
		}
	}
	tree := t.TempDir()
	testutil.NeedCmd(t, "debugfs")
	if b, err := exec.Command("debugfs", "-R", "rdump / "+tree, img).CombinedOutput(); err != nil {
		t.Fatalf("debugfs rdump: %v\n%s", err, b)
	}
	host := map[string]string{}
	filepath.WalkDir(tree, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			t.Errorf("reading %s: %v", p, err)
			return nil
		}
		sum := md5.Sum(b)
		host[strings.TrimPrefix(p, tree)] = hex.EncodeToString(sum[:])
		return nil
	})
	if len(host) < 10 {
		t.Fatalf("only %d files in the image", len(host))
	}
	var bad []string
	for p, h := range host {
		if guest[p] != h {
			bad = append(bad, fmt.Sprintf("%s: guest %q, host %s", p, guest[p], h))
		}
	}
	for p := range guest {
		if _, ok := host[p]; !ok {
			bad = append(bad, p+": not in the image")
		}
	}
	sort.Strings(bad)
	if len(bad) > 0 {
		t.Errorf("%d of %d files differ:\n%s", len(bad), len(host), strings.Join(bad, "\n"))
	}
	fsckClean(t, img)
}

// Acceptance 4: signals, pipelines, poweroff and the host lock.
func TestProcesses(t *testing.T) {
	img := testutil.DefaultImage(t)
	r := boot(t, "", time.Minute, "ubd0="+img, "con0=fd:0,fd:1", "con=null", "quiet", "init=/bin/sh", "--", "-c",
		"sleep 10 & kill $!; wait $!; echo status=$?; echo a b c d e | tr a-e A-E | sed s/B/b/ | cat | wc -w; poweroff -f; echo not-reached")
	if !hasLine(r.stdout, "status=143") || !hasLine(r.stdout, "5") || strings.Contains(r.stdout, "not-reached") {
		t.Errorf("stdout:\n%s", r.stdout)
	}
	if r.code != 0 {
		t.Errorf("poweroff -f: exit status %d, want 0; stderr:\n%s", r.code, r.stderr)
	}

	// A second machine on the same image is refused by the host lock.
	dir := t.TempDir()
	first := exec.Command(testutil.Bin(t, "linux"), "uml_dir="+dir+"/", "ubd0="+img, "con0=fd:0,fd:1", "con=null", "quiet",
		"init=/bin/sh", "--", "-c", "echo up; sleep 20")
	pr, pw, _ := os.Pipe()
	first.Stdout = pw
	if err := first.Start(); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	defer func() { first.Process.Signal(syscall.SIGTERM); first.Wait() }()
	buf := make([]byte, 64)
	if n, _ := pr.Read(buf); !strings.Contains(string(buf[:n]), "up") {
		t.Fatalf("first machine printed %q", buf[:n])
	}
	r = boot(t, "", time.Minute, "ubd0="+img, "con0=fd:0,fd:1", "con=null", "init=/bin/sh", "--", "-c", "echo second")
	if r.code == 0 || strings.Contains(r.stdout, "second") || !strings.Contains(r.stderr, "F_SETLK failed, file already locked by pid") {
		t.Errorf("second machine: exit %d, stdout %q, stderr:\n%s", r.code, r.stdout, r.stderr)
	}
	// SIGTERM shuts the first one down cleanly.
	first.Process.Signal(syscall.SIGTERM)
	if err := first.Wait(); first.ProcessState.ExitCode() != 128+int(syscall.SIGTERM) {
		t.Errorf("after SIGTERM: %v, exit %d", err, first.ProcessState.ExitCode())
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("umid directory left behind after SIGTERM: %v", ents)
	}
	fsckClean(t, img)
}

// hostileC tries what a guest must not be able to do and prints one line
// per attempt: name=result (the errno number, or ok).
const hostileC = `
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <dirent.h>
#include <sys/syscall.h>
#include <sys/socket.h>
#include <sys/un.h>

static void res(const char *name, long r) {
	if (r < 0) printf("%s=%d\n", name, errno); else printf("%s=ok\n", name);
}

int main(int argc, char **argv) {
	char p[256];
	snprintf(p, sizeof p, "/proc/%s/status", argv[1]);
	res("open_engine_proc", syscall(SYS_openat, AT_FDCWD, p, O_RDONLY));
	res("io_uring_setup", syscall(425, 1, p));
	res("ptrace", syscall(SYS_ptrace, 0, 0, 0, 0));
	res("bpf", syscall(321, 0, p, 0));
	res("clone3", syscall(435, p, 64));
	res("unshare", syscall(SYS_unshare, 0x00020000));
	res("process_vm_readv", syscall(SYS_process_vm_readv, 1, 0, 0, 0, 0, 0));
	res("open_host_shadow", syscall(SYS_openat, AT_FDCWD, "/etc/shadow", O_RDONLY));
	res("open_dotdot_escape", syscall(SYS_openat, AT_FDCWD, "/../../../../proc/self/root/etc/shadow", O_RDONLY));
	/* The guest's view of its own fds and exe: no host path. */
	char buf[4096];
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	while (d && (e = readdir(d))) {
		char l[300];
		snprintf(l, sizeof l, "/proc/self/fd/%s", e->d_name);
		ssize_t n = readlink(l, buf, sizeof buf - 1);
		if (n > 0) { buf[n] = 0; printf("fd %s -> %s\n", e->d_name, buf); }
	}
	ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
	if (n > 0) { buf[n] = 0; printf("exe -> %s\n", buf); }
	if (getcwd(buf, sizeof buf)) printf("cwd -> %s\n", buf);
	/* A unix socket to a host path reaches nothing. */
	int s = socket(AF_UNIX, SOCK_STREAM, 0);
	struct sockaddr_un sa = {AF_UNIX};
	strcpy(sa.sun_path, "/run/systemd/private");
	res("connect_host_socket", connect(s, (struct sockaddr *)&sa, sizeof sa));
	res("socket_inet", socket(AF_INET, SOCK_STREAM, 0) >= 0 ? 0 : -1);
	printf("done\n");
	return 0;
}
`

// Acceptance 5: hostile guest calls fail as the architecture says and the
// guest never sees a host path.
func TestHostileGuest(t *testing.T) {
	img := imageWithC(t, "hostile", hostileC)
	// The engine's own pid (the test's child) is not a guest pid; the
	// test process's is as good a host pid to try.
	eng := strconv.Itoa(os.Getpid())
	r := boot(t, "", time.Minute, "ubd0="+img, "con0=fd:0,fd:1", "con=null", "quiet", "init=/bin/sh", "--", "-c",
		"mount -t proc proc /proc; /bin/hostile "+eng)
	want := map[string]string{
		"open_engine_proc":    strconv.Itoa(int(syscall.ENOENT)),
		"io_uring_setup":      strconv.Itoa(int(syscall.ENOSYS)),
		"ptrace":              strconv.Itoa(int(syscall.EPERM)),
		"bpf":                 strconv.Itoa(int(syscall.EPERM)),
		"clone3":              strconv.Itoa(int(syscall.ENOSYS)),
		"unshare":             strconv.Itoa(int(syscall.EPERM)),
		"process_vm_readv":    strconv.Itoa(int(syscall.EPERM)),
		"open_host_shadow":    strconv.Itoa(int(syscall.ENOENT)),
		"open_dotdot_escape":  strconv.Itoa(int(syscall.ENOENT)),
		"connect_host_socket": strconv.Itoa(int(syscall.ENOENT)),
		"socket_inet":         "ok", // its own empty network namespace
	}
	got := map[string]string{}
	for _, l := range lines(r.stdout) {
		if k, v, ok := strings.Cut(l, "="); ok && !strings.Contains(k, " ") {
			got[k] = v
		}
		if strings.Contains(l, "/dev/shm") || strings.Contains(l, "/dev/pts") || strings.Contains(l, "memfd:") || strings.Contains(l, "/uml") {
			t.Errorf("host path visible in the guest: %q", l)
		}
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: got %q, want %q", k, got[k], v)
		}
	}
	if !hasLine(r.stdout, "exe -> /bin/hostile") || !hasLine(r.stdout, "cwd -> /") || !hasLine(r.stdout, "fd 0 -> /dev/console") || !hasLine(r.stdout, "done") {
		t.Errorf("guest output:\n%s", r.stdout)
	}
	fsckClean(t, img)
}

// The default init (busybox init, inittab, rcS) boots to a shell and
// powers off cleanly.
func TestBusyboxInit(t *testing.T) {
	img := testutil.DefaultImage(t)
	r := boot(t, "echo hello-$((6*7))\nhostname\ncat /proc/mounts\npoweroff\n", time.Minute, "ubd0="+img, "con0=fd:0,fd:1", "con=null")
	if r.code != 0 {
		t.Errorf("exit status %d; stderr:\n%s", r.code, r.stderr)
	}
	for _, want := range []string{"hello-42", "/dev/ubda / ext4 rw,relatime 0 0", "proc /proc proc rw,relatime 0 0"} {
		if !hasLine(r.stdout, want) {
			t.Errorf("no line %q in:\n%s", want, r.stdout)
		}
	}
	if !strings.Contains(r.stderr, "Run /sbin/init as init process") || !strings.Contains(r.stderr, "reboot: Power down") {
		t.Errorf("boot log:\n%s", r.stderr)
	}
	fsckClean(t, img)
}

// argsScript prints what init got, then powers off.
const argsScript = `#!/bin/sh
echo "ARGV:$0|$*"
echo "ENV:FOO=$FOO HOME=$HOME TERM=$TERM"
mount -t proc proc /proc
echo "CMDLINE:$(cat /proc/cmdline)"
echo "PID:$$"
poweroff -f
`

// Acceptance 7: the same image and command line boot in the C kernel, and
// init gets the same argv, environment and /proc/cmdline in both.
func TestSameCommandLineAsCKernel(t *testing.T) {
	img := testutil.DefaultImage(t)
	script := filepath.Join(t.TempDir(), "args.sh")
	os.WriteFile(script, []byte(argsScript), 0o755)
	testutil.AddFiles(t, img, map[string]string{"/args.sh": script})
	cimg := filepath.Join(t.TempDir(), "c.img")
	testutil.CopySparse(t, img, cimg)
	words := []string{"init=/args.sh", "alpha", "FOO=bar", "beta"}

	ours := boot(t, "", time.Minute, append([]string{"mem=64M", "ubd0=" + img, "con0=fd:0,fd:1", "con=null", "ssl=null", "umid=same1"}, words...)...)
	u := testutil.StartUML(t, testutil.UMLOptions{Umid: "same1", Args: append([]string{"ubd0=" + cimg}, words...)})
	// /proc/cmdline: the same words; only the uml_dir= differs (ours adds
	// its own before the given words, the C helper after).
	strip := func(s string) string {
		var keep []string
		for _, w := range strings.Fields(s) {
			if !strings.HasPrefix(w, "uml_dir=") && !strings.HasPrefix(w, "GLIBC_TUNABLES=") && !strings.HasPrefix(w, "con0=") && !strings.HasPrefix(w, "con=") &&
				!strings.HasPrefix(w, "ssl=") && !strings.HasPrefix(w, "ubd0=") && !strings.HasPrefix(w, "mem=") {
				keep = append(keep, w)
			}
		}
		sort.Strings(keep)
		return strings.Join(keep, " ")
	}
	deadline := time.Now().Add(60 * time.Second)
	for !strings.Contains(u.Output(), "PID:") && !strings.Contains(u.Output(), "ptrace set fp regs failed") && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	u.Wait(20 * time.Second)
	// The kernel side: the same root, init and parameters for init.
	for _, want := range []string{"VFS: Mounted root (ext4 filesystem)", "Run /args.sh as init process"} {
		if !strings.Contains(u.Output(), want) {
			t.Errorf("C kernel log lacks %q", want)
		}
	}
	// Both logs name the same parameters for init (in argument order,
	// which differs only in where uml_dir= is).
	unknown := func(log string) string {
		const p = `Unknown kernel command line parameters "`
		i := strings.Index(log, p)
		if i < 0 {
			return ""
		}
		rest := log[i+len(p):]
		return strip(rest[:strings.IndexByte(rest, '"')])
	}
	if uo, uc := unknown(ours.stderr), unknown(u.Output()); uo == "" || uo != uc {
		t.Errorf("parameters for init: ours %q, C kernel %q", uo, uc)
	}
	cout := u.Output()
	testutil.SkipIfUnusableUML(t, cout)
	pick := func(out string) map[string]string {
		m := map[string]string{}
		for _, l := range lines(strings.ReplaceAll(out, "\r", "")) {
			for _, k := range []string{"ARGV:", "ENV:", "CMDLINE:", "PID:"} {
				if strings.HasPrefix(l, k) {
					m[k] = strings.TrimPrefix(l, k)
				}
			}
		}
		return m
	}
	o, c := pick(ours.stdout), pick(cout)
	if len(o) != 4 || len(c) != 4 {
		t.Fatalf("missing lines: ours %v, C kernel %v\nC output:\n%s", o, c, cout)
	}
	for _, k := range []string{"ARGV:", "ENV:", "PID:"} {
		if o[k] != c[k] {
			t.Errorf("%s ours %q, C kernel %q", k, o[k], c[k])
		}
	}
	if strip(o["CMDLINE:"]) != strip(c["CMDLINE:"]) {
		t.Errorf("/proc/cmdline: ours %q, C kernel %q", o["CMDLINE:"], c["CMDLINE:"])
	}
	if ours.code != 0 {
		t.Errorf("ours: exit %d", ours.code)
	}
	fsckClean(t, img)
	fsckClean(t, cimg)
}

// reboot boots init again in the same process; with noreboot it ends the
// engine with status 0.
func TestReboot(t *testing.T) {
	img := testutil.DefaultImage(t)
	r := boot(t, "", time.Minute, "ubd0="+img, "con0=fd:0,fd:1", "con=null", "quiet", "noreboot", "init=/bin/sh", "--", "-c", "echo BOOT; reboot -f")
	if r.code != 0 || strings.Count(r.stdout, "BOOT") != 1 {
		t.Errorf("noreboot: exit %d, stdout %q", r.code, r.stdout)
	}
	dir := t.TempDir()
	cmd := exec.Command(testutil.Bin(t, "linux"), "uml_dir="+dir+"/", "ubd0="+img, "con0=fd:0,fd:1", "con=null",
		"init=/bin/sh", "--", "-c", "echo BOOT; reboot -f")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var log bytes.Buffer
	cmd.Stderr = &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	boots, buf := 0, make([]byte, 4096)
	deadline := time.Now().Add(30 * time.Second)
	for boots < 3 && time.Now().Before(deadline) {
		n, err := out.Read(buf)
		boots += strings.Count(string(buf[:n]), "BOOT")
		if err != nil {
			break
		}
	}
	cmd.Process.Signal(syscall.SIGTERM)
	go io.Copy(io.Discard, out) // the engine writes out what the guest printed before it exits
	cmd.Wait()
	if boots < 3 || cmd.ProcessState.ExitCode() != 128+int(syscall.SIGTERM) {
		t.Errorf("%d boots, exit %d; log:\n%s", boots, cmd.ProcessState.ExitCode(), log.String())
	}
	if n := strings.Count(log.String(), "Run /bin/sh as init process"); n < 3 {
		t.Errorf("init ran %d times", n)
	}
	fsckClean(t, img)
}
