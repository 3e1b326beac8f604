package main

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/umltools/umltools/internal/cli"
	"github.com/umltools/umltools/internal/testutil"
)

const usageText = `Create: tunctl [-b] [-u owner] [-g group] [-t device-name] [-f tun-clone-device]
Delete: tunctl -d device-name [-f tun-clone-device]

The default tun clone device is /dev/net/tun - some systems use
/dev/misc/net/tun instead

-b will result in brief output (just the device name)
`

// TestParseErrors covers command lines refused before any device is
// touched: messages, usage text and exit code 1 as the C tool.
func TestParseErrors(t *testing.T) {
	cases := []struct {
		args   []string
		stderr string
	}{
		{[]string{"-x"}, "tunctl: invalid option -- 'x'\n" + usageText},
		{[]string{"-n"}, "tunctl: invalid option -- 'n'\n" + usageText},
		{[]string{"-bx"}, "tunctl: invalid option -- 'x'\n" + usageText},
		{[]string{"-t"}, "tunctl: option requires an argument -- 't'\n" + usageText},
		{[]string{"-b", "-u"}, "tunctl: option requires an argument -- 'u'\n" + usageText},
		{[]string{"--foo"}, "tunctl: invalid option -- '-'\n" + usageText},
		{[]string{"extra"}, usageText},
		{[]string{"-t", "tap0", "extra"}, usageText},
		{[]string{"-u", "no-such-user-xyz"}, "'no-such-user-xyz' is neither a username nor a numeric uid.\n" + usageText},
		{[]string{"-u", "12abc"}, "'12abc' is neither a username nor a numeric uid.\n" + usageText},
		{[]string{"-u", ""}, "'' is neither a username nor a numeric uid.\n" + usageText},
		{[]string{"-g", "no-such-group-xyz"}, "'no-such-group-xyz' is neither a groupname nor a numeric group.\n" + usageText},
		{[]string{"-f", "/nonexistent/tun"}, "Failed to open '/nonexistent/tun' : No such file or directory\n"},
	}
	for _, c := range cases {
		var out, errb bytes.Buffer
		err := run(append([]string{"tunctl"}, c.args...), nil, &out, &errb)
		if cli.Code(err) != 1 || out.Len() != 0 || errb.String() != c.stderr {
			t.Errorf("%q: exit %d, stdout %q, stderr\n%s\nwant\n%s", c.args, cli.Code(err), out.String(), errb.String(), c.stderr)
		}
	}
}

func TestHelp(t *testing.T) {
	for _, a := range []string{"-h", "--help", "--version"} {
		var out, errb bytes.Buffer
		if err := run([]string{"tunctl", a}, nil, &out, &errb); err != nil || out.Len() == 0 || errb.Len() != 0 {
			t.Errorf("%s: %v %q %q", a, err, out.String(), errb.String())
		}
	}
}

func TestParseCInt(t *testing.T) {
	good := map[string]int64{"0": 0, "12": 12, "0x10": 16, "0X1f": 31, "010": 8, "-1": -1, "+7": 7, " 5": 5}
	for s, want := range good {
		if got, ok := parseCInt(s); !ok || got != want {
			t.Errorf("parseCInt(%q) = %d, %v; want %d", s, got, ok, want)
		}
	}
	for _, s := range []string{"", "x", "0x", "1_000", "08", "1 ", "--1", "0b1"} {
		if _, ok := parseCInt(s); ok {
			t.Errorf("parseCInt(%q) accepted", s)
		}
	}
}

// tunctlRun is one command's observable result.
type tunctlRun struct {
	stdout, stderr string
	code           int
}

// runIn runs bin with argv[0] "tunctl" inside network namespace ns.
func runIn(t *testing.T, ns, bin string, args ...string) tunctlRun {
	t.Helper()
	var r tunctlRun
	err := testutil.InNetNS(t, ns, func() error {
		cmd := exec.Command(bin, args...)
		cmd.Args[0] = "tunctl"
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		err := cmd.Run()
		r = tunctlRun{out.String(), errb.String(), cmd.ProcessState.ExitCode()}
		if _, ok := err.(*exec.ExitError); ok {
			err = nil
		}
		return err
	})
	if err != nil {
		t.Fatalf("%s %q: %v", bin, args, err)
	}
	return r
}

// ipLink returns `ip -d link show name` in ns (or the error text).
func ipLink(t *testing.T, ns, name string) string {
	ip := testutil.NeedCmd(t, "ip")[0]
	b, _ := exec.Command(ip, "netns", "exec", ns, ip, "-d", "link", "show", name).CombinedOutput()
	return string(b)
}

