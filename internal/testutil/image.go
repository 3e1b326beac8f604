package testutil

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// busyboxInit is /init of the test busybox image. It mounts the usual
// filesystems, then, when the kernel command line carries
// umltest=<host dir>, mounts that host directory on /host with hostfs and
// runs /host/run.sh; otherwise it starts a shell on the console. Unknown
// key=value words of the kernel command line reach init as environment
// variables, which is how umltest= arrives.
const busyboxInit = `#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t tmpfs tmpfs /tmp
[ -e /dev/null ] || mount -t devtmpfs devtmpfs /dev
hostname uml
if [ -n "$umltest" ]; then
	mount -t hostfs hostfs /host -o "$umltest" && exec /bin/sh /host/run.sh
	echo "init: cannot mount hostfs $umltest"
fi
exec /bin/sh
`

// imageRecipe is part of the cache key: bump it when the image changes.
const imageRecipe = "busybox-v1"

// BusyboxImage returns the path of a fresh copy (in t.TempDir()) of a small
// ext4 image holding Debian's static busybox with its applet links and the
// /init above. The pristine image is built once with `mkfs.ext4 -d` (no
// root needed) and cached. Skips t if busybox-static or mkfs.ext4 is
// missing.
//
// Boot it in the C kernel with
//
//	ubd0=<img> rw init=/init umltest=<host dir with run.sh>
func BusyboxImage(t testing.TB) string {
	t.Helper()
	bb := "/bin/busybox"
	if _, err := os.Stat(bb); err != nil {
		Skip(t, "busybox-static not installed (make test installs it when run as root)")
	}
	mkfs := NeedCmd(t, "mkfs.ext4")[0]
	sum, err := fileSHA256(bb)
	if err != nil {
		t.Fatal(err)
	}
	cached := filepath.Join(CacheDir(t), fmt.Sprintf("%s-%s.img", imageRecipe, sum[:16]))
	if _, err := os.Stat(cached); err != nil {
		if err := buildBusyboxImage(bb, mkfs, cached); err != nil {
			t.Fatalf("building busybox image: %v", err)
		}
	}
	out := filepath.Join(t.TempDir(), "rootfs.img")
	if err := copySparse(cached, out); err != nil {
		t.Fatal(err)
	}
	return out
}

// BusyboxTree returns a directory (in t.TempDir()) holding the busybox
// image's tree: Debian's static busybox with its applet links, /init,
// /etc/passwd and the usual empty directories, for booting from a host
// directory (rootfstype=hostfs). Skips t without busybox-static.
func BusyboxTree(t testing.TB) string {
	t.Helper()
	bb := "/bin/busybox"
	if _, err := os.Stat(bb); err != nil {
		Skip(t, "busybox-static not installed (make test installs it when run as root)")
	}
	tree := filepath.Join(t.TempDir(), "bbtree")
	if err := writeBusyboxTree(bb, tree); err != nil {
		t.Fatalf("busybox tree: %v", err)
	}
	return tree
}

func buildBusyboxImage(bb, mkfs, dst string) error {
	tree, err := os.MkdirTemp("", "bbtree")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tree)
	if err := writeBusyboxTree(bb, tree); err != nil {
		return err
	}
	tmp := dst + ".tmp"
	os.Remove(tmp)
	cmd := exec.Command(mkfs, "-q", "-F", "-t", "ext4", "-E", "root_owner=0:0", "-d", tree, tmp, "32M")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("mkfs.ext4: %v: %s", err, b)
	}
	return os.Rename(tmp, dst)
}

// writeBusyboxTree fills tree with the busybox image's files.
func writeBusyboxTree(bb, tree string) error {
	for _, d := range []string{"bin", "sbin", "usr/bin", "usr/sbin", "etc", "dev", "proc", "sys", "tmp", "host", "mnt", "root", "var/run"} {
		if err := os.MkdirAll(filepath.Join(tree, d), 0o755); err != nil {
			return err
		}
	}
	if err := copyFile(bb, filepath.Join(tree, "bin/busybox"), 0o755); err != nil {
		return err
	}
	list, err := exec.Command(bb, "--list-full").Output()
	if err != nil {
		return fmt.Errorf("busybox --list-full: %w", err)
	}
	for _, l := range strings.Fields(string(list)) {
		p := filepath.Join(tree, l)
		if l == "bin/busybox" {
			continue
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		rel, _ := filepath.Rel(filepath.Dir(p), filepath.Join(tree, "bin/busybox"))
		if err := os.Symlink(rel, p); err != nil && !os.IsExist(err) {
			return err
		}
	}
	files := map[string]string{
		"init":       busyboxInit,
		"etc/passwd": "root::0:0:root:/root:/bin/sh\n",
		"etc/group":  "root:x:0:\n",
		"etc/fstab":  "/dev/ubda / ext4 defaults 0 1\n",
	}
	for name, body := range files {
		mode := os.FileMode(0o644)
		if name == "init" {
			mode = 0o755
		}
		if err := os.WriteFile(filepath.Join(tree, name), []byte(body), mode); err != nil {
			return err
		}
	}
	return nil
}

func fileSHA256(p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func copyFile(src, dst string, mode os.FileMode) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, b, mode)
}

// copySparse copies src to dst keeping holes (cp --sparse=always).
func copySparse(src, dst string) error {
	if b, err := exec.Command("cp", "--sparse=always", src, dst).CombinedOutput(); err != nil {
		return fmt.Errorf("cp %s %s: %v: %s", src, dst, err, b)
	}
	return nil
}

// E2fsck runs `e2fsck -fn img` and fails t unless the image is clean.
func E2fsck(t testing.TB, img string) {
	t.Helper()
	p := NeedCmd(t, "e2fsck")[0]
	if b, err := exec.Command(p, "-fn", img).CombinedOutput(); err != nil {
		t.Fatalf("e2fsck -fn %s: %v\n%s", img, err, b)
	}
}
