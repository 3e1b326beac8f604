package main

import (
	"archive/tar"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/umltools/umltools/internal/cli"
	"github.com/umltools/umltools/internal/testutil"
)

// isolate keeps the user's and the host's configuration layers out of a
// test: HOME and XDG_CONFIG_HOME point at empty directories, and the
// working directory (./rootstrap.conf) is a fresh one.
func isolate(t *testing.T) string {
	t.Helper()
	if _, err := os.Stat("/etc/rootstrap/rootstrap.conf"); err == nil {
		testutil.Skip(t, "/etc/rootstrap/rootstrap.conf exists on this host and would change the results")
	}
	d := t.TempDir()
	t.Setenv("HOME", d)
	t.Setenv("XDG_CONFIG_HOME", filepath.Join(d, "config"))
	t.Chdir(d)
	return d
}

func runRS(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var o, e bytes.Buffer
	err := run(append([]string{"rootstrap"}, args...), strings.NewReader(""), &o, &e)
	code = cli.Report("rootstrap", err, &e)
	return o.String(), e.String(), code
}

// leftovers lists the files in dir other than keep.
func leftovers(t *testing.T, dir string, keep ...string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		found := false
		for _, k := range keep {
			if e.Name() == k {
				found = true
			}
		}
		if !found {
			out = append(out, e.Name())
		}
	}
	return out
}

func TestHelpVersionUsage(t *testing.T) {
	isolate(t)
	tests := []struct {
		args   []string
		code   int
		stdout string // substring
		stderr string // substring
	}{
		{[]string{"--help"}, 0, "Usage: rootstrap [options] imagefile", ""},
		{[]string{"-h"}, 0, "-s, --image-size MB", ""},
		{[]string{"--version"}, 0, "rootstrap (umltools)", ""},
		{[]string{"--list-modules"}, 0, "busybox", ""},
		{nil, 2, "", "rootstrap: missing imagefile"},
		{[]string{"--bogus", "img"}, 2, "", "rootstrap: unknown option --bogus"},
		{[]string{"-Z", "img"}, 2, "", "unknown option -Z"},
		{[]string{"-s"}, 2, "", "flag needs an argument"},
		{[]string{"-s", "abc", "img"}, 2, "", "-s/--image-size: bad size"},
		{[]string{"--image-size=0", "img"}, 2, "", "must be positive"},
		{[]string{"a.img", "b.img"}, 2, "", "too many arguments: b.img"},
		{[]string{"--profile", "gentoo", "img"}, 2, "", "unknown profile"},
		{[]string{"--from-tar", "x", "--from-dir", "y", "img"}, 2, "", "exclude each other"},
		{[]string{"--hostname", "bad name", "img"}, 2, "", "bad hostname"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			o, e, code := runRS(t, tt.args...)
			if code != tt.code || !strings.Contains(o, tt.stdout) || !strings.Contains(e, tt.stderr) {
				t.Errorf("rootstrap %v: code %d, stdout %q, stderr %q; want %d, %q, %q", tt.args, code, o, e, tt.code, tt.stdout, tt.stderr)
			}
			if tt.code == 0 && e != "" {
				t.Errorf("stderr not empty: %q", e)
			}
			if tt.code != 0 && o != "" {
				t.Errorf("stdout not empty on error: %q", o)
			}
		})
	}
}

