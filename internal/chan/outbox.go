package chans

import "sync"

// outbox queues guest output for a user channel (pts, xterm, port).
//
// The output goroutine puts; the endpoint takes (peek, then consume what
// it wrote). While a user is attached, put waits when the queue would grow
// beyond max (the guest is flow-controlled by the user); while nobody is
// attached, or once the outbox is closed, put never waits and only the
// newest max bytes are kept.
//
// Positions are absolute (start is the position of buf[0]), so a consume
// after put dropped old bytes removes only what is still queued.
type outbox struct {
	mu       sync.Mutex
	cond     sync.Cond
	buf      []byte
	start    uint64
	max      int
	attached bool
	closed   bool
	gen      uint64 // attach count: detach(gen) is ignored after a later attach
	kick     func() // called when data arrives in an empty queue; may be nil
}

func newOutbox(max int, kick func()) *outbox {
	b := &outbox{max: max, kick: kick}
	b.cond.L = &b.mu
	return b
}

// put queues p (see outbox).
func (b *outbox) put(p []byte) {
	if len(p) == 0 {
		return
	}
	b.mu.Lock()
	for b.attached && !b.closed && len(b.buf) > 0 && len(b.buf)+len(p) > b.max {
		b.cond.Wait()
	}
	wasEmpty := len(b.buf) == 0
	b.buf = append(b.buf, p...)
	if !b.attached || b.closed {
		b.trim()
	}
	b.cond.Broadcast() // wake next
	b.mu.Unlock()
	if wasEmpty && b.kick != nil {
		b.kick()
	}
}

// trim drops the oldest bytes beyond max. b.mu is held.
func (b *outbox) trim() {
	if over := len(b.buf) - b.max; over > 0 {
		b.buf = b.buf[over:]
		b.start += uint64(over)
	}
}

// peek returns a copy of at most limit queued bytes and the position of
// the first; p is empty when nothing is queued.
func (b *outbox) peek(limit int) (off uint64, p []byte) {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := min(len(b.buf), limit)
	return b.start, append([]byte(nil), b.buf[:n]...)
}

// next waits until a user is attached and output is queued, then returns
// like peek with the attach generation; ok is false once closed.
func (b *outbox) next(limit int) (gen, off uint64, p []byte, ok bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for !b.closed && !(b.attached && len(b.buf) > 0) {
		b.cond.Wait()
	}
	if b.closed {
		return 0, 0, nil, false
	}
	n := min(len(b.buf), limit)
	return b.gen, b.start, append([]byte(nil), b.buf[:n]...), true
}

// consume removes the n bytes at position off, as far as they are still
// queued.
func (b *outbox) consume(off uint64, n int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	end := off + uint64(n)
	if end > b.start {
		d := min(end-b.start, uint64(len(b.buf)))
		b.buf = b.buf[d:]
		b.start += d
		if len(b.buf) == 0 {
			b.buf = nil
		}
	}
	b.cond.Broadcast()
}

// pending returns the number of queued bytes.
func (b *outbox) pending() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.buf)
}

// attach marks a user attached and returns the new generation.
func (b *outbox) attach() uint64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.gen++
	b.attached = true
	b.cond.Broadcast()
	return b.gen
}

// detach marks the user of generation gen gone: put stops waiting.
func (b *outbox) detach(gen uint64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if gen != b.gen || !b.attached {
		return
	}
	b.attached = false
	b.trim()
	b.cond.Broadcast()
}

// close makes put never wait again and next return false.
func (b *outbox) close() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	b.cond.Broadcast()
}

// rest removes and returns everything queued.
func (b *outbox) rest() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	p := b.buf
	b.start += uint64(len(p))
	b.buf = nil
	return p
}
