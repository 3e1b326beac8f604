package netdev

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/transport/icmp"
	"gvisor.dev/gvisor/pkg/waiter"
)

// Ping sends one ICMP echo request from the stack to dst through an ICMP
// datagram endpoint (what a guest's ping socket is) and waits up to
// timeout for the reply.
func Ping(st *Stack, dst netip.Addr, timeout time.Duration) error {
	netProto, proto, echo, reply := ipv4.ProtocolNumber, icmp.ProtocolNumber4, byte(header.ICMPv4Echo), byte(header.ICMPv4EchoReply)
	if dst.Is6() {
		netProto, proto, echo, reply = ipv6.ProtocolNumber, icmp.ProtocolNumber6, byte(header.ICMPv6EchoRequest), byte(header.ICMPv6EchoReply)
	}
	var wq waiter.Queue
	ep, terr := st.s.NewEndpoint(proto, netProto, &wq)
	if terr != nil {
		return fmt.Errorf("icmp endpoint: %s", terr)
	}
	defer ep.Close()
	we, ready := waiter.NewChannelEntry(waiter.ReadableEvents)
	wq.EventRegister(&we)
	defer wq.EventUnregister(&we)
	if terr := ep.Connect(tcpip.FullAddress{Addr: tcpip.AddrFromSlice(dst.AsSlice())}); terr != nil {
		return fmt.Errorf("connect: %s", terr)
	}
	// Type, code, checksum, identifier (the stack sets it), sequence 1,
	// and a payload to match the reply against.
	req := []byte{echo, 0, 0, 0, 0, 0, 0, 1, 'u', 'm', 'l', 't', 'o', 'o', 'l', 's'}
	if _, terr := ep.Write(bytes.NewReader(req), tcpip.WriteOptions{}); terr != nil {
		return fmt.Errorf("send: %s", terr)
	}
	deadline := time.After(timeout)
	for {
		var b bytes.Buffer
		_, terr := ep.Read(&b, tcpip.ReadOptions{})
		if _, wait := terr.(*tcpip.ErrWouldBlock); wait {
			select {
			case <-ready:
				continue
			case <-deadline:
				return errors.New("no reply")
			}
		}
		if terr != nil {
			return fmt.Errorf("receive: %s", terr)
		}
		if r := b.Bytes(); len(r) == len(req) && r[0] == reply && bytes.Equal(r[8:], req[8:]) {
			return nil
		}
	}
}
