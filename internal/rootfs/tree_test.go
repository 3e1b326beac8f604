package rootfs

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/umltools/umltools/internal/testutil"
)

func TestSHA512Crypt(t *testing.T) {
	// Vectors from the SHA-crypt specification.
	tests := []struct{ pw, salt, want string }{
		{"Hello world!", "saltstring", "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1"},
		{"", "saltstring", ""},
		{strings.Repeat("x", 100), "abc", ""},
	}
	for _, tt := range tests {
		got, err := SHA512Crypt(tt.pw, tt.salt)
		if err != nil {
			t.Fatal(err)
		}
		if tt.want != "" && got != tt.want {
			t.Errorf("SHA512Crypt(%q, %q) = %q; want %q", tt.pw, tt.salt, got, tt.want)
		}
		// Cross-check with openssl when it is installed.
		if p, err := exec.LookPath("openssl"); err == nil && tt.pw != "" {
			out, err := exec.Command(p, "passwd", "-6", "-salt", tt.salt, tt.pw).Output()
			if err == nil && strings.TrimSpace(string(out)) != got {
				t.Errorf("openssl says %q, we say %q", strings.TrimSpace(string(out)), got)
			}
		}
	}
	a, _ := SHA512Crypt("pw", "")
	b, _ := SHA512Crypt("pw", "")
	if a == b || !strings.HasPrefix(a, "$6$") || len(a) != 3+16+1+86 {
		t.Errorf("random salts: %q %q", a, b)
	}
	if _, err := SHA512Crypt("pw", "a$b"); err == nil {
		t.Error("salt with $ accepted")
	}
}