// TestBadInputs is acceptance 4: each failure has a clear message, a
// non-zero exit, and leaves no image (nor temporary file) behind; an
// existing image of that name is left as it was.
func TestBadInputs(t *testing.T) {
	dir := isolate(t)
	testutil.NeedCmd(t, "mke2fs", "debugfs")
	write := func(name, body string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	mods := filepath.Join(dir, "mods")
	os.Mkdir(mods, 0o755)
	write("mods/fail", "#!/bin/sh\necho 'E: boom from the failing module'\nexit 3\n", 0o755)
	write("fail.conf", "[global]\nmodules=busybox fail\n", 0o644)
	write("mirror.conf", "[debian]\ndist=bookworm\nmirror=http://127.0.0.1:9/debian\n", 0o644)
	write("syntax.conf", "[global]\nfstype ext4\n", 0o644)
	write("unknown.conf", "[global]\nmodules=busybox nosuchmodule\n", 0o644)
	write("fstype.conf", "[global]\nfstype=xfs\n", 0o644)
	out := filepath.Join(dir, "out")
	os.Mkdir(out, 0o755)
	img := filepath.Join(out, "img")
	tests := []struct {
		name string
		args []string
		code int
		msg  string
	}{
		{"missing config", []string{"-c", filepath.Join(dir, "nope.conf"), "--profile", "busybox", img}, 1, "reading config: open " + filepath.Join(dir, "nope.conf")},
		{"config syntax", []string{"-c", filepath.Join(dir, "syntax.conf"), "--profile", "busybox", img}, 1, "syntax.conf:2: expected key=value"},
		{"size too small", []string{"-s", "1", "--profile", "busybox", img}, 1, "pack failed: image size 1 MB is too small"},
		{"unwritable target", []string{"--profile", "busybox", "/proc/rootstrap-test/img"}, 1, "resolve failed: cannot create the image"},
		{"target is a directory", []string{"--profile", "busybox", out}, 1, "is a directory"},
		{"unreachable mirror", []string{"-c", filepath.Join(dir, "mirror.conf"), img}, 1, "resolve failed: module debian: mirror http://127.0.0.1:9/debian does not serve bookworm"},
		{"failing module", []string{"-c", filepath.Join(dir, "fail.conf"), "--modules-dir", mods, "--profile", "busybox", img}, 1, "configure failed: module fail: " + filepath.Join(mods, "fail") + ": exit status 3: boom from the failing module"},
		{"unknown module", []string{"-c", filepath.Join(dir, "unknown.conf"), "--profile", "busybox", img}, 1, `unknown module "nosuchmodule"`},
		{"bad fstype", []string{"-c", filepath.Join(dir, "fstype.conf"), "--profile", "busybox", img}, 1, `fstype "xfs"`},
		{"missing tar", []string{"--from-tar", filepath.Join(dir, "nope.tar"), img}, 1, "unpack failed: module tar: open"},
		{"bad tar", []string{"--from-tar", write("bad.tar", strings.Repeat("junk", 300), 0o644), img}, 1, "unpack failed: module tar: reading tar"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := os.WriteFile(img, []byte("old image"), 0o644); err != nil {
				t.Fatal(err)
			}
			o, e, code := runRS(t, append([]string{"-q"}, tt.args...)...)
			if code != tt.code || !strings.Contains(e, tt.msg) || o != "" {
				t.Errorf("code %d, stderr %q, stdout %q; want %d and %q", code, e, o, tt.code, tt.msg)
			}
			if got, _ := os.ReadFile(img); string(got) != "old image" {
				t.Errorf("existing image was changed")
			}
			if l := leftovers(t, out, "img"); len(l) > 0 {
				t.Errorf("left behind: %v", l)
			}
		})
	}
}

// buildAsUser runs our rootstrap binary as an ordinary user: as is when
// the test is not root, else as nobody (uid 65534) in a directory nobody
// owns. It returns the directory and the command's combined output.
func buildAsUser(t *testing.T, args ...string) (string, string) {
	t.Helper()
	bin := testutil.Bin(t, "rootstrap")
	dir := t.TempDir()
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.Env = []string{"PATH=/usr/local/bin:/usr/bin:/bin", "HOME=" + dir, "TMPDIR=" + dir, "XDG_CONFIG_HOME=" + filepath.Join(dir, "config")}
	if os.Geteuid() == 0 {
		if err := os.Chown(dir, 65534, 65534); err != nil {
			t.Fatal(err)
		}
		// t.TempDir's parent is 0700 root: let nobody in.
		os.Chmod(filepath.Dir(dir), 0o755)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	}
	start := time.Now()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("rootstrap %v as uid %d: %v\n%s", args, uidOf(cmd), err, out)
	}
	t.Logf("rootstrap %v as uid %d: %.1fs", args, uidOf(cmd), time.Since(start).Seconds())
	return dir, string(out)
}

func uidOf(cmd *exec.Cmd) int {
	if cmd.SysProcAttr != nil && cmd.SysProcAttr.Credential != nil {
		return int(cmd.SysProcAttr.Credential.Uid)
	}
	return os.Geteuid()
}

