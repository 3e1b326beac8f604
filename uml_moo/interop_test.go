package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/umltools/umltools/internal/cow"
	"github.com/umltools/umltools/internal/testutil"
)

type result = testutil.Result

// ours runs our uml_moo in-process.
func ours(args ...string) result { return testutil.RunIn(run, "uml_moo", args...) }

// theirs runs Debian's /usr/bin/uml_moo with argv[0] "uml_moo".
func theirs(t *testing.T, args ...string) result {
	t.Helper()
	return testutil.RunC(t, cMoo(t), args...)
}

func cMoo(t *testing.T) string {
	t.Helper()
	const p = "/usr/bin/uml_moo"
	if _, err := os.Stat(p); err != nil {
		testutil.Skip(t, "Debian uml-utilities (/usr/bin/uml_moo) not installed")
	}
	return p
}

func fileSum(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return sha256hex(b)
}

func sha256hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// blocks returns st_blocks (512-byte units allocated).
func blocks(t *testing.T, p string) int64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(p, &st); err != nil {
		t.Fatal(err)
	}
	return st.Blocks
}

func sameFile(t *testing.T, a, b string) {
	t.Helper()
	out, err := exec.Command("cmp", a, b).CombinedOutput()
	if err != nil {
		t.Fatalf("cmp %s %s: %v: %s", a, b, err, out)
	}
}

func debugfsCat(t *testing.T, img, path string) string {
	t.Helper()
	p := testutil.NeedCmd(t, "debugfs")[0]
	out, err := exec.Command(p, "-R", "cat "+path, img).Output()
	if err != nil {
		t.Fatalf("debugfs cat %s in %s: %v", path, img, err)
	}
	return string(out)
}

