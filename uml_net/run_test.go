package main

import (
	"bytes"
	"io"
	"os"
	"strings"
	"testing"

	"github.com/umltools/umltools/internal/cli"
	"golang.org/x/sys/unix"
)

// socketPair returns both ends of an AF_UNIX socketpair of type typ as
// files, closed at test end.
func socketPair(t *testing.T, typ int) (*os.File, *os.File) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, typ|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	a, b := os.NewFile(uintptr(fds[0]), "a"), os.NewFile(uintptr(fds[1]), "b")
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

func testEnv() *env {
	return &env{who: caller{uid: 65534, gid: 65534}, stderr: io.Discard, log: func(string, ...any) {}}
}

// TestRunRefusals covers invocations that must be refused before any
// privileged step (so they are safe to run in-process): the exit code,
// where the message goes and, for the blob replies, the wire format.
func TestRunRefusals(t *testing.T) {
	cases := []struct {
		name   string
		args   []string
		sock   int    // 0: stdout is a buffer; else a socketpair of this type
		stdout string // expected stdout text (buffer case)
		stderr string // expected substring of stderr
		blob   string // expected substring of the reply blob (stream socket)
		dgram  string // expected substring of the reply datagram
	}{
		{name: "no args", args: []string{"uml_net"}, stderr: "bad argument list"},
		{name: "one arg", args: []string{"uml_net", "4"}, stderr: "don't bother"},
		{name: "version 5", args: []string{"uml_net", "5", "tuntap"}, stderr: "Version mismatch - requested version 5, uml_net supports up to version 4\n"},
		{name: "huge version", args: []string{"uml_net", "99999999999999999999", "tuntap"}, stderr: "bad version"},
		{name: "version junk", args: []string{"uml_net", "4x", "tuntap"}, stderr: "bad version '4x'"},
		{name: "version hex", args: []string{"uml_net", "0x4", "tuntap"}, stderr: "bad version"},
		{name: "unknown transport", args: []string{"uml_net", "4", "pcap"}, stdout: "Unknown transport : 'pcap'\n"},
		{name: "non-numeric version", args: []string{"uml_net", "tuntap", "up"}, stdout: "No version #0 handler for 'tuntap'\n"},
		{name: "old version", args: []string{"uml_net", "3", "tuntap", "up"}, stdout: "No version #3 handler for 'tuntap'\n"},
		{name: "bad tuntap op", args: []string{"uml_net", "4", "tuntap", "down"}, stderr: "Bad tuntap op : 'down'\n"},
		{name: "tuntap no op", args: []string{"uml_net", "4", "tuntap"}, sock: unix.SOCK_STREAM, blob: "uml_net : too few arguments to tuntap_v4\n"},
		{name: "tuntap add few", args: []string{"uml_net", "4", "tuntap", "add", "tap0"}, sock: unix.SOCK_STREAM, blob: "too few arguments to tuntap change_addr"},
		{name: "add few", args: []string{"uml_net", "4", "add", "tap0", "10.0.0.2"}, sock: unix.SOCK_STREAM, blob: "too few arguments to add"},
		{name: "add many", args: []string{"uml_net", "4", "add", "tap0", "10.0.0.2", "255.0.0.0", "x"}, sock: unix.SOCK_STREAM, blob: "too many arguments"},
		{name: "add dotdot", args: []string{"uml_net", "4", "add", "../x", "10.0.0.2", "255.0.0.0"}, sock: unix.SOCK_STREAM, blob: "only alphanumeric"},
		{name: "add semicolon", args: []string{"uml_net", "4", "add", "a;b", "10.0.0.2", "255.0.0.0"}, sock: unix.SOCK_STREAM, blob: "only alphanumeric"},
		{name: "add long", args: []string{"uml_net", "4", "add", "tap0123456789abc", "10.0.0.2", "255.0.0.0"}, sock: unix.SOCK_STREAM, blob: "bad device name"},
		{name: "add empty dev", args: []string{"uml_net", "4", "del", "", "10.0.0.2", "255.0.0.0"}, sock: unix.SOCK_STREAM, blob: "bad device name"},
		{name: "add bad ip", args: []string{"uml_net", "4", "add", "tap0", "10.0.0", "255.0.0.0"}, sock: unix.SOCK_STREAM, blob: "bad address '10.0.0'"},
		{name: "add ipv6", args: []string{"uml_net", "4", "add", "tap0", "::1", "255.0.0.0"}, sock: unix.SOCK_STREAM, blob: "bad address"},
		{name: "add leading zero", args: []string{"uml_net", "4", "add", "tap0", "010.0.0.2", "255.0.0.0"}, sock: unix.SOCK_STREAM, blob: "bad address"},
		{name: "add multicast", args: []string{"uml_net", "4", "add", "tap0", "224.0.0.1", "255.0.0.0"}, sock: unix.SOCK_STREAM, blob: "not a unicast host address"},
		{name: "add loopback", args: []string{"uml_net", "4", "add", "tap0", "127.0.0.2", "255.0.0.0"}, sock: unix.SOCK_STREAM, blob: "not a unicast host address"},
		{name: "add bad mask", args: []string{"uml_net", "4", "add", "tap0", "10.0.0.2", "255.0.255.0"}, sock: unix.SOCK_STREAM, blob: "not contiguous"},
		{name: "add no stdout socket", args: []string{"uml_net", "4", "add", "tap0", "10.0.0.2", "255.0.0.0"}, stderr: "not a Unix socket or a pipe"},
		{name: "up many", args: []string{"uml_net", "4", "tuntap", "up", "10.0.0.1", "x"}, sock: unix.SOCK_DGRAM, dgram: "too many arguments"},
		{name: "up bad gate", args: []string{"uml_net", "4", "tuntap", "up", "10.0.0.256"}, sock: unix.SOCK_DGRAM, dgram: "bad gate address"},
		{name: "up broadcast gate", args: []string{"uml_net", "4", "tuntap", "up", "255.255.255.255"}, sock: unix.SOCK_DGRAM, dgram: "not a unicast"},
		{name: "up stream socket", args: []string{"uml_net", "4", "tuntap", "up", "10.0.0.1"}, sock: unix.SOCK_STREAM, stderr: "not a Unix datagram socket"},
		{name: "ethertap few", args: []string{"uml_net", "4", "ethertap", "tap0"}, sock: unix.SOCK_STREAM, blob: "Too few arguments to ethertap_v4"},
		{name: "ethertap bad dev", args: []string{"uml_net", "4", "ethertap", "eth0", "5"}, sock: unix.SOCK_STREAM, blob: "failed to get unit number from 'eth0'"},
		{name: "ethertap bad fd", args: []string{"uml_net", "4", "ethertap", "tap0", "x5"}, sock: unix.SOCK_STREAM, blob: "bad file descriptor"},
		{name: "ethertap stdio fd", args: []string{"uml_net", "4", "ethertap", "tap0", "1"}, sock: unix.SOCK_STREAM, blob: "bad file descriptor"},
		{name: "ethertap closed fd", args: []string{"uml_net", "4", "ethertap", "tap0", "987"}, sock: unix.SOCK_STREAM, blob: "not a Unix datagram socket"},
		{name: "slip few", args: []string{"uml_net", "4", "slip", "up"}, sock: unix.SOCK_STREAM, blob: "too few arguments to slip_v4"},
		{name: "slip bad op", args: []string{"uml_net", "4", "slip", "sideways", "x"}, stdout: "slip - Unknown op 'sideways'\n"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var stdout io.Writer
			var buf bytes.Buffer
			var peer *os.File
			stdout = &buf
			if c.sock != 0 {
				var mine *os.File
				mine, peer = socketPair(t, c.sock)
				stdout = mine
			}
			var stderr bytes.Buffer
			e := testEnv()
			e.stderr = &stderr
			err := e.run(c.args, strings.NewReader(""), stdout, &stderr)
			if got := cli.Code(err); got != 1 {
				t.Fatalf("exit %d, want 1 (err %v, stderr %q)", got, err, stderr.String())
			}
			if c.stdout != "" && buf.String() != c.stdout {
				t.Errorf("stdout %q, want %q", buf.String(), c.stdout)
			}
			if c.stderr != "" && !strings.Contains(stderr.String(), c.stderr) {
				t.Errorf("stderr %q, want it to contain %q", stderr.String(), c.stderr)
			}
			if c.blob != "" {
				unix.SetNonblock(int(peer.Fd()), true)
				b := make([]byte, 4096)
				n, _ := unix.Read(int(peer.Fd()), b)
				if n < 0 {
					n = 0
				}
				msg := b[:n]
				if strings.HasPrefix(c.args[2], "ethertap") {
					if len(msg) == 0 || msg[0] != 0 {
						t.Fatalf("ethertap reply % x: want status byte 0 first", msg)
					}
					msg = msg[1:]
				}
				text, rest, err := parseBlob(msg)
				if err != nil || len(rest) != 0 {
					t.Fatalf("reply % x: %v (rest %d bytes)", msg, err, len(rest))
				}
				if !strings.Contains(text, c.blob) {
					t.Errorf("blob %q, want it to contain %q", text, c.blob)
				}
			}
			if c.dgram != "" {
				b := make([]byte, 4096)
				oob := make([]byte, 64)
				n, oobn, _, _, err := unix.Recvmsg(int(peer.Fd()), b, oob, unix.MSG_DONTWAIT)
				if err != nil {
					t.Fatalf("no datagram: %v", err)
				}
				if oobn != 0 {
					t.Errorf("failure datagram carries a descriptor")
				}
				if n == 0 || b[n-1] != 0 || !strings.Contains(string(b[:n]), c.dgram) {
					t.Errorf("datagram %q, want NUL-terminated text containing %q", b[:n], c.dgram)
				}
			}
		})
	}
	if len(cases) < 30 {
		t.Fatalf("only %d cases", len(cases))
	}
}

