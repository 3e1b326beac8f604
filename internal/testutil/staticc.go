package testutil

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// StaticC compiles the C source src with `gcc -static -O2` and returns the
// path of the binary, cached by the hash of the source in a world-readable
// directory (so tests that drop privileges can run it too). It skips t when
// gcc or the static libc is missing.
func StaticC(t testing.TB, name, src string) string {
	t.Helper()
	NeedCmd(t, "gcc")
	sum := sha256.Sum256([]byte(src))
	dir := filepath.Join(os.TempDir(), "umltools-staticc")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o755)
	out := filepath.Join(dir, name+"-"+hex.EncodeToString(sum[:8]))
	if _, err := os.Stat(out); err == nil {
		return out
	}
	tmp, err := os.MkdirTemp(dir, "build")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(tmp)
	c := filepath.Join(tmp, name+".c")
	if err := os.WriteFile(c, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(tmp, name)
	if b, err := exec.Command("gcc", "-static", "-O2", "-o", bin, c).CombinedOutput(); err != nil {
		Skip(t, "gcc -static failed (libc6-dev static libraries missing?): %v: %s", err, b)
	}
	os.Chmod(bin, 0o755)
	if err := os.Rename(bin, out); err != nil {
		t.Fatal(err)
	}
	return out
}
