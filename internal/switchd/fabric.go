package switchd

import (
	"encoding/binary"
	"fmt"
	"os"
	"sync/atomic"
	"time"
)

// MAC is an Ethernet address.
type MAC [6]byte

func (m MAC) String() string {
	return fmt.Sprintf("%02x:%02x:%02x:%02x:%02x:%02x", m[0], m[1], m[2], m[3], m[4], m[5])
}

// group reports whether m is a broadcast or multicast address.
func (m MAC) group() bool { return m[0]&1 != 0 }

// Port is one attachment to the switch: a daemon-protocol client or a tap.
type Port struct {
	ID    int
	Kind  string // "unix" or "tap"
	Name  string // tap name, or the client's data address
	VLAN  uint16 // access VLAN (0: the default, untagged VLAN); native VLAN of a trunk
	Trunk bool   // carries every VLAN, 802.1Q-tagged except its native one

	addr    Addr     // unix: the client's data socket
	fd      int      // unix: this port's own data socket, connected to addr; -1 with a shared socket
	tap     *os.File // tap: the device
	removed atomic.Bool

	rxFrames, rxBytes, txFrames, txBytes, drops atomic.Uint64
}

// member reports whether frames of VLAN vid may leave through p.
func (p *Port) member(vid uint16) bool { return p.Trunk || p.VLAN == vid }

// portSet is an immutable snapshot of the ports, swapped atomically.
type portSet struct {
	byAddr map[Addr]*Port
	byID   map[int]*Port
	list   []*Port
}

type tkey struct {
	vid uint16
	mac MAC
}

type entry struct {
	port *Port
	seen int64 // monotonic nanoseconds
}

// fabric is the forwarding logic: MAC learning, ageing, flooding, VLANs.
// Callers hold the switch's lock.
type fabric struct {
	hub   bool
	age   int64 // nanoseconds
	table map[tkey]*entry
	quiet map[tkey]int64 // when an unknown destination was last logged
	logf  func(format string, a ...any)
}

// route learns the source of a frame of VLAN vid that arrived on in (nil:
// unknown sender) and appends the ports it must leave through to dsts. A
// frame never goes back out of its ingress port.
func (f *fabric) route(ps *portSet, in *Port, frame []byte, vid uint16, now int64, dsts []*Port) []*Port {
	if len(frame) < 14 {
		return dsts
	}
	var dst, src MAC
	copy(dst[:], frame[0:6])
	copy(src[:], frame[6:12])
	if in != nil && !src.group() {
		k := tkey{vid, src}
		if e := f.table[k]; e == nil {
			f.logf(" Addr: %s New port %d\n", src, in.ID)
			f.table[k] = &entry{in, now}
		} else {
			if e.port != in {
				f.logf(" Addr: %s New port %d old port %d\n", src, in.ID, e.port.ID)
				e.port = in
			}
			e.seen = now
		}
	}
	if !f.hub && !dst.group() {
		if e := f.table[tkey{vid, dst}]; e != nil && now-e.seen <= f.age {
			if e.port != in {
				dsts = append(dsts, e.port)
			}
			return dsts
		}
		// Logged at most once a second per address: a stream to a
		// silent receiver is all unknown unicast.
		if k := (tkey{vid, dst}); now-f.quiet[k] >= int64(time.Second) || f.quiet[k] == 0 {
			f.quiet[k] = now
			from := "UNKNOWN"
			if in != nil {
				from = fmt.Sprint(in.ID)
			}
			f.logf("unknown Addr: %s from port %s\n", dst, from)
		}
	}
	for _, p := range ps.list {
		if p != in && p.member(vid) {
			dsts = append(dsts, p)
		}
	}
	return dsts
}

// forget removes every entry pointing at p.
func (f *fabric) forget(p *Port) {
	for k, e := range f.table {
		if e.port == p {
			delete(f.table, k)
		}
	}
}

// expire removes entries not refreshed within the ageing time.
func (f *fabric) expire(now int64) {
	for k, e := range f.table {
		if now-e.seen > f.age {
			delete(f.table, k)
		}
	}
	for k, t := range f.quiet {
		if now-t >= int64(time.Second) {
			delete(f.quiet, k)
		}
	}
}

const tpid8021Q = 0x8100

// untag classifies a frame arriving on p when VLANs are in use: it
// returns the frame (with any 802.1Q tag removed, in place) and its VLAN,
// or ok=false when the frame must be dropped (a tagged frame on an access
// port, or a tag naming the trunk's native VLAN).
func untag(p *Port, frame []byte) (out []byte, vid uint16, ok bool) {
	if p == nil {
		return nil, 0, false
	}
	tagged := len(frame) >= 18 && binary.BigEndian.Uint16(frame[12:]) == tpid8021Q
	if !tagged {
		return frame, p.VLAN, true
	}
	if !p.Trunk {
		return nil, 0, false
	}
	vid = binary.BigEndian.Uint16(frame[14:]) & 0x0fff
	if vid == 0 || vid == 0xfff || vid == p.VLAN {
		return nil, 0, false
	}
	copy(frame[4:16], frame[0:12])
	return frame[4:], vid, true
}

// tag writes frame into buf with an 802.1Q tag for vid and returns it.
func tag(buf, frame []byte, vid uint16) []byte {
	buf = append(buf[:0], frame[:12]...)
	buf = binary.BigEndian.AppendUint16(buf, tpid8021Q)
	buf = binary.BigEndian.AppendUint16(buf, vid&0x0fff)
	return append(buf, frame[12:]...)
}
