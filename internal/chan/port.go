package chans

import (
	"errors"
	"net"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// noWaiterMsg is the C kernel's NO_WAITER_MSG (arch/um/drivers/port_kern.c),
// sent to a client that connects while every line on the port has one.
// The C kernel sends it with bare LFs and its terminating NUL; here lines
// end in CR LF, as telnet wants, and there is no NUL.
const noWaiterMsg = "****\r\n" +
	"There are currently no UML consoles waiting for port connections.\r\n" +
	"Either disconnect from one to make it available or activate some more\r\n" +
	"by enabling more consoles in the UML /etc/inittab.\r\n" +
	"****\r\n"

const (
	// maxWaiting is how many clients may wait for a free line on one
	// port; further ones get noWaiterMsg and are closed.
	maxWaiting = 16
	// handoffGrace is how long a new client waits for a line that is
	// about to become free (its previous client just left) before it is
	// told to wait.
	handoffGrace = 200 * time.Millisecond
)

// Ports is a set of port channel listeners that lines share: every line
// created with the same *Ports and the same port:N listens on one socket,
// and each client gets the next line without a client, like the C
// kernel's ssl=port:9000. The zero value is ready to use; a listener is
// closed when the last Console using it is closed. Port 0 (any free port)
// is never shared.
type Ports struct {
	mu sync.Mutex
	m  map[int]*listener
}

// listener is one listening socket. Accepted clients are handed to the
// port channels waiting on handoff; clients that find none wait in turn
// (after noWaiterMsg), like the C kernel's pending connections.
type listener struct {
	ln      net.Listener
	port    int // the port actually listened on
	key     int // the port asked for (Ports key)
	owner   *Ports
	refs    int // guarded by owner.mu
	logf    func(format string, a ...any)
	handoff chan net.Conn
	quit    chan struct{}
	wg      sync.WaitGroup
}

// acquire returns the listener for port, creating it if needed. ps may be
// nil: the listener is then not shared.
func (ps *Ports) acquire(port int, logf func(string, ...any)) (*listener, error) {
	if ps == nil {
		return listen(port, logf)
	}
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if l := ps.m[port]; l != nil && port != 0 {
		l.refs++
		return l, nil
	}
	l, err := listen(port, logf)
	if err != nil {
		return nil, err
	}
	l.owner, l.refs = ps, 1
	if port != 0 {
		if ps.m == nil {
			ps.m = make(map[int]*listener)
		}
		ps.m[port] = l
	}
	return l, nil
}

// listen listens on port on every IPv4 address (INADDR_ANY, as the C
// kernel's port_listen_fd; Go sets SO_REUSEADDR like it does) and starts
// accepting.
func listen(port int, logf func(string, ...any)) (*listener, error) {
	ln, err := net.Listen("tcp4", net.JoinHostPort("0.0.0.0", strconv.Itoa(port)))
	if err != nil {
		return nil, err
	}
	l := &listener{ln: ln, port: ln.Addr().(*net.TCPAddr).Port, key: port, logf: logf,
		handoff: make(chan net.Conn), quit: make(chan struct{})}
	accepted := make(chan net.Conn)
	l.wg.Add(2)
	go l.accept(accepted)
	go l.dispatch(accepted)
	return l, nil
}

// release drops one user of l and closes it after the last.
func (l *listener) release() {
	if ps := l.owner; ps != nil {
		ps.mu.Lock()
		l.refs--
		last := l.refs == 0
		if last && ps.m[l.key] == l {
			delete(ps.m, l.key)
		}
		ps.mu.Unlock()
		if !last {
			return
		}
	}
	close(l.quit)
	l.ln.Close()
	l.wg.Wait()
}

// accept accepts clients until the listener is closed.
func (l *listener) accept(accepted chan<- net.Conn) {
	defer l.wg.Done()
	for {
		conn, err := l.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			l.logf("port %d: accept: %v", l.port, err)
			select { // e.g. EMFILE: do not spin
			case <-l.quit:
				return
			case <-time.After(100 * time.Millisecond):
			}
			continue
		}
		select {
		case accepted <- conn:
		case <-l.quit:
			conn.Close()
			return
		}
	}
}

// dispatch hands clients to free lines in the order they came.
func (l *listener) dispatch(accepted <-chan net.Conn) {
	defer l.wg.Done()
	var waiting []net.Conn
	defer func() {
		for _, c := range waiting {
			c.Close()
		}
	}()
	for {
		var out chan<- net.Conn
		var first net.Conn
		if len(waiting) > 0 {
			out, first = l.handoff, waiting[0]
		}
		select {
		case <-l.quit:
			return
		case out <- first:
			waiting[0] = nil
			waiting = waiting[1:]
		case conn := <-accepted:
			if len(waiting) == 0 {
				t := time.NewTimer(handoffGrace)
				select {
				case l.handoff <- conn:
					t.Stop()
					continue
				case <-l.quit:
					t.Stop()
					conn.Close()
					return
				case <-t.C:
				}
			}
			l.logf("No one waiting for port") // the C kernel's message
			conn.SetWriteDeadline(time.Now().Add(time.Second))
			_, _ = conn.Write([]byte(noWaiterMsg))
			conn.SetWriteDeadline(time.Time{})
			if len(waiting) >= maxWaiting {
				conn.Close()
				continue
			}
			waiting = append(waiting, conn)
		}
	}
}

