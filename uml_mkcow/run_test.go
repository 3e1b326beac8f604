package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/umltools/umltools/internal/testutil"
)

type result = testutil.Result

func ours(args ...string) result { return testutil.RunIn(run, "uml_mkcow", args...) }

func theirs(t *testing.T, args ...string) result {
	t.Helper()
	return testutil.RunC(t, "/usr/bin/uml_mkcow", args...)
}

func backing(t *testing.T, dir string) string {
	t.Helper()
	p := filepath.Join(dir, "backing.img")
	if err := os.WriteFile(p, bytes.Repeat([]byte("abc"), 3<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	tm := time.Unix(1700000000, 0)
	os.Chtimes(p, tm, tm)
	return p
}

// TestHeaderIdentical is the first half of acceptance 2: for the same
// backing file, named absolutely, relatively, through a symlinked
// directory and from its own directory, our COW file is byte-identical to
// Debian's (header, size, content).
func TestHeaderIdentical(t *testing.T) {
	dir := t.TempDir()
	back := backing(t, dir)
	link := filepath.Join(t.TempDir(), "link")
	if err := os.Symlink(dir, link); err != nil {
		t.Fatal(err)
	}
	wd, _ := os.Getwd()
	defer os.Chdir(wd)
	if err := os.Chdir(dir); err != nil {
		t.Fatal(err)
	}
	for i, name := range []string{back, "backing.img", "./backing.img", link + "/backing.img", "../" + filepath.Base(dir) + "/backing.img"} {
		c, g := filepath.Join(dir, "c.cow"), filepath.Join(dir, "g.cow")
		os.Remove(c)
		os.Remove(g)
		rc, rg := theirs(t, c, name), ours(g, name)
		if rc.Code != 0 || rg != rc {
			t.Fatalf("%d %s: C %+v, ours %+v", i, name, rc, rg)
		}
		cb, _ := os.ReadFile(c)
		gb, _ := os.ReadFile(g)
		if !bytes.Equal(cb, gb) {
			t.Fatalf("%s: COW files differ (C %d bytes, ours %d)", name, len(cb), len(gb))
		}
		if !bytes.Contains(gb[:4128], []byte(back+"\x00")) {
			t.Fatalf("%s: header does not hold %s", name, back)
		}
		st, _ := os.Stat(g)
		// 9 MiB backing: bitmap 2304 bytes at 8192, data at 12288.
		if st.Mode().Perm() != 0o644 || st.Size() != 12288+9<<20 {
			t.Errorf("%s: mode %v size %d", name, st.Mode(), st.Size())
		}
	}
}

// TestErrors compares usage and error behaviour with Debian's uml_mkcow,
// and checks the deliberate differences: no empty COW file is left behind,
// the perror line names the real cause, -f truncates.
func TestErrors(t *testing.T) {
	dir := t.TempDir()
	back := backing(t, dir)
	existing := filepath.Join(dir, "exists.cow")
	os.WriteFile(existing, []byte("keep me"), 0o644)
	same := []struct {
		name string
		args []string
	}{
		{"no args", nil},
		{"one arg", []string{"x.cow"}},
		{"-f only", []string{"-f"}},
		{"-f one arg", []string{"-f", "x.cow"}},
		{"exists", []string{existing, back}},
		{"cow dir missing", []string{dir + "/no/x.cow", back}},
	}
	for _, c := range same {
		t.Run(c.name, func(t *testing.T) {
			if rg, rc := ours(c.args...), theirs(t, c.args...); rg != rc || rc.Code == 0 {
				t.Fatalf("C %+v\nours %+v", rc, rg)
			}
		})
	}
	if b, _ := os.ReadFile(existing); string(b) != "keep me" {
		t.Fatalf("existing file changed: %q", b)
	}
	// Same stdout line; a true perror line; no file left.
	for _, c := range []struct{ name, backing, stderr string }{
		{"missing backing", dir + "/nonexist.img", "write_cow_header: No such file or directory\n"},
		{"missing backing dir", dir + "/nodir/x.img", "write_cow_header: No such file or directory\n"},
	} {
		t.Run(c.name, func(t *testing.T) {
			cc, gc := filepath.Join(dir, "c-"+c.name), filepath.Join(dir, "g-"+c.name)
			rc, rg := theirs(t, cc, c.backing), ours(gc, c.backing)
			if rg.Code != 1 || rc.Code != 1 || rg.Stdout != rc.Stdout || rg.Stderr != c.stderr {
				t.Fatalf("C %+v\nours %+v", rc, rg)
			}
			if _, err := os.Stat(gc); err == nil {
				t.Errorf("our uml_mkcow left %s behind", gc)
			}
		})
	}
	// -f over an existing larger file with stale bits: we truncate.
	big := filepath.Join(dir, "big.cow")
	os.WriteFile(big, bytes.Repeat([]byte{0xff}, 20<<20), 0o644)
	if r := ours("-f", big, back); r.Code != 0 {
		t.Fatalf("-f: %+v", r)
	}
	fresh := filepath.Join(dir, "fresh.cow")
	ours(fresh, back)
	a, _ := os.ReadFile(big)
	b, _ := os.ReadFile(fresh)
	if !bytes.Equal(a, b) {
		t.Fatalf("-f did not produce a fresh COW file (%d vs %d bytes)", len(a), len(b))
	}
	// -f with a bad backing file leaves the existing file untouched.
	if r := ours("-f", existing, dir+"/nonexist.img"); r.Code != 1 {
		t.Fatalf("%+v", r)
	}
	if b, _ := os.ReadFile(existing); string(b) != "keep me" {
		t.Fatalf("existing file changed: %q", b)
	}
	if r := ours("--help"); r.Code != 0 || !strings.Contains(r.Stdout, "-f") {
		t.Errorf("--help: %+v", r)
	}
}

// TestKernelBootsOurCOW is the second half of acceptance 2: the C kernel
// boots a COW file we created and writes through it, then Debian's
// uml_moo merges it into an image that is clean and holds the guest's file.
func TestKernelBootsOurCOW(t *testing.T) {
	img := testutil.BusyboxImage(t)
	dir := t.TempDir()
	c := filepath.Join(dir, "ours.cow")
	if r := ours(c, img); r.Code != 0 {
		t.Fatalf("%+v", r)
	}
	host := t.TempDir()
	os.WriteFile(filepath.Join(host, "run.sh"), []byte("echo made-by-our-cow > /mark.txt\nsync\necho GUEST-DONE\npoweroff -f\n"), 0o755)
	u := testutil.StartUML(t, testutil.UMLOptions{Args: []string{"ubd0=" + c, "rw", "init=/init", "umltest=" + host}})
	u.WaitOutput(t, "GUEST-DONE", 90*time.Second)
	if err, ok := u.Wait(30 * time.Second); !ok {
		t.Fatalf("machine did not power off: %v", err)
	}
	if strings.Contains(u.Output(), "mismatch") || strings.Contains(u.Output(), "Creating") {
		t.Fatalf("kernel did not use our COW file as is:\n%s", u.Output())
	}
	out := filepath.Join(dir, "merged.img")
	const moo = "/usr/bin/uml_moo"
	if _, err := os.Stat(moo); err != nil {
		testutil.Skip(t, "Debian uml-utilities (/usr/bin/uml_moo) not installed")
	}
	if b, err := exec.Command(moo, c, out).CombinedOutput(); err != nil {
		t.Fatalf("Debian uml_moo: %v: %s", err, b)
	}
	testutil.E2fsck(t, out)
	p := testutil.NeedCmd(t, "debugfs")[0]
	got, err := exec.Command(p, "-R", "cat /mark.txt", out).Output()
	if err != nil || string(got) != "made-by-our-cow\n" {
		t.Fatalf("debugfs cat /mark.txt: %q %v", got, err)
	}
}
