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
	for _, netadmin := range []string{"", "1"} {
		cmd := exec.Command(os.Args[0], "-test.run=^TestPrivileges$", "-test.v")
		cmd.Env = append(os.Environ(), "UMLNET_PRIV_CHILD="+secret, "UMLNET_PRIV_NETADMIN="+netadmin)
		if netadmin != "" && !staticBuild() {
			continue // AllThreadsSyscall needs a non-cgo build
		}
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("child (netadmin=%q): %v\n%s", netadmin, err, b)
		}
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
	if os.Getenv("UMLNET_PRIV_NETADMIN") != "" {
		if err := keepOnlyNetAdmin(c); err != nil {
			t.Fatal(err)
		}
		hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
		var data [2]unix.CapUserData
		if err := unix.Capget(&hdr, &data[0]); err != nil {
			t.Fatal(err)
		}
		want := uint32(1 << unix.CAP_NET_ADMIN)
		if data[0].Effective != want || data[0].Permitted != want || data[1].Effective|data[1].Permitted != 0 {
			t.Errorf("caps %+v, want only CAP_NET_ADMIN", data)
		}
		if r, e, s := unix.Getresuid(); r != nobody || e != nobody || s != nobody {
			t.Errorf("uids %d/%d/%d", r, e, s)
		}
		if _, err := os.Open(secret); err == nil {
			t.Error("opened a root-only file with only CAP_NET_ADMIN")
		}
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

// staticBuild reports whether this binary can use AllThreadsSyscall (it
// cannot when built with cgo).
func staticBuild() bool {
	_, _, e := syscall.AllThreadsSyscall(syscall.SYS_GETPID, 0, 0, 0)
	return e != syscall.ENOTSUP
}
