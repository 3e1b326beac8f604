package testutil

import (
	"net"
	"sync"
	"testing"
)

// SeqpacketRelay listens on the seqpacket sockets a and b and, once a
// client has connected to each, copies every message from one to the
// other, until the test ends: a two-port stand-in for a BESS switch.
func SeqpacketRelay(t testing.TB, a, b string) {
	t.Helper()
	var ls []*net.UnixListener
	for _, p := range []string{a, b} {
		l, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: p, Net: "unixpacket"})
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
	}
	conns := make([]*net.UnixConn, 2)
	var accept sync.WaitGroup
	for i, l := range ls {
		accept.Add(1)
		go func() {
			defer accept.Done()
			if c, err := l.AcceptUnix(); err == nil {
				conns[i] = c
			}
		}()
	}
	accepted, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		accept.Wait()
		close(accepted)
		if conns[0] == nil || conns[1] == nil {
			return
		}
		var cp sync.WaitGroup
		for i := range 2 {
			cp.Add(1)
			go func() {
				defer cp.Done()
				buf := make([]byte, 1<<16)
				for {
					n, err := conns[i].Read(buf)
					if err != nil || n == 0 {
						return
					}
					if _, err := conns[1-i].Write(buf[:n]); err != nil {
						return
					}
				}
			}()
		}
		cp.Wait()
	}()
	t.Cleanup(func() {
		for _, l := range ls {
			l.Close()
		}
		<-accepted
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
		<-done
	})
}
