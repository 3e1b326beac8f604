package main

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/umltools/umltools/internal/testutil"
)

// switchProc is a running switch binary (ours or the C one).
type switchProc struct {
	cmd      *exec.Cmd
	out, err testutil.SyncBuffer
}

// cSwitch returns the C switch, or skips t.
func cSwitch(t *testing.T) string {
	t.Helper()
	p := "/usr/bin/uml_switch"
	if _, err := os.Stat(p); err != nil {
		testutil.Skip(t, "uml-utilities (C uml_switch) not installed")
	}
	return p
}

// startSwitchBin starts bin with args and waits for the control socket
// ctl to appear. The C switch's stdout is line-buffered with stdbuf so
// its log can be read while it runs. The switch gets SIGINT at the end.
func startSwitchBin(t *testing.T, bin, ctl string, args ...string) *switchProc {
	t.Helper()
	var cmd *exec.Cmd
	if strings.HasPrefix(bin, "/usr/bin/") {
		if sb, err := testutil.LookPath("stdbuf"); err == nil {
			cmd = exec.Command(sb, append([]string{"-oL", bin}, args...)...)
		}
	}
	if cmd == nil {
		cmd = exec.Command(bin, args...)
	}
	sp := &switchProc{cmd: cmd}
	cmd.Stdout, cmd.Stderr = &sp.out, &sp.err
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGINT)
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("%s stdout:\n%s\nstderr:\n%s", bin, tailStr(sp.out.String()), sp.err.String())
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		// The socket file appears at bind(), before listen(): wait until
		// a connection is accepted.
		if c, err := net.Dial("unix", ctl); err == nil {
			c.Close()
			return sp
		}
		select {
		case <-done:
			t.Fatalf("%s exited early: stdout %q stderr %q", bin, sp.out.String(), sp.err.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: control socket %s never appeared", bin, ctl)
		}
	}
}

func tailStr(s string) string {
	if len(s) > 3000 {
		return "…" + s[len(s)-3000:]
	}
	return s
}

// guestScript is run.sh for every machine; $role, $ip and $peer come from
// the kernel command line. Machines a and b find each other, ping each
// other 5 times, then a sends 40 quick pings to b. The watcher w counts
// the frames its interface receives while a and b talk.
const guestScript = `
ifconfig eth0 10.0.0.$ip netmask 255.255.255.0 up
rx() { cat /sys/class/net/eth0/statistics/rx_packets; }
seen() { ls /host | grep -qx "$1"; }
if [ "$role" = w ]; then
	rx > /host/w.before
	echo WATCH-READY
	i=0
	while [ $i -lt 900 ]; do seen a.done && seen b.done && break; sleep 0.1; i=$((i+1)); done
	rx > /host/w.after
	poweroff -f
fi
i=0
until ping -c 1 -W 1 10.0.0.$peer >/dev/null 2>&1; do
	i=$((i+1)); [ $i -ge 60 ] && break
done
ping -c 5 10.0.0.$peer > /host/$role.ping 2>&1
echo "rc=$?" >> /host/$role.ping
if [ "$role" = a ]; then ping -c 40 -i 0.05 10.0.0.$peer > /host/a.flood 2>&1; fi
echo done > /host/$role.done
other=a; [ "$role" = a ] && other=b
i=0
while [ $i -lt 900 ]; do seen $other.done && break; sleep 0.1; i=$((i+1)); done
sleep 0.5
poweroff -f
`

type lanResult struct {
	aPing, bPing string
	watchRx      int // frames the watcher received while a and b talked; -1 without a watcher
}