func TestResolveConfined(t *testing.T) {
	root := t.TempDir()
	outside := t.TempDir()
	tr, err := NewTree(root, false)
	if err != nil {
		t.Fatal(err)
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(tr.Mkdir("etc", 0o755))
	must(os.Symlink(outside, filepath.Join(root, "abs")))                // absolute, outside
	must(os.Symlink("../../../../"+outside, filepath.Join(root, "rel"))) // climbs above the root
	must(os.Symlink("/etc/real", filepath.Join(root, "etc/link")))       // absolute, inside
	must(os.Symlink("loop2", filepath.Join(root, "loop1")))
	must(os.Symlink("loop1", filepath.Join(root, "loop2")))
	for _, p := range []string{"abs/x", "rel/x", "../x", "/../../x", "etc/link"} {
		must(tr.WriteFile(p, []byte("data"), 0o644))
	}
	if ents, _ := os.ReadDir(outside); len(ents) != 0 {
		t.Fatalf("wrote outside the tree: %v", ents)
	}
	if b, err := os.ReadFile(filepath.Join(root, "etc/real")); err != nil || string(b) != "data" {
		t.Errorf("etc/link was not followed inside the tree: %v", err)
	}
	if _, err := tr.Resolve("loop1/x", true); err == nil || !strings.Contains(err.Error(), "symbolic links") {
		t.Errorf("symlink loop: %v", err)
	}
	if got, _ := tr.Resolve("a/../../b", false); got != filepath.Join(root, "b") {
		t.Errorf("Resolve = %q", got)
	}
}

// tarOf builds a tar archive from headers (regular files get body "x").
func tarOf(t *testing.T, hs []*tar.Header) []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, h := range hs {
		body := ""
		if h.Typeflag == tar.TypeReg {
			body = "content of " + h.Name
			h.Size = int64(len(body))
		}
		if h.ModTime.IsZero() {
			h.ModTime = time.Unix(1700000000, 0)
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		io.WriteString(tw, body)
	}
	tw.Close()
	return buf.Bytes()
}

// sampleTar has what an unprivileged build cannot stage as is: foreign
// owners, setuid, a directory without write permission, a device node.
func sampleTar(t *testing.T) []byte {
	return tarOf(t, []*tar.Header{
		{Name: "./", Typeflag: tar.TypeDir, Mode: 0o755},
		{Name: "./etc/", Typeflag: tar.TypeDir, Mode: 0o755},
		{Name: "./etc/shadow", Typeflag: tar.TypeReg, Mode: 0o640, Gid: 42},
		{Name: "./usr/bin/su", Typeflag: tar.TypeReg, Mode: 0o4755},
		{Name: "./usr/bin/crontab", Typeflag: tar.TypeReg, Mode: 0o2755, Gid: 101},
		{Name: "./usr/bin/crontab2", Typeflag: tar.TypeLink, Linkname: "./usr/bin/crontab"},
		{Name: "./var/mail/", Typeflag: tar.TypeDir, Mode: 0o2775, Gid: 8},
		{Name: "./proc/", Typeflag: tar.TypeDir, Mode: 0o555},
		{Name: "./home/user/", Typeflag: tar.TypeDir, Mode: 0o700, Uid: 1000, Gid: 1000},
		{Name: "./home/user/file", Typeflag: tar.TypeReg, Mode: 0o600, Uid: 1000, Gid: 1000},
		{Name: "./bin/sh", Typeflag: tar.TypeSymlink, Linkname: "dash"},
		{Name: "./dev/null", Typeflag: tar.TypeChar, Mode: 0o666, Devmajor: 1, Devminor: 3},
		{Name: "./dev/sda", Typeflag: tar.TypeBlock, Mode: 0o660, Devmajor: 8, Devminor: 0, Gid: 6},
		{Name: "./run/fifo", Typeflag: tar.TypeFifo, Mode: 0o644},
		{Name: "../../escape", Typeflag: tar.TypeReg, Mode: 0o644},
	})
}

func debugfsOut(t *testing.T, img, cmd string) string {
	t.Helper()
	p := testutil.NeedCmd(t, "debugfs")[0]
	out, err := exec.Command(p, "-R", cmd, img).CombinedOutput()
	if err != nil {
		t.Fatalf("debugfs -R %q: %v\n%s", cmd, err, out)
	}
	return string(out)
}

// statOf returns "mode uid gid" of path in img (mode in octal, with type).
func statOf(t *testing.T, img, path string) string {
	t.Helper()
	out := debugfsOut(t, img, "stat "+path)
	var mode, uid, gid string
	for _, f := range strings.Fields(strings.ReplaceAll(out, "\n", " ")) {
		_ = f
	}
	fields := strings.Fields(out)
	for i := 0; i+1 < len(fields); i++ {
		switch fields[i] {
		case "Mode:":
			if mode == "" {
				mode = fields[i+1]
			}
		case "User:":
			if uid == "" {
				uid = fields[i+1]
			}
		case "Group:":
			if gid == "" {
				gid = fields[i+1]
			}
		}
	}
	return mode + " " + uid + " " + gid
}

func newTestBuilder(t *testing.T, noUserns bool) *builder {
	p := NewProgress(io.Discard, false, true, false, nil)
	return &builder{ctx: context.Background(), c: NewConfig(), p: p, tmp: t.TempDir(), noUserns: noUserns, env: os.Environ()}
}

// TestPackTarUnprivileged stages a tar the way an ordinary user must (no
// chown, no mknod) and checks the image gets the tar's owners, modes and
// devices anyway — with mkfs in a user namespace, and with the debugfs
// fallback used where user namespaces are unavailable.
func TestPackTarUnprivileged(t *testing.T) {
	testutil.NeedCmd(t, "mke2fs", "debugfs", "e2fsck")
	for _, noUserns := range []bool{false, true} {
		name := "userns"
		if noUserns {
			name = "debugfs-fallback"
		}
		t.Run(name, func(t *testing.T) {
			if !noUserns && !UsernsWorks() {
				testutil.Skip(t, "user namespaces unavailable here")
			}
			b := newTestBuilder(t, noUserns)
			stage := filepath.Join(b.tmp, "root")
			os.Mkdir(stage, 0o755)
			tr, err := NewTree(stage, false)
			if err != nil {
				t.Fatal(err)
			}
			if err := tr.AddTar(bytes.NewReader(sampleTar(t)), nil); err != nil {
				t.Fatal(err)
			}
			if _, err := os.Lstat(filepath.Join(filepath.Dir(b.tmp), "escape")); err == nil {
				t.Fatal("tar member escaped the tree")
			}
			img := filepath.Join(t.TempDir(), "img")
			if err := b.pack(tr, PackOptions{FSType: "ext4"}, img); err != nil {
				t.Fatal(err)
			}
			testutil.E2fsck(t, img)
			want := map[string]string{
				"/etc/shadow":      "0640 0 42",
				"/usr/bin/su":      "04755 0 0",
				"/usr/bin/crontab": "02755 0 101",
				"/var/mail":        "02775 0 8",
				"/proc":            "0555 0 0",
				"/home/user":       "0700 1000 1000",
				"/home/user/file":  "0600 1000 1000",
				"/bin/sh":          "0777 0 0",
				"/dev/null":        "0666 0 0",
				"/dev/sda":         "0660 0 6",
				"/run/fifo":        "0644 0 0",
				"/escape":          "0644 0 0",
				"/":                "0755 0 0",
			}
			for p, w := range want {
				if got := statOf(t, img, p); got != w {
					t.Errorf("%s: %q; want %q", p, got, w)
				}
			}
			if out := debugfsOut(t, img, "stat /dev/null"); !strings.Contains(out, "character special") || !strings.Contains(out, "Device major/minor number: 01:03") {
				t.Errorf("/dev/null is not char 1:3:\n%s", out)
			}
			if out := debugfsOut(t, img, "stat /usr/bin/crontab2"); !strings.Contains(out, "Links: 2") {
				t.Errorf("hard link lost:\n%s", out)
			}
			if out := debugfsOut(t, img, "cat /etc/shadow"); !strings.Contains(out, "content of ./etc/shadow") {
				t.Errorf("content: %q", out)
			}
		})
	}
}

func TestImageSize(t *testing.T) {
	size, need := imageSize(PackOptions{FSType: "ext4"}, 2*mib, 400)
	if size != 32*mib || need > size {
		t.Errorf("tiny tree: size %d need %d", size, need)
	}
	size, need = imageSize(PackOptions{FSType: "ext4"}, 400*mib, 12000)
	if size < need+100*mib || size > need+200*mib {
		t.Errorf("400M tree: size %d MiB need %d MiB", size/mib, need/mib)
	}
	size, _ = imageSize(PackOptions{FSType: "ext2", SizeMB: 150}, 10*mib, 100)
	if size != 150*mib {
		t.Errorf("explicit size: %d", size)
	}
	size, need = imageSize(PackOptions{FSType: "ext4", FreeMB: 500}, 100*mib, 100)
	if size < need+500*mib || size > need+501*mib {
		t.Errorf("freespace: size %d need %d", size/mib, need/mib)
	}
}

func TestDebianDefaults(t *testing.T) {
	d := t.TempDir()
	os.MkdirAll(filepath.Join(d, "sources.list.d"), 0o755)
	os.WriteFile(filepath.Join(d, "sources.list.d", "a.sources"), []byte(
		"Types: deb\nURIs: http://deb.debian.org/debian-security\nSuites: bookworm-security\n\n"+
			"Types: deb deb-src\nURIs: http://mirror.example/debian/\nSuites: trixie trixie-updates\nComponents: main\n"), 0o644)
	dist, mirror := DebianDefaults(d)
	if dist != "trixie" || mirror != "http://mirror.example/debian" {
		t.Errorf("deb822: %q %q", dist, mirror)
	}
	os.WriteFile(filepath.Join(d, "sources.list"), []byte("# x\ndeb [arch=amd64] http://ftp.example/debian/ sid main\n"), 0o644)
	dist, mirror = DebianDefaults(d)
	if dist != "sid" || mirror != "http://ftp.example/debian" {
		t.Errorf("one-line: %q %q", dist, mirror)
	}
	dist, mirror = DebianDefaults(t.TempDir())
	if dist != "bookworm" || mirror != "http://deb.debian.org/debian" {
		t.Errorf("fallback: %q %q", dist, mirror)
	}
}

// FuzzClean: clean never yields a path that climbs out of the tree.
func FuzzClean(f *testing.F) {
	for _, s := range []string{"../../etc", "/a/../../b", "./x/./y/..", "", "..", "a/b/../../../c"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		c := clean(p)
		if strings.HasPrefix(c, "/") || c == ".." || strings.HasPrefix(c, "../") || strings.Contains(c, "/../") || strings.HasSuffix(c, "/..") {
			t.Fatalf("clean(%q) = %q", p, c)
		}
	})
}

