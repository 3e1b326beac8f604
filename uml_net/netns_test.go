package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/umltools/umltools/internal/testutil"
	"github.com/umltools/umltools/internal/tuntap"
	"golang.org/x/sys/unix"
)

const nobody = 65534

// sharedDir returns a fresh directory every user can read and enter (and
// write, when writable), so the unprivileged runs below can use it.
func sharedDir(t *testing.T, writable bool) string {
	t.Helper()
	d, err := os.MkdirTemp("", "umlnet-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	mode := os.FileMode(0o755)
	if writable {
		mode = 0o777
	}
	if err := os.Chmod(d, mode); err != nil {
		t.Fatal(err)
	}
	return d
}

// installHelper copies our uml_net into dir as root-owned "uml_net", with
// the setuid bit (mode "suid") or CAP_NET_ADMIN (mode "cap") or neither.
func installHelper(t *testing.T, dir, mode string) string {
	t.Helper()
	src, err := os.ReadFile(testutil.Bin(t, "uml_net"))
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "uml_net")
	if err := os.WriteFile(p, src, 0o755); err != nil {
		t.Fatal(err)
	}
	switch mode {
	case "suid":
		if err := os.Chmod(p, 0o755|os.ModeSetuid); err != nil {
			t.Fatal(err)
		}
	case "cap":
		setcap := testutil.NeedCmd(t, "setcap")[0]
		caps := "cap_net_admin+ep"
		if st, err := os.Stat(tuntap.DefaultClone); err == nil && st.Mode().Perm()&0o006 != 0o006 {
			// This host's clone device is not world read-write (it is
			// 0666 on Debian); the man page documents adding
			// cap_dac_override for such hosts.
			caps = "cap_net_admin,cap_dac_override+ep"
		}
		if b, err := exec.Command(setcap, caps, p).CombinedOutput(); err != nil {
			testutil.Skip(t, "setcap %s: %v: %s", caps, err, b)
		}
	}
	return p
}

// asUser prefixes argv so it runs as uid/gid with no supplementary groups.
func asUser(t *testing.T, uid int, argv []string) []string {
	if uid == 0 {
		return argv
	}
	setpriv := testutil.NeedCmd(t, "setpriv")[0]
	return append([]string{setpriv, fmt.Sprintf("--reuid=%d", uid), fmt.Sprintf("--regid=%d", uid), "--clear-groups"}, argv...)
}

