package main

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/umltools/umltools/internal/testutil"
)

// The network issue's acceptances 1 and 2: our engine's guest and a C
// kernel on one switch (ours, Debian's uml_switch, a vde_switch), then
// on one multicast group, ping each other (busybox ping: a raw ICMP socket) and move 10
// MiB each way over TCP with busybox nc, and both sides print the same
// sha256. The guest configures eth0 with ifconfig (SIOCSIFADDR,
// SIOCSIFNETMASK, SIOCSIFFLAGS). (busybox nc quits at the network's EOF,
// so the side that only receives keeps its stdin open: an early FIN
// would end the sender.)
func TestNetWithCKernel(t *testing.T) {
	img := testutil.BusyboxImage(t)
	for _, tc := range []struct {
		name string
		// eth returns both machines' eth0= values.
		eth func(t *testing.T) (ours, theirs string)
	}{
		{"our-switch", func(t *testing.T) (string, string) {
			ctl := filepath.Join(t.TempDir(), "ctl")
			testutil.StartSwitch(t, testutil.Bin(t, "uml_switch"), ctl)
			return "daemon,,unix," + ctl, "daemon,,unix," + ctl
		}},
		{"c-switch", func(t *testing.T) (string, string) {
			if _, err := os.Stat("/usr/bin/uml_switch"); err != nil {
				testutil.Skip(t, "/usr/bin/uml_switch not installed")
			}
			ctl := filepath.Join(t.TempDir(), "ctl")
			testutil.StartSwitch(t, "/usr/bin/uml_switch", ctl)
			return "daemon,,unix," + ctl, "daemon,,unix," + ctl
		}},
		{"vde", func(t *testing.T) (string, string) {
			vde, err := testutil.LookPath("vde_switch")
			if err != nil {
				testutil.Skip(t, "vde_switch not installed (Debian package vde2)")
			}
			dir := t.TempDir()
			sw, pid := filepath.Join(dir, "sw"), filepath.Join(dir, "pid")
			if b, err := exec.Command(vde, "-s", sw, "-d", "-p", pid).CombinedOutput(); err != nil {
				t.Fatalf("vde_switch: %v\n%s", err, b)
			}
			t.Cleanup(func() {
				if b, err := os.ReadFile(pid); err == nil {
					exec.Command("kill", strings.TrimSpace(string(b))).Run()
				}
			})
			return "vde," + sw, "vde," + sw
		}},
		{"mcast", func(t *testing.T) (string, string) {
			// A group and port of this test's own.
			return "mcast,,239.192.78.1,1178", "mcast,,239.192.78.1,1178"
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ours, theirs := tc.eth(t)
			u := testutil.StartUML(t, testutil.UMLOptions{
				Extra: []string{"eth0=" + theirs},
				Init: "ip link set eth0 up && ip addr add 10.0.7.2/24 dev eth0 && echo C-NET-UP\n" +
					"busybox nc -l -p 5001 | sha256sum | sed 's/^/C-GOT /'\n" +
					"busybox ping -c 2 -W 5 10.0.7.1 >/dev/null && echo C-PING-OK\n" +
					"head -c 10485760 /dev/urandom > /tmp/c-data.$$ && sha256sum < /tmp/c-data.$$ | sed 's/^/C-SENT /'\n" +
					"sleep 1; busybox nc 10.0.7.1 5002 < /tmp/c-data.$$; rm -f /tmp/c-data.$$\n" +
					"echo o > /proc/sysrq-trigger\n",
			})
			u.WaitOutput(t, "C-NET-UP", 60*time.Second)
			script := "mount -t proc proc /proc; ifconfig eth0 10.0.7.1 netmask 255.255.255.0 up || exit 1; " +
				"ping -c 2 10.0.7.2 >/dev/null && echo PING-OK; " +
				"head -c 10485760 /dev/urandom > /tmp/data; echo SENT $(sha256sum < /tmp/data); " +
				"busybox nc 10.0.7.2 5001 < /tmp/data && echo NC-SENT; " +
				"mkfifo /tmp/hold; exec 3<>/tmp/hold; busybox nc -l -p 5002 <&3 | sha256sum | sed 's/^/GOT /'; poweroff -f"
			r := boot(t, "", 3*time.Minute, "ubd0="+img, "con0=fd:0,fd:1", "con=null", "eth0="+ours, "init=/bin/sh", "--", "-c", script)
			if log := r.stdout + r.stderr; !strings.Contains(log, "Netdevice 0 (") {
				t.Errorf("no Netdevice banner in\n%s", log)
			}
			if !hasLine(r.stdout, "PING-OK") {
				t.Errorf("the guest's ping of the C kernel failed:\n%s", r.stdout)
			}
			sent, got := field(r.stdout, "SENT"), field(r.stdout, "GOT")
			u.WaitOutput(t, "C-GOT "+sent, 30*time.Second)
			cs := field(u.Output(), "C-SENT")
			if !strings.Contains(u.Output(), "C-PING-OK") {
				t.Errorf("the C kernel's ping of the guest failed")
			}
			if sent == "" || cs == "" || got != cs {
				t.Fatalf("guest sent %q, guest got %q, C kernel sent %q\nguest output:\n%s\nstderr:\n%s", sent, got, cs, r.stdout, r.stderr)
			}
		})
	}
}

