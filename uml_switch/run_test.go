package main

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/umltools/umltools/internal/cli"
	"github.com/umltools/umltools/internal/switchd"
	"github.com/umltools/umltools/internal/testutil"
)

const usageFor = "Usage : uml_switch [ -unix control-socket ] [ -hub ] [ -tap tap-device ]\n" +
	"or : uml_switch -compat-v0 [ -unix control-socket data-socket ] [ -hub ] [ -tap tap-device ]\n"

func TestRunUsage(t *testing.T) {
	cases := []struct {
		args           []string
		stdout, stderr string
		code           int
	}{
		{[]string{"-bogus"}, "", usageFor, 1},
		{[]string{"-unix"}, "", usageFor, 1},
		{[]string{"-tap"}, "", usageFor, 1},
		{[]string{"-hub", "-bogus"}, "uml_switch will be a hub instead of a switch\n", usageFor, 1},
		{[]string{"-unix", "c", "d", "-compat-v0"}, "", usageFor, 1},
		{[]string{"-compat-v0", "-unix", "c"}, "Control protocol 0 compatibility\n", usageFor, 1},
		{[]string{"-mode", "999"}, "", "uml_switch: -mode \"999\": want octal permissions such as 0660\n", 1},
		{[]string{"-vlan", "5"}, "", "uml_switch: -vlan \"5\": want <id>:<control socket> with id 1-4094\n", 1},
		{[]string{"-tap-vlan", "4095"}, "", "uml_switch: -tap-vlan \"4095\": want a VLAN id 1-4094\n", 1},
		{[]string{"-group", "no-such-group-xyz"}, "", "", 1},
	}
	for _, tc := range cases {
		var out, errb bytes.Buffer
		err := run(append([]string{"uml_switch"}, tc.args...), strings.NewReader(""), &out, &errb)
		if got := cli.Code(err); got != tc.code {
			t.Errorf("%q: exit %d, want %d", tc.args, got, tc.code)
		}
		if out.String() != tc.stdout {
			t.Errorf("%q: stdout %q, want %q", tc.args, out.String(), tc.stdout)
		}
		if tc.stderr != "" && errb.String() != tc.stderr {
			t.Errorf("%q: stderr %q, want %q", tc.args, errb.String(), tc.stderr)
		}
	}
	var out bytes.Buffer
	if err := run([]string{"uml_switch", "--help"}, nil, &out, &out); err != nil || !strings.Contains(out.String(), "-unix <ctl>") {
		t.Errorf("--help: %v %q", err, out.String())
	}
}

// TestUsageMatchesC runs the same bad command lines through both binaries
// (named uml_switch via a symlink, since the name is printed) and compares
// stdout, stderr and the exit code.
func TestUsageMatchesC(t *testing.T) {
	c := cSwitch(t)
	dir := t.TempDir()
	ours := filepath.Join(dir, "ours", "uml_switch")
	os.MkdirAll(filepath.Dir(ours), 0o755)
	if err := os.Symlink(binPath(t), ours); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"-bogus"}, {"-unix"}, {"-hub", "-x"}, {"-unix", "c", "d", "-compat-v0"}, {"-compat-v0", "-unix", "c"}, {"-tap"}} {
		type res struct {
			out, err string
			code     int
		}
		runIt := func(bin string) res {
			cmd := exec.Command(bin, args...)
			cmd.Dir = dir
			r := testutil.RunCmd(t, cmd, 20*time.Second)
			// Both print argv[0]; make the names comparable.
			return res{strings.ReplaceAll(r.Stdout, bin, "uml_switch"), strings.ReplaceAll(r.Stderr, bin, "uml_switch"), r.Code}
		}
		o, cr := runIt(ours), runIt(c)
		if o != cr {
			t.Errorf("%q: ours %+v, C %+v", args, o, cr)
		}
	}
}

func binPath(t *testing.T) string {
	t.Helper()
	return testutil.Bin(t, "uml_switch")
}

// TestSecondServerRefused: a second switch on a live control socket gets
// the C switch's message and exit 1, for ours and for the C switch.
func TestSecondServerRefused(t *testing.T) {
	c := cSwitch(t)
	ctl := filepath.Join(t.TempDir(), "ctl")
	startSwitchBin(t, binPath(t), ctl, "-unix", ctl)
	want := "The control socket '" + ctl + "' has another server attached to it\nYou can either\n\tremove '" + ctl + "'\n\tor rerun with a different, unused filename for a socket\n"
	for _, bin := range []string{binPath(t), c} {
		cmd := exec.Command(bin, "-unix", ctl)
		var e bytes.Buffer
		cmd.Stderr = &e
		err := cmd.Run()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 1 {
			t.Errorf("%s: %v, want exit 1", bin, err)
		}
		if e.String() != want {
			t.Errorf("%s: stderr %q, want %q", bin, e.String(), want)
		}
	}
	// The first switch still serves.
	conn, err := switchd.Dial(ctl)
	if err != nil {
		t.Fatalf("first switch no longer serves: %v", err)
	}
	conn.Close()
}

