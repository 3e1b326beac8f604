package main

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/umltools/umltools/internal/testutil"
)

// Issue 10, the guest's root filesystem written by the engine: the
// acceptance tests. Every guest script prints a marker once its writes
// are done; without it (a read-only root: EROFS) the test fails with the
// guest's output. Every test ends with e2fsck -fn on the image.

// fsckLine is what e2fsck -fn prints on a clean filesystem, line by line.
// Besides the version, the passes and the summary, it may suggest an
// extent tree be made shallower or narrower (exit status 0): the kernel
// leaves such trees too, e.g. after truncating a large file.
var fsckLine = regexp.MustCompile(`^(e2fsck \d[\d.]* \(.*\)|Pass \d[A-Z]?: .*|\S+: \d+/\d+ files \(.*\), \d+/\d+ blocks|` +
	`Inode \d+ extent tree \(at level \d+\) could be (shorter|narrower)\.  Optimize\? no)$`)

// e2fsckQuiet runs e2fsck -fn on img: it must exit 0 and print nothing
// beyond its version, the pass names and the summary line.
func e2fsckQuiet(t *testing.T, img string) {
	t.Helper()
	e2fsck := testutil.NeedCmd(t, "e2fsck")[0]
	b, err := exec.Command(e2fsck, "-fn", img).CombinedOutput()
	if err != nil {
		t.Fatalf("e2fsck -fn %s: %v\n%s", img, err, b)
	}
	for _, l := range lines(string(b)) {
		if !fsckLine.MatchString(l) {
			t.Fatalf("e2fsck -fn %s exited 0 but said %q:\n%s", img, l, b)
		}
		if strings.HasSuffix(l, "Optimize? no") {
			t.Logf("e2fsck -fn (exit 0): %s", l)
		}
	}
}

// sbState returns the "Filesystem state:" of img's superblock.
func sbState(t *testing.T, img string) string {
	t.Helper()
	return sbField(t, img, "Filesystem state")
}

// sbField returns one field of dumpe2fs -h.
func sbField(t *testing.T, img, name string) string {
	t.Helper()
	d := testutil.NeedCmd(t, "dumpe2fs")[0]
	b, err := exec.Command(d, "-h", img).Output()
	if err != nil {
		t.Fatalf("dumpe2fs -h %s: %v", img, err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && k == name {
			return strings.TrimSpace(v)
		}
	}
	t.Fatalf("dumpe2fs -h %s: no %q", img, name)
	return ""
}

// wantClean fails unless the superblock says clean: the engine marks the
// filesystem clean when the machine halts cleanly.
func wantClean(t *testing.T, img string) {
	t.Helper()
	if s := sbState(t, img); s != "clean" {
		t.Errorf("after a clean poweroff the superblock says %q, want clean", s)
	}
}

// wrote fails t unless the guest printed marker on a line of its own, that
// is, unless its writes went through.
func wrote(t *testing.T, r run, marker string) {
	t.Helper()
	if !hasLine(r.stdout, marker) {
		ro := ""
		if strings.Contains(r.stdout+r.stderr, "Read-only file system") {
			ro = " (EROFS: the root is mounted read-only; issue 10 mounts it read-write)"
		}
		t.Fatalf("the guest's writes did not complete, no %q line%s; exit %d\nstdout:\n%s\nstderr:\n%s",
			marker, ro, r.code, r.stdout, benchTail(r.stderr, 3000))
	}
	if r.code != 0 {
		t.Errorf("engine exit status %d after poweroff, want 0; stderr:\n%s", r.code, benchTail(r.stderr, 3000))
	}
}

// dstat is what debugfs stat says about one inode.
type dstat struct {
	inode, links, blockcount int64
	size                     int64
	typ, mode, flags, fast   string
}

var (
	reDInode = regexp.MustCompile(`Inode: (\d+)\s+Type: (\S+)\s+Mode:\s+(\d+)\s+Flags: (0x[0-9a-f]+)`)
	reDLinks = regexp.MustCompile(`Links: (\d+)\s+Blockcount: (\d+)`)
	reDSize  = regexp.MustCompile(`Size: (\d+)`)
	reDFast  = regexp.MustCompile(`Fast link dest: "(.*)"`)
)

// debugStat runs debugfs stat on path; ok is false when it does not exist.
func debugStat(t *testing.T, img, path string) (s dstat, ok bool) {
	t.Helper()
	d := testutil.NeedCmd(t, "debugfs")[0]
	cmd := exec.Command(d, "-R", "stat "+path, img)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("debugfs -R 'stat %s': %v", path, err)
	}
	o := string(out)
	m := reDInode.FindStringSubmatch(o)
	if m == nil {
		return s, false
	}
	s.inode, _ = strconv.ParseInt(m[1], 10, 64)
	s.typ, s.mode, s.flags = m[2], m[3], m[4]
	if m := reDLinks.FindStringSubmatch(o); m != nil {
		s.links, _ = strconv.ParseInt(m[1], 10, 64)
		s.blockcount, _ = strconv.ParseInt(m[2], 10, 64)
	}
	if m := reDSize.FindStringSubmatch(o); m != nil {
		s.size, _ = strconv.ParseInt(m[1], 10, 64)
	}
	if m := reDFast.FindStringSubmatch(o); m != nil {
		s.fast = m[1]
	}
	return s, true
}

