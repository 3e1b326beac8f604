package main

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/umltools/umltools/internal/testutil"
)

// The vector transports beyond tap and raw (vec0:transport=fd, bess,
// l2tpv3, gre, hybrid): for each, our engine's guest and Debian's C
// kernel (/usr/bin/linux.uml) on the same transport ping each other and
// move 2 MiB each way over TCP with busybox nc, sha256 equal on both
// sides. The ones on raw IP sockets or a tap run in a network namespace
// of the test's own (both kernels inside it); the UDP and unix-socket
// ones on the loopback and in the test's temporary directory. No frame
// leaves the machine.

// vecInterop is one exchange between our guest, whose vec0 is ours, and
// the C kernel's, whose vec0 is theirs.
type vecInterop struct {
	// ns is the network namespace both kernels run in ("": the test's).
	ns           string
	ours, theirs string
	// oursFiles and theirsFiles are handed to the kernels as fd 3, 4, …
	oursFiles, theirsFiles []*os.File
	// net3 is the /24 (ours .1, the C kernel's .2).
	net3 string
	// bannerHas is what our boot banner for vec0 must say.
	bannerHas string
}

// vecDataLen is what each side sends.
const vecDataLen = 2 << 20

func (c vecInterop) run(t *testing.T) {
	t.Helper()
	img := testutil.BusyboxImage(t)
	kern := testutil.NeedCmd(t, "linux.uml")[0]
	peer := startCPeer(t, kern, c.ns, c.theirs, c.theirsFiles,
		"ip link set vec0 up && ip addr add "+c.net3+".2/24 dev vec0 && echo C-NET-UP\n"+
			"busybox nc -l -p 5001 | sha256sum | sed 's/^/C-GOT /'\n"+
			"busybox ping -c 2 -W 5 "+c.net3+".1 >/dev/null && echo C-PING-OK\n"+
			"f=$D/c-data && head -c "+strconv.Itoa(vecDataLen)+" /dev/urandom > $f && sha256sum < $f | sed 's/^/C-SENT /'\n"+
			"sleep 1; busybox nc "+c.net3+".1 5002 < $f; rm -f $f\n")
	peer.wait(t, "C-NET-UP", 60*time.Second)

	script := "mount -t proc proc /proc; ifconfig vec0 " + c.net3 + ".1 netmask 255.255.255.0 up || exit 1; " +
		"ping -c 2 " + c.net3 + ".2 >/dev/null && echo PING-OK; " +
		"head -c " + strconv.Itoa(vecDataLen) + " /dev/urandom > /tmp/data; echo SENT $(sha256sum < /tmp/data); " +
		"busybox nc " + c.net3 + ".2 5001 < /tmp/data && echo NC-SENT; " +
		"mkfifo /tmp/hold; exec 3<>/tmp/hold; busybox nc -l -p 5002 <&3 | sha256sum | sed 's/^/GOT /'; poweroff -f"
	r := runOurs(t, c.ns, c.oursFiles, 2*time.Minute, "ubd0="+img, "con0=fd:0,fd:1", "con=null", c.ours, "init=/bin/sh", "--", "-c", script)
	log := r.stdout + r.stderr
	if !strings.Contains(log, "vec0 (") || !strings.Contains(log, c.bannerHas) {
		t.Errorf("no vec0 banner with %q in\n%s", c.bannerHas, log)
	}
	if !hasLine(r.stdout, "PING-OK") {
		t.Errorf("the guest's ping of the C kernel failed:\n%s\nstderr:\n%s", r.stdout, r.stderr)
	}
	sent, got := field(r.stdout, "SENT"), field(r.stdout, "GOT")
	if sent == "" {
		t.Fatalf("the guest sent nothing:\n%s\nstderr:\n%s", r.stdout, r.stderr)
	}
	peer.wait(t, "C-GOT "+sent, 30*time.Second)
	out := peer.output()
	if !strings.Contains(out, "C-PING-OK") {
		t.Errorf("the C kernel's ping of the guest failed")
	}
	if cs := field(out, "C-SENT"); cs == "" || got != cs {
		t.Fatalf("guest sent %q, guest got %q, C kernel sent %q\nguest output:\n%s\nstderr:\n%s", sent, got, cs, r.stdout, r.stderr)
	}
	t.Logf("2 MiB each way and pings both ways: %s <-> %s", c.ours, c.theirs)
}

