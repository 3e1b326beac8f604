package netdev

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"

	"github.com/umltools/umltools/internal/cmdline"
	"github.com/umltools/umltools/internal/switchd"
	"github.com/umltools/umltools/internal/testutil"
)

// startCSwitch runs Debian's uml_switch on ctl, or skips t.
func startCSwitch(t *testing.T, ctl string) {
	t.Helper()
	const bin = "/usr/bin/uml_switch"
	if _, err := os.Stat(bin); err != nil {
		testutil.Skip(t, "uml-utilities (C uml_switch) not installed")
	}
	testutil.StartSwitch(t, bin, ctl)
}

// startOurSwitch runs our switch in the test process on ctl.
func startOurSwitch(t *testing.T, ctl string) {
	t.Helper()
	sw := switchd.New(switchd.Config{})
	if err := sw.Listen(ctl, 0); err != nil {
		t.Fatal(err)
	}
	if err := sw.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sw.Close() })
}

// Acceptance 1 of the network issue at the link layer: our stack and a
// C kernel on one switch (ours, then Debian's) ping each other and move
// 10 MiB over TCP, whose checksum the C side prints.
func TestInteropCKernelOnSwitch(t *testing.T) {
	for _, sw := range []struct {
		name  string
		start func(*testing.T, string)
	}{{"our-switch", startOurSwitch}, {"c-switch", startCSwitch}} {
		t.Run(sw.name, func(t *testing.T) {
			ctl := filepath.Join(t.TempDir(), "ctl")
			sw.start(t, ctl)
			spec := "daemon,,unix," + ctl
			u := withCKernel(t, spec, spec, "10.0.3")
			if out := u.Output(); !strings.Contains(out, "daemon backend (uml_switch version 3) - unix:"+ctl) {
				t.Errorf("the C kernel's banner is not the one Open returns:\n%s", out)
			}
		})
	}
}

// Acceptance 2 at the link layer: mcast between our stack and a C kernel
// (a group of its own, so that parallel runs do not meet).
func TestInteropCKernelMcast(t *testing.T) {
	group := "239.192.77.1"
	e, _, err := cmdline.ParseEth(0, "mcast,,"+group+",1177")
	if err != nil {
		t.Fatal(err)
	}
	f, _, err := Open(e, nil)
	if err != nil {
		testutil.Skip(t, "no multicast on this host: %v", err)
	}
	f.Close()
	spec := "mcast,," + group + ",1177"
	withCKernel(t, spec, spec, "10.0.4")
}

// The ucast transport: our stack and a C kernel on loopback UDP ports.
func TestInteropCKernelUcast(t *testing.T) {
	withCKernel(t, "ucast,,127.0.0.1,1201,1202", "ucast,,127.0.0.1,1202,1201", "10.0.5")
}

// withCKernel gives our stack a device on transport ours and boots a C
// kernel whose eth0 is on transport theirs, the two at net.1 and net.2
// (a /24): each pings the other, then our stack sends 10 MiB over TCP to
// the C kernel's nc, whose checksum it prints. It returns the C kernel.
func withCKernel(t *testing.T, ours, theirs, net3 string) *testutil.UML {
	t.Helper()
	e, _, err := cmdline.ParseEth(0, ours)
	if err != nil {
		t.Fatal(err)
	}
	mac := RandomMAC()
	f, _, err := Open(e, mac)
	if err != nil {
		t.Fatal(err)
	}
	st, _ := machine(t, f, mac, net3+".1/24")
	u := testutil.StartUML(t, testutil.UMLOptions{
		Extra: []string{"eth0=" + theirs},
		Init: "ip link set eth0 up && ip addr add " + net3 + ".2/24 dev eth0 && echo NET-UP\n" +
			"busybox ping -c 2 -W 5 " + net3 + ".1 >/dev/null && echo PING-OK\n" +
			"busybox nc -l -p 5001 | sha256sum | sed 's/^/SUM /'\n" +
			"echo o > /proc/sysrq-trigger\n",
	})
	u.WaitOutput(t, "NET-UP", 60*time.Second)
	var perr error
	for i := 0; i < 5; i++ {
		if perr = Ping(st, netip.MustParseAddr(net3+".2"), 2*time.Second); perr == nil {
			break
		}
	}
	if perr != nil {
		t.Fatalf("our stack pinging the C kernel: %v", perr)
	}
	u.WaitOutput(t, "PING-OK", 30*time.Second)

	data := make([]byte, 10<<20)
	rand.Read(data)
	var c *gonet.TCPConn
	for deadline := time.Now().Add(20 * time.Second); ; {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		c, err = gonet.DialContextTCP(ctx, st.Netstack(), full(net3+".2", 5001), ipv4.ProtocolNumber)
		cancel()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("connect to the C kernel's nc: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	start := time.Now()
	if _, err := c.Write(data); err != nil {
		t.Fatal(err)
	}
	c.Close()
	sum := sha256.Sum256(data)
	u.WaitOutput(t, "SUM "+hex.EncodeToString(sum[:]), 60*time.Second)
	t.Logf("%s: 10 MiB to the C kernel in %v", ours, time.Since(start).Round(time.Millisecond))
	return u
}