// debugNames lists a directory of img with debugfs ls -p, without . and ..
func debugNames(t *testing.T, img, dir string) []string {
	t.Helper()
	var names []string
	for _, l := range lines(debugfs(t, img, "ls -p "+dir)) {
		// /inode/mode/uid/gid/name/size/; unused entries (inode 0),
		// e.g. at the start of a block whose names were deleted, are
		// listed too.
		f := strings.Split(l, "/")
		if len(f) < 7 || f[1] == "0" || f[5] == "." || f[5] == ".." {
			continue
		}
		names = append(names, f[5])
	}
	sort.Strings(names)
	return names
}

// debugDump copies a file out of img with debugfs dump.
func debugDump(t *testing.T, img, path, host string) {
	t.Helper()
	d := testutil.NeedCmd(t, "debugfs")[0]
	if b, err := exec.Command(d, "-R", "dump "+path+" "+host, img).CombinedOutput(); err != nil {
		t.Fatalf("debugfs dump %s: %v\n%s", path, err, b)
	}
	if _, err := os.Stat(host); err != nil {
		t.Fatalf("debugfs dump %s: %v", path, err)
	}
}

// guestField returns the words after "KEY" on the guest's line that
// starts with it.
func guestField(out, key string) []string {
	for _, l := range lines(out) {
		if f := strings.Fields(l); len(f) > 0 && f[0] == key {
			return f[1:]
		}
	}
	return nil
}

// Acceptance 1: the shell line, then the host looks at the image.
func TestExt4WriteBasic(t *testing.T) {
	img := testutil.BusyboxImage(t)
	script := "set -e; mkdir -p /t/a/b; echo hi >/t/a/b/f; mv /t/a/b/f /t/g; ln -s g /t/l; ln /t/g /t/h; chmod 600 /t/g; rm -r /t/a; " +
		"echo CAT $(cat /t/h /t/l); echo LS $(ls /t); sync; echo WROTE; poweroff -f"
	r := boot(t, "", time.Minute, "ubd0="+img, "con0=fd:0,fd:1", "con=null", "quiet", "init=/bin/sh", "--", "-c", script)
	wrote(t, r, "WROTE")
	if got := strings.Join(guestField(r.stdout, "CAT"), " "); got != "hi hi" {
		t.Errorf("guest: cat /t/h /t/l printed %q, want \"hi hi\"", got)
	}
	if got := strings.Join(guestField(r.stdout, "LS"), " "); got != "g h l" {
		t.Errorf("guest: ls /t printed %q, want \"g h l\"", got)
	}
	wantClean(t, img)

	if got := debugfs(t, img, "cat /t/g"); got != "hi\n" {
		t.Errorf("debugfs cat /t/g = %q, want \"hi\\n\"", got)
	}
	if got := debugNames(t, img, "/t"); strings.Join(got, " ") != "g h l" {
		t.Errorf("/t holds %q, want g h l", got)
	}
	g, okg := debugStat(t, img, "/t/g")
	h, okh := debugStat(t, img, "/t/h")
	l, okl := debugStat(t, img, "/t/l")
	d, okd := debugStat(t, img, "/t")
	if !okg || !okh || !okl || !okd {
		t.Fatalf("missing in the image: /t %v, /t/g %v, /t/h %v, /t/l %v", okd, okg, okh, okl)
	}
	if g.typ != "regular" || g.mode != "0600" || g.links != 2 || g.size != 3 {
		t.Errorf("/t/g: %+v, want a regular file, mode 0600, 2 links, 3 bytes", g)
	}
	if h.inode != g.inode {
		t.Errorf("/t/h is inode %d, /t/g %d: not a hard link", h.inode, g.inode)
	}
	if l.typ != "symlink" || l.fast != "g" || l.size != 1 {
		t.Errorf("/t/l: %+v, want a fast symlink to g", l)
	}
	if d.links != 2 {
		t.Errorf("/t has %d links after rm -r /t/a, want 2", d.links)
	}
	if _, ok := debugStat(t, img, "/t/a"); ok {
		t.Errorf("/t/a is still in the image after rm -r")
	}
	e2fsckQuiet(t, img)
}