// runLAN boots machines a and b (and the watcher w when watch is set) on
// the switch at ctl and returns what they recorded.
func runLAN(t *testing.T, ctl string, watch bool) lanResult {
	t.Helper()
	host := t.TempDir()
	if err := os.WriteFile(filepath.Join(host, "run.sh"), []byte(guestScript), 0o755); err != nil {
		t.Fatal(err)
	}
	boot := func(role string, ip, peer int) *testutil.UML {
		img := testutil.BusyboxImage(t)
		return testutil.StartUML(t, testutil.UMLOptions{
			Umid: fmt.Sprintf("sw%s%d", role, time.Now().UnixNano()%1000000),
			Args: []string{"ubd0=" + img, "rw", "init=/init", "umltest=" + host,
				fmt.Sprintf("eth0=daemon,02:00:00:00:01:%02x,unix,%s", ip, ctl),
				"role=" + role, fmt.Sprintf("ip=%d", ip), fmt.Sprintf("peer=%d", peer)},
		})
	}
	var ms []*testutil.UML
	if watch {
		w := boot("w", 3, 0)
		w.WaitOutput(t, "WATCH-READY", 60*time.Second)
		ms = append(ms, w)
	}
	ms = append(ms, boot("a", 1, 2), boot("b", 2, 1))
	for _, m := range ms {
		// Reaching init, or booted again when the C kernel failed its
		// own boot under load (testutil's bootAgain): the others wait
		// for it meanwhile.
		m.WaitOutput(t, "as init process", 120*time.Second)
	}
	for _, m := range ms {
		if _, ok := m.Wait(120 * time.Second); !ok {
			t.Fatalf("machine %s did not power off; output:\n%s", m.Umid, tailStr(m.Output()))
		}
	}
	read := func(name string) string {
		b, _ := os.ReadFile(filepath.Join(host, name))
		return string(b)
	}
	r := lanResult{aPing: read("a.ping"), bPing: read("b.ping"), watchRx: -1}
	if watch {
		before, err1 := strconv.Atoi(strings.TrimSpace(read("w.before")))
		after, err2 := strconv.Atoi(strings.TrimSpace(read("w.after")))
		if err1 != nil || err2 != nil {
			t.Fatalf("watcher counters unreadable: %q %q", read("w.before"), read("w.after"))
		}
		r.watchRx = after - before
	}
	return r
}

func checkPings(t *testing.T, r lanResult) {
	t.Helper()
	for name, out := range map[string]string{"a→b": r.aPing, "b→a": r.bPing} {
		if !strings.Contains(out, "5 packets received") || !strings.Contains(out, "rc=0") {
			t.Errorf("ping %s failed:\n%s", name, out)
		}
	}
}

// TestKernelsPing is acceptance 1 and 2: C kernels on the daemon transport
// ping each other through the switch; a third machine counts what it
// receives: in hub mode it sees the unicast pings, in switch mode it does
// not. The same test runs against the C uml_switch to prove the test.
func TestKernelsPing(t *testing.T) {
	if testing.Short() {
		t.Skip("boots kernels")
	}
	testutil.NeedCmd(t, "linux.uml")
	impls := map[string]string{"ours": testutil.Bin(t, "uml_switch"), "c": cSwitch(t)}
	for _, name := range []string{"ours", "c"} {
		for _, hub := range []bool{false, true} {
			mode := "switch"
			if hub {
				mode = "hub"
			}
			t.Run(name+"-"+mode, func(t *testing.T) {
				ctl := filepath.Join(t.TempDir(), "ctl")
				args := []string{"-unix", ctl}
				if hub {
					args = append(args, "-hub")
				}
				startSwitchBin(t, impls[name], ctl, args...)
				r := runLAN(t, ctl, true)
				checkPings(t, r)
				// a and b exchange 2×(5+5+40) unicast frames plus ARP.
				t.Logf("%s %s: watcher received %d frames", name, mode, r.watchRx)
				if hub && r.watchRx < 80 {
					t.Errorf("hub: watcher received only %d frames; the unicast pings did not reach it", r.watchRx)
				}
				if !hub && r.watchRx > 30 {
					t.Errorf("switch: watcher received %d frames; unicast leaked after learning", r.watchRx)
				}
			})
		}
	}
}