// TestInterop runs the same command sequence through Debian's tunctl and
// ours, each in a fresh network namespace, and requires the same stdout,
// stderr and exit code for each (acceptance 2), then checks the
// deliberate deviations.
func TestInterop(t *testing.T) {
	var cbin string
	for _, p := range []string{"/usr/sbin/tunctl", "/usr/bin/tunctl"} {
		if _, err := os.Stat(p); err == nil {
			cbin = p
		}
	}
	if cbin == "" {
		testutil.Skip(t, "Debian's tunctl (uml-utilities) is not installed")
	}
	ours := testutil.Bin(t, "tunctl")
	seq := [][]string{
		{},
		{"-b"},
		{"-t", "foo%d"},
		{"-u", "nobody", "-t", "t0"},
		{"-g", "100", "-t", "t1"},
		{"-u", "1000", "-g", "users", "-t", "t2"},
		{"-u", "0x10", "-t", "t3"},
		{"-u", "-1", "-t", "t4"},
		{"-bt", "t5"},
		{"-t", "0123456789abcdefghij"},
		{"-t", "t0"},
		{"-x"},
		{"-t"},
		{"--foo"},
		{"a"},
		{"-u", "zzz"},
		{"-g", "zzz"},
		{"-f", "/nonexistent"},
		{"-t", "lo"},
		{"-d", "t1"},
		{"-b", "-d", "t5"},
	}
	nsC, nsO := testutil.NetNS(t), testutil.NetNS(t)
	for i, args := range seq {
		c := runIn(t, nsC, cbin, args...)
		o := runIn(t, nsO, ours, args...)
		if c != o {
			t.Errorf("tunctl %q:\n C:    %+v\n ours: %+v", args, c, o)
		}
		if i == 3 { // after -u nobody -t t0
			for _, ns := range []string{nsC, nsO} {
				if l := ipLink(t, ns, "t0"); !strings.Contains(l, "tun type tap") || !strings.Contains(l, "persist on user nobody") {
					t.Errorf("ip -d link show t0:\n%s", l)
				}
			}
		}
	}
	// -d t0 removes it, with the same output from both.
	c, o := runIn(t, nsC, cbin, "-d", "t0"), runIn(t, nsO, ours, "-d", "t0")
	if c != o || o.stdout != "Set 't0' nonpersistent\n" || o.code != 0 {
		t.Errorf("-d t0: C %+v ours %+v", c, o)
	}
	for _, ns := range []string{nsC, nsO} {
		if l := ipLink(t, ns, "t0"); !strings.Contains(l, "does not exist") {
			t.Errorf("t0 still there after -d:\n%s", l)
		}
	}
	// Deviations: -d of a missing device is an error (C: create+drop,
	// exit 0); -h is help (C: invalid option, exit 1); ioctls are named.
	c, o = runIn(t, nsC, cbin, "-d", "nonexist"), runIn(t, nsO, ours, "-d", "nonexist")
	if c.code != 0 || o.code != 1 || o.stdout != "" || !strings.Contains(o.stderr, "nonexist: no such device") {
		t.Errorf("-d nonexist: C %+v ours %+v", c, o)
	}
	c, o = runIn(t, nsC, cbin, "-d", "lo"), runIn(t, nsO, ours, "-d", "lo")
	if c.stderr != "TUNSETIFF: Invalid argument\n" || o.code != 1 || o.stderr != "tunctl: lo: not a tap device\n" {
		t.Errorf("-d lo: C %+v ours %+v", c, o)
	}
	if o = runIn(t, nsO, ours, "-h"); o.code != 0 || !strings.HasPrefix(o.stdout, "Usage: tunctl") {
		t.Errorf("-h: %+v", o)
	}
	// --list / --json show the taps with their owners.
	if o = runIn(t, nsO, ours, "--list"); o.code != 0 || !strings.Contains(o.stdout, "t2 owner 1000 group 100 persist on down\n") || !strings.Contains(o.stdout, "t3 owner 16 group - persist on down\n") {
		t.Errorf("--list: %+v", o)
	}
	o = runIn(t, nsO, ours, "--json")
	var taps []tapEntry
	if err := json.Unmarshal([]byte(o.stdout), &taps); err != nil || o.code != 0 {
		t.Errorf("--json: %+v: %v", o, err)
	}
	found := false
	for _, e := range taps {
		if e.Name == "t3" && e.Owner == 16 && e.Group == -1 && e.Persist {
			found = true
		}
	}
	if !found {
		t.Errorf("--json lacks t3 owned by 16: %s", o.stdout)
	}
	if o = runIn(t, nsO, ours, "-d", "foo0"); o.code != 0 || o.stdout != "Set 'foo0' nonpersistent\n" {
		t.Errorf("-d foo0: %+v", o)
	}
}
