package machine

import (
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/umltools/umltools/internal/cmdline"
	"github.com/umltools/umltools/internal/fs/extfs"
	"github.com/umltools/umltools/internal/mconsole"
	"github.com/umltools/umltools/internal/netdev"
	"github.com/umltools/umltools/internal/switchd"
	"github.com/umltools/umltools/internal/ubd"
)

// testMachine is a machine parsed from args that has not booted: what the
// mconsole server can do to it without a guest.
func testMachine(t testing.TB, args ...string) *machine {
	t.Helper()
	cfg, _, err := cmdline.Parse(args)
	if err != nil {
		t.Fatal(err)
	}
	null, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { null.Close() })
	m := &machine{io: IO{Stderr: null}, start: time.Now(), cfg: cfg, quiet: true,
		mounted: map[int]*extfs.FS{}, disks: make([]ubd.Device, cmdline.MaxUbd)}
	t.Cleanup(m.closeDisks)
	st, err := netdev.New()
	if err != nil {
		t.Fatal(err)
	}
	m.net = st
	t.Cleanup(st.Close)
	return m
}

// serve starts an mconsole server for m and a client of it.
func serve(t testing.TB, m *machine) (*mconsole.Server, *mconsole.Client) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "mconsole")
	srv := m.startMconsole(sock)
	if srv == nil {
		t.Fatal("no mconsole server")
	}
	t.Cleanup(func() { srv.Close() })
	c, err := mconsole.Dial(sock)
	if err != nil {
		t.Fatal(err)
	}
	c.Timeout = 5 * time.Second
	t.Cleanup(func() { c.Close() })
	return srv, c
}

// TestMconsoleDevices checks the config/remove answers of the engine's
// device classes against the C kernel's texts and codes (recorded from
// Debian's linux.uml 6.1 with uml_mconsole; see uml-interfaces.md §1.4).
func TestMconsoleDevices(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "disk.img")
	if err := os.WriteFile(img, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	m := testMachine(t, "mem=64M", "con0=fd:0,fd:1", "con1=null", "ssl=pty")
	_, c := serve(t, m)
	for _, tt := range []struct {
		cmd  string
		want string
		err  int32
	}{
		{"config mem", "OK 1610612736", 0},
		{"config mem=64M", "ERR Expected increment to start with '-' or '+'", -int32(unix.EINVAL)},
		{"config memx=1", "ERR Expected '=' after 'mem'", 1},
		{"config mem=+zz", "ERR Failed to parse memory increment", 1},
		{"config mem=+64M", "OK ", 0},
		{"config mem=-1G", "ERR Failed to release memory", 1},
		{"remove mem", "ERR Memory doesn't support the remove operation", -int32(unix.EBUSY)},
		{"config eth0", "ERR No get_config routine defined", 1},
		{"remove eth0", "ERR Device doesn't exist", -int32(unix.ENODEV)},
		{"config con0", "OK fd:0,fd:1", 0},
		{"config con1", "OK null", 0},
		{"config ssl0", "OK pty", 0},
		{"remove con0", "ERR Device is already open", -int32(unix.EINVAL)},
		{"remove con1", "OK ", 0},
		{"config con1", "OK none", 0},
		{"remove con99", "ERR Invalid device number - must be between 0 and 15", 1},
		{"remove conx", "ERR Couldn't parse device number", 1},
		{"config ubd0", "OK ", 0},
		{"config ubd1x=" + img, "ERR Expected '=' or flag letter (r, s, c, t or d)", -int32(unix.EINVAL)},
		{"config ubd1=" + dir + "/missing.img", "ERR Couldn't determine size of device's file", -int32(unix.ENOENT)},
		{"remove ubd1", "ERR Device doesn't exist", -int32(unix.ENODEV)},
		{"config ubdb=" + img, "OK ", 0},
		{"config ubd1=" + img, "ERR Device is already configured", -int32(unix.EBUSY)},
		{"config ubd1", "OK " + img, 0},
		{"remove ubdb", "OK ", 0},
		{"config ubd1", "OK ", 0},
		{"remove ubd16", "ERR Invalid device number - must be between 0 and 15", 1},
		{"config foo", "ERR Bad configuration option", 1},
		{"stack 1", "ERR Couldn't find that pid", 1},
		{"proc meminfo", "ERR Proc not available", 1},
	} {
		r, err := c.Command(tt.cmd)
		if err != nil {
			t.Fatalf("%s: %v", tt.cmd, err)
		}
		if r.String() != tt.want || r.Err() != tt.err {
			t.Errorf("%s: %q err %d, want %q err %d", tt.cmd, r.String(), r.Err(), tt.want, tt.err)
		}
	}
	if m.cfg.Mem != 128<<20 {
		t.Errorf("mem after config mem=+64M: %d, want %d", m.cfg.Mem, 128<<20)
	}
}

