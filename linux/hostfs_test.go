package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/umltools/umltools/internal/testutil"
)

// Markers in the scripts are written M''ARK: the console echoes the
// script, and only the shell's output has MARK.

// hostfsShell boots the busybox image with a shell reading script, with
// extra command line words.
func hostfsShell(t *testing.T, script string, words ...string) run {
	t.Helper()
	img := testutil.BusyboxImage(t)
	args := append([]string{"ubd0=" + img, "init=/bin/sh", "con0=fd:0,fd:1", "con=null"}, words...)
	r := boot(t, script+"\nexit 0\n", 2*time.Minute, args...)
	if r.code != 0 {
		t.Errorf("exit status %d; stderr:\n%s\nstdout:\n%s", r.code, r.stderr, r.stdout)
	}
	return r
}

// waitFile waits for the guest to create p on the host.
func waitFile(t *testing.T, p string, timeout time.Duration) bool {
	t.Helper()
	for end := time.Now().Add(timeout); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if _, err := os.Stat(p); err == nil {
			return true
		}
	}
	t.Errorf("the guest never made %s", p)
	return false
}

func mustWrite(t *testing.T, p, s string) {
	t.Helper()
	if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

// Acceptance 1: mount -t hostfs none /mnt -o <dir>: what each side
// writes, renames, links and unlinks the other sees, while mounted.
func TestHostfsBothWays(t *testing.T) {
	base := t.TempDir()
	share := filepath.Join(base, "share")
	os.Mkdir(share, 0o755)
	mustWrite(t, filepath.Join(share, "h1"), "host one\n")
	mustWrite(t, filepath.Join(share, "hx"), "doomed\n")
	// The host's turn comes when the guest has made ready1; the guest
	// waits for h2, which the host writes last.
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if !waitFile(t, filepath.Join(share, "ready1"), time.Minute) {
			return
		}
		mustWrite(t, filepath.Join(share, "h1"), "host changed\n")
		for _, err := range []error{
			os.Rename(filepath.Join(share, "h1"), filepath.Join(share, "h1r")),
			os.Link(filepath.Join(share, "h1r"), filepath.Join(share, "h1l")),
			os.Symlink("h1r", filepath.Join(share, "h1s")),
			os.Remove(filepath.Join(share, "hx")),
		} {
			if err != nil {
				t.Error(err)
			}
		}
		mustWrite(t, filepath.Join(share, "h2"), "host two\n")
	}()
	script := `mount -t hostfs none /mnt -o /share || echo M''OUNT-FAILED
grep ' /mnt ' /proc/mounts 2>/dev/null || { mount -t proc proc /proc; grep ' /mnt ' /proc/mounts; }
echo from guest > /mnt/g1
echo g > /mnt/gx
echo H1=$(cat /mnt/h1)
echo HX=$(cat /mnt/hx)
echo > /mnt/ready1
i=0; while [ ! -e /mnt/h2 ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done
echo H2=$(cat /mnt/h2)
echo H1R=$(cat /mnt/h1r)
[ -e /mnt/h1 ] || echo H''1-GONE
[ -e /mnt/hx ] || echo H''X-GONE
echo H1S=$(readlink /mnt/h1s) $(cat /mnt/h1s)
echo LINKS=$(stat -c %h /mnt/h1r) $(stat -c %i /mnt/h1r) $(stat -c %i /mnt/h1l)
mv /mnt/g1 /mnt/g1r && ln /mnt/g1r /mnt/g1l && ln -s g1r /mnt/g1s && rm /mnt/gx && mkdir /mnt/gd && rmdir /mnt/gd && echo G''UEST-OPS-OK
echo appended >> /mnt/g1r
umount /mnt && echo U''MOUNT-OK`
	r := hostfsShell(t, script, "hostfs="+base)
	wg.Wait()
	out := r.stdout
	for _, want := range []string{"none /mnt hostfs rw", "H1=host one", "HX=doomed", "H2=host two", "H1R=host changed",
		"H1-GONE", "HX-GONE", "H1S=h1r host changed", "GUEST-OPS-OK", "UMOUNT-OK"} {
		if !strings.Contains(out, want) {
			t.Errorf("guest output lacks %q", want)
		}
	}
	var st syscall.Stat_t
	syscall.Stat(filepath.Join(share, "h1r"), &st)
	if want := fmt.Sprintf("LINKS=2 %d %d", st.Ino, st.Ino); !strings.Contains(out, want) {
		t.Errorf("guest output lacks %q", want)
	}
	if b, _ := os.ReadFile(filepath.Join(share, "g1r")); string(b) != "from guest\nappended\n" {
		t.Errorf("host reads g1r %q", b)
	}
	a, _ := os.Stat(filepath.Join(share, "g1r"))
	l, _ := os.Stat(filepath.Join(share, "g1l"))
	if a == nil || l == nil || !os.SameFile(a, l) {
		t.Errorf("g1l is not a hard link of g1r")
	}
	if s, _ := os.Readlink(filepath.Join(share, "g1s")); s != "g1r" {
		t.Errorf("g1s -> %q", s)
	}
	for _, gone := range []string{"g1", "gx", "gd"} {
		if _, err := os.Lstat(filepath.Join(share, gone)); !os.IsNotExist(err) {
			t.Errorf("%s is still on the host: %v", gone, err)
		}
	}
	if t.Failed() {
		t.Logf("stdout:\n%s\nstderr:\n%s", out, r.stderr)
	}
}