func TestAddTarGzip(t *testing.T) {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(sampleTar(t))
	zw.Close()
	tr, err := NewTree(t.TempDir(), false)
	if err != nil {
		t.Fatal(err)
	}
	if err := tr.AddTar(&buf, nil); err != nil {
		t.Fatal(err)
	}
	if b, err := tr.ReadFile("etc/shadow"); err != nil || string(b) != "content of ./etc/shadow" {
		t.Errorf("etc/shadow: %q %v", b, err)
	}
}

// TestProgress checks both displays: plain I: lines with phase counts off
// a terminal, an in-place status line on one; -q keeps warnings only, and
// the log gets everything.
func TestProgress(t *testing.T) {
	clock := time.Unix(1000, 0)
	tick := func() time.Time { clock = clock.Add(500 * time.Millisecond); return clock }
	var plain, log bytes.Buffer
	p := NewProgress(&plain, false, false, false, &log)
	p.now = tick
	p.Phase(PhaseDownload)
	p.Step()
	p.Step()
	p.Output("tool output")
	p.Phase(PhaseUnpack)
	p.Infof("hello %d", 1)
	p.Warnf("careful")
	p.Debugf("hidden")
	p.Done(true)
	want := "I: download\nI: download: 2 in 0.5s\nI: unpack\nI: hello 1\nW: careful\n"
	if plain.String() != want {
		t.Errorf("plain:\n%q\nwant\n%q", plain.String(), want)
	}
	for _, w := range []string{"I: phase download", "tool output", "D: hidden", "I: done after"} {
		if !strings.Contains(log.String(), w) {
			t.Errorf("log lacks %q:\n%s", w, log.String())
		}
	}

	var tty bytes.Buffer
	p = NewProgress(&tty, true, false, false, nil)
	p.now = tick
	p.Phase(PhaseDownload)
	p.Count(3, 40)
	p.Infof("note")
	p.Done(false)
	s := tty.String()
	for _, w := range []string{"\r\033[K[download] 3/40", "\r\033[KI: note\n", "(total "} {
		if !strings.Contains(s, w) {
			t.Errorf("tty output lacks %q: %q", w, s)
		}
	}
	if !strings.HasSuffix(s, "\r\033[K") {
		t.Errorf("status line not cleared at the end: %q", s)
	}

	var quiet bytes.Buffer
	p = NewProgress(&quiet, false, true, true, nil)
	p.Phase(PhasePack)
	p.Infof("x")
	p.Output("y")
	p.Warnf("w")
	if quiet.String() != "W: w\n" {
		t.Errorf("quiet: %q", quiet.String())
	}
}