// Acceptance 3, fixed tap: tap0 at 10.0.9.1 is made by the test, and the
// guest is eth0=tuntap,tap0.
func TestNetTap(t *testing.T) {
	tapTest(t, "eth0=tuntap,tap0", "eth0", "10.0.9",
		"ip tuntap add tap0 mode tap; ip addr add 10.0.9.1/24 dev tap0; ip link set tap0 up; ")
}

// Acceptance 4: vector devices on a tap (vec0:transport=tap) and on a
// veth pair's far end (vec0:transport=raw, a packet socket).
func TestNetVector(t *testing.T) {
	t.Run("tap", func(t *testing.T) {
		tapTest(t, "vec0:transport=tap,ifname=vtap0,depth=128", "vec0", "10.0.14",
			"ip tuntap add vtap0 mode tap; ip addr add 10.0.14.1/24 dev vtap0; ip link set vtap0 up; ")
	})
	t.Run("raw", func(t *testing.T) {
		tapTest(t, "vec0:transport=raw,ifname=veth1", "vec0", "10.0.15",
			"ip link add veth0 type veth peer name veth1; ip addr add 10.0.15.1/24 dev veth0; ip link set veth0 up; ip link set veth1 up; ")
	})
}

// Acceptance 3, tap by uml_net: eth0=tuntap,,,10.0.10.1 makes the engine
// run our uml_net (first on PATH), which makes a tap with the gate as its
// host address and passes it over; the guest's address is announced with
// `uml_net 4 add`.
func TestNetTapUmlNet(t *testing.T) {
	tapTest(t, "eth0=tuntap,,,10.0.10.1", "eth0", "10.0.10", "")
}