func TestHelpVersion(t *testing.T) {
	for _, a := range []string{"--help", "-h", "--version"} {
		var out, errb bytes.Buffer
		if err := testEnv().run([]string{"uml_net", a}, nil, &out, &errb); err != nil {
			t.Fatalf("%s: %v", a, err)
		}
		if out.Len() == 0 || errb.Len() != 0 {
			t.Errorf("%s: stdout %q stderr %q", a, out.String(), errb.String())
		}
	}
}

func TestBlobFormat(t *testing.T) {
	var o output
	if got := o.blob(); !bytes.Equal(got, []byte{0, 0, 0, 0}) {
		t.Errorf("empty blob % x", got)
	}
	o.step("route add -host %s dev %s", "10.9.9.2", "tap0")
	b := o.blob()
	want := "* route add -host 10.9.9.2 dev tap0\n\x00"
	if int(b[0]) != len(want) || string(b[4:]) != want {
		t.Errorf("blob % x", b)
	}
	text, rest, err := parseBlob(b)
	if err != nil || len(rest) != 0 || text != want[:len(want)-1] {
		t.Errorf("parseBlob: %q %v %v", text, rest, err)
	}
}

func TestValidators(t *testing.T) {
	for _, s := range []string{"tap0", "sl1", "A9"} {
		if err := validDev(s); err != nil {
			t.Errorf("validDev(%q): %v", s, err)
		}
	}
	for _, s := range []string{"", "tap-0", "tap.0", "tap 0", "tap/0", "tap0\n", "0123456789abcdef", "täp"} {
		if validDev(s) == nil {
			t.Errorf("validDev(%q) accepted", s)
		}
	}
	masks := map[string]int{"255.255.255.255": 32, "255.255.255.0": 24, "0.0.0.0": 0, "255.128.0.0": 9}
	for s, want := range masks {
		if got, err := parseNetmask(s); err != nil || got != want {
			t.Errorf("parseNetmask(%q) = %d, %v", s, got, err)
		}
	}
	for _, s := range []string{"255.0.255.0", "0.255.255.255", "1.2.3", ""} {
		if _, err := parseNetmask(s); err == nil {
			t.Errorf("parseNetmask(%q) accepted", s)
		}
	}
	for _, s := range []string{"0", "1", "2", "-3", "+3", "3.0", "1048576", ""} {
		if _, err := parseFD(s); err == nil {
			t.Errorf("parseFD(%q) accepted", s)
		}
	}
	if fd, err := parseFD("7"); err != nil || fd != 7 {
		t.Errorf("parseFD(7) = %d, %v", fd, err)
	}
}