// TestTapNetns is acceptance 3: `uml_switch -tap` attaches a host tap; the
// test moves the tap into a fresh network namespace, addresses it there,
// and pings a C kernel guest on the switch from it.
func TestTapNetns(t *testing.T) {
	if testing.Short() {
		t.Skip("boots a kernel")
	}
	testutil.NeedCmd(t, "linux.uml")
	ns := testutil.NetNS(t)
	ip := testutil.NeedCmd(t, "ip")[0]
	tap := fmt.Sprintf("umlsw%d", time.Now().UnixNano()%100000)
	ctl := filepath.Join(t.TempDir(), "ctl")
	pcap := filepath.Join(t.TempDir(), "sw.pcap")
	sp := startSwitchBin(t, testutil.Bin(t, "uml_switch"), ctl, "-unix", ctl, "-tap", tap, "-pcap", pcap)
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(sp.out.String(), "tap device '"+tap+"'") {
		if time.Now().After(deadline) {
			t.Fatalf("no start-up line with the tap: %q", sp.out.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	sh := func(args ...string) {
		t.Helper()
		if b, err := exec.Command(ip, args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, b)
		}
	}
	sh("link", "set", tap, "netns", ns)
	sh("-n", ns, "addr", "add", "10.0.0.254/24", "dev", tap)
	sh("-n", ns, "link", "set", tap, "up")

	host := t.TempDir()
	script := `
ifconfig eth0 10.0.0.1 netmask 255.255.255.0 up
echo GUEST-READY
i=0
while [ $i -lt 600 ]; do ls /host | grep -qx stop && break; sleep 0.1; i=$((i+1)); done
poweroff -f
`
	if err := os.WriteFile(filepath.Join(host, "run.sh"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	img := testutil.BusyboxImage(t)
	u := testutil.StartUML(t, testutil.UMLOptions{Args: []string{"ubd0=" + img, "rw", "init=/init", "umltest=" + host,
		"eth0=daemon,02:00:00:00:02:01,unix," + ctl}})
	u.WaitOutput(t, "GUEST-READY", 60*time.Second)
	ping := []string{"ping"}
	if _, err := testutil.LookPath("ping"); err != nil {
		ping = []string{testutil.NeedCmd(t, "busybox")[0], "ping"}
	}
	out, err := exec.Command(ip, append(append([]string{"netns", "exec", ns}, ping...), "-c", "5", "-i", "0.2", "-W", "2", "10.0.0.1")...).CombinedOutput()
	os.WriteFile(filepath.Join(host, "stop"), nil, 0o644)
	if err != nil || !strings.Contains(string(out), " 0% packet loss") {
		t.Fatalf("ping from the namespace through the tap: %v\n%s", err, out)
	}
	u.Wait(30 * time.Second)
	// The pcap file is readable and holds the pings (ICMP over IPv4).
	sp.cmd.Process.Signal(syscall.SIGINT)
	time.Sleep(300 * time.Millisecond)
	b, err := os.ReadFile(pcap)
	if err != nil || len(b) < 24 || !bytes.Equal(b[:4], []byte{0xd4, 0xc3, 0xb2, 0xa1}) {
		t.Fatalf("pcap file: %v, %d bytes", err, len(b))
	}
	icmp := 0
	for off := 24; off+16 <= len(b); {
		n := int(uint32(b[off+8]) | uint32(b[off+9])<<8 | uint32(b[off+10])<<16 | uint32(b[off+11])<<24)
		fr := b[off+16 : min(off+16+n, len(b))]
		if len(fr) > 23 && fr[12] == 0x08 && fr[13] == 0 && fr[23] == 1 {
			icmp++
		}
		off += 16 + n
	}
	if icmp < 10 {
		t.Errorf("pcap holds %d ICMP frames, want at least 10 (5 requests, 5 replies)", icmp)
	}
	if p, err := exec.LookPath("tcpdump"); err == nil {
		if o, err := exec.Command(p, "-nr", pcap).CombinedOutput(); err != nil {
			t.Errorf("tcpdump -r: %v: %s", err, o)
		}
	}
}