// runOurs boots our engine with args (and a private uml_dir=) in network
// namespace ns (or the test's), with files as its fd 3, 4, …
func runOurs(t *testing.T, ns string, files []*os.File, timeout time.Duration, args ...string) run {
	t.Helper()
	dir := t.TempDir()
	argv := append([]string{testutil.Bin(t, "linux"), "uml_dir=" + dir + "/"}, args...)
	if ns != "" {
		argv = append([]string{testutil.NeedCmd(t, "ip")[0], "netns", "exec", ns}, argv...)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.ExtraFiles = files
	res := testutil.RunCmd(t, cmd, timeout)
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("umid directory left behind: %v", ents)
	}
	return run{stdout: strings.ReplaceAll(res.Stdout, "\r\n", "\n"), stderr: res.Stderr, code: res.Code}
}

// cPeer is a C kernel (hostfs root: the host's tools) that a test
// started, in a network namespace or not, with descriptors of the test's.
type cPeer struct {
	dir   string
	argv  []string
	files []*os.File
	tries int

	mu   sync.Mutex
	out  *testutil.SyncBuffer
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// startCPeer boots kern with the device vec and an init script running
// body (where $D is a directory of the test's), then powering off. It is
// killed when the test ends.
func startCPeer(t *testing.T, kern, ns, vec string, files []*os.File, body string) *cPeer {
	t.Helper()
	dir := t.TempDir()
	script := filepath.Join(dir, "init.sh")
	init := "#!/bin/sh\nmount -t proc proc /proc 2>/dev/null\necho C-INIT\nD=" + dir + "\n" + body + "echo o > /proc/sysrq-trigger\nsleep 60\n"
	if err := os.WriteFile(script, []byte(init), 0o755); err != nil {
		t.Fatal(err)
	}
	args := []string{"mem=64M", "rootfstype=hostfs", "rootflags=/", "rw", "init=" + script,
		"con0=fd:0,fd:1", "con=null", "ssl=null", "umid=vecpeer", "uml_dir=" + dir + "/", vec}
	argv := append([]string{"env"}, testutil.UMLArgv(t, dir, kern, args...)...)
	if ns != "" {
		argv = append([]string{testutil.NeedCmd(t, "ip")[0], "netns", "exec", ns}, argv...)
	}
	p := &cPeer{dir: dir, argv: argv, files: files}
	p.start(t)
	t.Cleanup(func() {
		p.kill()
		if t.Failed() {
			t.Logf("linux.uml output (tail):\n%s", tailOf(p.output(), 3000))
		}
	})
	return p
}

func (p *cPeer) start(t *testing.T) {
	t.Helper()
	cmd := exec.Command(p.argv[0], p.argv[1:]...)
	cmd.Dir = p.dir
	cmd.ExtraFiles = p.files
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out := &testutil.SyncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting linux.uml: %v", err)
	}
	done := make(chan struct{})
	p.mu.Lock()
	p.cmd, p.out, p.done = cmd, out, done
	p.mu.Unlock()
	go func() {
		err := cmd.Wait()
		p.mu.Lock()
		p.err = err
		p.mu.Unlock()
		close(done)
	}()
}

func (p *cPeer) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.ReplaceAll(p.out.String(), "\r", "")
}

// wait waits for s in the output. A kernel that died before its init
// ran (the 6.1 kernel now and then fails its own boot under load) is
// booted again, at most twice.
func (p *cPeer) wait(t *testing.T, s string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		out := p.output()
		if strings.Contains(out, s) {
			return
		}
		testutil.SkipIfUnusableUML(t, out)
		p.mu.Lock()
		done := p.done
		p.mu.Unlock()
		select {
		case <-done:
			out = p.output()
			if strings.Contains(out, s) {
				return
			}
			testutil.SkipIfUnusableUML(t, out)
			if !strings.Contains(out, "C-INIT") && p.tries < 2 {
				p.tries++
				t.Logf("linux.uml died before its init (%v), booting it again; output tail:\n%s", p.err, tailOf(out, 800))
				p.kill()
				p.start(t)
				deadline = time.Now().Add(timeout)
				continue
			}
			t.Fatalf("linux.uml exited (%v) before printing %q; output tail:\n%s", p.err, s, tailOf(out, 3000))
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("timeout (%v) waiting for %q from linux.uml; output tail:\n%s", timeout, s, tailOf(p.output(), 3000))
		}
	}
}

