package testutil

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"testing"

	"golang.org/x/sys/unix"
)

// NetNS creates a named network namespace (`ip netns add`), unique to this
// test, and deletes it when the test ends. Run commands in it with
// `ip netns exec <name> ...` or run Go code in it with InNetNS. Skips t
// unless root and iproute2 is installed.
func NetNS(t testing.TB) string {
	t.Helper()
	NeedRoot(t)
	ip := NeedCmd(t, "ip")[0]
	var r [4]byte
	if _, err := rand.Read(r[:]); err != nil {
		t.Fatal(err)
	}
	name := "umlt-" + hex.EncodeToString(r[:])
	if b, err := exec.Command(ip, "netns", "add", name).CombinedOutput(); err != nil {
		Skip(t, "cannot create a network namespace: %v: %s", err, b)
	}
	t.Cleanup(func() {
		if b, err := exec.Command(ip, "netns", "del", name).CombinedOutput(); err != nil {
			t.Logf("ip netns del %s: %v: %s", name, err, b)
		}
	})
	return name
}

// InNetNS runs fn on an OS thread that has joined the named network
// namespace (see NetNS). Netlink sockets and /proc/sys/net files opened by
// fn belong to that namespace. The thread is discarded afterwards.
func InNetNS(t testing.TB, name string, fn func() error) error {
	t.Helper()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// No UnlockOSThread: the goroutine exits locked, so the runtime
		// throws the thread (and its namespace) away.
		f, err := os.Open("/run/netns/" + name)
		if err != nil {
			errc <- err
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("setns %s: %w", name, err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}
