package watchdog

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/umltools/umltools/internal/mconsole"
	"github.com/umltools/umltools/internal/testutil"
	"golang.org/x/sys/unix"
)

// kernelHelperPath is where the C kernel's harddog driver finds the helper
// (arch/um/drivers/harddog_user.c: an absolute path, no PATH search).
const kernelHelperPath = "/usr/bin/uml_watchdog"

// oursAtKernelPath makes our uml_watchdog the one at kernelHelperPath for
// the processes this goroutine starts from now on: the test's thread
// enters a private mount namespace and bind-mounts our binary over the
// path there. The real file is never touched, and the thread ends with the
// test (it stays locked), taking the namespace with it.
func oursAtKernelPath(t *testing.T) string {
	t.Helper()
	testutil.NeedRoot(t)
	ours := testutil.Bin(t, "uml_watchdog")
	// Other work on this host reinstalls uml-utilities now and then; the
	// file is back within seconds.
	for i := 0; i < 100; i++ {
		if _, err := os.Stat(kernelHelperPath); err == nil {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if _, err := os.Stat(kernelHelperPath); err != nil {
		testutil.Skip(t, "%s is missing (uml-utilities not installed): nothing to bind our helper over", kernelHelperPath)
	}
	runtime.LockOSThread() // never unlocked: the thread exits with the test
	if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
		t.Fatalf("unshare(CLONE_NEWNS): %v", err)
	}
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		t.Fatalf("making / private: %v", err)
	}
	if err := unix.Mount(ours, kernelHelperPath, "", unix.MS_BIND, ""); err != nil {
		t.Fatalf("bind %s over %s: %v", ours, kernelHelperPath, err)
	}
	return ours
}

// helperPids lists the running processes whose executable is the file
// ours (compared by device and inode, since they run it as
// kernelHelperPath) and their command lines.
func helperPids(ours string) map[int]string {
	var want unix.Stat_t
	if unix.Stat(ours, &want) != nil {
		return nil
	}
	found := map[int]string{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		var pid int
		if _, err := fmt.Sscanf(e.Name(), "%d", &pid); err != nil {
			continue
		}
		var st unix.Stat_t
		if unix.Stat(filepath.Join("/proc", e.Name(), "exe"), &st) == nil && st.Dev == want.Dev && st.Ino == want.Ino {
			cl, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
			found[pid] = strings.ReplaceAll(strings.TrimRight(string(cl), "\x00"), "\x00", " ")
		}
	}
	return found
}

// waitHelper waits until one of our helpers runs and returns its command
// line.
func waitHelper(t *testing.T, u *testutil.UML, ours string) string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		for _, cl := range helperPids(ours) {
			return cl
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("our uml_watchdog never ran\n%s", u.Output())
	return ""
}

const wdTimeout = 3 // seconds, through UML_WATCHDOG_TIMEOUT in the kernel's environment

// TestHarddogInterop is issue 15's uml_watchdog acceptance, on the C
// kernel with our helper at its fixed path: a guest that opens
// /dev/watchdog and stops writing is killed after the timeout; one that
// keeps writing survives; with mconsole=notify: the hang is reported on
// the notify socket instead.
func TestHarddogInterop(t *testing.T) {
	t.Run("silent guest is killed", func(t *testing.T) {
		ours := oursAtKernelPath(t)
		t.Setenv(TimeoutEnv, fmt.Sprint(wdTimeout))
		u := testutil.StartUML(t, testutil.UMLOptions{Init: `exec 3>/dev/watchdog || echo WD-OPEN-FAILED
echo WD-OPENED
sleep 1000
echo WD-NOT-KILLED
echo o > /proc/sysrq-trigger
`})
		u.WaitOutput(t, "WD-OPENED", 90*time.Second)
		opened := time.Now()
		cl := waitHelper(t, u, ours)
		if want := fmt.Sprintf("%s -pid %d", kernelHelperPath, u.Cmd.Process.Pid); cl != want {
			t.Errorf("helper command line %q, want %q", cl, want)
		}
		err, exited := u.Wait(60 * time.Second)
		took := time.Since(opened)
		if !exited {
			t.Fatalf("the kernel still runs %v after the guest stopped pinging (timeout %d s)\n%s", took, wdTimeout, u.Output())
		}
		if strings.Contains(u.Output(), "WD-NOT-KILLED") || strings.Contains(u.Output(), "WD-OPEN-FAILED") {
			t.Fatalf("guest output shows the watchdog did not act\n%s", u.Output())
		}
		// timeout, then SIGINT, 1 s, SIGINT, 1 s, SIGKILL at the latest.
		if took < wdTimeout*time.Second-500*time.Millisecond || took > (wdTimeout+2+10)*time.Second {
			t.Errorf("the kernel ended %v after the open, want about %d s", took, wdTimeout)
		}
		t.Logf("the kernel ended %v after the guest opened /dev/watchdog: %v", took.Round(10*time.Millisecond), err)
	})
	t.Run("pinging guest survives", func(t *testing.T) {
		ours := oursAtKernelPath(t)
		t.Setenv(TimeoutEnv, fmt.Sprint(wdTimeout))
		u := testutil.StartUML(t, testutil.UMLOptions{Init: fmt.Sprintf(`exec 3>/dev/watchdog || echo WD-OPEN-FAILED
echo WD-OPENED
i=0
while [ $i -lt %d ]; do echo ping >&3; sleep 1; i=$((i+1)); done
echo WD-SURVIVED
echo o > /proc/sysrq-trigger
`, 4*wdTimeout)})
		u.WaitOutput(t, "WD-OPENED", 90*time.Second)
		waitHelper(t, u, ours)
		u.WaitOutput(t, "WD-SURVIVED", 60*time.Second)
		if _, exited := u.Wait(30 * time.Second); !exited {
			t.Errorf("the kernel did not power off")
		}
	})
	t.Run("mconsole notify gets HANG", func(t *testing.T) {
		ours := oursAtKernelPath(t)
		t.Setenv(TimeoutEnv, fmt.Sprint(wdTimeout))
		sock, fd := listen(t)
		u := testutil.StartUML(t, testutil.UMLOptions{Init: `exec 3>/dev/watchdog || echo WD-OPEN-FAILED
echo WD-OPENED
sleep 1000
`, Extra: []string{"mconsole=notify:" + sock}})
		u.WaitOutput(t, "WD-OPENED", 90*time.Second)
		if cl, want := waitHelper(t, u, ours), kernelHelperPath+" -mconsole "+sock; cl != want {
			t.Errorf("helper command line %q, want %q", cl, want)
		}
		unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Sec: 30})
		var types []uint32
		buf := make([]byte, 1024)
		for {
			n, _, err := unix.Recvfrom(fd, buf, 0)
			if err != nil {
				t.Fatalf("no HANG notification (got types %v): %v\n%s", types, err, u.Output())
			}
			no, err := mconsole.DecodeNotify(buf[:n])
			if err != nil {
				t.Fatalf("undecodable notification % x: %v", buf[:n], err)
			}
			types = append(types, no.Type)
			if no.Type == mconsole.NotifyHang {
				if n != mconsole.NotifyHeaderSize {
					t.Errorf("HANG is %d bytes, want %d", n, mconsole.NotifyHeaderSize)
				}
				break
			}
		}
		if types[0] != mconsole.NotifySocket {
			t.Errorf("notification types %v, want the kernel's SOCKET first", types)
		}
		// The helper's job ends there; the kernel is left to the listener.
		select {
		case <-u.Done():
			t.Errorf("the kernel exited in -mconsole mode")
		case <-time.After(500 * time.Millisecond):
		}
	})
}
