package testutil

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"testing"
	"time"
)

// DownloadDeb returns the path of Debian package pkg's .deb for this
// host's architecture, fetched once with `apt-get download` into
// CacheDir()/debs and reused from there. It skips t, with the reason,
// when apt-get is missing or the download fails (no network, no such
// package in the host's sources).
func DownloadDeb(t testing.TB, pkg string) string {
	t.Helper()
	dir := filepath.Join(CacheDir(t), "debs")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if p := cachedDeb(dir, pkg); p != "" {
		return p
	}
	aptGet := NeedCmd(t, "apt-get")[0]
	// Into a private directory first, so a half-written file is never
	// taken for the package.
	tmp, err := os.MkdirTemp(dir, "dl-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(tmp)
	// apt drops to _apt for downloads when run as root; the directory must
	// let it in or apt warns and downloads as root anyway.
	os.Chmod(tmp, 0o777)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, aptGet, "-q", "download", pkg)
	cmd.Dir = tmp
	out, err := cmd.CombinedOutput()
	got := cachedDeb(tmp, pkg)
	if err != nil || got == "" {
		Skip(t, "apt-get download %s failed (no network or no apt sources?): %v: %s", pkg, err, tail(string(out), 600))
	}
	dst := filepath.Join(dir, filepath.Base(got))
	if err := os.Rename(got, dst); err != nil {
		t.Fatal(err)
	}
	return dst
}

// cachedDeb returns the newest-named pkg_*.deb in dir, or "".
func cachedDeb(dir, pkg string) string {
	m, _ := filepath.Glob(filepath.Join(dir, pkg+"_*.deb"))
	if len(m) == 0 {
		return ""
	}
	sort.Strings(m)
	return m[len(m)-1]
}
