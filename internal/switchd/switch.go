package switchd

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// DefaultAge is how long a learned MAC address stays without traffic.
const DefaultAge = 100 * time.Second

// DefaultDataPath is the -compat-v0 data socket.
const DefaultDataPath = "/tmp/uml.data"

// Config configures a Switch.
type Config struct {
	// Hub floods every frame to every other port.
	Hub bool
	// CompatV0 binds the data socket to DataPath and accepts version 0
	// requests (which get no reply).
	CompatV0 bool
	DataPath string
	// Age is the MAC ageing time (DefaultAge when zero).
	Age time.Duration
	// Out receives the switch's log lines (uml_switch prints them on
	// stdout, as the C switch does). Nil discards them.
	Out io.Writer
	// Pcap, when set, receives every forwarded frame in pcap format.
	Pcap io.Writer
	// SocketMode, when non-zero, is applied to control sockets.
	SocketMode os.FileMode
	// SocketGID, when >= 0, is the group given to control sockets.
	SocketGID int
	// RequestTimeout bounds the wait for a new connection's request
	// (default 30 s): a client that connects and says nothing is dropped.
	RequestTimeout time.Duration
}

// BindError reports a control or data socket that could not be bound.
type BindError struct {
	Path  string
	Data  bool // the -compat-v0 data socket, not the control socket
	InUse bool // another server answers on it
	Err   error
}

func (e *BindError) Error() string {
	kind := "control"
	if e.Data {
		kind = "data"
	}
	if e.InUse {
		return fmt.Sprintf("the %s socket '%s' has another server attached to it", kind, e.Path)
	}
	return fmt.Sprintf("the %s socket '%s' exists, isn't used, but couldn't be removed: %v", kind, e.Path, e.Err)
}

func (e *BindError) Unwrap() error { return e.Err }

type ctlSock struct {
	path string
	vlan uint16
	l    *net.UnixListener
}

// Switch is a running virtual switch.
type Switch struct {
	cfg   Config
	start time.Time
	out   lockedWriter
	age   int64
	pcap  *pcapWriter

	ctls     []*ctlSock
	dataFD   int // blocking; only dataLoop reads it
	dataAddr Addr
	dataDone chan struct{}

	mu     sync.Mutex // guards fab, pcap and the learning log
	fab    fabric
	vlans  atomic.Bool // some port is not in the default VLAN
	ports  atomic.Pointer[portSet]
	portMu sync.Mutex // serialises port set changes
	nextID int
	conns  map[net.Conn]struct{}

	unknown atomic.Uint64 // frames from unregistered senders
	started bool
	closing atomic.Bool
	done    chan struct{}
	wg      sync.WaitGroup
}

// New returns a switch with no sockets yet; call Listen and Start.
func New(cfg Config) *Switch {
	if cfg.Age == 0 {
		cfg.Age = DefaultAge
	}
	if cfg.DataPath == "" {
		cfg.DataPath = DefaultDataPath
	}
	if cfg.RequestTimeout == 0 {
		cfg.RequestTimeout = 30 * time.Second
	}
	s := &Switch{cfg: cfg, start: time.Now(), done: make(chan struct{}), conns: map[net.Conn]struct{}{}, nextID: 5}
	s.out.w = cfg.Out
	s.age = int64(cfg.Age)
	s.fab = fabric{hub: cfg.Hub, age: s.age, table: map[tkey]*entry{}, logf: s.logf}
	s.ports.Store(&portSet{byAddr: map[Addr]*Port{}})
	if cfg.Pcap != nil {
		s.pcap = newPcapWriter(cfg.Pcap)
	}
	return s
}

func (s *Switch) logf(format string, a ...any) { fmt.Fprintf(&s.out, format, a...) }

// Listen binds a control socket at path whose ports join VLAN vlan (0 is
// the default, untagged VLAN). A stale socket file (nobody answers) is
// replaced; a live one is a *BindError with InUse set.
func (s *Switch) Listen(path string, vlan uint16) error {
	fd, err := bindUnix(path, unix.SOCK_STREAM, false)
	if err != nil {
		return err
	}
	if s.cfg.SocketGID >= 0 {
		if err := os.Lchown(path, -1, s.cfg.SocketGID); err != nil {
			unix.Close(fd)
			os.Remove(path)
			return fmt.Errorf("control socket %s: %w", path, err)
		}
	}
	if s.cfg.SocketMode != 0 {
		if err := os.Chmod(path, s.cfg.SocketMode); err != nil {
			unix.Close(fd)
			os.Remove(path)
			return fmt.Errorf("control socket %s: %w", path, err)
		}
	}
	if err := unix.Listen(fd, 128); err != nil {
		unix.Close(fd)
		os.Remove(path)
		return fmt.Errorf("listen %s: %w", path, err)
	}
	f := os.NewFile(uintptr(fd), path)
	l, err := net.FileListener(f)
	f.Close()
	if err != nil {
		os.Remove(path)
		return fmt.Errorf("control socket %s: %w", path, err)
	}
	ul := l.(*net.UnixListener)
	ul.SetUnlinkOnClose(false)
	if vlan != 0 {
		s.vlans.Store(true)
	}
	s.ctls = append(s.ctls, &ctlSock{path: path, vlan: vlan, l: ul})
	return nil
}