// Acceptance 2: 5,000 names in one directory (an htree), half deleted and
// the rest renamed; a 200 MiB file written, truncated to 1 MiB and
// extended with a hole. The host checks names, contents and sizes; the C
// kernel mounts the result and agrees (acceptance 6).
func TestExt4WriteHtreeBigFile(t *testing.T) {
	img := testutil.BusyboxImage(t)
	testutil.GrowImage(t, img, 400<<20)
	const n = 5000
	script := strings.Join([]string{
		"set -e",
		"mkdir /d; cd /d",
		fmt.Sprintf("i=0; while [ $i -lt %d ]; do echo $i >f$i; i=$((i+1)); done", n),
		"echo CREATED $(ls | wc -l)",
		"rm f*[02468]",
		"for f in f*; do mv $f r${f#f}; done",
		"echo LEFT $(ls | wc -l) $(cat r4999)",
		"cd /",
		"dd if=/dev/urandom of=/big bs=1M count=200 2>/dev/null",
		"sync",
		"echo BIG $(stat -c %s /big) $(sha256sum </big)",
		"echo HEAD $(head -c 1048576 /big | sha256sum)",
		"truncate -s 1M /big",
		"truncate -s 64M /big",
		"echo FINAL $(stat -c %s /big) $(sha256sum </big)",
		"sync",
		"echo STATFS $(stat -f -c '%b %f %a %c %d' /)",
		"echo WROTE",
		"poweroff -f",
	}, "\n")
	start := time.Now()
	r := boot(t, "", 3*time.Minute, "ubd0="+img, "con0=fd:0,fd:1", "con=null", "quiet", "init=/bin/sh", "--", "-c", script)
	t.Logf("guest workload: %v", time.Since(start).Round(time.Millisecond))
	wrote(t, r, "WROTE")
	if got := guestField(r.stdout, "CREATED"); len(got) != 1 || got[0] != strconv.Itoa(n) {
		t.Errorf("guest: %q files after creating, want %d", got, n)
	}
	if got := guestField(r.stdout, "LEFT"); len(got) != 2 || got[0] != strconv.Itoa(n/2) || got[1] != "4999" {
		t.Errorf("guest: %q after deleting and renaming, want %d 4999", got, n/2)
	}
	big, head, final := guestField(r.stdout, "BIG"), guestField(r.stdout, "HEAD"), guestField(r.stdout, "FINAL")
	if len(big) < 2 || big[0] != strconv.Itoa(200<<20) || len(head) < 1 || len(final) < 2 || final[0] != strconv.Itoa(64<<20) {
		t.Fatalf("guest: BIG %q HEAD %q FINAL %q", big, head, final)
	}
	wantClean(t, img)

	// The directory: an htree holding exactly r1, r3, ... r4999, each
	// with its number.
	if s, ok := debugStat(t, img, "/d"); !ok {
		t.Fatal("/d is not in the image")
	} else if f, _ := strconv.ParseUint(s.flags, 0, 32); f&0x1000 == 0 {
		t.Errorf("/d (%d blocks of 512 bytes) is not hash-indexed: flags %s", s.blockcount, s.flags)
	}
	var want []string
	for i := 1; i < n; i += 2 {
		want = append(want, "r"+strconv.Itoa(i))
	}
	sort.Strings(want)
	got := debugNames(t, img, "/d")
	if strings.Join(got, " ") != strings.Join(want, " ") {
		missing, extra := diffSets(want, got)
		t.Errorf("/d holds %d names, want %d; missing %q; unexpected %q; twice %q", len(got), len(want), head10(missing), head10(extra), head10(dups(got)))
	}
	tree := t.TempDir()
	if b, err := exec.Command("debugfs", "-R", "rdump /d "+tree, img).CombinedOutput(); err != nil {
		t.Fatalf("debugfs rdump /d: %v\n%s", err, b)
	}
	bad := 0
	for i := 1; i < n; i += 2 {
		b, err := os.ReadFile(filepath.Join(tree, "d", "r"+strconv.Itoa(i)))
		if err != nil || string(b) != strconv.Itoa(i)+"\n" {
			if bad++; bad <= 5 {
				t.Errorf("/d/r%d: %q %v", i, b, err)
			}
		}
	}

	// The big file: 64 MiB, its first MiB what the guest wrote, then a
	// hole that holds no blocks.
	host := filepath.Join(t.TempDir(), "big")
	debugDump(t, img, "/big", host)
	fi, _ := os.Stat(host)
	if fi.Size() != 64<<20 {
		t.Errorf("/big is %d bytes in the image, want %d", fi.Size(), 64<<20)
	}
	if s := testutil.SHA256File(t, host); s != final[1] {
		t.Errorf("/big: sha256 %s in the image, the guest read %s", s, final[1])
	}
	f, _ := os.Open(host)
	hh := sha256.New()
	io.CopyN(hh, f, 1<<20)
	f.Close()
	if s := hex.EncodeToString(hh.Sum(nil)); s != head[0] {
		t.Errorf("/big: the first MiB has sha256 %s in the image, the guest wrote %s", s, head[0])
	}
	if s, _ := debugStat(t, img, "/big"); s.blockcount < 2048 || s.blockcount > 2048+64 {
		t.Errorf("/big holds %d 512-byte blocks, want 2048 (1 MiB) plus a few extent blocks: the truncate or the hole is wrong", s.blockcount)
	}

	// statfs in the guest, after its last write, against the superblock.
	st := guestField(r.stdout, "STATFS")
	if len(st) != 5 {
		t.Fatalf("guest: STATFS %q", st)
	}
	for i, k := range map[int]string{1: "Free blocks", 3: "Inode count", 4: "Free inodes"} {
		if v := sbField(t, img, k); v != st[i] {
			t.Errorf("guest statfs says %s %s, the superblock %s", k, st[i], v)
		}
	}

	e2fsckQuiet(t, img)

	t.Run("CKernel", func(t *testing.T) {
		// The C kernel's ext4 mounts the image read-only and reads what
		// we wrote; its statfs agrees with ours; e2fsck in it is clean.
		dir := t.TempDir()
		mnt := filepath.Join(dir, "mnt")
		os.Mkdir(mnt, 0o755)
		dev := filepath.Join(dir, "ubda")
		script := strings.Join([]string{
			"mknod " + dev + " b 98 0",
			"mount -t ext4 -o ro " + dev + " " + mnt + " || echo MOUNT-FAILED",
			"echo C-LEFT $(ls " + mnt + "/d | wc -l) $(cat " + mnt + "/d/r4999)",
			"echo C-FINAL $(stat -c %s " + mnt + "/big) $(sha256sum <" + mnt + "/big)",
			"echo C-STATFS $(stat -f -c '%b %f %a %c %d' " + mnt + ")",
			"umount " + mnt,
			"e2fsck -fn " + dev + " >" + dir + "/fsck.out 2>&1; echo C-FSCK=$?",
			"echo C-DONE",
			"echo o > /proc/sysrq-trigger",
		}, "\n") + "\n"
		u := testutil.StartUML(t, testutil.UMLOptions{Init: script, Extra: []string{"ubd0=" + img}, Mem: "128M"})
		u.WaitOutput(t, "C-DONE", 2*time.Minute)
		out := strings.ReplaceAll(u.Output(), "\r", "")
		if strings.Contains(out, "MOUNT-FAILED") {
			t.Fatalf("the C kernel cannot mount the image:\n%s", benchTail(out, 3000))
		}
		for _, bad := range []string{"EXT4-fs error", "EXT4-fs warning", "EXT4-fs (ubda): warning"} {
			if strings.Contains(out, bad) {
				t.Errorf("the C kernel logged %q:\n%s", bad, benchTail(out, 3000))
			}
		}
		if got := strings.Join(guestField(out, "C-LEFT"), " "); got != fmt.Sprintf("%d 4999", n/2) {
			t.Errorf("C kernel: /d: %q, want %d 4999", got, n/2)
		}
		if got := guestField(out, "C-FINAL"); len(got) < 2 || got[0] != final[0] || got[1] != final[1] {
			t.Errorf("C kernel: /big: %q, ours %q", got, final)
		}
		if got := guestField(out, "C-STATFS"); strings.Join(got, " ") != strings.Join(st, " ") {
			t.Errorf("statfs (blocks free avail files ffree): C kernel %q, ours %q", got, st)
		}
		if !hasLine(out, "C-FSCK=0") {
			b, _ := os.ReadFile(dir + "/fsck.out")
			t.Errorf("e2fsck -fn in the C kernel: %q\n%s", guestField(out, "C-FSCK"), b)
		}
		u.Wait(30 * time.Second)
		e2fsckQuiet(t, img)
	})
}