// TestStaleAndSignals: a stale socket file is taken over; SIGINT prints the
// C switch's line, removes the socket and kills the switch with SIGINT;
// SIGTERM (which the C switch ignores) cleans up too.
func TestStaleAndSignals(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM} {
		ctl := filepath.Join(t.TempDir(), "ctl")
		l, err := net.Listen("unix", ctl)
		if err != nil {
			t.Fatal(err)
		}
		l.(*net.UnixListener).SetUnlinkOnClose(false)
		l.Close()
		cmd := exec.Command(binPath(t), "-unix", ctl)
		var o testutil.SyncBuffer
		cmd.Stdout = &o
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		want := binPath(t) + " attached to unix socket '" + ctl + "'\n"
		deadline := time.Now().Add(10 * time.Second)
		for o.String() != want {
			if time.Now().After(deadline) {
				cmd.Process.Kill()
				t.Fatalf("start-up line %q, want %q", o.String(), want)
			}
			time.Sleep(10 * time.Millisecond)
		}
		if st, err := os.Stat(ctl); err != nil || st.Mode().Perm() != 0o660 {
			t.Errorf("control socket: %v, mode %v, want 0660", err, st.Mode().Perm())
		}
		cmd.Process.Signal(sig)
		err = cmd.Wait()
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			t.Fatalf("%v: exit %v, want death by signal", sig, err)
		}
		if ws := ee.Sys().(syscall.WaitStatus); !ws.Signaled() || ws.Signal() != sig {
			t.Errorf("%v: wait status %v, want killed by the signal", sig, ws)
		}
		if got := strings.TrimPrefix(o.String(), want); !strings.HasPrefix(got, "Caught signal ") {
			t.Errorf("%v: output %q", sig, o.String())
		}
		if _, err := os.Stat(ctl); !os.IsNotExist(err) {
			t.Errorf("%v: control socket left behind (%v)", sig, err)
		}
	}
}

