package cmdline

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/umltools/umltools/internal/testutil"
)

// interopScript runs in the C guest (via the busybox image's /init) and
// records what the kernel made of its command line.
const interopScript = `cat /proc/cmdline > /host/cmdline
tr '\0' '\n' < /proc/1/environ > /host/env
ls /sys/block > /host/block
ls /sys/class/net > /host/net
for n in /sys/class/net/eth*; do echo "${n##*/} $(cat $n/address)"; done > /host/mac
ls /sys/class/tty > /host/tty
grep MemTotal /proc/meminfo > /host/mem
echo INTEROP-DONE
while [ ! -e /host/go ]; do sleep 0.05; done
poweroff -f
`

// interopBoot boots the C kernel on the busybox image with args (built by
// mk from the image path, the host directory and scratch disk files) and
// returns its boot log, a reader for the files the guest wrote, our parse
// of the exact argv the kernel got, and our messages.
//
// during, if not nil, runs while the guest is still up.
func interopBoot(t *testing.T, mk func(img, host string, disks []string) []string, during func(*testing.T, *testutil.UML, *Config)) (*testutil.UML, string, func(string) string, *Config, Warnings) {
	t.Helper()
	img := testutil.BusyboxImage(t)
	dir := t.TempDir()
	host := filepath.Join(dir, "host")
	if err := os.Mkdir(host, 0o755); err != nil {
		t.Fatal(err)
	}
	var disks []string
	for i := 0; i < 3; i++ {
		p := filepath.Join(dir, fmt.Sprintf("disk%d.img", i))
		if err := os.WriteFile(p, make([]byte, 1<<20), 0o644); err != nil {
			t.Fatal(err)
		}
		disks = append(disks, p)
	}
	if err := os.WriteFile(filepath.Join(host, "run.sh"), []byte(interopScript), 0o755); err != nil {
		t.Fatal(err)
	}
	u := testutil.StartUML(t, testutil.UMLOptions{Args: mk(img, host, disks)})
	u.WaitOutput(t, "INTEROP-DONE", 60*time.Second)
	// The exact argv the C kernel got (StartUML adds mem=, con/ssl
	// defaults, umid= and uml_dir=).
	c, ws, err := Parse(u.Cmd.Args[1:])
	if err != nil {
		t.Fatal(err)
	}
	if during != nil {
		during(t, u, c)
	}
	if err := os.WriteFile(filepath.Join(host, "go"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, ok := u.Wait(30 * time.Second); !ok {
		t.Fatal("machine did not power off")
	}
	read := func(name string) string {
		b, err := os.ReadFile(filepath.Join(host, name))
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimRight(string(b), "\n")
	}
	log := u.Output()
	if got, want := read("cmdline"), c.ProcCmdline(); got != want {
		t.Errorf("/proc/cmdline:\nC kernel %q\nours     %q", got, want)
	}
	if !strings.Contains(log, c.UnknownLine()+"\n") || c.UnknownLine() == "" {
		t.Errorf("our %q is not in the boot log", c.UnknownLine())
	}
	var env []string
	for _, e := range strings.Split(read("env"), "\n") {
		// busybox sh adds these itself.
		if !strings.HasPrefix(e, "SHLVL=") && !strings.HasPrefix(e, "PATH=") && !strings.HasPrefix(e, "PWD=") {
			env = append(env, e)
		}
	}
	sort.Strings(env)
	ourEnv := append([]string(nil), c.InitEnv...)
	sort.Strings(ourEnv)
	if strings.Join(env, " ") != strings.Join(ourEnv, " ") {
		t.Errorf("init environment:\nC kernel %q\nours     %q", env, ourEnv)
	}
	if c.Umid != u.Umid || c.UMLDir != u.UMLDir+"/" {
		t.Errorf("umid %q uml_dir %q", c.Umid, c.UMLDir)
	}
	interopMessages(t, log, ws)
	return u, log, read, c, ws
}

// interopMessages checks that each of our (kernel-worded) messages is in
// the boot log and each kernel complaint about the options is one of ours.
func interopMessages(t *testing.T, log string, ws Warnings) {
	t.Helper()
	ours := map[string]bool{}
	for _, w := range ws {
		for _, line := range strings.Split(w.Msg, "\n") {
			ours[line] = true
		}
	}
	for line := range ours {
		if strings.HasPrefix(line, "'debug'") {
			continue
		}
		if !strings.Contains(log, line+"\n") {
			t.Errorf("our message %q is not in the C kernel's log", line)
		}
	}
	complaint := regexp.MustCompile(`(?m)^(Failed to (initialize device|set up) .*|.*TYPO|eth_setup .*|vector_setup .*|setup_one_line failed .*|.*_setup - .*|.*_init : .*|setup_etheraddr.*|Attempt to assign .*|Warning: Assigning .*|fake major .*|The fake_ide .*|ubd: Synchronous mode|parse_iomem .*|umid already set|uml_dir .*)$`)
	for _, line := range complaint.FindAllString(log, -1) {
		line = strings.TrimSuffix(line, "\r")
		if !ours[line] {
			t.Errorf("C kernel said %q; we did not", line)
		}
	}
}

// TestInteropCKernel boots Debian's C kernel with a command line full of
// accepted and refused ubd/con/ssl/eth/vec/mem/umid options and checks
// that our parser agrees with it: the guest's /proc/cmdline, init's
// environment, the "Unknown kernel command line parameters" line, every
// message about the options in the boot log, and which block, network and
// tty devices exist in the guest (with the MACs given).
func TestInteropCKernel(t *testing.T) {
	_, _, read, c, _ := interopBoot(t, func(img, host string, disks []string) []string {
		return []string{
			"ubd0=" + img, "rw", "init=/init", "umltest=" + host,
			"ubd1r=" + disks[0], "ubd2=" + disks[1] + ",,SERIAL1", "ubdd=" + disks[2],
			"ubdq=x", "ubd5d=a,b", "ubd0=again", "udbx=1", "ubd=sync",
			"con0=fd:0,fd:1", "con=null", "con2=none", "con3=fd", "con4=fd:x", "con70=null", "conx=1",
			"ssl=null", "ssl1=port:abc", "ssl2=none", "ssl64=null",
			"eth0=mcast,fe:fd:0:0:0:1,239.192.168.9,1234,1", "eth1=ucast,,127.0.0.1,5000,5001",
			"eth2=mcast,,,,,,garbage", "eth3=tuntap,tap9,01:00:00:00:00:00", "eth4=mcast,00:11:22:33:44:55",
			"eth5=mcast,,,x", "ethernet", "eth6", "vecx:transport=tap", "vector",
			"mem=96M", "foo", "a=b", "HOME=/x", "a=c", "x.y=z", "quiet2", "hostfs=/",
			"con5=fd:0,fd:1", "con6=nullx", "ssl3=null,fd:2", "ubd6=" + disks[0] + ":" + disks[1],
		}
	}, mconsoleQueries)
	if c.Mem != 96<<20 {
		t.Errorf("mem %d", c.Mem)
	}
	var memKB int
	fmt.Sscanf(read("mem"), "MemTotal: %d kB", &memKB)
	if memKB <= 64<<10 || memKB > 96<<10 {
		t.Errorf("guest MemTotal %d kB: mem=96M (the last mem=) not in effect", memKB)
	}

	// Devices.
	var ubds []string
	for _, d := range c.Ubd {
		if d != nil {
			ubds = append(ubds, d.Name())
		}
	}
	if got := strings.Fields(read("block")); strings.Join(got, " ") != strings.Join(ubds, " ") {
		t.Errorf("block devices: C kernel %q, ours %q", got, ubds)
	}
	var eths, macs []string
	for _, e := range c.Eth {
		eths = append(eths, e.Name())
		if e.MAC != nil {
			macs = append(macs, e.Name()+" "+e.MAC.String())
		}
	}
	sort.Strings(eths)
	var gotEth []string
	for _, n := range strings.Fields(read("net")) {
		if strings.HasPrefix(n, "eth") {
			gotEth = append(gotEth, n)
		}
	}
	if strings.Join(gotEth, " ") != strings.Join(eths, " ") {
		t.Errorf("network devices: C kernel %q, ours %q", gotEth, eths)
	}
	for _, m := range macs {
		if !strings.Contains(read("mac")+"\n", m+"\n") {
			t.Errorf("MAC %q not in the guest: %q", m, read("mac"))
		}
	}
	ttys := map[string]bool{}
	for _, n := range strings.Fields(read("tty")) {
		ttys[n] = true
	}
	for _, l := range append(c.Con[1:], c.Ssl[:]...) {
		name := strings.TrimPrefix(l.GuestDev(), "/dev/")
		if ttys[name] != l.Valid() {
			t.Errorf("%s (%s=%q): exists in the C guest: %v, valid for us: %v", name, l.Name(), l.Spec, ttys[name], l.Valid())
		}
	}
}

// TestInteropCKernelDashes: "--" after root=, with StartUML's umid= and
// uml_dir= landing after it (the kernel still applies them), quoted values,
// and hostfs=/iomem= cut at the first comma.
func TestInteropCKernelDashes(t *testing.T) {
	u, _, _, c, _ := interopBoot(t, func(img, host string, disks []string) []string {
		return []string{
			"ubd0=" + img, "rw", "init=/init", "umltest=" + host, "root=/dev/ubda",
			"hostfs=/,append", "iomem=x", "vec0:transport=tap,ifname=nonexist9", `q="x y"`, "w1",
			"con0=fd:0,fd:1", "con=null", "ssl=null", "--", "-c", "hello", "b=c",
		}
	}, nil)
	want := []string{"w1", "-c", "hello", "b=c", "uml_dir=" + u.UMLDir + "/", "console=tty0"}
	if strings.Join(c.InitArgs, " ") != strings.Join(want, " ") {
		t.Errorf("init argv %q, want %q", c.InitArgs, want)
	}
	if c.HostFS != "/" || !c.HostFSAppend || len(c.Vec) != 1 || len(c.IOMem) != 0 {
		t.Errorf("hostfs %q %v vec %d iomem %v", c.HostFS, c.HostFSAppend, len(c.Vec), c.IOMem)
	}
}

// mconsoleQueries asks the running C kernel `config <dev>` with Debian's
// uml_mconsole and compares each answer with Config.Device.
func mconsoleQueries(t *testing.T, u *testutil.UML, c *Config) {
	mc, err := testutil.LookPath("uml_mconsole")
	if err != nil {
		t.Log("uml_mconsole not installed: config queries not compared")
		return
	}
	for _, dev := range []string{"ubd0", "ubda", "ubd1r", "ubd2", "ubd3", "ubd4", "ubd6", "ubdz", "con0", "con1", "con2",
		"con3", "con5", "con6", "con0x6", "con16", "conx", "ssl0", "ssl1", "ssl2", "ssl3", "ssl63", "ssl64", "eth0", "vec0", "bogus"} {
		out, _ := exec.Command(mc, u.MconsolePath(), "config", dev).Output()
		got := strings.TrimRight(string(out), "\n")
		v, err := c.Device(dev)
		want := "OK " + v
		if err != nil {
			want = "ERR " + err.Error()
		}
		if got != want {
			t.Errorf("config %s: C kernel %q, ours %q", dev, got, want)
		}
	}
}