// hostState describes everything uml_net could change in a namespace.
func hostState(t *testing.T, ns string) string {
	t.Helper()
	var lines []string
	err := testutil.InNetNS(t, ns, func() error {
		nl, err := tuntap.DialNetlink()
		if err != nil {
			return err
		}
		defer nl.Close()
		links, err := nl.Links()
		if err != nil {
			return err
		}
		for _, l := range links {
			s := fmt.Sprintf("link %d %s flags=%#x mtu=%d kind=%s", l.Index, l.Name, l.Flags&unix.IFF_UP, l.MTU, l.Kind)
			if l.Tun != nil {
				s += fmt.Sprintf(" tun=%+v", *l.Tun)
			}
			b, _ := os.ReadFile("/proc/sys/net/ipv4/conf/" + l.Name + "/proxy_arp")
			lines = append(lines, s+" proxy_arp="+strings.TrimSpace(string(b)))
		}
		addrs, err := nl.Addrs()
		if err != nil {
			return err
		}
		for _, a := range addrs {
			lines = append(lines, fmt.Sprintf("addr %d %s", a.Index, a.Prefix))
		}
		routes, err := nl.Routes()
		if err != nil {
			return err
		}
		for _, r := range routes {
			lines = append(lines, fmt.Sprintf("route %s oif %d gw %v", r.Dst, r.Oif, r.Gw))
		}
		ps, err := nl.Proxies()
		if err != nil {
			return err
		}
		for _, p := range ps {
			lines = append(lines, fmt.Sprintf("proxy %s dev %d", p.IP, p.Index))
		}
		b, _ := os.ReadFile("/proc/sys/net/ipv4/ip_forward")
		lines = append(lines, "ip_forward="+strings.TrimSpace(string(b)))
		return nil
	})
	if err != nil {
		t.Fatalf("reading state of %s: %v", ns, err)
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

// netnsCmd builds `ip netns exec ns argv...`.
func netnsCmd(t *testing.T, ns string, argv ...string) *exec.Cmd {
	ip := testutil.NeedCmd(t, "ip")[0]
	return exec.Command(ip, append([]string{"netns", "exec", ns}, argv...)...)
}

// helperResult is what one uml_net run produced.
type helperResult struct {
	code           int
	stdout, stderr string // stdout only when it was not a socket
	reply          []byte // bytes received on the reply socket
	fds            int    // descriptors received with the reply
}

// runHelper runs argv (uml_net and its arguments) in ns with fd 1 a fresh
// AF_UNIX socketpair end of type sock (0: a pipe), env as the whole
// environment, and extra as descriptors 3, 4, ...
func runHelper(t *testing.T, ns string, uid, sock int, env []string, extra []*os.File, argv ...string) helperResult {
	t.Helper()
	cmd := netnsCmd(t, ns, asUser(t, uid, argv)...)
	cmd.Env = env
	cmd.ExtraFiles = extra
	var stderr, stdout bytes.Buffer
	cmd.Stderr = &stderr
	var mine *os.File
	if sock != 0 {
		fds, err := unix.Socketpair(unix.AF_UNIX, sock|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		mine = os.NewFile(uintptr(fds[0]), "mine")
		theirs := os.NewFile(uintptr(fds[1]), "theirs")
		defer mine.Close()
		cmd.Stdout = theirs
		defer theirs.Close()
	} else {
		cmd.Stdout = &stdout
	}
	err := cmd.Run()
	r := helperResult{code: cmd.ProcessState.ExitCode(), stdout: stdout.String(), stderr: stderr.String()}
	if err != nil && r.code < 0 {
		t.Fatalf("running %v: %v", argv, err)
	}
	if mine != nil {
		for {
			b := make([]byte, 65536)
			oob := make([]byte, unix.CmsgSpace(4*4))
			n, oobn, _, _, err := unix.Recvmsg(int(mine.Fd()), b, oob, unix.MSG_DONTWAIT)
			if err != nil || (n == 0 && oobn == 0 && sock == unix.SOCK_STREAM) {
				break
			}
			r.reply = append(r.reply, b[:n]...)
			if oobn > 0 {
				msgs, _ := unix.ParseSocketControlMessage(oob[:oobn])
				for _, m := range msgs {
					fds, _ := unix.ParseUnixRights(&m)
					r.fds += len(fds)
					for _, fd := range fds {
						unix.Close(fd)
					}
				}
			}
			if sock == unix.SOCK_DGRAM {
				break
			}
		}
	}
	return r
}

// TestMalformedInvocations runs at least 30 hostile or malformed uml_net
// invocations in a network namespace, as root and as an unprivileged user
// with a setuid copy, and checks each exits 1 and leaves the namespace's
// links, addresses, routes, proxy entries and sysctls exactly as they were.
func TestMalformedInvocations(t *testing.T) {
	ns := testutil.NetNS(t)
	dir := sharedDir(t, false)
	bin := installHelper(t, dir, "suid")
	// A "LAN": a veth pair with a router, and taps owned by root and by
	// uid 1234 plus a tun device, to aim the ownership checks at.
	setup := [][]string{
		{"ip", "link", "set", "lo", "up"},
		{"ip", "link", "add", "lan0", "type", "veth", "peer", "name", "lan1"},
		{"ip", "addr", "add", "192.168.77.1/24", "dev", "lan0"},
		{"ip", "link", "set", "lan0", "up"},
		{"ip", "link", "set", "lan1", "up"},
		{"ip", "route", "add", "default", "via", "192.168.77.254"},
		{"ip", "tuntap", "add", "dev", "roottap", "mode", "tap", "user", "0"},
		{"ip", "tuntap", "add", "dev", "othertap", "mode", "tap", "user", "1234"},
		{"ip", "tuntap", "add", "dev", "mytun", "mode", "tun", "user", fmt.Sprint(nobody)},
	}
	for _, c := range setup {
		if b, err := netnsCmd(t, ns, c...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v: %s", c, err, b)
		}
	}
	evil := sharedDir(t, true)
	marker := filepath.Join(evil, "ran")
	for _, name := range []string{"ifconfig", "route", "arp", "bash", "modprobe", "ip", "sh"} {
		os.WriteFile(filepath.Join(evil, name), []byte("#!/bin/sh\ntouch "+marker+"\n"), 0o755)
	}
	cleanEnv := []string{"PATH=/usr/bin:/bin"}
	hostile := []string{"PATH=" + evil, "LD_PRELOAD=" + filepath.Join(evil, "evil.so"), "GODEBUG=panicnil=1", "IFS=/", "GCONV_PATH=" + evil}
	dgram, stream := unix.SOCK_DGRAM, unix.SOCK_STREAM
	type tc struct {
		name string
		uid  int
		sock int
		env  []string
		args []string
	}
	cases := []tc{
		{"no args", 0, stream, cleanEnv, nil},
		{"version only", 0, stream, cleanEnv, []string{"4"}},
		{"version 5", 0, stream, cleanEnv, []string{"5", "tuntap", "up", "10.0.1.1"}},
		{"version -1", 0, stream, cleanEnv, []string{"-1", "tuntap", "up", "10.0.1.1"}},
		{"version overflow", 0, stream, cleanEnv, []string{"4294967300", "tuntap", "up", "10.0.1.1"}},
		{"version 3", 0, dgram, cleanEnv, []string{"3", "tuntap", "up", "10.0.1.1"}},
		{"version word", 0, dgram, cleanEnv, []string{"tuntap", "up", "10.0.1.1"}},
		{"unknown transport", 0, stream, cleanEnv, []string{"4", "vde", "up"}},
		{"tuntap no op", 0, stream, cleanEnv, []string{"4", "tuntap"}},
		{"tuntap bad op", 0, stream, cleanEnv, []string{"4", "tuntap", "sideways", "10.0.1.1"}},
		{"tuntap up extra", 0, dgram, cleanEnv, []string{"4", "tuntap", "up", "10.0.1.1", "10.0.1.2"}},
		{"tuntap up bad gate", 0, dgram, cleanEnv, []string{"4", "tuntap", "up", "10.0.1.300"}},
		{"tuntap up gate with mask", 0, dgram, cleanEnv, []string{"4", "tuntap", "up", "10.0.1.1/24"}},
		{"tuntap up ipv6 gate", 0, dgram, cleanEnv, []string{"4", "tuntap", "up", "fe80::1"}},
		{"tuntap up router gate", 0, dgram, cleanEnv, []string{"4", "tuntap", "up", "192.168.77.254"}},
		{"tuntap up stream stdout", 0, stream, cleanEnv, []string{"4", "tuntap", "up", "10.0.1.1"}},
		{"tuntap up pipe stdout", 0, 0, cleanEnv, []string{"4", "tuntap", "up", "10.0.1.1"}},
		{"add too few", 0, stream, cleanEnv, []string{"4", "add", "roottap", "10.0.1.2"}},
		{"add too many", 0, stream, cleanEnv, []string{"4", "add", "roottap", "10.0.1.2", "255.255.255.0", "eth0"}},
		{"add dotdot name", 0, stream, cleanEnv, []string{"4", "add", "../x", "10.0.1.2", "255.255.255.0"}},
		{"add shell name", 0, stream, cleanEnv, []string{"4", "add", "a;b", "10.0.1.2", "255.255.255.0"}},
		{"add 16-char name", 0, stream, cleanEnv, []string{"4", "add", "roottap123456789", "10.0.1.2", "255.255.255.0"}},
		{"add space name", 0, stream, cleanEnv, []string{"4", "add", "roottap 1", "10.0.1.2", "255.255.255.0"}},
		{"add bad ip", 0, stream, cleanEnv, []string{"4", "add", "roottap", "10.0.1", "255.255.255.0"}},
		{"add broadcast ip", 0, stream, cleanEnv, []string{"4", "add", "roottap", "255.255.255.255", "255.255.255.0"}},
		{"add bad mask", 0, stream, cleanEnv, []string{"4", "add", "roottap", "10.0.1.2", "255.0.255.0"}},
		{"add non-tap", 0, stream, cleanEnv, []string{"4", "add", "lan0", "10.0.1.2", "255.255.255.0"}},
		{"add missing dev", 0, stream, cleanEnv, []string{"4", "add", "tap9", "10.0.1.2", "255.255.255.0"}},
		{"add router address", 0, stream, cleanEnv, []string{"4", "add", "roottap", "192.168.77.254", "255.255.255.0"}},
		{"del other user's tap", 0, stream, cleanEnv, []string{"4", "del", "othertap", "10.0.1.2", "255.255.255.0"}},
		{"add closed stdout", 0, -1, cleanEnv, []string{"4", "add", "roottap", "10.0.1.2", "255.255.255.0"}},
		{"ethertap too few", 0, stream, cleanEnv, []string{"4", "ethertap", "tap0"}},
		{"ethertap bad fd", 0, stream, cleanEnv, []string{"4", "ethertap", "tap0", "3x"}},
		{"ethertap closed fd", 0, stream, cleanEnv, []string{"4", "ethertap", "tap0", "7"}},
		{"ethertap stdout as data", 0, stream, cleanEnv, []string{"4", "ethertap", "tap0", "1"}},
		{"ethertap no driver", 0, stream, cleanEnv, []string{"4", "ethertap", "tap0", "3", "10.0.1.1"}},
		{"slip no pty", 0, 0, cleanEnv, []string{"4", "slip", "up", "10.0.1.1"}},
		{"slip too few", 0, 0, cleanEnv, []string{"4", "slip", "up"}},
		{"hostile env, bad args", 0, stream, hostile, []string{"4", "add", "a;b", "10.0.1.2", "255.255.255.0"}},
		{"hostile env, bad gate", 0, dgram, hostile, []string{"4", "tuntap", "up", "10.0.1.256"}},
		{"user: root's tap", nobody, stream, cleanEnv, []string{"4", "add", "roottap", "10.0.1.2", "255.255.255.0"}},
		{"user: other user's tap", nobody, stream, cleanEnv, []string{"4", "add", "othertap", "10.0.1.2", "255.255.255.0"}},
		{"user: own tun (not tap)", nobody, stream, cleanEnv, []string{"4", "add", "mytun", "10.0.1.2", "255.255.255.0"}},
		{"user: loopback", nobody, stream, cleanEnv, []string{"4", "del", "lo", "10.0.1.2", "255.0.0.0"}},
		{"user: hostile env", nobody, stream, hostile, []string{"4", "add", "roottap", "10.0.1.2", "255.255.255.0"}},
	}
	// Why each must be refused: a substring of what it printed or replied.
	why := map[string]string{
		"no args": "bad argument list", "version only": "bad argument list",
		"version 5": "Version mismatch", "version -1": "Unknown transport : '-1'",
		"version overflow": "bad version", "version 3": "No version #3 handler",
		"version word": "No version #0 handler", "unknown transport": "Unknown transport : 'vde'",
		"tuntap no op": "too few arguments to tuntap_v4", "tuntap bad op": "Bad tuntap op",
		"tuntap up extra": "too many arguments", "tuntap up bad gate": "bad gate address",
		"tuntap up gate with mask": "bad gate address", "tuntap up ipv6 gate": "bad gate address",
		"tuntap up router gate": "is a router of this host", "tuntap up stream stdout": "not a Unix datagram socket",
		"tuntap up pipe stdout": "not a Unix datagram socket", "add too few": "too few arguments to add",
		"add too many": "too many arguments to add", "add dotdot name": "only alphanumeric",
		"add shell name": "only alphanumeric", "add 16-char name": "bad device name",
		"add space name": "only alphanumeric", "add bad ip": "bad address", "add broadcast ip": "not a unicast host address",
		"add bad mask": "not contiguous", "add non-tap": "lan0 is not a tap device created for uid 0",
		"add missing dev": "no such device", "add router address": "is a router of this host",
		"del other user's tap": "othertap is not a tap device created for uid 0", "add closed stdout": "descriptor 1 is not a Unix socket",
		"ethertap too few": "Too few arguments to ethertap_v4", "ethertap bad fd": "bad file descriptor",
		"ethertap closed fd": "not a Unix datagram socket", "ethertap stdout as data": "bad file descriptor",
		"ethertap no driver": "ethertap driver was removed", "slip no pty": "not the terminal",
		"slip too few": "too few arguments to slip_v4", "hostile env, bad args": "only alphanumeric",
		"hostile env, bad gate": "bad gate address", "user: root's tap": "roottap is not a tap device created for uid 65534",
		"user: other user's tap": "othertap is not a tap device created", "user: own tun (not tap)": "mytun is not a tap device",
		"user: loopback": "lo is not a tap device created for uid 65534", "user: hostile env": "roottap is not a tap device",
	}
	before := hostState(t, ns)
	for _, c := range cases {
		var extra []*os.File
		if strings.HasPrefix(c.name, "ethertap no driver") {
			a, b := socketPair(t, unix.SOCK_DGRAM)
			_ = a
			extra = []*os.File{b}
		}
		sock := c.sock
		argv := append([]string{bin}, c.args...)
		if sock == -1 {
			// A closed fd 1: run through a shell that closes it.
			argv = append([]string{"/bin/sh", "-c", `exec "$0" "$@" >&-`}, argv...)
			sock = 0
		}
		r := runHelper(t, ns, c.uid, sock, c.env, extra, argv...)
		msg := r.stderr + r.stdout + replyText(r.reply)
		t.Logf("%-28s -> %q", c.name, msg)
		if w := why[c.name]; w == "" || !strings.Contains(msg, w) {
			t.Errorf("%s: refused for the wrong reason: %q, want %q", c.name, msg, w)
		}
		if r.code != 1 || r.fds != 0 {
			t.Errorf("%s: exit %d (fds %d), want 1; stderr %q stdout %q reply %q", c.name, r.code, r.fds, r.stderr, r.stdout, r.reply)
		}
		if after := hostState(t, ns); after != before {
			t.Fatalf("%s changed the host:\nbefore:\n%s\nafter:\n%s", c.name, before, after)
		}
	}
	if _, err := os.Stat(marker); err == nil {
		t.Error("a program from the hostile PATH was run")
	}
	if len(cases) < 30 {
		t.Fatalf("only %d cases", len(cases))
	}
}

// TestTuntapUpAndChange runs the helper directly in a namespace as an
// unprivileged user (setuid copy and file-capability copy) and checks the
// reply datagram, the tap's owner and address, then add/del of a guest
// address: host route, proxy_arp and proxy ARP entries on the LAN side.
func TestTuntapUpAndChange(t *testing.T) {
	for _, mode := range []string{"suid", "cap"} {
		t.Run(mode, func(t *testing.T) {
			ns := testutil.NetNS(t)
			dir := sharedDir(t, false)
			bin := installHelper(t, dir, mode)
			for _, c := range [][]string{
				{"ip", "link", "add", "lan0", "type", "veth", "peer", "name", "lan1"},
				{"ip", "addr", "add", "10.0.1.100/24", "dev", "lan0"},
				{"ip", "link", "set", "lan0", "up"},
			} {
				if b, err := netnsCmd(t, ns, c...).CombinedOutput(); err != nil {
					t.Fatalf("%v: %v: %s", c, err, b)
				}
			}
			// Hold the tap open: run the helper from a process that keeps
			// the received descriptor, i.e. this test, via the socket.
			cmd := netnsCmd(t, ns, asUser(t, nobody, []string{bin, "4", "tuntap", "up", "10.0.1.1"})...)
			cmd.Env = []string{}
			fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				t.Fatal(err)
			}
			mine, theirs := os.NewFile(uintptr(fds[0]), "mine"), os.NewFile(uintptr(fds[1]), "theirs")
			defer mine.Close()
			cmd.Stdout = theirs
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			if err := cmd.Run(); err != nil {
				t.Fatalf("tuntap up: %v: %s", err, stderr.String())
			}
			theirs.Close()
			b := make([]byte, 4096)
			oob := make([]byte, unix.CmsgSpace(4))
			n, oobn, _, _, err := unix.Recvmsg(int(mine.Fd()), b, oob, unix.MSG_DONTWAIT)
			if err != nil || n < unix.IFNAMSIZ || oobn == 0 {
				t.Fatalf("reply: n=%d oobn=%d err=%v", n, oobn, err)
			}
			name := strings.TrimRight(string(b[:unix.IFNAMSIZ]), "\x00")
			text := string(b[unix.IFNAMSIZ:n])
			if !strings.HasSuffix(text, "\x00") || !strings.Contains(text, "ip address add 10.0.1.1/32 dev "+name) {
				t.Errorf("reply text %q", text)
			}
			msgs, _ := unix.ParseSocketControlMessage(oob[:oobn])
			rights, err := unix.ParseUnixRights(&msgs[0])
			if err != nil || len(rights) != 1 {
				t.Fatalf("rights %v %v", rights, err)
			}
			tap := os.NewFile(uintptr(rights[0]), name)
			defer tap.Close()
			state := hostState(t, ns)
			wantOwner := fmt.Sprintf("tun={Tap:true Owner:%d Group:-1 Persist:false}", nobody)
			if !strings.Contains(state, name+" flags=0x1 mtu=1500 kind=tun "+wantOwner) || !strings.Contains(state, "10.0.1.1/32") || !strings.Contains(state, "ip_forward=1") {
				t.Fatalf("state after up:\n%s", state)
			}
			// add: host route, proxy_arp on the tap, proxy entry on lan0.
			r := runHelper(t, ns, nobody, unix.SOCK_STREAM, nil, nil, bin, "4", "add", name, "10.0.1.2", "255.255.255.0")
			text, _, err = parseBlob(r.reply)
			if r.code != 0 || err != nil {
				t.Fatalf("add: exit %d %q %v %q", r.code, text, err, r.stderr)
			}
			state = hostState(t, ns)
			for _, want := range []string{"route 10.0.1.2/32 oif", "proxy 10.0.1.2 dev", name + " flags=0x1"} {
				if !strings.Contains(state, want) {
					t.Errorf("after add, no %q in\n%s\nreply %q", want, state, text)
				}
			}
			if !strings.Contains(state, "proxy_arp=1") {
				t.Errorf("proxy_arp not set:\n%s", state)
			}
			// Another user, on a tap of their own, can neither claim the
			// guest's address nor remove its proxy entries.
			if b, err := netnsCmd(t, ns, "ip", "tuntap", "add", "dev", "atk0", "mode", "tap", "user", "4321").CombinedOutput(); err != nil {
				t.Fatalf("ip tuntap add: %v %s", err, b)
			}
			before := hostState(t, ns)
			r = runHelper(t, ns, 4321, unix.SOCK_STREAM, nil, nil, bin, "4", "add", "atk0", "10.0.1.2", "255.255.255.0")
			if text, _, _ := parseBlob(r.reply); r.code != 1 || !strings.Contains(text, "routed to another interface") {
				t.Errorf("claiming another guest's address: exit %d %q", r.code, text)
			}
			r = runHelper(t, ns, 4321, unix.SOCK_STREAM, nil, nil, bin, "4", "del", "atk0", "10.0.1.2", "255.255.255.0")
			if after := hostState(t, ns); after != before {
				t.Errorf("del on atk0 (exit %d) changed the state:\nbefore:\n%s\nafter:\n%s", r.code, before, after)
			}
			r = runHelper(t, ns, nobody, unix.SOCK_STREAM, nil, nil, bin, "4", "del", name, "10.0.1.2", "255.255.255.0")
			if r.code != 0 {
				t.Fatalf("del: exit %d %q", r.code, r.reply)
			}
			state = hostState(t, ns)
			if strings.Contains(state, "route 10.0.1.2/32") || strings.Contains(state, "proxy 10.0.1.2") {
				t.Errorf("after del:\n%s", state)
			}
			// Another user may not touch it.
			r = runHelper(t, ns, 4321, unix.SOCK_STREAM, nil, nil, bin, "4", "add", name, "10.0.1.2", "255.255.255.0")
			if text, _, _ := parseBlob(r.reply); r.code != 1 || !strings.Contains(text, "not a tap device created for uid 4321") {
				t.Errorf("other user: exit %d %q", r.code, text)
			}
			tap.Close()
			time.Sleep(50 * time.Millisecond)
			if strings.Contains(hostState(t, ns), name) {
				t.Errorf("%s outlived its descriptor", name)
			}
		})
	}
}

// TestGuestPing is acceptance 1: the C kernel, run in a fresh namespace
// with PATH leading to a uml_net, brings up eth0=tuntap,,,10.0.1.1 and the
// busybox guest pings the gate. Ours runs as root, and as an unprivileged
// user through a setuid copy; Debian's runs as root to prove the test; and
// a PATH with no uml_net must fail the ping, proving the test can fail.
func TestGuestPing(t *testing.T) {
	testutil.NeedRoot(t)
	testutil.NeedCmd(t, "linux.uml", "ip")
	debian := "/usr/bin/uml_net"
	cases := []struct {
		name   string
		helper string // "ours", "debian" or "none"
		uid    int
		ok     bool
	}{
		{"ours-root", "ours", 0, true},
		{"ours-setuid-user", "ours", nobody, true},
		{"debian", "debian", 0, true},
		{"no-helper", "none", 0, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.helper == "debian" {
				if _, err := os.Stat(debian); err != nil {
					testutil.Skip(t, "Debian's uml_net is not installed (uml-utilities)")
				}
				for _, tool := range []string{"ifconfig", "route"} {
					if _, err := testutil.LookPath(tool); err != nil {
						testutil.Skip(t, "Debian's uml_net needs %s (net-tools), which is missing", tool)
					}
				}
			}
			ns := testutil.NetNS(t)
			if b, err := netnsCmd(t, ns, "ip", "link", "set", "lo", "up").CombinedOutput(); err != nil {
				t.Fatalf("%v: %s", err, b)
			}
			bindir := sharedDir(t, false)
			switch c.helper {
			case "ours":
				installHelper(t, bindir, "suid")
			case "debian":
				if err := os.Symlink(debian, filepath.Join(bindir, "uml_net")); err != nil {
					t.Fatal(err)
				}
			}
			work := sharedDir(t, true)
			host := filepath.Join(work, "host")
			os.Mkdir(host, 0o777)
			os.Chmod(host, 0o777)
			script := "ifconfig eth0 10.0.1.2 netmask 255.255.255.0 up\n" +
				"ping -c 3 -W 2 10.0.1.1 > /host/ping.txt 2>&1\n" +
				"echo \"rc=$?\" >> /host/ping.txt\npoweroff -f\n"
			if err := os.WriteFile(filepath.Join(host, "run.sh"), []byte(script), 0o755); err != nil {
				t.Fatal(err)
			}
			img := filepath.Join(work, "rootfs.img")
			if b, err := exec.Command("cp", "--sparse=always", testutil.BusyboxImage(t), img).CombinedOutput(); err != nil {
				t.Fatalf("cp: %v %s", err, b)
			}
			if c.uid != 0 {
				os.Chown(img, c.uid, c.uid)
			}
			kern := testutil.NeedCmd(t, "linux.uml")[0]
			if c.uid != 0 && testutil.UMLUnderWorkaround(kern) {
				testutil.Skip(t, "linux.uml runs under the xstate workaround on this host CPU, which an ordinary user can only install with no_new_privs: a setuid uml_net gets no privilege under it")
			}
			argv := asUser(t, c.uid, append([]string{"/usr/bin/env", "PATH=" + bindir},
				testutil.UMLArgv(t, bindir, kern, "mem=64M", "ubd0="+img, "rw", "init=/init", "umltest="+host,
					"eth0=tuntap,,,10.0.1.1", "con0=fd:0,fd:1", "con=null", "ssl=null",
					"umid=umlnet"+c.name, "uml_dir="+work+"/uml/")...))
			cmd := netnsCmd(t, ns, argv...)
			cmd.Dir = work
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			cmd.SysProcAttr = &unix.SysProcAttr{Setpgid: true}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			select {
			case <-done:
			case <-time.After(90 * time.Second):
				unix.Kill(-cmd.Process.Pid, unix.SIGKILL)
				<-done
				t.Fatalf("linux.uml did not power off; output:\n%s", out.String())
			}
			testutil.SkipIfUnusableUML(t, out.String())
			ping, _ := os.ReadFile(filepath.Join(host, "ping.txt"))
			passed := strings.Contains(string(ping), "rc=0") && strings.Contains(string(ping), "3 packets received")
			if passed != c.ok {
				t.Fatalf("ping passed=%v, want %v\nping:\n%s\nkernel output:\n%s", passed, c.ok, ping, out.String())
			}
			switch c.helper {
			case "ours":
				// Our helper's reply text, printk'd by the kernel, proves
				// it was the one that ran (Debian's says "* ifconfig").
				want := fmt.Sprintf("uid %d: created tap0 (owner uid %d) gate 10.0.1.1", c.uid, c.uid)
				for _, w := range []string{"* netlink: ip address add 10.0.1.1/32 dev tap0", "* netlink: ip route add 10.0.1.2/32 dev tap0"} {
					if !strings.Contains(out.String(), w) {
						t.Errorf("kernel output lacks %q", w)
					}
				}
				if !strings.Contains(out.String(), want) && !strings.Contains(out.String(), "* netlink: created tap0") {
					t.Errorf("no trace of our uml_net in the kernel output")
				}
			case "debian":
				if !strings.Contains(out.String(), "* ifconfig tap0 10.0.1.1 netmask 255.255.255.255 up") {
					t.Errorf("no trace of Debian's uml_net in the kernel output:\n%s", out.String())
				}
			}
			t.Logf("%s: %s", c.name, strings.TrimSpace(lastLine(string(ping), 2)))
		})
	}
}

// replyText decodes what a reply socket carried, whatever its framing.
func replyText(b []byte) string {
	if text, _, err := parseBlob(b); err == nil {
		return text
	}
	if len(b) > 0 && b[0] <= 1 {
		if text, _, err := parseBlob(b[1:]); err == nil {
			return text // after the ethertap status byte
		}
	}
	return string(bytes.Trim(b, "\x00"))
}

func lastLine(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}
