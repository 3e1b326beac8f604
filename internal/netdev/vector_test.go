package netdev

import (
	"bytes"
	"encoding/hex"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/umltools/umltools/internal/cmdline"
	"github.com/umltools/umltools/internal/testutil"
)

func vecSpec(t testing.TB, spec string) *cmdline.Vec {
	t.Helper()
	v, _, err := cmdline.ParseVec(0, spec)
	if err != nil {
		t.Fatalf("%s: %v", spec, err)
	}
	return v
}

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// ipv4Hdr is a made-up IPv4 header of ihl 32-bit words, as a raw socket
// hands it over before the payload.
func ipv4Hdr(ihl int, proto byte) []byte {
	h := make([]byte, ihl*4)
	h[0] = 0x40 | byte(ihl)
	h[9] = proto
	return h
}

// The headers as the C kernel lays them out (vector_transports.c:
// l2tpv3_form_header, gre_form_header and their build_*_transport_data):
// each field big-endian, the counter and the sequence number starting at
// 1 unless pinned to 0.
func TestVectorHeaderLayout(t *testing.T) {
	for _, tc := range []struct {
		name, spec string
		// wire holds the headers of the first two frames sent.
		wire [2]string
	}{
		{"l2tpv3 udp, 64-bit cookie, counter",
			"transport=l2tpv3,udp=1,rx_session=0x7,tx_session=0x11223344,cookie64=1,rx_cookie=9,tx_cookie=0x0102030405060708,counter=1",
			[2]string{"00030000 11223344 0102030405060708 00000001", "00030000 11223344 0102030405060708 00000002"}},
		{"l2tpv3 ip, 32-bit cookie (the low half of the number), pinned counter",
			"transport=l2tpv3,rx_session=1,tx_session=2,rx_cookie=3,tx_cookie=0x1deadbeef,counter=1,pin_counter=1",
			[2]string{"00000002 deadbeef 00000000", "00000002 deadbeef 00000000"}},
		{"l2tpv3 session only", "transport=l2tpv3,rx_session=1,tx_session=0x7fffffff",
			[2]string{"7fffffff", "7fffffff"}},
		{"l2tpv3 pin_counter without counter", "transport=l2tpv3,udp=1,rx_session=1,tx_session=5,pin_counter=1",
			[2]string{"00030000 00000005", "00030000 00000005"}},
		{"l2tpv3 tx_cookie alone: no cookie", "transport=l2tpv3,rx_session=1,tx_session=5,tx_cookie=7",
			[2]string{"00000005", "00000005"}},
		{"gre bare", "transport=gre", [2]string{"00006558", "00006558"}},
		{"gre key", "transport=gre,rx_key=1,tx_key=0x01020304", [2]string{"20006558 01020304", "20006558 01020304"}},
		{"gre key, sequence", "transport=gre,rx_key=1,tx_key=2,sequence=1",
			[2]string{"30006558 00000002 00000001", "30006558 00000002 00000002"}},
		{"gre sequence pinned", "transport=gre,sequence=1,pin_sequence=1", [2]string{"10006558 00000000", "10006558 00000000"}},
		{"gre tx_key alone: no key", "transport=gre,tx_key=2", [2]string{"00006558", "00006558"}},
		// kstrtoint reads a signed int: 0x80000000 is no number to it,
		// and the C kernel then runs without a key.
		{"gre key above INT_MAX: no key", "transport=gre,rx_key=0x80000000,tx_key=1", [2]string{"00006558", "00006558"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := headerOf(t, vecSpec(t, tc.spec))
			for i, want := range tc.wire {
				b := make([]byte, h.size())
				h.put(b)
				if !bytes.Equal(b, unhex(t, want)) {
					t.Errorf("frame %d: header %x, want %s", i+1, b, want)
				}
			}
		})
	}
}

func headerOf(t testing.TB, v *cmdline.Vec) encapHeader {
	t.Helper()
	var h encapHeader
	var err error
	switch v.Transport {
	case "l2tpv3":
		h, err = parseL2TPv3(v)
	case "gre":
		h, err = parseGRE(v)
	}
	if err != nil {
		t.Fatalf("%s: %v", v.Spec, err)
	}
	return h
}