// diffSets returns what is in want but not got, and the other way.
func diffSets(want, got []string) (missing, extra []string) {
	w, g := map[string]bool{}, map[string]bool{}
	for _, s := range want {
		w[s] = true
	}
	for _, s := range got {
		g[s] = true
		if !w[s] {
			extra = append(extra, s)
		}
	}
	for _, s := range want {
		if !g[s] {
			missing = append(missing, s)
		}
	}
	return
}

// dups returns the names that occur more than once in sorted s.
func dups(s []string) []string {
	var d []string
	for i := 1; i < len(s); i++ {
		if s[i] == s[i-1] && (len(d) == 0 || d[len(d)-1] != s[i]) {
			d = append(d, s[i])
		}
	}
	return d
}

func head10(s []string) []string {
	if len(s) > 10 {
		return append(s[:10:10], fmt.Sprintf("… %d more", len(s)-10))
	}
	return s
}

// debianPath is the PATH for init=/bin/bash scripts on the Debian image.
const debianPath = "export PATH=/usr/sbin:/usr/bin:/sbin:/bin"

// debianRun boots the Debian image with init=/bin/bash -c script.
func debianRun(t *testing.T, img, script string, timeout time.Duration) run {
	t.Helper()
	return boot(t, "", timeout, "ubd0="+img, "con0=fd:0,fd:1", "con=null", "quiet", "init=/bin/bash", "--", "-c", debianPath+"\n"+script)
}

