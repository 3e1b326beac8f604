package switchd

import (
	"errors"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// batchLen is how many frames one recvmmsg takes and one queue holds.
const batchLen = 64

// dataLoop waits on the port sockets (or the shared -compat-v0 socket)
// with epoll, receives frames in batches and forwards each batch with one
// sendmmsg per destination socket.
func (s *Switch) dataLoop() {
	defer close(s.dataDone)
	rb := newBatch(batchLen)
	bufs := make([][]byte, batchLen)
	for i := range bufs {
		bufs[i] = make([]byte, MaxFrame)
		rb.setRecv(i, bufs[i])
	}
	fw := newForwarder(s, false)
	events := make([]unix.EpollEvent, 64)
	for {
		// Checked before every wait: Close sets closing before it wakes
		// us, so a wake-up consumed below for another reason (a port
		// leaving) cannot hide it.
		if s.closing.Load() {
			return
		}
		n, err := unix.EpollWait(s.epfd, events, -1)
		if s.closing.Load() {
			return
		}
		if err != nil {
			if err != unix.EINTR {
				s.logf("epoll_wait : %v\n", err)
				time.Sleep(10 * time.Millisecond)
			}
			continue
		}
		s.reapDead()
		ps := s.ports.Load()
		for _, ev := range events[:n] {
			switch key := int(ev.Fd); key {
			case wakeKey:
				var b [8]byte
				unix.Read(s.wakeFD, b[:])
			case sharedKey:
				s.drain(fw, rb, bufs, ps, nil, s.shared)
			default:
				if p := ps.byID[key]; p != nil && !p.removed.Load() {
					s.drain(fw, rb, bufs, ps, p, p.fd)
				}
			}
		}
	}
}

// reapDead closes the sockets of departed ports. Only the data loop calls
// it, so its own sends never race with the close; other senders hold
// fdMu for reading.
func (s *Switch) reapDead() {
	s.portMu.Lock()
	dead := s.dead
	s.dead = nil
	s.portMu.Unlock()
	if len(dead) == 0 {
		return
	}
	s.fdMu.Lock()
	for _, fd := range dead {
		unix.Close(fd)
	}
	s.fdMu.Unlock()
}

// drain receives up to a few batches from fd (a port's socket, or the
// shared socket when in is nil) and forwards them. Level-triggered epoll
// brings the loop back for whatever is left, so one busy port cannot
// starve the others.
func (s *Switch) drain(fw *forwarder, rb *batch, bufs [][]byte, ps *portSet, in *Port, fd int) {
	for round := 0; round < 4; round++ {
		n, err := rb.recvmmsg(uintptr(fd), batchLen)
		if err != nil || n == 0 {
			return
		}
		now := s.nanotime()
		s.mu.Lock()
		for i := 0; i < n; i++ {
			src := in
			if src == nil {
				if src = ps.byAddr[rb.names[i]]; src == nil {
					if c := s.unknown.Add(1); c&(c-1) == 0 { // the 1st, 2nd, 4th, 8th, ...
						s.logf("Unknown connection for packet, shouldn't happen.\n")
					}
					continue
				}
			}
			fw.forward(ps, src, bufs[i][:rb.msgs[i].n], now)
		}
		s.mu.Unlock()
		fw.flush()
		if n < batchLen {
			return
		}
	}
}

// tapLoop reads frames from a tap port and forwards them.
func (s *Switch) tapLoop(p *Port) {
	defer s.wg.Done()
	buf := make([]byte, MaxFrame+4)
	fw := newForwarder(s, true)
	for {
		n, err := p.tap.Read(buf)
		if err != nil {
			if s.closing.Load() || errors.Is(err, os.ErrClosed) {
				return
			}
			s.logf("Reading tap data : %v\n", err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		ps := s.ports.Load()
		s.mu.Lock()
		fw.forward(ps, p, buf[:n], s.nanotime())
		s.mu.Unlock()
		fw.flush()
	}
}

// forwarder collects the datagrams one batch of received frames produces:
// a queue per destination port socket, plus named sends on the shared
// socket and tap writes.
type forwarder struct {
	s      *Switch
	locked bool // not the data loop: sends hold s.fdMu for reading

	queues map[*Port]*batchQueue
	dirty  []*Port
	shared batchQueue
	outs   []*Port // destination of each message in shared
	taps   []tapOut
	dsts   []*Port
	tags   [][]byte // scratch buffers for tagged copies
	nTag   int
}

type batchQueue struct {
	b *batch
	n int
}

type tapOut struct {
	p     *Port
	frame []byte
}

func newForwarder(s *Switch, locked bool) *forwarder {
	return &forwarder{s: s, locked: locked, queues: map[*Port]*batchQueue{}, shared: batchQueue{b: newBatch(4 * batchLen)}}
}

// forward routes one frame from in; the caller holds s.mu. frame must
// stay valid until flush.
func (fw *forwarder) forward(ps *portSet, in *Port, frame []byte, now int64) {
	s := fw.s
	in.rxFrames.Add(1)
	in.rxBytes.Add(uint64(len(frame)))
	vid := uint16(0)
	vlans := s.vlans.Load()
	if vlans {
		var ok bool
		if frame, vid, ok = untag(in, frame); !ok {
			in.drops.Add(1)
			return
		}
	}
	fw.dsts = s.fab.route(ps, in, frame, vid, now, fw.dsts[:0])
	if len(fw.dsts) > 0 && s.pcap != nil {
		s.pcap.write(frame, time.Now())
	}
	for _, d := range fw.dsts {
		out := frame
		if vlans && d.Trunk && vid != d.VLAN {
			out = fw.tagged(frame, vid)
		}
		switch {
		case d.tap != nil:
			fw.taps = append(fw.taps, tapOut{d, out})
		case d.fd >= 0:
			q := fw.queues[d]
			if q == nil {
				q = &batchQueue{b: newBatch(batchLen)}
				fw.queues[d] = q
			}
			if q.n == 0 {
				fw.dirty = append(fw.dirty, d)
			} else if q.n == len(q.b.msgs) {
				fw.sendPort(d, q)
			}
			q.b.set(q.n, out, nil)
			q.n++
		default:
			if fw.shared.n == len(fw.shared.b.msgs) {
				fw.sendShared()
			}
			fw.shared.b.set(fw.shared.n, out, &d.addr)
			fw.shared.n++
			fw.outs = append(fw.outs, d)
		}
	}
}

func (fw *forwarder) tagged(frame []byte, vid uint16) []byte {
	if fw.nTag == len(fw.tags) {
		fw.tags = append(fw.tags, make([]byte, 0, MaxFrame+4))
	}
	b := tag(fw.tags[fw.nTag], frame, vid)
	fw.tags[fw.nTag] = b
	fw.nTag++
	return b
}

// sendPort sends a port's queue on its own connected socket.
func (fw *forwarder) sendPort(p *Port, q *batchQueue) {
	if fw.locked {
		fw.s.fdMu.RLock()
		defer fw.s.fdMu.RUnlock()
	}
	if !p.removed.Load() {
		frames, bytes := uint64(q.n), uint64(0)
		for i := 0; i < q.n; i++ {
			bytes += uint64(q.b.iovs[i].Len)
		}
		q.b.sendmmsg(uintptr(p.fd), q.n, func(i int, err error) {
			frames--
			bytes -= uint64(q.b.iovs[i].Len)
			p.drops.Add(1)
		})
		p.txFrames.Add(frames)
		p.txBytes.Add(bytes)
	}
	q.n = 0
}

// sendShared sends the queue of named messages on the shared socket.
func (fw *forwarder) sendShared() {
	q := &fw.shared
	for i := 0; i < q.n; i++ {
		fw.outs[i].txFrames.Add(1)
		fw.outs[i].txBytes.Add(uint64(q.b.iovs[i].Len))
	}
	q.b.sendmmsg(uintptr(fw.s.shared), q.n, func(i int, err error) {
		p := fw.outs[i]
		p.txFrames.Add(^uint64(0))
		p.txBytes.Add(^(uint64(q.b.iovs[i].Len) - 1))
		p.drops.Add(1)
	})
	q.n = 0
	clear(fw.outs)
	fw.outs = fw.outs[:0]
}

// flush sends everything collected; call it without holding s.mu.
func (fw *forwarder) flush() {
	for _, p := range fw.dirty {
		if q := fw.queues[p]; q.n > 0 {
			fw.sendPort(p, q)
		}
	}
	clear(fw.dirty)
	fw.dirty = fw.dirty[:0]
	// Forget queues of departed ports.
	if len(fw.queues) > 2*len(fw.s.ports.Load().list)+8 {
		for p := range fw.queues {
			if p.removed.Load() {
				delete(fw.queues, p)
			}
		}
	}
	if fw.shared.n > 0 {
		fw.sendShared()
	}
	for _, t := range fw.taps {
		if _, err := t.p.tap.Write(t.frame); err != nil {
			t.p.drops.Add(1)
			continue
		}
		t.p.txFrames.Add(1)
		t.p.txBytes.Add(uint64(len(t.frame)))
	}
	clear(fw.taps)
	fw.taps = fw.taps[:0]
	fw.nTag = 0
}
