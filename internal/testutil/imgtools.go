package testutil

import (
	"os"
	"os/exec"
	"testing"
)

// GrowImage enlarges the ext4 image img (a test's own copy) to size bytes:
// the file is extended and resize2fs grows the filesystem to fill it, so a
// small cached image can take a large workload.
func GrowImage(t testing.TB, img string, size int64) {
	t.Helper()
	resize2fs := NeedCmd(t, "resize2fs")[0]
	fi, err := os.Stat(img)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() >= size {
		return
	}
	if err := os.Truncate(img, size); err != nil {
		t.Fatal(err)
	}
	// resize2fs wants a filesystem checked since it was last mounted.
	e2fsck := NeedCmd(t, "e2fsck")[0]
	if b, err := exec.Command(e2fsck, "-fp", img).CombinedOutput(); err != nil {
		t.Fatalf("e2fsck -fp %s: %v\n%s", img, err, b)
	}
	if b, err := exec.Command(resize2fs, img).CombinedOutput(); err != nil {
		t.Fatalf("resize2fs %s: %v\n%s", img, err, b)
	}
}

// SHA256File returns the hex sha256 of the file at p, failing t when it
// cannot be read.
func SHA256File(t testing.TB, p string) string {
	t.Helper()
	s, err := fileSHA256(p)
	if err != nil {
		t.Fatal(err)
	}
	return s
}