// Without hostfs= every hostfs mount is refused, with the option to set.
func TestHostfsRefused(t *testing.T) {
	r := hostfsShell(t, "mount -t hostfs none /mnt -o /tmp && echo M''OUNTED\nmount -t hostfs none /mnt && echo M''OUNTED")
	if strings.Contains(r.stdout, "MOUNTED") {
		t.Errorf("a hostfs mount worked without hostfs=:\n%s", r.stdout)
	}
	if !strings.Contains(r.stderr, "start the engine with hostfs_allow=<dir>") || !strings.Contains(r.stderr, "or hostfs=<dir>") {
		t.Errorf("no message naming hostfs_allow= and hostfs= in the log:\n%s", r.stderr)
	}
}

// canaryWatch watches dir and its files with inotify; the returned
// function lists what happened there.
func canaryWatch(t *testing.T, dir string) func() []string {
	t.Helper()
	fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	ents, _ := os.ReadDir(dir)
	paths := []string{dir}
	for _, e := range ents {
		paths = append(paths, filepath.Join(dir, e.Name()))
	}
	names := map[int]string{}
	for _, p := range paths {
		w, err := unix.InotifyAddWatch(fd, p, unix.IN_ALL_EVENTS)
		if err != nil {
			t.Fatal(err)
		}
		names[w] = p
	}
	return func() []string {
		defer unix.Close(fd)
		var out []string
		buf := make([]byte, 64<<10)
		n, _ := unix.Read(fd, buf)
		for i := 0; i+unix.SizeofInotifyEvent <= n; {
			ev := (*unix.InotifyEvent)(unsafe.Pointer(&buf[i]))
			out = append(out, fmt.Sprintf("%s mask %#x", names[int(ev.Wd)], ev.Mask))
			i += unix.SizeofInotifyEvent + int(ev.Len)
		}
		return out
	}
}

