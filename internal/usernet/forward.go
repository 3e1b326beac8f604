package usernet

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
	"gvisor.dev/gvisor/pkg/waiter"
)

// dialTimeout bounds a host connect made for a guest (the guest's own
// SYN retries go on meanwhile; the forwarder ignores them).
const dialTimeout = 20 * time.Second

// UDP flows end after this long without a datagram either way (DNS
// sooner: one question, one answer).
const (
	udpIdle = 2 * time.Minute
	dnsIdle = 15 * time.Second
)

// addrOf converts a netstack address.
func addrOf(a tcpip.Address) netip.Addr {
	ip, _ := netip.AddrFromSlice(a.AsSlice())
	return ip
}

// start runs fn as one of the NAT's relays, unless the NAT is closing.
func (n *Net) start(fn func()) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.ctx.Err() != nil {
		return false
	}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		fn()
	}()
	return true
}

// forwardTCP serves a connection the guest opens (a SYN the router took
// in): the engine connects to the host side first, then completes the
// guest's handshake and relays. A host side that refuses or cannot be
// reached resets the guest's attempt, so the guest sees ECONNREFUSED.
func (n *Net) forwardTCP(r *tcp.ForwarderRequest) {
	id := r.ID()
	dst, ok := n.hostAddr(addrOf(id.LocalAddress), id.LocalPort)
	if !ok {
		r.Complete(true)
		return
	}
	d := net.Dialer{Timeout: dialTimeout}
	hc, err := d.DialContext(n.ctx, "tcp", dst.String())
	if err != nil {
		r.Complete(true)
		return
	}
	var wq waiter.Queue
	ep, terr := r.CreateEndpoint(&wq)
	if terr != nil {
		r.Complete(true)
		hc.Close()
		return
	}
	r.Complete(false)
	gc := gonet.NewTCPConn(&wq, ep)
	if !n.start(func() { n.relay(gc, hc) }) {
		gc.Close()
		hc.Close()
	}
}

// relay copies both ways between a and b, passing each side's end of
// stream on as a half close, and closes both when both ways are done or
// the NAT closes.
func (n *Net) relay(a, b net.Conn) {
	stop := make(chan struct{})
	go func() {
		select {
		case <-n.ctx.Done():
			a.Close()
			b.Close()
		case <-stop:
		}
	}()
	var wg sync.WaitGroup
	wg.Add(2)
	cp := func(dst, src net.Conn) {
		defer wg.Done()
		io.Copy(dst, src)
		if cw, ok := dst.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
		} else {
			dst.Close()
		}
	}
	go cp(a, b)
	go cp(b, a)
	wg.Wait()
	close(stop)
	a.Close()
	b.Close()
}

// forwardUDP serves the first datagram of a guest's UDP flow: the
// engine makes an endpoint for the flow (which takes this datagram and
// the next ones) and a host socket connected to its destination, and
// relays until the flow idles. It runs on the stack's receive path, so
// it only starts the relay.
func (n *Net) forwardUDP(r *udp.ForwarderRequest) {
	id := r.ID()
	dst, ok := n.hostAddr(addrOf(id.LocalAddress), id.LocalPort)
	if !ok {
		return
	}
	var wq waiter.Queue
	ep, terr := r.CreateEndpoint(&wq)
	if terr != nil {
		return
	}
	gc := gonet.NewUDPConn(&wq, ep)
	idle := udpIdle
	if id.LocalPort == 53 {
		idle = dnsIdle
	}
	if !n.start(func() {
		hc, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(dst))
		if err != nil {
			gc.Close()
			return
		}
		n.relayPackets(gc, hc, idle)
	}) {
		gc.Close()
	}
}

// relayPackets copies datagrams both ways between two connected
// sockets until neither has carried one for idle, or the NAT closes.
func (n *Net) relayPackets(a, b net.Conn, idle time.Duration) {
	var last atomic.Int64
	last.Store(time.Now().UnixNano())
	var wg sync.WaitGroup
	wg.Add(2)
	cp := func(dst, src net.Conn) {
		defer wg.Done()
		defer a.Close()
		defer b.Close()
		buf := make([]byte, 65536)
		for n.ctx.Err() == nil {
			src.SetReadDeadline(time.Now().Add(idle))
			k, err := src.Read(buf)
			if err != nil {
				if errors.Is(err, os.ErrDeadlineExceeded) && time.Since(time.Unix(0, last.Load())) < idle {
					continue // the other way is busy
				}
				if errors.Is(err, syscall.ECONNREFUSED) {
					continue // an ICMP port unreachable: the flow may go on
				}
				return
			}
			last.Store(time.Now().UnixNano())
			dst.Write(buf[:k]) // lost when it cannot go, as on a wire
		}
	}
	go cp(a, b)
	go cp(b, a)
	wg.Wait()
}