func TestBuildDefault(t *testing.T) {
	testutil.NeedCmd(t, "mke2fs", "debugfs", "e2fsck", "dpkg-deb")
	img := filepath.Join(t.TempDir(), "default.img")
	var log bytes.Buffer
	if err := BuildDefault(context.Background(), img, &log); err != nil {
		t.Fatalf("%v\n%s", err, log.String())
	}
	testutil.E2fsck(t, img)
	if got := debugfsOut(t, img, "cat /etc/inittab"); !strings.Contains(got, "::sysinit:/etc/init.d/rcS") {
		t.Errorf("inittab: %q", got)
	}
	if got := debugfsOut(t, img, "stat /sbin/init"); !strings.Contains(got, "Type: symlink") {
		t.Errorf("/sbin/init: %q", got)
	}
	if !strings.Contains(log.String(), "I: wrote "+img) {
		t.Errorf("log: %s", log.String())
	}
}

// FuzzAddTar unpacks three-member archives of any names, types and link
// targets: nothing may be created outside the tree (the sibling directory
// stays empty) and nothing may panic.
func FuzzAddTar(f *testing.F) {
	f.Add("evil", byte(tar.TypeSymlink), "/outside", "evil/x", byte(tar.TypeReg), "", "evil/../../y", byte(tar.TypeDir), "")
	f.Add("a", byte(tar.TypeSymlink), "../../../outside", "a/b", byte(tar.TypeDir), "", "a/b/c", byte(tar.TypeReg), "")
	f.Add("l", byte(tar.TypeSymlink), "/", "h", byte(tar.TypeLink), "l/../outside", "d", byte(tar.TypeChar), "")
	f.Add("x", byte(tar.TypeReg), "", "x/y", byte(tar.TypeReg), "", "x", byte(tar.TypeDir), "")
	f.Fuzz(func(t *testing.T, n1 string, t1 byte, l1 string, n2 string, t2 byte, l2 string, n3 string, t3 byte, l3 string) {
		base := t.TempDir()
		root := filepath.Join(base, "root")
		outside := filepath.Join(base, "outside")
		os.Mkdir(root, 0o755)
		os.Mkdir(outside, 0o755)
		var hs []*tar.Header
		for _, e := range []struct {
			n string
			t byte
			l string
		}{{n1, t1, l1}, {n2, t2, l2}, {n3, t3, l3}} {
			if strings.ContainsRune(e.n, 0) || strings.ContainsRune(e.l, 0) || len(e.n) > 200 || len(e.l) > 200 {
				return
			}
			hs = append(hs, &tar.Header{Name: e.n, Typeflag: e.t, Linkname: e.l, Mode: 0o755})
		}
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		for _, h := range hs {
			if h.Typeflag == tar.TypeReg {
				h.Size = 1
			}
			if err := tw.WriteHeader(h); err != nil {
				return
			}
			if h.Typeflag == tar.TypeReg {
				tw.Write([]byte("x"))
			}
		}
		tw.Close()
		tr, err := NewTree(root, false)
		if err != nil {
			t.Fatal(err)
		}
		tr.AddTar(&buf, nil)
		if ents, _ := os.ReadDir(outside); len(ents) != 0 {
			t.Fatalf("created outside the tree: %v", ents)
		}
		if ents, _ := os.ReadDir(base); len(ents) != 2 {
			t.Fatalf("created beside the tree: %v", ents)
		}
		tr.fixups(nil)
	})
}