// cFsckScript is written into the image by our engine's guest: the C
// kernel runs it as init on the image mounted read-only.
const cFsckScript = `#!/bin/sh
mount -n -t proc proc /proc
e2fsck -fn /dev/ubda
echo C-FSCK=$?
echo C-HELLO $(hello)
echo C-DONE
busybox poweroff -f
`

// Acceptance 3: dpkg -i of a real package, which then runs; apt-get
// removes it again; with acceptance 6 in between: the C kernel boots the
// image we wrote, runs the package, and its e2fsck finds nothing.
func TestExt4WriteDpkg(t *testing.T) {
	deb := testutil.DownloadDeb(t, "hello")
	img := testutil.DebianImage(t)
	testutil.AddFiles(t, img, map[string]string{"/hello.deb": deb})
	script := "cat >/c-fsck.sh <<'EOF'\n" + cFsckScript + "EOF\nchmod 755 /c-fsck.sh\n" +
		"dpkg -i /hello.deb; echo DPKG-RC=$?\necho HELLO $(hello)\nsync; echo WROTE; busybox poweroff -f\n"
	r := debianRun(t, img, script, 2*time.Minute)
	wrote(t, r, "WROTE")
	if !hasLine(r.stdout, "DPKG-RC=0") || strings.Join(guestField(r.stdout, "HELLO"), " ") != "Hello, world!" {
		t.Fatalf("dpkg -i /hello.deb; hello:\n%s\nstderr:\n%s", r.stdout, benchTail(r.stderr, 2000))
	}
	wantClean(t, img)
	// The installed program is the package's, byte for byte.
	x := t.TempDir()
	if b, err := exec.Command("dpkg-deb", "-x", deb, x).CombinedOutput(); err != nil {
		testutil.Skip(t, "dpkg-deb -x: %v %s", err, b)
	}
	host := filepath.Join(t.TempDir(), "hello")
	debugDump(t, img, "/usr/bin/hello", host)
	if a, b := testutil.SHA256File(t, host), testutil.SHA256File(t, filepath.Join(x, "usr/bin/hello")); a != b {
		t.Errorf("/usr/bin/hello in the image: sha256 %s, in the package %s", a, b)
	}
	if !regexp.MustCompile(`(?m)^Package: hello\nStatus: install ok installed$`).MatchString(debugfs(t, img, "cat /var/lib/dpkg/status")) {
		t.Errorf("/var/lib/dpkg/status does not have hello installed")
	}
	e2fsckQuiet(t, img)

	t.Run("CKernel", func(t *testing.T) {
		u := testutil.StartUML(t, testutil.UMLOptions{Args: []string{"ubd0=" + img, "ro", "init=/c-fsck.sh"}, Mem: "256M"})
		u.WaitOutput(t, "C-DONE", 2*time.Minute)
		out := strings.ReplaceAll(u.Output(), "\r", "")
		if !hasLine(out, "C-FSCK=0") {
			t.Errorf("e2fsck -fn /dev/ubda in the C kernel did not exit 0:\n%s", benchTail(out, 3000))
		}
		if got := strings.Join(guestField(out, "C-HELLO"), " "); got != "Hello, world!" {
			t.Errorf("hello in the C kernel printed %q", got)
		}
		for _, bad := range []string{"EXT4-fs error", "EXT4-fs warning", "EXT4-fs (ubda): warning"} {
			if strings.Contains(out, bad) {
				t.Errorf("the C kernel logged %q:\n%s", bad, benchTail(out, 3000))
			}
		}
		u.Wait(30 * time.Second)
	})

	r = debianRun(t, img, "apt-get -y remove hello; echo REMOVE-RC=$?\ncommand -v hello || echo GONE\nsync; echo WROTE; busybox poweroff -f\n", 2*time.Minute)
	wrote(t, r, "WROTE")
	if !hasLine(r.stdout, "REMOVE-RC=0") || !hasLine(r.stdout, "GONE") {
		t.Errorf("apt-get -y remove hello:\n%s\nstderr:\n%s", r.stdout, benchTail(r.stderr, 2000))
	}
	wantClean(t, img)
	if _, ok := debugStat(t, img, "/usr/bin/hello"); ok {
		t.Errorf("/usr/bin/hello is still in the image after apt-get remove")
	}
	if regexp.MustCompile(`(?m)^Package: hello\nStatus: install ok installed$`).MatchString(debugfs(t, img, "cat /var/lib/dpkg/status")) {
		t.Errorf("/var/lib/dpkg/status still has hello installed")
	}
	e2fsckQuiet(t, img)
}