// bindUnix creates a non-blocking AF_UNIX socket bound to path, taking
// over a stale socket file: if bind reports EADDRINUSE and connecting to
// the path is refused, nobody serves it, so it is removed and bound again.
func bindUnix(path string, typ int, data bool) (int, error) {
	addr, err := PathAddr(path)
	if err != nil {
		return -1, &BindError{Path: path, Data: data, Err: err}
	}
	fd, err := unix.Socket(unix.AF_UNIX, typ|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("socket for %s: %w", path, err)
	}
	err = bindRaw(fd, &addr)
	if errors.Is(err, unix.EADDRINUSE) {
		if stillUsed(path, typ) {
			unix.Close(fd)
			return -1, &BindError{Path: path, Data: data, InUse: true, Err: err}
		}
		os.Remove(path)
		err = bindRaw(fd, &addr)
	}
	if err != nil {
		unix.Close(fd)
		return -1, &BindError{Path: path, Data: data, Err: err}
	}
	return fd, nil
}

// stillUsed reports whether a server answers on the socket file path.
func stillUsed(path string, typ int) bool {
	fd, err := unix.Socket(unix.AF_UNIX, typ|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return true
	}
	defer unix.Close(fd)
	err = unix.Connect(fd, &unix.SockaddrUnix{Name: path})
	return !errors.Is(err, unix.ECONNREFUSED)
}

// ControlPaths lists the bound control sockets.
func (s *Switch) ControlPaths() []string {
	var p []string
	for _, c := range s.ctls {
		p = append(p, c.path)
	}
	return p
}

// DataAddr is the address of the switch's data socket (the reply to v1
// and v3 requests).
func (s *Switch) DataAddr() Addr { return s.dataAddr }

// Start binds the data socket and starts serving the control sockets.
func (s *Switch) Start() error {
	if s.started {
		return errors.New("switch already started")
	}
	if s.cfg.CompatV0 {
		fd, err := bindUnix(s.cfg.DataPath, unix.SOCK_DGRAM, true)
		if err != nil {
			return err
		}
		s.dataAddr, _ = PathAddr(s.cfg.DataPath)
		bigBuffers(fd)
		s.dataFD = fd
	} else {
		// The C switch's abstract name: {char 0; pad; int pid; int usec}.
		binary.LittleEndian.PutUint16(s.dataAddr[:], 1)
		binary.LittleEndian.PutUint32(s.dataAddr[6:], uint32(os.Getpid()))
		binary.LittleEndian.PutUint32(s.dataAddr[10:], uint32(time.Now().Nanosecond()/1000))
		var err error
		if s.dataFD, err = dgramFD(&s.dataAddr, "uml_switch data socket"); err != nil {
			return err
		}
	}
	// The data loop sleeps in recvmmsg itself; the timeout lets it
	// notice Close even if the wake-up datagram is lost.
	unix.SetNonblock(s.dataFD, false)
	unix.SetsockoptTimeval(s.dataFD, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Usec: 200000})
	s.dataDone = make(chan struct{})
	s.started = true
	for _, c := range s.ctls {
		s.wg.Add(1)
		go s.acceptLoop(c)
	}
	s.wg.Add(1)
	go s.dataLoop()
	go s.gcLoop()
	for _, p := range s.ports.Load().list {
		if p.tap != nil {
			s.wg.Add(1)
			go s.tapLoop(p)
		}
	}
	return nil
}