// kill ends the kernel, its helpers and whatever of it left the group
// (they all carry its uml_dir=).
func (p *cPeer) kill() {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	if cmd != nil && cmd.Process != nil {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
		}
	}
	testutil.KillByArg("uml_dir=" + p.dir + "/")
}

func tailOf(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

// vecNetNS makes a network namespace for the test, runs setup (shell
// commands) in it after bringing lo up, and returns its name.
func vecNetNS(t *testing.T, setup string) string {
	t.Helper()
	ns := testutil.NetNS(t)
	ip := testutil.NeedCmd(t, "ip")[0]
	if b, err := exec.Command(ip, "netns", "exec", ns, "sh", "-ec", "ip link set lo up; "+setup).CombinedOutput(); err != nil {
		t.Fatalf("setting up namespace %s: %v\n%s", ns, err, b)
	}
	return ns
}

// freeUDPPort returns a UDP port free on 127.0.0.1 (or ::1) just now.
func freeUDPPort(t *testing.T, network string) string {
	t.Helper()
	ip := net.IPv4(127, 0, 0, 1)
	if network == "udp6" {
		ip = net.IPv6loopback
	}
	c, err := net.ListenUDP(network, &net.UDPAddr{IP: ip})
	if err != nil {
		testutil.Skip(t, "no %s loopback here: %v", network, err)
	}
	defer c.Close()
	return strconv.Itoa(c.LocalAddr().(*net.UDPAddr).Port)
}

// l2tpv3 over UDP on the loopback needs no privilege; straight over IP
// (protocol 115) it needs raw sockets: root, in a namespace.
func TestVecL2tpv3(t *testing.T) {
	t.Run("udp", func(t *testing.T) {
		po, pc := freeUDPPort(t, "udp4"), freeUDPPort(t, "udp4")
		opt := func(src, dst, rx, tx, rxc, txc string) string {
			return "vec0:transport=l2tpv3,udp=1,src=127.0.0.1,srcport=" + src + ",dst=127.0.0.1,dstport=" + dst +
				",rx_session=" + rx + ",tx_session=" + tx + ",cookie64=1,rx_cookie=" + rxc + ",tx_cookie=" + txc + ",counter=1"
		}
		vecInterop{
			ours:      opt(po, pc, "0x333", "0x444", "0x1122334455667788", "0x0102030405060708"),
			theirs:    opt(pc, po, "0x444", "0x333", "0x0102030405060708", "0x1122334455667788"),
			net3:      "10.0.50",
			bannerHas: "vector l2tpv3 transport over UDP/IPv4 from 127.0.0.1:" + po + " to 127.0.0.1:" + pc,
		}.run(t)
	})
	t.Run("udp-v6", func(t *testing.T) {
		po, pc := freeUDPPort(t, "udp6"), freeUDPPort(t, "udp6")
		opt := func(src, dst, rx, tx string) string {
			return "vec0:transport=l2tpv3,udp=1,v6=1,src=::1,srcport=" + src + ",dst=::1,dstport=" + dst +
				",rx_session=" + rx + ",tx_session=" + tx + ",rx_cookie=" + rx + ",tx_cookie=" + tx + ",counter=1,pin_counter=1"
		}
		vecInterop{
			ours: opt(po, pc, "17", "18"), theirs: opt(pc, po, "18", "17"),
			net3:      "10.0.51",
			bannerHas: "vector l2tpv3 transport over UDP/IPv6 from [::1]:" + po + " to [::1]:" + pc,
		}.run(t)
	})
	t.Run("ip", func(t *testing.T) {
		testutil.NeedRoot(t)
		ns := vecNetNS(t, "")
		opt := func(src, dst, rx, tx string) string {
			return "vec0:transport=l2tpv3,src=" + src + ",dst=" + dst + ",rx_session=" + rx + ",tx_session=" + tx +
				",rx_cookie=" + rx + ",tx_cookie=" + tx + ",counter=1"
		}
		vecInterop{
			ns:   ns,
			ours: opt("127.0.0.2", "127.0.0.3", "0x51", "0x52"), theirs: opt("127.0.0.3", "127.0.0.2", "0x52", "0x51"),
			net3:      "10.0.52",
			bannerHas: "vector l2tpv3 transport over IPv4 (protocol 115) from 127.0.0.2 to 127.0.0.3",
		}.run(t)
	})
}

// GRE (IP protocol 47, Ethernet in it as 0x6558) needs raw sockets: root,
// in a namespace, between two addresses of its loopback.
func TestVecGre(t *testing.T) {
	testutil.NeedRoot(t)
	t.Run("ipv4-key-sequence", func(t *testing.T) {
		ns := vecNetNS(t, "")
		opt := func(src, dst, rx, tx string) string {
			return "vec0:transport=gre,src=" + src + ",dst=" + dst + ",rx_key=" + rx + ",tx_key=" + tx + ",sequence=1"
		}
		vecInterop{
			ns:   ns,
			ours: opt("127.0.0.2", "127.0.0.3", "0x1000", "0x2000"), theirs: opt("127.0.0.3", "127.0.0.2", "0x2000", "0x1000"),
			net3:      "10.0.53",
			bannerHas: "vector gre transport over IPv4 (protocol 47) from 127.0.0.2 to 127.0.0.3, key 4096/8192 (rx/tx), sequence",
		}.run(t)
	})
	t.Run("ipv6", func(t *testing.T) {
		ns := vecNetNS(t, "ip -6 addr add fd00:5::2/128 dev lo nodad; ip -6 addr add fd00:5::3/128 dev lo nodad")
		opt := func(src, dst string) string {
			return "vec0:transport=gre,v6=1,src=" + src + ",dst=" + dst + ",sequence=1,pin_sequence=1"
		}
		vecInterop{
			ns:   ns,
			ours: opt("fd00:5::2", "fd00:5::3"), theirs: opt("fd00:5::3", "fd00:5::2"),
			net3:      "10.0.54",
			bannerHas: "vector gre transport over IPv6 (protocol 47) from fd00:5::2 to fd00:5::3, sequence (pinned)",
		}.run(t)
	})
}

// hybrid: each kernel writes into its own tap and reads the frames the
// host sends there through a packet socket; a bridge in the namespace
// joins the two taps. Our engine writes TCP segments larger than the MTU
// (with a vnet header, for the host to cut, as over vector tap); the C
// kernel's tap, which asked for TSO, passes them on whole, and its packet
// socket takes them only with gro=1 (without it, it prints "Incoming GSO
// frames and GRO disabled on the interface" and loses them: the same
// between two C kernels).
func TestVecHybrid(t *testing.T) {
	testutil.NeedRoot(t)
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		testutil.Skip(t, "no /dev/net/tun")
	}
	ns := vecNetNS(t, "ip link add vbr0 type bridge; ip link set vbr0 up; "+
		"for x in vhyb0 vhyb1; do ip tuntap add $x mode tap; ip link set $x master vbr0; ip link set $x up; done")
	vecInterop{
		ns:        ns,
		ours:      "vec0:transport=hybrid,ifname=vhyb0",
		theirs:    "vec0:transport=hybrid,ifname=vhyb1,gro=1",
		net3:      "10.0.55",
		bannerHas: "vector hybrid transport on vhyb0",
	}.run(t)
}