// The receive side: what the C kernel's l2tpv3_verify_header and
// gre_verify_header let through, and where the frame starts.
func TestVectorHeaderStrip(t *testing.T) {
	frame := bytes.Repeat([]byte{0xee}, 60)
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	for _, tc := range []struct {
		name, spec string
		pkt        []byte
		want       error // nil: the frame is found after the headers
	}{
		{"l2tpv3 udp ok", "transport=l2tpv3,udp=1,rx_session=0x10,tx_session=1,rx_cookie=0xabcd,tx_cookie=1,counter=1",
			cat(unhex(t, "00030000 00000010 0000abcd 00000009"), frame), nil},
		{"l2tpv3 udp: the data word is not checked", "transport=l2tpv3,udp=1,rx_session=0x10,tx_session=1",
			cat(unhex(t, "ffffffff 00000010"), frame), nil},
		{"l2tpv3 udp: wrong session", "transport=l2tpv3,udp=1,rx_session=0x10,tx_session=1",
			cat(unhex(t, "00030000 00000011"), frame), errL2TPSession},
		{"l2tpv3: wrong cookie", "transport=l2tpv3,udp=1,rx_session=0x10,tx_session=1,rx_cookie=5,tx_cookie=5",
			cat(unhex(t, "00030000 00000010 00000006"), frame), errL2TPCookie},
		{"l2tpv3: 64-bit cookie", "transport=l2tpv3,udp=1,rx_session=0x10,tx_session=1,rx_cookie=0x1122334455667788,tx_cookie=5,cookie64=1",
			cat(unhex(t, "00030000 00000010 1122334455667788"), frame), nil},
		{"l2tpv3 ip: after the IPv4 header", "transport=l2tpv3,rx_session=0x10,tx_session=1",
			cat(ipv4Hdr(5, 115), unhex(t, "00000010"), frame), nil},
		{"l2tpv3 ip: an IPv4 header with options", "transport=l2tpv3,rx_session=0x10,tx_session=1",
			cat(ipv4Hdr(6, 115), unhex(t, "00000010"), frame), nil},
		{"l2tpv3 ip v6: no IP header", "transport=l2tpv3,v6=1,rx_session=0x10,tx_session=1",
			cat(unhex(t, "00000010"), frame), nil},
		{"l2tpv3 ip: not IPv4", "transport=l2tpv3,rx_session=0x10,tx_session=1",
			cat(unhex(t, "00000010"), frame), errNotIPv4},
		{"l2tpv3: nothing after the header", "transport=l2tpv3,udp=1,rx_session=0x10,tx_session=1",
			unhex(t, "00030000 00000010"), errShortPacket},
		{"gre ok", "transport=gre,rx_key=0x42,tx_key=1,sequence=1",
			cat(ipv4Hdr(5, 47), unhex(t, "30006558 00000042 12345678"), frame), nil},
		{"gre: the sequence is not checked, pinned or not", "transport=gre,sequence=1,pin_sequence=1",
			cat(ipv4Hdr(5, 47), unhex(t, "10006558 ffffffff"), frame), nil},
		{"gre: wrong key", "transport=gre,rx_key=0x42,tx_key=1",
			cat(ipv4Hdr(5, 47), unhex(t, "20006558 00000043"), frame), errGREKey},
		{"gre: a key where none is expected", "transport=gre",
			cat(ipv4Hdr(5, 47), unhex(t, "20006558 00000043"), frame), errGREHeader},
		{"gre: a checksum flag", "transport=gre", cat(ipv4Hdr(5, 47), unhex(t, "80006558"), frame), errGREHeader},
		{"gre: another protocol", "transport=gre", cat(ipv4Hdr(5, 47), unhex(t, "00000800"), frame), errGREHeader},
		{"gre v6", "transport=gre,v6=1,rx_key=7,tx_key=7", cat(unhex(t, "20006558 00000007"), frame), nil},
		{"gre: too short", "transport=gre", cat(ipv4Hdr(5, 47), unhex(t, "0000")), errShortPacket},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := headerOf(t, vecSpec(t, tc.spec))
			off, err := h.strip(tc.pkt)
			switch {
			case tc.want == nil && err != nil:
				t.Fatalf("dropped: %v", err)
			case tc.want == nil && !bytes.Equal(tc.pkt[off:], frame):
				t.Fatalf("frame at %d: %x", off, tc.pkt[off:])
			case tc.want != nil && !errors.Is(err, tc.want):
				t.Fatalf("error %v, want %v", err, tc.want)
			}
		})
	}
}

