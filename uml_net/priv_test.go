package main

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/umltools/umltools/internal/testutil"
	"golang.org/x/sys/unix"
)

// TestPrivileges checks asCaller and dropPrivileges in a child copy of the
// test binary that starts as root and makes itself look like a setuid
// program run by uid 65534 (real 65534, effective and saved 0).
func TestPrivileges(t *testing.T) {
	if os.Getenv("UMLNET_PRIV_CHILD") != "" {
		privChild(t)
		return
	}
	testutil.NeedRoot(t)
	secret := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secret, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestPrivileges$", "-test.v")
	cmd.Env = append(os.Environ(), "UMLNET_PRIV_CHILD="+secret)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("child: %v\n%s", err, b)
	}
}

func privChild(t *testing.T) {
	secret := os.Getenv("UMLNET_PRIV_CHILD")
	if err := syscall.Setresuid(nobody, 0, 0); err != nil {
		t.Fatal(err)
	}
	c := currentCaller()
	if c.uid != nobody {
		t.Fatalf("caller %+v", c)
	}
	// asCaller opens with the caller's permissions and restores root.
	err := asCaller(c, func() error {
		f, err := os.Open(secret)
		if err == nil {
			f.Close()
		}
		return err
	})
	if !errors.Is(err, os.ErrPermission) {
		t.Errorf("asCaller opened a root-only file: %v", err)
	}
	if unix.Geteuid() != 0 {
		t.Fatalf("euid %d after asCaller", unix.Geteuid())
	}
	if f, err := os.Open(secret); err != nil {
		t.Errorf("root cannot open after asCaller: %v", err)
	} else {
		f.Close()
	}
	// dropPrivileges: no way back.
	if err := dropPrivileges(c); err != nil {
		t.Fatal(err)
	}
	r, e, s := unix.Getresuid()
	if r != nobody || e != nobody || s != nobody || hasCaps(true) {
		t.Errorf("after drop: uids %d/%d/%d caps %v", r, e, s, hasCaps(true))
	}
	if err := syscall.Setresuid(-1, 0, -1); err == nil {
		t.Error("regained root after dropPrivileges")
	}
	if _, err := os.Open(secret); err == nil {
		t.Error("opened a root-only file after dropPrivileges")
	}
}