func debugfs(t *testing.T, img, req string) string {
	t.Helper()
	p := testutil.NeedCmd(t, "debugfs")[0]
	out, err := exec.Command(p, "-R", req, img).CombinedOutput()
	if err != nil {
		t.Fatalf("debugfs -R %q: %v\n%s", req, err, out)
	}
	return string(out)
}

// owner returns "uid gid" of path in img.
func owner(t *testing.T, img, path string) string {
	f := strings.Fields(debugfs(t, img, "stat "+path))
	uid, gid := "?", "?"
	for i := 0; i+1 < len(f); i++ {
		if f[i] == "User:" && uid == "?" {
			uid = f[i+1]
		}
		if f[i] == "Group:" && gid == "?" {
			gid = f[i+1]
		}
	}
	return uid + " " + gid
}

// console drives a machine's console through a pipe on its stdin.
type console struct {
	t *testing.T
	w *os.File
	u *testutil.UML
}

func bootConsole(t *testing.T, args ...string) *console {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	u := testutil.StartUML(t, testutil.UMLOptions{Args: args, Stdin: r, Mem: "256M"})
	r.Close()
	t.Cleanup(func() { w.Close() })
	return &console{t: t, w: w, u: u}
}

func (c *console) send(s string) {
	c.t.Helper()
	if _, err := c.w.WriteString(s); err != nil {
		c.t.Fatalf("writing to the console: %v", err)
	}
}

// poweroff sends cmd and expects the machine to exit by itself.
func (c *console) poweroff(cmd string, timeout time.Duration) {
	c.t.Helper()
	c.send(cmd + "\n")
	c.u.PowerOff(c.t, timeout)
}

func tail(s string) string {
	if len(s) > 3000 {
		return s[len(s)-3000:]
	}
	return s
}

// TestBusyboxProfile is acceptance 1: an ordinary user builds the busybox
// image in seconds; it checks clean, every file belongs to root, and the C
// kernel boots it (no init= argument: /sbin/init with /etc/inittab) to a
// console shell that runs the commands piped to it.
func TestBusyboxProfile(t *testing.T) {
	testutil.NeedCmd(t, "mke2fs", "debugfs", "e2fsck", "dpkg-deb")
	start := time.Now()
	dir, out := buildAsUser(t, "--profile", "busybox", "bb.img")
	took := time.Since(start)
	img := filepath.Join(dir, "bb.img")
	if took > 30*time.Second {
		t.Errorf("busybox build took %v; want seconds", took)
	}
	if !strings.Contains(out, "I: wrote bb.img") {
		t.Errorf("no final I: line in output:\n%s", out)
	}
	testutil.E2fsck(t, img)
	for _, p := range []string{"/", "/bin", "/bin/busybox", "/etc/passwd", "/etc/inittab", "/init", "/dev/console", "/sbin/init", "/tmp"} {
		if got := owner(t, img, p); got != "0 0" {
			t.Errorf("%s owned by %s; want 0 0", p, got)
		}
	}
	if st := debugfs(t, img, "stat /dev/console"); !strings.Contains(st, "character special") || !strings.Contains(st, "05:01") {
		t.Errorf("/dev/console:\n%s", st)
	}
	if st := debugfs(t, img, "stat /tmp"); !strings.Contains(st, "Mode:  01777") {
		t.Errorf("/tmp is not 1777:\n%s", st)
	}
	if fi, err := os.Stat(img); err != nil || fi.Size() != 32<<20 {
		t.Errorf("image size: %v %v", fi, err)
	}

	c := bootConsole(t, "ubd0="+img)
	c.u.WaitOutput(t, "Enter 'help'", 60*time.Second)
	c.send("echo ANSWER=$((6*7)) $(id -u) $(hostname)\n")
	c.u.WaitOutput(t, "ANSWER=42 0 uml", 20*time.Second)
	c.send("touch /root/written && sync\n")
	c.poweroff("poweroff", 30*time.Second)
	testutil.E2fsck(t, img)
	if !strings.Contains(debugfs(t, img, "ls /root"), "written") {
		t.Error("the guest's write did not reach the image")
	}
}