// portEnd is a port:N channel: one telnet client at a time (see listener
// for the others). Each client gets telnetHello first, then the output
// queued while nobody was connected. When a client leaves, the guest's
// line hangs up (Console.hangup) and waits for the next client.
type portEnd struct {
	c     *Console
	l     *listener
	input bool // client input goes to the guest (else it is discarded)
	win   bool // the guest's window size follows the client's NAWS reports
	box   *outbox

	mu       sync.Mutex // guards conn, gen, stopping
	conn     net.Conn   // the client, nil between clients
	gen      uint64     // box generation of conn
	stopping bool

	wmu sync.Mutex // serialises writes to conn
}

func (c *Console) openPort(port int, input, output, win bool, ps *Ports) (*portEnd, error) {
	l, err := ps.acquire(port, c.logf)
	if err != nil {
		return nil, err
	}
	e := &portEnd{c: c, l: l, input: input, win: win}
	if output {
		e.box = newOutbox(outboxSize, nil)
		c.sink = e.box.put
	}
	return e, nil
}

func (e *portEnd) start() {
	e.c.wg.Add(1)
	go e.serve()
	if e.box != nil {
		e.c.wg.Add(1)
		go e.flush()
	}
}

// serve takes clients one after another until Close.
func (e *portEnd) serve() {
	defer e.c.wg.Done()
	buf := make([]byte, 4096)
	for {
		var conn net.Conn
		select {
		case conn = <-e.l.handoff:
		case <-e.c.stop:
			return
		}
		e.mu.Lock()
		if e.stopping {
			e.mu.Unlock()
			conn.Close()
			return
		}
		e.conn = conn
		e.mu.Unlock()
		tn := newTelnet()
		_ = e.send(conn, []byte(telnetHello)) // a failure shows in Read
		if e.box != nil {
			e.mu.Lock()
			e.gen = e.box.attach()
			e.mu.Unlock()
		}
		e.read(conn, tn, buf)
		e.mu.Lock()
		stopping, gen := e.stopping, e.gen
		e.mu.Unlock()
		if e.box != nil {
			e.box.detach(gen)
		}
		if stopping { // close sends what is left and closes conn
			return
		}
		e.mu.Lock()
		e.conn = nil
		e.mu.Unlock()
		conn.Close()
		// The client is gone as a modem's carrier goes: the line hangs
		// up, so no next client finds a shell left logged in.
		e.c.hangup()
	}
}

// read decodes the client's input until it leaves or Close.
func (e *portEnd) read(conn net.Conn, tn *telnet, buf []byte) {
	logged := false
	for {
		n, err := conn.Read(buf)
		if n > 0 {
			data, reply, ws := tn.feed(buf[:n])
			if len(reply) > 0 {
				_ = e.send(conn, reply)
			}
			if ws != nil && e.win && ws.Row > 0 && ws.Col > 0 {
				if err := unix.IoctlSetWinsize(e.c.master, unix.TIOCSWINSZ, ws); err != nil && !logged {
					e.c.logf("%s: copy window size: %v", e.c.name, err)
					logged = true
				}
			}
			if e.input && len(data) > 0 && !e.c.writeMaster(data) {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// flush sends queued guest output to the client, IAC escaped.
func (e *portEnd) flush() {
	defer e.c.wg.Done()
	for {
		gen, off, p, ok := e.box.next(16 << 10)
		if !ok {
			return
		}
		e.mu.Lock()
		conn, cgen, stopping := e.conn, e.gen, e.stopping
		e.mu.Unlock()
		if stopping {
			return
		}
		if conn == nil || cgen != gen {
			// The client left after next returned: next waits now.
			continue
		}
		if err := e.send(conn, telnetEscape(p)); err != nil {
			// Keep the bytes for the next client; make serve see
			// the end of this one.
			e.box.detach(gen)
			conn.Close()
			continue
		}
		e.box.consume(off, len(p))
	}
}

// send writes p to conn, whole, not interleaved with other sends.
func (e *portEnd) send(conn net.Conn, p []byte) error {
	e.wmu.Lock()
	defer e.wmu.Unlock()
	_, err := conn.Write(p)
	return err
}

// interrupt makes serve and flush return: blocked reads and writes on the
// client fail at once.
func (e *portEnd) interrupt() {
	e.mu.Lock()
	e.stopping = true
	if e.conn != nil {
		e.conn.SetDeadline(time.Unix(1, 0))
	}
	e.mu.Unlock()
	if e.box != nil {
		e.box.close()
	}
}

// close sends the client what output is left (waiting at most a second),
// closes it, and releases the listener.
func (e *portEnd) close() error {
	e.mu.Lock()
	conn := e.conn
	e.conn = nil
	e.mu.Unlock()
	if conn != nil {
		if e.box != nil {
			if p := e.box.rest(); len(p) > 0 {
				conn.SetWriteDeadline(time.Now().Add(time.Second))
				_ = e.send(conn, telnetEscape(p))
			}
		}
		conn.Close()
	}
	e.l.release()
	return nil
}
