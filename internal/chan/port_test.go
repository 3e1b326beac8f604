package chans

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// freePort returns a TCP port that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// client is a telnet client of the test.
type client struct {
	t    *testing.T
	conn net.Conn
}

func dial(t *testing.T, port int) *client {
	t.Helper()
	conn, err := net.Dial("tcp4", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &client{t, conn}
}

// read reads exactly n bytes.
func (cl *client) read(n int) []byte {
	cl.t.Helper()
	b := make([]byte, n)
	cl.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if k, err := io.ReadFull(cl.conn, b); err != nil {
		cl.t.Fatalf("client read %d of %d bytes (%s): %v", k, n, short(b[:k]), err)
	}
	return b
}

// expect reads len(want) bytes and compares.
func (cl *client) expect(want, what string) {
	cl.t.Helper()
	if got := cl.read(len(want)); string(got) != want {
		cl.t.Errorf("%s: client read %s, want %s", what, short(got), short([]byte(want)))
	}
}

// quiet fails if anything arrives within d.
func (cl *client) quiet(d time.Duration, what string) {
	cl.t.Helper()
	cl.conn.SetReadDeadline(time.Now().Add(d))
	b := make([]byte, 100)
	if n, err := cl.conn.Read(b); n > 0 || !errors.Is(err, syscall.ETIMEDOUT) && !isTimeout(err) {
		cl.t.Errorf("%s: client read %s, %v; want nothing", what, short(b[:n]), err)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func (cl *client) send(s string) {
	cl.t.Helper()
	if _, err := cl.conn.Write([]byte(s)); err != nil {
		cl.t.Fatal(err)
	}
}

// guestRead reads exactly len(want) bytes on the guest's side and compares.
func guestExpect(t *testing.T, c *Console, want, what string) {
	t.Helper()
	if got := readN(t, slaveFd(c), len(want)); string(got) != want {
		t.Errorf("%s: guest read %s, want %q", what, short(got), want)
	}
}

func TestPort(t *testing.T) {
	needPty(t)
	port := freePort(t)
	var logs logRecorder
	spec := fmt.Sprintf("port:%d", port)
	c := openChans(t, spec, spec, "con1", logs.logf)
	if got, want := logs.get(), []string{fmt.Sprintf("Virtual console 1 listening on port %d", port)}; strings.Join(got, "\n") != want[0] {
		t.Errorf("log %q, want %q", got, want)
	}
	if c.UserPath() != "" {
		t.Errorf("UserPath %q for a port channel", c.UserPath())
	}
	// Written before anyone connects: queued.
	if _, err := c.Slave().Write([]byte("early\n")); err != nil {
		t.Fatal(err)
	}

	cl := dial(t, port)
	cl.expect(telnetHello, "negotiation first")
	cl.expect("early\r\n", "queued output")

	// The client's answers to our requests need no reply; refused
	// options are refused.
	cl.send("\xff\xfd\x01\xff\xfd\x03\xff\xfb\x03") // DO ECHO, DO SGA, WILL SGA
	cl.send("\xff\xfb\x18")                         // WILL TERMINAL-TYPE
	cl.expect("\xff\xfe\x18", "DONT TERMINAL-TYPE")
	cl.send("\xff\xfd\x22") // DO LINEMODE
	cl.expect("\xff\xfc\x22", "WONT LINEMODE")

	// Canonical guest: CR LF and CR NUL are CR, which the guest's
	// ICRNL makes a newline; echo comes back.
	cl.send("ls\r\n")
	guestExpect(t, c, "ls\n", "CR LF")
	cl.expect("ls\r\n", "echo")
	cl.send("a\r\x00b\r")
	cl.send("\n")
	guestExpect(t, c, "a\n", "CR NUL")
	guestExpect(t, c, "b\n", "CR, LF in the next packet")
	cl.expect("a\r\nb\r\n", "echo")

	// Raw guest: IAC IAC is 0xFF; 0xFF in output is doubled;
	// subnegotiations and commands are not data.
	setRaw(t, slaveFd(c))
	cl.send("x\xff\xffy\xff\xf1z\xff\xfa\x18\x00VT100\xff\xf0!")
	guestExpect(t, c, "x\xffyz!", "IAC sequences")
	if _, err := c.Slave().Write([]byte("\xff\x01\xff")); err != nil {
		t.Fatal(err)
	}
	cl.expect("\xff\xff\x01\xff\xff", "IAC escaping")

	// NAWS sets the guest's window size.
	cl.send("\xff\xfb\x1f\xff\xfa\x1f\x00\x64\x00\x28\xff\xf0.")
	guestExpect(t, c, ".", "after NAWS")
	ws, err := unix.IoctlGetWinsize(slaveFd(c), unix.TIOCGWINSZ)
	if err != nil || ws.Row != 40 || ws.Col != 100 {
		t.Errorf("guest window %+v, %v; want 40x100", ws, err)
	}

	// A second client waits, told so, until the first leaves.
	cl2 := dial(t, port)
	cl2.expect(noWaiterMsg, "second client")
	cl2.quiet(100*time.Millisecond, "second client while the first is on")
	waitFor(t, "the log message", func() bool {
		l := logs.get()
		return l[len(l)-1] == "No one waiting for port"
	})

	cl.conn.Close()
	cl2.expect(telnetHello, "second client after the first left")
	cl2.send("2")
	guestExpect(t, c, "2", "second client's input")
	if _, err := c.Slave().Write([]byte("to two")); err != nil {
		t.Fatal(err)
	}
	cl2.expect("to two", "output to the second client")

	// Output while nobody is connected is kept for the next client,
	// and the guest's tty stays usable.
	cl2.conn.Close()
	waitAttached(t, c, false)
	if _, err := c.Slave().Write([]byte("while away")); err != nil {
		t.Fatal(err)
	}
	cl3 := dial(t, port)
	cl3.expect(telnetHello+"while away", "reconnect")
	cl3.send("3\r\x00")
	guestExpect(t, c, "3\r", "raw guest gets CR")

	// Close: the client is disconnected and the port is free again.
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	cl3.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if b, err := io.ReadAll(cl3.conn); err != nil || len(b) != 0 {
		t.Errorf("client after Close: %q, %v; want EOF", b, err)
	}
	ln, err := net.Listen("tcp4", fmt.Sprintf(":%d", port))
	if err != nil {
		t.Errorf("port still in use after Close: %v", err)
	} else {
		ln.Close()
	}
}

// TestPortDetached: with no client the guest never blocks; the newest
// 64 KiB wait for the first client.
func TestPortDetached(t *testing.T) {
	needPty(t)
	port := freePort(t)
	c := openChans(t, "null", fmt.Sprintf("port:%d", port), "ssl2", t.Logf)
	setRaw(t, slaveFd(c))
	data := bytes.ReplaceAll(pattern(1<<20), []byte{0xff}, []byte{0xfe})
	select {
	case err := <-guestWrite(c, data):
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("guest blocked writing 1 MiB with no client")
	}
	waitQueued(t, c, len(data))
	cl := dial(t, port)
	cl.expect(telnetHello, "negotiation")
	if got := cl.read(outboxSize); !bytes.Equal(got, data[len(data)-outboxSize:]) {
		t.Errorf("client got %s, want the last %d bytes written", short(got), outboxSize)
	}
	cl.quiet(100*time.Millisecond, "after the queued output")
	// Output only: what the client types is discarded.
	cl.send("typed\r\n")
	expectNothing(t, slaveFd(c), 200*time.Millisecond, "guest input from an output-only port")
}

func TestPortInUse(t *testing.T) {
	needPty(t)
	ln, err := net.Listen("tcp4", ":0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	spec := fmt.Sprintf("port:%d", port)
	for _, pair := range [][2]string{{spec, spec}, {"null", spec}} {
		c, err := New(mustChan(t, pair[0]), mustChan(t, pair[1]), Options{Name: "con3"})
		if c != nil || err == nil || !strings.HasPrefix(err.Error(), "con3: ") ||
			!strings.Contains(err.Error(), spec+":") || !errors.Is(err, syscall.EADDRINUSE) {
			t.Errorf("New(%s,%s) = %v, %v; want an error naming the port, wrapping EADDRINUSE", pair[0], pair[1], c, err)
			if c != nil {
				c.Close()
			}
		}
	}
}

// TestPortsShared: lines created with one *Ports share a port, one
// client each, like ssl=port:N in the C kernel.
func TestPortsShared(t *testing.T) {
	needPty(t)
	port := freePort(t)
	spec := fmt.Sprintf("port:%d", port)
	var ps Ports
	var cs []*Console
	for i := range 2 {
		c, err := New(mustChan(t, spec), mustChan(t, spec), Options{Name: fmt.Sprintf("ssl%d", i), Ports: &ps})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		setRaw(t, slaveFd(c))
		cs = append(cs, c)
	}
	// Without the shared set, the port is taken.
	if c, err := New(mustChan(t, spec), mustChan(t, spec), Options{Name: "ssl2"}); err == nil {
		c.Close()
		t.Error("a third line without Ports could listen on the same port")
	}
	var cls []*client
	for range 2 {
		cl := dial(t, port)
		cl.expect(telnetHello, "shared port")
		cls = append(cls, cl)
	}
	// Each client has its own line.
	for i, cl := range cls {
		cl.send(fmt.Sprint(i))
	}
	seen := map[string]bool{}
	for _, c := range cs {
		b := readN(t, slaveFd(c), 1)
		seen[string(b)] = true
	}
	if !seen["0"] || !seen["1"] {
		t.Errorf("lines read %v, want one client each", seen)
	}
	cl3 := dial(t, port)
	cl3.expect(noWaiterMsg, "third client")
	// Closing one line leaves the port open for the other.
	cs[0].Close()
	cs[1].Close()
	if _, err := net.Dial("tcp4", fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
		t.Error("port still open after both lines closed")
	}
}