// The setups the C kernel refuses (build_*_transport_data returns
// -EINVAL), and the C library's number readers.
func TestVectorOptions(t *testing.T) {
	for _, tc := range []struct{ spec, want string }{
		{"transport=l2tpv3,tx_session=1", "rx_session= and tx_session= are both needed"},
		{"transport=l2tpv3,rx_session=1", "rx_session= and tx_session= are both needed"},
		{"transport=l2tpv3,rx_session=0x80000000,tx_session=1", "rx_session= and tx_session= are both needed"},
		{"transport=l2tpv3,rx_session=1,tx_session=1,rx_cookie=1", "rx_cookie= needs a tx_cookie="},
		{"transport=gre,rx_key=1", "rx_key= needs a tx_key="},
	} {
		v := vecSpec(t, tc.spec)
		var err error
		if v.Transport == "gre" {
			_, err = parseGRE(v)
		} else {
			_, err = parseL2TPv3(v)
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.spec, err, tc.want)
		}
	}
	for _, tc := range []struct {
		s  string
		v  int32
		ok bool
	}{
		{"0", 0, true}, {"10", 10, true}, {"010", 8, true}, {"0x10", 16, true}, {"+5", 5, true}, {"-1", -1, true},
		{"2147483647", 2147483647, true}, {"2147483648", 0, false}, {"0x", 0, false}, {"09", 0, false},
		{"", 0, false}, {"5\n", 5, true}, {"5 ", 0, false}, {"-2147483648", -2147483648, true},
	} {
		if v, ok := cmdline.Kstrtoint(tc.s); v != tc.v || ok != tc.ok {
			t.Errorf("kstrtoint(%q) = %d, %v; want %d, %v", tc.s, v, ok, tc.v, tc.ok)
		}
	}
	for _, tc := range []struct {
		s string
		v int64
	}{{"1", 1}, {" 2x", 2}, {"0x1", 0}, {"-3", -3}, {"", 0}, {"99999999999999999999", 1<<63 - 1}} {
		if v := cmdline.Strtol10(tc.s); v != tc.v {
			t.Errorf("strtol10(%q) = %d, want %d", tc.s, v, tc.v)
		}
	}
}

// FuzzVectorStrip: the receive-side parsers of l2tpv3 and gre take any
// packet without panicking, a frame they accept lies inside the packet,
// and what the sender side makes is accepted by a receiver of the
// matching configuration.
func FuzzVectorStrip(f *testing.F) {
	f.Add(uint16(0), uint32(1), uint64(2), []byte("\x45\x00\x00\x00"))
	f.Add(uint16(0xffff), uint32(0x10), uint64(0x1122334455667788), []byte("\x00\x03\x00\x00\x00\x00\x00\x10"))
	f.Add(uint16(0x20), uint32(7), uint64(7), []byte("\x46\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x30\x00\x65\x58"))
	f.Fuzz(func(t *testing.T, cfg uint16, id uint32, cookie uint64, pkt []byte) {
		bit := func(i int) bool { return cfg&(1<<i) != 0 }
		cookieLen := []int{0, 4, 8, 0}[cfg>>8&3]
		l := &l2tpv3Header{udp: bit(0), ipv4: bit(1) && !bit(0), rxSession: id, txSession: id,
			cookieLen: cookieLen, rxCookie: cookie, txCookie: cookie, counter: bit(2), pinCounter: bit(3)}
		if cookieLen == 4 {
			l.rxCookie &= 0xffffffff
			l.txCookie = l.rxCookie
		}
		g := &greHeader{ipv4: bit(1), key: bit(4), rxKey: id, txKey: id, sequence: bit(5), pinSequence: bit(6)}
		for _, h := range []encapHeader{l, g} {
			if off, err := h.strip(pkt); err == nil && (off <= 0 || off >= len(pkt)) {
				t.Fatalf("%T: frame at %d of a %d-byte packet", h, off, len(pkt))
			}
			// Our own encapsulation of pkt as a frame, as the peer
			// receives it (after an IPv4 header when it is raw IPv4).
			wire := make([]byte, h.size())
			h.put(wire)
			if l, ok := h.(*l2tpv3Header); ok && l.ipv4 || h == encapHeader(g) && g.ipv4 {
				wire = append(ipv4Hdr(5, 0), wire...)
			}
			wire = append(wire, pkt...)
			off, err := h.strip(wire)
			if len(pkt) == 0 {
				if err == nil {
					t.Fatalf("%T: an empty frame accepted", h)
				}
				continue
			}
			if err != nil || !bytes.Equal(wire[off:], pkt) {
				t.Fatalf("%T: own packet %x: frame at %d, %v", h, wire, off, err)
			}
		}
	})
}

// udpPort returns a free UDP port on 127.0.0.1.
func udpPort(t testing.TB) int {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port
}

