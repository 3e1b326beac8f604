package main

import (
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/umltools/umltools/internal/mconsole"
	"github.com/umltools/umltools/internal/testutil"
)

// cClient is Debian's client, by absolute path: ours may be installed
// under the same name earlier on PATH.
const cClient = "/usr/bin/uml_mconsole"

type result = testutil.Result

// runClient runs a client binary with HOME=home and a hard timeout.
func runClient(t *testing.T, bin, home, stdin string, args ...string) result {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), "HOME="+home)
	cmd.Stdin = strings.NewReader(stdin)
	return testutil.RunCmd(t, cmd, 20*time.Second)
}

// bootForMconsole boots the C kernel (hostfs root) with an init that
// waits, and a HOME whose .uml is the machine's uml_dir, so the machine is
// reachable by umid as well as by socket path.
func bootForMconsole(t *testing.T) (*testutil.UML, string) {
	// pid 1 idles in wait before the marker: the C kernel's stack dumper
	// faults now and then on a process that is mid-fork.
	u := testutil.StartUML(t, testutil.UMLOptions{Init: "sleep 600 &\nsleep 0.2\necho MCREADY\nwait\n"})
	u.WaitOutput(t, "MCREADY", 60*time.Second)
	home := t.TempDir()
	if err := os.Symlink(u.UMLDir, home+"/.uml"); err != nil {
		t.Fatal(err)
	}
	return u, home
}

func needCClient(t *testing.T) {
	if _, err := os.Stat(cClient); err != nil {
		testutil.Skip(t, "Debian's uml-utilities not installed (%s)", cClient)
	}
}

// TestInteropCKernel: our client's stdout, stderr and exit code equal the
// C client's against the C kernel, command by command.
func TestInteropCKernel(t *testing.T) {
	needCClient(t)
	ours := testutil.Bin(t, "uml_mconsole")
	u, home := bootForMconsole(t)

	uptime := regexp.MustCompile(`^OK \n\d+\.\d+ \d+\.\d+\n\n$`)
	one := [][]string{
		{"version"}, {"help"}, {"proc", "uptime"}, {"config", "con0"}, {"config", "ubd0"},
		{"go"}, {"log", "hello"}, {"frob"}, {"remove", "ubd9"}, {"config", "mem"},
		{"stack"}, {"proc", "nonexist"}, {"config", "eth0"}, {"mconsole-version"},
		{"versionXYZ"}, {"remove", "frob0"}, {"config", "ubd99=x"},
	}
	for _, name := range []string{u.Umid, u.MconsolePath()} {
		for _, cmd := range one {
			args := append([]string{name}, cmd...)
			want := runClient(t, cClient, home, "", args...)
			got := runClient(t, ours, home, "", args...)
			if cmd[0] == "proc" && cmd[1] == "uptime" {
				if !uptime.MatchString(got.Stdout) || !uptime.MatchString(want.Stdout) || got.Code != want.Code {
					t.Errorf("proc uptime: ours %q rc %d, C %q rc %d", got.Stdout, got.Code, want.Stdout, want.Code)
				}
				continue
			}
			if got != want {
				t.Errorf("%q:\n ours %+v\n    C %+v", args, got, want)
			}
		}
	}
	// remove ubd9 must be 237 (-ENODEV), as measured.
	if r := runClient(t, ours, home, "", u.Umid, "remove", "ubd9"); r.Code != 237 {
		t.Errorf("remove ubd9: rc %d", r.Code)
	}
	// Stateful: stop, version, stop again, go — the same sequence by each.
	seq := [][]string{{"stop"}, {"version"}, {"stop"}, {"go"}, {"go"}}
	var cOut, oOut []result
	for _, c := range seq {
		cOut = append(cOut, runClient(t, cClient, home, "", append([]string{u.Umid}, c...)...))
	}
	for _, c := range seq {
		oOut = append(oOut, runClient(t, ours, home, "", append([]string{u.Umid}, c...)...))
	}
	for i := range seq {
		if cOut[i] != oOut[i] {
			t.Errorf("%v: ours %+v, C %+v", seq[i], oOut[i], cOut[i])
		}
	}
	if oOut[0].Stdout != "OK stopped\n" || oOut[2].Stdout != "ERR Already stopped\n" || oOut[3].Stdout != "OK \n" {
		t.Errorf("stop/go sequence: %+v", oOut)
	}
	// Interactive, stdin not a terminal: readline-style echo, prompt, EOF.
	script := "version\nstop\nversion\ngo\nmconsole-version\nfrob\n\nlog x\nswitch /nonexistent\nhelp\n"
	want := runClient(t, cClient, home, script, u.Umid)
	got := runClient(t, ours, home, script, u.Umid)
	if got != want {
		t.Errorf("interactive:\n ours %+v\n    C %+v", got, want)
	}
	// A name that resolves nowhere: the same warnings; we add a clear
	// message where the C client says "Sending command to '' : Invalid argument".
	want = runClient(t, cClient, home, "", "nosuchumid", "version")
	got = runClient(t, ours, home, "", "nosuchumid", "version")
	if got.Code != 1 || want.Code != 1 || !strings.HasPrefix(got.Stderr, strings.Split(want.Stderr, "Sending")[0]) ||
		!strings.Contains(got.Stderr, "no mconsole socket found for 'nosuchumid'") {
		t.Errorf("missing machine:\n ours %+v\n    C %+v", got, want)
	}
}