// bess: both kernels connect a seqpacket socket to a port of a two-port
// relay the test runs (a stand-in for a BESS switch's unix ports).
func TestVecBess(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "port-a"), filepath.Join(dir, "port-b")
	testutil.SeqpacketRelay(t, a, b)
	vecInterop{
		ours:      "vec0:transport=bess,src=" + filepath.Join(dir, "ours") + ",dst=" + a,
		theirs:    "vec0:transport=bess,src=" + filepath.Join(dir, "theirs") + ",dst=" + b,
		net3:      "10.0.56",
		bannerHas: "vector bess transport to " + a + " from " + filepath.Join(dir, "ours"),
	}.run(t)
}

// fd: the two ends of a datagram socketpair, one each kernel's fd 3.
func TestVecFd(t *testing.T) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	ours, theirs := os.NewFile(uintptr(fds[0]), "ours"), os.NewFile(uintptr(fds[1]), "theirs")
	t.Cleanup(func() { ours.Close(); theirs.Close() })
	vecInterop{
		ours:        "vec0:transport=fd,fd=3",
		theirs:      "vec0:transport=fd,fd=3",
		oursFiles:   []*os.File{ours},
		theirsFiles: []*os.File{theirs},
		net3:        "10.0.57",
		bannerHas:   "vector fd transport on fd 3 (datagram socket)",
	}.run(t)
}