// Acceptance 2: no way out of the hostfs= directory: "..", absolute and
// relative host links to the outside, guest links to /etc and to the
// host's path of the canary, and a directory swapped for a link to the
// outside while the guest looks through it. The canary directory next
// to the allowed one sees no access at all (inotify).
func TestHostfsEscapes(t *testing.T) {
	base := t.TempDir()
	allowed := filepath.Join(base, "allowed")
	share := filepath.Join(allowed, "share")
	outside := filepath.Join(base, "outside")
	for _, d := range []string{share, outside, filepath.Join(share, "d")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	canary := filepath.Join(outside, "canary")
	mustWrite(t, canary, "outside secret\n")
	mustWrite(t, filepath.Join(share, "d/canary"), "inside\n")
	for name, target := range map[string]string{
		"abs": canary, "rel": "../../outside/canary", "absdir": outside, "reldir": "../../outside",
		"swap": outside, "etc": "/etc",
	} {
		if err := os.Symlink(target, filepath.Join(share, name)); err != nil {
			t.Fatal(err)
		}
	}
	events := canaryWatch(t, outside)

	// share/d and share/swap (a link to the outside) trade places as fast
	// as the host can, once the guest has begun.
	stop := make(chan struct{})
	swaps := make(chan int)
	go func() {
		n := 0
		waitFile(t, filepath.Join(share, "racing"), time.Minute)
		for {
			select {
			case <-stop:
				swaps <- n
				return
			default:
			}
			if unix.Renameat2(unix.AT_FDCWD, filepath.Join(share, "d"), unix.AT_FDCWD, filepath.Join(share, "swap"), unix.RENAME_EXCHANGE) == nil {
				n++
			}
		}
	}()
	script := fmt.Sprintf(`mount -t proc proc /proc
mount -t hostfs none /mnt -o /share || echo M''OUNT-FAILED
for p in /.. .. ../outside /../outside /share/../../outside /share/absdir /share/reldir; do
	mount -t hostfs none /root -o $p 2>/dev/null && echo E''SCAPED-MOUNT $p && umount /root
done
for p in /mnt/abs /mnt/rel /mnt/absdir/canary /mnt/reldir/canary /mnt/../outside/canary /mnt/../../outside/canary %[1]s; do
	cat $p 2>/dev/null
	echo pwned 2>/dev/null >> $p
	ls $(dirname $p) >/dev/null 2>&1
done
ls /mnt/absdir/ /mnt/reldir/ 2>/dev/null
cmp /mnt/etc/passwd /etc/passwd && echo E''TC-IS-THE-GUESTS
ln -s /etc /mnt/getc && cmp /mnt/getc/passwd /etc/passwd && echo G''UEST-ETC-IS-THE-GUESTS
ln -s %[1]s /mnt/gcanary && cat /mnt/gcanary 2>/dev/null
echo pwned 2>/dev/null > /mnt/gcanary
ln -s %[2]s /mnt/gout; ls /mnt/gout/ 2>/dev/null; echo pwned 2>/dev/null > /mnt/gout/new
cd /mnt && cd .. && cd .. && ls >/dev/null && cd /
echo > /mnt/racing
i=0; while [ $i -lt 200 ]; do
	cat /mnt/d/canary 2>/dev/null
	echo pwned 2>/dev/null >> /mnt/d/new
	ls /mnt/d/ 2>/dev/null | grep -v -e canary -e new
	i=$((i+1))
done | sort | uniq -c
echo D''ONE`, canary, outside)
	r := hostfsShell(t, script, "hostfs="+allowed)
	close(stop)
	n := <-swaps
	ev := events()
	out := r.stdout
	t.Logf("%d swaps while the guest looked; guest output:\n%s", n, out)
	if strings.Contains(out, "outside secret") || strings.Contains(out, "ESCAPED") || strings.Contains(out, "MOUNT-FAILED") {
		t.Errorf("escaped (or no mount):\n%s", out)
	}
	for _, want := range []string{"ETC-IS-THE-GUESTS", "GUEST-ETC-IS-THE-GUESTS", "inside", "DONE"} {
		if !strings.Contains(out, want) {
			t.Errorf("guest output lacks %q", want)
		}
	}
	if n < 100 {
		t.Errorf("only %d swaps: the race did not run", n)
	}
	if len(ev) != 0 {
		t.Errorf("the outside directory was reached: %v", ev)
	}
	if b, _ := os.ReadFile(canary); string(b) != "outside secret\n" {
		t.Errorf("canary now %q", b)
	}
	if ents, _ := os.ReadDir(outside); len(ents) != 1 {
		t.Errorf("the outside directory now holds %v", ents)
	}
	if t.Failed() {
		t.Logf("stderr:\n%s", r.stderr)
	}
}

// Acceptance 3: rootfstype=hostfs rootflags=<busybox tree> boots to a
// shell; the engine's files show as root's; hostfs= makes rootflags=
// relative to it, as the C kernel's prefix.
func TestHostfsRoot(t *testing.T) {
	tree := testutil.BusyboxTree(t)
	for _, tc := range []struct {
		name  string
		words []string
	}{
		{"rootflags", []string{"rootflags=" + tree}},
		{"prefix", []string{"hostfs=" + filepath.Dir(tree), "rootflags=/" + filepath.Base(tree)}},
		{"ro", []string{"rootflags=" + tree, "ro"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"rootfstype=hostfs", "init=/bin/sh", "con0=fd:0,fd:1", "con=null"}, tc.words...)
			script := `echo S''HELL-UP
mount -t proc proc /proc
grep ' / ' /proc/mounts
ls -ln /bin/busybox | awk '{print "OWNER=" $3 ":" $4}'
echo x > /written-by-guest && echo W''ROTE
exit 7
`
			r := boot(t, script, time.Minute, args...)
			if r.code != 7 {
				t.Errorf("exit status %d, want 7; stderr:\n%s", r.code, r.stderr)
			}
			ro := tc.name == "ro"
			mode := "rw"
			if ro {
				mode = "ro"
			}
			for _, want := range []string{"SHELL-UP", "/dev/root / hostfs " + mode, "OWNER=0:0"} {
				if !strings.Contains(r.stdout, want) {
					t.Errorf("output lacks %q:\n%s", want, r.stdout)
				}
			}
			_, err := os.Stat(filepath.Join(tree, "written-by-guest"))
			if ro == (err == nil) || ro == strings.Contains(r.stdout, "WROTE") {
				t.Errorf("ro=%v but the guest's write: %v\n%s", ro, err, r.stdout)
			}
			os.Remove(filepath.Join(tree, "written-by-guest"))
		})
	}
}

