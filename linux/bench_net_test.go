package main

import (
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/umltools/umltools/internal/testutil"
)

// The network benchmark (network issue, acceptance 8): TCP throughput
// from one machine to another on our uml_switch (the daemon transport),
// two of our engines against two C kernels, from one run. The sender
// pipes benchNetMiB MiB of zeros into busybox nc and times it (to 10 ms:
// /proc/uptime); the
// receiver's nc throws them away. Run it with `make bench`, or:
//
//	make build && UMLBENCH=1 UMLTEST_BIN=$PWD/bin go test -count=1 -run TestBenchNet -v ./linux/
//
// Not yet here: guest to host over a tap and over the user-mode NAT.

// benchNetMiB is how much the sender sends.
const benchNetMiB = 128

// benchNetSend is the sender's script: it waits for the receiver, sends,
// and prints "NET-MS <milliseconds>".
func benchNetSend(peer string) string {
	// /proc/uptime: busybox's date has no %%N.
	return fmt.Sprintf("sleep 1; a=$(cut -d' ' -f1 /proc/uptime); dd if=/dev/zero bs=64k count=%d 2>/dev/null | busybox nc %s 5001; "+
		"z=$(cut -d' ' -f1 /proc/uptime); echo NET-MS $(awk \"BEGIN{print ($z - $a) * 1000}\")", benchNetMiB*16, peer)
}

// benchNetRecv is the receiver's: its nc's stdin is a fifo it holds open
// (busybox nc quits at its stdin's EOF otherwise).
const benchNetRecv = "mkfifo /tmp/hold; exec 3<>/tmp/hold; busybox nc -l -p 5001 <&3 >/dev/null; echo NET-RECV-DONE"

func TestBenchNet(t *testing.T) {
	testutil.NeedBench(t)
	img := testutil.BusyboxImage(t)
	dir := t.TempDir()
	ctl := filepath.Join(dir, "ctl")
	testutil.StartSwitch(t, testutil.Bin(t, "uml_switch"), ctl)
	eth := "eth0=daemon,,unix," + ctl

	// Ours: two engines, each with its own copy of the image.
	ours := func() (float64, error) {
		recvImg := filepath.Join(dir, "recv.img")
		testutil.CopySparse(t, img, recvImg)
		recv := make(chan run, 1)
		go func() {
			recv <- boot(t, "", 5*time.Minute, "ubd0="+recvImg, "con0=fd:0,fd:1", "con=null", "quiet", eth, "init=/bin/sh", "--", "-c",
				"mount -t proc proc /proc; ifconfig eth0 10.0.20.2 netmask 255.255.255.0 up; "+benchNetRecv+"; poweroff -f")
		}()
		time.Sleep(time.Second)
		r := boot(t, "", 5*time.Minute, "ubd0="+img, "con0=fd:0,fd:1", "con=null", "quiet", eth, "init=/bin/sh", "--", "-c",
			"mount -t proc proc /proc; ifconfig eth0 10.0.20.1 netmask 255.255.255.0 up; "+benchNetSend("10.0.20.2")+"; poweroff -f")
		rr := <-recv
		if !strings.Contains(rr.stdout, "NET-RECV-DONE") {
			return 0, fmt.Errorf("receiver: %s %s", rr.stdout, rr.stderr)
		}
		if _, err := benchNetMs(r.stdout); err != nil {
			return 0, fmt.Errorf("%v\nstderr:\n%s", err, r.stderr)
		}
		return benchNetMs(r.stdout)
	}
	// The C kernels: hostfs roots (the host's busybox), on the same switch.
	c := func() (float64, error) {
		if _, err := testutil.LookPath("linux.uml"); err != nil {
			return 0, fmt.Errorf("linux.uml not installed")
		}
		recv := testutil.StartUML(t, testutil.UMLOptions{Umid: "benchnet-r", Extra: []string{eth},
			Init: "ip link set eth0 up && ip addr add 10.0.21.2/24 dev eth0\n" + benchNetRecv + "\necho o > /proc/sysrq-trigger\n"})
		send := testutil.StartUML(t, testutil.UMLOptions{Umid: "benchnet-s", Extra: []string{eth},
			Init: "ip link set eth0 up && ip addr add 10.0.21.1/24 dev eth0\n" + benchNetSend("10.0.21.2") + "\necho o > /proc/sysrq-trigger\n"})
		send.WaitOutput(t, "NET-MS", 5*time.Minute)
		recv.WaitOutput(t, "NET-RECV-DONE", time.Minute)
		return benchNetMs(send.Output())
	}
	o, err := ours()
	if err != nil {
		t.Fatal(err)
	}
	mbit := func(ms float64) float64 { return benchNetMiB * 8 * 1.048576 / (ms / 1000) }
	t.Logf("BENCH: %-26s %-12s %-12s %s", "network (one run)", "ours", "C kernel", "ratio")
	ck, cerr := c()
	if cerr != nil {
		t.Logf("BENCH: %-26s %-12s %-12s C kernel n/a: %v", "TCP over uml_switch", fmt.Sprintf("%.0f Mbit/s", mbit(o)), "n/a", cerr)
		return
	}
	verdict := "ok"
	if ck < o {
		verdict = "MISSED"
	}
	t.Logf("BENCH: %-26s %-12s %-12s %.2fx the C kernel's throughput (target >= 1x) %s", "TCP over uml_switch",
		fmt.Sprintf("%.0f Mbit/s", mbit(o)), fmt.Sprintf("%.0f Mbit/s", mbit(ck)), ck/o, verdict)
}

// benchNetMs reads the sender's NET-MS line.
func benchNetMs(out string) (float64, error) {
	f := field(out, "NET-MS")
	ms, err := strconv.ParseFloat(f, 64)
	if err != nil || ms <= 0 {
		return 0, fmt.Errorf("no NET-MS line in the sender's output:\n%s", out)
	}
	return ms, nil
}