// TestStatsDump: SIGUSR1 prints the ports and learned addresses as JSON.
func TestStatsDump(t *testing.T) {
	ctl := filepath.Join(t.TempDir(), "ctl")
	sp := startSwitchBin(t, binPath(t), ctl, "-unix", ctl, "--json")
	a, err := switchd.Dial(ctl)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := switchd.Dial(ctl)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	f := append([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 2, 0, 0, 0, 0, 0x11, 0x88, 0xb5}, make([]byte, 46)...)
	a.WriteFrame(f)
	buf := make([]byte, 2048)
	b.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := b.ReadFrame(buf); err != nil {
		t.Fatal(err)
	}
	sp.cmd.Process.Signal(syscall.SIGUSR1)
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(sp.out.String(), `"mac":"02:00:00:00:00:11"`) {
		if time.Now().After(deadline) {
			t.Fatalf("no stats dump: %q", sp.out.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if !strings.Contains(sp.out.String(), `"rx_frames":1,"rx_bytes":60`) {
		t.Errorf("port counters missing: %q", sp.out.String())
	}
}

// TestDaemonPidfileNotify: -daemon returns once the socket is bound and
// the switch keeps serving; -pidfile names the running switch; with
// NOTIFY_SOCKET set the switch tells systemd READY=1.
func TestDaemonPidfileNotify(t *testing.T) {
	dir := t.TempDir()
	ctl, pid, notify := filepath.Join(dir, "ctl"), filepath.Join(dir, "pid"), filepath.Join(dir, "notify")
	nl, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: notify, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer nl.Close()
	// Relative paths: they must still be removed after the daemon's
	// chdir to /.
	cmd := exec.Command(binPath(t), "-unix", "ctl", "-pidfile", "pid", "-daemon")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+notify)
	// A file, not a pipe: the daemon keeps its stdout open.
	out, err := os.Create(filepath.Join(dir, "out"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	cmd.Stdout = out
	done := make(chan error, 1)
	go func() { done <- cmd.Run() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("-daemon: %v", err)
		}
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		t.Fatal("-daemon did not return")
	}
	b, err := os.ReadFile(pid)
	if err != nil {
		t.Fatalf("pidfile: %v", err)
	}
	var n int
	if _, err := fmt.Sscan(string(b), &n); err != nil || n == cmd.Process.Pid {
		t.Fatalf("pidfile %q (parent pid %d)", b, cmd.Process.Pid)
	}
	defer syscall.Kill(n, syscall.SIGTERM)
	nl.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 256)
	if k, _, err := nl.ReadFrom(buf); err != nil || string(buf[:k]) != "READY=1" {
		t.Fatalf("notify: %q %v", buf[:k], err)
	}
	c, err := switchd.Dial(ctl)
	if err != nil {
		t.Fatalf("daemon not serving: %v", err)
	}
	c.Close()
	syscall.Kill(n, syscall.SIGTERM)
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, e1 := os.Stat(pid)
		_, e2 := os.Stat(ctl)
		if os.IsNotExist(e1) && os.IsNotExist(e2) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after SIGTERM: pidfile %v, socket %v still there", e1, e2)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestVLANSocket: `-vlan 10:<ctl>` opens a second control socket whose
// ports are in VLAN 10; broadcasts do not cross between the two.
func TestVLANSocket(t *testing.T) {
	dir := t.TempDir()
	ctl, ctl10 := filepath.Join(dir, "ctl"), filepath.Join(dir, "ctl10")
	sp := startSwitchBin(t, binPath(t), ctl, "-unix", ctl, "-vlan", "10:"+ctl10)
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(sp.out.String(), "'"+ctl10+"' for VLAN 10\n") {
		if time.Now().After(deadline) {
			t.Fatalf("no VLAN start-up line: %q", sp.out.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	var cs []*switchd.Conn
	for _, p := range []string{ctl, ctl, ctl10, ctl10} {
		c, err := switchd.Dial(p)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		cs = append(cs, c)
	}
	f := append([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 2, 0, 0, 0, 0, 0x21, 0x88, 0xb5}, make([]byte, 46)...)
	cs[2].WriteFrame(f)
	buf := make([]byte, 2048)
	cs[3].SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := cs[3].ReadFrame(buf); err != nil {
		t.Fatalf("VLAN 10 peer did not get the broadcast: %v", err)
	}
	for _, c := range cs[:2] {
		c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		if _, err := c.ReadFrame(buf); err == nil {
			t.Fatal("a VLAN 10 broadcast leaked into the default VLAN")
		}
	}
}

// TestGroupMode: -group and -mode set the control socket's group and
// permissions.
func TestGroupMode(t *testing.T) {
	gid := os.Getgid()
	if os.Geteuid() == 0 {
		gid = 1 // any group will do for root
	}
	ctl := filepath.Join(t.TempDir(), "ctl")
	startSwitchBin(t, binPath(t), ctl, "-unix", ctl, "-group", fmt.Sprint(gid), "-mode", "0640")
	st, err := os.Stat(ctl)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o640 || int(st.Sys().(*syscall.Stat_t).Gid) != gid {
		t.Errorf("control socket mode %v gid %d, want 0640 gid %d", st.Mode().Perm(), st.Sys().(*syscall.Stat_t).Gid, gid)
	}
}

// TestEOFOnTerminal: with a terminal on stdin, end of file (^D) stops the
// switch cleanly with the C switch's message and exit 0.
func TestEOFOnTerminal(t *testing.T) {
	master, err := os.OpenFile("/dev/ptmx", os.O_RDWR, 0)
	if err != nil {
		testutil.Skip(t, "no pseudo-terminals: %v", err)
	}
	defer master.Close()
	if err := unix.IoctlSetPointerInt(int(master.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(int(master.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	slave, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer slave.Close()
	ctl := filepath.Join(t.TempDir(), "ctl")
	cmd := exec.Command(binPath(t), "-unix", ctl)
	cmd.Stdin = slave
	var o testutil.SyncBuffer
	cmd.Stdout = &o
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(o.String(), "attached to unix socket") {
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			t.Fatalf("no start-up line: %q", o.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	master.Write([]byte{4}) // ^D: end of file on the terminal
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("exit: %v, want 0", err)
		}
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		t.Fatal("^D did not stop the switch")
	}
	if !strings.HasSuffix(o.String(), "EOF on stdin, cleaning up and exiting\n") {
		t.Errorf("output %q", o.String())
	}
	if _, err := os.Stat(ctl); !os.IsNotExist(err) {
		t.Errorf("control socket left behind: %v", err)
	}
}

// TestUnitFile checks docs/uml_switch.service with systemd-analyze verify
// (ExecStart pointed at our binary) and that it uses the Debian kernel's
// default control socket.
func TestUnitFile(t *testing.T) {
	sa := testutil.NeedCmd(t, "systemd-analyze")[0]
	root, err := testutil.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(root, "docs", "uml_switch.service"))
	if err != nil {
		t.Fatal(err)
	}
	unit := string(b)
	for _, want := range []string{"Type=notify", "UML_SWITCH_CTL=/run/uml-utilities/uml_switch.ctl", "EnvironmentFile=-/etc/default/uml-utilities", "-unix \"$$UML_SWITCH_CTL\""} {
		if !strings.Contains(unit, want) {
			t.Errorf("unit lacks %q", want)
		}
	}
	unit = strings.ReplaceAll(unit, "/usr/local/bin/uml_switch", binPath(t))
	p := filepath.Join(t.TempDir(), "uml_switch.service")
	if err := os.WriteFile(p, []byte(unit), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(sa, "verify", p).CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) != 0 {
		// Without a running systemd, verify can only complain about that.
		if strings.Contains(string(out), "System has not been booted with systemd") {
			testutil.Skip(t, "systemd-analyze verify needs systemd: %s", out)
		}
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}
