package testutil

import (
	"net"
	"os/exec"
	"syscall"
	"testing"
	"time"
)

// StartSwitch runs the uml_switch binary bin (ours or Debian's) on the
// control socket ctl until the test ends (SIGINT then), and returns once
// the socket accepts connections.
func StartSwitch(t testing.TB, bin, ctl string) {
	t.Helper()
	cmd := exec.Command(bin, "-unix", ctl)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Signal(syscall.SIGINT); cmd.Wait() })
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if c, err := net.Dial("unix", ctl); err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: no control socket %s", bin, ctl)
		}
	}
}