// FuzzMconsoleDatagrams sends random datagrams to the engine's mconsole
// server (a machine without a guest) through a real socket: it must never
// panic, and must still answer `version` after each (no wedged socket).
func FuzzMconsoleDatagrams(f *testing.F) {
	for _, s := range []string{"config ubd1=x", "remove ubdq", "config mem=+1", "config con1=pts", "config eth0=tuntap,,,1.2.3.4",
		"sysrq m", "stack 99999999999999999999", "proc meminfo", "log \n", "go", "stop"} {
		f.Add(mconsole.NewRequest(s).Encode())
	}
	f.Add([]byte{0xbe, 0xba, 0xfe, 0xca, 2, 0, 0, 0, 0xff, 0xff, 0xff, 0xff})
	dir := f.TempDir()
	f.Chdir(dir) // config ubdN= may name (and create) files: here only
	m := testMachine(f, "mem=64M", "ubd0=root_fs")
	srv, c := serve(f, m)
	raw, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		f.Fatal(err)
	}
	defer unix.Close(raw)
	to := &unix.SockaddrUnix{Name: srv.Path()}
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > 4096 {
			b = b[:4096]
		}
		unix.Sendto(raw, b, unix.MSG_DONTWAIT, to)
		r, err := c.Command("version")
		if err != nil {
			buf := make([]byte, 1<<20)
			t.Fatalf("after %q: version: %v\n%s", b, err, buf[:runtime.Stack(buf, true)])
		}
		if !strings.HasPrefix(r.String(), "OK Linux (none) ") {
			t.Fatalf("after %q: version: %q", b, r.String())
		}
	})
}

// config ethN= adds a device to the running machine's stack, down;
// remove takes it away while down, and refuses while up.
func TestMconsoleEthHotplug(t *testing.T) {
	ctl := filepath.Join(t.TempDir(), "ctl")
	sw := switchd.New(switchd.Config{})
	if err := sw.Listen(ctl, 0); err != nil {
		t.Fatal(err)
	}
	if err := sw.Start(); err != nil {
		t.Fatal(err)
	}
	defer sw.Close()
	m := testMachine(t, "mem=64M")
	_, c := serve(t, m)
	ask := func(cmd, want string) {
		t.Helper()
		r, err := c.Command(cmd)
		if err != nil {
			t.Fatalf("%s: %v", cmd, err)
		}
		if got := r.String(); got != want {
			t.Errorf("%s: %q, want %q", cmd, got, want)
		}
	}
	ask("config eth1=daemon,,unix,"+ctl, "OK ")
	if m.net.NIC("eth1") == nil {
		t.Fatal("no eth1 in the stack")
	}
	ask("config eth1=daemon,,unix,"+ctl, "ERR Device is already configured")
	ask("config eth1", "OK eth1=daemon,,unix,"+ctl)
	ask("config eth2=daemon,,unix,"+ctl+".none", "ERR eth2: transport not opened (see the kernel log)")
	m.net.SetUp("eth1", true)
	ask("remove eth1", "ERR Device is currently open")
	m.net.SetUp("eth1", false)
	ask("remove eth1", "OK ")
	ask("remove eth1", "ERR Device doesn't exist")

	// The built-in NAT: hot-added, asked, its forwards changed.
	ask("config eth3=slirp,,resolver=192.0.2.53", "OK ")
	ask("config eth3", "OK SLIRP backend - built-in user-mode NAT 10.0.2.0/24: gateway 10.0.2.2 (the host's loopback), "+
		"DNS 10.0.2.3 (resolver 192.0.2.53:53), DHCP 10.0.2.15")
	ask("config eth1=hostfwd_add=tcp::1-:80", "ERR eth1 is not on the built-in user-mode NAT")
	ask("config eth3=hostfwd_add=tcp:127.0.0.1:x-:80", `ERR hostfwd "tcp:127.0.0.1:x-:80": host side: bad port "x"`)
	ask("config eth3=hostfwd_add=tcp:127.0.0.1:0-:80", "OK ")
	r, _ := c.Command("config eth3")
	_, port, ok := strings.Cut(r.String(), ", hostfwd tcp:127.0.0.1:")
	port, _, _ = strings.Cut(port, "-")
	if !ok || port == "0" {
		t.Fatalf("config eth3 after hostfwd_add: %q", r)
	}
	if c, err := net.Dial("tcp", "127.0.0.1:"+port); err != nil {
		t.Errorf("the forward does not listen: %v", err)
	} else {
		c.Close()
	}
	ask("config eth3=hostfwd_remove=tcp:127.0.0.1:"+port, "OK ")
	ask("config eth3=hostfwd_remove=tcp:127.0.0.1:"+port, "ERR hostfwd tcp:127.0.0.1:"+port+": no such forward")
	if c, err := net.Dial("tcp", "127.0.0.1:"+port); err == nil {
		c.Close()
		t.Errorf("the removed forward still listens")
	}
}