// AddTap adds an open tap device (raw Ethernet frames, no packet
// information header) as a port in VLAN vlan, or as an 802.1Q trunk with
// native VLAN vlan. The switch owns f from now on.
func (s *Switch) AddTap(f *os.File, name string, vlan uint16, trunk bool) (*Port, error) {
	// A pollable duplicate lets the read wait in the runtime poller and
	// lets Close wake it.
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("tap %s: %w", name, err)
	}
	nfd := -1
	rc.Control(func(fd uintptr) {
		nfd, err = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0)
	})
	if err != nil {
		return nil, fmt.Errorf("tap %s: dup: %w", name, err)
	}
	f.Close()
	if err := unix.SetNonblock(nfd, true); err != nil {
		unix.Close(nfd)
		return nil, fmt.Errorf("tap %s: %w", name, err)
	}
	p := &Port{Kind: "tap", Name: name, VLAN: vlan, Trunk: trunk, tap: os.NewFile(uintptr(nfd), "tap "+name)}
	if vlan != 0 || trunk {
		s.vlans.Store(true)
	}
	s.addPort(p)
	if s.started {
		s.wg.Add(1)
		go s.tapLoop(p)
	}
	return p, nil
}

func (s *Switch) addPort(p *Port) {
	s.portMu.Lock()
	defer s.portMu.Unlock()
	old := s.ports.Load()
	n := &portSet{byAddr: make(map[Addr]*Port, len(old.byAddr)+1), list: append([]*Port(nil), old.list...)}
	for k, v := range old.byAddr {
		n.byAddr[k] = v
	}
	if p.ID == 0 {
		p.ID = s.nextID
		s.nextID++
	}
	if p.Kind == "unix" {
		n.byAddr[p.addr] = p
	}
	n.list = append(n.list, p)
	s.ports.Store(n)
}

func (s *Switch) removePort(p *Port) {
	s.portMu.Lock()
	old := s.ports.Load()
	n := &portSet{byAddr: make(map[Addr]*Port, len(old.byAddr)), list: make([]*Port, 0, len(old.list))}
	for k, v := range old.byAddr {
		if v != p {
			n.byAddr[k] = v
		}
	}
	for _, q := range old.list {
		if q != p {
			n.list = append(n.list, q)
		}
	}
	s.ports.Store(n)
	s.portMu.Unlock()
	s.mu.Lock()
	s.fab.forget(p)
	s.mu.Unlock()
}