// The l2tpv3 transport over UDP puts on the wire exactly the C kernel's
// bytes (a plain UDP socket plays its peer), and takes the peer's
// packets after the checks.
func TestL2TPv3UDPWire(t *testing.T) {
	peer, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	pp := peer.LocalAddr().(*net.UDPAddr).Port
	ours := udpPort(t)
	spec := "transport=l2tpv3,udp=1,src=127.0.0.1,srcport=" + strconv.Itoa(ours) + ",dst=127.0.0.1,dstport=" + strconv.Itoa(pp) +
		",rx_session=0x20,tx_session=0x30,rx_cookie=0x0a0b,tx_cookie=0x0c0d,counter=1"
	f, banner, err := OpenVec(vecSpec(t, spec))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if want := "vector l2tpv3 transport over UDP/IPv4 from 127.0.0.1:" + strconv.Itoa(ours) + " to 127.0.0.1:" + strconv.Itoa(pp); !strings.HasPrefix(banner, want) {
		t.Errorf("banner %q, want it to start %q", banner, want)
	}
	frame := bytes.Repeat([]byte{0x5a}, 64)
	for i := 1; i <= 2; i++ {
		if err := f.WriteFrame(frame); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 2048)
		peer.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, _, err := peer.ReadFromUDP(buf)
		if err != nil {
			t.Fatal(err)
		}
		want := append(unhex(t, "00030000 00000030 00000c0d 0000000"+strconv.Itoa(i)), frame...)
		if !bytes.Equal(buf[:n], want) {
			t.Fatalf("datagram %d: %x\nwant %x", i, buf[:n], want)
		}
	}
	to := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: ours}
	// A wrong session, a wrong cookie, then a good one: only that comes in.
	for _, h := range []string{"00030000 00000021 00000a0b 00000001", "00030000 00000020 00000a0c 00000001", "00030000 00000020 00000a0b 00000007"} {
		if _, err := peer.WriteToUDP(append(unhex(t, h), frame...), to); err != nil {
			t.Fatal(err)
		}
	}
	buf := make([]byte, 2048)
	n, err := f.ReadFrame(buf)
	if err != nil || !bytes.Equal(buf[:n], frame) {
		t.Fatalf("read %x, %v", buf[:n], err)
	}
	if e := f.(*sockFrames).encapErrors.Load(); e != 2 {
		t.Errorf("%d packets dropped by the checks, want 2", e)
	}
}

// Two stacks over each transport that needs no privilege: ping and a TCP
// transfer.
func TestVectorTransportsStacks(t *testing.T) {
	t.Run("fd", func(t *testing.T) {
		fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_DGRAM, 0)
		if err != nil {
			t.Fatal(err)
		}
		var fs []Frames
		for _, fd := range fds {
			f, banner, err := OpenVec(vecSpec(t, "transport=fd,fd="+strconv.Itoa(fd)))
			if err != nil {
				t.Fatal(err)
			}
			if want := "vector fd transport on fd " + strconv.Itoa(fd) + " (datagram socket)"; banner != want {
				t.Errorf("banner %q, want %q", banner, want)
			}
			fs = append(fs, f)
		}
		stacksOver(t, fs[0], fs[1], "10.0.40")
	})
	t.Run("bess", func(t *testing.T) {
		dir := t.TempDir()
		a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
		testutil.SeqpacketRelay(t, a, b)
		fa, banner, err := OpenVec(vecSpec(t, "transport=bess,src="+filepath.Join(dir, "ours")+",dst="+a))
		if err != nil {
			t.Fatal(err)
		}
		if want := "vector bess transport to " + a + " from " + filepath.Join(dir, "ours"); banner != want {
			t.Errorf("banner %q, want %q", banner, want)
		}
		fb, _, err := OpenVec(vecSpec(t, "transport=bess,dst="+b))
		if err != nil {
			t.Fatal(err)
		}
		stacksOver(t, fa, fb, "10.0.41")
	})
	t.Run("l2tpv3-udp", func(t *testing.T) {
		pa, pb := udpPort(t), udpPort(t)
		spec := func(src, dst, rx, tx int) string {
			return "transport=l2tpv3,udp=1,src=127.0.0.1,dst=127.0.0.1,srcport=" + strconv.Itoa(src) + ",dstport=" + strconv.Itoa(dst) +
				",rx_session=" + strconv.Itoa(rx) + ",tx_session=" + strconv.Itoa(tx) + ",cookie64=1,rx_cookie=" + strconv.Itoa(rx*3) + ",tx_cookie=" + strconv.Itoa(tx*3) + ",counter=1"
		}
		fa, _, err := OpenVec(vecSpec(t, spec(pa, pb, 11, 12)))
		if err != nil {
			t.Fatal(err)
		}
		fb, _, err := OpenVec(vecSpec(t, spec(pb, pa, 12, 11)))
		if err != nil {
			t.Fatal(err)
		}
		stacksOver(t, fa, fb, "10.0.42")
	})
	// The IP-level ones need CAP_NET_RAW: in a network namespace of
	// their own, between 127.0.0.2 and 127.0.0.3.
	for _, tc := range []struct{ name, a, b string }{
		{"gre", "transport=gre,src=127.0.0.2,dst=127.0.0.3,rx_key=5,tx_key=6,sequence=1",
			"transport=gre,src=127.0.0.3,dst=127.0.0.2,rx_key=6,tx_key=5,sequence=1"},
		{"l2tpv3-ip", "transport=l2tpv3,src=127.0.0.2,dst=127.0.0.3,rx_session=5,tx_session=6,rx_cookie=1,tx_cookie=2",
			"transport=l2tpv3,src=127.0.0.3,dst=127.0.0.2,rx_session=6,tx_session=5,rx_cookie=2,tx_cookie=1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ns := testutil.NetNS(t)
			var fa, fb Frames
			err := testutil.InNetNS(t, ns, func() error {
				if out, err := execIn("ip", "link", "set", "lo", "up"); err != nil {
					return errors.New(out)
				}
				var err error
				if fa, _, err = OpenVec(vecSpec(t, tc.a)); err != nil {
					return err
				}
				fb, _, err = OpenVec(vecSpec(t, tc.b))
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
			stacksOver(t, fa, fb, "10.0.43")
		})
	}
}

