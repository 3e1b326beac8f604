package testutil

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// defaultImageRecipe is part of the cache key of DefaultImage.
const defaultImageRecipe = "default-busybox-v1"

// imgMu serialises building the cached default image.
var imgMu sync.Mutex

// DefaultImage returns a fresh copy (in t.TempDir()) of the project's
// default guest image, what `make run` boots: `rootstrap --profile
// busybox`, built once and cached. Skips t when busybox-static or
// e2fsprogs are missing.
func DefaultImage(t testing.TB) string {
	t.Helper()
	if _, err := os.Stat("/bin/busybox"); err != nil {
		Skip(t, "busybox-static not installed (make test installs it when run as root)")
	}
	NeedCmd(t, "mke2fs", "debugfs", "e2fsck")
	sum, err := fileSHA256("/bin/busybox")
	if err != nil {
		t.Fatal(err)
	}
	cached := filepath.Join(CacheDir(t), fmt.Sprintf("%s-%s.img", defaultImageRecipe, sum[:16]))
	if _, err := os.Stat(cached); err != nil {
		imgMu.Lock()
		if _, err := os.Stat(cached); err != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			b, err := exec.CommandContext(ctx, Bin(t, "rootstrap"), "--profile", "busybox", "-q", cached).CombinedOutput()
			cancel()
			if err != nil {
				imgMu.Unlock()
				t.Fatalf("building the default image: rootstrap: %v\n%s", err, b)
			}
		}
		imgMu.Unlock()
	}
	out := filepath.Join(t.TempDir(), "bb.img")
	if err := copySparse(cached, out); err != nil {
		t.Fatal(err)
	}
	return out
}

// AddFiles copies host files into an ext4 image with debugfs: files maps
// a guest path (whose directory must exist) to a host file; each gets
// mode 0755, root-owned, replacing what was there.
func AddFiles(t testing.TB, img string, files map[string]string) {
	t.Helper()
	debugfs := NeedCmd(t, "debugfs")[0]
	var script strings.Builder
	for guest, host := range files {
		fmt.Fprintf(&script, "rm %s\nwrite %s %s\nsif %s mode 0100755\nsif %s uid 0\nsif %s gid 0\n", guest, host, guest, guest, guest, guest)
	}
	cmd := exec.Command(debugfs, "-w", "-f", "-", img)
	cmd.Stdin = strings.NewReader(script.String())
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("debugfs -w %s: %v\n%s", img, err, b)
	}
}

// debianImageRecipe is part of the cache key of DebianImage; its packages
// are the engine milestone 2 workload (python3-minimal alone lacks json).
const debianImageRecipe = "debian-bookworm-m2-v1"

// DebianImagePackages are the packages DebianImage adds to minbase.
var DebianImagePackages = []string{"python3-minimal", "libpython3-stdlib", "busybox-static"}

// DebianImage returns a fresh copy (in t.TempDir()) of a Debian bookworm
// minbase image with DebianImagePackages, built by rootstrap once and
// cached (about a minute; it needs root and the Debian archive, else t
// is skipped with the reason).
func DebianImage(t testing.TB) string {
	t.Helper()
	return debianImage(t, debianImageRecipe, DebianImagePackages)
}

// sysvinitImageRecipe is part of the cache key of SysvinitImage.
const sysvinitImageRecipe = "debian-bookworm-sysvinit-v1"

// SysvinitImagePackages are the packages SysvinitImage adds to minbase:
// Debian's sysvinit instead of systemd (the seeds' boot), and procps for
// ps, free and uptime.
var SysvinitImagePackages = []string{"sysvinit-core", "procps", "busybox-static"}

// SysvinitImage returns a fresh copy (in t.TempDir()) of a Debian
// bookworm minbase image with sysvinit and rootstrap's defaults (host
// name "uml", a getty on the console, root logs in without a password),
// built once and cached like DebianImage.
func SysvinitImage(t testing.TB) string {
	t.Helper()
	return debianImage(t, sysvinitImageRecipe, SysvinitImagePackages)
}

// debianImage builds (once, cached under recipe) and copies a rootstrap
// Debian image with pkgs.
func debianImage(t testing.TB, recipe string, pkgs []string) string {
	t.Helper()
	cached := filepath.Join(CacheDir(t), recipe+".img")
	if _, err := os.Stat(cached); err != nil {
		imgMu.Lock()
		if _, err := os.Stat(cached); err != nil {
			if os.Getuid() != 0 {
				imgMu.Unlock()
				Skip(t, "no cached Debian image in %s and building one (debootstrap) needs root", CacheDir(t))
			}
			NeedCmd(t, "debootstrap", "mke2fs")
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
			tmp := cached + ".tmp"
			b, err := exec.CommandContext(ctx, Bin(t, "rootstrap"), "-q", "--include", strings.Join(pkgs, ","), tmp).CombinedOutput()
			cancel()
			if err == nil {
				err = os.Rename(tmp, cached)
			}
			if err != nil {
				imgMu.Unlock()
				os.Remove(tmp)
				Skip(t, "building the Debian image with rootstrap failed (is the Debian archive reachable?): %v\n%s", err, tail(string(b), 2000))
			}
		}
		imgMu.Unlock()
	}
	out := filepath.Join(t.TempDir(), "debian.img")
	if err := copySparse(cached, out); err != nil {
		t.Fatal(err)
	}
	return out
}