// TestInteropLongReplies: `sysrq m` and `stack 1` stream more packets than
// the host's datagram queue holds. Our client gets them all, fast.
func TestInteropLongReplies(t *testing.T) {
	ours := testutil.Bin(t, "uml_mconsole")
	u, home := bootForMconsole(t)
	for _, cmd := range []string{"sysrq m", "stack 1"} {
		var resp *mconsole.Response
		// The 6.1 kernel sometimes aborts its own stack dump ("Received
		// SIGSEGV in SIGSEGV handler"): a short, complete reply. Retry that.
		for try := 0; try < 3; try++ {
			c, err := mconsole.Dial(u.MconsolePath())
			if err != nil {
				t.Fatal(err)
			}
			c.Timeout = 5 * time.Second
			resp, err = c.Command(cmd)
			c.Close()
			if err != nil {
				t.Fatalf("%s: %v", cmd, err)
			}
			if !strings.Contains(resp.Text, "aborting stack trace") {
				break
			}
			time.Sleep(300 * time.Millisecond)
		}
		n := len(resp.Packets)
		if n <= 11 || resp.Packets[n-1].More {
			t.Errorf("%s: %d packets, last more=%v; want more than the 11 an unconnected client gets", cmd, n, resp.Packets[n-1].More)
		}
		t.Logf("%s: %d packets, %d bytes", cmd, n, len(resp.Text))

		start := time.Now()
		r := runClient(t, ours, home, "", append([]string{u.Umid}, strings.Fields(cmd)...)...)
		if r.Code != 0 || !strings.HasPrefix(r.Stdout, "OK ") || len(r.Stdout) < len(resp.Text)/2 {
			t.Errorf("%s via uml_mconsole: rc %d, %d bytes: %.200q", cmd, r.Code, len(r.Stdout), r.Stdout)
		}
		if time.Since(start) > 5*time.Second {
			t.Errorf("%s took %v", cmd, time.Since(start))
		}
	}
	if strings.Count(u.Output(), "Mem-Info") == 0 {
		t.Errorf("sysrq m left no trace in the kernel log")
	}
}

// TestInteropHalt: `halt` replies "OK " and the machine exits cleanly,
// removing its umid directory; the C client sees the same on another boot.
func TestInteropHalt(t *testing.T) {
	needCClient(t)
	ours := testutil.Bin(t, "uml_mconsole")
	var res []result
	for _, bin := range []string{cClient, ours} {
		u, home := bootForMconsole(t)
		res = append(res, runClient(t, bin, home, "", u.Umid, "halt"))
		if err, ok := u.Wait(30 * time.Second); !ok {
			t.Fatalf("%s halt: machine still running: %v", bin, err)
		}
		if _, err := os.Stat(u.MachineDir()); !os.IsNotExist(err) {
			t.Errorf("%s halt: umid directory left behind (%v)", bin, err)
		}
	}
	if res[0] != res[1] || res[1].Stdout != "OK \n" || res[1].Code != 0 {
		t.Errorf("halt: C %+v, ours %+v", res[0], res[1])
	}
}
