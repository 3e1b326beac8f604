package testutil

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// StaticC compiles the C source src with `gcc -static -O2` and returns the
// path of the binary (see BuildStaticC). It skips t when gcc or the static
// libc is missing.
func StaticC(t testing.TB, name, src string) string {
	t.Helper()
	NeedCmd(t, "gcc")
	bin, err := BuildStaticC(name, src)
	if err != nil {
		Skip(t, "%v", err)
	}
	return bin
}

// BuildStaticC is StaticC returning an error instead of skipping, for
// callers that go on without the program. The binary is cached by the
// hash of the source in a world-readable directory, so tests that drop
// privileges can run it too.
func BuildStaticC(name, src string) (string, error) {
	gcc, err := LookPath("gcc")
	if err != nil {
		return "", fmt.Errorf("gcc not installed")
	}
	sum := sha256.Sum256([]byte(src))
	dir := filepath.Join(os.TempDir(), "umltools-staticc")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	os.Chmod(dir, 0o755)
	out := filepath.Join(dir, name+"-"+hex.EncodeToString(sum[:8]))
	if _, err := os.Stat(out); err == nil {
		return out, nil
	}
	tmp, err := os.MkdirTemp(dir, "build")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	c := filepath.Join(tmp, name+".c")
	if err := os.WriteFile(c, []byte(src), 0o644); err != nil {
		return "", err
	}
	bin := filepath.Join(tmp, name)
	if b, err := exec.Command(gcc, "-static", "-O2", "-o", bin, c).CombinedOutput(); err != nil {
		return "", fmt.Errorf("gcc -static failed (libc6-dev static libraries missing?): %v: %s", err, strings.TrimSpace(string(b)))
	}
	os.Chmod(bin, 0o755)
	return out, os.Rename(bin, out)
}
