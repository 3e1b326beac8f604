package main

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/umltools/umltools/internal/testutil"
)

// startSwitch runs a uml_switch binary on ctl until the test ends.
func startSwitch(t *testing.T, bin, ctl string) {
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

// The network issue's acceptance 1, TCP part: our engine's guest and a
// C kernel on one switch (ours, then Debian's) move 10 MiB each way over
// TCP with busybox nc, and both sides print the same sha256. The guest
// configures eth0 with ifconfig (SIOCSIFADDR, SIOCSIFNETMASK,
// SIOCSIFFLAGS). (busybox nc quits at the network's EOF, so the side that
// only receives keeps its stdin open: an early FIN would end the sender.)
func TestNetSwitchWithCKernel(t *testing.T) {
	img := testutil.BusyboxImage(t)
	switches := []struct{ name, bin string }{{"our-switch", testutil.Bin(t, "uml_switch")}, {"c-switch", "/usr/bin/uml_switch"}}
	for _, sw := range switches {
		t.Run(sw.name, func(t *testing.T) {
			if _, err := os.Stat(sw.bin); err != nil {
				testutil.Skip(t, "%s not installed", sw.bin)
			}
			dir := t.TempDir()
			ctl := filepath.Join(dir, "ctl")
			startSwitch(t, sw.bin, ctl)
			u := testutil.StartUML(t, testutil.UMLOptions{
				Extra: []string{"eth0=daemon,,unix," + ctl},
				Init: "ip link set eth0 up && ip addr add 10.0.7.2/24 dev eth0 && echo C-NET-UP\n" +
					"busybox nc -l -p 5001 | sha256sum | sed 's/^/C-GOT /'\n" +
					"head -c 10485760 /dev/urandom > /tmp/c-data.$$ && sha256sum < /tmp/c-data.$$ | sed 's/^/C-SENT /'\n" +
					"sleep 1; busybox nc 10.0.7.1 5002 < /tmp/c-data.$$; rm -f /tmp/c-data.$$\n" +
					"echo o > /proc/sysrq-trigger\n",
			})
			u.WaitOutput(t, "C-NET-UP", 60*time.Second)
			script := "mount -t proc proc /proc; ifconfig eth0 10.0.7.1 netmask 255.255.255.0 up || exit 1; " +
				"head -c 10485760 /dev/urandom > /tmp/data; echo SENT $(sha256sum < /tmp/data); " +
				"busybox nc 10.0.7.2 5001 < /tmp/data && echo NC-SENT; " +
				"mkfifo /tmp/hold; exec 3<>/tmp/hold; busybox nc -l -p 5002 <&3 | sha256sum | sed 's/^/GOT /'; poweroff -f"
			r := boot(t, "", 3*time.Minute, "ubd0="+img, "con0=fd:0,fd:1", "con=null", "eth0=daemon,,unix,"+ctl, "init=/bin/sh", "--", "-c", script)
			if log := r.stdout + r.stderr; !strings.Contains(log, "Netdevice 0 (") || !strings.Contains(log, "daemon backend (uml_switch version 3) - unix:"+ctl) {
				t.Errorf("no Netdevice banner in\n%s", log)
			}
			sent, got := field(r.stdout, "SENT"), field(r.stdout, "GOT")
			u.WaitOutput(t, "C-GOT "+sent, 30*time.Second)
			cs := field(u.Output(), "C-SENT")
			if sent == "" || cs == "" || got != cs {
				t.Fatalf("guest sent %q, guest got %q, C kernel sent %q\nguest output:\n%s\nstderr:\n%s", sent, got, cs, r.stdout, r.stderr)
			}
		})
	}
}

// field returns the first word after key at the start of a line of out.
func field(out, key string) string {
	for _, l := range strings.Split(strings.ReplaceAll(out, "\r", ""), "\n") {
		if f := strings.Fields(l); len(f) > 1 && f[0] == key {
			return f[1]
		}
	}
	return ""
}