// hostfsMmapC maps a hostfs file shared and writes through the mapping,
// then fstats a descriptor of a file unlinked on the host.
const hostfsMmapC = `#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
int main(int argc, char **argv) {
	int fd = open(argv[1], O_RDWR);
	if (fd < 0) { perror("open"); return 1; }
	char *p = mmap(0, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED) { perror("mmap"); return 1; }
	printf("MAPPED=%.5s\n", p);
	memcpy(p, "MMAP!", 5);
	msync(p, 4096, MS_SYNC);
	int g = open(argv[2], O_RDONLY);
	if (g < 0) { perror("open 2"); return 1; }
	if (unlink(argv[2]) < 0) { perror("unlink"); return 1; }
	struct stat st;
	if (fstat(g, &st) < 0) { perror("fstat"); return 1; }
	printf("UNLINKED-FSTAT size=%ld nlink=%ld uid=%d\n", (long)st.st_size, (long)st.st_nlink, st.st_uid);
	return 0;
}
`

// mmap of a hostfs file is the host file's (a shared write reaches the
// host), a program runs from hostfs, and fstat follows an open file
// after its unlink.
func TestHostfsMmap(t *testing.T) {
	bin := testutil.StaticC(t, "hostfs-mmap", hostfsMmapC)
	share := t.TempDir()
	b, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(share, "prog"), b, 0o755); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, filepath.Join(share, "data"), "hello, world\n")
	mustWrite(t, filepath.Join(share, "gone"), "12345678")
	r := hostfsShell(t, "mount -t hostfs none /mnt && /mnt/prog /mnt/data /mnt/gone", "hostfs="+share)
	for _, want := range []string{"MAPPED=hello", "UNLINKED-FSTAT size=8 nlink=0 uid=0"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("output lacks %q:\n%s\n%s", want, r.stdout, r.stderr)
		}
	}
	if b, _ := os.ReadFile(filepath.Join(share, "data")); string(b) != "MMAP!, world\n" {
		t.Errorf("host reads %q after the guest's shared mapping write", b)
	}
}

// Seed 004's fstab line and mount syntax: hostfs /mnt hostfs
// /home/ftp,ro,user 0 0 mounts read-only; mount -t hostfs -o <dir>
// hostfs /mnt read-write.
func TestHostfsFstab(t *testing.T) {
	base := t.TempDir()
	os.MkdirAll(filepath.Join(base, "home/ftp"), 0o755)
	mustWrite(t, filepath.Join(base, "home/ftp/pub"), "ftp file\n")
	script := `mount -t proc proc /proc
echo 'hostfs /mnt hostfs /home/ftp,ro,user 0 0' >> /etc/fstab
mount /mnt && grep ' /mnt ' /proc/mounts
echo PUB=$(cat /mnt/pub)
echo x > /mnt/w || echo R''EFUSED
umount /mnt && mount -t hostfs -o /home/ftp hostfs /mnt && echo y > /mnt/w && echo W''ROTE`
	r := hostfsShell(t, script, "hostfs="+base)
	for _, want := range []string{"hostfs /mnt hostfs ro", "PUB=ftp file", "REFUSED", "WROTE"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("output lacks %q:\n%s", want, r.stdout)
		}
	}
	if b, _ := os.ReadFile(filepath.Join(base, "home/ftp/w")); string(b) != "y\n" {
		t.Errorf("host reads %q", b)
	}
}

// TestHostfsAllow: with hostfs_allow=<dir> the seed's commands name host
// paths as they are (no prefix), and a path outside <dir> is refused.
func TestHostfsAllow(t *testing.T) {
	base := t.TempDir()
	ftp := filepath.Join(base, "home/ftp")
	os.MkdirAll(ftp, 0o755)
	mustWrite(t, filepath.Join(ftp, "pub"), "ftp file\n")
	outside := filepath.Join(t.TempDir(), "out")
	os.MkdirAll(outside, 0o755)
	script := `mount -t proc proc /proc
mount -t hostfs -o ` + ftp + ` hostfs /mnt && echo PUB=$(cat /mnt/pub) && echo y > /mnt/w && umount /mnt
mount -t hostfs -o ` + outside + ` hostfs /mnt && echo O''UTSIDE-MOUNTED || echo O''UTSIDE-REFUSED
mount -t hostfs -o ` + base + `/home/../.. hostfs /mnt && echo U''P-MOUNTED || echo U''P-REFUSED`
	r := hostfsShell(t, script, "hostfs_allow="+base)
	for _, want := range []string{"PUB=ftp file", "OUTSIDE-REFUSED", "UP-REFUSED"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("output lacks %q:\n%s", want, r.stdout)
		}
	}
	if b, _ := os.ReadFile(filepath.Join(ftp, "w")); string(b) != "y\n" {
		t.Errorf("host reads %q", b)
	}
	if ents, _ := os.ReadDir(outside); len(ents) != 0 {
		t.Errorf("outside directory changed: %v", ents)
	}
}
