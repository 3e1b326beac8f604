package ubd

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/umltools/umltools/internal/cow"
	"github.com/umltools/umltools/internal/ext4"
	"github.com/umltools/umltools/internal/testutil"
)

func tempImage(t *testing.T, size int) string {
	p := filepath.Join(t.TempDir(), "disk.img")
	b := make([]byte, size)
	for i := range b {
		b[i] = byte(i % 251)
	}
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestRawDevice(t *testing.T) {
	img := tempImage(t, 5000) // not a whole number of sectors
	d, err := Open(&Spec{File: img}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if d.Size() != 5120 || d.ReadOnly() {
		t.Fatalf("size %d ro %v, want 5120 rw", d.Size(), d.ReadOnly())
	}
	buf := make([]byte, 1024)
	n, err := d.ReadAt(buf, 4096)
	if n != 1024 || err != nil {
		t.Fatalf("read of the last sectors: %d, %v", n, err)
	}
	if buf[903] != byte(4999%251) || !bytes.Equal(buf[904:], make([]byte, 120)) {
		t.Errorf("tail past the file end does not read as zeros")
	}
	if n, err := d.ReadAt(buf, 4608); n != 512 || err != io.EOF {
		t.Errorf("read across the end: %d, %v", n, err)
	}
	if _, err := d.WriteAt([]byte("hello"), 1000); err != nil {
		t.Fatal(err)
	}
	if _, err := d.WriteAt(make([]byte, 10), 5115); err == nil {
		t.Errorf("write past the device end succeeded")
	}
	if err := d.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := d.Discard(0, 512); err != nil {
		t.Fatalf("discard: %v", err)
	}
	d.ReadAt(buf[:512], 0)
	if !bytes.Equal(buf[:512], make([]byte, 512)) {
		t.Errorf("discarded sector does not read as zeros")
	}
	raw, _ := os.ReadFile(img)
	if string(raw[1000:1005]) != "hello" {
		t.Errorf("write did not reach the image")
	}
}

func TestRawFlags(t *testing.T) {
	img := tempImage(t, 4096)
	d, err := Open(&Spec{File: img, ReadOnly: true, NoTrim: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !d.ReadOnly() {
		t.Error("r flag: device is writable")
	}
	if _, err := d.WriteAt([]byte{1}, 0); !errors.Is(err, ErrReadOnly) {
		t.Errorf("write to a read-only device: %v", err)
	}
	d.Close()
	d, err = Open(&Spec{File: img, NoTrim: true, Sync: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Discard(0, 512); !errors.Is(err, ErrNoDiscard) {
		t.Errorf("t flag: discard gave %v", err)
	}
	d.Close()
	// A file we may not write is opened read-only, as the kernel retries.
	if os.Geteuid() != 0 {
		os.Chmod(img, 0o444)
		d, err = Open(&Spec{File: img}, nil)
		if err != nil || !d.ReadOnly() {
			t.Errorf("EACCES retry: %v, ro %v", err, d != nil && d.ReadOnly())
		}
		if d != nil {
			d.Close()
		}
	}
}

// TestLocking: two writers of one image conflict (in one process too, as
// OFD locks do), readers share, c skips locking with the kernel's message.
func TestLocking(t *testing.T) {
	img := tempImage(t, 4096)
	a, err := Open(&Spec{File: img}, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = Open(&Spec{File: img}, nil)
	var le *cow.LockedError
	if !errors.As(err, &le) || le.Pid != os.Getpid() {
		t.Fatalf("second writer: %v (want locked by pid %d)", err, os.Getpid())
	}
	if !strings.Contains(err.Error(), fmt.Sprintf("F_SETLK failed, file already locked by pid %d", os.Getpid())) {
		t.Errorf("message %q", err)
	}
	if _, err := Open(&Spec{File: img, ReadOnly: true}, nil); !errors.As(err, &le) {
		t.Errorf("reader beside a writer: %v", err)
	}
	var logged []string
	c, err := Open(&Spec{File: img, Shared: true}, &Options{Logf: func(f string, a ...any) { logged = append(logged, fmt.Sprintf(f, a...)) }})
	if err != nil {
		t.Fatalf("c flag: %v", err)
	}
	c.Close()
	if len(logged) != 1 || logged[0] != fmt.Sprintf("Not locking \"%s\" on the host", img) {
		t.Errorf("c flag log %q", logged)
	}
	a.Close()
	r1, err := Open(&Spec{File: img, ReadOnly: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	r2, err := Open(&Spec{File: img, ReadOnly: true}, nil)
	if err != nil {
		t.Fatalf("two readers: %v", err)
	}
	r1.Close()
	r2.Close()
	w, err := Open(&Spec{File: img}, nil)
	if err != nil {
		t.Fatalf("writer after the readers closed: %v", err)
	}
	w.Close()
}

// TestLockInterop: the C kernel and our devices exclude each other in
// both directions, naming the holder's pid.
func TestLockInterop(t *testing.T) {
	img := testutil.BusyboxImage(t)
	host := t.TempDir()
	os.WriteFile(filepath.Join(host, "run.sh"), []byte("echo GUEST-UP\nsleep 30\npoweroff -f\n"), 0o755)
	u := testutil.StartUML(t, testutil.UMLOptions{Args: []string{"ubd0=" + img, "rw", "init=/init", "umltest=" + host}})
	u.WaitOutput(t, "GUEST-UP", 60*time.Second)
	_, err := Open(&Spec{File: img}, nil)
	var le *cow.LockedError
	if !errors.As(err, &le) || le.Pid <= 0 {
		t.Fatalf("opening the running machine's image: %v", err)
	}
	if exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", le.Pid)); !strings.Contains(exe, "linux") {
		t.Errorf("lock reported held by pid %d (%s), not the UML kernel (started pid %d)", le.Pid, exe, u.Cmd.Process.Pid)
	}
	u.Kill()

	// Ours holds the image: the C kernel must refuse it.
	d, err := Open(&Spec{File: img}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	u2 := testutil.StartUML(t, testutil.UMLOptions{Args: []string{"ubd0=" + img, "rw", "init=/init", "umltest=" + host}})
	u2.WaitOutput(t, "Failed to lock", 60*time.Second)
	var line string
	for _, l := range strings.Split(u2.Output(), "\n") {
		if strings.Contains(l, "F_SETLK failed") {
			line = l
		}
	}
	if line == "" {
		t.Errorf("kernel output lacks the lock message:\n%s", u2.Output())
	}
	// Our OFD lock has no owning pid for F_GETLK: the kernel prints -1.
	t.Logf("C kernel: %s", strings.TrimSpace(line))
}

// TestCOWFromCKernel is acceptance 4: the C kernel boots the busybox image
// through a COW file it creates and writes files in the guest; our ubd
// device over that COW file, read by our ext4 driver, shows the guest's
// changes, while the backing image itself stays unchanged.
func TestCOWFromCKernel(t *testing.T) {
	backing := testutil.BusyboxImage(t)
	cowPath := filepath.Join(t.TempDir(), "guest.cow")
	host := t.TempDir()
	script := `mkdir -p /root/made-in-guest
echo "written through the COW file" > /root/made-in-guest/note
dd if=/dev/urandom of=/root/made-in-guest/blob bs=1k count=300 2>/dev/null
sha256sum /root/made-in-guest/blob > /host/blob.sum
rm /bin/ls
sync
echo GUEST-DONE
poweroff -f
`
	os.WriteFile(filepath.Join(host, "run.sh"), []byte(script), 0o755)
	u := testutil.StartUML(t, testutil.UMLOptions{Args: []string{"ubd0=" + cowPath + "," + backing, "rw", "init=/init", "umltest=" + host}})
	u.WaitOutput(t, "GUEST-DONE", 60*time.Second)
	if _, ok := u.Wait(30 * time.Second); !ok {
		t.Fatal("machine did not power off")
	}
	if !strings.Contains(u.Output(), "as COW file for") {
		t.Logf("kernel output:\n%s", u.Output())
	}
	sum, err := os.ReadFile(filepath.Join(host, "blob.sum"))
	if err != nil {
		t.Fatal(err)
	}
	// Auto-detected COW (no backing named), read-only like a checker would.
	d, err := Open(&Spec{File: cowPath, ReadOnly: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if _, ok := d.(*cowDev); !ok {
		t.Fatalf("COW file opened as %T", d)
	}
	fsys, err := ext4.Open(d, d.Size(), nil)
	if err != nil {
		t.Fatal(err)
	}
	ino := lookupPath(t, fsys, "root/made-in-guest/note")
	buf := make([]byte, 100)
	n, _ := fsys.ReadAt(ino, buf, 0)
	if string(buf[:n]) != "written through the COW file\n" {
		t.Errorf("note reads %q", buf[:n])
	}
	blob := lookupPath(t, fsys, "root/made-in-guest/blob")
	data := make([]byte, 400<<10)
	n, _ = fsys.ReadAt(blob, data, 0)
	if got := fmt.Sprintf("%x", sha256sum(data[:n])); !strings.HasPrefix(string(sum), got) {
		t.Errorf("blob sha256 %s, guest said %s", got, sum)
	}
	if _, err := fsys.Lookup(lookupPath(t, fsys, "bin"), "ls"); err == nil {
		t.Errorf("/bin/ls still present through the COW file")
	}
	// The backing image is untouched.
	bd, err := Open(&Spec{File: backing, ReadOnly: true, NoCOW: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer bd.Close()
	bfs, err := ext4.Open(bd, bd.Size(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bfs.Lookup(ext4.RootIno, "root"); err == nil {
		if r, _ := bfs.Lookup(ext4.RootIno, "root"); r != 0 {
			if _, err := bfs.Lookup(r, "made-in-guest"); err == nil {
				t.Errorf("the guest's write reached the backing file")
			}
		}
	}
	if _, err := bfs.Lookup(lookupPath(t, bfs, "bin"), "ls"); err != nil {
		t.Errorf("/bin/ls missing from the backing file: %v", err)
	}
	testutil.E2fsck(t, backing)
	// e2fsck of the merged view: ours writes it out as a raw image.
	merged := filepath.Join(t.TempDir(), "merged.img")
	out, _ := os.Create(merged)
	io.Copy(out, io.NewSectionReader(d, 0, d.Size()))
	out.Close()
	if b, err := exec.Command(testutil.NeedCmd(t, "e2fsck")[0], "-fn", merged).CombinedOutput(); err != nil {
		t.Errorf("e2fsck of the COW view: %v\n%s", err, b)
	}
}

func lookupPath(t *testing.T, f *ext4.FS, p string) uint32 {
	t.Helper()
	ino := uint32(ext4.RootIno)
	for _, c := range strings.Split(p, "/") {
		var err error
		if ino, err = f.Lookup(ino, c); err != nil {
			t.Fatalf("%s: %v", p, err)
		}
	}
	return ino
}

func sha256sum(b []byte) []byte {
	h := sha256.Sum256(b)
	return h[:]
}