// tapTest runs the guest with device option opt (its device dev) in a
// network namespace of its own where setup made the host's end net3.1
// (unless the engine's uml_net does): the guest, at net3.2, pings net3.1
// and fetches a file from a host busybox httpd there with wget, sha256
// equal.
func tapTest(t *testing.T, opt, dev, net3, setup string) {
	testutil.NeedRoot(t)
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		testutil.Skip(t, "no /dev/net/tun")
	}
	unshare := testutil.NeedCmd(t, "unshare")[0]
	img := testutil.BusyboxImage(t)
	dir := t.TempDir()
	data := make([]byte, 2<<20)
	rand.Read(data)
	if err := os.WriteFile(filepath.Join(dir, "blob"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	guest := "mount -t proc proc /proc; ifconfig " + dev + " " + net3 + ".2 netmask 255.255.255.0 up || exit 1; " +
		"ping -c 2 " + net3 + ".1 >/dev/null && echo PING-OK; " +
		"wget -q -O - http://" + net3 + ".1:8099/blob | sha256sum | sed 's/^/GOT /'; poweroff -f"
	host := "set -e; ip link set lo up; " + setup + "busybox httpd -f -p 8099 -h " + dir + " & h=$!; " +
		"rc=0; \"$0\" \"$@\" || rc=$?; kill $h; exit $rc"
	cmd := exec.Command(unshare, "--net", "sh", "-c", host, testutil.Bin(t, "linux"), "uml_dir="+dir+"/", "ubd0="+img,
		"con0=fd:0,fd:1", "con=null", opt, "init=/bin/sh", "--", "-c", guest)
	cmd.Env = append(os.Environ(), "PATH="+filepath.Dir(testutil.Bin(t, "uml_net"))+":"+os.Getenv("PATH"))
	res := testutil.RunCmd(t, cmd, 2*time.Minute)
	out := strings.ReplaceAll(res.Stdout, "\r", "")
	if !strings.Contains(out, "PING-OK") || field(out, "GOT") != hex.EncodeToString(sum[:]) {
		t.Fatalf("guest output:\n%s\nstderr:\n%s", out, res.Stderr)
	}
	if log := res.Stderr + out; !strings.Contains(log, "TUN/TAP backend - ") && !strings.Contains(log, "vector ") {
		t.Errorf("no transport banner:\n%s", log)
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

// Guest sockets on the machine's loopback, from Python: TCP (blocking and
// non-blocking connect, SO_ERROR, names, a refused port), UDP with
// addresses both ways, connected UDP, and an ICMP echo through a raw
// socket.
func TestNetLoopbackPython(t *testing.T) {
	img := testutil.DebianImage(t)
	py := `import socket, threading, errno, select, struct
srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", 0))
srv.listen(4)
port = srv.getsockname()[1]
log = []
def serve():
    for _ in range(2):
        c, a = srv.accept()
        log.append("accepted %s %s" % (a[0], c.getsockname() == ("127.0.0.1", port)))
        data = b""
        while True:
            b = c.recv(65536)
            if not b:
                break
            data += b
        c.sendall(str(len(data)).encode())
        c.close()
th = threading.Thread(target=serve)
th.start()
c = socket.create_connection(("127.0.0.1", port))
c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
print("nodelay", c.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1)
print("peer", c.getpeername() == ("127.0.0.1", port), c.getsockname()[0])
c.sendall(b"x" * 3000000)
c.shutdown(socket.SHUT_WR)
print("echoed", c.recv(100))
c.close()
n = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
n.setblocking(False)
print("inprogress", n.connect_ex(("127.0.0.1", port)) == errno.EINPROGRESS)
select.select([], [n], [], 5)
print("so_error", n.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR))
n.setblocking(True)
n.sendall(b"abc")
n.shutdown(socket.SHUT_WR)
print("echoed", n.recv(100))
th.join()
print("\n".join(log))
r = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
print("refused", r.connect_ex(("127.0.0.1", 1)) == errno.ECONNREFUSED)
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.bind(("127.0.0.1", 0))
v = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
v.sendto(b"ping", u.getsockname())
d, a = u.recvfrom(100)
u.sendto(d.upper(), a)
print("udp", v.recvfrom(100) == (b"PING", u.getsockname()))
w = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
w.connect(u.getsockname())
w.send(b"conn")
print("connected udp", u.recvfrom(100)[0], w.getpeername() == u.getsockname())
ic = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
pkt = bytearray(struct.pack("!BBHHH", 8, 0, 0, 0x1234, 1) + b"umltools")
s = sum(struct.unpack("!%dH" % (len(pkt) // 2), pkt))
s = (s >> 16) + (s & 0xffff)
pkt[2:4] = struct.pack("!H", ~(s + (s >> 16)) & 0xffff)
ic.sendto(pkt, ("127.0.0.1", 0))
ic.settimeout(5)
while True:
    p, a = ic.recvfrom(200)
    if p[20] == 0:
        break
print("icmp reply", a[0], p[28:] == b"umltools")`
	script := quietShell + "\n" + mark("py") + "\npython3 - <<'PY'\n" + py + "\nPY\n" + mark("end")
	r := debianBoot(t, img, script, 2*time.Minute)
	want := "nodelay True\npeer True 127.0.0.1\nechoed b'3000000'\ninprogress True\nso_error 0\n" +
		"echoed b'3'\naccepted 127.0.0.1 True\naccepted 127.0.0.1 True\nrefused True\nudp True\nconnected udp b'conn' True\nicmp reply 127.0.0.1 True\n"
	if got := marked(r.stdout)["py"]; got != want {
		t.Errorf("python: got\n%s\nwant\n%s\nstderr: %s", got, want, r.stderr)
	}
}

// Acceptance 6: the guest's tools show the truth. busybox ip configures
// eth0 through route netlink (address, up, MTU 1400, a default route);
// ip, ifconfig (ioctls), route -n (/proc/net/route) and /proc/net/dev
// then agree.
func TestNetIfaceTools(t *testing.T) {
	img := testutil.BusyboxImage(t)
	ctl := filepath.Join(t.TempDir(), "ctl")
	testutil.StartSwitch(t, testutil.Bin(t, "uml_switch"), ctl)
	script := "mount -t proc proc /proc; ip addr add 10.0.12.2/24 dev eth0 && ip link set eth0 up && ip link set eth0 mtu 1400 && " +
		"ip route add default via 10.0.12.1 && echo CONFIGURED; echo '--ip'; ip addr show eth0; ip route; " +
		"echo '--ifconfig'; ifconfig eth0; echo '--route'; route -n; echo '--dev'; cat /proc/net/dev; poweroff -f"
	r := boot(t, "", time.Minute, "ubd0="+img, "con0=fd:0,fd:1", "con=null", "eth0=daemon,,unix,"+ctl, "init=/bin/sh", "--", "-c", script)
	out := strings.ReplaceAll(r.stdout, "\r", "")
	for _, want := range []string{
		"CONFIGURED",
		"eth0: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1400",
		"inet 10.0.12.2/24 brd 10.0.12.255 scope global eth0",
		"10.0.12.0/24 dev eth0 scope link  src 10.0.12.2",
		"default via 10.0.12.1 dev eth0",
		"inet addr:10.0.12.2  Bcast:10.0.12.255  Mask:255.255.255.0",
		"UP BROADCAST RUNNING MULTICAST  MTU:1400  Metric:1",
		"0.0.0.0         10.0.12.1       0.0.0.0         UG    0      0        0 eth0",
		"10.0.12.0       0.0.0.0         255.255.255.0   U     0      0        0 eth0",
		"  eth0:",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("no %q in the guest's output:\n%s\nstderr:\n%s", want, out, r.stderr)
		}
	}
}

// Acceptance 7: a table of 30 malformed network options gets the C
// kernel's messages (or clearer ones where it has none)
// (tested one by one in internal/cmdline) and the machine still boots;
// so do devices whose transport cannot open.
func TestNetBadOptions(t *testing.T) {
	img := testutil.BusyboxImage(t)
	missing := filepath.Join(t.TempDir(), "no-switch")
	args := []string{"ubd0=" + img, "con0=fd:0,fd:1", "con=null",
		"eth0=tuntap,tap0,,,x", "eth1=ethertap", "eth2=daemon,,inet", "eth3=mcast,,,x", "eth4=mcast,,,1,1x",
		"eth5=ucast,,a,p", "eth6=ucast,,a,1,2,3", "eth7=vde,,,,,9", "eth8=pcap,,,bad", "eth9=foo",
		"ethx=daemon", "eth10", "eth11=daemon,,unix," + missing, "eth12=daemon,zz:zz,unix," + missing,
		"vec0:transport=nope", "vecx:transport=tap", "vec1=tap",
		"eth13=ucast,,a,1,x", "eth14=vde,,,p", "eth15=slirp,,hostfwd=tcp:1-:80", "eth16=slirp,,net=10.0.0.0/30",
		"eth17=slirp,,resolver=x", "eth18=slirp,,/usr/bin/slirp", "eth19=slirp,,hostfwd=udp:127.0.0.1:1-:0",
		"eth20=mcast,,,,x", "vec2:transport=tap", "vec3:transport=tap,depth=lots", "vec4:depth=1",
		"vec5:transport=hybrid", "vec6:transport=tap,a=b=c", "vec7:transport=raw,ifname=nosuchif0",
		"init=/bin/sh", "--", "-c", "echo BOOTED; ifconfig -a | grep -c Link; poweroff -f"}
	r := boot(t, "", time.Minute, args...)
	log := r.stdout + r.stderr
	for _, want := range []string{
		"tap_setup_common - Extra garbage on specification : 'x'",
		"ethertap_setup : Missing tap device name",
		"daemon_setup : unknown socket type 'inet' (only unix is supported)",
		"mcast_setup - Bad port : 'x'",
		"mcast_setup - Bad ttl : '1x'",
		"ucast_setup - Bad listen port : 'p'",
		"ucast_setup - Extra garbage on specification : '3'",
		"vde_setup - Bad mode : '9'",
		"pcap_setup : bad option - 'bad'",
		"eth9: unknown transport 'foo'",
		"eth_setup - Couldn't parse 'x=daemon' : Bad device number",
		"eth_setup - Couldn't parse '10' : Expected '=' after device number",
		"eth11: daemon_open : control connect failed, errno = 2 (" + missing + ": no such file or directory)",
		"setup_etheraddr: failed to parse 'zz:zz' as an ethernet address",
		"vector_setup - Couldn't parse 'x' : Bad device number",
		"vector_setup - Couldn't parse '1=tap' : Expected ':' after device number",
		"ucast_setup - Bad remote port : 'x'",
		"vde_setup - Bad port : 'p'",
		`eth15: slirp_open : hostfwd "tcp:1-:80": host side: no port in "1"`,
		"eth16: slirp_open : net=10.0.0.0/30: want an IPv4 network of at least 32 addresses",
		"eth17: slirp_open : resolver=x: want an address, with a port or not",
		"eth18: slirp_open : running a slirp command (/usr/bin/slirp) is not implemented",
		`eth19: slirp_open : hostfwd "udp:127.0.0.1:1-:0": guest side: bad port "0"`,
		"mcast_setup - Bad ttl : 'x'",
		"vec2: vector_tap: ifname= names no host interface",
		"vec3: option depth=lots is not a number",
		"missing transport for unit 4",
		"vec5: vector hybrid: uml_tap: failed to parse interface spec",
		"vector_setup - Couldn't parse 'transport=tap,a=b=c'",
		`vec7: vector raw: no host interface "nosuchif0"`,
	} {
		if !strings.Contains(log, want) {
			t.Errorf("no %q in the boot log:\n%s", want, log)
		}
	}
	// Only lo is up (every eth device failed): ifconfig -a shows one.
	if !hasLine(r.stdout, "BOOTED") || !hasLine(r.stdout, "1") {
		t.Errorf("the machine did not boot to its shell with lo alone:\n%s", r.stdout)
	}
}
