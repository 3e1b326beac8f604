package switchd

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/umltools/umltools/internal/testutil"
)

// waitLog waits until the log contains want.
func waitLog(t *testing.T, s *testutil.SyncBuffer, want string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(s.String(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("log never showed %q; log:\n%s", want, s.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func startSwitch(t *testing.T, cfg Config) (*Switch, string, *testutil.SyncBuffer) {
	t.Helper()
	log := &testutil.SyncBuffer{}
	cfg.Out = log
	s := New(cfg)
	ctl := filepath.Join(t.TempDir(), "ctl")
	if err := s.Listen(ctl, 0); err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, ctl, log
}

func dial(t *testing.T, ctl string) *Conn {
	t.Helper()
	c, err := Dial(ctl)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// strangerSend sends f to addr from a socket that never registered.
func strangerSend(t *testing.T, addr Addr, f []byte) error {
	t.Helper()
	me := NewClientAddr()
	sf, err := dgramSocket(&me, "stranger")
	if err != nil {
		t.Fatal(err)
	}
	defer sf.Close()
	rc, err := sf.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var serr error
	rc.Control(func(fd uintptr) { serr = sendto(fd, f, &addr) })
	return serr
}

func mac(n byte) MAC { return MAC{0x02, 0, 0, 0, 0, n} }

func frame(dst, src MAC, payload string) []byte {
	f := append(append(append([]byte{}, dst[:]...), src[:]...), 0x08, 0x00)
	return append(f, payload...)
}

var bcast = MAC{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

// expect reads one frame within a short time and compares it.
func expect(t *testing.T, c *Conn, want []byte) {
	t.Helper()
	buf := make([]byte, 2048)
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	n, err := c.ReadFrame(buf)
	if err != nil {
		t.Fatalf("reading frame: %v", err)
	}
	if !bytes.Equal(buf[:n], want) {
		t.Fatalf("got frame % x, want % x", buf[:n], want)
	}
}

// expectNone checks that no frame arrives within a short time.
func expectNone(t *testing.T, c *Conn) {
	t.Helper()
	buf := make([]byte, 2048)
	c.SetReadDeadline(time.Now().Add(150 * time.Millisecond))
	if n, err := c.ReadFrame(buf); err == nil {
		t.Fatalf("unexpected frame % x", buf[:n])
	}
}

func TestSwitchLearning(t *testing.T) {
	_, ctl, log := startSwitch(t, Config{})
	a, b, c := dial(t, ctl), dial(t, ctl), dial(t, ctl)
	// Broadcast floods to everyone but the sender.
	f := frame(bcast, mac(1), "hello")
	if err := a.WriteFrame(f); err != nil {
		t.Fatal(err)
	}
	expect(t, b, f)
	expect(t, c, f)
	expectNone(t, a)
	// b answers a: a is learned, so only a gets it.
	f2 := frame(mac(1), mac(2), "reply")
	b.WriteFrame(f2)
	expect(t, a, f2)
	expectNone(t, c)
	// Unknown unicast floods and is logged.
	f3 := frame(mac(9), mac(1), "who")
	a.WriteFrame(f3)
	expect(t, b, f3)
	expect(t, c, f3)
	waitLog(t, log, "unknown Addr: 02:00:00:00:00:09 from port")
	waitLog(t, log, " Addr: 02:00:00:00:00:01 New port")
	// A 1514-byte frame passes intact.
	big := frame(mac(2), mac(1), strings.Repeat("x", MaxFrame-14))
	a.WriteFrame(big)
	expect(t, b, big)
	// When a disconnects, frames to it flood again (it is forgotten).
	a.Close()
	waitLog(t, log, "Disconnect\n")
	f4 := frame(mac(1), mac(2), "gone")
	b.WriteFrame(f4)
	expect(t, c, f4)
}

func TestHub(t *testing.T) {
	_, ctl, _ := startSwitch(t, Config{Hub: true})
	a, b, c := dial(t, ctl), dial(t, ctl), dial(t, ctl)
	a.WriteFrame(frame(bcast, mac(1), "arp"))
	expect(t, b, frame(bcast, mac(1), "arp"))
	expect(t, c, frame(bcast, mac(1), "arp"))
	b.WriteFrame(frame(mac(1), mac(2), "x"))
	expect(t, a, frame(mac(1), mac(2), "x"))
	expect(t, c, frame(mac(1), mac(2), "x")) // a hub repeats unicast too
}

func TestAgeing(t *testing.T) {
	_, ctl, _ := startSwitch(t, Config{Age: 100 * time.Millisecond})
	a, b, c := dial(t, ctl), dial(t, ctl), dial(t, ctl)
	a.WriteFrame(frame(bcast, mac(1), "x"))
	expect(t, b, frame(bcast, mac(1), "x"))
	expect(t, c, frame(bcast, mac(1), "x"))
	time.Sleep(200 * time.Millisecond)
	b.WriteFrame(frame(mac(1), mac(2), "y"))
	expect(t, a, frame(mac(1), mac(2), "y"))
	expect(t, c, frame(mac(1), mac(2), "y")) // aged out: flooded
}

func TestVersions(t *testing.T) {
	s, ctl, log := startSwitch(t, Config{})
	c1, err := DialWith(ctl, DialOptions{Version: 1, MAC: mac(1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c1.Close()
	c3 := dial(t, ctl)
	// Each port gets its own abstract data socket, named like the C
	// switch's: {0, pad, pid, usec}.
	a1, a3 := c1.SwitchAddr(), c3.SwitchAddr()
	for _, a := range []Addr{a1, a3} {
		if a.Family() != 1 || a[2] != 0 || binary.LittleEndian.Uint32(a[6:]) != uint32(os.Getpid()) {
			t.Fatalf("reply is not the switch's abstract data socket: % x", a[:16])
		}
	}
	if a1 == a3 {
		t.Fatal("two ports share a data socket")
	}
	_ = s
	c1.WriteFrame(frame(bcast, mac(1), "v1"))
	expect(t, c3, frame(bcast, mac(1), "v1"))
	// v2 and >3 are refused with the C switch's messages.
	for v, msg := range map[uint32]string{2: "Version 2 is not supported", 7: "Request for a version 7 port, which this uml_switch doesn't support"} {
		req := AppendV3(nil, new(Addr))
		binary.LittleEndian.PutUint32(req[4:], v)
		raw(t, ctl, req)
		waitLog(t, log, msg)
	}
}

// raw connects to ctl, writes b, and returns what the switch answers
// before closing (nil on EOF).
func raw(t *testing.T, ctl string, b []byte) []byte {
	t.Helper()
	c, err := net.Dial("unix", ctl)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if len(b) > 0 {
		c.Write(b)
	}
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	var out [256]byte
	n, _ := c.Read(out[:])
	return out[:n]
}

// TestBadInput: bad requests, unknown senders and vanishing clients are
// logged and the switch keeps serving its other ports.
func TestBadInput(t *testing.T) {
	s, ctl, log := startSwitch(t, Config{RequestTimeout: 200 * time.Millisecond})
	a, b := dial(t, ctl), dial(t, ctl)
	good := AppendV3(nil, new(Addr))
	wrongMagic := append([]byte{}, good...)
	wrongMagic[0] ^= 0xff
	badType := append([]byte{}, good...)
	badType[8] = 5
	badFamily := append([]byte{}, good...)
	badFamily[12] = 9
	cases := []struct {
		name string
		req  []byte
		log  string
	}{
		{"garbage", bytes.Repeat([]byte{0xa5}, 300), "Bad request magic"},
		{"short", good[:3], "Short request : 3 bytes"},
		{"short v3", good[:40], "Short version 3 request : 40 bytes"},
		{"wrong magic", wrongMagic, "Bad request magic"},
		{"bad type", badType, "Bad request type : 5"},
		{"bad family", badFamily, "address family 9"},
		{"silent", nil, "Reading request"},
	}
	for _, tc := range cases {
		if out := raw(t, ctl, tc.req); len(out) != 0 {
			t.Errorf("%s: switch replied % x", tc.name, out)
		}
		waitLog(t, log, tc.log)
	}
	// A client that connects and vanishes at once.
	c, _ := net.Dial("unix", ctl)
	c.Close()
	waitLog(t, log, "EOF from new port")
	// A socket that never registered cannot inject frames into a port:
	// the port's data socket is connected to its client only.
	if err := strangerSend(t, a.SwitchAddr(), frame(bcast, mac(7), "spoof")); err == nil {
		t.Error("a stranger could send to a port's data socket")
	}
	expectNone(t, b)
	// Runt frames are counted but not forwarded.
	a.WriteFrame([]byte{1, 2, 3})
	// A registered client that dies without closing its control stream
	// properly: its data socket vanishes, sends to it fail and are counted.
	d := dial(t, ctl)
	d.data.Close()
	// Extra bytes on a control stream.
	b.Control().Write([]byte("junk"))
	waitLog(t, log, "Bad request\n")
	// The switch still forwards between a and b.
	a.WriteFrame(frame(bcast, mac(1), "still"))
	expect(t, b, frame(bcast, mac(1), "still"))
	b.WriteFrame(frame(mac(1), mac(2), "alive"))
	expect(t, a, frame(mac(1), mac(2), "alive"))
	st := s.Stats()
	var drops uint64
	for _, p := range st.Ports {
		drops += p.Drops
	}
	if drops == 0 {
		t.Errorf("no drops counted for the vanished port: %+v", st.Ports)
	}
}

func TestStaleSocketTakeover(t *testing.T) {
	dir := t.TempDir()
	ctl := filepath.Join(dir, "ctl")
	// A socket file nobody listens on.
	l, err := net.Listen("unix", ctl)
	if err != nil {
		t.Fatal(err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()
	s := New(Config{SocketMode: 0o660})
	if err := s.Listen(ctl, 0); err != nil {
		t.Fatalf("stale socket not taken over: %v", err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(ctl); st.Mode().Perm() != 0o660 {
		t.Errorf("control socket mode %v, want 0660", st.Mode().Perm())
	}
	// A second switch on the live socket is refused.
	s2 := New(Config{})
	err = s2.Listen(ctl, 0)
	var be *BindError
	if !errors.As(err, &be) || !be.InUse {
		t.Fatalf("second switch: %v, want in-use BindError", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(ctl); !os.IsNotExist(err) {
		t.Errorf("control socket left behind: %v", err)
	}
}

func TestCompatV0(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	s, ctl, log := startSwitch(t, Config{CompatV0: true, DataPath: data})
	a, err := DialWith(ctl, DialOptions{V0: true, MAC: mac(1), DataPath: data})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b := dial(t, ctl)
	// A v0 request gets no reply: wait until the switch registered it.
	deadline := time.Now().Add(5 * time.Second)
	for strings.Count(log.String(), "New connection\n") < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("ports not registered: %q", log.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
	if reply := b.SwitchAddr(); reply != s.DataAddr() || reply.String() != data {
		t.Fatalf("v3 reply %q, want the shared socket %q", reply.String(), data)
	}
	a.WriteFrame(frame(bcast, mac(1), "v0"))
	expect(t, b, frame(bcast, mac(1), "v0"))
	b.WriteFrame(frame(mac(1), mac(2), "back"))
	expect(t, a, frame(mac(1), mac(2), "back"))
	// Frames from a socket that never registered are logged and dropped.
	if err := strangerSend(t, s.DataAddr(), frame(bcast, mac(7), "spoof")); err != nil {
		t.Fatal(err)
	}
	waitLog(t, log, "Unknown connection for packet")
	expectNone(t, b)
	if st := s.Stats(); st.UnknownFrames != 1 {
		t.Errorf("unknown sender frames %d, want 1", st.UnknownFrames)
	}
}

func TestVLAN(t *testing.T) {
	log := &testutil.SyncBuffer{}
	s := New(Config{Out: log})
	dir := t.TempDir()
	ctl0, ctl10, ctl20 := filepath.Join(dir, "c0"), filepath.Join(dir, "c10"), filepath.Join(dir, "c20")
	for _, c := range []struct {
		p string
		v uint16
	}{{ctl0, 0}, {ctl10, 10}, {ctl20, 20}} {
		if err := s.Listen(c.p, c.v); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	a0, a10, b10, a20 := dial(t, ctl0), dial(t, ctl10), dial(t, ctl10), dial(t, ctl20)
	// Broadcast in VLAN 10 reaches only VLAN 10.
	f := frame(bcast, mac(10), "ten")
	a10.WriteFrame(f)
	expect(t, b10, f)
	expectNone(t, a0)
	expectNone(t, a20)
	// The same MAC may live in two VLANs.
	a20.WriteFrame(frame(bcast, mac(10), "twenty"))
	expectNone(t, a10)
	b10.WriteFrame(frame(mac(10), mac(11), "to ten"))
	expect(t, a10, frame(mac(10), mac(11), "to ten"))
	expectNone(t, a20)
	// A tagged frame on an access port is dropped (no VLAN hopping).
	tagged := tag(nil, frame(bcast, mac(1), "hop"), 20)
	a0.WriteFrame(tagged)
	expectNone(t, a20)
}

func TestUntagTag(t *testing.T) {
	trunk := &Port{Trunk: true, VLAN: 0}
	f := frame(bcast, mac(1), "payload")
	tg := tag(nil, f, 42)
	out, vid, ok := untag(trunk, append([]byte{}, tg...))
	if !ok || vid != 42 || !bytes.Equal(out, f) {
		t.Fatalf("untag: ok %v vid %d out % x", ok, vid, out)
	}
	if _, _, ok := untag(&Port{VLAN: 3}, tg); ok {
		t.Fatal("tagged frame accepted on an access port")
	}
	if out, vid, ok := untag(&Port{VLAN: 3}, f); !ok || vid != 3 || !bytes.Equal(out, f) {
		t.Fatal("untagged frame on an access port")
	}
}

func TestParseRequest(t *testing.T) {
	var a Addr
	a[0] = 1
	a[5] = 0x42
	r, err := ParseRequest(AppendV3(nil, &a), false)
	if err != nil || r.Version != 3 || r.Addr != a {
		t.Fatalf("v3: %+v %v", r, err)
	}
	r, err = ParseRequest(AppendV1(nil, [6]byte{1, 2, 3, 4, 5, 6}, &a), false)
	if err != nil || r.Version != 1 || r.Addr != a || r.MAC != [6]byte{1, 2, 3, 4, 5, 6} {
		t.Fatalf("v1: %+v %v", r, err)
	}
	if _, err := ParseRequest(AppendV0(nil, [6]byte{}, &a), false); err == nil {
		t.Fatal("v0 accepted without compat")
	}
	r, err = ParseRequest(AppendV0(nil, [6]byte{9}, &a), true)
	if err != nil || r.Version != 0 || r.MAC[0] != 9 || r.Addr != a {
		t.Fatalf("v0: %+v %v", r, err)
	}
}

func FuzzParseRequest(f *testing.F) {
	var a Addr
	a[0] = 1
	f.Add(AppendV3(nil, &a), false)
	f.Add(AppendV1(nil, [6]byte{1}, &a), false)
	f.Add(AppendV0(nil, [6]byte{1}, &a), true)
	f.Add([]byte{0xce, 0xfa, 0xed, 0xfe, 2, 0, 0, 0}, false)
	f.Fuzz(func(t *testing.T, b []byte, v0 bool) {
		r, err := ParseRequest(b, v0)
		if err != nil {
			var re *RequestError
			if !errors.As(err, &re) || re.Msg == "" {
				t.Fatalf("error of the wrong kind: %v", err)
			}
			return
		}
		if r.Type != ReqNewControl || r.Addr.Family() != 1 {
			t.Fatalf("accepted a bad request: %+v", r)
		}
		// Re-encoding an accepted request parses to the same thing.
		var enc []byte
		switch r.Version {
		case 3:
			enc = AppendV3(nil, &r.Addr)
		case 1:
			enc = AppendV1(nil, r.MAC, &r.Addr)
		case 0:
			enc = AppendV0(nil, r.MAC, &r.Addr)
		}
		r2, err := ParseRequest(enc, v0)
		if err != nil || r2 != r {
			t.Fatalf("round trip: %+v -> %+v, %v", r, r2, err)
		}
	})
}

// fakeTap returns one end of a SOCK_SEQPACKET pair to hand to AddTap (it
// keeps frame boundaries like a tap) and the other end for the test.
func fakeTap(t *testing.T) (*os.File, *os.File) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	unix.SetNonblock(fds[1], true)
	peer := os.NewFile(uintptr(fds[1]), "tap peer")
	t.Cleanup(func() { peer.Close() })
	return os.NewFile(uintptr(fds[0]), "fake tap"), peer
}

// TestTrunkTap: a trunk tap carries VLAN 10 tagged and the default VLAN
// untagged; tagged frames from it reach only their VLAN.
func TestTrunkTap(t *testing.T) {
	log := &testutil.SyncBuffer{}
	s := New(Config{Out: log})
	dir := t.TempDir()
	ctl0, ctl10 := filepath.Join(dir, "c0"), filepath.Join(dir, "c10")
	if err := s.Listen(ctl0, 0); err != nil {
		t.Fatal(err)
	}
	if err := s.Listen(ctl10, 10); err != nil {
		t.Fatal(err)
	}
	tapEnd, peer := fakeTap(t)
	if _, err := s.AddTap(tapEnd, "fake0", 0, true); err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	a0, a10 := dial(t, ctl0), dial(t, ctl10)
	readTap := func() []byte {
		t.Helper()
		peer.SetReadDeadline(time.Now().Add(2 * time.Second))
		b := make([]byte, 2048)
		n, err := peer.Read(b)
		if err != nil {
			t.Fatalf("tap read: %v", err)
		}
		return b[:n]
	}
	f10 := frame(bcast, mac(10), "from ten")
	a10.WriteFrame(f10)
	if got, want := readTap(), tag(nil, f10, 10); !bytes.Equal(got, want) {
		t.Fatalf("VLAN 10 on the trunk: % x, want % x", got, want)
	}
	expectNone(t, a0)
	f0 := frame(bcast, mac(1), "native")
	a0.WriteFrame(f0)
	if got := readTap(); !bytes.Equal(got, f0) {
		t.Fatalf("native VLAN on the trunk: % x, want untagged % x", got, f0)
	}
	expectNone(t, a10)
	// Tagged frame from the trunk goes to VLAN 10 only, untagged.
	in := frame(bcast, mac(99), "from host")
	peer.Write(tag(nil, in, 10))
	expect(t, a10, in)
	expectNone(t, a0)
	peer.Write(in)
	expect(t, a0, in)
	expectNone(t, a10)
}

// TestUnknownLogRateLimited: a stream to an unknown address floods, but is
// logged once a second, not once a frame.
func TestUnknownLogRateLimited(t *testing.T) {
	_, ctl, log := startSwitch(t, Config{})
	a, b := dial(t, ctl), dial(t, ctl)
	for i := 0; i < 5; i++ {
		f := frame(mac(0x42), mac(1), fmt.Sprint(i))
		a.WriteFrame(f)
		expect(t, b, f)
	}
	if n := strings.Count(log.String(), "unknown Addr: 02:00:00:00:00:42"); n != 1 {
		t.Errorf("logged %d times, want 1:\n%s", n, log.String())
	}
}

// ExampleDial shows the client side of the daemon protocol, as a UML
// kernel's eth0=daemon transport uses it.
func ExampleDial() {
	c, err := Dial("/tmp/uml.ctl")
	if err != nil {
		return
	}
	defer c.Close()
	f := make([]byte, 60)
	copy(f, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0, 0, 0, 0, 1, 0x88, 0xb5})
	c.WriteFrame(f) // a broadcast to every other port
	buf := make([]byte, MaxFrame)
	c.SetReadDeadline(time.Now().Add(time.Second))
	if n, err := c.ReadFrame(buf); err == nil {
		_ = buf[:n] // one raw Ethernet frame
	}
}
