// Package testutil holds helpers shared by the project's tests: recorded
// skips, locating the C originals and our own built binaries, booting the C
// kernel, and building cached guest images. Only _test.go files import it.
package testutil

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/umltools/umltools/internal/hosttool"
)

// binMu serialises on-demand builds of our binaries within a test binary.
var binMu sync.Mutex

// Skip skips t with "SKIP: reason" and records the line in the file named by
// $UMLTEST_SKIPLOG, so `make test` can list every skip with its reason.
func Skip(t testing.TB, format string, a ...any) {
	t.Helper()
	msg := strings.Join(strings.Fields(fmt.Sprintf(format, a...)), " ") // one line
	if p := os.Getenv("UMLTEST_SKIPLOG"); p != "" {
		if f, err := os.OpenFile(p, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644); err == nil {
			fmt.Fprintf(f, "SKIP: %s: %s\n", t.Name(), msg)
			f.Close()
		}
	}
	t.Skip("SKIP: " + msg)
}

// NeedCmd returns the path of each named command, or skips t when one is
// missing from PATH (and from /sbin, /usr/sbin, which ordinary users often
// lack on PATH).
func NeedCmd(t testing.TB, names ...string) []string {
	t.Helper()
	var paths []string
	for _, n := range names {
		p, err := LookPath(n)
		if err != nil {
			Skip(t, "%s not installed (make test installs it when run as root)", n)
		}
		paths = append(paths, p)
	}
	return paths
}

// LookPath finds a command on PATH or in the sbin directories.
func LookPath(name string) (string, error) { return hosttool.LookPath(name) }

// NeedRoot skips t unless it runs as root.
func NeedRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		Skip(t, "needs root")
	}
}

// NeedBench skips t unless UMLBENCH=1 (set by `make bench`).
func NeedBench(t testing.TB) {
	t.Helper()
	if os.Getenv("UMLBENCH") == "" {
		t.Skip("benchmark: run with make bench")
	}
}

// Bin returns the path of one of our binaries. `make test` builds them into
// bin/ and sets $UMLTEST_BIN; a plain `go test` builds the binary into a
// temporary directory once per test binary.
func Bin(t testing.TB, name string) string {
	t.Helper()
	if d := os.Getenv("UMLTEST_BIN"); d != "" {
		p := filepath.Join(d, name)
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	binMu.Lock()
	defer binMu.Unlock()
	root, err := ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(os.TempDir(), fmt.Sprintf("umltools-bin-%d", os.Getpid()), name)
	if _, err := os.Stat(out); err == nil {
		return out
	}
	cmd := exec.Command("go", "build", "-o", out, "./"+name)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building %s: %v\n%s", name, err, b)
	}
	return out
}

// ModuleRoot returns the directory holding go.mod, searching upward from
// the working directory.
func ModuleRoot() (string, error) {
	d, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d, nil
		}
		up := filepath.Dir(d)
		if up == d {
			return "", fmt.Errorf("go.mod not found above the working directory")
		}
		d = up
	}
}

// CacheDir returns a directory for cached test artefacts (images), created
// if needed: $UMLTEST_CACHE, else the user cache dir + /umltools-test.
func CacheDir(t testing.TB) string {
	t.Helper()
	d := os.Getenv("UMLTEST_CACHE")
	if d == "" {
		base, err := os.UserCacheDir()
		if err != nil {
			base = os.TempDir()
		}
		d = filepath.Join(base, "umltools-test")
	}
	if err := os.MkdirAll(d, 0o755); err != nil {
		t.Fatal(err)
	}
	return d
}