// The encapsulation headers our engine sends are the C kernel's to the
// byte: each kernel, in turn, sends its first frames (ARP requests of a
// ping nobody answers) to a socket of the test's, and the headers before
// the frames (sessions, cookie, counter; flags, key, sequence number)
// must be the same, first frame for first frame.
func TestVecWireMatchesC(t *testing.T) {
	img := testutil.BusyboxImage(t)
	kern := testutil.NeedCmd(t, "linux.uml")[0]
	for _, tc := range []struct {
		name string
		root bool
		// vec is both kernels' device, sending to the capture at dst.
		vec    func(dst string) string
		hdrLen int
		// listen opens the capture in namespace ns and returns its
		// address for the device and a reader of one packet's header.
		listen func(t *testing.T, ns string) (string, func() ([]byte, error))
	}{
		{name: "l2tpv3-udp", hdrLen: 20,
			vec: func(dst string) string {
				return "vec0:transport=l2tpv3,udp=1,src=127.0.0.1,srcport=" + freeUDPPort(t, "udp4") + ",dst=127.0.0.1,dstport=" + dst +
					",rx_session=0x10,tx_session=0x7abbccdd,cookie64=1,rx_cookie=1,tx_cookie=0xf1e2d3c4b5a69788,counter=1"
			},
			listen: func(t *testing.T, _ string) (string, func() ([]byte, error)) {
				c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { c.Close() })
				return strconv.Itoa(c.LocalAddr().(*net.UDPAddr).Port), func() ([]byte, error) {
					buf := make([]byte, 65536)
					c.SetReadDeadline(time.Now().Add(60 * time.Second))
					n, _, err := c.ReadFromUDP(buf)
					return buf[:n], err
				}
			}},
		{name: "gre", root: true, hdrLen: 12,
			vec: func(string) string {
				return "vec0:transport=gre,src=127.0.0.2,dst=127.0.0.3,rx_key=1,tx_key=0x5eadbeef,sequence=1"
			},
			listen: func(t *testing.T, ns string) (string, func() ([]byte, error)) {
				var fd int
				err := testutil.InNetNS(t, ns, func() error {
					var err error
					if fd, err = unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 47); err != nil {
						return err
					}
					return unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 3}})
				})
				if err != nil {
					t.Fatal(err)
				}
				unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Sec: 60})
				t.Cleanup(func() { unix.Close(fd) })
				return "", func() ([]byte, error) {
					buf := make([]byte, 65536)
					n, err := unix.Read(fd, buf)
					for err == unix.EINTR {
						n, err = unix.Read(fd, buf)
					}
					if err != nil {
						return nil, err
					}
					return buf[int(buf[0]&0xf)*4 : n], nil // after the IPv4 header
				}
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ns := ""
			if tc.root {
				testutil.NeedRoot(t)
				ns = vecNetNS(t, "")
			}
			headers := func(start func(vec string)) [][]byte {
				dst, read := tc.listen(t, ns)
				done := make(chan struct{})
				var got [][]byte
				var rerr error
				go func() {
					defer close(done)
					for len(got) < 2 {
						p, err := read()
						if err != nil {
							rerr = err
							return
						}
						if len(p) > tc.hdrLen {
							got = append(got, p[:tc.hdrLen])
						}
					}
				}()
				start(tc.vec(dst))
				<-done
				if rerr != nil {
					t.Fatalf("capture: %v", rerr)
				}
				return got
			}
			var peer *cPeer
			theirs := headers(func(vec string) {
				peer = startCPeer(t, kern, ns, vec, nil,
					"ip link set vec0 up && ip addr add 10.0.58.1/24 dev vec0 && echo C-NET-UP && busybox ping -c 3 -W 1 10.0.58.2\n")
				peer.wait(t, "C-NET-UP", 60*time.Second)
			})
			peer.kill() // no frame of its may reach our capture
			ranOurs := make(chan run, 1)
			ours := headers(func(vec string) {
				go func() {
					ranOurs <- runOurs(t, ns, nil, time.Minute, "ubd0="+img, "con0=fd:0,fd:1", "con=null", vec, "init=/bin/sh", "--", "-c",
						"ifconfig vec0 10.0.58.2 netmask 255.255.255.0 up; ping -c 3 -W 1 10.0.58.1; poweroff -f")
				}()
			})
			<-ranOurs
			for i := range theirs {
				if !bytesEqual(ours[i], theirs[i]) {
					t.Errorf("frame %d: our header %x, the C kernel's %x", i+1, ours[i], theirs[i])
				} else {
					t.Logf("frame %d: header %x on both", i+1, ours[i])
				}
			}
		})
	}
}