// crashRuns is how many times TestExt4CrashDpkg kills the engine
// (UMLTEST_CRASH_RUNS overrides).
func crashRuns() int {
	if n, err := strconv.Atoi(os.Getenv("UMLTEST_CRASH_RUNS")); err == nil && n > 0 {
		return n
	}
	return 20
}

// crashScript writes and fsyncs /f, then runs dpkg -i.
func crashScript(data string) string {
	return "echo " + data + " >/f && sync /f && echo FSYNCED\ndpkg -i /hello.deb >/dev/null; echo DPKG-DONE $?\nsync; busybox poweroff -f\n"
}

// crashBoot boots the Debian image on img with the crash script and, with
// kill >= 0, SIGKILLs the engine kill after the guest said FSYNCED. It
// returns the guest's output, how long dpkg took (or ran before the
// kill) and whether dpkg was done when the engine died.
func crashBoot(t *testing.T, img, data string, kill time.Duration) (out string, dpkg time.Duration, done bool) {
	t.Helper()
	cmd := exec.Command(testutil.Bin(t, "linux"), "uml_dir="+t.TempDir()+"/", "ubd0="+img, "con0=fd:0,fd:1", "con=null", "quiet",
		"init=/bin/bash", "--", "-c", debianPath+"\n"+crashScript(data))
	pr, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var errOut strings.Builder
	cmd.Stderr = &errOut
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	fsynced, dpkgDone := make(chan time.Time, 1), make(chan time.Time, 1)
	var b strings.Builder
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			l := strings.TrimRight(sc.Text(), "\r")
			b.WriteString(l + "\n")
			if l == "FSYNCED" {
				fsynced <- time.Now()
			} else if strings.HasPrefix(l, "DPKG-DONE") {
				dpkgDone <- time.Now()
			}
		}
	}()
	timeout := time.NewTimer(2 * time.Minute)
	defer timeout.Stop()
	var t0 time.Time
	select {
	case t0 = <-fsynced:
	case <-readDone:
	case <-timeout.C:
	}
	if t0.IsZero() {
		cmd.Process.Kill()
		cmd.Wait()
		<-readDone
		t.Fatalf("the guest never said FSYNCED (writes failed?)\nstdout:\n%s\nstderr:\n%s", b.String(), benchTail(errOut.String(), 3000))
	}
	if kill >= 0 {
		select {
		case <-time.After(kill):
		case <-readDone:
		}
		cmd.Process.Signal(syscall.SIGKILL) // the engine only, as a crash would
	}
	// The engine's end closes its stdout.
	select {
	case <-readDone:
	case <-timeout.C:
		cmd.Process.Kill()
		<-readDone
		cmd.Wait()
		t.Fatalf("the engine did not end within 2 minutes\nstdout:\n%s\nstderr:\n%s", b.String(), benchTail(errOut.String(), 3000))
	}
	cmd.Wait()
	select {
	case t1 := <-dpkgDone:
		return b.String(), t1.Sub(t0), true
	default:
		return b.String(), kill, false
	}
}

