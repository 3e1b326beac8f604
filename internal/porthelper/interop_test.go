package porthelper

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/umltools/umltools/internal/testutil"
)

// The C kernel's port channel runs "in.telnetd -L <port-helper>" found
// on PATH. Debian bookworm's telnetd is inetutils' (/usr/sbin/telnetd,
// no in.telnetd name, and -E instead of netkit's -L), so the test puts
// this adapter first on PATH. netkit's in.telnetd -L (package
// telnetd-ssl in bookworm, which conflicts with telnetd) needs none.
const inTelnetd = `#!/bin/sh
[ "$1" = -L ] && [ -n "$2" ] || { echo "in.telnetd adapter: expected -L <program>" >&2; exit 2; }
exec %s -h -E "$2"
`

// telnetClient is the least a telnet client must do: refuse every
// option the server offers or asks for, and collect what it prints.
type telnetClient struct {
	c   net.Conn
	mu  sync.Mutex
	out bytes.Buffer
}

func newTelnet(t *testing.T, c net.Conn) *telnetClient {
	tc := &telnetClient{c: c}
	t.Cleanup(func() { c.Close() })
	go tc.read()
	return tc
}

const (
	iac  = 255
	dont = 254
	do   = 253
	wont = 252
	will = 251
	sb   = 250
	se   = 240
)

func (tc *telnetClient) read() {
	buf := make([]byte, 4096)
	var pending []byte
	for {
		n, err := tc.c.Read(buf)
		if n > 0 {
			pending = append(pending, buf[:n]...)
			pending = tc.consume(pending)
		}
		if err != nil {
			return
		}
	}
}

// consume strips telnet commands from b, answering negotiations, and
// returns an incomplete trailing command, if any.
func (tc *telnetClient) consume(b []byte) []byte {
	for len(b) > 0 {
		if b[0] != iac {
			i := bytes.IndexByte(b, iac)
			if i < 0 {
				i = len(b)
			}
			tc.mu.Lock()
			tc.out.Write(b[:i])
			tc.mu.Unlock()
			b = b[i:]
			continue
		}
		if len(b) < 2 {
			return b
		}
		switch b[1] {
		case do, dont, will, wont:
			if len(b) < 3 {
				return b
			}
			switch b[1] {
			case do:
				tc.c.Write([]byte{iac, wont, b[2]})
			case will:
				tc.c.Write([]byte{iac, dont, b[2]})
			}
			b = b[3:]
		case sb:
			i := bytes.Index(b, []byte{iac, se})
			if i < 0 {
				return b
			}
			b = b[i+2:]
		case iac:
			tc.mu.Lock()
			tc.out.WriteByte(iac)
			tc.mu.Unlock()
			b = b[2:]
		default:
			b = b[2:]
		}
	}
	return nil
}

func (tc *telnetClient) output() string {
	tc.mu.Lock()
	defer tc.mu.Unlock()
	return tc.out.String()
}

func (tc *telnetClient) wait(t *testing.T, u *testutil.UML, s string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !strings.Contains(tc.output(), s) {
		if time.Now().After(deadline) {
			t.Fatalf("telnet client: no %q within %v; it got %q\nkernel output:\n%s", s, timeout, tc.output(), u.Output())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// TestPortChannelInterop is issue 15's port-helper acceptance: the C
// kernel booted with con1=port:<p> and UML_PORT_HELPER pointing at our
// helper gives a telnet client on loopback a real agetty login: prompt on
// tty1, and then (agetty runs sh in place of login) a shell that
// evaluates what the client types.
func TestPortChannelInterop(t *testing.T) {
	testutil.NeedRoot(t) // agetty in the guest wants root; the guest's root is the host's /
	telnetd := testutil.NeedCmd(t, "telnetd")[0]
	agetty := testutil.NeedCmd(t, "agetty")[0]
	helper := testutil.Bin(t, "port-helper")
	pathDir := t.TempDir()
	if err := os.WriteFile(filepath.Join(pathDir, "in.telnetd"), []byte(fmt.Sprintf(inTelnetd, telnetd)), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", pathDir+":"+os.Getenv("PATH"))
	t.Setenv("UML_PORT_HELPER", helper)
	port := freePort(t)
	// The guest's /run, /var/log and /tmp are its own tmpfs, so agetty's
	// utmp and wtmp records stay inside it (the root is the host's /).
	init := fmt.Sprintf(`mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /var/log
mount -t tmpfs tmpfs /tmp
echo PORT-GUEST-UP
%s -o -i -l /bin/sh tty1 linux
echo AGETTY-EXITED-$?
echo o > /proc/sysrq-trigger
`, agetty)
	u := testutil.StartUML(t, testutil.UMLOptions{Init: init, Extra: []string{fmt.Sprintf("con1=port:%d", port)}})
	u.WaitOutput(t, "PORT-GUEST-UP", 90*time.Second)
	// The kernel listens from boot; a connection that arrives before
	// agetty opens tty1 first reads the kernel's "no UML consoles
	// waiting" notice and is then handed to tty1 when it opens.
	var c net.Conn
	deadline := time.Now().Add(30 * time.Second)
	for {
		var err error
		if c, err = net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the kernel never listened on port %d: %v\n%s", port, err, u.Output())
		}
		time.Sleep(100 * time.Millisecond)
	}
	tc := newTelnet(t, c)
	tc.wait(t, u, "login: ", 30*time.Second)
	t.Logf("telnet client got: %q", tc.output())
	tc.c.Write([]byte("root\r\n"))
	time.Sleep(500 * time.Millisecond)
	tc.c.Write([]byte("echo hello-$((6*7))\r\n"))
	tc.wait(t, u, "hello-42", 30*time.Second)
	t.Logf("telnet session: %q", tc.output())
	// The console's fd came from our helper: it is alive, paused, until
	// the kernel closes the console.
	if pids := procsRunning(helper); len(pids) != 1 {
		t.Errorf("%d processes run %s during the session, want 1 (ours)", len(pids), helper)
	}
	tc.c.Write([]byte("exit\r\n"))
	u.WaitOutput(t, "AGETTY-EXITED-", 30*time.Second)
}

// procsRunning lists the pids whose executable is exe.
func procsRunning(exe string) []int {
	var pids []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		var pid int
		if _, err := fmt.Sscanf(e.Name(), "%d", &pid); err != nil {
			continue
		}
		if l, err := os.Readlink(filepath.Join("/proc", e.Name(), "exe")); err == nil && l == exe {
			pids = append(pids, pid)
		}
	}
	return pids
}
