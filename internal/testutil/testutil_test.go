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

func TestPending(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct{ status, want string }{
		{"Name:\tsh\nSigPnd:\t0000000000000000\nShdPnd:\t0000000000000000\n", ""},
		{"SigPnd:\t0000000000000100\nShdPnd:\t0000000000000000\nSigBlk:\t0000000000000100\n", " SigPnd=0000000000000100"},
		{"SigPnd:\t0000000000000000\nShdPnd:\t0000000000080000\n", " ShdPnd=0000000000080000"},
	} {
		p := filepath.Join(dir, "status")
		os.WriteFile(p, []byte(tc.status), 0o644)
		if got := pending(p); got != tc.want {
			t.Errorf("pending(%q) = %q, want %q", tc.status, got, tc.want)
		}
	}
	if got := pending(filepath.Join(dir, "none")); got != "" {
		t.Errorf("a missing file: %q", got)
	}
}

func TestHalted(t *testing.T) {
	for _, c := range []struct {
		out  string
		want bool
	}{
		{"Sent SIGKILL to all processes\nreboot: System halted\n", true},
		{"\r\nreboot: Power down\r\n", true},
		{"[  1.5] reboot: System halted", true},
		{"reboot: System halted\nKernel panic - not syncing: x\n", false},
		{"Run /sbin/init as init process\n", false},
		{"", false},
	} {
		if got := halted(c.out); got != c.want {
			t.Errorf("halted(%q) = %v, want %v", c.out, got, c.want)
		}
	}
}