func (s *Switch) acceptLoop(c *ctlSock) {
	defer s.wg.Done()
	for {
		conn, err := c.l.AcceptUnix()
		if err != nil {
			if s.closing.Load() {
				return
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			s.logf("accept: %v\n", err)
			time.Sleep(50 * time.Millisecond)
			continue
		}
		s.portMu.Lock()
		if s.closing.Load() {
			s.portMu.Unlock()
			conn.Close()
			return
		}
		s.conns[conn] = struct{}{}
		s.wg.Add(1)
		s.portMu.Unlock()
		go s.serveConn(conn, c.vlan)
	}
}

// serveConn handles one control connection: one request, the reply, then
// the stream as the port's lifetime.
func (s *Switch) serveConn(conn *net.UnixConn, vlan uint16) {
	defer s.wg.Done()
	defer func() {
		s.portMu.Lock()
		delete(s.conns, conn)
		s.portMu.Unlock()
		conn.Close()
	}()
	buf := make([]byte, ReqMax)
	conn.SetReadDeadline(time.Now().Add(s.cfg.RequestTimeout))
	n, err := conn.Read(buf)
	if err != nil {
		if s.closing.Load() {
			return
		}
		if errors.Is(err, io.EOF) {
			s.logf("EOF from new port\n")
		} else {
			s.logf("Reading request : %v\n", err)
		}
		return
	}
	conn.SetReadDeadline(time.Time{})
	req, err := ParseRequest(buf[:n], s.cfg.CompatV0)
	if err != nil {
		s.logf("%v\n", err)
		return
	}
	p := &Port{Kind: "unix", Name: req.Addr.String(), VLAN: vlan, addr: req.Addr}
	if s.ports.Load().byAddr[req.Addr] != nil {
		s.logf("Bad request : data socket %s is already a port\n", req.Addr.String())
		return
	}
	s.addPort(p)
	s.logf("New connection\n")
	if req.Version != 0 {
		if _, err := conn.Write(s.dataAddr[:]); err != nil {
			s.logf("Sending data socket name : %v\n", err)
			s.removePort(p)
			return
		}
	}
	var b [64]byte
	for {
		n, err := conn.Read(b[:])
		if n > 0 {
			s.logf("Bad request\n")
		}
		if err != nil {
			s.removePort(p)
			if !s.closing.Load() {
				if errors.Is(err, io.EOF) {
					s.logf("Disconnect\n")
				} else {
					s.logf("Reading request : %v\n", err)
				}
			}
			return
		}
	}
}

const batchLen = 64

// dataLoop receives frames on the data socket in batches and forwards
// each batch with one sendmmsg.
func (s *Switch) dataLoop() {
	defer close(s.dataDone)
	rb := newBatch(batchLen)
	bufs := make([][]byte, batchLen)
	for i := range bufs {
		bufs[i] = make([]byte, MaxFrame)
		rb.setRecv(i, bufs[i])
	}
	fw := newForwarder(s)
	for {
		n, err := rb.recvmmsgWait(s.dataFD, batchLen)
		if s.closing.Load() {
			return
		}
		if err != nil {
			if isAgain(err) || err == unix.EINTR {
				continue
			}
			s.logf("handle_sock_data : %v\n", err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		ps := s.ports.Load()
		now := s.nanotime()
		s.mu.Lock()
		for i := 0; i < n; i++ {
			in := ps.byAddr[rb.names[i]]
			if in == nil {
				if n := s.unknown.Add(1); n&(n-1) == 0 { // log the 1st, 2nd, 4th, 8th, ...
					s.logf("Unknown connection for packet, shouldn't happen.\n")
				}
				continue
			}
			fw.forward(ps, in, bufs[i][:rb.msgs[i].n], now)
		}
		s.mu.Unlock()
		fw.flush()
	}
}

// tapLoop reads frames from a tap port and forwards them.
func (s *Switch) tapLoop(p *Port) {
	defer s.wg.Done()
	buf := make([]byte, MaxFrame+4)
	fw := newForwarder(s)
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

// forwarder collects the datagrams one batch of received frames produces.
type forwarder struct {
	s    *Switch
	sb   *batch
	outs []*Port
	taps []tapOut
	dsts []*Port
	tags [][]byte // scratch buffers for tagged copies
	nTag int
}

type tapOut struct {
	p     *Port
	frame []byte
}

func newForwarder(s *Switch) *forwarder {
	return &forwarder{s: s, sb: newBatch(4 * batchLen), outs: make([]*Port, 0, 4*batchLen)}
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
		if d.tap != nil {
			fw.taps = append(fw.taps, tapOut{d, out})
			continue
		}
		if len(fw.outs) == len(fw.sb.msgs) {
			fw.sendAll()
		}
		fw.sb.set(len(fw.outs), out, &d.addr)
		fw.outs = append(fw.outs, d)
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

func (fw *forwarder) sendAll() {
	if len(fw.outs) == 0 {
		return
	}
	fw.sb.sendmmsg(uintptr(fw.s.dataFD), len(fw.outs), func(i int, err error) {
		fw.outs[i].drops.Add(1)
		fw.outs[i].txFrames.Add(^uint64(0))
		fw.outs[i].txBytes.Add(^uint64(fw.iovLen(i) - 1))
	})
	for i, p := range fw.outs {
		p.txFrames.Add(1)
		p.txBytes.Add(uint64(fw.iovLen(i)))
	}
	fw.outs = fw.outs[:0]
}

func (fw *forwarder) iovLen(i int) int { return int(fw.sb.iovs[i].Len) }

// flush sends everything collected; call it without holding s.mu.
func (fw *forwarder) flush() {
	fw.sendAll()
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

// gcLoop ages out MAC entries every 2 s and flushes the pcap file.
func (s *Switch) gcLoop() {
	defer s.wg.Done()
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-s.done:
			return
		case <-t.C:
			s.mu.Lock()
			s.fab.expire(s.nanotime())
			if s.pcap != nil {
				s.pcap.flush()
			}
			s.mu.Unlock()
		}
	}
}

// Close stops the switch: it closes every socket and tap, removes the
// control socket files (and the -compat-v0 data socket file) and flushes
// the pcap output. It returns the removal errors, each naming its path.
func (s *Switch) Close() error {
	if !s.closing.CompareAndSwap(false, true) {
		return nil
	}
	close(s.done)
	var errs []error
	for _, c := range s.ctls {
		c.l.Close()
		if err := os.Remove(c.path); err != nil {
			errs = append(errs, &UnlinkError{Path: c.path, Err: err})
		}
	}
	s.portMu.Lock()
	for c := range s.conns {
		c.Close()
	}
	s.portMu.Unlock()
	if s.dataDone != nil {
		s.wakeData()
		<-s.dataDone
		unix.Close(s.dataFD)
		if s.cfg.CompatV0 {
			if err := os.Remove(s.cfg.DataPath); err != nil {
				errs = append(errs, &UnlinkError{Path: s.cfg.DataPath, Data: true, Err: err})
			}
		}
	}
	for _, p := range s.ports.Load().list {
		if p.tap != nil {
			p.tap.Close()
		}
	}
	s.wg.Wait()
	if s.pcap != nil {
		s.mu.Lock()
		if err := s.pcap.flush(); err != nil {
			errs = append(errs, fmt.Errorf("pcap: %w", err))
		}
		s.mu.Unlock()
	}
	return errors.Join(errs...)
}

// wakeData sends an empty datagram to the data socket so that the data
// loop returns from recvmmsg and sees the switch closing.
func (s *Switch) wakeData() {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return
	}
	defer unix.Close(fd)
	sendto(uintptr(fd), nil, &s.dataAddr)
}

// UnlinkError is a socket file Close could not remove.
type UnlinkError struct {
	Path string
	Data bool
	Err  error
}

func (e *UnlinkError) Error() string {
	kind := "control"
	if e.Data {
		kind = "data"
	}
	return fmt.Sprintf("Couldn't remove %s socket '%s' : %v", kind, e.Path, e.Err)
}

func (e *UnlinkError) Unwrap() error { return e.Err }

// PortStats are one port's counters.
type PortStats struct {
	ID       int    `json:"id"`
	Kind     string `json:"kind"`
	Name     string `json:"name"`
	VLAN     uint16 `json:"vlan"`
	Trunk    bool   `json:"trunk,omitempty"`
	RxFrames uint64 `json:"rx_frames"`
	RxBytes  uint64 `json:"rx_bytes"`
	TxFrames uint64 `json:"tx_frames"`
	TxBytes  uint64 `json:"tx_bytes"`
	Drops    uint64 `json:"drops"`
}

// MACStats is one learned address.
type MACStats struct {
	MAC  string  `json:"mac"`
	VLAN uint16  `json:"vlan"`
	Port int     `json:"port"`
	Age  float64 `json:"age_seconds"`
}

// Stats is a snapshot of the switch.
type Stats struct {
	Hub           bool        `json:"hub"`
	Ports         []PortStats `json:"ports"`
	MACs          []MACStats  `json:"macs"`
	UnknownFrames uint64      `json:"unknown_sender_frames"`
}

// Stats returns the ports, their counters and the learned addresses.
func (s *Switch) Stats() Stats {
	st := Stats{Hub: s.cfg.Hub, Ports: []PortStats{}, MACs: []MACStats{}, UnknownFrames: s.unknown.Load()}
	for _, p := range s.ports.Load().list {
		st.Ports = append(st.Ports, PortStats{ID: p.ID, Kind: p.Kind, Name: p.Name, VLAN: p.VLAN, Trunk: p.Trunk,
			RxFrames: p.rxFrames.Load(), RxBytes: p.rxBytes.Load(), TxFrames: p.txFrames.Load(), TxBytes: p.txBytes.Load(), Drops: p.drops.Load()})
	}
	now := s.nanotime()
	s.mu.Lock()
	for k, e := range s.fab.table {
		if now-e.seen <= s.age {
			st.MACs = append(st.MACs, MACStats{MAC: k.mac.String(), VLAN: k.vid, Port: e.port.ID, Age: float64(now-e.seen) / 1e9})
		}
	}
	s.mu.Unlock()
	sort.Slice(st.Ports, func(i, j int) bool { return st.Ports[i].ID < st.Ports[j].ID })
	sort.Slice(st.MACs, func(i, j int) bool { return st.MACs[i].MAC < st.MACs[j].MAC })
	return st
}

// WriteText writes st for people.
func (st Stats) WriteText(w io.Writer) {
	mode := "switch"
	if st.Hub {
		mode = "hub"
	}
	fmt.Fprintf(w, "%s: %d ports, %d learned addresses, %d frames from unknown senders\n", mode, len(st.Ports), len(st.MACs), st.UnknownFrames)
	for _, p := range st.Ports {
		v := ""
		if p.VLAN != 0 || p.Trunk {
			v = fmt.Sprintf(" vlan %d", p.VLAN)
			if p.Trunk {
				v += " trunk"
			}
		}
		fmt.Fprintf(w, "port %d %s %s%s: rx %d frames %d bytes, tx %d frames %d bytes, %d dropped\n",
			p.ID, p.Kind, p.Name, v, p.RxFrames, p.RxBytes, p.TxFrames, p.TxBytes, p.Drops)
	}
	for _, m := range st.MACs {
		fmt.Fprintf(w, "mac %s vlan %d port %d age %.1fs\n", m.MAC, m.VLAN, m.Port, m.Age)
	}
}

// nanotime is the switch's monotonic clock in nanoseconds.
func (s *Switch) nanotime() int64 { return int64(time.Since(s.start)) }

// lockedWriter serialises log lines from the switch's goroutines.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	if l.w == nil {
		return len(p), nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