func TestEthertapChange(t *testing.T) {
	c := ethertapChange{Del: true, Addr: [4]byte{10, 0, 0, 2}, Netmask: [4]byte{255, 255, 255, 0}}
	got, err := parseEthertapChange(c.encode())
	if err != nil || got != c {
		t.Fatalf("round trip: %+v %v", got, err)
	}
	bad := c.encode()
	bad[0] = 7
	if _, err := parseEthertapChange(bad); err == nil {
		t.Error("operation 7 accepted")
	}
	if _, err := parseEthertapChange(bad[:11]); err == nil {
		t.Error("11-byte message accepted")
	}
}

// TestRelayEthertap drives the ethertap relay with socketpairs standing in
// for /dev/tapN, the data socket and the control socket.
func TestRelayEthertap(t *testing.T) {
	tapHost, tapDev := socketPair(t, unix.SOCK_DGRAM)
	dataKern, dataHelper := socketPair(t, unix.SOCK_DGRAM)
	ctlKern, ctlHelper := socketPair(t, unix.SOCK_STREAM)
	done := make(chan error, 1)
	var seen []ethertapChange
	go func() {
		done <- relayEthertap(int(tapDev.Fd()), int(dataHelper.Fd()), ctlHelper, func(c ethertapChange) []byte {
			seen = append(seen, c)
			var o output
			o.line("ok")
			return o.blob()
		})
	}()
	frame := []byte("\x00\x00ethernet frame from the host")
	tapHost.Write(frame)
	got := make([]byte, 100)
	n, _ := dataKern.Read(got)
	if !bytes.Equal(got[:n], frame) {
		t.Fatalf("kernel got %q", got[:n])
	}
	dataKern.Write([]byte("frame from the guest"))
	n, _ = tapHost.Read(got)
	if string(got[:n]) != "frame from the guest" {
		t.Fatalf("tap got %q", got[:n])
	}
	c := ethertapChange{Addr: [4]byte{10, 0, 0, 2}, Netmask: [4]byte{255, 255, 255, 0}}
	ctlKern.Write(c.encode())
	n, _ = ctlKern.Read(got)
	if text, _, err := parseBlob(got[:n]); err != nil || text != "ok\n" {
		t.Fatalf("control reply %q %v", text, err)
	}
	ctlKern.Write([]byte{9, 0, 0, 0, 1, 2, 3, 4, 255, 0, 0, 0})
	n, _ = ctlKern.Read(got)
	if text, _, err := parseBlob(got[:n]); err != nil || !strings.Contains(text, "bad operation 9") {
		t.Fatalf("bad control reply %q %v", text, err)
	}
	ctlKern.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if len(seen) != 1 || seen[0] != c {
		t.Fatalf("handled %+v", seen)
	}
}

func FuzzParseBlob(f *testing.F) {
	var o output
	o.line("* route add -host 10.9.9.2 dev tap0")
	f.Add(o.blob())
	f.Add([]byte{0, 0, 0, 0})
	f.Add([]byte{255, 255, 255, 255, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		text, rest, err := parseBlob(b)
		if err != nil {
			return
		}
		// Re-encoding what was decoded gives the bytes consumed (an empty
		// text has two encodings: length 0, or length 1 and a NUL).
		var o output
		o.b.WriteString(text)
		consumed := b[:len(b)-len(rest)]
		if text != "" && strings.IndexByte(text, 0) < 0 && !bytes.Equal(o.blob(), consumed) {
			t.Fatalf("re-encoded % x, consumed % x", o.blob(), consumed)
		}
	})
}

func FuzzEthertapChange(f *testing.F) {
	f.Add(ethertapChange{Addr: [4]byte{10, 0, 0, 2}, Netmask: [4]byte{255, 0, 0, 0}}.encode())
	f.Add([]byte{1, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := parseEthertapChange(b)
		if err != nil {
			return
		}
		if !bytes.Equal(c.encode(), b) {
			t.Fatalf("round trip % x -> % x", b, c.encode())
		}
	})
}