// Acceptance 5: the engine SIGKILLed at random points while dpkg -i runs:
// e2fsck -fy repairs, the image then checks clean, the next boot works
// (dpkg -i again completes the install), and the file fsynced before dpkg
// started is intact.
func TestExt4CrashDpkg(t *testing.T) {
	deb := testutil.DownloadDeb(t, "hello")
	pristine := testutil.DebianImage(t)
	testutil.AddFiles(t, pristine, map[string]string{"/hello.deb": deb})
	e2fsck := testutil.NeedCmd(t, "e2fsck")[0]
	seed := time.Now().UnixNano()
	if s, err := strconv.ParseInt(os.Getenv("UMLTEST_SEED"), 10, 64); err == nil {
		seed = s
	}
	rng := rand.New(rand.NewSource(seed))
	t.Logf("seed %d (UMLTEST_SEED=%d repeats these kill times)", seed, seed)
	img := filepath.Join(t.TempDir(), "crash.img")

	// One uninterrupted run measures how long dpkg -i takes here.
	testutil.CopySparse(t, pristine, img)
	out, window, done := crashBoot(t, img, "calibrate", -1)
	if !done || !strings.Contains(out, "DPKG-DONE 0") {
		t.Fatalf("dpkg -i /hello.deb did not complete:\n%s", out)
	}
	wantClean(t, img)
	e2fsckQuiet(t, img)
	t.Logf("dpkg -i takes %v; the engine is killed at a uniformly random point of it", window.Round(time.Millisecond))

	during, repaired := 0, 0
	start := time.Now()
	for i := 0; i < crashRuns(); i++ {
		testutil.CopySparse(t, pristine, img)
		data := fmt.Sprintf("fsynced-%d-%d", i, rng.Int63())
		kill := time.Duration(rng.Int63n(int64(window)))
		out, _, done := crashBoot(t, img, data, kill)
		if !done {
			during++
		}
		// Mounted read-write, the superblock says not clean: a crash
		// leaves an image e2fsck must check.
		if st := sbState(t, img); !done && st == "clean" {
			t.Errorf("run %d: killed while dpkg ran, yet the superblock says clean", i)
		}
		fy := exec.Command(e2fsck, "-fy", img)
		b, err := fy.CombinedOutput()
		code := fy.ProcessState.ExitCode()
		if code != 0 && code != 1 {
			t.Fatalf("run %d (killed %v after FSYNCED, dpkg done %v): e2fsck -fy exited %d (%v), want 0 or 1:\n%s\nguest:\n%s", i, kill, done, code, err, b, out)
		}
		// What e2fsck repaired, beyond marking the filesystem valid and
		// indexing directories (Pass 3A, which it does to the pristine
		// image too).
		var fixes []string
		for _, l := range lines(string(b)) {
			if !fsckLine.MatchString(l) && !strings.HasSuffix(l, "***** FILE SYSTEM WAS MODIFIED *****") {
				fixes = append(fixes, l)
			}
		}
		if len(fixes) > 0 {
			repaired++
		}
		t.Logf("run %d: killed %v into dpkg (dpkg done: %v), e2fsck -fy exit %d, %d lines of repairs %q", i, kill.Round(time.Millisecond), done, code, len(fixes), head10(fixes))
		e2fsckQuiet(t, img)
		if got := debugfs(t, img, "cat /f"); got != data+"\n" {
			t.Errorf("run %d: /f, fsynced before dpkg started, holds %q after the kill, want %q", i, got, data+"\n")
		}
		// The next boot works and sees /f; dpkg's database, which dpkg
		// keeps with fsync and rename, is sound: the interrupted install
		// completes.
		r := debianRun(t, img, "echo ok; cat /f\ndpkg -i /hello.deb >/dev/null 2>&1; echo DPKG=$?\necho HELLO $(hello)\nsync; busybox poweroff -f\n", time.Minute)
		if !hasLine(r.stdout, "ok") || !hasLine(r.stdout, data) || r.code != 0 {
			t.Errorf("run %d: the boot after repair: exit %d\nstdout:\n%s\nstderr:\n%s", i, r.code, r.stdout, benchTail(r.stderr, 2000))
		}
		if !hasLine(r.stdout, "DPKG=0") || strings.Join(guestField(r.stdout, "HELLO"), " ") != "Hello, world!" {
			t.Errorf("run %d: after the kill and e2fsck -fy, dpkg -i /hello.deb again; hello:\n%s", i, r.stdout)
		}
		e2fsckQuiet(t, img)
	}
	t.Logf("%d kills, %d while dpkg ran; e2fsck -fy repaired something in %d images; %v", crashRuns(), during, repaired, time.Since(start).Round(time.Millisecond))
	if during < crashRuns()/2 {
		t.Errorf("only %d of %d kills landed while dpkg ran: the calibration (%v) is off", during, crashRuns(), window)
	}
}