// TestBusyboxJob boots the busybox image's job entry point (init=/init):
// it runs run.sh from a host directory and powers off.
func TestBusyboxJob(t *testing.T) {
	testutil.NeedCmd(t, "mke2fs", "debugfs", "dpkg-deb")
	dir, _ := buildAsUser(t, "--profile", "busybox", "--hostname", "jobhost", "bb.img")
	img := filepath.Join(dir, "bb.img")
	host := t.TempDir()
	script := "echo JOB-$(hostname)-$(cat /proc/mounts | grep -c ' /tmp ')\n"
	if err := os.WriteFile(filepath.Join(host, "run.sh"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	u := testutil.StartUML(t, testutil.UMLOptions{Args: []string{"ubd0=" + img, "init=/init", "umlrun=" + host}})
	u.WaitOutput(t, "JOB-jobhost-1", 60*time.Second)
	u.PowerOff(t, 30*time.Second)
	testutil.E2fsck(t, img)
}

func tarBytes(t *testing.T) []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	add := func(h *tar.Header, body string) {
		h.Size = int64(len(body))
		h.ModTime = time.Unix(1700000000, 0)
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		tw.Write([]byte(body))
	}
	add(&tar.Header{Name: "etc/", Typeflag: tar.TypeDir, Mode: 0o755}, "")
	add(&tar.Header{Name: "etc/motd", Typeflag: tar.TypeReg, Mode: 0o644}, "from a tar\n")
	add(&tar.Header{Name: "usr/bin/su", Typeflag: tar.TypeReg, Mode: 0o4755}, "su")
	add(&tar.Header{Name: "var/mail/", Typeflag: tar.TypeDir, Mode: 0o2775, Gid: 8}, "")
	add(&tar.Header{Name: "dev/null", Typeflag: tar.TypeChar, Mode: 0o666, Devmajor: 1, Devminor: 3}, "")
	tw.Close()
	return buf.Bytes()
}

// TestFromTarAndDir packs an existing tree: a tar file, a tar on standard
// input, and a directory. Owners, modes and devices come through.
func TestFromTarAndDir(t *testing.T) {
	dir := isolate(t)
	testutil.NeedCmd(t, "mke2fs", "debugfs", "e2fsck")
	tb := tarBytes(t)
	tarPath := filepath.Join(dir, "t.tar")
	os.WriteFile(tarPath, tb, 0o644)
	check := func(img string) {
		t.Helper()
		testutil.E2fsck(t, img)
		if got := debugfs(t, img, "cat /etc/motd"); !strings.Contains(got, "from a tar") {
			t.Errorf("motd: %q", got)
		}
		if got := owner(t, img, "/var/mail"); got != "0 8" {
			t.Errorf("/var/mail owner %s", got)
		}
		if st := debugfs(t, img, "stat /usr/bin/su"); !strings.Contains(st, "Mode:  04755") {
			t.Errorf("su mode:\n%s", st)
		}
		if st := debugfs(t, img, "stat /dev/null"); !strings.Contains(st, "character special") {
			t.Errorf("/dev/null:\n%s", st)
		}
	}
	if _, e, code := runRS(t, "-q", "--from-tar", tarPath, "a.img"); code != 0 {
		t.Fatalf("--from-tar: %d %s", code, e)
	}
	check(filepath.Join(dir, "a.img"))

	var o, e bytes.Buffer
	err := run([]string{"rootstrap", "-q", "--from-tar", "-", "b.img"}, bytes.NewReader(tb), &o, &e)
	if err != nil {
		t.Fatalf("--from-tar -: %v %s", err, e.String())
	}
	check(filepath.Join(dir, "b.img"))

	// A directory: unpack the tar with the system tar when root (so the
	// owners are real); otherwise check the contents only.
	if os.Geteuid() == 0 {
		tree := filepath.Join(dir, "tree")
		os.Mkdir(tree, 0o755)
		if b, err := exec.Command("tar", "-xpf", tarPath, "-C", tree).CombinedOutput(); err != nil {
			testutil.Skip(t, "tar cannot unpack here: %v %s", err, b)
		}
		if _, e, code := runRS(t, "-q", "--from-dir", tree, "c.img"); code != 0 {
			t.Fatalf("--from-dir: %d %s", code, e)
		}
		check(filepath.Join(dir, "c.img"))
	}
}

// TestModulesAndEnv checks [global] modules ordering, an external module
// overriding nothing but adding a step, and the environment a module gets
// (global keys, its own section, TARGET).
func TestModulesAndEnv(t *testing.T) {
	dir := isolate(t)
	testutil.NeedCmd(t, "mke2fs", "debugfs", "dpkg-deb")
	mods := filepath.Join(dir, "mods")
	os.Mkdir(mods, 0o755)
	os.WriteFile(filepath.Join(mods, "stamp"), []byte("#!/bin/sh\nset -e\nprintf '%s %s %s\\n' \"$fstype\" \"$color\" \"$ROOTSTRAP_MODULE\" > \"$TARGET/etc/stamp\"\n"), 0o755)
	conf := filepath.Join(dir, "r.conf")
	os.WriteFile(conf, []byte("[global]\nfstype=ext3\nmodules=busybox\n  fstab\n  stamp\n  hostname\n[stamp]\ncolor=blue\n[network]\nhostname=modhost\n"), 0o644)
	if _, e, code := runRS(t, "-q", "-c", conf, "--modules-dir", mods, "--profile", "busybox", "--root-password", "secret", "m.img"); code != 0 {
		t.Fatalf("%d %s", code, e)
	}
	img := filepath.Join(dir, "m.img")
	if got := debugfs(t, img, "cat /etc/stamp"); !strings.Contains(got, "ext3 blue stamp") {
		t.Errorf("stamp: %q", got)
	}
	if got := debugfs(t, img, "cat /etc/hostname"); !strings.Contains(got, "modhost") {
		t.Errorf("hostname: %q", got)
	}
	if got := debugfs(t, img, "cat /etc/fstab"); !strings.Contains(got, "/dev/ubda\t/\text3") {
		t.Errorf("fstab: %q", got)
	}
	// The root module was not listed: the password stays empty.
	if got := debugfs(t, img, "cat /etc/passwd"); !strings.Contains(got, "root::0:0") {
		t.Errorf("passwd: %q", got)
	}
	if out, _ := exec.Command(testutil.NeedCmd(t, "dumpe2fs")[0], "-h", img).CombinedOutput(); !strings.Contains(string(out), "has_journal") || strings.Contains(string(out), "extent") {
		t.Errorf("not an ext3 filesystem:\n%s", out)
	}
}

// TestRootPassword: --root-password stores a SHA-512 crypt hash.
func TestRootPassword(t *testing.T) {
	dir := isolate(t)
	testutil.NeedCmd(t, "mke2fs", "debugfs", "dpkg-deb")
	if _, e, code := runRS(t, "-q", "--profile", "busybox", "--root-password", "secret", "p.img"); code != 0 {
		t.Fatalf("%d %s", code, e)
	}
	got := debugfs(t, filepath.Join(dir, "p.img"), "cat /etc/passwd")
	if !strings.Contains(got, "root:$6$") {
		t.Errorf("passwd: %q", got)
	}
}

// TestLogFile: -o keeps the full log (the tools' output too) while -q
// keeps the terminal quiet.
func TestLogFile(t *testing.T) {
	dir := isolate(t)
	testutil.NeedCmd(t, "mke2fs", "debugfs", "dpkg-deb")
	o, e, code := runRS(t, "-q", "-o", "build.log", "--profile", "busybox", "l.img")
	if code != 0 || o != "" || e != "" {
		t.Fatalf("code %d stdout %q stderr %q", code, o, e)
	}
	log, err := os.ReadFile(filepath.Join(dir, "build.log"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"I: phase download", "I: phase pack", "Pass 5: Checking group summary", "I: done after"} {
		if !strings.Contains(string(log), want) {
			t.Errorf("log lacks %q:\n%s", want, log)
		}
	}
	_, e, _ = runRS(t, "--profile", "busybox", "l2.img")
	for _, want := range []string{"I: resolve\n", "I: download\n", "I: unpack\n", "I: configure\n", "I: pack\n", "I: wrote l2.img"} {
		if !strings.Contains(e, want) {
			t.Errorf("progress lacks %q:\n%s", want, e)
		}
	}
}
