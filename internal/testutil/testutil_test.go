package testutil

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
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

func TestProcTree(t *testing.T) {
	cmd := exec.Command("sh", "-c", "sleep 30 & exec sleep 31")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	var tree string
	for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if tree = ProcTree(cmd.Process.Pid); strings.Count(tree, " sleep S ") == 2 {
			break
		}
	}
	// the shell became sleep 31; its child sleep 30 waits beneath it
	if strings.Count(tree, " sleep S ") != 2 || !strings.HasPrefix(tree, strconv.Itoa(cmd.Process.Pid)+" ") {
		t.Fatalf("tree of %d:\n%s", cmd.Process.Pid, tree)
	}
	if !strings.Contains(tree, " 230\n") && !strings.Contains(tree, " 35\n") { // clock_nanosleep, nanosleep
		t.Errorf("no sleeping syscall shown:\n%s", tree)
	}
	if ProcTree(1<<30) != "" {
		t.Error("a missing pid has a tree")
	}
}