func bytesEqual(a, b []byte) bool { return string(a) == string(b) }

// Bad or missing options of the new transports: each device is left out
// with a message saying why (the C kernel's words where it has some),
// and the machine boots with lo and the one good device.
func TestVecBadOptions(t *testing.T) {
	img := testutil.BusyboxImage(t)
	dir := t.TempDir()
	long := strings.Repeat("x", 120)
	args := []string{"ubd0=" + img, "con0=fd:0,fd:1", "con=null",
		"vec0:transport=fd",
		"vec1:transport=fd,fd=x1",
		"vec2:transport=fd,fd=77",
		"vec3:transport=bess,src=" + filepath.Join(dir, "s"),
		"vec4:transport=bess,dst=" + filepath.Join(dir, "nobody"),
		"vec5:transport=bess,dst=/" + long,
		"vec6:transport=l2tpv3,udp=1,src=127.0.0.1,dst=127.0.0.1,srcport=1,dstport=2,tx_session=1",
		"vec7:transport=l2tpv3,udp=1,src=127.0.0.1,dst=127.0.0.1,srcport=1,dstport=2,rx_session=1,tx_session=2,rx_cookie=5",
		"vec8:transport=l2tpv3,udp=1,rx_session=1,tx_session=2",
		"vec9:transport=l2tpv3,udp=1,src=no.such.host.invalid,srcport=1,dst=127.0.0.1,dstport=2,rx_session=1,tx_session=2",
		"vec10:transport=l2tpv3,src=127.0.0.1,srcport=5,dst=127.0.0.1,rx_session=1,tx_session=2",
		"vec11:transport=gre,src=127.0.0.1,dst=127.0.0.1,rx_key=1",
		"vec12:transport=hybrid",
		"vec13:transport=l2tpv3,udp=1,v6=1,src=127.0.0.1,srcport=1,dst=::1,dstport=2,rx_session=1,tx_session=2",
		// fd 3 is a socket handed over; the first device takes it, the
		// second cannot; fd 4 was not handed over.
		"vec14:transport=fd,fd=3", "vec15:transport=fd,fd=3", "vec16:transport=fd,fd=4",
		"init=/bin/sh", "--", "-c", "mount -t proc proc /proc; echo BOOTED; ifconfig -a | grep -c Link; poweroff -f"}
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	ours, other := os.NewFile(uintptr(fds[0]), "ours"), os.NewFile(uintptr(fds[1]), "other")
	defer ours.Close()
	defer other.Close()
	r := runOurs(t, "", []*os.File{ours}, time.Minute, args...)
	log := r.stdout + r.stderr
	for _, want := range []string{
		"vec0: vector fd: fd open: bad or missing fd argument",
		"vec1: option fd=x1 is not a number",
		"vec2: vector fd: fd open: descriptor 77 is not open",
		"vec3: vector bess: dst= names no socket to connect to",
		"vec4: vector bess: bess open:cannot connect to " + filepath.Join(dir, "nobody") + ": no such file or directory",
		"vec5: vector bess: dst=/" + long + ": longer than 107 bytes",
		"vec6: vector l2tpv3: rx_session= and tx_session= are both needed",
		"vec7: vector l2tpv3: rx_cookie= needs a tx_cookie=",
		"vec8: vector l2tpv3: socket_open : could not resolve src, error = Name or service not known",
		"vec9: vector l2tpv3: socket_open : could not resolve src, error = Name or service not known",
		"vec10: vector l2tpv3: socket_open : could not resolve src, error = Servname not supported for ai_socktype",
		"vec11: vector gre: rx_key= needs a tx_key=",
		"vec12: vector hybrid: uml_tap: failed to parse interface spec",
		"vec13: vector l2tpv3: socket_open : could not resolve src, error = Address family for hostname not supported",
		"vec14 (",
		"vec15: vector fd: fd open: descriptor 3 is the engine's own or another device's, not one it inherited",
		"vec16: vector fd: fd open: descriptor 4 is ",
	} {
		if !strings.Contains(log, want) {
			t.Errorf("no %q in the boot log:\n%s", want, log)
		}
	}
	if !hasLine(r.stdout, "BOOTED") || !hasLine(r.stdout, "2") {
		t.Errorf("the machine did not boot to its shell with lo and vec14 alone:\n%s", r.stdout)
	}
}