// TestExt4WriteManyFiles: GNU tar copies a tree of 1,500 files (dirs of
// mode 0750, symlinks) through an archive and back, with the engine's
// open-file limit so low (prlimit) that its page cache must drop pages
// to hold them all: every file, mode and link comes back, tar reports
// nothing (it sets a directory's mode through an O_PATH descriptor), and
// the image is clean.
func TestExt4WriteManyFiles(t *testing.T) {
	testutil.NeedCmd(t, "prlimit")
	img := testutil.DebianImage(t)
	script := `set -e
mount -n -t proc proc /proc
mkdir /src; cd /src
for d in $(seq 10); do mkdir -m 0750 d$d; for f in $(seq 150); do echo "file $d/$f" >d$d/f$f; done; ln -s f1 d$d/link; done
chmod 0700 d3
tar cf /t.tar -C /src . 2>&1
mkdir /dst; tar xf /t.tar -C /dst 2>&1; echo TAR-RC=$?
echo SUMS $(cd /src && find . -type f | sort | xargs cat | md5sum | cut -c1-32) $(cd /dst && find . -type f | sort | xargs cat | md5sum | cut -c1-32)
echo MODES $(cd /src && find . -printf '%m%y%p\n' | sort | md5sum | cut -c1-32) $(cd /dst && find . -printf '%m%y%p\n' | sort | md5sum | cut -c1-32)
echo LINK $(readlink /dst/d7/link) $(cat /dst/d7/link)
python3 -c 'import os; os.chmod("/dst/d5", 0o711, follow_symlinks=False); print("OPATH", oct(os.stat("/dst/d5").st_mode & 0o777))'
rm -rf /src /dst /t.tar; sync; echo WROTE; busybox poweroff -f
`
	cmdArgs := []string{"--nofile=600", testutil.Bin(t, "linux"), "uml_dir=" + t.TempDir() + "/", "ubd0=" + img, "con0=fd:0,fd:1", "con=null", "quiet",
		"init=/bin/bash", "--", "-c", debianPath + "\n" + script}
	res := testutil.RunCmd(t, exec.Command("prlimit", cmdArgs...), 3*time.Minute)
	r := run{stdout: strings.ReplaceAll(res.Stdout, "\r\n", "\n"), stderr: res.Stderr, code: res.Code}
	wrote(t, r, "WROTE")
	if !hasLine(r.stdout, "TAR-RC=0") {
		t.Errorf("tar xf failed or complained:\n%s", benchTail(r.stdout, 3000))
	}
	for _, k := range []string{"SUMS", "MODES"} {
		if f := guestField(r.stdout, k); len(f) != 2 || f[0] != f[1] {
			t.Errorf("%s of the tree and its copy differ: %v", k, f)
		}
	}
	if got := strings.Join(guestField(r.stdout, "LINK"), " "); got != "f1 file 7/1" {
		t.Errorf("the copied symlink: %q, want \"f1 file 7/1\"", got)
	}
	if got := strings.Join(guestField(r.stdout, "OPATH"), " "); got != "0o711" {
		t.Errorf("chmod through O_PATH: %q, want 0o711", got)
	}
	wantClean(t, img)
	e2fsckQuiet(t, img)
}
