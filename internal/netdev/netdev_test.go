package netdev

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"io"
	"net"
	"net/netip"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"

	"github.com/umltools/umltools/internal/cmdline"
)

// wire is one end of an in-memory Ethernet cable.
type wire struct {
	in     chan []byte
	out    chan []byte
	closed chan struct{}
	once   sync.Once
}

// cable returns the two ends of a cable.
func cable() (*wire, *wire) {
	a, b := make(chan []byte, 64), make(chan []byte, 64)
	return &wire{in: a, out: b, closed: make(chan struct{})}, &wire{in: b, out: a, closed: make(chan struct{})}
}

func (w *wire) ReadFrame(b []byte) (int, error) {
	select {
	case f := <-w.in:
		return copy(b, f), nil
	case <-w.closed:
		return 0, net.ErrClosed
	}
}

func (w *wire) WriteFrame(b []byte) error {
	select {
	case w.out <- append([]byte(nil), b...):
		return nil
	case <-w.closed:
		return net.ErrClosed
	}
}

func (w *wire) Close() error { w.once.Do(func() { close(w.closed) }); return nil }

// machine is a stack with eth0 (address mac, random when nil) at addr.
func machine(t *testing.T, f Frames, mac net.HardwareAddr, addr string) (*Stack, *NIC) {
	t.Helper()
	st, err := New()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	n, err := st.Add("eth0", mac, f)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.AddAddress(netip.MustParsePrefix(addr)); err != nil {
		t.Fatal(err)
	}
	if err := st.SetUp("eth0", true); err != nil {
		t.Fatal(err)
	}
	return st, n
}

func full(addr string, port uint16) tcpip.FullAddress {
	return tcpip.FullAddress{Addr: tcpip.AddrFromSlice(netip.MustParseAddr(addr).AsSlice()), Port: port}
}

// transfer sends size random bytes over TCP from a to b's listener at
// baddr:port and checks they arrive whole.
func transfer(t *testing.T, a, b *Stack, baddr string, size int) {
	t.Helper()
	l, err := gonet.ListenTCP(b.Netstack(), full(baddr, 5001), ipv4.ProtocolNumber)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	data := make([]byte, size)
	rand.Read(data)
	got := make(chan [32]byte, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			got <- [32]byte{}
			return
		}
		defer c.Close()
		h := sha256.New()
		io.Copy(h, c)
		var sum [32]byte
		copy(sum[:], h.Sum(nil))
		got <- sum
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := gonet.DialContextTCP(ctx, a.Netstack(), full(baddr, 5001), ipv4.ProtocolNumber)
	if err != nil {
		t.Fatalf("connect to %s: %v", baddr, err)
	}
	if _, err := c.Write(data); err != nil {
		t.Fatal(err)
	}
	c.Close()
	select {
	case sum := <-got:
		if sum != sha256.Sum256(data) {
			t.Fatalf("%d bytes over TCP: checksum differs", size)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("transfer did not finish")
	}
}

// ping sends an ICMP echo request from st to addr and waits for the reply.
func ping(t *testing.T, st *Stack, addr string) {
	t.Helper()
	if err := Ping(st, netip.MustParseAddr(addr), 5*time.Second); err != nil {
		t.Fatalf("ping %s: %v", addr, err)
	}
}

func TestCable(t *testing.T) {
	wa, wb := cable()
	a, _ := machine(t, wa, nil, "10.0.0.1/24")
	b, _ := machine(t, wb, nil, "10.0.0.2/24")
	ping(t, a, "10.0.0.2")
	ping(t, b, "10.0.0.1")
	transfer(t, a, b, "10.0.0.2", 1<<20)
	transfer(t, b, a, "10.0.0.1", 1<<20)
}

func TestLoopback(t *testing.T) {
	st, err := New()
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ping(t, st, "127.0.0.1")
	transfer(t, st, st, "127.0.0.1", 256<<10)
}

// Two stacks on our switch, through the daemon transport as the
// command line gives it.
func TestDaemonTransport(t *testing.T) {
	ctl := filepath.Join(t.TempDir(), "ctl")
	startOurSwitch(t, ctl)
	var stacks []*Stack
	for i, addr := range []string{"10.0.1.1/24", "10.0.1.2/24"} {
		e, _, err := cmdline.ParseEth(i, "daemon,,unix,"+ctl)
		if err != nil {
			t.Fatal(err)
		}
		f, banner, err := Open(e, nil)
		if err != nil {
			t.Fatal(err)
		}
		if want := "daemon backend (uml_switch version 3) - unix:" + ctl; banner != want {
			t.Errorf("banner %q, want %q", banner, want)
		}
		st, _ := machine(t, f, nil, addr)
		stacks = append(stacks, st)
	}
	ping(t, stacks[0], "10.0.1.2")
	transfer(t, stacks[0], stacks[1], "10.0.1.2", 4<<20)
}

func TestOpenErrors(t *testing.T) {
	for _, tc := range []struct{ spec, want string }{
		{"daemon,,unix," + filepath.Join(t.TempDir(), "none"), "daemon_open : control connect failed, errno = 2"},
		{"slirp,,/usr/bin/slirp,-P", "slirp_open : running a slirp command (/usr/bin/slirp -P) is not implemented"},
		{"slirp,,hostfwd=tcp:1-:80", "slirp_open : hostfwd \"tcp:1-:80\": host side: no port"},
		{"slirp,,net=10.0.0.0/30", "slirp_open : net=10.0.0.0/30: want an IPv4 network"},
		{"slirp,,resolver=x", "slirp_open : resolver=x: want an address"},
		{"vde," + filepath.Join(t.TempDir(), "none"), "vde_user_init: vde_open failed, errno = 2"},
		{"pcap,lo", "the pcap transport is not implemented"},
	} {
		e, _, err := cmdline.ParseEth(0, tc.spec)
		if err != nil {
			t.Fatal(err)
		}
		_, _, err = Open(e, nil)
		if err == nil || !bytes.Contains([]byte(err.Error()), []byte(tc.want)) {
			t.Errorf("%s: error %v, want %q", tc.spec, err, tc.want)
		}
	}
}