// stacksOver makes a stack on each of the two transports, at net3.1 and
// net3.2, and has them ping each other and move 1 MiB each way.
func stacksOver(t *testing.T, fa, fb Frames, net3 string) {
	t.Helper()
	a, _ := machine(t, fa, nil, net3+".1/24")
	b, _ := machine(t, fb, nil, net3+".2/24")
	ping(t, a, net3+".2")
	ping(t, b, net3+".1")
	transfer(t, a, b, net3+".2", 1<<20)
	transfer(t, b, a, net3+".1", 1<<20)
}

func execIn(name string, args ...string) (string, error) {
	p, err := testutil.LookPath(name)
	if err != nil {
		return "", err
	}
	attr := &os.ProcAttr{Files: []*os.File{nil, nil, nil}}
	proc, err := os.StartProcess(p, append([]string{p}, args...), attr)
	if err != nil {
		return "", err
	}
	st, err := proc.Wait()
	if err != nil {
		return "", err
	}
	if !st.Success() {
		return name + " " + strings.Join(args, " ") + ": " + st.String(), errors.New(st.String())
	}
	return "", nil
}

// When the other end of a seqpacket socket goes away, ReadFrame does
// not spin on end-of-file: it waits for Close, which ends it.
func TestVectorFDEOF(t *testing.T) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET, 0)
	if err != nil {
		t.Fatal(err)
	}
	f, banner, err := OpenVec(vecSpec(t, "transport=fd,fd="+strconv.Itoa(fds[0])))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(banner, "(seqpacket socket)") {
		t.Errorf("banner %q", banner)
	}
	// The descriptor is the device's now: a second device cannot take it.
	if _, _, err := OpenVec(vecSpec(t, "transport=fd,fd="+strconv.Itoa(fds[0]))); err == nil || !strings.Contains(err.Error(), "not one it inherited") {
		t.Errorf("a second device on fd %d: %v", fds[0], err)
	}
	if _, err := unix.Write(fds[1], []byte("0123456789abcdef")); err != nil {
		t.Fatal(err)
	}
	unix.Close(fds[1])
	buf := make([]byte, 100)
	if n, err := f.ReadFrame(buf); err != nil || string(buf[:n]) != "0123456789abcdef" {
		t.Fatalf("read %q, %v", buf[:n], err)
	}
	if err := f.WriteFrame([]byte("x")); err == nil {
		t.Errorf("a write to a closed peer succeeded")
	}
	done := make(chan error, 1)
	go func() {
		_, err := f.ReadFrame(buf)
		done <- err
	}()
	select {
	case err := <-done:
		t.Fatalf("ReadFrame returned before Close: %v", err)
	case <-time.After(200 * time.Millisecond):
	}
	f.Close()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("ReadFrame after Close: no error")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not end ReadFrame")
	}
}