// TestKernelCOW is acceptance 1: the C kernel writes through a COW file it
// creates over an ext4 image; our uml_moo's output is byte-identical to
// Debian's, for the new-file form and for -d on copies of the backing
// file, and both images are clean and hold the guest's files.
func TestKernelCOW(t *testing.T) {
	cMoo(t)
	img := testutil.BusyboxImage(t)
	dir := t.TempDir()
	cowFile := filepath.Join(dir, "disk.cow")
	host := t.TempDir()
	script := `set -e
echo hello-from-guest > /hello.txt
mkdir -p /data
dd if=/dev/urandom of=/data/rand bs=4k count=600 2>/dev/null
sha256sum /data/rand | cut -d' ' -f1 > /host/rand.sum
n=$(wc -c < /etc/passwd)
dd if=/dev/zero of=/etc/passwd bs=1 count=$n conv=notrunc 2>/dev/null
dd if=/dev/zero of=/data/zeros bs=4k count=64 2>/dev/null
rm -f /etc/group
sync
echo GUEST-READY
while [ ! -e /host/go ]; do sleep 0.1; done
echo GUEST-DONE
poweroff -f
`
	if err := os.WriteFile(filepath.Join(host, "run.sh"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	before, _ := os.Stat(img)
	u := testutil.StartUML(t, testutil.UMLOptions{Args: []string{"ubd0=" + cowFile + "," + img, "rw", "init=/init", "umltest=" + host}})
	u.WaitOutput(t, "GUEST-READY", 90*time.Second)
	// While the machine runs, its fcntl lock keeps us from merging.
	if r := ours(cowFile, filepath.Join(dir, "early.img")); r.Code != 1 || !strings.Contains(r.Stderr, "is locked by process") {
		t.Errorf("merge of a COW file in use: %+v", r)
	}
	// Nor merge another COW file into the backing file it reads.
	other := filepath.Join(dir, "other.cow")
	if _, err := cow.Create(other, img, false); err != nil {
		t.Fatal(err)
	}
	if r := ours("-d", other); r.Code != 1 || !strings.Contains(r.Stderr, img+" is locked by process") {
		t.Errorf("-d merge into a backing file in use: %+v", r)
	}
	os.WriteFile(filepath.Join(host, "go"), nil, 0o644)
	u.WaitOutput(t, "GUEST-DONE", 30*time.Second)
	if err, ok := u.Wait(30 * time.Second); !ok {
		t.Fatalf("machine did not power off: %v", err)
	}
	if !strings.Contains(u.Output(), "as COW file for") {
		t.Fatalf("the kernel did not create the COW file; output:\n%s", u.Output())
	}
	after, _ := os.Stat(img)
	if !after.ModTime().Equal(before.ModTime()) {
		t.Fatalf("backing file mtime changed")
	}
	cowBefore := fileSum(t, cowFile)
	r := ours("--info", "--json", cowFile)
	t.Logf("COW written by the kernel: %s", r.Stdout)
	if r.Code != 0 || !strings.Contains(r.Stdout, `"backing_status": "ok"`) {
		t.Fatalf("--info: %+v", r)
	}

	// Non-destructive form.
	outC, outGo := filepath.Join(dir, "c.img"), filepath.Join(dir, "go.img")
	if r := theirs(t, cowFile, outC); r.Code != 0 {
		t.Fatalf("C uml_moo: %+v", r)
	}
	if r := ours(cowFile, outGo); r.Code != 0 || r.Stdout != "" || r.Stderr != "" {
		t.Fatalf("our uml_moo: %+v", r)
	}
	sameFile(t, outC, outGo)
	if blocks(t, outGo) > blocks(t, outC) {
		t.Errorf("our output uses %d blocks, C's %d: not as sparse", blocks(t, outGo), blocks(t, outC))
	}

	// The block-device view reads the same disk.
	f, err := cow.Open(cowFile, cow.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	disk := make([]byte, f.Size())
	if _, err := f.ReadAt(disk, 0); err != nil {
		t.Fatal(err)
	}
	f.Close()
	want, _ := os.ReadFile(outC)
	if !bytes.Equal(disk, want) {
		t.Fatalf("cow.File reads a different disk than uml_moo merged")
	}

	// Destructive form, on copies of the backing file.
	backC, backGo := filepath.Join(dir, "back-c.img"), filepath.Join(dir, "back-go.img")
	testutil.CopySparse(t, img, backC)
	testutil.CopySparse(t, img, backGo)
	if r := theirs(t, "-d", "-b", backC, cowFile); r.Code != 0 {
		t.Fatalf("C uml_moo -d: %+v", r)
	}
	// Our -d accepts -b first too.
	if r := ours("-b", backGo, "-d", cowFile); r.Code != 0 || r.Stdout != "" {
		t.Fatalf("our uml_moo -d: %+v", r)
	}
	sameFile(t, backC, backGo)
	sameFile(t, backGo, outGo)
	if fileSum(t, cowFile) != cowBefore {
		t.Fatalf("the COW file was modified")
	}
	if _, err := os.Stat(cow.MarkerPath(backGo)); err == nil {
		t.Fatalf("merge marker left behind")
	}

	sum, err := os.ReadFile(filepath.Join(host, "rand.sum"))
	if err != nil {
		t.Fatal(err)
	}
	for _, im := range []string{outC, outGo, backGo} {
		testutil.E2fsck(t, im)
		if got := debugfsCat(t, im, "/hello.txt"); got != "hello-from-guest\n" {
			t.Errorf("%s: /hello.txt = %q", im, got)
		}
		if got := sha256hex([]byte(debugfsCat(t, im, "/data/rand"))); got != strings.TrimSpace(string(sum)) {
			t.Errorf("%s: /data/rand sha256 %s, guest saw %s", im, got, sum)
		}
	}
	// The original image is untouched by the non-destructive merges.
	if got := debugfsCat(t, img, "/hello.txt"); got != "" {
		t.Errorf("backing image changed: /hello.txt = %q", got)
	}
}

// makeBacking writes a backing file of size bytes: pseudo-random sectors,
// some all-zero sectors, and a hole, with the given mtime.
func makeBacking(t *testing.T, path string, size int64, mtime int64, seed int64) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	rnd := rand.New(rand.NewSource(seed))
	sec := make([]byte, 512)
	for i := int64(0); i*512 < size; i++ {
		if i%7 == 3 || (i >= 1000 && i < 1600) {
			continue
		}
		rnd.Read(sec)
		n := min(512, size-i*512)
		if _, err := f.WriteAt(sec[:n], i*512); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	f.Close()
	tm := time.Unix(mtime, 0)
	if err := os.Chtimes(path, tm, tm); err != nil {
		t.Fatal(err)
	}
}

// cowSectors picks COW sectors: random data, zero sectors (some over
// non-zero backing sectors), the first and the last whole sector.
func cowSectors(size int64, ss int, seed int64) map[int64][]byte {
	rnd := rand.New(rand.NewSource(seed))
	m := map[int64][]byte{}
	n := size / int64(ss)
	for i := int64(0); i < n; i++ {
		switch {
		case i%13 == 0 || (i >= 3000 && i < 3100) || i == n-1:
			b := make([]byte, ss)
			rnd.Read(b)
			m[i] = b
		case i%17 == 1 || (i >= 1200 && i < 1210):
			m[i] = make([]byte, ss)
		}
	}
	m[n-1] = make([]byte, ss) // a zero last sector
	return m
}

// TestCraftedVersions is acceptance 3: v1, v2, v3 variants and the broken
// 64-bit v3 layout merge identically with both tools, in both forms, with
// the same stdout, stderr and exit status.
func TestCraftedVersions(t *testing.T) {
	cMoo(t)
	const mtime = 1700000000
	cases := []struct {
		name string
		spec testutil.COWSpec
		size int64
	}{
		{"v1", testutil.COWSpec{Version: 1}, 8 << 20},
		{"v2", testutil.COWSpec{Version: 2}, 8 << 20},
		{"v3", testutil.COWSpec{Version: 3}, 8 << 20},
		{"v3-partial-sector", testutil.COWSpec{Version: 3}, 8<<20 + 3*512 + 100},
		{"v3-broken", testutil.COWSpec{Version: 3, Broken: true}, 8 << 20},
		{"v3-name-junk", testutil.COWSpec{Version: 3, Junk: true}, 4 << 20},
		{"v3-align512", testutil.COWSpec{Version: 3, Align: 512}, 4 << 20},
		{"v3-sector1024", testutil.COWSpec{Version: 3, SectorSize: 1024}, 4 << 20},
		{"v1-small", testutil.COWSpec{Version: 1}, 64 << 10},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			back := filepath.Join(dir, "backing.img")
			makeBacking(t, back, c.size, mtime, int64(i))
			s := c.spec
			s.Backing, s.Mtime, s.Size = back, mtime, uint64(c.size)
			ss := max(s.SectorSize, 512)
			s.Sectors = cowSectors(c.size, ss, int64(i)+100)
			cowFile := filepath.Join(dir, "x.cow")
			testutil.CraftCOW(t, cowFile, s)

			outC, outGo := filepath.Join(dir, "c.img"), filepath.Join(dir, "go.img")
			rc, rg := theirs(t, cowFile, outC), ours(cowFile, outGo)
			if rc != rg {
				t.Fatalf("C: %+v\nours: %+v", rc, rg)
			}
			if rc.Code != 0 {
				t.Fatalf("merge failed: %+v", rc)
			}
			if c.spec.Broken && !strings.Contains(rg.Stdout, "broken V3") {
				t.Errorf("no broken-V3 note: %+v", rg)
			}
			sameFile(t, outC, outGo)
			if blocks(t, outGo) > blocks(t, outC) {
				t.Errorf("our output uses %d blocks, C's %d", blocks(t, outGo), blocks(t, outC))
			}

			backC, backGo := filepath.Join(dir, "bc.img"), filepath.Join(dir, "bg.img")
			testutil.CopySparse(t, back, backC)
			testutil.CopySparse(t, back, backGo)
			rc = theirs(t, "-d", "-b", backC, cowFile)
			rg = ours("-d", "-b", backGo, cowFile)
			if rc.Code != 0 || rg.Code != 0 || rc.Stdout != rg.Stdout {
				t.Fatalf("-d: C: %+v\nours: %+v", rc, rg)
			}
			sameFile(t, backC, backGo)
		})
	}
}
