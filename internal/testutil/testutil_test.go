package testutil

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestBusyboxBoot proves the shared helpers: the C kernel boots the cached
// busybox image and runs a script from the host directory via hostfs.
func TestBusyboxBoot(t *testing.T) {
	img := BusyboxImage(t)
	host := t.TempDir()
	script := "echo BOOTED-$(cat /proc/sys/kernel/hostname)\nwhoami\npoweroff -f\n"
	if err := os.WriteFile(filepath.Join(host, "run.sh"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	u := StartUML(t, UMLOptions{Args: []string{"ubd0=" + img, "rw", "init=/init", "umltest=" + host}})
	u.WaitOutput(t, "BOOTED-uml", 60*time.Second)
	if err, ok := u.Wait(30 * time.Second); !ok {
		t.Fatalf("machine did not power off: %v", err)
	}
	E2fsck(t, img)
}
